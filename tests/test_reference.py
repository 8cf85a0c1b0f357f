"""Tests for attacks.reference: LiRA, RMIA and U-LiRA against slow loops, vmap vs loop training, the cache."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch import nn

from attacks.reference import (
    STD_FLOOR,
    SignalCache,
    benchmark_strategies,
    lira_offline,
    lira_online,
    resolve_strategy,
    rmia,
    train_reference_models,
    ulira_scores,
)
from unlearn_audit.errors import ConfigError, DataError


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # Tiny models on a shared 2-core machine: intra-op threads only add synchronisation cost.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- slow references


def slow_lira_offline(target, ref_out, fix_variance=False):
    n = len(target)
    pooled = np.sqrt(np.mean([np.var(ref_out[i], ddof=1) for i in range(n)]))
    out = np.empty(n)
    for i in range(n):
        mu = np.mean(ref_out[i])
        sd = pooled if fix_variance else np.std(ref_out[i], ddof=1)
        out[i] = (target[i] - mu) / max(sd, STD_FLOOR)
    return out


def slow_pooled_std(ref, mask):
    ss, dof = 0.0, 0
    for i in range(ref.shape[0]):
        vals = ref[i][mask[i]]
        if len(vals) >= 1:
            ss += np.sum((vals - vals.mean()) ** 2)
            dof += len(vals) - 1
    return np.sqrt(ss / dof)


def slow_lira_online(target, ref, in_mask, fix_variance=False):
    pooled_in, pooled_out = slow_pooled_std(ref, in_mask), slow_pooled_std(ref, ~in_mask)
    out = np.empty(len(target))
    for i in range(len(target)):
        ins, outs = ref[i][in_mask[i]], ref[i][~in_mask[i]]
        s_in = pooled_in if fix_variance or len(ins) < 2 else np.std(ins, ddof=1)
        s_out = pooled_out if fix_variance or len(outs) < 2 else np.std(outs, ddof=1)
        out[i] = norm.logpdf(target[i], np.mean(ins), s_in) - norm.logpdf(target[i], np.mean(outs), s_out)
    return out


def slow_rmia(tx, rx, in_mask, tz, rz, a, gamma):
    def p_of(row, mask_row):
        if mask_row is None or not mask_row.any():
            return (1 + a) / 2 * np.mean(row) + (1 - a) / 2
        return 0.5 * (np.mean(row[mask_row]) + np.mean(row[~mask_row]))

    p_z = [p_of(rz[j], None) for j in range(len(tz))]
    scores = np.empty(len(tx))
    for i in range(len(tx)):
        ratio_x = tx[i] / p_of(rx[i], None if in_mask is None else in_mask[i])
        wins = 0
        for j in range(len(tz)):
            if ratio_x / (tz[j] / p_z[j]) > gamma:
                wins += 1
        scores[i] = wins / len(tz)
    return scores


# ----------------------------------------------------------------------------- LiRA / RMIA vs loops


@pytest.mark.parametrize("fix_variance", [False, True])
def test_lira_offline_matches_loop_and_is_the_one_sided_gaussian_test(fix_variance):
    rng = np.random.default_rng(0)
    n, r = 40, 6
    ref = rng.normal(rng.normal(0, 3, size=(n, 1)), rng.uniform(0.3, 2, size=(n, 1)), size=(n, r))
    target = rng.normal(0, 3, size=n)
    got = lira_offline(target, ref, fix_variance=fix_variance)
    np.testing.assert_allclose(got, slow_lira_offline(target, ref, fix_variance), rtol=1e-12, atol=1e-12)
    if not fix_variance:
        # Phi(score) is the paper's Pr[Z <= target], Z ~ N(mu_out, s_out^2).
        expected = [norm.cdf(target[i], loc=ref[i].mean(), scale=ref[i].std(ddof=1)) for i in range(n)]
        np.testing.assert_allclose(norm.cdf(got), expected, rtol=1e-10)


def test_lira_offline_rejects_single_reference_and_bad_shapes():
    with pytest.raises(ConfigError, match="R=1"):
        lira_offline(np.zeros(3), np.zeros((3, 1)))
    with pytest.raises(DataError, match="ref_out"):
        lira_offline(np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(DataError, match="finite"):
        lira_offline(np.array([0.0, np.nan]), np.zeros((2, 3)))


def test_lira_offline_constant_references_are_floored_not_infinite():
    got = lira_offline(np.array([1.0]), np.zeros((1, 4)))
    assert got[0] == pytest.approx(1.0 / STD_FLOOR)


@pytest.mark.parametrize("fix_variance", [False, True])
def test_lira_online_matches_scipy_loop(fix_variance):
    rng = np.random.default_rng(1)
    n, r = 50, 8
    ref = rng.normal(size=(n, r)) + rng.normal(0, 2, size=(n, 1))
    # Balanced-ish split with at least 2 IN and 2 OUT per row, so no fallback is involved.
    in_mask = np.zeros((n, r), dtype=bool)
    for i in range(n):
        in_mask[i, rng.choice(r, size=rng.integers(2, r - 1), replace=False)] = True
    ref = ref + 1.5 * in_mask
    target = rng.normal(size=n)
    got = lira_online(target, ref, in_mask, fix_variance=fix_variance)
    np.testing.assert_allclose(
        got, slow_lira_online(target, ref, in_mask, fix_variance), rtol=1e-10, atol=1e-10
    )


def test_lira_online_fallbacks_are_as_documented(caplog):
    rng = np.random.default_rng(2)
    r = 6
    ref = rng.normal(size=(4, r))
    in_mask = np.array(
        [
            [1, 1, 1, 0, 0, 0],  # full
            [1, 1, 0, 0, 0, 0],  # full
            [1, 0, 0, 0, 0, 0],  # one IN: pooled IN std
            [0, 0, 0, 0, 0, 0],  # no IN: mean shifted, pooled IN std
        ],
        dtype=bool,
    )
    target = np.array([0.3, -0.2, 0.5, 1.0])
    with caplog.at_level(logging.WARNING, logger="attacks.lira"):
        got = lira_online(target, ref, in_mask)
    assert "fallbacks" in caplog.text
    np.testing.assert_allclose(got[:2], slow_lira_online(target[:2], ref[:2], in_mask[:2])[:2], rtol=1e-10)
    pooled_in = slow_pooled_std(ref, in_mask)
    row2 = norm.logpdf(target[2], ref[2, 0], pooled_in) - norm.logpdf(
        target[2], ref[2, 1:].mean(), ref[2, 1:].std(ddof=1)
    )
    assert got[2] == pytest.approx(row2, rel=1e-10)
    shift = np.median([ref[i][in_mask[i]].mean() - ref[i][~in_mask[i]].mean() for i in range(3)])
    mu_out3 = ref[3].mean()
    row3 = norm.logpdf(target[3], mu_out3 + shift, pooled_in) - norm.logpdf(
        target[3], mu_out3, ref[3].std(ddof=1)
    )
    assert got[3] == pytest.approx(row3, rel=1e-10)


def test_lira_online_without_any_in_reference_raises():
    with pytest.raises(ConfigError, match="lira_offline"):
        lira_online(np.zeros(3), np.zeros((3, 4)), np.zeros((3, 4), dtype=bool))
    with pytest.raises(DataError, match="boolean"):
        lira_online(np.zeros(3), np.zeros((3, 4)), np.zeros((3, 4)))


@pytest.mark.parametrize("online", [False, True])
@pytest.mark.parametrize("gamma,a", [(1.0, 0.3), (2.0, 0.0), (0.5, 1.0)])
def test_rmia_matches_pairwise_loop(online, gamma, a):
    rng = np.random.default_rng(3)
    n, m, r = 30, 45, 4
    rx, rz = rng.uniform(0.05, 1, size=(n, r)), rng.uniform(0.05, 1, size=(m, r))
    tx, tz = rng.uniform(0, 1, size=n), rng.uniform(0, 1, size=m)
    in_mask = None
    if online:
        in_mask = rng.random((n, r)) < 0.5
        in_mask[:, 0], in_mask[:, 1] = True, False  # every row has both sides here
        in_mask[:3] = False  # ... except three offline rows
    got = rmia(tx, rx, in_mask, tz, rz, a=a, gamma=gamma)
    np.testing.assert_array_equal(got, slow_rmia(tx, rx, in_mask, tz, rz, a, gamma))
    assert got.min() >= 0 and got.max() <= 1 and 0 < got.mean() < 1


def test_rmia_validates_inputs():
    p = np.full(3, 0.5)
    refs = np.full((3, 2), 0.5)
    with pytest.raises(ConfigError, match="a must"):
        rmia(p, refs, None, p, refs, a=1.5)
    with pytest.raises(ConfigError, match="gamma"):
        rmia(p, refs, None, p, refs, gamma=0.0)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        rmia(p + 1, refs, None, p, refs)
    with pytest.raises(DataError, match="same R"):
        rmia(p, refs, None, p, np.full((3, 3), 0.5))


# ----------------------------------------------------------------------------- synthetic power


def _synthetic_world(seed=4, n=2000, r=16):
    """Per-example difficulty mu_i and noise s_i; training on x shifts its score by delta_i."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(0, 3, size=n)
    s = rng.uniform(0.5, 1.5, size=n)
    delta = rng.uniform(0.5, 3.0, size=n)
    in_mask = rng.random((n, r)) < 0.5
    ref = mu[:, None] + s[:, None] * rng.normal(size=(n, r)) + delta[:, None] * in_mask
    member = rng.random(n) < 0.5
    target = mu + s * rng.normal(size=n) + delta * member
    return target, ref, in_mask, member


def test_online_beats_offline_beats_chance_on_synthetic_shift():
    target, ref, in_mask, member = _synthetic_world()
    # Offline references must be OUT: give each example its OUT columns only (pad by resampling).
    rng = np.random.default_rng(5)
    ref_out = np.empty((len(target), 6))
    for i in range(len(target)):
        outs = ref[i][~in_mask[i]]
        ref_out[i] = rng.choice(outs, size=6, replace=len(outs) < 6) if len(outs) >= 2 else ref[i, :6] - 1.75
    auc_online = roc_auc_score(member, lira_online(target, ref, in_mask, fix_variance=True))
    auc_offline = roc_auc_score(member, lira_offline(target, ref_out, fix_variance=True))
    auc_global = roc_auc_score(member, target)
    assert auc_online > auc_offline > auc_global > 0.5
    assert auc_offline > 0.6


def test_ulira_equals_pooled_offline_lira_and_separates_original_from_retrained():
    rng = np.random.default_rng(6)
    n_f, n_t, r = 300, 300, 8
    mu = rng.normal(0, 3, size=n_f + n_t)
    ref = mu[:, None] + rng.normal(size=(n_f + n_t, r))  # retrained: nobody has seen anything
    original = mu + rng.normal(size=n_f + n_t) + np.r_[np.full(n_f, 2.0), np.zeros(n_t)]
    retrained = mu + rng.normal(size=n_f + n_t)
    f, t = slice(0, n_f), slice(n_f, None)

    fs, ts = ulira_scores(original[f], ref[f], original[t], ref[t], fix_variance=True)
    np.testing.assert_allclose(np.r_[fs, ts], slow_lira_offline(original, ref, fix_variance=True), rtol=1e-12)
    labels = np.r_[np.ones(n_f), np.zeros(n_t)]
    assert roc_auc_score(labels, np.r_[fs, ts]) > 0.85
    fs2, ts2 = ulira_scores(retrained[f], ref[f], retrained[t], ref[t])
    assert abs(roc_auc_score(labels, np.r_[fs2, ts2]) - 0.5) < 0.08
    with pytest.raises(DataError, match="same reference models"):
        ulira_scores(original[f], ref[f], original[t], ref[t, :4])


# ----------------------------------------------------------------------------- training


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))


def _bn_mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(10, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _toy_data(n=150):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _max_param_diff(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v - sb[k]).abs().max()) for k, v in a.state_dict().items())


def test_loop_follows_documented_seeding_contract():
    x, y = _toy_data()
    (model,) = train_reference_models(
        _mlp, x, y, seeds=[7], epochs=2, batch_size=32, lr=1e-2, strategy="loop"
    )
    # Independent plain training loop following the docstring.
    torch.manual_seed(7)
    ref = _mlp()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(7)
    for _ in range(2):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), 32):
            idx = perm[start : start + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(ref(x[idx]), y[idx]).backward()
            opt.step()
    assert _max_param_diff(model, ref) == 0.0
    assert not model.training


def test_vmap_training_equals_loop_training_and_leaves_global_rng_alone():
    x, y = _toy_data()
    state = torch.random.get_rng_state()
    kwargs = dict(seeds=[0, 1, 2], epochs=3, batch_size=32, lr=1e-2, weight_decay=1e-4)
    seen = []
    looped = train_reference_models(_mlp, x, y, strategy="loop", **kwargs)
    vmapped = train_reference_models(
        _mlp, x, y, strategy="vmap", progress=lambda d, t: seen.append((d, t)), **kwargs
    )
    assert torch.equal(torch.random.get_rng_state(), state)
    assert seen == [(3, 9), (6, 9), (9, 9)]
    for a, b in zip(looped, vmapped, strict=True):
        assert _max_param_diff(a, b) < 1e-5
    # Different seeds give different models, and training moved the weights (non-vacuous).
    assert _max_param_diff(looped[0], looped[1]) > 1e-2
    torch.manual_seed(0)
    assert _max_param_diff(looped[0], _mlp()) > 1e-2
    with torch.no_grad():
        torch.manual_seed(0)
        assert nn.functional.cross_entropy(looped[0](x), y) < 0.8 * nn.functional.cross_entropy(_mlp()(x), y)


def test_strategy_resolution_and_benchmark():
    assert resolve_strategy(_mlp(), "auto") == "vmap"
    assert resolve_strategy(_bn_mlp(), "auto") == "loop"
    assert resolve_strategy(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)), "auto") == "loop"
    x, y = _toy_data(60)
    with pytest.raises(ConfigError, match="BatchNorm"):
        train_reference_models(_bn_mlp, x, y, seeds=[0], epochs=1, strategy="vmap")
    with pytest.raises(ConfigError, match="distinct"):
        train_reference_models(_mlp, x, y, seeds=[1, 1], epochs=1)
    with pytest.raises(DataError, match="integer"):
        train_reference_models(_mlp, x, y.float(), seeds=[1], epochs=1)
    bn_models = train_reference_models(_bn_mlp, x, y, seeds=[0, 1], epochs=1, batch_size=16)  # auto -> loop
    assert len(bn_models) == 2 and bn_models[0][1].num_batches_tracked.item() == 4
    bench = benchmark_strategies(_mlp, x, y, seeds=[0, 1], epochs=1, batch_size=16)
    assert bench.num_models == 2 and bench.loop_seconds > 0 and bench.vmap_seconds > 0
    assert bench.max_abs_param_diff < 1e-5


# ----------------------------------------------------------------------------- cache


def test_signal_cache_computes_once_and_keys_on_model_data_and_key(tmp_path: Path):
    x, y = _toy_data(20)
    torch.manual_seed(0)
    model = _mlp()
    calls = []

    def compute(m, xs):
        calls.append(1)
        with torch.no_grad():
            return m(xs)

    cache = SignalCache(tmp_path / "cache")
    first = cache.get_or_compute(model, x, y, compute, key="logits:forget")
    second = cache.get_or_compute(model, x, y, compute, key="logits:forget")
    assert len(calls) == 1
    np.testing.assert_array_equal(first, second)
    with torch.no_grad():
        np.testing.assert_array_equal(second, model(x).numpy())
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".npz"]  # no temp files left

    cache.get_or_compute(model, x, y, compute, key="logits:test")  # other key
    cache.get_or_compute(model, x, (y + 1) % 3, compute, key="logits:forget")  # other labels
    with torch.no_grad():
        model[0].weight[0, 0] += 1e-3
    cache.get_or_compute(model, x, y, compute, key="logits:forget")  # other weights
    assert len(calls) == 4
    # A fresh cache object on the same folder reuses the entries (a re-run costs nothing).
    SignalCache(tmp_path / "cache").get_or_compute(model, x, y, compute, key="logits:forget")
    assert len(calls) == 4


def test_signal_cache_recovers_from_a_corrupt_entry(tmp_path: Path):
    x, y = _toy_data(10)
    model = _mlp()
    cache = SignalCache(tmp_path)
    path = cache.path_for(model, x, y, key="k")
    path.write_bytes(b"not a zip file")
    out = cache.get_or_compute(model, x, y, lambda m, xs: np.arange(3.0), key="k")
    np.testing.assert_array_equal(out, np.arange(3.0))
    np.testing.assert_array_equal(
        cache.get_or_compute(model, x, y, lambda m, xs: None, key="k"), np.arange(3.0)
    )
