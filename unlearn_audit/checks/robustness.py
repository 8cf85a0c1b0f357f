"""Robustness: adversarial (PGD) accuracy must not drop by more than the policy allows."""

from __future__ import annotations

import numpy as np

from unlearn_audit.checks.base import AuditCheck, Outcome, interval_status
from unlearn_audit.context import AuditContext
from unlearn_audit.metrics import paired_proportion_difference_ci
from unlearn_audit.results import INCONCLUSIVE, rounded, rounded_ci


class RobustAccuracyDrop(AuditCheck):
    """Runs the caller's robustness measure on every model; the drop is paired per example when
    the measure reports which examples stayed correct, otherwise it has no interval.

    A measurement whose gradients look masked counts an example as robust only if no attack
    (PGD, a gradient-free search, a transfer attack from the original) fools it; when even that
    cannot be trusted (``inconclusive_reason``), the check is inconclusive: masking is never
    reported as robustness.
    """

    name = "robust_accuracy_drop"
    group = "robustness"
    stage = "robustness"
    explanation = (
        "Adversarial robustness (accuracy under a PGD attack) must not drop by more than the policy allows."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.options.robustness is not None

    def announce(self, ctx: AuditContext) -> str:
        return "adversarial robustness"

    def run(self, ctx: AuditContext) -> Outcome:
        measured = {name: ctx.options.robustness(view.loaded.module) for name, view in ctx.views.items()}
        orig, unl = measured["original"], measured["unlearned"]
        drop = orig["robust_accuracy"] - unl["robust_accuracy"]
        limit = ctx.policy.max_robust_accuracy_drop
        ci = None
        if orig.get("correct") is not None and unl.get("correct") is not None:
            a = np.asarray(orig["correct"], dtype=float)
            b = np.asarray(unl["correct"], dtype=float)
            drop, ci = paired_proportion_difference_ci(a, b, level=ctx.policy.confidence_level)
        status, reason = interval_status(drop, ci, limit, what="robust accuracy drop")
        untrusted = [
            f"{n}: {m['inconclusive_reason']}" for n, m in measured.items() if m.get("inconclusive_reason")
        ]
        if untrusted:
            status, reason = INCONCLUSIVE, "robust accuracy cannot be trusted (" + "; ".join(untrusted) + ")"
        detail = (
            f"{orig['attack']}: R-ACC original {orig['robust_accuracy']:.3f} -> "
            f"unlearned {unl['robust_accuracy']:.3f}; {reason}" + _fallback_note(measured)
        )
        check = self.statement(status, rounded(drop), limit, detail, ci=rounded_ci(ci))
        return Outcome(check=check, robustness=measured)


def _fallback_note(measured: dict[str, dict]) -> str:
    """Which models' gradients looked masked, and what R-ACC then counts."""
    parts = [
        f"{name}: {m['masking']['detail']} (R-ACC counts {m['fallback'].replace('+', ' + ')} as well as PGD)"
        for name, m in measured.items()
        if m.get("fallback")
    ]
    return ("; gradient masking suspected: " + "; ".join(parts)) if parts else ""
