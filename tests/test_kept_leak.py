"""The "kept most of the leak" fail rule of the membership judge (``checks.base.judge_excess``).

A model that forgot nothing leaks what the original leaks. When that leak is small (an AUC
excess of ~0.07 on 400 forget examples, as a CNN on MNIST leaks), its interval straddles the
margin and the plain rule can only say inconclusive. The judge also fails a model whose own
excess is above 0 while the gain over the original is surely below half the original's excess.

Checked here by hand-made cases and by a simulation with scores drawn like a membership signal:
the original's member scores are shifted by ``delta`` (AUC ~0.57); "forgot nothing" adds small
independent noise to the original's scores; "honest" redraws the member scores without shift.
"""

from __future__ import annotations

import numpy as np
import pytest

from attacks.stats import auc_difference, evaluate_attack
from unlearn_audit.checks.base import judge_excess
from unlearn_audit.results import FAIL, INCONCLUSIVE, PASS

MARGIN = 0.05


def _judge(lo, hi, gain_ci, original_excess, power=True):
    excess = (lo + hi) / 2
    gain = None if gain_ci is None else sum(gain_ci) / 2
    return judge_excess(
        excess,
        (lo, hi),
        margin=MARGIN,
        two_sided=False,
        power=power,
        power_detail="",
        gain=gain,
        gain_ci=gain_ci,
        original_excess=original_excess,
    )[0]


def test_hand_made_cases():
    assert _judge(0.038, 0.107, (-0.01, 0.012), 0.075) == FAIL  # kept it all
    assert _judge(0.038, 0.107, (-0.01, 0.040), 0.075) == INCONCLUSIVE  # may have removed half
    assert _judge(-0.002, 0.060, (-0.01, 0.012), 0.075) == INCONCLUSIVE  # not surely recognised
    assert _judge(0.038, 0.107, (-0.01, 0.012), 0.075, power=False) == INCONCLUSIVE
    assert _judge(-0.03, 0.03, (0.04, 0.11), 0.075) == PASS  # an honest retrain
    assert _judge(0.038, 0.107, (-0.01, 0.012), None) == INCONCLUSIVE  # rule needs the original


def _simulate(kind: str, seed: int, n_forget: int = 400, n_test: int = 500, delta: float = 0.25) -> str:
    rng = np.random.default_rng(seed)
    test_o = rng.normal(size=n_test)
    forget_o = rng.normal(size=n_forget) + delta
    if kind == "nothing":
        forget_u = forget_o + 0.05 * rng.normal(size=n_forget)
        test_u = test_o + 0.05 * rng.normal(size=n_test)
    else:
        forget_u = rng.normal(size=n_forget)
        test_u = test_o + 0.3 * rng.normal(size=n_test)
    orig = evaluate_attack("o", forget_o, test_o, n_bootstrap=200, seed=seed)
    unl = evaluate_attack("u", forget_u, test_u, n_bootstrap=200, seed=seed)
    gain, gain_ci = auc_difference(forget_o, test_o, forget_u, test_u, n_bootstrap=200, seed=seed)
    lo, hi = unl.auc_ci[0] - 0.5, unl.auc_ci[1] - 0.5
    power = orig.auc_ci[0] > 0.5
    status, _ = judge_excess(
        unl.auc - 0.5,
        (lo, hi),
        margin=MARGIN,
        two_sided=False,
        power=power,
        power_detail="",
        gain=gain,
        gain_ci=gain_ci,
        original_excess=orig.auc - 0.5,
    )
    return status


@pytest.mark.parametrize(("kind", "bound"), [("nothing", None), ("honest", 0.04)])
def test_simulated_rates(kind, bound):
    """forgot nothing: failed in most runs (the plain rule fails almost none: leak < margin + width);
    honest: failed in at most 4% of runs (a nominal 2.5% plus slack for 100 runs)."""
    statuses = [_simulate(kind, seed) for seed in range(100)]
    fail_rate = statuses.count(FAIL) / len(statuses)
    if kind == "nothing":
        assert fail_rate > 0.6, fail_rate
    else:
        assert fail_rate <= bound, fail_rate
