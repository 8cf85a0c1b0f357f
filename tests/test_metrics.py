"""``unlearn_audit.metrics`` against independent references.

* ``parameter_distance``: a hand computation with numpy on the flattened floating-point
  state (L2, relative, cosine, per-tensor L2); models of other architectures are "not
  comparable".
* ``kl_divergence``: ``scipy.stats.entropy`` on float64 softmax outputs, also where a
  float32 softmax would saturate.
* Score intervals for proportions: Wilson against ``scipy.stats.binomtest``, Newcombe's
  hybrid score interval against the published examples, the paired version by coverage.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from torch import nn

from unlearn_audit.metrics import (
    kl_divergence,
    paired_proportion_difference_ci,
    parameter_distance,
    proportion_difference_ci,
    wilson_interval,
)
from unlearn_audit.models import build_model

# --------------------------------------------------------------------------- parameter_distance


def _bn_net(seed: int) -> nn.Module:
    """A small net with BatchNorm: floating buffers (running stats) and an integer one."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    net.train()
    with torch.no_grad():
        net(torch.randn(16, 12))  # moves the running statistics away from their initial values
    net.eval()
    return net


def _float_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    return {
        name: t.detach().numpy().astype(np.float64).ravel()
        for name, t in module.state_dict().items()
        if t.dtype.is_floating_point
    }


@pytest.mark.parametrize(
    "make",
    [
        lambda s: build_model("mlp", num_classes=4, input_shape=(1, 4, 4), seed=s, hidden=8, depth=2),
        _bn_net,
    ],
    ids=["mlp", "batchnorm"],
)
def test_parameter_distance_matches_numpy(make) -> None:
    a, b = make(0), make(1)
    got = parameter_distance(a, b)

    ta, tb = _float_arrays(a), _float_arrays(b)
    va, vb = np.concatenate(list(ta.values())), np.concatenate(list(tb.values()))
    l2 = np.linalg.norm(va - vb)
    assert got.comparable
    assert got.l2 == pytest.approx(l2, rel=1e-12)
    assert got.relative == pytest.approx(l2 / np.linalg.norm(va), rel=1e-12)
    assert got.cosine == pytest.approx(va @ vb / (np.linalg.norm(va) * np.linalg.norm(vb)), rel=1e-12)
    assert set(got.per_layer) == set(ta)  # integer buffers (num_batches_tracked) are left out
    for name in ta:
        assert got.per_layer[name] == pytest.approx(np.linalg.norm(ta[name] - tb[name]), rel=1e-12, abs=1e-15)
    # the per-tensor distances add up (in squares) to the total
    assert sum(v**2 for v in got.per_layer.values()) == pytest.approx(l2**2, rel=1e-12)


def test_parameter_distance_of_a_model_to_itself_and_to_one_changed_weight() -> None:
    a = build_model("mlp", num_classes=4, input_shape=(1, 4, 4), seed=0, hidden=8, depth=1)
    same = parameter_distance(a, a)
    assert same.l2 == 0.0 and same.relative == 0.0 and same.cosine == pytest.approx(1.0, abs=1e-15)

    b = build_model("mlp", num_classes=4, input_shape=(1, 4, 4), seed=0, hidden=8, depth=1)
    with torch.no_grad():
        b[-1].bias[2] += 0.5
    got = parameter_distance(a, b)
    assert got.l2 == pytest.approx(0.5, rel=1e-7)
    changed = {k: v for k, v in got.per_layer.items() if v > 0}
    assert list(changed) == ["3.bias"]


@pytest.mark.parametrize(
    ("other", "why"),
    [
        (
            lambda: build_model("mlp", num_classes=4, input_shape=(1, 4, 4), seed=0, hidden=16, depth=1),
            "shape",
        ),
        (lambda: build_model("cnn", num_classes=4, input_shape=(1, 4, 4), seed=0, width=4), "names"),
        (
            lambda: build_model("mlp", num_classes=5, input_shape=(1, 4, 4), seed=0, hidden=8, depth=1),
            "shape",
        ),
    ],
    ids=["wider", "other-arch", "more-classes"],
)
def test_parameter_distance_of_different_architectures_is_not_comparable(other, why) -> None:
    a = build_model("mlp", num_classes=4, input_shape=(1, 4, 4), seed=0, hidden=8, depth=1)
    got = parameter_distance(a, other())
    assert not got.comparable
    assert got.l2 is None and got.relative is None and got.cosine is None and got.per_layer == {}
    assert "architectures differ" in got.note and why in got.note
    assert got.to_dict()["comparable"] is False


def test_parameter_distance_of_a_parameterless_model_is_not_comparable() -> None:
    got = parameter_distance(nn.Flatten(), nn.Flatten())
    assert not got.comparable and got.l2 is None and got.note


# --------------------------------------------------------------------------- kl_divergence


def _scipy_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> float:
    p = scipy.special.softmax(p_logits.double().numpy(), axis=1)
    q = scipy.special.softmax(q_logits.double().numpy(), axis=1)
    return float(np.mean(scipy.stats.entropy(p, q, axis=1)))


def test_kl_divergence_matches_scipy_both_ways() -> None:
    gen = torch.Generator().manual_seed(0)
    p = 3 * torch.randn(64, 7, generator=gen)
    q = 3 * torch.randn(64, 7, generator=gen)
    assert kl_divergence(p, q) == pytest.approx(_scipy_kl(p, q), rel=1e-10)
    assert kl_divergence(q, p) == pytest.approx(_scipy_kl(q, p), rel=1e-10)
    assert kl_divergence(p, q) != pytest.approx(kl_divergence(q, p), rel=1e-3)  # KL is not symmetric
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    # shifting all logits of a row changes nothing: KL depends on the softmax only
    assert kl_divergence(p + 5.0, q - 2.0) == pytest.approx(kl_divergence(p, q), rel=1e-6)


def test_kl_divergence_is_finite_where_a_float32_softmax_saturates() -> None:
    p = torch.tensor([[150.0, 0.0, 0.0], [0.0, 110.0, 0.0]])
    q = torch.tensor([[0.0, 150.0, 0.0], [0.0, 0.0, 110.0]])
    float32_probs = torch.softmax(q, dim=1)
    assert float32_probs[0, 0] == 0.0  # a float32 softmax would give log(p/0) = inf
    got = kl_divergence(p, q)
    assert np.isfinite(got)
    assert got == pytest.approx(_scipy_kl(p, q), rel=1e-9)
    assert got == pytest.approx(130.0, rel=1e-6)  # (150 + 110) / 2: the logit gaps, by hand


def test_kl_divergence_input_errors() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        kl_divergence(torch.zeros(3, 4), torch.zeros(3, 5))
    assert np.isnan(kl_divergence(torch.zeros(0, 4), torch.zeros(0, 4)))


# --------------------------------------------------------------------------- score intervals for proportions


def _outcomes(successes: int, n: int) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[:successes] = True
    return out


@pytest.mark.parametrize(("k", "n"), [(0, 7), (3, 7), (7, 7), (81, 263), (1, 1)])
def test_wilson_interval_matches_scipy(k: int, n: int) -> None:
    for level in (0.9, 0.95):
        ref = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
        assert wilson_interval(k, n, level=level) == pytest.approx((ref.low, ref.high), abs=1e-12)


@pytest.mark.parametrize(
    ("counts", "published"),
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
        ((0, 10, 0, 20), (-0.1611, 0.2775)),
        ((0, 10, 0, 10), (-0.2775, 0.2775)),
    ],
)
def test_newcombe_interval_matches_the_published_examples(counts, published) -> None:
    """Newcombe (1998), Stat. Med. 17:873, Table II, method 10 (hybrid score)."""
    k1, n1, k2, n2 = counts
    diff, ci = proportion_difference_ci(_outcomes(k1, n1), _outcomes(k2, n2))
    assert diff == pytest.approx(k1 / n1 - k2 / n2)
    assert ci == pytest.approx(published, abs=6e-5)


def _paired_sample(rng: np.random.Generator, n: int, cells: tuple[float, float, float]):
    """Paired 0/1 outcomes with P(both)=cells[0], P(only a)=cells[1], P(only b)=cells[2]."""
    both, only_a, only_b = cells
    cell = rng.choice(4, size=n, p=[both, only_a, only_b, 1 - both - only_a - only_b])
    return (cell == 0) | (cell == 1), (cell == 0) | (cell == 2)


@pytest.mark.parametrize(("n", "cells"), [(80, (0.55, 0.15, 0.05)), (200, (0.6, 0.08, 0.12))])
def test_paired_proportion_interval_covers_and_uses_the_pairing(n: int, cells) -> None:
    rng = np.random.default_rng(0)
    truth = cells[1] - cells[2]
    hits, paired_width, unpaired_width = 0, 0.0, 0.0
    for _ in range(500):
        a, b = _paired_sample(rng, n, cells)
        diff, (lo, hi) = paired_proportion_difference_ci(a, b)
        assert diff == pytest.approx(a.mean() - b.mean())
        hits += lo <= truth <= hi
        paired_width += hi - lo
        _, (ulo, uhi) = proportion_difference_ci(a, b)
        unpaired_width += uhi - ulo
    assert 0.92 <= hits / 500 <= 0.99  # Monte Carlo SE ~0.01
    assert paired_width < 0.8 * unpaired_width  # concordant pairs carry no noise


def test_score_intervals_keep_their_width_when_every_example_agrees() -> None:
    """Where a bootstrap collapses to one point (all correct, nothing changed), score intervals do not."""
    ones = np.ones(5, dtype=bool)
    _, (lo, hi) = paired_proportion_difference_ci(ones, ones)
    assert lo < -0.2 and hi > 0.2
    _, (lo, hi) = proportion_difference_ci(ones, _outcomes(70, 100))
    assert lo < 0 and hi > 0.3  # the bootstrap would give about [0.21, 0.39] around the gap 0.3


def test_paired_interval_with_an_empty_margin_is_the_independent_one() -> None:
    """With every ``a`` correct the 2x2 table has an empty margin, phi is 0, and Newcombe's paired
    interval reduces to the unpaired one built from the same two Wilson intervals."""
    a, b = np.ones(30, dtype=bool), _outcomes(21, 30)
    paired_diff, paired = paired_proportion_difference_ci(a, b)
    diff, independent = proportion_difference_ci(a, b)
    assert paired_diff == pytest.approx(diff) and paired == pytest.approx(independent, abs=1e-12)
    with pytest.raises(ValueError):
        paired_proportion_difference_ci(np.ones(3, dtype=bool), np.ones(4, dtype=bool))
