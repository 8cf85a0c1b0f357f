"""Reference-model membership inference: LiRA, RMIA, U-LiRA, reference training and a signal cache.

Every attack here takes per-example signals that the caller has already computed (a
target model's signal and the same signal under R reference models) and returns one
float64 SCORE per example, higher = more member-like. Thresholds, ROC curves and AUCs
are the job of :mod:`attacks.stats`.

* :func:`lira_offline`, :func:`lira_online`: the Likelihood Ratio Attack of Carlini et al.,
  "Membership Inference Attacks From First Principles" (IEEE S&P 2022, arXiv 2112.03570),
  on the logit-scaled confidence ``log(p_y / (1 - p_y))``.
* :func:`rmia`: Zarifzadeh et al., "Low-Cost High-Power Membership Inference Attacks"
  (ICML 2024, arXiv 2312.03262), on the true-class probability.
* :func:`ulira_scores`: the unlearning audit of Hayes et al., "Inexact Unlearning Needs More
  Careful Evaluations to Avoid a False Sense of Privacy" (arXiv 2403.01218), in its
  offline form (reference models retrained without the forget set).
* :func:`train_reference_models`: R same-architecture models that differ in seed, trained
  one after another or all at once with ``torch.func.vmap``; :func:`benchmark_strategies`.
* :class:`SignalCache`: logits cached on disk by model and data fingerprint.

Example::

    ref_models = train_reference_models(make_mlp, x_retain, y_retain, seeds=range(8), epochs=20)
    tgt = compute_signals(compute_logits(unlearned, x_all), y_all).logit_confidence
    refs = np.stack([compute_signals(compute_logits(m, x_all), y_all).logit_confidence
                     for m in ref_models], axis=1)                       # (n, R)
    forget_scores, test_scores = ulira_scores(tgt[f], refs[f], tgt[t], refs[t])
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.fileio import atomic_write_bytes

__all__ = [
    "SignalCache",
    "StrategyBenchmark",
    "benchmark_strategies",
    "lira_offline",
    "lira_online",
    "resolve_strategy",
    "rmia",
    "train_reference_models",
    "ulira_scores",
]

logger = logging.getLogger(__name__)

# Smallest standard deviation used in a Gaussian fit (in units of the signal). Without a
# floor an example whose reference scores all agree exactly gets an infinite score.
STD_FLOOR = 1e-6

# Smallest value of RMIA's denominators p(x), p(z); keeps ratios finite when a = 1 and
# every reference model gives probability 0.
_P_FLOOR = float(np.finfo(np.float64).tiny)

Strategy = Literal["auto", "vmap", "loop"]


# ============================================================================ validation


def _vector(name: str, value: object) -> np.ndarray:
    a = (
        np.asarray(value, dtype=np.float64)
        if not isinstance(value, torch.Tensor)
        else (value.detach().cpu().numpy().astype(np.float64))
    )
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of shape (n,), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} must be finite; {int(np.sum(~np.isfinite(a)))} entries are NaN or inf")
    return a


def _matrix(name: str, value: object, n: int, n_name: str) -> np.ndarray:
    a = (
        np.asarray(value, dtype=np.float64)
        if not isinstance(value, torch.Tensor)
        else (value.detach().cpu().numpy().astype(np.float64))
    )
    if a.ndim != 2 or a.shape[0] != n:
        raise DataError(
            f"{name} must have shape ({n}, R) to match {n_name} of length {n}, got shape {a.shape}"
        )
    if a.shape[1] < 1:
        raise DataError(f"{name} must have at least one reference column, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} must be finite; {int(np.sum(~np.isfinite(a)))} entries are NaN or inf")
    return a


def _mask(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    a = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if a.dtype != bool:
        raise DataError(f"{name} must be a boolean array, got dtype {a.dtype}")
    if a.shape != shape:
        raise DataError(f"{name} must have shape {shape} like the reference scores, got shape {a.shape}")
    return a


def _probabilities(name: str, a: np.ndarray) -> None:
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise DataError(f"{name} must hold probabilities in [0, 1], got min {a.min():.6g}, max {a.max():.6g}")


# ============================================================================ LiRA


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
    t = _vector("target", target)
    refs = _matrix("ref_out", ref_out, t.shape[0], "target")
    n_refs = refs.shape[1]
    if n_refs < 2:
        raise ConfigError(
            f"offline LiRA needs at least 2 OUT reference models per example to estimate a variance, "
            f"got R={n_refs}; train more reference models"
        )
    mu = refs.mean(axis=1)
    var = refs.var(axis=1, ddof=1)
    if fix_variance:
        std = np.full_like(mu, np.sqrt(var.mean()) if var.size else 1.0)
    else:
        std = np.sqrt(var)
    std = np.maximum(std, STD_FLOOR)
    return (t - mu) / std


def _side_stats(refs: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Per-row count, mean and ddof=1 variance of ``refs[mask]``; pooled variance and its df."""
    count = mask.sum(axis=1)
    total = np.where(mask, refs, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count  # NaN where count == 0
    dev2 = np.where(mask, (refs - np.where(count > 0, mean, 0.0)[:, None]) ** 2, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count >= 2, dev2 / (count - 1), np.nan)
    dof = int(np.maximum(count - 1, 0).sum())
    pooled = float(dev2[count >= 1].sum() / dof) if dof > 0 else float("nan")
    return count, mean, var, pooled, dof


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
    t = _vector("target", target)
    refs = _matrix("ref_scores", ref_scores, t.shape[0], "target")
    mask = _mask("in_mask", in_mask, refs.shape)

    stats = {}
    for side, side_mask in (("IN", mask), ("OUT", ~mask)):
        stats[side] = _side_stats(refs, side_mask)
    n_in, mu_in, var_in, pooled_in, dof_in = stats["IN"]
    n_out, mu_out, var_out, pooled_out, dof_out = stats["OUT"]

    both = (n_in >= 1) & (n_out >= 1)
    if t.shape[0] and not both.any():
        raise ConfigError(
            "online LiRA needs at least one example with both IN and OUT reference models; in_mask has "
            f"{int((n_in >= 1).sum())} rows with an IN model and {int((n_out >= 1).sum())} with an OUT model "
            "but none with both; use lira_offline"
        )
    if both.any():
        shift = float(np.median(mu_in[both] - mu_out[both]))
        mu_in = np.where(n_in >= 1, mu_in, mu_out + shift)
        mu_out = np.where(n_out >= 1, mu_out, mu_in - shift)

    def side_std(side: str, count: np.ndarray, var: np.ndarray, pooled: float, dof: int) -> np.ndarray:
        needs_pool = np.ones_like(count, dtype=bool) if fix_variance else count < 2
        if needs_pool.any() and dof == 0:
            raise ConfigError(
                f"online LiRA cannot estimate the {side} variance: no example has 2 or more {side} "
                f"reference models (in_mask has at most {int(count.max(initial=0))} per row); "
                "train more reference models"
            )
        return np.maximum(np.where(needs_pool, np.sqrt(pooled) if dof else 1.0, np.sqrt(var)), STD_FLOOR)

    s_in = side_std("IN", n_in, var_in, pooled_in, dof_in)
    s_out = side_std("OUT", n_out, var_out, pooled_out, dof_out)

    fallbacks = {
        "no IN reference (shifted mean)": int((n_in == 0).sum()),
        "no OUT reference (shifted mean)": int((n_out == 0).sum()),
    }
    if not fix_variance:
        fallbacks["<2 IN references (pooled std)"] = int((n_in < 2).sum())
        fallbacks["<2 OUT references (pooled std)"] = int((n_out < 2).sum())
    used = {k: v for k, v in fallbacks.items() if v}
    if used:
        logger.warning("lira_online: fallbacks for %d examples: %s", t.shape[0], used)

    z_in = (t - mu_in) / s_in
    z_out = (t - mu_out) / s_out
    return (-0.5 * z_in**2 - np.log(s_in)) - (-0.5 * z_out**2 - np.log(s_out))


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
    test example an OUT distribution; the target (unlearned) model is scored on both sets by
    :func:`lira_offline` (standardised score; with ``fix_variance`` one standard deviation
    is pooled over forget and test examples together). The audit then computes the AUC of
    forget scores versus test scores: 0.5 = the forget set looks as unseen as the test set,
    as after retraining; the original model scores well above 0.5.

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
    tf = _vector("target_forget", target_forget)
    tt = _vector("target_test", target_test)
    rf = _matrix("ref_forget", ref_forget, tf.shape[0], "target_forget")
    rt = _matrix("ref_test", ref_test, tt.shape[0], "target_test")
    if rf.shape[1] != rt.shape[1]:
        raise DataError(
            f"ref_forget and ref_test must come from the same reference models, got R={rf.shape[1]} "
            f"and R={rt.shape[1]} columns"
        )
    scores = lira_offline(np.concatenate([tf, tt]), np.concatenate([rf, rt]), fix_variance=fix_variance)
    return scores[: tf.shape[0]], scores[tf.shape[0] :]


# ============================================================================ RMIA


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
    tx = _vector("target_p", target_p)
    rx = _matrix("ref_p", ref_p, tx.shape[0], "target_p")
    tz = _vector("population_target_p", population_target_p)
    if tz.shape[0] == 0:
        raise DataError("population_target_p must hold at least one population point, got 0")
    rz = _matrix("population_ref_p", population_ref_p, tz.shape[0], "population_target_p")
    if rz.shape[1] != rx.shape[1]:
        raise DataError(
            f"population_ref_p must come from the same R={rx.shape[1]} reference models as ref_p, "
            f"got {rz.shape[1]} columns"
        )
    for name, arr in (("target_p", tx), ("ref_p", rx), ("population_target_p", tz), ("population_ref_p", rz)):
        _probabilities(name, arr)
    mask = None if in_mask is None else _mask("in_mask", in_mask, rx.shape)

    p_x = np.maximum(_rmia_denominator(rx, mask, float(a)), _P_FLOOR)
    p_z = np.maximum(_rmia_denominator(rz, None, float(a)), _P_FLOOR)
    ratio_x = tx / p_x
    ratio_z = np.sort(tz / p_z)
    # ratio_x / ratio_z > gamma  <=>  ratio_z < ratio_x / gamma  (ratios are >= 0)
    counts = np.searchsorted(ratio_z, ratio_x / gamma, side="left")
    return counts.astype(np.float64) / tz.shape[0]


# ============================================================================ training


def _has_running_stats(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in model.modules()
    )


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def resolve_strategy(model: nn.Module, strategy: Strategy) -> Literal["vmap", "loop"]:
    """The training strategy actually used for ``model`` ("auto" resolved).

    ``auto`` picks ``vmap`` unless the model has normalisation layers with running
    statistics (BatchNorm, InstanceNorm with ``track_running_stats``), whose buffers change
    during training and cannot be updated under vmap, or active dropout, whose random masks
    under vmap differ from the loop's (the models would train correctly but not reproduce
    the loop strategy).

    Raises:
        ConfigError: unknown ``strategy``, or ``"vmap"`` for a model with running statistics.
    """
    if strategy not in ("auto", "vmap", "loop"):
        raise ConfigError(f"strategy must be 'auto', 'vmap' or 'loop', got {strategy!r}")
    if strategy == "loop":
        return "loop"
    if _has_running_stats(model):
        if strategy == "vmap":
            raise ConfigError(
                f"strategy='vmap' cannot train {type(model).__name__}: it has normalisation layers with "
                "running statistics (e.g. BatchNorm); use strategy='loop' or 'auto'"
            )
        return "loop"
    if strategy == "auto" and _has_dropout(model):
        return "loop"
    return "vmap"


def _seeded_model(make_model: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    # fork_rng: seeding for the initialisation must not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"make_model must return a torch.nn.Module, got {type(model).__name__}")
    return model.to(device)


def _batch_order(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen) for _ in range(epochs)]


def _check_training_args(
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
) -> list[int]:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise DataError(
            f"x must be a torch.Tensor of shape (N, ...), got {type(x).__name__}"
            + (f" with shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else "")
        )
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"y must be a tensor of shape ({x.shape[0]},) to match x, got {shape}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise DataError(f"y must hold integer class labels, got dtype {y.dtype}")
    if x.shape[0] == 0:
        raise DataError("x must hold at least one training example, got 0")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds must name at least one seed, got an empty sequence")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds must be distinct (equal seeds give identical models), got {seed_list}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not np.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not np.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    return seed_list


@dataclass(frozen=True)
class _Recipe:
    """The checked arguments of :func:`train_reference_models`, shared by both strategies.

    ``x`` and ``y`` (long) are already on ``device``.
    """

    make_model: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    seeds: list[int]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    device: torch.device
    progress: Callable[[int, int], None] | None

    def new_model(self, seed: int) -> nn.Module:
        """The untrained model of ``seed`` on ``device``, in train mode."""
        model = _seeded_model(self.make_model, seed, self.device)
        model.train()
        return model

    def optimizer(self, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        """Adam with the recipe's learning rate and weight decay."""
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def batches(self) -> list[slice]:
        """Positions of the batches in an epoch's permutation; the last one may be smaller."""
        n = self.x.shape[0]
        return [slice(start, start + self.batch_size) for start in range(0, n, self.batch_size)]

    def report(self, done: int) -> None:
        """``progress(done, R * epochs)`` in model-epochs, if a callback was given."""
        if self.progress is not None:
            self.progress(done, len(self.seeds) * self.epochs)


def _adam_step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _train_loop(recipe: _Recipe) -> list[nn.Module]:
    n, epochs = recipe.x.shape[0], recipe.epochs
    models = []
    for r, seed in enumerate(recipe.seeds):
        model = recipe.new_model(seed)
        opt = recipe.optimizer(list(model.parameters()))
        for e, perm in enumerate(_batch_order(n, seed, epochs)):
            perm = perm.to(recipe.device)
            for batch in recipe.batches():
                idx = perm[batch]
                loss = F.cross_entropy(model(recipe.x[idx]), recipe.y[idx])
                _adam_step(opt, loss)
            logger.debug(
                "reference model %d (seed %d) epoch %d: last batch loss %.4f", r, seed, e + 1, loss.item()
            )
            recipe.report(r * epochs + e + 1)
        models.append(model.eval())
    return models


def _train_vmap(recipe: _Recipe) -> list[nn.Module]:
    n, n_models = recipe.x.shape[0], len(recipe.seeds)
    models = [recipe.new_model(seed) for seed in recipe.seeds]
    # stack_module_state returns fresh leaf tensors with a leading model axis (R, ...);
    # Adam is element-wise, so one optimiser over them is R independent optimisers.
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    skeleton.train()
    randomness = "different" if _has_dropout(skeleton) else "error"
    if randomness == "different":
        logger.warning(
            "vmap training with dropout: each model draws its own masks, which differ from the "
            "loop strategy's; the models are valid but not identical to strategy='loop'"
        )

    def loss_one(
        p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    batched_loss = vmap(loss_one, in_dims=(0, 0, 0, 0), randomness=randomness)
    opt = recipe.optimizer(list(params.values()))
    orders = [_batch_order(n, seed, recipe.epochs) for seed in recipe.seeds]
    for e in range(recipe.epochs):
        perms = torch.stack([orders[r][e] for r in range(n_models)]).to(recipe.device)  # (R, n)
        for batch in recipe.batches():
            idx = perms[:, batch]  # (R, b): each model its own batch
            losses = batched_loss(params, buffers, recipe.x[idx], recipe.y[idx])
            # Sum, not mean: each model's gradient is then exactly its own batch-mean gradient.
            _adam_step(opt, losses.sum())
        logger.debug("vmap epoch %d: last batch losses %s", e + 1, losses.detach().cpu().numpy())
        recipe.report((e + 1) * n_models)
    with torch.no_grad():
        for r, model in enumerate(models):
            # Copy by name (not load_state_dict): handles tied parameters and non-persistent buffers.
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_((params[name] if name in params else buffers[name])[r])
            model.eval()
    return models


def train_reference_models(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    strategy: Strategy = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> list[nn.Module]:
    """Train R reference models of one architecture that differ only in their seed.

    Model r is built as ``torch.manual_seed(seeds[r]); make_model()`` (inside
    ``torch.random.fork_rng``, so the caller's global RNG is untouched) and trained with
    Adam on cross-entropy for ``epochs`` passes over (x, y); the batch order of every epoch
    is ``torch.randperm(N, generator=torch.Generator().manual_seed(seeds[r]))``, drawn
    epoch after epoch from that one generator. No augmentation.

    Strategies:

    * ``"loop"``: the models one after another, each with its own ``torch.optim.Adam``.
    * ``"vmap"``: all R at once with ``torch.func``: parameters stacked by
      ``stack_module_state``, the per-model forward and loss vmapped over
      (params, x_batch_r, y_batch_r), one Adam over the stacked leaves. Same initialisation,
      same batches, same element-wise updates: the models equal the loop's up to
      floating-point rounding (tested). Not possible with running-statistics buffers.
    * ``"auto"`` (default): see :func:`resolve_strategy`.

    Args:
        make_model: zero-argument factory returning a fresh, untrained ``nn.Module``.
        x: (N, ...) training inputs, in the form the model expects.
        y: (N,) integer class labels.
        seeds: R >= 1 distinct integer seeds, one per model.
        epochs: passes over the data, >= 1.
        batch_size: examples per step (default 128); the last batch of an epoch may be smaller.
        lr: Adam learning rate (default 1e-3).
        weight_decay: Adam L2 penalty (default 0.0).
        device: where the models and data live during training (default ``"cpu"``).
        strategy: ``"auto"`` | ``"vmap"`` | ``"loop"``.
        progress: optional callback ``progress(done, total)`` in model-epochs,
            ``total = R * epochs``.

    Returns:
        R trained models on ``device``, in eval mode, in the order of ``seeds``.

    Raises:
        DataError: x/y shapes or label dtype.
        ConfigError: empty or repeated seeds, non-positive epochs/batch size/lr, negative
            weight decay, unknown strategy, vmap on a model with running statistics.
    """
    seed_list = _check_training_args(x, y, seeds, epochs, batch_size, lr, weight_decay)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc
    probe = _seeded_model(make_model, seed_list[0], torch.device("meta"))
    chosen = resolve_strategy(probe, strategy)
    logger.info(
        "training %d reference models (%s, %d epochs, batch %d) on %s",
        len(seed_list),
        chosen,
        epochs,
        batch_size,
        dev,
    )
    recipe = _Recipe(
        make_model=make_model,
        x=x.to(dev),
        y=y.to(device=dev, dtype=torch.long),
        seeds=seed_list,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        weight_decay=float(weight_decay),
        device=dev,
        progress=progress,
    )
    return _train_vmap(recipe) if chosen == "vmap" else _train_loop(recipe)


@dataclass(frozen=True)
class StrategyBenchmark:
    """Wall time of :func:`train_reference_models` under the loop and vmap strategies.

    ``max_abs_param_diff`` is the largest absolute difference between any parameter of the
    loop-trained and the vmap-trained model with the same seed (should be float rounding).
    """

    num_models: int
    num_examples: int
    epochs: int
    batch_size: int
    device: str
    loop_seconds: float
    vmap_seconds: float
    speedup: float
    max_abs_param_diff: float


def benchmark_strategies(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
) -> StrategyBenchmark:
    """Train the same R models with ``strategy="loop"`` and ``strategy="vmap"`` and time both.

    Arguments as in :func:`train_reference_models`. ``speedup = loop_seconds / vmap_seconds``.
    CUDA work is synchronised before each clock read.

    Raises:
        ConfigError: as :func:`train_reference_models`, including a model vmap cannot train.
    """
    dev = torch.device(device)
    kwargs = dict(
        seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=dev
    )
    times: dict[str, float] = {}
    trained: dict[str, list[nn.Module]] = {}
    for strategy in ("loop", "vmap"):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        trained[strategy] = train_reference_models(make_model, x, y, strategy=strategy, **kwargs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times[strategy] = time.perf_counter() - start
    diff = 0.0
    for m_loop, m_vmap in zip(trained["loop"], trained["vmap"], strict=True):
        sd_vmap = m_vmap.state_dict()
        for k, v in m_loop.state_dict().items():
            if v.is_floating_point():
                diff = max(diff, float((v - sd_vmap[k]).abs().max()))
    return StrategyBenchmark(
        num_models=len(trained["loop"]),
        num_examples=int(x.shape[0]),
        epochs=epochs,
        batch_size=batch_size,
        device=str(dev),
        loop_seconds=times["loop"],
        vmap_seconds=times["vmap"],
        speedup=times["loop"] / times["vmap"] if times["vmap"] > 0 else float("inf"),
        max_abs_param_diff=diff,
    )


# ============================================================================ cache


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # view(uint8) works for every dtype, bfloat16 included, which numpy cannot represent.
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's class name and state_dict (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    for name, value in sorted(model.state_dict().items()):
        if isinstance(value, torch.Tensor):
            h.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
            h.update(_tensor_bytes(value))
        else:  # extra state
            h.update(f"{name}|{value!r}\n".encode())
    return h.hexdigest()


def data_digest(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of the bytes, dtypes and shapes of x and y."""
    h = hashlib.sha256()
    for name, arr in (("x", x), ("y", y)):
        t = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(arr))
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


class SignalCache:
    """On-disk cache of a model's outputs (typically logits) on one data role.

    An entry is keyed by SHA-256 of (the model's state_dict, the data x and y, a caller
    key such as ``"logits:forget"``) and stored as ``<directory>/<sha256>.npz`` with the
    three digests inside; it is written atomically (temporary file + ``os.replace``), so a
    crash never leaves a half-written entry. A file that is unreadable or whose stored
    digests do not match is recomputed and overwritten (with a warning).

    Example::

        cache = SignalCache(".unlearn_audit_cache")
        logits = cache.get_or_compute(model, x_forget, y_forget,
                                      lambda m, x: compute_logits(m, x, device="cpu"), key="forget")
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"cache directory {self.directory} exists and is not a folder")

    def path_for(
        self, model: nn.Module, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, key: str = ""
    ) -> Path:
        """Where the entry for (model, x, y, key) lives (whether or not it exists)."""
        return self.directory / f"{self._entry_id(model_digest(model), data_digest(x, y), key)}.npz"

    @staticmethod
    def _entry_id(m_digest: str, d_digest: str, key: str) -> str:
        return hashlib.sha256(f"{m_digest}\n{d_digest}\n{key}".encode()).hexdigest()

    def get_or_compute(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        compute_fn: Callable[[nn.Module, torch.Tensor | np.ndarray], torch.Tensor | np.ndarray],
        *,
        key: str = "",
    ) -> np.ndarray:
        """The cached array for (model, x, y, key), or ``compute_fn(model, x)`` stored then returned.

        Args:
            model: the model; only its class and state_dict enter the key.
            x: (N, ...) inputs of the data role; y: (N,) labels. Both enter the key.
            compute_fn: called as ``compute_fn(model, x)`` on a miss; returns an array or tensor.
            key: caller's extra key (signal name, role, batch-norm mode, ...), default "".

        Returns:
            numpy array as returned by ``compute_fn`` (tensors are converted on CPU).
        """
        m_digest, d_digest = model_digest(model), data_digest(x, y)
        path = self.directory / f"{self._entry_id(m_digest, d_digest, key)}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as npz:
                    meta = (str(npz["model_digest"]), str(npz["data_digest"]), str(npz["key"]))
                    if meta == (m_digest, d_digest, key):
                        logger.debug("signal cache hit %s", path.name)
                        return np.array(npz["values"])
                logger.warning("signal cache entry %s does not match its key; recomputing", path)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                logger.warning("signal cache entry %s is unreadable (%s); recomputing", path, exc)
        out = compute_fn(model, x)
        values = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
        buf = io.BytesIO()
        np.savez(
            buf,
            values=values,
            model_digest=np.array(m_digest),
            data_digest=np.array(d_digest),
            key=np.array(key),
        )
        atomic_write_bytes(path, buf.getvalue())
        logger.debug("signal cache stored %s (%s)", path.name, values.shape)
        return values
