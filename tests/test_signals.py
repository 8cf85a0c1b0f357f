"""Tests for attacks.signals: logits extraction and float64 membership signals."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.signals import SIGNAL_NAMES, Signals, compute_logits, compute_signals
from unlearn_audit.errors import ConfigError, DataError, ModelError

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- reference


def _reference(z_row: np.ndarray, y: int) -> dict[str, float]:
    """Slow per-example signals in 500-digit arithmetic, straight from the definitions.

    500 digits because a loss of 1e-300 is the difference of two numbers near 100.
    ``1 - p_i`` is the sum of the other probabilities (an identity, not a subtraction), so
    it stays exact however close ``p_i`` is to one.
    """
    with mpmath.workdps(500):
        z = [mpmath.mpf(float(v)) for v in z_row]
        k = len(z)
        lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in z))
        p = [mpmath.exp(v - lse) for v in z]
        one_minus = [mpmath.fsum(p[j] for j in range(k) if j != i) for i in range(k)]
        return {
            "loss": float(lse - z[y]),
            "confidence": float(p[y]),
            "entropy": float(-mpmath.fsum(pi * mpmath.log(pi) for pi in p)),
            "modified_entropy": float(
                -one_minus[y] * mpmath.log(p[y])
                - mpmath.fsum(p[i] * mpmath.log(one_minus[i]) for i in range(k) if i != y)
            ),
            "logit_confidence": float(
                z[y] - mpmath.log(mpmath.fsum(mpmath.exp(z[i]) for i in range(k) if i != y))
            ),
        }


@pytest.mark.parametrize("k", [2, 3, 10])
@pytest.mark.parametrize("scale", [0.5, 5.0, 60.0])
def test_signals_match_high_precision_reference(k: int, scale: float) -> None:
    rng = np.random.default_rng(k * 100 + int(scale))
    n = 40
    z = rng.normal(size=(n, k)) * scale
    y = rng.integers(0, k, size=n)
    y[:5] = np.argmax(z[:5], axis=1)  # saturated correct predictions at large scale
    sig = compute_signals(torch.from_numpy(z), torch.from_numpy(y))
    ref = [_reference(z[i], int(y[i])) for i in range(n)]
    for name in SIGNAL_NAMES:
        expected = np.array([r[name] for r in ref])
        atol = 1e-12 if name == "logit_confidence" else 1e-300
        np.testing.assert_allclose(getattr(sig, name), expected, rtol=1e-9, atol=atol, err_msg=name)
    np.testing.assert_array_equal(sig.labels, y)
    np.testing.assert_array_equal(sig.predictions, np.argmax(z, axis=1))


def test_hand_computed_two_class_case() -> None:
    # z = [0, 0]: p = (1/2, 1/2); every signal has a closed form.
    sig = compute_signals(np.zeros((1, 2), np.float32), np.array([1]))
    ln2 = math.log(2.0)
    assert sig.loss[0] == pytest.approx(ln2, rel=1e-15)
    assert sig.confidence[0] == pytest.approx(0.5, rel=1e-15)
    assert sig.entropy[0] == pytest.approx(ln2, rel=1e-15)
    # -(1/2) log(1/2) - (1/2) log(1 - 1/2) = log 2
    assert sig.modified_entropy[0] == pytest.approx(ln2, rel=1e-15)
    assert sig.logit_confidence[0] == 0.0


def test_tiny_losses_keep_full_precision_where_float64_softmax_rounds_to_one() -> None:
    # Margins of 40..300: p_y rounds to 1.0 even in float64, yet loss ~ exp(-margin) is exact.
    margins = np.array([40.0, 80.0, 150.0, 300.0])
    z = np.stack([margins, np.zeros_like(margins), np.zeros_like(margins) - 1.0], axis=1)
    sig = compute_signals(z, np.zeros(4, dtype=np.int64))
    expected_loss = np.log1p(np.exp(-margins) + np.exp(-margins - 1.0))
    np.testing.assert_allclose(sig.loss, expected_loss, rtol=1e-12)
    assert np.all(sig.loss > 0) and len(np.unique(sig.loss)) == 4
    expected_lc = margins - np.logaddexp(0.0, -1.0)
    np.testing.assert_allclose(sig.logit_confidence, expected_lc, rtol=1e-14)
    # torch's own float64 cross-entropy loses these (it forms log(1 + tiny) = 0).
    torch_loss = nn.functional.cross_entropy(
        torch.from_numpy(z), torch.zeros(4, dtype=torch.long), reduction="none"
    )
    assert (torch_loss.numpy()[1:] == 0).all()


# ----------------------------------------------------------------------------- saturation


@pytest.fixture(scope="module")
def saturated_digits() -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """An MLP fitted to 100% training accuracy on noisy digits, last layer scaled x20.

    Returns (logits of all 900 examples, labels, member indices, non-member indices).
    """
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    x = (x / 16.0 + 0.4 * rng.normal(size=x.shape)).astype(np.float32)
    perm = rng.permutation(len(x))[:900]
    x, y = x[perm], y[perm]
    members, nonmembers = np.arange(300), np.arange(300, 900)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xm, ym = torch.from_numpy(x[members]), torch.from_numpy(y[members])
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xm), ym).backward()
        opt.step()
    with torch.no_grad():
        model[2].weight.mul_(20.0)
        model[2].bias.mul_(20.0)
    logits = compute_logits(model, torch.from_numpy(x))
    assert (logits[members].argmax(1).numpy() == y[members]).all(), "fixture: members must be fitted to 100%"
    return logits, y, members, nonmembers


def _auc(member: np.ndarray, nonmember: np.ndarray) -> float:
    labels = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    return float(roc_auc_score(labels, np.r_[member, nonmember]))


def test_float32_softmax_saturates_but_float64_signals_separate(saturated_digits) -> None:
    logits, y, members, nonmembers = saturated_digits
    p32 = torch.softmax(logits, dim=1)[torch.arange(len(y)), torch.from_numpy(y)].numpy()
    saturated = p32 == 1.0
    # The situation under test: float32 confidence is exactly 1.0 for most examples of both roles.
    assert saturated[members].mean() >= 0.9
    assert saturated[nonmembers].mean() >= 0.4

    sig = compute_signals(logits, y)
    mem, non = sig.subset(members), sig.subset(nonmembers)
    for name in ("loss", "logit_confidence"):
        ours_m, ours_n = mem.membership_score(name), non.membership_score(name)
        # Overall: clearly better than the tied float32 probability, and clearly above chance.
        assert _auc(ours_m, ours_n) >= 0.7
        assert _auc(ours_m, ours_n) >= _auc(p32[members], p32[nonmembers]) + 0.05
        # Among the examples float32 calls "p = 1": float32 is a coin flip, ours still separates.
        sm, sn = saturated[members], saturated[nonmembers]
        assert _auc(p32[members][sm], p32[nonmembers][sn]) == 0.5
        assert _auc(ours_m[sm], ours_n[sn]) >= 0.6
        assert len(np.unique(np.r_[ours_m, ours_n])) > 2 * len(np.unique(p32))


# ----------------------------------------------------------------------------- compute_logits


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_compute_logits_matches_eval_forward_and_restores_modes() -> None:
    torch.manual_seed(1)
    net = _Net()
    net.train()
    net(torch.randn(32, 6))  # move BatchNorm running stats away from their init
    net.body[3].eval()  # mixed modes must come back exactly as they were
    before = {name: m.training for name, m in net.named_modules()}
    x = torch.randn(50, 6, dtype=torch.float64).float()

    out = compute_logits(net, x, batch_size=7)

    assert {name: m.training for name, m in net.named_modules()} == before
    net.eval()
    with torch.no_grad():
        expected = net(x)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (50, 3)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


def test_compute_logits_restores_modes_on_error_and_validates() -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom")

    broken = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        compute_logits(broken, torch.zeros(3, 2))
    assert broken.training and broken.lin.training

    vec = nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))
    with pytest.raises(ModelError, match="shape"):
        compute_logits(vec, torch.zeros(3, 2))
    with pytest.raises(ModelError, match="meta"):
        compute_logits(nn.Linear(2, 2), torch.zeros(3, 2), device="meta")
    with pytest.raises(ConfigError, match="batch_size"):
        compute_logits(nn.Linear(2, 2), torch.zeros(3, 2), batch_size=0)
    assert compute_logits(nn.Linear(2, 4), torch.zeros(0, 2)).shape == (0, 4)


# ----------------------------------------------------------------------------- Signals


def test_membership_scores_orientation_matrix_and_subset() -> None:
    z = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 1.0, 1.0]])
    sig = compute_signals(z, np.array([0, 0, 2]))  # a confident member-like row first
    for name in SIGNAL_NAMES:
        score = sig.membership_score(name)
        if name == "entropy":  # label-free: rows 0 and 1 are permutations of each other
            assert score[0] == pytest.approx(score[1]) and score[0] > score[2]
        else:
            assert score[0] > score[1], name  # confidently right beats confidently wrong
    np.testing.assert_array_equal(sig.membership_score("loss"), -sig.loss)
    np.testing.assert_array_equal(sig.membership_score("entropy"), -sig.entropy)
    np.testing.assert_array_equal(sig.membership_score("modified_entropy"), -sig.modified_entropy)
    np.testing.assert_array_equal(sig.membership_score("confidence"), sig.confidence)
    matrix = sig.as_matrix()
    assert matrix.shape == (3, 5)
    for j, name in enumerate(SIGNAL_NAMES):
        np.testing.assert_array_equal(matrix[:, j], sig.membership_score(name))

    sub = sig.subset([2, 0])
    assert len(sub) == 2 and isinstance(sub, Signals)
    np.testing.assert_array_equal(sub.loss, sig.loss[[2, 0]])
    np.testing.assert_array_equal(sig.subset(np.array([False, True, True])).labels, [0, 2])
    with pytest.raises(DataError):
        sig.subset([3])
    with pytest.raises(ConfigError, match="available"):
        sig.membership_score("los")
    with pytest.raises(ValueError):
        sig.loss[0] = 1.0  # arrays are read-only


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        (np.zeros((3, 4)), np.array([0, 4, 1]), "labels must lie"),
        (np.zeros((3, 4)), np.array([0, -1, 1]), "labels must lie"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 1.0]), "integers"),
        (np.zeros((3, 4)), np.array([0, 1]), "shape"),
        (np.zeros((3, 1)), np.array([0, 0, 0]), "at least 2 classes"),
        (np.zeros(3), np.array([0, 0, 0]), "shape"),
        (np.array([[0.0, np.nan], [0.0, 1.0]]), np.array([0, 1]), "finite"),
        (np.array([[0.0, np.inf], [0.0, 1.0]]), np.array([0, 1]), "finite"),
    ],
)
def test_compute_signals_rejects_bad_input(logits: np.ndarray, labels: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        compute_signals(logits, labels)


def test_logit_margin_is_the_label_over_its_best_rival_and_scales_with_temperature() -> None:
    z = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, 1.0]])
    sig = compute_signals(z, np.array([0, 0]))
    np.testing.assert_array_equal(sig.logit_margin, [1.5, -3.0])
    rng = np.random.default_rng(3)
    z, y = rng.normal(size=(50, 10)) * 4, rng.integers(0, 10, 50)
    base = compute_signals(z, y)
    for temperature in (5.0, 100.0):
        hot = compute_signals(z / temperature, y)
        np.testing.assert_allclose(hot.logit_margin, base.logit_margin / temperature, rtol=1e-12)
    # The logit-scaled confidence is not homogeneous: its shape changes with the temperature.
    ratio = compute_signals(z / 100.0, y).logit_confidence / base.logit_confidence
    assert np.ptp(ratio) > 0.1
    assert compute_signals(np.zeros((0, 3)), np.zeros(0, np.int64)).logit_margin.shape == (0,)
