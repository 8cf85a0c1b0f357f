"""LiRA and U-LiRA: per-example Gaussian tests of a target model's signal against reference models.

Carlini et al., "Membership Inference Attacks From First Principles" (IEEE S&P 2022,
arXiv 2112.03570) fit, for every example, a normal distribution to its signal (typically
the logit-scaled confidence ``log(p_y / (1 - p_y))``) under reference models that did not
train on it (OUT) and, online, under models that did (IN). U-LiRA (Hayes et al., arXiv
2403.01218) audits unlearning by applying the OUT test to forget and test examples alike.

Every function returns one float64 score per example, higher = more member-like; ROC
curves and AUCs are the job of :mod:`attacks.stats`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from attacks._arrays import bool_mask, float_matrix, float_vector, forget_and_test
from attacks.calibration import fit_line_on_nonmembers
from unlearn_audit.errors import ConfigError

__all__ = [
    "STD_FLOOR",
    "Gaussian",
    "fit_out_gaussian",
    "lira_offline",
    "lira_online",
    "ulira_calibrated",
    "ulira_scores",
]

logger = logging.getLogger(__name__)

# Smallest standard deviation used in a Gaussian fit (in units of the signal). Without a
# floor an example whose reference scores all agree exactly gets an infinite score.
STD_FLOOR = 1e-6


@dataclass(frozen=True)
class Gaussian:
    """One normal distribution per example: ``mean`` and ``std`` of shape (n,), ``std >= STD_FLOOR``."""

    mean: np.ndarray
    std: np.ndarray

    def standardise(self, signal: np.ndarray) -> np.ndarray:
        """``(signal - mean) / std``: how many of its own standard deviations each example lies above."""
        return (signal - self.mean) / self.std

    def log_density(self, signal: np.ndarray) -> np.ndarray:
        """Log of the normal density at ``signal``, up to the constant ``-log(sqrt(2 pi))``."""
        z = self.standardise(signal)
        return -0.5 * z**2 - np.log(self.std)


def fit_out_gaussian(ref_out: np.ndarray, *, fix_variance: bool) -> Gaussian:
    """Each row's OUT distribution: the mean of its R >= 2 references and their ddof=1 standard deviation.

    With ``fix_variance`` every row gets the pooled ``sqrt(mean_i var_i)`` instead.

    Raises:
        ConfigError: R < 2 (no variance can be estimated from one reference).
    """
    n_refs = ref_out.shape[1]
    if n_refs < 2:
        raise ConfigError(
            f"offline LiRA needs at least 2 OUT reference models per example to estimate a variance, "
            f"got R={n_refs}; train more reference models"
        )
    mu = ref_out.mean(axis=1)
    var = ref_out.var(axis=1, ddof=1)
    if fix_variance:
        std = np.full_like(mu, np.sqrt(var.mean()) if var.size else 1.0)
    else:
        std = np.sqrt(var)
    return Gaussian(mean=mu, std=np.maximum(std, STD_FLOOR))


def lira_offline(
    target: np.ndarray,
    ref_out: np.ndarray,
    *,
    fix_variance: bool = False,
) -> np.ndarray:
    """Offline LiRA: a one-sided Gaussian test against the example's own OUT references.

    Carlini et al., S&P 2022, offline variant (Sec. IV-C): for every example x, fit
    N(mu_out(x), s_out(x)^2) to the signal of x under reference models NOT trained on x, and
    ask how far above that distribution the target model's signal lies.

    The score returned is the STANDARDISED form ``(target - mu_out) / s_out``. It is a
    strictly increasing function of the paper's one-sided statistic
    ``Lambda = Pr[Z <= target], Z ~ N(mu_out, s_out^2)`` (``Lambda = Phi(score)``,
    ``scipy.stats.norm.cdf(score)``), so it ranks examples identically, but it does not
    saturate to 1.0 in the far tail where TPR at low FPR is decided.

    Estimates: ``mu_out`` is the mean of the R references (Carlini's code uses the median),
    ``s_out`` their sample standard deviation (ddof=1), floored at ``STD_FLOOR``.

    Args:
        target: (n,) signal of each example under the target model, typically the
            logit-scaled confidence ``Signals.logit_confidence``; finite.
        ref_out: (n, R) the same signal under R >= 2 reference models, none of which was
            trained on the example in that row; finite.
        fix_variance: False (default): one standard deviation per example. True: one global
            standard deviation for all examples, the pooled within-example estimate
            ``sqrt(mean_i var_i)``; more stable with few references (LiRA's "fixed variance").

    Returns:
        (n,) float64 scores, higher = more member-like.

    Raises:
        DataError: wrong shapes or non-finite values.
        ConfigError: R < 2 (no variance can be estimated from one reference).
    """
    t = float_vector("target", target)
    refs = float_matrix("ref_out", ref_out, t.shape[0], "target")
    return fit_out_gaussian(refs, fix_variance=fix_variance).standardise(t)


@dataclass(frozen=True)
class _Side:
    """The references on one side (IN or OUT) of every example, as online LiRA needs them.

    ``count``, ``mean`` and ``var`` (ddof=1) are per row (NaN where undefined); ``pooled`` is
    the within-example variance pooled over all rows, with ``dof`` degrees of freedom.
    """

    name: str
    count: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    pooled: float
    dof: int

    @classmethod
    def of(cls, name: str, refs: np.ndarray, mask: np.ndarray) -> _Side:
        """The statistics of ``refs[mask]`` row by row."""
        count = mask.sum(axis=1)
        total = np.where(mask, refs, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count  # NaN where count == 0
        dev2 = np.where(mask, (refs - np.where(count > 0, mean, 0.0)[:, None]) ** 2, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = np.where(count >= 2, dev2 / (count - 1), np.nan)
        dof = int(np.maximum(count - 1, 0).sum())
        pooled = float(dev2[count >= 1].sum() / dof) if dof > 0 else float("nan")
        return cls(name=name, count=count, mean=mean, var=var, pooled=pooled, dof=dof)

    def std(self, fix_variance: bool) -> np.ndarray:
        """Per-row standard deviation; the pooled one where a row has < 2 references (or always)."""
        needs_pool = np.ones_like(self.count, dtype=bool) if fix_variance else self.count < 2
        if needs_pool.any() and self.dof == 0:
            raise ConfigError(
                f"online LiRA cannot estimate the {self.name} variance: no example has 2 or more {self.name} "
                f"reference models (in_mask has at most {int(self.count.max(initial=0))} per row); "
                "train more reference models"
            )
        own = np.sqrt(self.var)
        return np.maximum(np.where(needs_pool, np.sqrt(self.pooled) if self.dof else 1.0, own), STD_FLOOR)


def _filled_means(side_in: _Side, side_out: _Side) -> tuple[np.ndarray, np.ndarray]:
    """IN and OUT means, a missing side filled with the other shifted by the median IN-OUT gap.

    Raises:
        ConfigError: no example has both an IN and an OUT reference (nothing to shift by).
    """
    n_in, n_out = side_in.count, side_out.count
    both = (n_in >= 1) & (n_out >= 1)
    if n_in.shape[0] and not both.any():
        raise ConfigError(
            "online LiRA needs at least one example with both IN and OUT reference models; in_mask has "
            f"{int((n_in >= 1).sum())} rows with an IN model and {int((n_out >= 1).sum())} with an OUT model "
            "but none with both; use lira_offline"
        )
    mu_in, mu_out = side_in.mean, side_out.mean
    if both.any():
        shift = float(np.median(mu_in[both] - mu_out[both]))
        mu_in = np.where(n_in >= 1, mu_in, mu_out + shift)
        mu_out = np.where(n_out >= 1, mu_out, mu_in - shift)
    return mu_in, mu_out


def _log_fallbacks(side_in: _Side, side_out: _Side, fix_variance: bool) -> None:
    """Warn how many examples lacked references on a side, since their scores rest on pooled guesses."""
    fallbacks = {
        "no IN reference (shifted mean)": int((side_in.count == 0).sum()),
        "no OUT reference (shifted mean)": int((side_out.count == 0).sum()),
    }
    if not fix_variance:
        fallbacks["<2 IN references (pooled std)"] = int((side_in.count < 2).sum())
        fallbacks["<2 OUT references (pooled std)"] = int((side_out.count < 2).sum())
    used = {k: v for k, v in fallbacks.items() if v}
    if used:
        logger.warning("lira_online: fallbacks for %d examples: %s", side_in.count.shape[0], used)


def lira_online(
    target: np.ndarray,
    ref_scores: np.ndarray,
    in_mask: np.ndarray,
    *,
    fix_variance: bool = False,
) -> np.ndarray:
    """Online LiRA: Gaussian log-likelihood ratio of IN versus OUT references, per example.

    Carlini et al., S&P 2022 (Algorithm 1): for every example x,
    ``score = log N(target; mu_in, s_in^2) - log N(target; mu_out, s_out^2)`` where the IN
    (OUT) Gaussian is fitted to the signal of x under the reference models that were (were
    not) trained on x. Means are sample means, standard deviations ddof=1, floored at
    ``STD_FLOOR``.

    Examples with too few references on one side fall back, and a warning is logged:

    * fewer than 2 references on a side (or ``fix_variance=True``): that side uses the
      global pooled within-example standard deviation of the side (IN and OUT are pooled
      separately);
    * no reference at all on a side: its mean is the other side's mean shifted by the
      median IN-minus-OUT mean difference over the examples that have both sides.

    Args:
        target: (n,) signal under the target model (e.g. the logit-scaled confidence); finite.
        ref_scores: (n, R) the signal under R reference models; finite.
        in_mask: (n, R) bool, True where the reference model of that column was trained on
            the example of that row.
        fix_variance: one global standard deviation per side instead of per example
            (default False); LiRA's recommended setting with few (< ~64) references.

    Returns:
        (n,) float64 log-likelihood ratios, higher = more member-like.

    Raises:
        DataError: wrong shapes, dtype or non-finite values.
        ConfigError: no example has both an IN and an OUT reference, or a side has no
            example with 2+ references from which to pool a variance when one is needed.
    """
    t = float_vector("target", target)
    refs = float_matrix("ref_scores", ref_scores, t.shape[0], "target")
    mask = bool_mask("in_mask", in_mask, refs.shape)
    side_in, side_out = _Side.of("IN", refs, mask), _Side.of("OUT", refs, ~mask)
    mu_in, mu_out = _filled_means(side_in, side_out)
    gauss_in = Gaussian(mean=mu_in, std=side_in.std(fix_variance))
    gauss_out = Gaussian(mean=mu_out, std=side_out.std(fix_variance))
    _log_fallbacks(side_in, side_out, fix_variance)
    return gauss_in.log_density(t) - gauss_out.log_density(t)


def ulira_scores(
    target_forget: np.ndarray,
    ref_forget: np.ndarray,
    target_test: np.ndarray,
    ref_test: np.ndarray,
    *,
    fix_variance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """U-LiRA-style per-example audit of an unlearned model, offline form.

    Hayes et al., arXiv 2403.01218: population attacks overstate forgetting; each example
    must be judged against its own distribution. Here R reference models are retrained
    WITHOUT the forget set (and never saw the test set), so they give every forget AND every
    test example an OUT distribution; the target (unlearned) model is scored on both sets as
    by :func:`lira_offline`: the OUT Gaussian of every example is fitted
    (:func:`fit_out_gaussian`) and the target's RAW signal is standardised against it
    (:meth:`Gaussian.standardise`, ``(target - mean) / std``; with ``fix_variance`` one
    standard deviation is pooled over forget and test examples together). Any adjustment
    of the raw signal before that division belongs between those two steps. The audit then
    computes the AUC of forget scores versus test scores: 0.5 = the forget set looks as
    unseen as the test set, as after retraining; the original model scores well above 0.5.

    The paper's full U-LiRA also trains shadow models and UNLEARNS them with the audited
    algorithm to get an IN distribution; with such models use :func:`lira_online`, marking
    the unlearned-shadow columns in ``in_mask``.

    Args:
        target_forget: (n_f,) target-model signal on the forget set (logit-scaled confidence).
        ref_forget: (n_f, R) the same under the R retrained reference models, R >= 2.
        target_test: (n_t,) target-model signal on held-out test examples.
        ref_test: (n_t, R) the same under the same R reference models (same column order).
        fix_variance: pool one standard deviation over all n_f + n_t examples.

    Returns:
        ``(forget_scores (n_f,), test_scores (n_t,))``, float64, higher = more member-like.

    Raises:
        DataError: wrong shapes or non-finite values, or different R for forget and test.
        ConfigError: R < 2.
    """
    tf, rf, tt, rt = forget_and_test(target_forget, ref_forget, target_test, ref_test)
    out = fit_out_gaussian(np.concatenate([rf, rt]), fix_variance=fix_variance)
    scores = out.standardise(np.concatenate([tf, tt]))
    return scores[: tf.shape[0]], scores[tf.shape[0] :]


def ulira_calibrated(
    target_forget: np.ndarray,
    ref_forget: np.ndarray,
    target_test: np.ndarray,
    ref_test: np.ndarray,
    *,
    fix_variance: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """U-LiRA scores of :func:`ulira_scores` with the target's calibration taken out first.

    The audited model may be calibrated differently from the reference models (honestly, or
    by a supplier who divides its logits by a temperature to flatten every score). Each
    example's signal is therefore first compared with the line
    ``target ~ a + b * mean_ref`` fitted on the TEST rows only
    (:func:`attacks.calibration.fit_line_on_nonmembers`; flat at the test mean when every
    test row has the same reference mean), and the residual is then standardised by the
    example's own reference standard deviation:
    ``score = (target - (a + b * mean_ref)) / std_ref``.

    Why this order: a temperature divides the logit margin (``Signals.logit_margin``) by one
    common factor, which the line absorbs, so every residual shrinks by the same factor and
    the standardised scores keep their order; the AUC does not move. Pass that signal: the
    logit-scaled confidence is not scaled but reshaped by a temperature (best rival at
    ``T = 1``, mean of all rivals at large ``T``), and still loses part of its AUC
    (``tests/test_calibration.py`` gives the numbers). Fitting the line after
    standardising (``ulira_scores`` followed by a line on the scores) lets a large
    temperature push every score towards ``-mean_ref / std_ref``, a function of the
    references alone, and the AUC falls towards 0.5 (issue #12).

    Args and raises: as :func:`ulira_scores`, for any signal (the logit margin, see above).

    Returns:
        ``(forget_scores (n_f,), test_scores (n_t,))``, float64, higher = more member-like.
    """
    tf, rf, tt, rt = forget_and_test(target_forget, ref_forget, target_test, ref_test)
    out = fit_out_gaussian(np.concatenate([rf, rt]), fix_variance=fix_variance)
    line = fit_line_on_nonmembers(tt, out.mean[tf.shape[0] :])
    scores = (np.concatenate([tf, tt]) - line.predict(out.mean)) / out.std
    return scores[: tf.shape[0]], scores[tf.shape[0] :]
