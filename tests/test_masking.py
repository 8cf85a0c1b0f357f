"""Gradient masking must not pass for robustness (issue #11): cheats built on a real model.

A supplier who wants an unlearned model to keep its robust accuracy, or any model to look
robust, can hide the gradient from PGD in many ways. Each cheat here wraps the same trained
digits MLP, so its honest robust accuracy is known: plain PGD is fooled by all of them, and
``measure_robustness`` must flag each one and report a robust accuracy near (or below) the honest
figure, or say it cannot conclude. The honest model must not be flagged nor change.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from attacks.adversarial import evaluate_attack, infer_family
from attacks.threat import pgd_spec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import DataError, ModelError
from unlearn_audit.models import build_model
from unlearn_audit.robustness import measure_robustness, transfer_examples
from unlearn_audit.training import TrainConfig, train_model

EPS, STEPS = 0.1, 20
SETTING = dict(family="mnist", num_classes=10, eps=EPS, steps=STEPS, seed=0)


@pytest.fixture(scope="module")
def trained():
    """The honest model, the attacked data and transfer inputs crafted on the honest model."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    bunch = load_digits()
    x = torch.tensor(bunch.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    model = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), seed=0, hidden=64)
    train_model(model, TensorSet(x[:1200], y[:1200]), TrainConfig(epochs=20, batch_size=64, seed=0))
    data = TensorSet(x[1200:1500], y[1200:1500])
    transfer = transfer_examples(model, data, **SETTING)
    yield model, data, transfer
    torch.set_num_threads(before)


class Wrapped(nn.Module):
    """The honest model behind a forward pass of the supplier's choosing."""

    def __init__(self, base: nn.Module, kind: str) -> None:
        super().__init__()
        self.base, self.kind = base, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "detach":  # the output carries no graph
            return self.base(x).detach()
        if self.kind == "quantise":  # rounds inputs to the data's own 1/16 grid: clean inputs unchanged
            return self.base(torch.round(x * 16) / 16)
        if self.kind == "int_logits":  # an integer head: no gradient, and dtype long
            return (self.base(x) * 100).long()
        if self.kind == "one_hot":  # hard labels only
            return F.one_hot(self.base(x).argmax(1), 10).float()
        if self.kind == "noisy":  # a randomised forward pass
            return self.base(x + 0.3 * torch.randn_like(x))
        if self.kind == "tuple":
            return self.base(x), x
        raise AssertionError(self.kind)


def _plain_pgd(model: nn.Module, data: TensorSet) -> float:
    """Robust accuracy under the audit's PGD alone: what the audit reported before the checks."""
    spec = pgd_spec("mnist", eps=EPS, steps=STEPS)
    out = evaluate_attack(model, data.x, data.y, spec, backend="native", num_classes=10, early_stop=True)
    return out.result.robust_accuracy


def test_honest_model_is_not_flagged_and_keeps_its_pgd_figures(trained):
    model, data, transfer = trained
    plain = _plain_pgd(model, data)
    for transfer_from in (None, transfer):
        res = measure_robustness(model, data, **SETTING, transfer_from=transfer_from)
        assert not res["masking"]["masked"] and res["masking"]["flags"] == []
        assert res["fallback"] is None and res["attacks"] == ["pgd"]
        assert res["inconclusive_reason"] is None
        assert res["robust_accuracy"] == pytest.approx(plain, abs=1e-6)
        assert res["pgd_robust_accuracy"] == res["robust_accuracy"]
        assert sum(res["correct"]) == round(res["robust_accuracy"] * len(data))
        assert res["masking"]["n"] == 64 and res["masking"]["seconds"] >= 0
    assert 0.2 < plain < 0.6  # a setting where robustness is neither trivial nor total


@pytest.mark.parametrize("kind", ["detach", "quantise", "int_logits"])
def test_masking_cheat_is_flagged_and_robust_accuracy_falls_back(trained, kind):
    model, data, transfer = trained
    honest = _plain_pgd(model, data)
    cheat = Wrapped(model, kind)
    assert _plain_pgd(cheat, data) > honest + 0.3  # the old behaviour: PGD is fooled
    alone = measure_robustness(cheat, data, **SETTING)
    assert alone["masking"]["masked"]
    assert {"search_beats_gradient"} <= set(alone["masking"]["flags"])
    assert {"no_gradient", "zero_gradient"} & set(alone["masking"]["flags"])
    assert alone["fallback"] == "random_search" and alone["attacks"] == ["pgd", "random_search"]
    assert alone["pgd_robust_accuracy"] > honest + 0.3
    assert alone["robust_accuracy"] <= honest + 0.07  # measured: +0.05 at most
    assert alone["inconclusive_reason"] is None
    backed = measure_robustness(cheat, data, **SETTING, transfer_from=transfer)
    assert backed["fallback"] == "random_search+transfer"
    assert "transfer_beats_gradient" in backed["masking"]["flags"]
    assert backed["robust_accuracy"] <= min(honest + 0.02, alone["robust_accuracy"])
    # An example counts as robust only if no attack fooled it.
    pgd_only = measure_robustness(model, data, **SETTING)["correct"]
    assert len(backed["correct"]) == len(data)
    assert sum(backed["correct"]) == round(backed["robust_accuracy"] * len(data))
    assert sum(backed["correct"]) <= sum(pgd_only) + 0.02 * len(data)


def test_hard_label_cheat_needs_a_transfer_attack(trained):
    model, data, transfer = trained
    honest = _plain_pgd(model, data)
    cheat = Wrapped(model, "one_hot")
    assert _plain_pgd(cheat, data) > honest + 0.3
    alone = measure_robustness(cheat, data, **SETTING)
    assert {"no_gradient", "flat_output"} <= set(alone["masking"]["flags"])
    # A score-based search has no signal on hard labels: no number is trusted.
    assert "hard labels" in alone["inconclusive_reason"]
    backed = measure_robustness(cheat, data, **SETTING, transfer_from=transfer)
    assert backed["inconclusive_reason"] is None
    assert backed["robust_accuracy"] <= honest + 0.02


def test_randomised_forward_is_inconclusive(trained):
    model, data, _ = trained
    torch.manual_seed(0)
    res = measure_robustness(Wrapped(model, "noisy"), data, **SETTING)
    assert "randomised_forward" in res["masking"]["flags"]
    assert "randomised" in res["inconclusive_reason"]


def test_too_small_search_budget_is_inconclusive_without_transfer(trained):
    model, data, transfer = trained
    cheat = Wrapped(model, "detach")
    res = measure_robustness(cheat, data, **SETTING, search_queries=20)
    assert res["masking"]["masked"] and "20 queries" in res["inconclusive_reason"]
    res = measure_robustness(cheat, data, **SETTING, search_queries=20, transfer_from=transfer)
    assert res["inconclusive_reason"] is None


def test_bad_outputs_and_transfer_inputs_are_refused_cleanly(trained):
    model, data, transfer = trained
    with pytest.raises(ModelError, match="Wrapped must return logits"):
        measure_robustness(Wrapped(model, "tuple"), data, **SETTING)
    with pytest.raises(DataError, match="transfer_from"):
        measure_robustness(model, data, **SETTING, transfer_from=transfer[:10])


def test_transfer_inputs_are_held_to_the_threat_model(trained):
    model, data, _ = trained
    # Inputs far outside the eps ball would fool anything; they are projected back first.
    wild = 1.0 - data.x
    res = measure_robustness(model, data, **SETTING, transfer_from=wild)
    assert not res["masking"]["masked"]
    assert res["robust_accuracy"] == pytest.approx(_plain_pgd(model, data), abs=1e-6)


@pytest.mark.parametrize(
    ("x", "family", "words"),
    [
        (torch.rand(4, 1, 28, 28), "mnist", "28x28"),
        (torch.rand(4, 1, 8, 8), "mnist", "8x8"),
        (torch.rand(4, 3, 32, 32), "cifar", "three-channel"),
        (torch.rand(4, 3, 64, 64), "cifar", "64x64"),
        (torch.rand(4, 1, 32, 32), "other", "neither"),
        (torch.rand(4, 28, 28, 1), "other", "28-channel"),
        (torch.rand(4, 64), "other", "N x C x H x W"),
        (torch.rand(0, 1, 28, 28), "other", "non-empty"),
        (torch.rand(4, 1, 28, 28) * 255, "other", "not [0, 1]"),
        (torch.randint(0, 2, (4, 1, 28, 28)), "other", "floating-point"),
    ],
)
def test_infer_family_reads_the_data(x, family, words):
    got, reason = infer_family(x)
    assert got == family and words in reason
