"""``evaluate()``: build the audit context once, run the registered checks, reach the verdict.

* :mod:`unlearn_audit.context`: the models' logits and signals per role, the non-members and
  the shared decisions (one/two-sided testing, fairness of the unseen-data baseline);
* :mod:`unlearn_audit.checks`: one class per check, listed in report order in ``REGISTRY``
  (how membership tests decide is told in :mod:`unlearn_audit.checks.membership`);
* :mod:`unlearn_audit.results`: the typed result and :func:`decide_verdict`.

This module assembles the outcomes into an :class:`AuditResult`; the names other modules import
from here (``Check``, ``judge_excess``, ...) are re-exported.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.checks import REGISTRY, Outcome, calibration_residuals, judge_excess, run_checks
from unlearn_audit.context import ROLES, AuditContext, AuditOptions, ModelView, StepTimer, build_context
from unlearn_audit.data import Roles
from unlearn_audit.errors import ModelError
from unlearn_audit.models import LoadedModel
from unlearn_audit.provenance import environment
from unlearn_audit.results import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    SCHEMA_VERSION,
    AuditResult,
    Check,
    ModelEntry,
    decide_verdict,
    rounded,
)

__all__ = [
    "FAIL",
    "INCONCLUSIVE",
    "PASS",
    "SCHEMA_VERSION",
    "AuditOptions",
    "AuditResult",
    "Check",
    "ModelEntry",
    "calibration_residuals",
    "decide_verdict",
    "evaluate",
    "judge_excess",
    "load_reference_dir",
]


def evaluate(original: LoadedModel, unlearned: LoadedModel, roles: Roles, **settings) -> AuditResult:
    """Audit ``unlearned`` against ``original`` (and ``retrained``) on the three roles.

    The keywords are the fields of :class:`~unlearn_audit.context.AuditOptions` (``retrained``,
    ``policy``, ``seed``, ``device``, ``reference_models``, ``robustness``, ``label_only``, ...).
    """
    options = AuditOptions(**settings)
    timer = StepTimer()
    ctx = build_context(original, unlearned, roles, options, timer)
    outcomes = run_checks(ctx, timer, REGISTRY)
    return assemble_result(ctx, outcomes, timer)


def assemble_result(ctx: AuditContext, outcomes: Sequence[Outcome], timer: StepTimer) -> AuditResult:
    """Fold the outcomes into the result: checks, per-model entries, plots, distances, notes."""
    mia: dict[str, dict] = {name: {} for name in ctx.views}
    robustness: dict[str, dict] = {}
    plots: dict = {"roc": {}, "histograms": {}, "per_layer": {}}
    distances: dict = {}
    notes = list(ctx.notes)
    for outcome in outcomes:
        for attack in outcome.attacks:
            mia[attack.model][attack.key] = attack.record
            if attack.roc is not None:
                plots["roc"].setdefault(attack.key, {})[attack.model] = attack.roc
        robustness.update(outcome.robustness or {})
        distances.update(outcome.distances or {})
        plots["per_layer"].update(outcome.per_layer or {})
        notes.extend(outcome.notes)
    for name, view in ctx.views.items():
        plots["histograms"][name] = _histogram({r: view.signals[r].logit_confidence for r in ROLES})
    models = {
        name: _model_entry(ctx, view, mia=mia[name], robustness=robustness.get(name))
        for name, view in ctx.views.items()
    }
    checks = tuple(outcome.check for outcome in outcomes)
    return AuditResult(
        verdict=decide_verdict(checks),
        checks=checks,
        models=models,
        distances=distances,
        plots=plots,
        timings=timer.seconds,
        policy=ctx.policy.to_dict(),
        data=_data_info(ctx),
        provenance=_provenance(ctx),
        notes=tuple(notes),
    )


def _model_entry(ctx: AuditContext, view: ModelView, *, mia: dict, robustness: dict | None) -> ModelEntry:
    """Accuracies of one model (and, class-wise, how often it still predicts a forgotten class)."""
    correct = view.correct
    accuracy = {r: rounded(float(correct[r].mean())) for r in ROLES}
    forget_class_rate = None
    if ctx.roles.class_wise:
        kept, in_fc = ~ctx.in_forget_classes, ctx.in_forget_classes
        fc = list(ctx.roles.forget_classes)
        accuracy["test_retained_classes"] = (
            rounded(float(correct["test"][kept].mean())) if kept.any() else None
        )
        forget_class_rate = {
            "forget": rounded(float(np.isin(view.signals["forget"].predictions, fc).mean())),
            "test_of_forget_classes": rounded(
                float(np.isin(view.signals["test"].predictions[in_fc], fc).mean())
            )
            if in_fc.any()
            else None,
        }
    return ModelEntry(
        model=view.loaded.describe(),
        accuracy=accuracy,
        forget_class_rate=forget_class_rate,
        mia=mia,
        robustness=robustness,
    )


def _data_info(ctx: AuditContext) -> dict:
    roles = ctx.roles
    return {
        "name": roles.name,
        "num_classes": roles.num_classes,
        "input_shape": list(roles.input_shape),
        "n_forget": len(roles.forget),
        "n_retain": len(roles.retain),
        "n_test": len(roles.test),
        "n_nonmembers": int(len(ctx.nm_index)),
        "class_wise": roles.class_wise,
        "forget_classes": list(roles.forget_classes),
        "provenance": roles.provenance,
    }


def _provenance(ctx: AuditContext) -> dict:
    models = {name: {"path": v.loaded.path, "sha256": v.loaded.sha256} for name, v in ctx.views.items()}
    return {
        **environment(ctx.device),
        "seed": ctx.seed,
        "models": models,
        **(ctx.options.extra_provenance or {}),
    }


def _histogram(values: dict[str, np.ndarray], bins: int = 40) -> dict:
    """Shared-bin histograms (as densities) of a signal on several roles, for the report."""
    pooled = np.concatenate([v for v in values.values() if v.size])
    lo, hi = np.quantile(pooled, [0.005, 0.995]) if pooled.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    out = {"edges": [round(float(e), 5) for e in edges], "density": {}}
    for role, v in values.items():
        counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
        total = counts.sum()
        out["density"][role] = [round(float(c) / total, 6) if total else 0.0 for c in counts]
    return out


def load_reference_dir(
    directory: str | Path, like: LoadedModel, device: torch.device
) -> list[torch.nn.Module]:
    """Every model file in ``directory`` (trained WITHOUT the forget set), loaded like ``like``."""
    from unlearn_audit.models import load_model

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"reference directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ModelError(f"reference directory {directory} holds no model files")
    out = []
    for path in files:
        ref = load_model(
            path,
            arch=like.arch,
            num_classes=like.num_classes,
            input_shape=like.input_shape,
            arch_kwargs=like.arch_kwargs,
            device=device,
        )
        out.append(ref.module)
    return out
