"""Tests for unlearn_audit/training.py: recipes, the training loop and adversarial training.

References: a hand-computed full-batch SGD step (loss, accuracy and updated weights), scikit-learn's
LogisticRegression on the same digits split, and a PGD attack measuring whether adversarial
training buys robustness. All models are tiny and trained on sklearn's digits in well under a second.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn_audit.data import TensorSet, load_dataset
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import build_model
from unlearn_audit.training import TrainConfig, accuracy, default_config, predict, train_model

SHAPE = (1, 8, 8)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------

BAD_CONFIGS = [
    ({"epochs": 0}, r"epochs must be >= 1, got 0"),
    ({"batch_size": -4}, r"batch size must be >= 1, got -4"),
    ({"lr": 0.0}, r"learning rate must be > 0, got 0.0"),
    ({"lr": float("nan")}, r"learning rate must be > 0, got nan"),
    ({"optimizer": "rmsprop"}, r"unknown optimizer 'rmsprop'; use one of adam, sgd"),
    ({"adversarial": "cw"}, r"unknown adversarial training 'cw'; use pgd or fgsm"),
    ({"adversarial": "pgd", "eps": 0.0}, r"adversarial training needs eps > 0, got 0.0"),
    ({"steps": 0}, r"steps must be >= 1, got 0"),
]


@pytest.mark.parametrize("values,pattern", BAD_CONFIGS)
def test_config_errors_name_the_value(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**values)


def test_default_config_recipes_and_overrides():
    cnn = default_config("cnn", "mnist")
    assert (cnn.epochs, cnn.batch_size, cnn.optimizer, cnn.eps) == (15, 64, "adam", 0.3)
    res = default_config("resnet18", "cifar")
    assert (res.optimizer, res.lr, res.weight_decay, res.eps) == ("sgd", 0.05, 5e-4, 8 / 255)
    custom = default_config("mlp", "mnist", epochs=2, lr=None, adversarial="fgsm", seed=5)
    assert (custom.epochs, custom.lr, custom.adversarial, custom.seed) == (2, 1e-3, "fgsm", 5)
    with pytest.raises(ConfigError, match=r"epochs must be >= 1"):
        default_config("mlp", "mnist", epochs=0)
    assert TrainConfig.from_dict({**custom.to_dict(), "unknown": 1}) == custom


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def test_one_full_batch_sgd_epoch_matches_a_hand_computed_step(digits):
    data = digits.train
    model = build_model("logreg", num_classes=10, input_shape=SHAPE, seed=0)
    w0, b0 = (p.detach().clone().requires_grad_(True) for p in model[1].parameters())
    logits = data.x.flatten(1) @ w0.T + b0
    loss = F.cross_entropy(logits, data.y)
    gw, gb = torch.autograd.grad(loss, (w0, b0))
    lr = 0.5
    cfg = TrainConfig(epochs=1, batch_size=len(data), lr=lr, optimizer="sgd", momentum=0.0, seed=0)
    result = train_model(model, data, cfg)
    torch.testing.assert_close(model[1].weight, (w0 - lr * gw).detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(model[1].bias, (b0 - lr * gb).detach(), rtol=0, atol=1e-6)
    assert result.losses[0] == pytest.approx(float(loss.detach()), rel=1e-5)
    assert result.accuracies[0] == pytest.approx(float((logits.argmax(1) == data.y).float().mean()))
    assert result.config == cfg.to_dict() and not model.training


def test_training_is_repeatable_with_the_same_seed(digits):
    cfg = TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=3)
    runs = []
    for _ in range(2):
        model = build_model("mlp", num_classes=10, input_shape=SHAPE, seed=cfg.seed, hidden=32)
        train_model(model, digits.train, cfg)
        runs.append(_weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    other = build_model("mlp", num_classes=10, input_shape=SHAPE, seed=3, hidden=32)
    train_model(
        other, digits.train, TrainConfig(epochs=2, batch_size=64, lr=1e-2, seed=4)
    )  # other batch order
    assert _max_diff(runs[0], _weights(other)) > 1e-3


def test_logreg_reaches_sklearn_accuracy(digits):
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    x_tr, y_tr = digits.train.x.flatten(1).numpy(), digits.train.y.numpy()
    x_te, y_te = digits.test.x.flatten(1).numpy(), digits.test.y.numpy()
    with threadpool_limits(1):  # BLAS threads on shared cores turn 0.1 s into seconds
        reference = LogisticRegression(max_iter=1000).fit(x_tr, y_tr).score(x_te, y_te)
    model = build_model("logreg", num_classes=10, input_shape=SHAPE, seed=0)
    result = train_model(model, digits.train, TrainConfig(epochs=15, batch_size=64, lr=2e-2, seed=0))
    assert accuracy(model, digits.test) >= reference - 0.03, (accuracy(model, digits.test), reference)
    assert result.losses[-1] < result.losses[0] and len(result.losses) == 15


def test_progress_is_reported_after_every_batch(digits):
    calls: list[tuple[int, int]] = []
    subset = digits.train.subset(np.arange(100))
    train_model(
        build_model("logreg", num_classes=10, input_shape=SHAPE, seed=0),
        subset,
        TrainConfig(epochs=3, batch_size=32, seed=0),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 12) for i in range(1, 13)]  # ceil(100 / 32) = 4 batches x 3 epochs


def test_empty_training_set_is_refused():
    empty = TensorSet(torch.zeros(0, *SHAPE), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"cannot train on an empty set"):
        train_model(build_model("logreg", num_classes=10, input_shape=SHAPE), empty, TrainConfig(epochs=1))


def test_predict_and_accuracy_restore_the_mode(digits):
    model = build_model("mlp", num_classes=10, input_shape=SHAPE, seed=0, hidden=16)
    model.append(torch.nn.Dropout(0.5))  # would make train-mode predictions random
    model.train()
    with torch.no_grad():
        model.eval()
        expected = model(digits.test.x).argmax(1)
        model.train()
    assert torch.equal(predict(model, digits.test.x, batch_size=7), expected)
    assert model.training
    assert accuracy(model, digits.test) == pytest.approx(float((expected == digits.test.y).float().mean()))
    assert model.training
    assert np.isnan(accuracy(model, TensorSet(torch.zeros(0, *SHAPE), torch.zeros(0, dtype=torch.long))))


# ----------------------------------------------------------------------------------------------
# Adversarial training
# ----------------------------------------------------------------------------------------------


def _has_attacks() -> bool:
    if importlib.util.find_spec("attacks.adversarial") is None:
        return False
    import attacks.adversarial as adversarial

    return hasattr(adversarial, "fgsm_perturb") and hasattr(adversarial, "pgd_perturb")


needs_attacks = pytest.mark.skipif(
    not _has_attacks(), reason="attacks/adversarial.py with fgsm_perturb/pgd_perturb is not there yet"
)


@needs_attacks
@pytest.mark.parametrize("mode", ["fgsm", "pgd"])
def test_adversarial_training_plugs_the_attack_into_the_loop(digits, mode):
    def run(adversarial: str | None, eps: float) -> dict[str, torch.Tensor]:
        cfg = TrainConfig(
            epochs=1,
            batch_size=64,
            lr=0.1,
            optimizer="sgd",
            adversarial=adversarial,
            eps=eps,
            steps=2,
            seed=0,
        )
        model = build_model("logreg", num_classes=10, input_shape=SHAPE, seed=0)
        train_model(model, digits.train, cfg)
        return _weights(model)

    x_before = digits.train.x.clone()
    clean = run(None, 0.3)
    # A vanishing radius gives clean training back: same batches, same loss, attack on the inputs only.
    assert _max_diff(clean, run(mode, 1e-7)) < 1e-5
    assert _max_diff(clean, run(mode, 0.2)) > 0.05
    assert torch.equal(digits.train.x, x_before)  # the data is not perturbed in place


@needs_attacks
def test_adversarial_training_buys_robustness(digits):
    from attacks.adversarial import pgd_perturb

    def robust_accuracy(model: torch.nn.Module, eps: float = 0.1) -> float:
        x_adv = pgd_perturb(
            model,
            digits.test.x,
            digits.test.y,
            eps,
            alpha=eps / 4,
            steps=10,
            generator=torch.Generator().manual_seed(0),
        )
        return accuracy(model, TensorSet(x_adv, digits.test.y))

    results = {}
    for mode in (None, "fgsm"):
        model = build_model("mlp", num_classes=10, input_shape=SHAPE, seed=0, hidden=64)
        train_model(
            model, digits.train, TrainConfig(epochs=5, batch_size=64, lr=1e-2, adversarial=mode, eps=0.1)
        )
        results[mode] = (accuracy(model, digits.test), robust_accuracy(model))
    assert results["fgsm"][1] > results[None][1] + 0.15, results  # about 0.64 vs 0.37
    assert results["fgsm"][0] > 0.8, results
