"""Reference-model membership inference: one import for the attacks that compare a target with references.

Every attack takes per-example signals that the caller has already computed (a target
model's signal and the same signal under R reference models) and returns one float64
SCORE per example, higher = more member-like. Thresholds, ROC curves and AUCs are the job
of :mod:`attacks.stats`. The work lives in one module per job:

* :mod:`attacks.lira`: :func:`lira_offline`, :func:`lira_online` (Carlini et al., S&P 2022)
  and :func:`ulira_scores` (Hayes et al., arXiv 2403.01218), on the logit-scaled confidence;
  :func:`ulira_calibrated`, the audit's form, which takes the target's calibration out first.
* :mod:`attacks.rmia`: :func:`rmia` (Zarifzadeh et al., ICML 2024), on the true-class probability;
  :func:`rmia_calibrated`, on the calibrated logit margin.
* :mod:`attacks.calibration`: the line fitted on non-members that both calibrated forms use.
* :mod:`attacks.reference_training`: :func:`train_reference_models` (loop or ``torch.func.vmap``),
  :func:`resolve_strategy`, :func:`benchmark_strategies`.
* :mod:`attacks.signal_cache`: :class:`SignalCache`, logits cached on disk by model and data digest.

Example::

    ref_models = train_reference_models(make_mlp, x_retain, y_retain, seeds=range(8), epochs=20)
    tgt = compute_signals(compute_logits(unlearned, x_all), y_all).logit_margin
    refs = np.stack([compute_signals(compute_logits(m, x_all), y_all).logit_margin
                     for m in ref_models], axis=1)                       # (n, R)
    forget_scores, test_scores = ulira_calibrated(tgt[f], refs[f], tgt[t], refs[t])
"""

from __future__ import annotations

from attacks.lira import STD_FLOOR, lira_offline, lira_online, ulira_calibrated, ulira_scores
from attacks.reference_training import (
    Strategy,
    StrategyBenchmark,
    benchmark_strategies,
    resolve_strategy,
    train_reference_models,
)
from attacks.rmia import rmia, rmia_calibrated
from attacks.signal_cache import SignalCache, data_digest, model_digest

__all__ = [
    "STD_FLOOR",
    "SignalCache",
    "Strategy",
    "StrategyBenchmark",
    "benchmark_strategies",
    "data_digest",
    "lira_offline",
    "lira_online",
    "model_digest",
    "resolve_strategy",
    "rmia",
    "rmia_calibrated",
    "train_reference_models",
    "ulira_calibrated",
    "ulira_scores",
]
