"""Tests for attacks.population: threshold and learned population attacks.

The reference is IBM ART's ``MembershipInferenceBlackBox`` on the same overfit model and
the same member / non-member split.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.population import (
    PopulationResult,
    learned_attack,
    population_attacks,
    split_halves,
    threshold_attacks,
)
from attacks.signals import SIGNAL_NAMES, Signals, compute_logits, compute_signals
from attacks.stats import evaluate_attack
from unlearn_audit.errors import ConfigError, DataError

torch.set_num_threads(1)

#: Our best learned AUC may trail ART's best by at most this much: sampling noise between two
#: attackers scored on the same 100 + 400 examples (observed: ours 0.887 vs ART 0.882 here,
#: margins of +0.02..+0.03 on other seeds of a similar set-up).
ART_TOLERANCE = 0.02


class _Setup:
    """Noisy digits (x + N(0, 0.4^2)); an MLP fitted to 100% on 300 members.

    Roles: forget = members[:100], retain = members[100:], test = 800 non-members.
    """

    def __init__(self) -> None:
        torch.manual_seed(0)
        x, y = load_digits(return_X_y=True)
        rng = np.random.default_rng(0)
        x = (x / 16.0 + 0.4 * rng.normal(size=x.shape)).astype(np.float32)
        perm = rng.permutation(len(x))
        self.x, self.y = x[perm[:1100]], y[perm[:1100]]
        self.forget, self.retain, self.test = np.arange(100), np.arange(100, 300), np.arange(300, 1100)
        self.model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
        opt = torch.optim.Adam(self.model.parameters(), lr=3e-3)
        xm, ym = torch.from_numpy(self.x[:300]), torch.from_numpy(self.y[:300])
        for _ in range(300):
            opt.zero_grad()
            nn.functional.cross_entropy(self.model(xm), ym).backward()
            opt.step()
        self.logits = compute_logits(self.model, torch.from_numpy(self.x))

    def signals(self, idx: np.ndarray) -> Signals:
        return compute_signals(self.logits[idx], self.y[idx])


@pytest.fixture(scope="module")
def setup() -> _Setup:
    return _Setup()


def _art_auc(setup: _Setup, idx_a: np.ndarray, idx_b: np.ndarray, kind: str, input_type: str) -> float:
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(
        model=setup.model, loss=nn.CrossEntropyLoss(), input_shape=(64,), nb_classes=10, device_type="cpu"
    )
    np.random.seed(0)  # ART's default RF / GB / NN attack models draw from the global RNGs
    torch.manual_seed(0)
    attack = MembershipInferenceBlackBox(classifier, attack_model_type=kind, input_type=input_type)
    x, y = setup.x, setup.y
    test_a, test_b = setup.test[idx_a], setup.test[idx_b]
    attack.fit(x[setup.retain], y[setup.retain], x[test_a], y[test_a])
    p_member = attack.infer(x[setup.forget], y[setup.forget], probabilities=True).ravel()
    p_nonmember = attack.infer(x[test_b], y[test_b], probabilities=True).ravel()
    labels = np.r_[np.ones(p_member.size), np.zeros(p_nonmember.size)]
    return float(roc_auc_score(labels, np.r_[p_member, p_nonmember]))


def test_learned_attack_at_least_as_strong_as_art_black_box(setup: _Setup) -> None:
    logging.getLogger("art").setLevel(logging.ERROR)
    idx_a, idx_b = split_halves(len(setup.test), seed=0)
    ours = population_attacks(
        setup.signals(setup.forget),
        setup.signals(setup.retain),
        setup.signals(setup.test),
        seed=0,
        n_bootstrap=200,
        test_split=(idx_a, idx_b),
    )
    art_aucs = {
        (kind, input_type): _art_auc(setup, idx_a, idx_b, kind, input_type)
        # ART's default input (predictions) and its loss input; ART's "nn" attack model was
        # weaker than "rf" here (AUC 0.57 vs 0.64) and takes longer, so it is left out.
        for kind, input_type in (("rf", "prediction"), ("gb", "prediction"), ("rf", "loss"), ("gb", "loss"))
    }
    best_ours = max(r.auc for r in ours.learned.values())
    best_art = max(art_aucs.values())
    assert best_art > 0.7, f"setup must leak for the comparison to mean anything: {art_aucs}"
    assert best_ours >= best_art - ART_TOLERANCE, (best_ours, art_aucs)
    # Every signal leaks on this overfit model and the best attack is named consistently.
    assert all(r.auc > 0.65 for r in ours.threshold.values())
    assert ours.best in ours.all_results()
    assert ours.all_results()[ours.best].auc == max(r.auc for r in ours.all_results().values())


def test_threshold_attacks_are_evaluate_attack_on_forget_vs_test_half_b(setup: _Setup) -> None:
    forget, retain, test = (setup.signals(i) for i in (setup.forget, setup.retain, setup.test))
    res = population_attacks(forget, retain, test, seed=4, n_bootstrap=50, kinds=())
    _, idx_b = split_halves(len(test), seed=4)
    for name in SIGNAL_NAMES:
        expected = evaluate_attack(
            "x",
            forget.membership_score(name),
            test.subset(idx_b).membership_score(name),
            n_bootstrap=50,
            seed=4,
        )
        assert res.threshold[name].name == f"threshold/{name}"
        assert res.threshold[name].auc == expected.auc and res.threshold[name].auc_ci == expected.auc_ci
    assert res.learned == {} and res.mia_efficacy == {}
    json.dumps(res.to_dict(), allow_nan=False)
    # The same split given explicitly gives the same result.
    again = population_attacks(
        forget, retain, test, seed=4, n_bootstrap=50, kinds=(), test_split=split_halves(800, 4)
    )
    assert again.threshold["loss"].auc_ci == res.threshold["loss"].auc_ci


def test_mia_efficacy_is_the_share_of_forget_called_nonmember(setup: _Setup) -> None:
    forget, retain, test = (setup.signals(i) for i in (setup.forget, setup.retain, setup.test))
    idx_a, idx_b = split_halves(len(test), seed=0)
    for kind in ("logreg", "gbm"):
        res, efficacy = learned_attack(
            retain, test.subset(idx_a), forget, test.subset(idx_b), kind=kind, seed=0, n_bootstrap=0
        )
        # The attack score is P(member); the 0.5 decision threshold calls p <= 0.5 non-member.
        assert efficacy == pytest.approx(np.mean(np.array(res.member_scores) <= 0.5))
        # Orientation: members are called non-member less often than real non-members are.
        share_nonmember_called_nonmember = np.mean(np.array(res.nonmember_scores) <= 0.5)
        assert efficacy < share_nonmember_called_nonmember
        assert res.name == f"learned/{kind}" and res.auc > 0.7


def test_no_membership_difference_gives_chance_auc() -> None:
    # An untrained model: forget, retain and test are exchangeable, so nothing can leak.
    torch.manual_seed(3)
    x, y = load_digits(return_X_y=True)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    sig = compute_signals(compute_logits(model, torch.from_numpy((x / 16.0).astype(np.float32))), y)
    perm = np.random.default_rng(3).permutation(len(y))
    forget, retain, test = sig.subset(perm[:300]), sig.subset(perm[300:900]), sig.subset(perm[900:])
    res = population_attacks(forget, retain, test, seed=0, n_bootstrap=300)
    assert isinstance(res, PopulationResult) and len(res.all_results()) == 7
    for name, attack in res.all_results().items():
        low, high = attack.auc_ci
        assert abs(attack.auc - 0.5) < 0.07, (name, attack.auc)
        assert low <= 0.5 <= high, (name, attack.auc_ci)


def test_split_halves_and_input_validation(setup: _Setup) -> None:
    a, b = split_halves(11, seed=5)
    assert len(a) == 5 and len(b) == 6
    np.testing.assert_array_equal(np.sort(np.r_[a, b]), np.arange(11))
    np.testing.assert_array_equal(split_halves(11, seed=5)[0], a)
    assert not np.array_equal(split_halves(101, seed=5)[0], split_halves(101, seed=6)[0])
    with pytest.raises(DataError):
        split_halves(1)

    forget, retain, test = (setup.signals(i) for i in (setup.forget, setup.retain, setup.test))
    with pytest.raises(ConfigError, match="available"):
        population_attacks(forget, retain, test, kinds=("svm",), n_bootstrap=0)
    with pytest.raises(ConfigError, match="available"):
        learned_attack(retain, test, forget, test, kind="svm", n_bootstrap=0)
    with pytest.raises(DataError, match="overlap"):
        population_attacks(forget, retain, test, n_bootstrap=0, test_split=(np.arange(10), np.arange(5, 20)))
    with pytest.raises(DataError, match="outside"):
        population_attacks(
            forget, retain, test, n_bootstrap=0, test_split=(np.arange(10), np.arange(795, 805))
        )
    with pytest.raises(DataError, match="empty"):
        threshold_attacks(forget.subset([]), test, n_bootstrap=0)
