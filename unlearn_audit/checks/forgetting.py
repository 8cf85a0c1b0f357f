"""Forgetting checks on predictions: are the deleted examples (or classes) still answered as before?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

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


def forget_extras(ctx: AuditContext) -> np.ndarray:
    """Mask of the forget examples deleted one by one: all of them, or, when the forget set mixes
    whole classes with further examples, those outside the forgotten classes."""
    return ~np.isin(ctx.roles.forget.y.numpy(), list(ctx.roles.forget_classes))


class ForgetAccuracy(AuditCheck):
    """Example-wise deletion: forget accuracy against the retrained model, or against unseen data.

    Against unseen data the test is one-sided: a forget accuracy below the unseen level can be
    honest (mislabeled forget data). It only advises when that baseline is not fair. When the
    forget set mixes whole classes with further examples, it judges those further examples (the
    classes are judged by the class-wise checks), against unseen data of the kept classes.
    """

    name = "forget_accuracy"
    group = "privacy"
    stage = "utility"
    explanation = (
        "Accuracy on the deleted examples should not stay above the level of data the model never "
        "saw (or of the retrained model, when given); staying higher shows the examples are remembered."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return bool(forget_extras(ctx).any())

    def run(self, ctx: AuditContext) -> Outcome:
        level, margin = ctx.policy.confidence_level, ctx.policy.forget_accuracy_margin
        extras = forget_extras(ctx)
        unlearned = ctx.views["unlearned"].correct
        unl_forget = unlearned["forget"][extras].astype(float)
        if ctx.has_retrained:
            ret_forget = ctx.views["retrained"].correct["forget"][extras].astype(float)
            gap, ci = paired_proportion_difference_ci(unl_forget, ret_forget, level=level)
            base = f"retrained model {ret_forget.mean():.3f}"
            status, reason = equivalence_status(gap, ci, margin)
        else:
            unl_test = unlearned["test"][~ctx.in_forget_classes].astype(float)
            gap, ci = proportion_difference_ci(unl_forget, unl_test, level=level)
            base = f"its own test accuracy {unl_test.mean():.3f}"
            status, reason = interval_status(gap, ci, margin, what="excess")
        fair = ctx.baseline_fair and (ctx.has_retrained or not ctx.roles.class_wise)
        advisory = "" if fair else " (advisory: the forget set is not known to be a random sample)"
        scope = (
            f" ({int(extras.sum())} examples outside the forgotten classes)" if ctx.roles.class_wise else ""
        )
        detail = f"unlearned forget accuracy {unl_forget.mean():.3f}{scope} vs {base}: {reason}{advisory}"
        check = self.statement(
            status, rounded(unl_forget.mean()), margin, detail, ci=rounded_ci(ci), gating=fair
        )
        return Outcome(check=check)


class ForgetClassPredictions(AuditCheck):
    """Class-wise deletion: the share of the forgotten classes' examples (forget and test sets)
    still predicted as a forgotten class. Extra examples of kept classes in the forget set are
    left to :class:`ForgetAccuracy`."""

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
        preds_f = signals["forget"].predictions[~forget_extras(ctx)]
        preds_t = signals["test"].predictions[ctx.in_forget_classes]
        hits = np.concatenate([np.isin(preds_f, fc), np.isin(preds_t, fc)]).astype(float)
        rate = float(hits.mean())
        ci = wilson_interval(int(hits.sum()), hits.size, level=ctx.policy.confidence_level)
        status, reason = interval_status(rate, ci, limit, what="share predicted as a forgotten class")
        detail = f"classes {fc}: {reason} ({len(preds_f)} forget + {len(preds_t)} test examples)"
        return Outcome(check=self.statement(status, rounded(rate), limit, detail, ci=rounded_ci(ci)))


@dataclass(frozen=True)
class ClassRanking:
    """How high one model ranks the forgotten classes on examples of those classes.

    ``hits``: per forgotten-class example (forget set, then test set), whether its class ranks in
    the top ``top``; ``baseline``: the same for test examples of the kept classes, each paired
    with one forgotten class in turn; ``mass``/``baseline_mass``: mean probability of that class.
    """

    hits: np.ndarray
    baseline: np.ndarray
    mass: float
    baseline_mass: float
    top: int


def ranks_in_top(logits: torch.Tensor, classes: np.ndarray, top: int) -> np.ndarray:
    """Whether ``classes[i]`` is among the ``top`` highest logits of row ``i`` (ties count for it)."""
    index = torch.as_tensor(classes, dtype=torch.long)[:, None]
    above = (logits > logits.gather(1, index)).sum(dim=1)
    return (above < top).numpy()


def class_ranking(ctx: AuditContext, name: str) -> ClassRanking:
    """:class:`ClassRanking` of model ``name``: forgotten classes on their own examples and on others."""
    fc = np.array(ctx.roles.forget_classes)
    view, in_fc = ctx.views[name], ctx.in_forget_classes
    top = max(2, ctx.roles.num_classes // 2)
    own = ~forget_extras(ctx)
    logits = torch.cat([view.logits["forget"][torch.as_tensor(own)], view.logits["test"][in_fc]])
    labels = np.concatenate([ctx.roles.forget.y.numpy()[own], ctx.roles.test.y.numpy()[in_fc]])
    others = view.logits["test"][~in_fc]
    assigned = fc[np.arange(len(others)) % len(fc)]

    def mass(rows: torch.Tensor, classes: np.ndarray) -> float:
        probs = torch.softmax(rows.double(), dim=1)
        return float(probs.gather(1, torch.as_tensor(classes)[:, None]).mean()) if len(rows) else 0.0

    return ClassRanking(
        hits=ranks_in_top(logits, labels, top),
        baseline=ranks_in_top(others, assigned, top),
        mass=mass(logits, labels),
        baseline_mass=mass(others, assigned),
        top=top,
    )


class ForgetClassRank(AuditCheck):
    """Class-wise deletion judged on ranks, not only on the top prediction.

    A model can avoid predicting a forgotten class yet rank it right behind the winner on that
    class's examples (its knowledge intact). On the forgotten classes' examples (forget set and
    unseen test examples), the share ranking their class in the top half of the classes is
    compared with a model that never saw the class: the retrained model on the same examples
    when given (paired); otherwise a within-model baseline, the share ranking the class that
    high on test examples of OTHER classes (without knowledge of a class, a model ranks it no
    higher on its examples than on others). Fail when the excess interval lies above the policy
    margin. The original model's excess is the check's power, and counts as evidence that
    forgetting is measurable.
    """

    name = "forget_class_rank"
    group = "privacy"
    stage = "utility"
    explanation = (
        "Class-wise deletion: on examples of a deleted class, the unlearned model should not rank that "
        "class higher than a model that never saw it does (the retrained model, or the same model on "
        "examples of other classes); a class kept just below the winner is still known."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.roles.class_wise and bool((~ctx.in_forget_classes).any())

    def excess(self, ctx: AuditContext, ranking: ClassRanking) -> tuple[float, tuple[float, float]]:
        """A model's top-half share on the forgotten classes' examples minus its baseline's."""
        level = ctx.policy.confidence_level
        if ctx.has_retrained:
            retrained = class_ranking(ctx, "retrained").hits
            return paired_proportion_difference_ci(ranking.hits, retrained, level=level)
        return proportion_difference_ci(ranking.hits, ranking.baseline, level=level)

    def run(self, ctx: AuditContext) -> Outcome:
        margin = ctx.policy.forget_accuracy_margin
        ranking = class_ranking(ctx, "unlearned")
        excess, ci = self.excess(ctx, ranking)
        power_excess, power_ci = self.excess(ctx, class_ranking(ctx, "original"))
        power = power_ci[0] > 0
        status, reason = interval_status(excess, ci, margin, what="excess")
        if status != FAIL and not power:
            status, reason = INCONCLUSIVE, f"no power: the original's excess is {power_excess:+.3f}"
        base = "the retrained model" if ctx.has_retrained else "examples of other classes"
        detail = (
            f"forgotten class in the top {ranking.top} on {ranking.hits.mean():.3f} of its "
            f"{ranking.hits.size} examples vs {base}: {reason}; original's excess {power_excess:+.3f} "
            f"[{power_ci[0]:+.3f}, {power_ci[1]:+.3f}]; mean probability of the class "
            f"{ranking.mass:.4f} on its examples, {ranking.baseline_mass:.4f} on others"
        )
        check = self.statement(
            status, rounded(excess), margin, detail, ci=rounded_ci(ci), gating=power or status == FAIL
        )
        return Outcome(check=check, power=power)
