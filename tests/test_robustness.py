"""Robust accuracy as the audit measures it (unlearn_audit.robustness) and PGD early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from attacks.adversarial import AttackSpec, pgd_perturb, robust_accuracy
from unlearn_audit.data import TensorSet
from unlearn_audit.models import build_model
from unlearn_audit.robustness import measure_robustness, pgd_spec
from unlearn_audit.training import TrainConfig, train_model


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits_model(one_thread):
    bunch = load_digits()
    x = torch.tensor(bunch.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    model = build_model("mlp", num_classes=10, input_shape=(1, 8, 8), seed=0, hidden=64)
    train_model(model, TensorSet(x[:1200], y[:1200]), TrainConfig(epochs=20, batch_size=64, seed=0))
    return model, TensorSet(x[1200:1500], y[1200:1500])


def test_early_stopping_is_never_weaker_than_plain_pgd(digits_model):
    model, data = digits_model
    kwargs = dict(alpha=0.02, steps=20, norm="linf", random_start=True)
    plain = pgd_perturb(model, data.x, data.y, 0.1, generator=torch.Generator().manual_seed(3), **kwargs)
    early = pgd_perturb(
        model, data.x, data.y, 0.1, generator=torch.Generator().manual_seed(3), early_stop=True, **kwargs
    )
    with torch.no_grad():
        fooled_plain = model(plain).argmax(1) != data.y
        fooled_early = model(early).argmax(1) != data.y
    # Same random start, per-example independent trajectories: every example plain PGD fools
    # at its last step was fooled at some step, where early stopping froze it.
    assert bool((fooled_early | ~fooled_plain).all())
    assert fooled_plain.float().mean() > 0.1  # the setting is not trivial
    assert (early - data.x).abs().max() <= 0.1 + 1e-6
    assert early.min() >= 0 and early.max() <= 1


def test_measure_robustness_agrees_with_art(digits_model):
    model, data = digits_model
    ours = measure_robustness(model, data, family="mnist", num_classes=10, eps=0.1, steps=20, seed=0)
    spec = AttackSpec.pgd(ours["eps"], 2.5 * 0.1 / 20, 20)
    art = robust_accuracy(model, data.x, data.y, spec, backend="art", num_classes=10, seed=0)
    assert 0.05 < ours["robust_accuracy"] < 0.95
    assert abs(ours["robust_accuracy"] - art.robust_accuracy) <= 0.02
    assert ours["clean_accuracy"] == pytest.approx(art.clean_accuracy)
    assert ours["gap"] == pytest.approx(ours["clean_accuracy"] - ours["robust_accuracy"])
    assert np.mean(ours["correct"]) == pytest.approx(ours["robust_accuracy"])


def test_measure_robustness_is_robust_accuracy_with_early_stopping(digits_model):
    """One entry point: the audit's numbers are those of robust_accuracy on the same attack."""
    model, data = digits_model
    ours = measure_robustness(model, data, family="mnist", num_classes=10, eps=0.1, steps=5, seed=2)
    res = robust_accuracy(
        model,
        data.x,
        data.y,
        pgd_spec("mnist", eps=0.1, steps=5),
        backend="native",
        num_classes=10,
        seed=2,
        early_stop=True,
    )
    assert ours["robust_accuracy"] == pytest.approx(res.robust_accuracy, abs=1e-6)
    assert ours["clean_accuracy"] == pytest.approx(res.clean_accuracy, abs=1e-6)


def test_measure_robustness_restores_mode_and_leaves_inputs(digits_model):
    model, data = digits_model
    x_before = data.x.clone()
    grads_before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.train()
    try:
        measure_robustness(model, data, family="mnist", num_classes=10, eps=0.05, steps=2)
        assert model.training
    finally:
        model.eval()
    assert torch.equal(data.x, x_before)
    for before, p in zip(grads_before, model.parameters(), strict=True):
        assert (before is None and p.grad is None) or torch.equal(before, p.grad)


def test_pgd_spec_defaults_and_derived_step():
    assert (pgd_spec("mnist").eps, pgd_spec("mnist").alpha, pgd_spec("mnist").steps) == (0.3, 0.01, 40)
    cifar = pgd_spec("cifar")
    assert (cifar.eps, cifar.alpha, cifar.steps) == (8 / 255, 2 / 255, 10)
    # Fewer steps without a step size: 2.5 * eps / steps, so the attack can still reach the edge.
    assert pgd_spec("mnist", steps=10).alpha == pytest.approx(0.075)
