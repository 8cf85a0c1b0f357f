"""Tests for attacks.paired: the single-reference paired test, on synthetic data and real tiny models."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.paired import PairedResult, paired_scores, paired_test
from attacks.signals import compute_signals
from unlearn_audit.errors import DataError


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core machine: intra-op threads only add synchronisation cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_paired_scores_are_elementwise_differences():
    f, t = paired_scores([3.0, 1.0], np.array([1.0, 1.5]), [0.0], [2.0])
    np.testing.assert_array_equal(f, [2.0, -0.5])
    np.testing.assert_array_equal(t, [-2.0])
    assert f.dtype == np.float64


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    # Integer-valued signals create many ties among the differences.
    uf, rf = rng.integers(0, 6, 80).astype(float), rng.integers(0, 4, 80).astype(float)
    ut, rt = rng.integers(0, 5, 120).astype(float), rng.integers(0, 5, 120).astype(float)
    res = paired_test(uf, rf, ut, rt)
    expected = roc_auc_score(np.r_[np.ones(80), np.zeros(120)], np.r_[uf - rf, ut - rt])
    assert res.auc == pytest.approx(expected, abs=1e-12)
    assert res.u_statistic == pytest.approx(expected * 80 * 120)
    assert res.median_shift == pytest.approx(np.median(uf - rf) - np.median(ut - rt))
    assert (res.n_forget, res.n_test) == (80, 120)


def test_p_value_is_the_exact_one_sided_permutation_p_value():
    forget = np.array([2.1, 3.5, 0.7, 4.2])
    test = np.array([0.3, 1.9, -0.4, 1.2, 0.9])
    res = paired_test(forget, np.zeros(4), test, np.zeros(5))
    pooled = np.r_[forget, test]

    def u_stat(first: tuple[int, ...]) -> float:
        rest = [j for j in range(len(pooled)) if j not in first]
        return sum(
            float(pooled[i] > pooled[j]) + 0.5 * float(pooled[i] == pooled[j]) for i in first for j in rest
        )

    splits = list(itertools.combinations(range(9), 4))
    observed = u_stat((0, 1, 2, 3))
    count = sum(u_stat(s) >= observed for s in splits)
    assert res.p_value == pytest.approx(count / len(splits), rel=1e-9)
    assert res.auc == pytest.approx(observed / 20)


def test_result_is_frozen_and_arrays_read_only():
    res = paired_test([1.0, 2.0], [0.0, 0.0], [0.5], [0.0])
    assert isinstance(res, PairedResult)
    with pytest.raises(AttributeError):
        res.auc = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        res.forget_diffs[0] = 9.0


def test_input_validation():
    with pytest.raises(DataError, match="ret_forget"):
        paired_test([1.0, 2.0], [0.0], [0.5], [0.0])
    with pytest.raises(DataError, match="finite"):
        paired_test([np.inf], [0.0], [0.5], [0.0])
    with pytest.raises(DataError, match="n_test=0"):
        paired_test([1.0], [0.0], [], [])


# ----------------------------------------------------------------------------- real tiny models


def _fit_mlp(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(600):  # full batch on 100-200 examples: under a second per model
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_models():
    x_all, y_all = load_digits(return_X_y=True)
    x_all = torch.tensor(x_all / 16.0, dtype=torch.float32)
    y_all = torch.tensor(y_all)
    perm = np.random.default_rng(0).permutation(len(x_all))
    train, test = perm[:200], perm[200:800]
    forget, retain = train[:100], train[100:]
    with torch.random.fork_rng(devices=[]):
        original = _fit_mlp(x_all[train], y_all[train], seed=0)
        retrained1 = _fit_mlp(x_all[retain], y_all[retain], seed=1)
        retrained2 = _fit_mlp(x_all[retain], y_all[retain], seed=2)

    def signals(model, idx):
        with torch.no_grad():
            return compute_signals(model(x_all[idx]), y_all[idx])

    return {
        name: (signals(m, forget), signals(m, test))
        for name, m in (("original", original), ("ret1", retrained1), ("ret2", retrained2))
    }


def test_original_vs_retrained_is_detected_better_than_a_population_attack(digits_models):
    orig_f, orig_t = digits_models["original"]
    ret_f, ret_t = digits_models["ret1"]
    res = paired_test(
        orig_f.logit_confidence, ret_f.logit_confidence, orig_t.logit_confidence, ret_t.logit_confidence
    )
    population_auc = roc_auc_score(
        np.r_[np.ones(len(orig_f)), np.zeros(len(orig_t))], np.r_[-orig_f.loss, -orig_t.loss]
    )
    assert res.auc > 0.6 and res.p_value < 1e-4 and res.median_shift > 0
    assert res.auc > population_auc + 0.02


def test_two_retrained_models_are_indistinguishable(digits_models):
    ret2_f, ret2_t = digits_models["ret2"]
    ret1_f, ret1_t = digits_models["ret1"]
    res = paired_test(
        ret2_f.logit_confidence, ret1_f.logit_confidence, ret2_t.logit_confidence, ret1_t.logit_confidence
    )
    # Null standard deviation of the AUC for 100 vs 600 examples is about 0.031.
    assert abs(res.auc - 0.5) < 0.1
    assert res.p_value > 1e-3
