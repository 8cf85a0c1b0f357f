"""Utility checks: unlearning must not cost more accuracy than the policy allows."""

from __future__ import annotations

from typing import ClassVar

from unlearn_audit.checks.base import AuditCheck, Outcome, interval_status
from unlearn_audit.context import AuditContext
from unlearn_audit.metrics import paired_proportion_difference_ci
from unlearn_audit.policy import Policy
from unlearn_audit.results import INCONCLUSIVE, rounded, rounded_ci


class AccuracyDrop(AuditCheck):
    """Original minus unlearned accuracy on one role, paired over the same examples.

    For class-wise forgetting the test role is scored on the retained classes only: the forgotten
    classes cannot be predicted any more by design.
    """

    group = "utility"
    stage = "utility"
    role: ClassVar[str]

    def limit(self, policy: Policy) -> float:
        raise NotImplementedError

    def run(self, ctx: AuditContext) -> Outcome:
        role, limit = self.role, self.limit(ctx.policy)
        a = ctx.views["original"].correct[role].astype(float)
        b = ctx.views["unlearned"].correct[role].astype(float)
        scoped = role == "test" and ctx.roles.class_wise
        if scoped:
            kept = ~ctx.in_forget_classes
            a, b = a[kept], b[kept]
        if a.size == 0:
            return Outcome(check=self.statement(INCONCLUSIVE, None, limit, f"no {role} examples"))
        drop, ci = paired_proportion_difference_ci(a, b, level=ctx.policy.confidence_level)
        status, reason = interval_status(drop, ci, limit, what=f"{role} accuracy drop")
        scope = " (retained classes only)" if scoped else ""
        detail = f"original {a.mean():.3f} -> unlearned {b.mean():.3f}{scope}: {reason}"
        return Outcome(check=self.statement(status, rounded(drop), limit, detail, ci=rounded_ci(ci)))


class RetainAccuracyDrop(AccuracyDrop):
    name = "retain_accuracy_drop"
    role = "retain"
    explanation = "Utility on the data that was kept: unlearning must not cost more than the policy allows."

    def limit(self, policy: Policy) -> float:
        return policy.max_retain_accuracy_drop


class UnseenAccuracyDrop(AccuracyDrop):
    name = "test_accuracy_drop"
    role = "test"
    explanation = "Utility on unseen data: unlearning must not cost more accuracy than the policy allows."

    def limit(self, policy: Policy) -> float:
        return policy.max_test_accuracy_drop
