"""Forgetting checks on predictions: are the deleted examples (or classes) still answered as before?"""

from __future__ import annotations

import numpy as np

from unlearn_audit.checks.base import AuditCheck, Outcome, interval_status
from unlearn_audit.context import AuditContext
from unlearn_audit.metrics import (
    paired_proportion_difference_ci,
    proportion_difference_ci,
    wilson_interval,
)
from unlearn_audit.results import FAIL, INCONCLUSIVE, PASS, rounded, rounded_ci


def equivalence_status(gap: float, ci, margin: float) -> tuple[str, str]:
    """Two-sided: both remembering and over-forgetting depart from what retraining gives.

    Fail when the interval lies wholly outside ``+/-margin``, pass when wholly inside.
    """
    if ci is None:
        return INCONCLUSIVE, "no interval"
    lo, hi = ci
    if lo > margin or hi < -margin:
        return FAIL, f"gap {gap:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] outside +/-{margin:.3f}"
    if lo >= -margin and hi <= margin:
        return PASS, f"gap {gap:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] within +/-{margin:.3f}"
    return INCONCLUSIVE, f"gap {gap:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] crosses +/-{margin:.3f}"


class ForgetAccuracy(AuditCheck):
    """Example-wise deletion: forget accuracy against the retrained model, or against unseen data.

    Against unseen data the test is one-sided: a forget accuracy below the unseen level can be
    honest (mislabeled forget data). It only advises when that baseline is not fair.
    """

    name = "forget_accuracy"
    group = "privacy"
    stage = "utility"
    explanation = (
        "Accuracy on the deleted examples should not stay above the level of data the model never "
        "saw (or of the retrained model, when given); staying higher shows the examples are remembered."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return not ctx.roles.class_wise

    def run(self, ctx: AuditContext) -> Outcome:
        level, margin = ctx.policy.confidence_level, ctx.policy.forget_accuracy_margin
        unlearned = ctx.views["unlearned"].correct
        unl_forget = unlearned["forget"].astype(float)
        if ctx.has_retrained:
            ret_forget = ctx.views["retrained"].correct["forget"].astype(float)
            gap, ci = paired_proportion_difference_ci(unl_forget, ret_forget, level=level)
            base = f"retrained model {ret_forget.mean():.3f}"
            status, reason = equivalence_status(gap, ci, margin)
        else:
            unl_test = unlearned["test"].astype(float)
            gap, ci = proportion_difference_ci(unl_forget, unl_test, level=level)
            base = f"its own test accuracy {unl_test.mean():.3f}"
            status, reason = interval_status(gap, ci, margin, what="excess")
        advisory = (
            "" if ctx.baseline_fair else " (advisory: the forget set is not known to be a random sample)"
        )
        detail = f"unlearned forget accuracy {unl_forget.mean():.3f} vs {base}: {reason}{advisory}"
        check = self.statement(
            status, rounded(unl_forget.mean()), margin, detail, ci=rounded_ci(ci), gating=ctx.baseline_fair
        )
        return Outcome(check=check)


class ForgetClassPredictions(AuditCheck):
    name = "forget_class_predictions"
    group = "privacy"
    stage = "utility"
    explanation = (
        "Class-wise deletion: the unlearned model should no longer predict the deleted classes, for the "
        "deleted examples or for new examples of those classes."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.roles.class_wise

    def run(self, ctx: AuditContext) -> Outcome:
        fc = list(ctx.roles.forget_classes)
        limit = ctx.policy.max_forget_class_rate
        signals = ctx.views["unlearned"].signals
        preds_f = signals["forget"].predictions
        preds_t = signals["test"].predictions[ctx.in_forget_classes]
        hits = np.concatenate([np.isin(preds_f, fc), np.isin(preds_t, fc)]).astype(float)
        rate = float(hits.mean())
        ci = wilson_interval(int(hits.sum()), hits.size, level=ctx.policy.confidence_level)
        status, reason = interval_status(rate, ci, limit, what="share predicted as a forgotten class")
        detail = f"classes {fc}: {reason} ({len(preds_f)} forget + {len(preds_t)} test examples)"
        return Outcome(check=self.statement(status, rounded(rate), limit, detail, ci=rounded_ci(ci)))
