"""Tests for attacks.label_only: ART's gap and decision-boundary attacks on a tiny overfit model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.label_only import label_only_attack
from unlearn_audit.errors import ConfigError, DataError


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core machine: intra-op threads only add synchronisation cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def overfit():
    """An MLP fitted to 60 digits (100% train accuracy), plus unseen digits."""
    x_all, y_all = load_digits(return_X_y=True)
    x_all = (x_all / 16.0).astype(np.float32)
    perm = np.random.default_rng(0).permutation(len(x_all))
    members, nonmembers = perm[:60], perm[60:400]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = torch.from_numpy(x_all[members]), torch.from_numpy(y_all[members])
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    return model, x_all, y_all, members, nonmembers


def _correct(model: nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (model(torch.from_numpy(x)).argmax(1).numpy() == y).astype(np.float64)


def test_gap_attack_scores_are_exactly_correctness(overfit):
    model, x, y, members, nonmembers = overfit
    ev_in, ev_out = members[:40], nonmembers[:300]
    model.train()  # the attack must restore whatever mode the caller left
    m_scores, n_scores = label_only_attack(
        model,
        None,
        None,
        None,
        None,
        x[ev_in],
        y[ev_in],
        torch.from_numpy(x[ev_out]),
        torch.from_numpy(y[ev_out]),
        method="gap",
        num_classes=10,
        input_shape=(64,),
    )
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    np.testing.assert_array_equal(m_scores, _correct(model, x[ev_in], y[ev_in]))
    np.testing.assert_array_equal(n_scores, _correct(model, x[ev_out], y[ev_out]))
    assert m_scores.dtype == np.float64
    assert 0 < n_scores.mean() < 1  # the check is not vacuous: both outcomes occur
    assert m_scores.mean() > n_scores.mean()


def test_gap_attack_with_a_subset_of_classes(overfit):
    # ART one-hot encodes index labels with len(unique(y)) classes; a split holding only
    # classes 3 and 7 would then be scored against the wrong columns.
    model, x, y, members, nonmembers = overfit
    sel = nonmembers[np.isin(y[nonmembers], [3, 7])]
    sel_in = members[np.isin(y[members], [3, 7])]
    m_scores, n_scores = label_only_attack(
        model,
        None,
        None,
        None,
        None,
        x[sel_in],
        y[sel_in],
        x[sel],
        y[sel],
        method="gap",
        num_classes=10,
        input_shape=(64,),
    )
    np.testing.assert_array_equal(n_scores, _correct(model, x[sel], y[sel]))
    np.testing.assert_array_equal(m_scores, _correct(model, x[sel_in], y[sel_in]))


def test_boundary_attack_ranks_members_higher_and_zeroes_misclassified(overfit):
    model, x, y, members, nonmembers = overfit
    tr_in, tr_out = members[:8], nonmembers[:8]
    wrong = nonmembers[_correct(model, x[nonmembers], y[nonmembers]) == 0][:3]
    ev_in = members[8:16]
    ev_out = np.r_[nonmembers[8:13], wrong]
    state = np.random.get_state()
    m_scores, n_scores = label_only_attack(
        model,
        x[tr_in],
        y[tr_in],
        x[tr_out],
        y[tr_out],
        x[ev_in],
        y[ev_in],
        x[ev_out],
        y[ev_out],
        method="boundary",
        num_classes=10,
        input_shape=(64,),
        max_iter=3,
        max_eval=40,
        init_eval=10,
        seed=1,
    )
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global RNG restored
    auc = roc_auc_score(np.r_[np.ones(8), np.zeros(8)], np.r_[m_scores, n_scores])
    assert auc >= 0.5
    assert np.all((m_scores > 0) & (m_scores < 1))
    # Misclassified points sit at distance 0: all get sigmoid(-tau), the lowest possible score.
    wrong_scores = n_scores[-3:]
    assert np.ptp(wrong_scores) == 0.0
    assert wrong_scores[0] <= min(m_scores.min(), n_scores[:-3].min())


def test_validation(overfit):
    model, x, y, members, _ = overfit
    ev = members[:4]
    common = dict(num_classes=10, input_shape=(64,))
    with pytest.raises(ConfigError, match="method"):
        label_only_attack(model, None, None, None, None, x[ev], y[ev], x[ev], y[ev], method="gapp", **common)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        label_only_attack(model, None, None, None, None, x[ev] * 16, y[ev], x[ev], y[ev], **common)
    with pytest.raises(DataError, match="input_shape"):
        label_only_attack(
            model, None, None, None, None, x[ev], y[ev], x[ev], y[ev], num_classes=10, input_shape=(8, 8)
        )
    with pytest.raises(DataError, match="x_train_member"):
        label_only_attack(
            model, None, None, None, None, x[ev], y[ev], x[ev], y[ev], method="boundary", **common
        )
    with pytest.raises(DataError, match="y_eval_member"):
        label_only_attack(model, None, None, None, None, x[ev], y[ev] + 10, x[ev], y[ev], **common)
