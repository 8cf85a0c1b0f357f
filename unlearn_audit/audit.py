"""``evaluate()``: logits -> signals -> attacks and metrics -> checks -> :class:`AuditResult`.

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
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from attacks.population import PopulationResult, population_attacks, split_halves
from attacks.signals import Signals, compute_logits, compute_signals
from attacks.stats import AttackResult, auc_difference, evaluate_attack
from unlearn_audit.data import Roles
from unlearn_audit.errors import ModelError
from unlearn_audit.metrics import (
    kl_divergence,
    paired_proportion_difference_ci,
    parameter_distance,
    proportion_difference_ci,
    wilson_interval,
)
from unlearn_audit.models import LoadedModel
from unlearn_audit.policy import DEFAULT_POLICY, Policy
from unlearn_audit.provenance import environment

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
ROLES = ("forget", "retain", "test")
MIN_NONMEMBERS = 20
MIN_MEMBERS = 20

EXPLANATIONS = {
    "membership_power": (
        "Can forgetting be measured at all? At least one membership-inference test must recognise the "
        "forget set as training data on the ORIGINAL model; otherwise no test can show that the "
        "unlearned model forgot it, and the audit cannot pass."
    ),
    "mia_population": (
        "A population membership-inference attack (one attacker for all examples, using the model's "
        "loss, confidence and entropy) tries to tell the forget set apart from data the model never "
        "saw. After unlearning it should do no better than on a model that never trained on the data."
    ),
    "mia_paired": (
        "Per-example comparison with the retrained model: for each deleted example, how much more "
        "confident is the unlearned model than a model retrained without it? The same difference on "
        "unseen test examples is the yardstick. A real deletion leaves no excess."
    ),
    "mia_reference": (
        "U-LiRA: reference models retrained without the forget set give each example its own "
        "'never seen' distribution; the unlearned model's confidence on each deleted example is "
        "tested against it. This is the strongest test in the audit."
    ),
    "forget_accuracy": (
        "Accuracy on the deleted examples should not stay above the level of data the model never "
        "saw (or of the retrained model, when given); staying higher shows the examples are remembered."
    ),
    "forget_class_predictions": (
        "Class-wise deletion: the unlearned model should no longer predict the deleted classes, for the "
        "deleted examples or for new examples of those classes."
    ),
    "retain_accuracy_drop": (
        "Utility on the data that was kept: unlearning must not cost more than the policy allows."
    ),
    "test_accuracy_drop": (
        "Utility on unseen data: unlearning must not cost more accuracy than the policy allows."
    ),
    "model_changed": "The unlearned model must differ from the original; an unchanged model forgot nothing.",
    "mia_label_only": (
        "A label-only attack (ART) sees only the predicted labels, as an outside party querying a deployed "
        "model would; after unlearning it should not tell the forget set from unseen data."
    ),
    "robust_accuracy_drop": (
        "Adversarial robustness (accuracy under a PGD attack) must not drop by more than the policy allows."
    ),
}


@dataclass(frozen=True)
class Check:
    """One gated statement about the unlearned model."""

    name: str
    status: str  # pass | fail | inconclusive
    value: float | None
    threshold: float | None
    detail: str
    ci: tuple[float, float] | None = None
    group: str = "privacy"
    gating: bool = True
    explanation: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci else None
        return data


@dataclass(frozen=True)
class AuditResult:
    """Everything the JSON, HTML and JUnit outputs are rendered from."""

    verdict: str
    checks: tuple[Check, ...]
    models: dict
    distances: dict
    plots: dict
    timings: dict
    policy: dict
    data: dict
    provenance: dict
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "verdict": self.verdict,
            "checks": [c.to_dict() for c in self.checks],
            "models": self.models,
            "distances": self.distances,
            "data": self.data,
            "policy": self.policy,
            "timings": self.timings,
            "plots": self.plots,
            "notes": list(self.notes),
            "provenance": self.provenance,
        }


def decide_verdict(checks: tuple[Check, ...] | list[Check]) -> str:
    """fail if any gating check fails, else inconclusive if any gating check is, else pass."""
    gating = [c for c in checks if c.gating]
    if any(c.status == FAIL for c in gating):
        return FAIL
    if not gating or any(c.status == INCONCLUSIVE for c in gating):
        return INCONCLUSIVE
    return PASS


# --------------------------------------------------------------------------- helpers


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


def _r(x: float | None, digits: int = 6) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def _ci(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    return None if ci is None else (round(float(ci[0]), 6), round(float(ci[1]), 6))


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
) -> tuple[str, str]:
    """Status and reason for a membership test (rules in the module docstring).

    ``excess``/``ci``: the unlearned model's AUC excess over its baseline. ``gain``/``gain_ci``:
    the original's AUC minus the unlearned model's on the same examples.
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


def _histogram(values: dict[str, np.ndarray], bins: int = 40) -> dict:
    """Shared-bin histograms (as densities) of a signal on several roles, for the report."""
    pooled = np.concatenate([v for v in values.values() if v.size])
    lo, hi = np.quantile(pooled, [0.005, 0.995]) if pooled.size else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    out = {"edges": [round(float(e), 5) for e in edges], "density": {}}
    for role, v in values.items():
        counts, _ = np.histogram(np.clip(v, lo, hi), bins=edges)
        total = counts.sum()
        out["density"][role] = [round(float(c) / total, 6) if total else 0.0 for c in counts]
    return out


def _roc(result: AttackResult) -> dict:
    return {"fpr": result.roc_fpr, "tpr": result.roc_tpr, "auc": _r(result.auc)}


# --------------------------------------------------------------------------- the audit


@dataclass
class _ModelEval:
    loaded: LoadedModel
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    signals: dict[str, Signals] = field(default_factory=dict)


def _check_model_fits(name: str, model: LoadedModel, roles: Roles, device: torch.device) -> None:
    probe = roles.test.x[:2].to(device)
    was_training = model.module.training
    try:
        model.module.eval()  # a probe in train mode would update BatchNorm statistics
        with torch.no_grad():
            out = model.module(probe)
    except Exception as exc:  # shape errors surface as RuntimeError, guards as AssertionError, ...
        first = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"{name} model {model.path} does not accept inputs of shape {tuple(roles.test.x.shape[1:])} "
            f"({type(exc).__name__}: {first})"
        ) from None
    finally:
        model.module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != probe.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{name} model {model.path} must return logits of shape (batch, classes), got {shape}"
        )
    if out.shape[1] < roles.num_classes:
        raise ModelError(
            f"{name} model {model.path} has {out.shape[1]} outputs but the data has labels up to "
            f"{roles.num_classes - 1}"
        )


def evaluate(
    original: LoadedModel,
    unlearned: LoadedModel,
    roles: Roles,
    *,
    retrained: LoadedModel | None = None,
    policy: Policy = DEFAULT_POLICY,
    seed: int = 0,
    device: torch.device | str = "cpu",
    reference_models: list[torch.nn.Module] | None = None,
    reference_note: str = "",
    signal_cache: object | None = None,
    robustness: Callable[[torch.nn.Module], dict] | None = None,
    label_only: str | None = None,
    label_only_samples: int = 200,
    batch_size: int = 512,
    progress: Callable[[str], None] | None = None,
    extra_provenance: dict | None = None,
) -> AuditResult:
    """Audit ``unlearned`` against ``original`` (and ``retrained``) on the three roles.

    ``reference_models`` are models trained WITHOUT the forget set (U-LiRA references);
    ``robustness(module) -> dict`` measures robust accuracy (keys ``clean_accuracy``,
    ``robust_accuracy``, ``gap``, ``attack``) when given.
    """
    device = torch.device(device)
    timer = _Timer()
    say = progress or (lambda _msg: None)
    level, n_boot, margin = policy.confidence_level, policy.n_bootstrap, policy.mia_auc_margin
    evals: dict[str, _ModelEval] = {"original": _ModelEval(original), "unlearned": _ModelEval(unlearned)}
    if retrained is not None:
        evals["retrained"] = _ModelEval(retrained)
    for name, ev in evals.items():
        _check_model_fits(name, ev.loaded, roles, device)

    sets = {"forget": roles.forget, "retain": roles.retain, "test": roles.test}
    say("computing logits")
    with timer.step("logits"):
        for ev in evals.values():
            for role, s in sets.items():
                logits = compute_logits(ev.loaded.module, s.x, batch_size=batch_size, device=device)
                if not torch.isfinite(logits).all():
                    raise ModelError(f"{ev.loaded.path} produced NaN or infinite logits on the {role} set")
                ev.logits[role] = logits[:, : max(roles.num_classes, logits.shape[1])]
    with timer.step("signals"):
        for ev in evals.values():
            for role, s in sets.items():
                ev.signals[role] = compute_signals(ev.logits[role], s.y)

    # ------------------------------------------------------------ accuracies
    forget_classes = set(roles.forget_classes)
    test_y = roles.test.y.numpy()
    in_forget_classes = (
        np.isin(test_y, list(forget_classes)) if forget_classes else np.zeros(len(test_y), bool)
    )
    models_out: dict[str, dict] = {}
    correct: dict[str, dict[str, np.ndarray]] = {}
    with timer.step("accuracy"):
        for name, ev in evals.items():
            correct[name] = {r: ev.signals[r].predictions == ev.signals[r].labels for r in ROLES}
            acc = {r: _r(float(correct[name][r].mean())) for r in ROLES}
            entry: dict = {"model": ev.loaded.describe(), "accuracy": acc}
            if forget_classes:
                kept = ~in_forget_classes
                entry["accuracy"]["test_retained_classes"] = (
                    _r(float(correct[name]["test"][kept].mean())) if kept.any() else None
                )
                fc = list(forget_classes)
                entry["forget_class_rate"] = {
                    "forget": _r(float(np.isin(ev.signals["forget"].predictions, fc).mean())),
                    "test_of_forget_classes": _r(
                        float(np.isin(ev.signals["test"].predictions[in_forget_classes], fc).mean())
                    )
                    if in_forget_classes.any()
                    else None,
                }
            models_out[name] = entry

    # ------------------------------------------------------------ membership inference
    # Non-members: unseen test data; for class-wise forgetting only test examples of the
    # forgotten classes, so the attack compares like with like.
    forget_labels = np.unique(roles.forget.y.numpy())
    nm_index = np.flatnonzero(np.isin(test_y, forget_labels)) if forget_classes else np.arange(len(test_y))
    checks: list[Check] = []
    plots: dict = {"roc": {}, "histograms": {}, "per_layer": {}}
    notes: list[str] = []
    powered: list[str] = []
    mia_checked: list[str] = []
    # Mislabeled or poisoned forget data: a model that never saw the forget set gets it wrong far
    # more often than unseen test data. Then "scores lower than retraining" is no evidence of
    # over-forgetting (calibration differences between honest models flip sign on such examples),
    # so membership tests judge only the remembering direction.
    two_sided = retrained is not None
    if retrained is not None and not forget_classes:
        gap_rt, ci_rt = proportion_difference_ci(
            correct["retrained"]["forget"], correct["retrained"]["test"], level=level
        )
        if ci_rt[1] < -policy.forget_accuracy_margin:
            two_sided = False
            notes.append(
                f"the retrained model's forget accuracy is {-gap_rt:.3f} below its test accuracy: the forget "
                "labels disagree with what the rest of the data teaches (mislabeled or poisoned data); "
                "membership tests judge only whether the forget set is still recognised"
            )
    # Without a model that never saw the forget set, unseen test data is the baseline, which is
    # fair only when the forget set is a random sample of the training set (class-wise sets are
    # compared with test examples of their classes). A hand-picked set (index or role files)
    # may differ from test data for reasons that have nothing to do with memorisation.
    spec = str(roles.provenance.get("forget_spec") or "")
    baseline_fair = retrained is not None or spec.startswith("random:") or bool(forget_classes)
    if not baseline_fair:
        notes.append(
            "the forget set is not known to be a random sample (index or role files) and no retrained model "
            "was given: the population test against unseen data and the forget-accuracy check are advisory; "
            "give --retrained or reference models for a verdict"
        )
    if len(roles.forget) < MIN_MEMBERS:
        notes.append(
            f"only {len(roles.forget)} forget examples: membership tests need at least {MIN_MEMBERS} "
            "to say anything"
        )
    elif len(nm_index) < 2 * MIN_NONMEMBERS:
        notes.append(
            f"only {len(nm_index)} unseen test examples are comparable with the forget set; membership "
            f"tests need at least {2 * MIN_NONMEMBERS}"
        )
    else:
        split = split_halves(len(nm_index), seed)
        say("population membership-inference attacks")
        pops: dict[str, PopulationResult] = {}
        with timer.step("mia_population"):
            for name, ev in evals.items():
                pops[name] = population_attacks(
                    ev.signals["forget"],
                    ev.signals["retain"],
                    ev.signals["test"].subset(nm_index),
                    seed=seed,
                    n_bootstrap=n_boot,
                    test_split=split,
                    level=level,
                )
                models_out[name]["mia"] = {"population": pops[name].to_dict()}
            # The attack shown and gated is the strongest threshold attack on the ORIGINAL model:
            # chosen without looking at the unlearned model, and monotone in one signal, so the
            # same rule scores every model (learned attackers are refitted per model and
            # extrapolate differently on atypical forget data; they are reported, not gated).
            chosen = max(pops["original"].threshold.values(), key=lambda res: res.auc).name
            for name, pop in pops.items():
                res = pop.all_results()[chosen]
                models_out[name]["mia"]["population_gated"] = {
                    "attack": chosen,
                    "auc": _r(res.auc),
                    "auc_ci": _ci(res.auc_ci),
                    "tpr_at_1pct_fpr": _r(res.tpr_at_1pct_fpr) if res.tpr_at_1pct_fpr is not None else None,
                }
                plots["roc"].setdefault("population", {})[name] = _roc(res)
            checks.append(
                _population_check(
                    pops, chosen, margin, n_boot, level, seed, powered, two_sided, baseline_fair
                )
            )
            mia_checked.append("mia_population")

        run = _MiaRun(
            evals,
            sets,
            nm_index,
            margin,
            n_boot,
            level,
            seed,
            device,
            batch_size,
            powered,
            plots,
            models_out,
            notes,
        )
        if retrained is not None:
            say("paired test against the retrained model")
            with timer.step("mia_paired"):
                checks.append(_paired_check(run, two_sided))
                mia_checked.append("mia_paired")

        if reference_models:
            say(f"U-LiRA against {len(reference_models)} reference models")
            with timer.step("mia_reference"):
                checks.append(
                    _reference_check(
                        run,
                        reference_models,
                        reference_note,
                        two_sided if retrained is not None else None,
                        policy.forget_accuracy_margin,
                        signal_cache,
                    )
                )
                mia_checked.append("mia_reference")

        if label_only:
            say(f"label-only attack ({label_only}, ART)")
            with timer.step("mia_label_only"):
                checks.append(
                    _label_only_check(run, split, label_only, label_only_samples, roles, baseline_fair)
                )
                mia_checked.append("mia_label_only")

    power_status = PASS if powered else INCONCLUSIVE
    checks.insert(
        0,
        Check(
            "membership_power",
            power_status,
            float(len(powered)),
            1.0,
            (
                f"tests with power on the original model: {', '.join(powered)}"
                if powered
                else "no membership test recognises the forget set even on the original model "
                f"(ran: {', '.join(mia_checked) or 'none'}); forgetting cannot be shown: give --retrained "
                "or --reference-models, or a larger forget/test set"
            ),
            group="privacy",
            explanation=EXPLANATIONS["membership_power"],
        ),
    )

    # ------------------------------------------------------------ utility checks
    with timer.step("utility"):
        checks.extend(
            _utility_checks(correct, evals, roles, in_forget_classes, policy, seed, models_out, baseline_fair)
        )

    # ------------------------------------------------------------ distances
    say("parameter and output distances")
    distances: dict = {}
    with timer.step("distances"):
        pairs = [("original", "unlearned")] + ([("unlearned", "retrained")] if retrained is not None else [])
        for a, b in pairs:
            key = f"{a}_to_{b}"
            pd = parameter_distance(evals[a].loaded.module, evals[b].loaded.module)
            distances[key] = {
                "parameters": pd.to_dict(),
                "kl_forget": _r(kl_divergence(evals[a].logits["forget"], evals[b].logits["forget"])),
                "kl_test": _r(kl_divergence(evals[a].logits["test"], evals[b].logits["test"])),
            }
            if pd.comparable:
                plots["per_layer"][key] = pd.per_layer
            else:
                notes.append(f"{key}: {pd.note}")
        od = distances["original_to_unlearned"]
        same_params = od["parameters"]["comparable"] and od["parameters"]["l2"] == 0.0
        same_outputs = all(
            torch.equal(evals["original"].logits[r], evals["unlearned"].logits[r]) for r in ROLES
        )
        unchanged = same_params or same_outputs
        checks.append(
            Check(
                "model_changed",
                FAIL if unchanged else PASS,
                od["parameters"]["l2"],
                0.0,
                "the unlearned model is identical to the original "
                "(same parameters or same outputs on every example)"
                if unchanged
                else "the unlearned model differs from the original",
                group="integrity",
                explanation=EXPLANATIONS["model_changed"],
            )
        )

    # ------------------------------------------------------------ robustness
    if robustness is not None:
        say("adversarial robustness")
        with timer.step("robustness"):
            for name, ev in evals.items():
                models_out[name]["robustness"] = robustness(ev.loaded.module)
            checks.append(_robustness_check(models_out, policy))

    # ------------------------------------------------------------ histograms for the report
    for name, ev in evals.items():
        plots["histograms"][name] = _histogram({r: ev.signals[r].logit_confidence for r in ROLES})

    verdict = decide_verdict(checks)
    data_info = {
        "name": roles.name,
        "num_classes": roles.num_classes,
        "input_shape": list(roles.input_shape),
        "n_forget": len(roles.forget),
        "n_retain": len(roles.retain),
        "n_test": len(roles.test),
        "n_nonmembers": int(len(nm_index)),
        "class_wise": roles.class_wise,
        "forget_classes": list(roles.forget_classes),
        "provenance": roles.provenance,
    }
    provenance = {
        **environment(device),
        "seed": seed,
        "models": {name: {"path": ev.loaded.path, "sha256": ev.loaded.sha256} for name, ev in evals.items()},
        **(extra_provenance or {}),
    }
    return AuditResult(
        verdict=verdict,
        checks=tuple(checks),
        models=models_out,
        distances=distances,
        plots=plots,
        timings=timer.seconds,
        policy=policy.to_dict(),
        data=data_info,
        provenance=provenance,
        notes=tuple(notes),
    )


def _population_check(
    pops: dict[str, PopulationResult],
    attack: str,
    margin: float,
    n_boot: int,
    level: float,
    seed: int,
    powered: list[str],
    two_sided_allowed: bool,
    baseline_fair: bool = True,
) -> Check:
    orig = pops["original"].all_results()[attack]
    unl = pops["unlearned"].all_results()[attack]
    if "retrained" in pops:
        ret = pops["retrained"].all_results()[attack]
        base_desc = "the retrained model"
        excess, ci = auc_difference(
            unl.member_scores,
            unl.nonmember_scores,
            ret.member_scores,
            ret.nonmember_scores,
            n_bootstrap=n_boot,
            level=level,
            seed=seed,
        )
        p_excess, p_ci = auc_difference(
            orig.member_scores,
            orig.nonmember_scores,
            ret.member_scores,
            ret.nonmember_scores,
            n_bootstrap=n_boot,
            level=level,
            seed=seed,
        )
        two_sided = two_sided_allowed
    else:
        base_desc = "unseen data (AUC 0.5)"
        excess, ci = unl.auc - 0.5, None if unl.auc_ci is None else (unl.auc_ci[0] - 0.5, unl.auc_ci[1] - 0.5)
        p_excess = orig.auc - 0.5
        p_ci = None if orig.auc_ci is None else (orig.auc_ci[0] - 0.5, orig.auc_ci[1] - 0.5)
        # Without a retrained model a low AUC may be honest (e.g. mislabeled forget data): one-sided.
        two_sided = False
    power = p_ci is not None and p_ci[0] > 0
    if power and baseline_fair:
        powered.append("mia_population")
    power_detail = (
        f"attack {attack} reaches AUC {orig.auc:.3f} on the original model "
        f"(excess {p_excess:+.3f} over {base_desc})"
    )
    gain, gain_ci = auc_difference(
        orig.member_scores,
        orig.nonmember_scores,
        unl.member_scores,
        unl.nonmember_scores,
        n_bootstrap=n_boot,
        level=level,
        seed=seed,
    )
    status, reason = judge_excess(
        excess,
        ci,
        margin=margin,
        two_sided=two_sided,
        power=power,
        power_detail=power_detail,
        gain=gain,
        gain_ci=gain_ci,
    )
    return Check(
        "mia_population",
        status,
        _r(excess),
        _r(margin),
        f"{attack}: unlearned AUC {unl.auc:.3f} vs {base_desc}; {reason}"
        + ("" if baseline_fair else " (advisory: the forget set is not known to be a random sample)"),
        ci=_ci(ci),
        group="privacy",
        gating=baseline_fair and (power or status == FAIL),
        explanation=EXPLANATIONS["mia_population"],
    )


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


@dataclass
class _MiaRun:
    """What the per-example membership tests of one audit share, and where they record results."""

    evals: dict[str, _ModelEval]
    sets: dict
    nm_index: np.ndarray
    margin: float
    n_boot: int
    level: float
    seed: int
    device: torch.device
    batch_size: int
    powered: list[str]
    plots: dict
    models_out: dict
    notes: list[str]

    def score(self, attack: str, member: np.ndarray, nonmember: np.ndarray, notes=()) -> AttackResult:
        return evaluate_attack(
            attack, member, nonmember, n_bootstrap=self.n_boot, level=self.level, seed=self.seed, notes=notes
        )

    def record(self, model: str, key: str, result: AttackResult, **extra: object) -> None:
        self.models_out[model].setdefault("mia", {})[key] = {**result.to_dict(), **extra}
        self.plots["roc"].setdefault(key, {})[model] = _roc(result)

    def judge(
        self,
        name: str,
        results: dict[str, AttackResult],
        *,
        two_sided: bool,
        power_detail: str,
        describe: str,
        advisory: str | None = None,
    ) -> Check:
        """A test whose never-trained baseline is AUC 0.5 (paired, U-LiRA, label-only).

        ``advisory``: why the test cannot gate here; it then neither gates nor counts as power.
        """
        orig, unl = results["original"], results["unlearned"]
        power = orig.auc_ci is not None and orig.auc_ci[0] > 0.5
        if power and advisory is None:
            self.powered.append(name)
        ci = None if unl.auc_ci is None else (unl.auc_ci[0] - 0.5, unl.auc_ci[1] - 0.5)
        gain, gain_ci = auc_difference(
            orig.member_scores,
            orig.nonmember_scores,
            unl.member_scores,
            unl.nonmember_scores,
            n_bootstrap=self.n_boot,
            level=self.level,
            seed=self.seed,
        )
        status, reason = judge_excess(
            unl.auc - 0.5,
            ci,
            margin=self.margin,
            two_sided=two_sided,
            power=power,
            power_detail=power_detail.format(auc=orig.auc),
            gain=gain,
            gain_ci=gain_ci,
        )
        return Check(
            name,
            status,
            _r(unl.auc - 0.5),
            _r(self.margin),
            f"{describe}: AUC {unl.auc:.3f}; {reason}" + (f" (advisory: {advisory})" if advisory else ""),
            ci=_ci(ci),
            group="privacy",
            gating=advisory is None and (power or status == FAIL),
            explanation=EXPLANATIONS[name],
        )


def _paired_check(run: _MiaRun, two_sided: bool) -> Check:
    from attacks.paired import paired_test

    ret = run.evals["retrained"].signals
    ret_test = ret["test"].logit_confidence[run.nm_index]
    results = {}
    for name in ("original", "unlearned"):
        sig = run.evals[name].signals
        pt = paired_test(
            sig["forget"].logit_confidence,
            ret["forget"].logit_confidence,
            sig["test"].logit_confidence[run.nm_index],
            ret_test,
        )
        f_res, t_res = calibration_residuals(
            pt.forget_diffs, ret["forget"].logit_confidence, pt.test_diffs, ret_test
        )
        results[name] = run.score(
            "paired/logit_confidence",
            f_res,
            t_res,
            notes=("unlearned-minus-retrained logit confidence, calibration-adjusted on test examples",),
        )
        run.record(
            name, "paired", results[name], p_value=_r(pt.p_value, 12), median_shift=_r(pt.median_shift)
        )
    return run.judge(
        "mia_paired",
        results,
        two_sided=two_sided,
        power_detail="the original model scores AUC {auc:.3f} on the same test",
        describe="unlearned-minus-retrained confidence, forget vs test",
    )


def _reference_check(
    run: _MiaRun,
    reference_models: list[torch.nn.Module],
    reference_note: str,
    two_sided: bool | None,
    accuracy_margin: float,
    signal_cache=None,
) -> Check:
    """U-LiRA; ``two_sided=None`` (no retrained model) lets the references decide it."""
    from attacks.reference import ulira_scores

    def logits_of(model, x):
        return compute_logits(model, x, batch_size=run.batch_size, device=run.device)

    ref_scores: dict[str, list[np.ndarray]] = {"forget": [], "test": []}
    ref_correct: dict[str, list[np.ndarray]] = {"forget": [], "test": []}
    for ref in reference_models:
        for role in ("forget", "test"):
            s = run.sets[role]
            if signal_cache is not None:  # reference logits are reused across audits of the same data
                logits = signal_cache.get_or_compute(ref, s.x, s.y, logits_of, key=f"logits:{role}")
            else:
                logits = logits_of(ref, s.x)
            sig = compute_signals(logits, s.y)
            ref_scores[role].append(sig.logit_confidence)
            ref_correct[role].append(sig.predictions == sig.labels)
    ref_f = np.stack(ref_scores["forget"], axis=1)
    ref_t = np.stack(ref_scores["test"], axis=1)[run.nm_index]
    if two_sided is None:
        # No retrained model: the references tell whether the forget labels are atypical.
        gap, ci = proportion_difference_ci(
            np.concatenate(ref_correct["forget"]),
            np.concatenate([c[run.nm_index] for c in ref_correct["test"]]),
        )
        two_sided = not ci[1] < -accuracy_margin
        if not two_sided:
            run.notes.append(
                f"reference models get the forget set {-gap:.3f} less often right than test data "
                "(mislabeled or poisoned forget data?): the U-LiRA test judges only whether the forget "
                "set is still recognised"
            )
    results = {}
    for name in [n for n in ("original", "unlearned", "retrained") if n in run.evals]:
        sig = run.evals[name].signals
        f_scores, t_scores = ulira_scores(
            sig["forget"].logit_confidence, ref_f, sig["test"].logit_confidence[run.nm_index], ref_t
        )
        f_res, t_res = calibration_residuals(f_scores, ref_f.mean(axis=1), t_scores, ref_t.mean(axis=1))
        results[name] = run.score(
            "reference/ulira",
            f_res,
            t_res,
            notes=("offline LiRA score per example, calibration-adjusted on test examples",),
        )
        run.record(name, "reference", results[name], n_reference_models=len(reference_models))
    note = f" ({reference_note})" if reference_note else ""
    return run.judge(
        "mia_reference",
        results,
        two_sided=two_sided,
        power_detail="the original model scores AUC {auc:.3f} against the same references",
        describe=f"U-LiRA over {len(reference_models)} reference models{note}",
    )


def _label_only_check(
    run: _MiaRun, split, method: str, samples: int, roles: Roles, baseline_fair: bool
) -> Check:
    """ART's label-only attack (for models that expose only labels), judged like the others.

    Calibrated on retain (members) vs test half A, scored on forget vs test half B; at most
    ``samples`` examples per set, since the decision-boundary attack queries the model a lot.
    """
    from attacks.label_only import label_only_attack

    rng = np.random.default_rng(run.seed)

    def pick(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, size=min(n, samples), replace=False))

    idx_a, idx_b = run.nm_index[split[0]], run.nm_index[split[1]]
    r_idx, a_idx, f_idx = (
        pick(len(run.sets["retain"])),
        idx_a[pick(len(idx_a))],
        pick(len(run.sets["forget"])),
    )
    b_idx = idx_b[pick(len(idx_b))]
    retain, forget, test = run.sets["retain"], run.sets["forget"], run.sets["test"]
    results = {}
    for name in ("original", "unlearned"):
        member, nonmember = label_only_attack(
            run.evals[name].loaded.module,
            retain.x[r_idx],
            retain.y[r_idx],
            test.x[a_idx],
            test.y[a_idx],
            forget.x[f_idx],
            forget.y[f_idx],
            test.x[b_idx],
            test.y[b_idx],
            method=method,
            num_classes=roles.num_classes,
            input_shape=roles.input_shape,
            device=run.device,
            seed=run.seed,
        )
        results[name] = run.score(f"label_only/{method}", member, nonmember)
        run.record(name, "label_only", results[name])
    return run.judge(
        "mia_label_only",
        results,
        two_sided=False,
        power_detail="the original model scores AUC {auc:.3f}",
        describe=f"ART label-only {method} attack, forget vs unseen test",
        advisory=None if baseline_fair else "forget set not known to be random",
    )


def _interval_status(value: float, ci, threshold: float, *, what: str) -> tuple[str, str]:
    """Pass when the whole interval is within the threshold, fail when it is wholly beyond it."""
    if ci is None:
        return INCONCLUSIVE, f"{what} {value:+.3f}: no interval (set too small)"
    lo, hi = ci
    if lo > threshold:
        return FAIL, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] exceeds {threshold:.3f}"
    if hi <= threshold:
        return PASS, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] within {threshold:.3f}"
    return INCONCLUSIVE, f"{what} {value:+.3f}, interval [{lo:+.3f}, {hi:+.3f}] crosses {threshold:.3f}"


def _utility_checks(
    correct,
    evals,
    roles: Roles,
    in_forget_classes,
    policy: Policy,
    seed,
    models_out,
    baseline_fair: bool = True,
) -> list[Check]:
    level = policy.confidence_level
    checks: list[Check] = []
    kept = ~in_forget_classes
    for role, limit, name in (
        ("retain", policy.max_retain_accuracy_drop, "retain_accuracy_drop"),
        ("test", policy.max_test_accuracy_drop, "test_accuracy_drop"),
    ):
        a = correct["original"][role].astype(float)
        b = correct["unlearned"][role].astype(float)
        if role == "test" and roles.class_wise:
            a, b = a[kept], b[kept]  # the forgotten classes cannot be predicted any more by design
        if a.size == 0:
            checks.append(Check(name, INCONCLUSIVE, None, limit, f"no {role} examples", group="utility"))
            continue
        drop, ci = paired_proportion_difference_ci(a, b, level=level)
        status, reason = _interval_status(drop, ci, limit, what=f"{role} accuracy drop")
        scope = " (retained classes only)" if role == "test" and roles.class_wise else ""
        checks.append(
            Check(
                name,
                status,
                _r(drop),
                limit,
                f"original {a.mean():.3f} -> unlearned {b.mean():.3f}{scope}: {reason}",
                ci=_ci(ci),
                group="utility",
                explanation=EXPLANATIONS[name],
            )
        )
    if roles.class_wise:
        fc = list(roles.forget_classes)
        preds_f = evals["unlearned"].signals["forget"].predictions
        preds_t = evals["unlearned"].signals["test"].predictions[in_forget_classes]
        hits = np.concatenate([np.isin(preds_f, fc), np.isin(preds_t, fc)]).astype(float)
        rate = float(hits.mean())
        ci = wilson_interval(int(hits.sum()), hits.size, level=level)
        status, reason = _interval_status(
            rate, ci, policy.max_forget_class_rate, what="share predicted as a forgotten class"
        )
        checks.append(
            Check(
                "forget_class_predictions",
                status,
                _r(rate),
                policy.max_forget_class_rate,
                f"classes {fc}: {reason} ({len(preds_f)} forget + {len(preds_t)} test examples)",
                ci=_ci(ci),
                group="privacy",
                explanation=EXPLANATIONS["forget_class_predictions"],
            )
        )
        return checks
    unl_forget = correct["unlearned"]["forget"].astype(float)
    margin = policy.forget_accuracy_margin
    if "retrained" in correct:
        ret_forget = correct["retrained"]["forget"].astype(float)
        gap, ci = paired_proportion_difference_ci(unl_forget, ret_forget, level=level)
        base = f"retrained model {ret_forget.mean():.3f}"
        abs_ci = ci
        # Two-sided: both remembering and over-forgetting depart from what retraining gives.
        if ci is None:
            status, reason = INCONCLUSIVE, "no interval"
        elif ci[0] > margin or ci[1] < -margin:
            status, reason = (
                FAIL,
                f"gap {gap:+.3f}, interval [{ci[0]:+.3f}, {ci[1]:+.3f}] outside +/-{margin:.3f}",
            )
        elif ci[0] >= -margin and ci[1] <= margin:
            status, reason = (
                PASS,
                f"gap {gap:+.3f}, interval [{ci[0]:+.3f}, {ci[1]:+.3f}] within +/-{margin:.3f}",
            )
        else:
            status, reason = (
                INCONCLUSIVE,
                f"gap {gap:+.3f}, interval [{ci[0]:+.3f}, {ci[1]:+.3f}] crosses +/-{margin:.3f}",
            )
    else:
        unl_test = correct["unlearned"]["test"].astype(float)
        gap, abs_ci = proportion_difference_ci(unl_forget, unl_test, level=level)
        base = f"its own test accuracy {unl_test.mean():.3f}"
        # One-sided: forget accuracy below the unseen level can be honest (mislabeled forget data).
        status, reason = _interval_status(gap, abs_ci, margin, what="excess")
    checks.append(
        Check(
            "forget_accuracy",
            status,
            _r(unl_forget.mean()),
            margin,
            f"unlearned forget accuracy {unl_forget.mean():.3f} vs {base}: {reason}"
            + ("" if baseline_fair else " (advisory: the forget set is not known to be a random sample)"),
            ci=_ci(abs_ci),
            group="privacy",
            gating=baseline_fair,
            explanation=EXPLANATIONS["forget_accuracy"],
        )
    )
    return checks


def _robustness_check(models_out: dict, policy: Policy) -> Check:
    orig = models_out["original"]["robustness"]
    unl = models_out["unlearned"]["robustness"]
    drop = orig["robust_accuracy"] - unl["robust_accuracy"]
    limit = policy.max_robust_accuracy_drop
    ci = None
    if orig.get("correct") is not None and unl.get("correct") is not None:
        a = np.asarray(orig["correct"], dtype=float)
        b = np.asarray(unl["correct"], dtype=float)
        drop, ci = paired_proportion_difference_ci(a, b, level=policy.confidence_level)
    status, reason = _interval_status(drop, ci, limit, what="robust accuracy drop")
    return Check(
        "robust_accuracy_drop",
        status,
        _r(drop),
        limit,
        f"{orig['attack']}: R-ACC original {orig['robust_accuracy']:.3f} -> "
        f"unlearned {unl['robust_accuracy']:.3f}; {reason}",
        ci=_ci(ci),
        group="robustness",
        explanation=EXPLANATIONS["robust_accuracy_drop"],
    )


def load_reference_dir(
    directory: str | Path, like: LoadedModel, device: torch.device
) -> list[torch.nn.Module]:
    """Every model file in ``directory`` (trained WITHOUT the forget set), loaded like ``like``."""
    from unlearn_audit.models import load_model

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"reference directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ModelError(f"reference directory {directory} holds no model files")
    out = []
    for path in files:
        ref = load_model(
            path,
            arch=like.arch,
            num_classes=like.num_classes,
            input_shape=like.input_shape,
            arch_kwargs=like.arch_kwargs,
            device=device,
        )
        out.append(ref.module)
    return out
