"""Membership-inference checks: is the forget set still recognised as training data?

How a membership check decides (see README, "How the verdict is reached"):

* Each membership test compares the unlearned model with a *baseline*: a model that never saw
  the forget set (the retrained model when given, otherwise unseen test data, AUC 0.5).
* ``d`` (the check's ``value``) is the test's AUC excess over the baseline, with a bootstrap
  interval ``[lo, hi]``; ``m`` is the policy margin. ``lo > m``: the forget set is still
  recognised beyond the tolerance: **fail**. With a retrained model, ``hi < -m`` is a fail too
  (the forget set scores *lower* than retraining leaves it, which itself reveals the deletion).
* A test has *power* only if it recognises the forget set on the ORIGINAL model (the
  original's excess has ``lo > 0``). A test without power cannot show forgetting: it is
  reported as inconclusive and does not gate.
* **pass** needs all three: power; the unlearned model's whole interval inside the margin
  (``hi <= m``, and ``lo >= -m`` with a retrained model); and a *measurable gain*: the
  original's AUC minus the unlearned model's, paired over the same examples, has ``lo > 0``.
  Without the gain, a model that changed nothing could pass whenever the original's own
  leakage is below the margin. Anything else is inconclusive.
* The ``membership_power`` check passes only if at least one membership test has power; it is
  inconclusive otherwise, so no audit passes without evidence that forgetting was measurable.

All four tests share one judge (:func:`judge_membership`); they differ only in how they score
members and non-members and in what their baseline is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from attacks.population import PopulationResult, population_attacks
from attacks.signals import compute_logits, compute_signals
from attacks.stats import AttackResult, auc_difference, evaluate_attack
from unlearn_audit.checks.base import AttackRecord, AuditCheck, Outcome, SummaryCheck, judge_excess
from unlearn_audit.context import AuditContext, Decision
from unlearn_audit.metrics import proportion_difference_ci
from unlearn_audit.results import FAIL, INCONCLUSIVE, PASS, rounded, rounded_ci

NOT_RANDOM = "the forget set is not known to be a random sample"


def calibration_residuals(
    forget_score: np.ndarray, forget_ref: np.ndarray, test_score: np.ndarray, test_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Remove from a per-example score the part a calibration difference explains.

    Two honest models differ in calibration (roughly a temperature), which moves their
    logit-scaled confidence in proportion to its size and with opposite signs for correctly and
    wrongly labelled examples. A line ``score ~ a + b * ref`` fitted on the TEST examples only
    (never seen by either model) captures that; forget examples are judged by their residual.
    Memorisation is untouched by the fit, since no forget example enters it.
    """
    if np.ptp(test_ref) > 0:
        b, a = np.polyfit(test_ref, test_score, 1)
    else:
        b, a = 0.0, float(np.mean(test_score))
    return forget_score - (a + b * forget_ref), test_score - (a + b * test_ref)


def strongest_threshold_attack(original: PopulationResult) -> str:
    """The population attack shown and gated: the strongest threshold attack on the ORIGINAL model.

    It is chosen without looking at the unlearned model, and it is monotone in one signal, so the
    same rule scores every model. Learned attackers are refitted per model and extrapolate
    differently on atypical forget data: they are reported, not gated.
    """
    return max(original.threshold.values(), key=lambda res: res.auc).name


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


def _over_chance(result: AttackResult) -> tuple[float, tuple[float, float] | None]:
    """AUC excess over 0.5, the AUC of any test on data the model never saw."""
    ci = None if result.auc_ci is None else (result.auc_ci[0] - 0.5, result.auc_ci[1] - 0.5)
    return result.auc - 0.5, ci


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

    def judge_membership(
        self,
        ctx: AuditContext,
        results: dict[str, AttackResult],
        *,
        excess: tuple[float, tuple | None],
        original_excess: tuple[float, tuple | None],
        two_sided: bool,
        power_detail: str,
        headline: str,
        advisory: str | None = None,
        attacks: Sequence[AttackRecord] = (),
        notes: Sequence[str] = (),
    ) -> Outcome:
        """The shared judge of every membership test (rules in the module docstring).

        ``excess``/``original_excess``: the unlearned and original models' AUC excess over the
        baseline, each with its interval. ``advisory``: why the test cannot gate here; it then
        neither gates nor counts as power. ``attacks`` and ``notes`` are passed on to the outcome.
        """
        value, ci = excess
        power = original_excess[1] is not None and original_excess[1][0] > 0
        gain, gain_ci = self.auc_gap(ctx, results["original"], results["unlearned"])
        margin = ctx.policy.mia_auc_margin
        status, reason = judge_excess(
            value,
            ci,
            margin=margin,
            two_sided=two_sided,
            power=power,
            power_detail=power_detail,
            gain=gain,
            gain_ci=gain_ci,
        )
        check = self.statement(
            status,
            rounded(value),
            rounded(margin),
            f"{headline}; {reason}" + (f" (advisory: {advisory})" if advisory else ""),
            ci=rounded_ci(ci),
            gating=advisory is None and (power or status == FAIL),
        )
        return Outcome(
            check=check, power=power and advisory is None, attacks=tuple(attacks), notes=tuple(notes)
        )

    def judge_against_chance(
        self,
        ctx: AuditContext,
        results: dict[str, AttackResult],
        *,
        two_sided: bool,
        power_detail: str,
        describe: str,
        advisory: str | None = None,
        attacks: Sequence[AttackRecord] = (),
        notes: Sequence[str] = (),
    ) -> Outcome:
        """Judge a test whose never-trained baseline is AUC 0.5 (paired, U-LiRA, label-only).

        ``power_detail`` may use ``{auc}``, the original model's AUC.
        """
        unl = results["unlearned"]
        return self.judge_membership(
            ctx,
            results,
            excess=_over_chance(unl),
            original_excess=_over_chance(results["original"]),
            two_sided=two_sided,
            power_detail=power_detail.format(auc=results["original"].auc),
            headline=f"{describe}: AUC {unl.auc:.3f}",
            advisory=advisory,
            attacks=attacks,
            notes=notes,
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
        chosen = strongest_threshold_attack(pops["original"])
        results = {name: pop.all_results()[chosen] for name, pop in pops.items()}
        attacks = []
        for name, pop in pops.items():
            res = results[name]
            gated = {
                "attack": chosen,
                "auc": rounded(res.auc),
                "auc_ci": rounded_ci(res.auc_ci),
                "tpr_at_1pct_fpr": rounded(res.tpr_at_1pct_fpr) if res.tpr_at_1pct_fpr is not None else None,
            }
            attacks.append(AttackRecord(name, "population", pop.to_dict(), roc=roc_of(res)))
            attacks.append(AttackRecord(name, "population_gated", gated))
        orig, unl = results["original"], results["unlearned"]
        if "retrained" in results:
            base_desc = "the retrained model"
            excess = self.auc_gap(ctx, unl, results["retrained"])
            original_excess = self.auc_gap(ctx, orig, results["retrained"])
        else:
            base_desc = "unseen data (AUC 0.5)"
            excess, original_excess = _over_chance(unl), _over_chance(orig)
        return self.judge_membership(
            ctx,
            results,
            excess=excess,
            original_excess=original_excess,
            two_sided=ctx.two_sided,  # one-sided without a retrained model: a low AUC may be honest
            power_detail=f"attack {chosen} reaches AUC {orig.auc:.3f} on the original model "
            f"(excess {original_excess[0]:+.3f} over {base_desc})",
            headline=f"{chosen}: unlearned AUC {unl.auc:.3f} vs {base_desc}",
            advisory=None if ctx.baseline_fair else NOT_RANDOM,
            attacks=attacks,
        )


class PairedTest(MembershipCheck):
    name = "mia_paired"
    stage = "mia_paired"
    explanation = (
        "Per-example comparison with the retrained model: for each deleted example, how much more "
        "confident is the unlearned model than a model retrained without it? The same difference on "
        "unseen test examples is the yardstick. A real deletion leaves no excess."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return super().applies(ctx) and ctx.has_retrained

    def announce(self, ctx: AuditContext) -> str:
        return "paired test against the retrained model"

    def run(self, ctx: AuditContext) -> Outcome:
        from attacks.paired import paired_test

        ret = ctx.views["retrained"].signals
        ret_test = ret["test"].logit_confidence[ctx.nm_index]
        results, attacks = {}, []
        for name in ("original", "unlearned"):
            sig = ctx.views[name].signals
            pt = paired_test(
                sig["forget"].logit_confidence,
                ret["forget"].logit_confidence,
                sig["test"].logit_confidence[ctx.nm_index],
                ret_test,
            )
            f_res, t_res = calibration_residuals(
                pt.forget_diffs, ret["forget"].logit_confidence, pt.test_diffs, ret_test
            )
            res = results[name] = self.score(
                ctx,
                "paired/logit_confidence",
                f_res,
                t_res,
                notes=("unlearned-minus-retrained logit confidence, calibration-adjusted on test examples",),
            )
            record = {
                **res.to_dict(),
                "p_value": rounded(pt.p_value, 12),
                "median_shift": rounded(pt.median_shift),
            }
            attacks.append(AttackRecord(name, "paired", record, roc=roc_of(res)))
        return self.judge_against_chance(
            ctx,
            results,
            two_sided=ctx.two_sided,
            power_detail="the original model scores AUC {auc:.3f} on the same test",
            describe="unlearned-minus-retrained confidence, forget vs test",
            attacks=attacks,
        )


class ReferenceTest(MembershipCheck):
    name = "mia_reference"
    stage = "mia_reference"
    explanation = (
        "U-LiRA: reference models retrained without the forget set give each example its own "
        "'never seen' distribution; the unlearned model's confidence on each deleted example is "
        "tested against it. This is the strongest test in the audit."
    )

    def applies(self, ctx: AuditContext) -> bool:
        return super().applies(ctx) and bool(ctx.options.reference_models)

    def announce(self, ctx: AuditContext) -> str:
        return f"U-LiRA against {len(ctx.options.reference_models)} reference models"

    @staticmethod
    def reference_signals(ctx: AuditContext) -> tuple[dict[str, list], dict[str, list]]:
        """Per reference model and role (forget, test): logit confidence and correctness.

        With a signal cache, reference logits are reused across audits of the same data.
        """

        def logits_of(model, x):
            return compute_logits(model, x, batch_size=ctx.options.batch_size, device=ctx.device)

        scores: dict[str, list[np.ndarray]] = {"forget": [], "test": []}
        correct: dict[str, list[np.ndarray]] = {"forget": [], "test": []}
        cache = ctx.options.signal_cache
        for ref in ctx.options.reference_models:
            for role in ("forget", "test"):
                s = ctx.sets[role]
                if cache is not None:
                    logits = cache.get_or_compute(ref, s.x, s.y, logits_of, key=f"logits:{role}")
                else:
                    logits = logits_of(ref, s.x)
                sig = compute_signals(logits, s.y)
                scores[role].append(sig.logit_confidence)
                correct[role].append(sig.predictions == sig.labels)
        return scores, correct

    def run(self, ctx: AuditContext) -> Outcome:
        from attacks.reference import ulira_scores

        ref_scores, ref_correct = self.reference_signals(ctx)
        ref_f = np.stack(ref_scores["forget"], axis=1)
        ref_t = np.stack(ref_scores["test"], axis=1)[ctx.nm_index]
        if ctx.has_retrained:
            two_sided = Decision(ctx.two_sided)
        else:
            two_sided = references_two_sided(
                np.concatenate(ref_correct["forget"]),
                np.concatenate([c[ctx.nm_index] for c in ref_correct["test"]]),
                ctx.policy.forget_accuracy_margin,
            )
        n_refs = len(ctx.options.reference_models)
        results, attacks = {}, []
        for name, view in ctx.views.items():
            sig = view.signals
            f_scores, t_scores = ulira_scores(
                sig["forget"].logit_confidence, ref_f, sig["test"].logit_confidence[ctx.nm_index], ref_t
            )
            f_res, t_res = calibration_residuals(f_scores, ref_f.mean(axis=1), t_scores, ref_t.mean(axis=1))
            res = results[name] = self.score(
                ctx,
                "reference/ulira",
                f_res,
                t_res,
                notes=("offline LiRA score per example, calibration-adjusted on test examples",),
            )
            record = {**res.to_dict(), "n_reference_models": n_refs}
            attacks.append(AttackRecord(name, "reference", record, roc=roc_of(res)))
        note = f" ({ctx.options.reference_note})" if ctx.options.reference_note else ""
        return self.judge_against_chance(
            ctx,
            results,
            two_sided=two_sided.value,
            power_detail="the original model scores AUC {auc:.3f} against the same references",
            describe=f"U-LiRA over {n_refs} reference models{note}",
            attacks=attacks,
            notes=[two_sided.note] if two_sided.note else [],
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
        return self.judge_against_chance(
            ctx,
            results,
            two_sided=False,
            power_detail="the original model scores AUC {auc:.3f}",
            describe=f"ART label-only {method} attack, forget vs unseen test",
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
