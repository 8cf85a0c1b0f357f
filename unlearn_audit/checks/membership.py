"""Membership-inference checks: is the forget set still recognised as training data?

How a membership check decides (see README, "How the verdict is reached"):

* Each membership test compares the unlearned model with a *baseline*: a model that never saw
  the forget set (the retrained model when given, otherwise unseen test data, AUC 0.5).
* ``d`` (the check's ``value``) is the test's AUC excess over the baseline, with a bootstrap
  interval ``[lo, hi]`` (never narrower than the null standard error allows); ``m`` is the
  policy margin. ``lo > m``: the forget set is still recognised beyond the tolerance:
  **fail**. With a retrained model, ``hi < -m`` is a fail too (the forget set scores *lower*
  than retraining leaves it, which itself reveals the deletion).
* A test has *power* only if it recognises the forget set on the ORIGINAL model (the
  original's excess has ``lo > 0``). A test without power cannot show forgetting: it is
  reported as inconclusive and does not gate.
* With power, a test also **fails** a model that kept most of the original's leak: its own
  excess interval lies above 0 and the whole gain interval (original AUC minus unlearned AUC)
  lies below half of the original's excess. A model that forgot nothing is then failed even
  when the original's leak is smaller than the margin plus the interval's half-width.
* **pass** needs all four: power; scores that are not degenerate (a model whose scores all tie,
  or take a handful of values, has measured nothing; see :func:`degenerate_reason`); the
  unlearned model's whole interval inside the margin (``hi <= m``, and ``lo >= -m`` with a
  retrained model); and a *measurable gain*: the original's AUC minus the unlearned model's,
  paired over the same examples, has ``lo > 0``. Without the gain, a model that changed
  nothing could pass whenever the original's own leakage is below the margin. Anything else
  is inconclusive.
* Per-example tests (paired, U-LiRA, RMIA; :mod:`unlearn_audit.checks.per_example`) judge two
  signals: the logit margin on the exact forget inputs and the same averaged over nearby
  queries (:mod:`attacks.augment`), so post-processing the exact inputs' scores does not pass.
  A test fails if either fails, and passes only if no signal with power is undecided.
* Nothing is chosen on the data it is judged on: the gated population attack is chosen on the
  retain set against test half A (:func:`choose_threshold_attack`), and judged on the forget
  set against test half B. Against unseen data (no retrained model) its power is established
  on the choosing examples too, so that power does not select the audits whose original
  happened to score high on the judged examples (which biases the gain upwards).
* The ``membership_power`` check passes only if at least one membership test has power; it is
  inconclusive otherwise, so no audit passes without evidence that forgetting was measurable.

Every test shares one judge (:meth:`MembershipCheck.judge`); they differ only in how they score
members and non-members and in what their baseline is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from attacks.population import population_attacks
from attacks.signals import SIGNAL_NAMES, Signals
from attacks.stats import (
    DEGENERATE_MAX_TIED_SHARE,
    DEGENERATE_MIN_DISTINCT,
    AttackResult,
    auc_difference,
    evaluate_attack,
    roc_auc,
    tie_profile,
)
from unlearn_audit.checks.base import AttackRecord, AuditCheck, Outcome, SummaryCheck, judge_excess
from unlearn_audit.context import AuditContext, Decision
from unlearn_audit.metrics import proportion_difference_ci
from unlearn_audit.results import FAIL, INCONCLUSIVE, PASS, rounded, rounded_ci

NOT_RANDOM = "the forget set is not known to be a random sample"
#: Forget examples scoring above this quantile of the non-members' scores count as individually recognised.
RECOGNISED_QUANTILE = 0.95


def choose_threshold_attack(member: Signals, nonmember: Signals) -> str:
    """The population attack gated: the strongest threshold attack of the ORIGINAL model, chosen apart.

    It is chosen on the retain set (members) against test half A (non-members), examples the
    judgement (forget set against test half B) never uses, so neither the choice nor the power
    it promises is inflated by the noise of the examples judged: choosing the best of five on
    the judged examples made a model that forgot nothing pass the gain test 10-19% of the time
    against a nominal 2.5% (issue #12; ``tests/test_selection.py`` simulates both rules).
    Signals whose scores tie too much to rank (a saturated confidence, say) are skipped; loss,
    confidence and the logit-scaled confidence rank examples alike apart from such ties.
    It is monotone in one signal, so the same rule scores every model. Learned attackers are
    refitted per model and extrapolate differently on atypical forget data: they are
    reported, not gated.
    """
    aucs = {}
    for name in SIGNAL_NAMES:
        m, n = member.membership_score(name), nonmember.membership_score(name)
        distinct, tied = tie_profile(np.concatenate([m, n]))
        if distinct >= DEGENERATE_MIN_DISTINCT and tied <= DEGENERATE_MAX_TIED_SHARE:
            aucs[name] = roc_auc(m, n)
    return max(aucs, key=aucs.get) if aucs else "logit_confidence"


def references_two_sided(forget_correct: np.ndarray, test_correct: np.ndarray, margin: float) -> Decision:
    """Without a retrained model, whether U-LiRA may fail a forget set scoring below its references.

    The references never saw the forget set. If they get it right far less often than unseen test
    data, its labels are atypical (mislabeled or poisoned), and scoring below the references is
    no evidence of over-forgetting: the test then judges only whether the set is still recognised.
    """
    gap, ci = proportion_difference_ci(forget_correct, test_correct)
    if not ci[1] < -margin:
        return Decision(True)
    return Decision(
        False,
        f"reference models get the forget set {-gap:.3f} less often right than test data "
        "(mislabeled or poisoned forget data?): the U-LiRA test judges only whether the forget "
        "set is still recognised",
    )


def roc_of(result: AttackResult) -> dict:
    """The ROC curve of one attack as the report draws it."""
    return {"fpr": result.roc_fpr, "tpr": result.roc_tpr, "auc": rounded(result.auc)}


def per_example_evidence(result: AttackResult) -> dict:
    """How many forget examples are individually still recognised, against what chance gives.

    An example counts when its score exceeds the ``RECOGNISED_QUANTILE`` quantile of the
    non-members' scores; on a model that never saw the forget set about 5% do. ``p_value``: the
    binomial chance of at least that many under that null.
    """
    member, nonmember = np.asarray(result.member_scores), np.asarray(result.nonmember_scores)
    cut = float(np.quantile(nonmember, RECOGNISED_QUANTILE))
    count, n = int((member > cut).sum()), int(member.size)
    chance = 1.0 - RECOGNISED_QUANTILE
    return {
        "recognised": count,
        "of": n,
        "share": rounded(count / n),
        "expected": rounded(chance * n),
        "p_value": rounded(float(binom.sf(count - 1, n, chance)), 12),
    }


def degenerate_reason(results: dict[str, AttackResult], *, coarse_by_design: bool = False) -> str | None:
    """Why some model's scores are too tied to show membership, or ``None`` when none are.

    Usually a result's own ``degenerate`` flag (few distinct values or mostly ties). A test
    whose scores are coarse BY DESIGN (the label-only gap attack: correct or not, two values)
    would then never pass; it is held to the one rule its interval floor cannot replace: every
    model's scores must take at least two values. An all-tied test has an AUC of exactly 0.5
    and an interval that is the floor alone, which measured nothing.
    """
    bad = [
        f"{name}: {res.n_distinct} distinct values, {res.tied_share:.0%} tied"
        for name, res in results.items()
        if (res.n_distinct < 2 if coarse_by_design else res.degenerate)
    ]
    return "; ".join(bad) or None


def _over_chance(result: AttackResult) -> tuple[float, tuple[float, float] | None]:
    """AUC excess over 0.5, the AUC of any test on data the model never saw."""
    ci = None if result.auc_ci is None else (result.auc_ci[0] - 0.5, result.auc_ci[1] - 0.5)
    return result.auc - 0.5, ci


@dataclass(frozen=True, kw_only=True)
class Judgement:
    """What the judge found for one signal of a test (``label`` names it when there are several)."""

    label: str
    status: str
    reason: str
    value: float
    ci: tuple[float, float] | None
    power: bool


def combine(judgements: Sequence[Judgement]) -> Judgement:
    """The judgement that decides a test judged on several signals.

    A failure on any signal fails the test; otherwise an undecided signal that has power keeps
    the test undecided; a signal without power is set aside (it cannot show forgetting either
    way), unless no signal has power.
    """
    for wanted in (
        lambda j: j.status == FAIL,
        lambda j: j.power and j.status == INCONCLUSIVE,
        lambda j: j.power,
    ):
        found = [j for j in judgements if wanted(j)]
        if found:
            return found[0]
    return judgements[0]


class MembershipCheck(AuditCheck):
    """A membership-inference test: runs only when there are enough members and non-members."""

    group = "privacy"

    def applies(self, ctx: AuditContext) -> bool:
        return ctx.membership_ready

    @staticmethod
    def score(ctx: AuditContext, attack: str, member, nonmember, notes: Sequence[str] = ()) -> AttackResult:
        """AUC (with its bootstrap interval) of an attack scoring members above non-members."""
        policy = ctx.policy
        return evaluate_attack(
            attack,
            member,
            nonmember,
            n_bootstrap=policy.n_bootstrap,
            level=policy.confidence_level,
            seed=ctx.seed,
            notes=notes,
        )

    @staticmethod
    def auc_gap(ctx: AuditContext, a: AttackResult, b: AttackResult) -> tuple[float, tuple | None]:
        """AUC of ``a`` minus AUC of ``b`` on the same examples, with a paired bootstrap interval."""
        return auc_difference(
            a.member_scores,
            a.nonmember_scores,
            b.member_scores,
            b.nonmember_scores,
            n_bootstrap=ctx.policy.n_bootstrap,
            level=ctx.policy.confidence_level,
            seed=ctx.seed,
        )

    def judge(
        self,
        ctx: AuditContext,
        results: dict[str, AttackResult],
        *,
        excess: tuple[float, tuple | None] | None = None,
        original_excess: tuple[float, tuple | None] | None = None,
        two_sided: bool,
        power_detail: str,
        label: str = "",
        coarse_by_design: bool = False,
        raw_degenerate: str | None = None,
    ) -> Judgement:
        """The shared judge of every membership test on one signal (rules in the module docstring).

        ``excess``/``original_excess``: the unlearned and original models' AUC excess over the
        baseline, each with its interval; by default over chance (AUC 0.5). ``power_detail``
        may use ``{auc}``, the original model's AUC. ``coarse_by_design``: the scores take few
        values by design (see :func:`degenerate_reason`). ``raw_degenerate``: why a model's own
        signal is degenerate when the scores judged are derived from it (a difference with a
        retrained model, a residual from a line on reference models) and so hide its ties.
        """
        value, ci = excess or _over_chance(results["unlearned"])
        original_value, original_ci = original_excess or _over_chance(results["original"])
        power = original_ci is not None and original_ci[0] > 0
        gain, gain_ci = self.auc_gap(ctx, results["original"], results["unlearned"])
        status, reason = judge_excess(
            value,
            ci,
            margin=ctx.policy.mia_auc_margin,
            two_sided=two_sided,
            power=power,
            power_detail=power_detail.format(auc=results["original"].auc),
            gain=gain,
            gain_ci=gain_ci,
            degenerate="; ".join(
                r
                for r in (degenerate_reason(results, coarse_by_design=coarse_by_design), raw_degenerate)
                if r
            )
            or None,
            original_excess=original_value,
        )
        return Judgement(label=label, status=status, reason=reason, value=value, ci=ci, power=power)

    def conclude(
        self,
        ctx: AuditContext,
        judgements: Sequence[Judgement],
        *,
        headline: str,
        advisory: str | None = None,
        attacks: Sequence[AttackRecord] = (),
        notes: Sequence[str] = (),
    ) -> Outcome:
        """The check's outcome from its judgements (:func:`combine`). ``advisory``: why the test
        cannot gate here; it then neither gates nor counts as power."""
        decisive = combine(judgements)
        power = any(j.power for j in judgements)
        if len(judgements) == 1:
            reason = decisive.reason
        else:
            reason = "; ".join(f"[{j.label}] {j.status}: {j.reason}" for j in judgements)
            reason = f"decided on {decisive.label}; {reason}"
        check = self.statement(
            decisive.status,
            rounded(decisive.value),
            rounded(ctx.policy.mia_auc_margin),
            f"{headline}; {reason}" + (f" (advisory: {advisory})" if advisory else ""),
            ci=rounded_ci(decisive.ci),
            gating=advisory is None and (power or decisive.status == FAIL),
        )
        return Outcome(
            check=check, power=power and advisory is None, attacks=tuple(attacks), notes=tuple(notes)
        )


class PopulationTest(MembershipCheck):
    name = "mia_population"
    stage = "mia_population"
    explanation = (
        "A population membership-inference attack (one attacker for all examples, using the model's "
        "loss, confidence and entropy) tries to tell the forget set apart from data the model never "
        "saw. After unlearning it should do no better than on a model that never trained on the data."
    )

    def announce(self, ctx: AuditContext) -> str:
        return "population membership-inference attacks"

    def run(self, ctx: AuditContext) -> Outcome:
        pops = {
            name: population_attacks(
                view.signals["forget"],
                view.signals["retain"],
                view.signals["test"].subset(ctx.nm_index),
                seed=ctx.seed,
                n_bootstrap=ctx.policy.n_bootstrap,
                test_split=ctx.split,
                level=ctx.policy.confidence_level,
            )
            for name, view in ctx.views.items()
        }
        original = ctx.views["original"].signals
        test_a = original["test"].subset(ctx.nm_index[ctx.split[0]])
        signal = choose_threshold_attack(original["retain"], test_a)
        results = {name: pop.threshold[signal] for name, pop in pops.items()}
        chosen = results["original"].name
        attacks = []
        for name, pop in pops.items():
            res = results[name]
            gated = {
                "attack": chosen,
                "chosen_on": "retain vs test half A (original model)",
                "auc": rounded(res.auc),
                "auc_ci": rounded_ci(res.auc_ci),
                "tpr_at_1pct_fpr": rounded(res.tpr_at_1pct_fpr) if res.tpr_at_1pct_fpr is not None else None,
                "degenerate": res.degenerate,
            }
            attacks.append(AttackRecord(name, "population", pop.to_dict(), roc=roc_of(res)))
            attacks.append(AttackRecord(name, "population_gated", gated))
        orig, unl = results["original"], results["unlearned"]
        if "retrained" in results:
            base_desc = "the retrained model"
            excess = self.auc_gap(ctx, unl, results["retrained"])
            original_excess = self.auc_gap(ctx, orig, results["retrained"])
        else:  # power on the examples the attack was chosen on, so that it does not select lucky gains
            base_desc = "unseen data (AUC 0.5), power on retain vs test half A"
            chosen_on = self.score(
                ctx, chosen, original["retain"].membership_score(signal), test_a.membership_score(signal)
            )
            excess, original_excess = _over_chance(unl), _over_chance(chosen_on)
        judgement = self.judge(
            ctx,
            results,
            excess=excess,
            original_excess=original_excess,
            two_sided=ctx.two_sided,  # one-sided without a retrained model: a low AUC may be honest
            power_detail=f"attack {chosen} reaches AUC {orig.auc:.3f} on the original model "
            f"(excess {original_excess[0]:+.3f} over {base_desc})",
        )
        return self.conclude(
            ctx,
            [judgement],
            headline=f"{chosen}: unlearned AUC {unl.auc:.3f} vs {base_desc}",
            advisory=None if ctx.baseline_fair else NOT_RANDOM,
            attacks=attacks,
        )


class LabelOnlyTest(MembershipCheck):
    """ART's label-only attack (for models that expose only labels), judged like the others.

    Calibrated on retain (members) vs test half A, scored on forget vs test half B; at most
    ``label_only_samples`` examples per set, since the decision-boundary attack queries the model
    a lot.
    """

    name = "mia_label_only"
    stage = "mia_label_only"
    explanation = (
        "A label-only attack (ART) sees only the predicted labels, as an outside party querying a deployed "
        "model would; after unlearning it should not tell the forget set from unseen data."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return super().applies(ctx) and bool(ctx.options.label_only)

    def announce(self, ctx: AuditContext) -> str:
        return f"label-only attack ({ctx.options.label_only}, ART)"

    @staticmethod
    def samples(ctx: AuditContext) -> dict[str, np.ndarray]:
        """Seeded subsets: retain, test half A (calibration), forget, test half B (scoring)."""
        rng = np.random.default_rng(ctx.seed)
        limit = ctx.options.label_only_samples

        def pick(n: int) -> np.ndarray:
            return np.sort(rng.choice(n, size=min(n, limit), replace=False))

        idx_a, idx_b = ctx.nm_index[ctx.split[0]], ctx.nm_index[ctx.split[1]]
        retain, test_a, forget = (
            pick(len(ctx.roles.retain)),
            idx_a[pick(len(idx_a))],
            pick(len(ctx.roles.forget)),
        )
        return {"retain": retain, "test_a": test_a, "forget": forget, "test_b": idx_b[pick(len(idx_b))]}

    def run(self, ctx: AuditContext) -> Outcome:
        from attacks.label_only import label_only_attack

        idx = self.samples(ctx)
        roles, method = ctx.roles, ctx.options.label_only
        retain, forget, test = roles.retain, roles.forget, roles.test
        results, attacks = {}, []
        for name in ("original", "unlearned"):
            member, nonmember = label_only_attack(
                ctx.views[name].loaded.module,
                retain.x[idx["retain"]],
                retain.y[idx["retain"]],
                test.x[idx["test_a"]],
                test.y[idx["test_a"]],
                forget.x[idx["forget"]],
                forget.y[idx["forget"]],
                test.x[idx["test_b"]],
                test.y[idx["test_b"]],
                method=method,
                num_classes=roles.num_classes,
                input_shape=roles.input_shape,
                device=ctx.device,
                seed=ctx.seed,
            )
            res = results[name] = self.score(ctx, f"label_only/{method}", member, nonmember)
            attacks.append(AttackRecord(name, "label_only", res.to_dict(), roc=roc_of(res)))
        judgement = self.judge(
            ctx,
            results,
            two_sided=False,
            power_detail="the original model scores AUC {auc:.3f}",
            coarse_by_design=method == "gap",  # correct or wrong: two values
        )
        return self.conclude(
            ctx,
            [judgement],
            headline=f"ART label-only {method} attack, forget vs unseen test: "
            f"AUC {results['unlearned'].auc:.3f}",
            advisory=None if ctx.baseline_fair else "forget set not known to be random",
            attacks=attacks,
        )


class MembershipPower(SummaryCheck):
    """Judged from the membership outcomes: each says whether it counts as power."""

    name = "membership_power"
    group = "privacy"
    explanation = (
        "Can forgetting be measured at all? At least one membership-inference test must recognise the "
        "forget set as training data on the ORIGINAL model; otherwise no test can show that the "
        "unlearned model forgot it, and the audit cannot pass."
    )

    def summarise(self, ctx: AuditContext, outcomes: Sequence[Outcome]) -> Outcome:
        ran = [o.check.name for o in outcomes if o.power is not None]
        powered = [o.check.name for o in outcomes if o.power]
        if powered:
            detail = f"tests with power on the original model: {', '.join(powered)}"
        else:
            detail = (
                "no membership test recognises the forget set even on the original model "
                f"(ran: {', '.join(ran) or 'none'}); forgetting cannot be shown: give --retrained "
                "or --reference-models, or a larger forget/test set"
            )
        status = PASS if powered else INCONCLUSIVE
        return Outcome(check=self.statement(status, float(len(powered)), 1.0, detail))
