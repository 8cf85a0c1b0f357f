"""Tests for attacks.stats: ROC, AUC, TPR at low FPR, bootstrap intervals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics

from attacks.stats import (
    AttackResult,
    _bootstrap_all,
    _percentile_ci,
    attacker_advantage,
    auc_difference,
    evaluate_attack,
    null_auc_se,
    roc_auc,
    roc_curve,
    tie_profile,
    tpr_at_fpr,
)
from unlearn_audit.errors import ConfigError, DataError


def _tied_scores(rng: np.random.Generator, n1: int, n0: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian scores rounded to one decimal, so many values tie within and across sets."""
    return (rng.normal(shift, 1.0, n1)).round(1), rng.normal(0.0, 1.0, n0).round(1)


def _labels(n1: int, n0: int) -> np.ndarray:
    return np.r_[np.ones(n1), np.zeros(n0)]


@pytest.mark.parametrize(("n1", "n0", "shift"), [(1, 1, 0.0), (7, 13, 0.5), (200, 350, 1.0), (500, 40, -0.7)])
def test_auc_and_roc_match_sklearn_with_ties(n1: int, n0: int, shift: float) -> None:
    rng = np.random.default_rng(n1 * 1000 + n0)
    member, nonmember = _tied_scores(rng, n1, n0, shift)
    y, s = _labels(n1, n0), np.r_[member, nonmember]
    if n1 > 1:
        assert roc_auc(member, nonmember) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, thr = roc_curve(member, nonmember)
    sk_fpr, sk_tpr, sk_thr = metrics.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert thr[0] == np.inf


def test_auc_ties_count_one_half() -> None:
    # member 1 vs non-members {0, 1, 2}: beats 1, ties 1, loses 1 -> (1 + 0.5) / 3.
    assert roc_auc([1.0], [0.0, 1.0, 2.0]) == pytest.approx(0.5)
    assert roc_auc([3.0, 3.0], [3.0]) == 0.5
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 1.0


def _brute_force_tpr_at_fpr(member: np.ndarray, nonmember: np.ndarray, target: float) -> float:
    best = 0.0
    for t in np.r_[np.inf, np.unique(np.r_[member, nonmember])]:
        fpr = np.mean(nonmember >= t)
        if fpr <= target + 1e-15:
            best = max(best, float(np.mean(member >= t)))
    return best


def _brute_force_advantage(member: np.ndarray, nonmember: np.ndarray) -> float:
    thresholds = np.r_[np.inf, np.unique(np.r_[member, nonmember])]
    return max(float(np.mean(member >= t) - np.mean(nonmember >= t)) for t in thresholds)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tpr_at_fpr_and_advantage_match_brute_force_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    member, nonmember = _tied_scores(rng, 300, 1200, 1.5)
    for target in (0.001, 0.0025, 0.01, 0.05, 0.3):
        assert tpr_at_fpr(member, nonmember, target) == pytest.approx(
            _brute_force_tpr_at_fpr(member, nonmember, target), abs=1e-12
        )
    assert attacker_advantage(member, nonmember) == pytest.approx(_brute_force_advantage(member, nonmember))


def test_tpr_at_fpr_is_none_when_too_few_nonmembers() -> None:
    member = np.linspace(1, 2, 50)
    assert tpr_at_fpr(member, np.linspace(0, 1, 99), 0.01) is None
    assert tpr_at_fpr(member, np.linspace(0, 1, 100), 0.01) == 1.0
    assert tpr_at_fpr(member, np.linspace(0, 1, 999), 0.001) is None
    with pytest.raises(ConfigError, match="fpr"):
        tpr_at_fpr(member, member, 0.0)


def test_small_set_gets_note_and_no_low_fpr_numbers() -> None:
    rng = np.random.default_rng(3)
    res = evaluate_attack("x", rng.normal(1, 1, 100), rng.normal(0, 1, 500), n_bootstrap=200)
    assert res.tpr_at_01pct_fpr is None and res.tpr_at_01pct_fpr_ci is None
    assert res.tpr_at_1pct_fpr is not None and res.tpr_at_1pct_fpr_ci is not None
    assert any("0.1%" in note and "1000" in note and "500" in note for note in res.notes)
    assert not any(note.startswith("TPR at 1% ") for note in res.notes)


def test_bootstrap_interval_coverage_on_gaussian_scores() -> None:
    # Members ~ N(d, 1), non-members ~ N(0, 1): true AUC = Phi(d / sqrt 2).
    d, n, repeats = 1.0, 60, 100
    truth = norm.cdf(d / math.sqrt(2.0))
    rng = np.random.default_rng(12345)
    covered = 0
    for rep in range(repeats):
        res = evaluate_attack("g", rng.normal(d, 1, n), rng.normal(0, 1, n), n_bootstrap=300, seed=rep)
        low, high = res.auc_ci
        assert low <= res.auc <= high
        covered += low <= truth <= high
    assert 88 <= covered <= 99, f"95% interval covered the true AUC in {covered}/{repeats} repeats"


def test_vectorised_bootstrap_agrees_with_slow_loop() -> None:
    # The histogram bootstrap must give the same sampling distribution as resampling the
    # raw scores and calling scikit-learn each time.
    # Scores on 1.2 * N(., 1) rounded to integers: about a fifth of the pairs tie, so the
    # half-credit for ties matters.
    rng = np.random.default_rng(7)
    member, nonmember = (1.2 * rng.normal(0.8, 1.0, 150)).round(), (1.2 * rng.normal(0.0, 1.0, 400)).round()
    res = evaluate_attack("x", member, nonmember, n_bootstrap=2000, seed=1)
    slow_rng = np.random.default_rng(99)
    aucs, advs, tprs = [], [], []
    y = _labels(150, 400)
    for _ in range(1000):
        m = member[slow_rng.integers(0, 150, 150)]
        nm = nonmember[slow_rng.integers(0, 400, 400)]
        aucs.append(metrics.roc_auc_score(y, np.r_[m, nm]))
        advs.append(_brute_force_advantage(m, nm))
        tprs.append(_brute_force_tpr_at_fpr(m, nm, 0.01))
    # The engine's own AUC percentiles (before the null-SE floor widens the reported interval).
    boot_auc = _bootstrap_all(member, nonmember, n_bootstrap=2000, seed=1)["auc"]
    for ci, samples, tol in (
        (np.quantile(boot_auc, [0.025, 0.975]), aucs, 0.01),
        (res.advantage_ci, advs, 0.02),
        (res.tpr_at_1pct_fpr_ci, tprs, 0.03),
    ):
        slow = np.quantile(samples, [0.025, 0.975])
        np.testing.assert_allclose(ci, slow, atol=tol)

    # TPR at 1% FPR with untied scores and 200 non-members (at most 2 false positives).
    member, nonmember = rng.normal(2.0, 1.0, 150), rng.normal(0.0, 1.0, 200)
    res = evaluate_attack("x", member, nonmember, n_bootstrap=2000, seed=1)
    tprs = [
        _brute_force_tpr_at_fpr(
            member[slow_rng.integers(0, 150, 150)], nonmember[slow_rng.integers(0, 200, 200)], 0.01
        )
        for _ in range(1000)
    ]
    np.testing.assert_allclose(res.tpr_at_1pct_fpr_ci, np.quantile(tprs, [0.025, 0.975]), atol=0.03)


def test_evaluate_attack_point_estimates_and_validation() -> None:
    rng = np.random.default_rng(5)
    member, nonmember = _tied_scores(rng, 80, 1500, 1.0)
    res = evaluate_attack("thr", member, nonmember, n_bootstrap=100, seed=3)
    y, s = _labels(80, 1500), np.r_[member, nonmember]
    assert res.auc == pytest.approx(metrics.roc_auc_score(y, s))
    assert res.advantage == pytest.approx(_brute_force_advantage(member, nonmember))
    assert res.tpr_at_01pct_fpr == pytest.approx(_brute_force_tpr_at_fpr(member, nonmember, 0.001))
    assert (res.n_members, res.n_nonmembers) == (80, 1500)
    assert res.member_scores == member.tolist()
    # Same seed, same intervals.
    assert evaluate_attack("thr", member, nonmember, n_bootstrap=100, seed=3).auc_ci == res.auc_ci

    for bad in ([], [0.1, np.nan], [np.inf, 1.0], [[1.0, 2.0]]):
        with pytest.raises(DataError):
            evaluate_attack("x", bad, [0.0, 1.0])
        with pytest.raises(DataError):
            evaluate_attack("x", [0.0, 1.0], bad)
    with pytest.raises(ConfigError, match="level"):
        evaluate_attack("x", [1.0], [0.0], level=95)
    with pytest.raises(ConfigError, match="n_bootstrap"):
        evaluate_attack("x", [1.0], [0.0], n_bootstrap=-1)
    no_ci = evaluate_attack("x", member, nonmember, n_bootstrap=0)
    assert no_ci.auc_ci is None and any("n_bootstrap=0" in note for note in no_ci.notes)


def test_plot_roc_is_downsampled_but_keeps_low_fpr() -> None:
    rng = np.random.default_rng(11)
    member, nonmember = rng.normal(1, 1, 5000), rng.normal(0, 1, 20000)
    res = evaluate_attack("x", member, nonmember, n_bootstrap=0)
    fpr, tpr, _ = roc_curve(member, nonmember)
    assert len(res.roc_fpr) <= 310 and fpr.size > 10_000
    assert (res.roc_fpr[0], res.roc_tpr[0], res.roc_fpr[-1], res.roc_tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    pairs = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert all(p in pairs for p in zip(res.roc_fpr, res.roc_tpr, strict=True))
    kept_fpr, kept_tpr = np.array(res.roc_fpr), np.array(res.roc_tpr)
    assert np.sum(kept_fpr <= 0.01) >= 50  # dense where TPR at low FPR is read off
    for target in (0.001, 0.01):
        assert kept_tpr[kept_fpr <= target].max() == pytest.approx(tpr_at_fpr(member, nonmember, target))


def test_to_dict_is_json_safe() -> None:
    rng = np.random.default_rng(2)
    res = evaluate_attack("x", rng.normal(1, 1, 30), rng.normal(0, 1, 40), n_bootstrap=50)
    data = res.to_dict(include_scores=False)
    text = json.dumps(data, allow_nan=False)
    assert "member_scores" not in data and data["tpr_at_1pct_fpr"] is None
    assert json.loads(text)["auc_ci"] == list(res.auc_ci)
    full = res.to_dict(include_scores=True)
    assert full["nonmember_scores"] == res.nonmember_scores
    nan_result = AttackResult(**{**res.__dict__, "auc": float("nan")})
    assert nan_result.to_dict()["auc"] is None


def _correlated_pair(rng: np.random.Generator, n1: int, n0: int, d_a: float, d_b: float):
    """Scores of two models on the same examples: a shared per-example part plus small noise."""
    latent_m, latent_n = rng.normal(0, 1, n1), rng.normal(0, 1, n0)
    a = (d_a + latent_m + 0.3 * rng.normal(0, 1, n1), latent_n + 0.3 * rng.normal(0, 1, n0))
    b = (d_b + latent_m + 0.3 * rng.normal(0, 1, n1), latent_n + 0.3 * rng.normal(0, 1, n0))
    return a, b


def test_paired_auc_difference() -> None:
    rng = np.random.default_rng(21)
    # Same distribution: the interval covers 0 in about 95% of repeats, and the point
    # estimate is the plain difference of AUCs.
    covered = 0
    for rep in range(50):
        (ma, na), (mb, nb) = _correlated_pair(rng, 300, 300, 0.5, 0.5)
        diff, (low, high) = auc_difference(ma, na, mb, nb, n_bootstrap=300, seed=rep)
        assert diff == pytest.approx(roc_auc(ma, na) - roc_auc(mb, nb))
        covered += low <= 0.0 <= high
    assert 43 <= covered <= 50, f"paired 95% interval covered 0 in {covered}/50 repeats"
    # The pairing matters: the paired interval is much narrower than the one that treats
    # the two AUCs as independent.
    ra = evaluate_attack("a", ma, na, n_bootstrap=500, seed=1)
    rb = evaluate_attack("b", mb, nb, n_bootstrap=500, seed=2)
    unpaired = math.hypot(ra.auc_ci[1] - ra.auc_ci[0], rb.auc_ci[1] - rb.auc_ci[0])
    assert high - low < 0.6 * unpaired

    # Different leakage (d = 0.5 vs 0.2): the interval excludes 0, on the right side.
    for rep in range(10):
        (ma, na), (mb, nb) = _correlated_pair(rng, 300, 300, 0.5, 0.2)
        diff, (low, high) = auc_difference(ma, na, mb, nb, n_bootstrap=300, seed=rep)
        assert 0.0 < low <= diff <= high

    with pytest.raises(DataError, match="same examples"):
        auc_difference(ma, na, mb[:-1], nb, n_bootstrap=10)


# ----------------------------------------------------------------------------- ties cannot narrow an interval


def test_null_auc_se_by_hand() -> None:
    # (n1 + n0 + 1) / (12 n1 n0): 3 members, 2 non-members -> 6 / 72 = 1/12.
    assert null_auc_se(3, 2) == pytest.approx(math.sqrt(1.0 / 12.0), abs=1e-15)
    # 60 and 60: 121 / 43200, i.e. 11 / sqrt(43200) = 0.0529238
    assert null_auc_se(60, 60) == pytest.approx(0.0529238, abs=1e-7)


def test_all_tied_scores_get_the_null_floor_and_are_degenerate() -> None:
    # A one-hot copy of a model's predictions: every forget and test example gets the same
    # score, the bootstrap replicates are all exactly 0.5, and the percentile interval alone
    # would be [0.5, 0.5] (issue #12). With n1 = n0 = 60 at 95%: 1.959964 * 0.0529238 = 0.103729.
    res = evaluate_attack("one-hot", np.full(60, 7.8), np.full(60, 7.8), n_bootstrap=200, seed=0)
    assert res.auc == 0.5
    low, high = res.auc_ci
    assert low == pytest.approx(0.5 - 0.1037288, abs=1e-6) and high == pytest.approx(
        0.5 + 0.1037288, abs=1e-6
    )
    assert (res.n_distinct, res.tied_share, res.degenerate) == (1, 1.0, True)
    assert any(note.startswith("degenerate signal") for note in res.notes)
    data = res.to_dict()
    assert data["degenerate"] is True and data["n_distinct"] == 1


def test_a_handful_of_levels_is_degenerate_but_spread_out_scores_are_not() -> None:
    rng = np.random.default_rng(4)
    quantised = evaluate_attack(
        "q", rng.integers(0, 4, 300) * 1.0, rng.integers(0, 4, 300) * 1.0, n_bootstrap=0
    )
    assert quantised.degenerate and quantised.n_distinct == 4
    # Many distinct values but most of them shared (3 copies of each): degenerate too.
    copies = np.repeat(rng.normal(0, 1, 100), 3)
    assert evaluate_attack("c", copies[:150], copies[150:], n_bootstrap=0).degenerate
    honest = evaluate_attack("h", rng.normal(0.3, 1, 300), rng.normal(0, 1, 300), n_bootstrap=0)
    assert (honest.n_distinct, honest.tied_share, honest.degenerate) == (600, 0.0, False)
    assert tie_profile(np.array([1.0, 1.0, 2.0, 3.0])) == (3, 0.5)


def test_floor_keeps_wide_bootstrap_intervals_unchanged_and_bounds_to_unit_interval() -> None:
    rng = np.random.default_rng(8)
    # Members far on both sides of the non-members: AUC near 0.5 but far more variable than
    # under the null, so the bootstrap interval is wider than the floor and is kept as is.
    member = np.r_[rng.normal(-3, 0.1, 40), rng.normal(3, 0.1, 40)]
    nonmember = rng.normal(0, 1, 80)
    res = evaluate_attack("wide", member, nonmember, n_bootstrap=500, seed=2)
    raw = _percentile_ci(_bootstrap_all(member, nonmember, n_bootstrap=500, seed=2)["auc"], 0.95)
    floor = 1.959964 * null_auc_se(80, 80)
    assert raw[0] < res.auc - floor and raw[1] > res.auc + floor
    assert res.auc_ci == raw
    # A perfect attack: the floor applies below the estimate, the interval stops at 1.
    perfect = evaluate_attack("p", rng.normal(9, 1, 50), rng.normal(0, 1, 50), n_bootstrap=200)
    assert perfect.auc == 1.0 and perfect.auc_ci[1] == 1.0
    assert perfect.auc_ci[0] == pytest.approx(1.0 - 1.959964 * null_auc_se(50, 50), abs=1e-6)


def test_paired_difference_of_tied_models_gets_the_floor() -> None:
    rng = np.random.default_rng(31)
    n = 100
    tied = np.zeros(n)
    se = null_auc_se(n, n)
    # Both models all ties: the floor is z * sqrt(se^2 + se^2).
    diff, (low, high) = auc_difference(tied, tied, tied + 1, tied + 1, n_bootstrap=300, seed=0)
    assert diff == 0.0
    assert low == pytest.approx(-1.959964 * math.sqrt(2) * se, abs=1e-5) and high == pytest.approx(-low)
    # One honest model against a tied one: at least the honest model's null spread.
    honest_m, honest_n = rng.normal(0, 1, n), rng.normal(0, 1, n)
    diff, (low, high) = auc_difference(honest_m, honest_n, tied, tied, n_bootstrap=1000, seed=1)
    assert high - diff >= 0.9 * 1.959964 * se and diff - low >= 0.9 * 1.959964 * se
