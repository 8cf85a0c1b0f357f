"""What a check is, what it returns, and the two judging rules the checks share.

A check is a small class: its ``name``, ``group`` and plain-language ``explanation`` sit next to
its code; ``applies(ctx)`` says whether it has anything to judge in this audit and ``run(ctx)``
returns an :class:`Outcome`. A :class:`SummaryCheck` instead judges the outcomes of the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from unlearn_audit.context import AuditContext
from unlearn_audit.results import FAIL, INCONCLUSIVE, PASS, Check


@dataclass(frozen=True)
class AttackRecord:
    """One model's result of one membership test: ``models[model]["mia"][key]`` in the JSON.

    ``roc`` (when given) is drawn in the report under ``plots["roc"][key][model]``.
    """

    model: str
    key: str
    record: dict
    roc: dict | None = None


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What one check found: its gated statement and what it adds to the rest of the result.

    ``power`` is set by membership tests only: whether the test counts as evidence that forgetting
    is measurable here (it recognises the forget set on the original model and may gate).
    """

    check: Check
    power: bool | None = None
    attacks: tuple[AttackRecord, ...] = ()
    robustness: dict[str, dict] | None = None  # model -> measurement
    distances: dict[str, dict] | None = None  # model pair -> distances
    per_layer: dict[str, dict] | None = None  # model pair -> per-tensor distances, for the report
    notes: tuple[str, ...] = ()


class AuditCheck:
    """Base of every check. Subclasses set the class attributes and implement :meth:`run`.

    ``stage`` names the timing entry the check's run is counted under (several checks may share
    one); ``announce`` is the progress message shown before it runs, if any.
    """

    name: ClassVar[str]
    group: ClassVar[str]
    explanation: ClassVar[str]
    stage: ClassVar[str]

    def applies(self, ctx: AuditContext) -> bool:
        return True

    def announce(self, ctx: AuditContext) -> str | None:
        return None

    def run(self, ctx: AuditContext) -> Outcome:
        raise NotImplementedError

    def statement(
        self,
        status: str,
        value: float | None,
        threshold: float | None,
        detail: str,
        *,
        ci: tuple[float, float] | None = None,
        gating: bool = True,
    ) -> Check:
        """The :class:`Check` this check reports, carrying its name, group and explanation."""
        return Check(
            self.name,
            status,
            value,
            threshold,
            detail,
            ci=ci,
            group=self.group,
            gating=gating,
            explanation=self.explanation,
        )


class SummaryCheck(AuditCheck):
    """A check judged from the outcomes of the other checks (it runs after all of them)."""

    stage = ""

    def summarise(self, ctx: AuditContext, outcomes: Sequence[Outcome]) -> Outcome:
        raise NotImplementedError


def interval_status(value: float, ci, threshold: float, *, what: str) -> tuple[str, str]:
    """Pass when the whole interval is within the threshold, fail when it is wholly beyond it."""
    if ci is None:
        return INCONCLUSIVE, f"{what} {value:+.3f}: no interval (set too small)"
    lo, hi = ci
    if lo > threshold:
        return FAIL, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] exceeds {threshold:.3f}"
    if hi <= threshold:
        return PASS, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] within {threshold:.3f}"
    return INCONCLUSIVE, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] crosses {threshold:.3f}"


def _kept_most_leakage(
    lo: float, gain_ci: tuple[float, float] | None, original_excess: float | None
) -> str | None:
    """Why the unlearned model kept most of the original's leak, or None.

    Needs all three: the unlearned model's excess interval above 0 (it still recognises the forget
    set), the original's excess positive, and the whole gain interval below half of it (at most
    half of the leak was removed, with confidence). An honest retrain removes the whole leak, so
    its gain interval reaches the original's excess; one that forgot nothing keeps it all.
    """
    if gain_ci is None or original_excess is None or not original_excess > 0 or not lo > 0:
        return None
    if gain_ci[1] < original_excess / 2:
        return (
            f"interval above 0 from {lo:+.3f}, and the AUC gain over the original, at most "
            f"{gain_ci[1]:+.3f}, removed less than half of the original's excess {original_excess:+.3f}"
        )
    return None


def judge_excess(
    excess: float,
    ci: tuple[float, float] | None,
    *,
    margin: float,
    two_sided: bool,
    power: bool,
    power_detail: str,
    gain: float | None = None,
    gain_ci: tuple[float, float] | None = None,
    degenerate: str | None = None,
    original_excess: float | None = None,
) -> tuple[str, str]:
    """Status and reason for a membership test (rules in :mod:`unlearn_audit.checks.membership`).

    ``excess``/``ci``: the unlearned model's AUC excess over its baseline. ``gain``/``gain_ci``:
    the original's AUC minus the unlearned model's on the same examples. ``degenerate``: why a
    model's scores are too tied or too coarse to show membership; such a test may still fail
    (its floored interval lies beyond the margin all the same) but never passes.
    ``original_excess``: the original model's excess; with power, a forget set that is still
    recognised (``lo > 0``) while the gain is surely below half of it has kept most of what the
    original leaked: a fail even when the leak itself is below the margin.
    """
    if ci is None:
        return INCONCLUSIVE, "no confidence interval could be computed (too few examples)"
    lo, hi = ci
    if lo > margin:
        return FAIL, (
            f"forget set still recognised: excess {excess:+.3f} over the never-trained baseline, "
            f"interval [{lo:+.3f}, {hi:+.3f}] lies above the margin {margin:.3f}"
        )
    if two_sided and hi < -margin:
        return FAIL, (
            f"over-forgetting: the forget set scores {excess:+.3f} below what retraining leaves "
            f"(interval [{lo:+.3f}, {hi:+.3f}]), which itself reveals the deletion"
        )
    if not power:
        return INCONCLUSIVE, f"no power: {power_detail}"
    kept = _kept_most_leakage(lo, gain_ci, original_excess)
    if kept:
        return FAIL, f"forget set still recognised ({kept}); {power_detail}"
    if degenerate:
        return (
            INCONCLUSIVE,
            f"degenerate signal ({degenerate}): tied or quantised scores cannot show forgetting",
        )
    inside = hi <= margin and (not two_sided or lo >= -margin)
    if not inside:
        return INCONCLUSIVE, (
            f"excess {excess:+.3f} but interval [{lo:+.3f}, {hi:+.3f}] crosses the margin {margin:.3f}: "
            "more forget or test examples are needed to decide"
        )
    if gain_ci is None or gain is None or not gain_ci[0] > 0:
        shown = "n/a" if gain_ci is None else f"[{gain_ci[0]:+.3f}, {gain_ci[1]:+.3f}]"
        return INCONCLUSIVE, (
            f"excess {excess:+.3f} within the margin, but the unlearned model is not measurably less "
            f"recognisable than the original (AUC gain interval {shown}); {power_detail}"
        )
    return PASS, (
        f"excess {excess:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] within +/-{margin:.3f}; AUC gain over the "
        f"original {gain:+.3f} [{gain_ci[0]:+.3f}, {gain_ci[1]:+.3f}]; {power_detail}"
    )
