"""The checks of an audit, in report order, and the loop that runs them.

One module per family: :mod:`~unlearn_audit.checks.membership` (with :mod:`~.per_example`),
:mod:`~.forgetting`, :mod:`~.utility`, :mod:`~.integrity`, :mod:`~.robustness`. Adding a check means
writing one :class:`AuditCheck` subclass and listing an instance in :data:`REGISTRY` where its row belongs.
"""

from __future__ import annotations

from collections.abc import Sequence

from attacks.calibration import calibration_residuals
from unlearn_audit.checks.base import (
    AttackRecord,
    AuditCheck,
    Outcome,
    SummaryCheck,
    interval_status,
    judge_excess,
)
from unlearn_audit.checks.forgetting import ForgetAccuracy, ForgetClassPredictions, ForgetClassRank
from unlearn_audit.checks.integrity import ModelChanged
from unlearn_audit.checks.membership import LabelOnlyTest, MembershipPower, PopulationTest
from unlearn_audit.checks.per_example import PairedTest, ReferenceTest, RmiaTest
from unlearn_audit.checks.robustness import RobustAccuracyDrop
from unlearn_audit.checks.utility import RetainAccuracyDrop, UnseenAccuracyDrop
from unlearn_audit.context import AuditContext, StepTimer

__all__ = [
    "REGISTRY",
    "AttackRecord",
    "AuditCheck",
    "Outcome",
    "SummaryCheck",
    "calibration_residuals",
    "interval_status",
    "judge_excess",
    "run_checks",
]

REGISTRY: tuple[AuditCheck, ...] = (
    ModelChanged(),
    MembershipPower(),
    PopulationTest(),
    PairedTest(),
    ReferenceTest(),
    RmiaTest(),
    LabelOnlyTest(),
    RetainAccuracyDrop(),
    UnseenAccuracyDrop(),
    ForgetClassPredictions(),
    ForgetClassRank(),
    ForgetAccuracy(),
    RobustAccuracyDrop(),
)


def run_checks(
    ctx: AuditContext, timer: StepTimer, registry: Sequence[AuditCheck] = REGISTRY
) -> list[Outcome]:
    """Run every check that applies, in registry order, then the summaries; report order out.

    Each run is timed under its check's ``stage``. Summary checks see the outcomes of all the
    others, so they may stand anywhere in the registry.
    """
    outcomes: dict[str, Outcome] = {}
    for check in registry:
        if isinstance(check, SummaryCheck) or not check.applies(ctx):
            continue
        message = check.announce(ctx)
        if message:
            ctx.say(message)
        with timer.step(check.stage):
            outcomes[check.name] = check.run(ctx)
    ran = list(outcomes.values())
    for check in registry:
        if isinstance(check, SummaryCheck) and check.applies(ctx):
            outcomes[check.name] = check.summarise(ctx, ran)
    return [outcomes[check.name] for check in registry if check.name in outcomes]
