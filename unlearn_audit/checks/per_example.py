"""Per-example membership tests: each forget example against what a model that never saw it shows.

* ``mia_paired`` (with ``--retrained``): the unlearned-minus-retrained logit margin;
* ``mia_reference`` (U-LiRA, with reference models): each example standardised against its
  own distribution under the reference models;
* ``mia_rmia`` (RMIA, with reference models): each example's likelihood ratio against the
  population of test examples.

All three work on the logit margin (``Signals.logit_margin``) and take the audited model's
calibration out with a line fitted on test examples only, on the RAW signal: a temperature
divides the margin by one common factor, which the line absorbs, so a model cannot flatten
its scores into a pass (issue #12; :mod:`attacks.calibration`). Each test judges the margin
twice, on the exact forget inputs and averaged over nearby queries (:mod:`attacks.augment`),
and records how many forget examples are individually still recognised. The judge and the
rules are in :mod:`unlearn_audit.checks.membership`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from attacks.calibration import calibration_residuals
from attacks.lira import ulira_calibrated
from attacks.paired import paired_test
from attacks.rmia import rmia_calibrated, rmia_log_ratios
from attacks.stats import DEGENERATE_MAX_TIED_SHARE, DEGENERATE_MIN_DISTINCT, AttackResult, tie_profile
from unlearn_audit.checks.base import AttackRecord, Outcome
from unlearn_audit.checks.membership import (
    Judgement,
    MembershipCheck,
    per_example_evidence,
    references_two_sided,
    roc_of,
)
from unlearn_audit.context import AuditContext, Decision, ModelView
from unlearn_audit.results import rounded

#: The signals every per-example test judges: (label, JSON key suffix, averaged over nearby queries).
SIGNALS = (("exact inputs", "", False), ("nearby queries", "_augmented", True))

Scores = tuple[np.ndarray, np.ndarray, dict]


def margins(ctx: AuditContext, view: ModelView, augmented: bool) -> tuple[np.ndarray, np.ndarray]:
    """A model's logit margin on the forget set and on the non-members, exact or over the queries."""
    if augmented:
        return view.augmented["forget"], view.augmented["test"][ctx.nm_index]
    return view.signals["forget"].logit_margin, view.signals["test"].logit_margin[ctx.nm_index]


def reference_margins(ctx: AuditContext, augmented: bool) -> tuple[np.ndarray, np.ndarray]:
    """The reference models' logit margins, (n, R), on the forget set and on the non-members."""
    refs = ctx.references.augmented if augmented else ctx.references.margin
    return refs["forget"], refs["test"][ctx.nm_index]


def raw_signal_problem(forget: np.ndarray, test: np.ndarray) -> str | None:
    """Why a model's own signal is too tied to show membership, or ``None``.

    The per-example scores are derived (a difference with the retrained model, a residual from
    a line on the reference models), and take as many values as the references do even when the
    audited model answers with a handful of values (a one-hot output): its ties must be
    counted on its own signal, with the same thresholds as :func:`attacks.stats.evaluate_attack`.
    """
    distinct, tied = tie_profile(np.concatenate([forget, test]))
    if distinct < DEGENERATE_MIN_DISTINCT or tied > DEGENERATE_MAX_TIED_SHARE:
        return f"{distinct} distinct values, {tied:.0%} tied"
    return None


class PerExampleTest(MembershipCheck):
    """A per-example test judged on both signals of :data:`SIGNALS`; subclasses say how to score."""

    key: ClassVar[str]  # JSON key of the records
    attack: ClassVar[str]  # attack name in the records
    note: ClassVar[str]
    power_detail: ClassVar[str]  # may use {auc}
    models: ClassVar[tuple[str, ...] | None] = None  # None: every model of the audit

    def scores(self, ctx: AuditContext, view: ModelView, augmented: bool) -> Scores:
        """Forget scores, non-member scores (higher = more member-like) and extra record fields."""
        raise NotImplementedError

    def two_sided(self, ctx: AuditContext) -> Decision:
        return Decision(ctx.two_sided)

    def describe(self, ctx: AuditContext) -> str:
        raise NotImplementedError

    def run(self, ctx: AuditContext) -> Outcome:
        decision = self.two_sided(ctx)
        judgements: list[Judgement] = []
        attacks: list[AttackRecord] = []
        headline = ""
        for label, suffix, augmented in SIGNALS if ctx.has_augmented else SIGNALS[:1]:
            results: dict[str, AttackResult] = {}
            raw_degenerate = []
            for name in self.models or tuple(ctx.views):
                own = raw_signal_problem(*margins(ctx, ctx.views[name], augmented))
                if own and name != "retrained":
                    raw_degenerate.append(f"{name}'s own logit margin: {own}")
                member, nonmember, extra = self.scores(ctx, ctx.views[name], augmented)
                res = results[name] = self.score(ctx, self.attack + suffix, member, nonmember, (self.note,))
                record = {**res.to_dict(), **extra, "per_example": per_example_evidence(res)}
                roc = None if augmented else roc_of(res)
                attacks.append(AttackRecord(name, self.key + suffix, record, roc=roc))
            headline = headline or f"{self.describe(ctx)}: AUC {results['unlearned'].auc:.3f}"
            judgement = self.judge(
                ctx,
                results,
                two_sided=decision.value,
                power_detail=self.power_detail,
                label=label,
                raw_degenerate="; ".join(raw_degenerate) or None,
            )
            judgements.append(judgement)
        notes = [decision.note] if decision.note else []
        return self.conclude(ctx, judgements, headline=headline, attacks=attacks, notes=notes)


class PairedTest(PerExampleTest):
    name = "mia_paired"
    stage = "mia_paired"
    key = "paired"
    attack = "paired/logit_margin"
    note = "unlearned-minus-retrained logit margin, calibration line fitted on test examples"
    power_detail = "the original model scores AUC {auc:.3f} on the same test"
    models = ("original", "unlearned")
    explanation = (
        "Per-example comparison with the retrained model: for each deleted example, how much more "
        "confident is the unlearned model than a model retrained without it? The same difference on "
        "unseen test examples is the yardstick. A real deletion leaves no excess."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return super().applies(ctx) and ctx.has_retrained

    def announce(self, ctx: AuditContext) -> str:
        return "paired test against the retrained model"

    def describe(self, ctx: AuditContext) -> str:
        return "unlearned-minus-retrained logit margin, forget vs test"

    def scores(self, ctx: AuditContext, view: ModelView, augmented: bool) -> Scores:
        """The differences' residuals from the line ``difference ~ a + b * retrained`` on test rows.

        The residual is ``target - (a + (1 + b) * retrained)``: the target's margin beyond the
        line of its margin on the retrained model's, so a temperature only scales it.
        """
        target_f, target_t = margins(ctx, view, augmented)
        ret_f, ret_t = margins(ctx, ctx.views["retrained"], augmented)
        pt = paired_test(target_f, ret_f, target_t, ret_t)
        f_res, t_res = calibration_residuals(pt.forget_diffs, ret_f, pt.test_diffs, ret_t)
        return f_res, t_res, {"p_value": rounded(pt.p_value, 12), "median_shift": rounded(pt.median_shift)}


class ReferenceTest(PerExampleTest):
    name = "mia_reference"
    stage = "mia_reference"
    key = "reference"
    attack = "reference/ulira"
    note = (
        "offline LiRA score per example on the logit margin, calibration line fitted on the raw signal first"
    )
    power_detail = "the original model scores AUC {auc:.3f} against the same references"
    explanation = (
        "U-LiRA: reference models retrained without the forget set give each example its own "
        "'never seen' distribution; the unlearned model's confidence on each deleted example is "
        "tested against it. This is the strongest test in the audit."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return super().applies(ctx) and ctx.references is not None

    def announce(self, ctx: AuditContext) -> str:
        return f"U-LiRA against {ctx.references.count} reference models"

    def describe(self, ctx: AuditContext) -> str:
        note = f" ({ctx.options.reference_note})" if ctx.options.reference_note else ""
        return f"U-LiRA over {ctx.references.count} reference models{note}"

    def two_sided(self, ctx: AuditContext) -> Decision:
        """With a retrained model as for every test; without, unless the references say the forget
        labels are atypical (:func:`~unlearn_audit.checks.membership.references_two_sided`)."""
        if ctx.has_retrained:
            return Decision(ctx.two_sided)
        correct = ctx.references.correct
        return references_two_sided(
            correct["forget"].ravel(),
            correct["test"][ctx.nm_index].ravel(),
            ctx.policy.forget_accuracy_margin,
        )

    def scores(self, ctx: AuditContext, view: ModelView, augmented: bool) -> Scores:
        target_f, target_t = margins(ctx, view, augmented)
        ref_f, ref_t = reference_margins(ctx, augmented)
        f, t = ulira_calibrated(target_f, ref_f, target_t, ref_t)
        return f, t, {"n_reference_models": ctx.references.count}


class RmiaTest(ReferenceTest):
    name = "mia_rmia"
    stage = "mia_rmia"
    key = "rmia"
    attack = "reference/rmia"
    note = "calibrated RMIA log-ratio per example on the logit margin, population = test examples"
    power_detail = "the original model scores AUC {auc:.3f} against the same references"
    explanation = (
        "RMIA: each deleted example's likelihood ratio (its score beyond what the reference models "
        "predict for it) is compared with the same ratio on unseen test examples. A real deletion "
        "leaves the forget set no more likely than unseen data."
    )

    def announce(self, ctx: AuditContext) -> str:
        return f"RMIA against {ctx.references.count} reference models"

    def describe(self, ctx: AuditContext) -> str:
        return f"RMIA over {ctx.references.count} reference models"

    def scores(self, ctx: AuditContext, view: ModelView, augmented: bool) -> Scores:
        """The log-ratios (the AUC of RMIA at gamma 1 without its rank ties); RMIA's own score of
        each forget example (the share of the population it beats) is summarised in the record."""
        target_f, target_t = margins(ctx, view, augmented)
        ref_f, ref_t = reference_margins(ctx, augmented)
        f, t = rmia_log_ratios(target_f, ref_f, target_t, ref_t)
        beats = rmia_calibrated(target_f, ref_f, target_t, ref_t)[0]
        extra = {
            "n_reference_models": ctx.references.count,
            "rmia_share_beating_95pct": rounded(float((beats > 0.95).mean())),
        }
        return f, t, extra
