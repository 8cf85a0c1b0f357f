"""Selection without bias (issue #12, item 6): a model that forgot nothing must not pass the gain test.

The population test gates on the strongest of five threshold attacks. Choosing that attack on
the very examples it is then judged on (the old rule) picks the attack whose ORIGINAL score is
luckiest on them, so the original-minus-unlearned AUC gain is biased upwards. The audit now
chooses on the retain set against test half A (:func:`choose_threshold_attack`), examples the
judgement never sees.

The simulation: per audit, five attacks score 400 members and 400 non-members for the
original and for an "unlearned" model that forgot nothing (the same leakage, AUC ~0.53,
excess 0.03 below the margin 0.05). Each attack's score is a per-example effect shared by
both models (membership shift included) plus model noise of the same size; the attacks are
independent. Choosing data are fresh examples of the same kind; the attack is chosen AND its
power established on them (as the audit does against unseen data). 300 audits with the judge
of the audit (``evaluate_attack``, ``auc_difference``, ``judge_excess``; 200 bootstrap
replicates), ~8 s. Measured (seed 0): new rule 1.7% of the 240 audits with power pass; the old
rule (choice and power on the judged examples) 3.9% of 230 in this simulation, above the
nominal 2.5% but not by enough to assert at this size (the issue measured 10-19% on real
models, where the attacks' model noise is larger), so only the new rule is asserted.

Slack: with p = 0.025 and n audits with power, the binomial standard deviation of the rate
is sqrt(p (1 - p) / n) (~0.010 at n = 240); the bound p + 3 sd keeps the test's own false
alarm below 0.2%.
"""

from __future__ import annotations

import math

import numpy as np

from attacks.stats import auc_difference, evaluate_attack, roc_auc
from unlearn_audit.audit import PASS, judge_excess

N_AUDITS, N, N_ATTACKS, SHIFT, MARGIN, NOMINAL = 300, 400, 5, 0.1, 0.05, 0.025


def _scores(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """(attack, example) scores of both models on n members then n non-members."""
    member = np.r_[np.ones(n), np.zeros(n)]
    shared = rng.normal(size=(N_ATTACKS, 2 * n)) * math.sqrt(0.5) + SHIFT * member
    return {
        m: shared + rng.normal(size=(N_ATTACKS, 2 * n)) * math.sqrt(0.5) for m in ("original", "unlearned")
    }


def _audit_passes(rng: np.random.Generator, chosen_on_judged_data: bool) -> tuple[bool, bool]:
    """(power, pass) of one simulated population test without a retrained model."""
    judged = _scores(rng, N)
    choice = judged if chosen_on_judged_data else _scores(rng, N)
    aucs = [roc_auc(s[:N], s[N:]) for s in choice["original"]]
    k = int(np.argmax(aucs))
    seed = int(rng.integers(1 << 30))
    chosen_on = evaluate_attack(
        "a", choice["original"][k, :N], choice["original"][k, N:], n_bootstrap=200, seed=seed
    )
    res = {
        m: evaluate_attack("a", s[k, :N], s[k, N:], n_bootstrap=200, seed=int(rng.integers(1 << 30)))
        for m, s in judged.items()
    }
    gain, gain_ci = auc_difference(
        res["original"].member_scores,
        res["original"].nonmember_scores,
        res["unlearned"].member_scores,
        res["unlearned"].nonmember_scores,
        n_bootstrap=200,
    )
    power = chosen_on.auc_ci[0] > 0.5
    ci = (res["unlearned"].auc_ci[0] - 0.5, res["unlearned"].auc_ci[1] - 0.5)
    status, _ = judge_excess(
        res["unlearned"].auc - 0.5,
        ci,
        margin=MARGIN,
        two_sided=False,
        power=power,
        power_detail="",
        gain=gain,
        gain_ci=gain_ci,
    )
    return power, status == PASS


def _false_pass_rate(chosen_on_judged_data: bool) -> tuple[float, int]:
    rng = np.random.default_rng(0)
    runs = [_audit_passes(rng, chosen_on_judged_data) for _ in range(N_AUDITS)]
    powered = [passed for power, passed in runs if power]
    return sum(powered) / max(len(powered), 1), len(powered)


def test_choosing_the_attack_apart_keeps_the_false_pass_rate_nominal() -> None:
    rate, n = _false_pass_rate(chosen_on_judged_data=False)
    assert n > N_AUDITS // 2  # most audits have power: the rate is measured on enough of them
    assert rate <= NOMINAL + 3 * math.sqrt(NOMINAL * (1 - NOMINAL) / n), (rate, n)
