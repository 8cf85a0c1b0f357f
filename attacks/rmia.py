"""RMIA: per-example membership scores from likelihood ratios against a population.

Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks" (ICML 2024, arXiv
2312.03262), on the true-class probability (:func:`rmia`), and in a calibrated form on the
logit margin (:func:`rmia_calibrated`) that an audited model cannot game by
changing its temperature. Like the LiRA family it returns one float64 score per example,
higher = more member-like.
"""

from __future__ import annotations

import logging

import numpy as np

from attacks._arrays import bool_mask, check_probabilities, float_matrix, float_vector, forget_and_test
from attacks.calibration import fit_line_on_nonmembers
from unlearn_audit.errors import ConfigError, DataError

__all__ = ["rmia", "rmia_calibrated", "rmia_log_ratios"]

logger = logging.getLogger(__name__)

# Smallest value of RMIA's denominators p(x), p(z); keeps ratios finite when a = 1 and
# every reference model gives probability 0.
_P_FLOOR = float(np.finfo(np.float64).tiny)


def _rmia_denominator(ref: np.ndarray, in_mask: np.ndarray | None, a: float) -> np.ndarray:
    """RMIA's Pr(x): the signal averaged over reference models, half of which hold x."""
    if in_mask is None:
        mean_out = ref.mean(axis=1)
        return (1.0 + a) / 2.0 * mean_out + (1.0 - a) / 2.0
    n_in = in_mask.sum(axis=1)
    n_out = (~in_mask).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_in = np.where(in_mask, ref, 0.0).sum(axis=1) / n_in
        mean_out = np.where(~in_mask, ref, 0.0).sum(axis=1) / n_out
    offline = (1.0 + a) / 2.0 * mean_out + (1.0 - a) / 2.0
    online = 0.5 * (mean_in + mean_out)
    # IN-only rows: invert the offline model mean_in ~ a * mean_out + (1 - a).
    if a > 0:
        est_out = np.clip((mean_in - (1.0 - a)) / a, 0.0, 1.0)
        in_only = 0.5 * (mean_in + est_out)
    else:
        in_only = mean_in
    n_in_only = int(((n_out == 0) & (n_in > 0)).sum())
    if n_in_only:
        logger.warning(
            "rmia: %d examples have only IN reference models; Pr(x) inverted from the offline model",
            n_in_only,
        )
    return np.where(n_in == 0, offline, np.where(n_out == 0, in_only, online))


def rmia(
    target_p: np.ndarray,
    ref_p: np.ndarray,
    in_mask: np.ndarray | None,
    population_target_p: np.ndarray,
    population_ref_p: np.ndarray,
    *,
    a: float = 0.3,
    gamma: float = 1.0,
) -> np.ndarray:
    """RMIA: how often x's likelihood ratio beats the population's, per example.

    Zarifzadeh et al., ICML 2024. With ``Pr(x) = E_ref[Pr(x | theta')]`` over reference
    models half of which were trained on x,
    ``score(x) = Pr_z[ (Pr(x|theta) / Pr(x)) / (Pr(z|theta) / Pr(z)) > gamma ]``, the fraction
    of population points z (never in any training set) that x dominates.

    Pr(x) per row of ``ref_p``:

    * ``in_mask is None`` or the row has no IN reference (offline, the paper's linear
      approximation): ``(1 + a) / 2 * mean_OUT + (1 - a) / 2``;
    * the row has IN and OUT references (online): ``(mean_IN + mean_OUT) / 2``, equal to the
      plain mean when the split is balanced;
    * the row has only IN references: ``(mean_IN + est_OUT) / 2`` with
      ``est_OUT = clip((mean_IN - (1 - a)) / a, 0, 1)`` (``mean_IN`` when ``a = 0``).

    Population points are OUT for every reference model, so Pr(z) always uses the offline
    formula. ``a = 1`` means Pr = mean_OUT (no correction).

    Args:
        target_p: (n,) true-class probability of each audited example under the target
            model, in [0, 1]; compute it in float64 from logits (``Signals.confidence``).
        ref_p: (n, R) the same under R reference models.
        in_mask: (n, R) bool, True where that reference model trained on that example, or
            None (offline: no reference model trained on any audited example).
        population_target_p: (m,) true-class probability of m >= 1 population points under
            the target model.
        population_ref_p: (m, R) the same under the same R reference models.
        a: offline coefficient in [0, 1] (default 0.3, the paper's CIFAR-10 value; Privacy
            Meter tunes it on a reference model used as a stand-in target).
        gamma: likelihood-ratio threshold > 0 (default 1.0; the paper's code uses 2.0).

    Returns:
        (n,) float64 scores in [0, 1], higher = more member-like. O((n + m) log m) time via
        sort + binary search; no (n, m) matrix is formed.

    Raises:
        DataError: wrong shapes, values outside [0, 1], non-finite values, m = 0.
        ConfigError: ``a`` outside [0, 1] or ``gamma`` <= 0.
    """
    if not np.isfinite(a) or not 0.0 <= a <= 1.0:
        raise ConfigError(f"a must lie in [0, 1], got {a!r}")
    if not np.isfinite(gamma) or gamma <= 0:
        raise ConfigError(f"gamma must be a positive number, got {gamma!r}")
    tx = float_vector("target_p", target_p)
    rx = float_matrix("ref_p", ref_p, tx.shape[0], "target_p")
    tz = float_vector("population_target_p", population_target_p)
    if tz.shape[0] == 0:
        raise DataError("population_target_p must hold at least one population point, got 0")
    rz = float_matrix("population_ref_p", population_ref_p, tz.shape[0], "population_target_p")
    if rz.shape[1] != rx.shape[1]:
        raise DataError(
            f"population_ref_p must come from the same R={rx.shape[1]} reference models as ref_p, "
            f"got {rz.shape[1]} columns"
        )
    for name, arr in (("target_p", tx), ("ref_p", rx), ("population_target_p", tz), ("population_ref_p", rz)):
        check_probabilities(name, arr)
    mask = None if in_mask is None else bool_mask("in_mask", in_mask, rx.shape)

    p_x = np.maximum(_rmia_denominator(rx, mask, float(a)), _P_FLOOR)
    p_z = np.maximum(_rmia_denominator(rz, None, float(a)), _P_FLOOR)
    ratio_x = tx / p_x
    ratio_z = np.sort(tz / p_z)
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma  (ratios are >= 0)
    counts = np.searchsorted(ratio_z, ratio_x / gamma, side="left")
    return counts.astype(np.float64) / tz.shape[0]


def rmia_calibrated(
    target_forget: np.ndarray,
    ref_forget: np.ndarray,
    target_test: np.ndarray,
    ref_test: np.ndarray,
    *,
    gamma: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """RMIA's population comparison on a likelihood ratio the target's calibration cannot move.

    :func:`rmia` divides the target's true-class probability by the references' mean, so it
    assumes that the target and the references are calibrated alike. A temperature breaks
    that: at a large temperature every target probability is close to ``1 / classes``, each
    ratio becomes ``1 / (classes * Pr(x))``, a function of the references alone, and the
    forget set is no longer told apart. Here the ratio is taken on a raw signal ``c`` that a
    temperature only scales, the logit margin (``Signals.logit_margin``), after the
    calibration line of :mod:`attacks.calibration`:

    * the line ``c_target ~ u + v * mean_ref`` is fitted on the test rows, which no model
      trained on (they are RMIA's population z as well as the non-members scored);
    * ``log LR(x) = (c_target(x) - (u + v * mean_ref(x))) / s``: what the target shows
      beyond what a non-member with x's references is expected to show, in units of ``s``,
      the standard deviation of the population's residuals;
    * ``score(x) = Pr_z[LR(x) / LR(z) > gamma]``, the fraction of the test rows z whose
      log-ratio lies below ``log LR(x) - log gamma``, exactly as in :func:`rmia`.

    Why this form: a temperature divides the logit margin by one common factor; the line
    absorbs it, the residuals and ``s`` shrink together, and ``log LR`` does not change. The
    offline coefficient ``a`` of :func:`rmia` is not needed: the line, fitted where
    membership is known to be absent, is what ``a`` approximates. A rank comparison alone
    (without the line) would not do: the reference mean in the ratio's denominator would
    still be compared with a target of another calibration.
    The reference models must not have trained on any forget or test example (as in
    :func:`attacks.lira.ulira_scores`). ``gamma >= 1`` is required so that a test row never
    counts as beating itself: forget and test rows are then scored by one and the same
    function of their log-ratio, as a fair AUC needs.

    Args:
        target_forget: (n_f,) target-model logit margin on the forget set.
        ref_forget: (n_f, R) the same under R >= 1 reference models.
        target_test: (n_t,) target-model logit margin on the test (population) set.
        ref_test: (n_t, R) the same under the same R reference models.
        gamma: likelihood-ratio threshold, >= 1 (default 1.0: the score is then the rank of
            x's log-ratio among the population's).

    Returns:
        ``(forget_scores (n_f,), test_scores (n_t,))`` in [0, 1], higher = more member-like.

    Raises:
        DataError: wrong shapes, non-finite values, different R for forget and test, no test row.
        ConfigError: ``gamma`` < 1 or not finite.
    """
    if not np.isfinite(gamma) or gamma < 1.0:
        raise ConfigError(f"gamma must be a number >= 1, got {gamma!r}")
    log_f, log_t = rmia_log_ratios(target_forget, ref_forget, target_test, ref_test)
    population = np.sort(log_t)
    log_gamma = float(np.log(gamma))

    def score(log_ratio: np.ndarray) -> np.ndarray:
        return np.searchsorted(population, log_ratio - log_gamma, side="left") / population.size

    return score(log_f).astype(np.float64), score(log_t).astype(np.float64)


def rmia_log_ratios(
    target_forget: np.ndarray, ref_forget: np.ndarray, target_test: np.ndarray, ref_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The calibrated log-ratios ``log LR`` of :func:`rmia_calibrated`, before the population count.

    At ``gamma = 1`` the RMIA score is the share of test rows with a lower log-ratio, a strictly
    increasing function of it on the test rows; an AUC computed on the log-ratios themselves
    ranks forget and test rows alike without RMIA's quantisation to ``n_t + 1`` levels (which
    ties every forget row with a test row). Args and raises: as :func:`rmia_calibrated`.
    """
    tf, rf, tt, rt = forget_and_test(target_forget, ref_forget, target_test, ref_test)
    if tt.shape[0] == 0:
        raise DataError("target_test must hold at least one population point, got 0")
    line = fit_line_on_nonmembers(tt, rt.mean(axis=1))
    res_f, res_t = tf - line.predict(rf.mean(axis=1)), tt - line.predict(rt.mean(axis=1))
    spread = float(res_t.std())
    scale = spread if spread > 0 else 1.0
    return res_f / scale, res_t / scale
