"""Robustness: adversarial (PGD) accuracy must not drop by more than the policy allows."""

from __future__ import annotations

import numpy as np

from unlearn_audit.checks.base import AuditCheck, Outcome, interval_status
from unlearn_audit.context import AuditContext
from unlearn_audit.metrics import paired_proportion_difference_ci
from unlearn_audit.results import rounded, rounded_ci


class RobustAccuracyDrop(AuditCheck):
    """Runs the caller's robustness measure on every model; the drop is paired per example when
    the measure reports which examples stayed correct, otherwise it has no interval."""

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
        detail = (
            f"{orig['attack']}: R-ACC original {orig['robust_accuracy']:.3f} -> "
            f"unlearned {unl['robust_accuracy']:.3f}; {reason}"
        )
        check = self.statement(status, rounded(drop), limit, detail, ci=rounded_ci(ci))
        return Outcome(check=check, robustness=measured)
