"""Tests for the stateful unlearning methods (SISA, amnesiac, DeltaGrad, MCMC) and unlearnable examples.

Each algorithm is checked against an independent reference: SISA against shards retrained from
scratch by a hand-written loop (bit-identical weights), amnesiac against a hand-written training
loop that records every update, per-sample amnesiac against per-sample gradients from plain
backward passes, DeltaGrad against plain GD on the remaining data, L-BFGS against the explicit
BFGS recursion, HMC against a known Gaussian, MCMC unlearning against an HMC run on the retained
data. Data: sklearn's 8x8 digits (or small synthetic sets); one CPU thread.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.datasets import load_digits
from torch import nn
from torch.nn.utils import parameters_to_vector

from unlearn_audit.archs import ArchSpec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, DataError, ModelError
from unlearn_audit.methods import UnlearnData, get_method
from unlearn_audit.methods.amnesiac import record_bytes
from unlearn_audit.methods.deltagrad import batch_schedule, deltagrad_replay, lbfgs_hvp
from unlearn_audit.methods.mcmc import (
    BayesLogReg,
    effective_sample_size,
    fit_bayes_logreg,
    hmc,
    identify_causes,
    per_example_loglik,
)
from unlearn_audit.methods.sisa import SisaEnsemble, assign_shards, sisa_seed, slice_epochs
from unlearn_audit.methods.unlearnable import UnlearnableNoise, error_minimizing_noise, protected_share_study
from unlearn_audit.models import load_model, save_checkpoint
from unlearn_audit.training import TrainConfig


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits() -> TensorSet:
    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(0).permutation(len(y))
    return TensorSet(
        torch.tensor(x[perm] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8),
        torch.tensor(y[perm], dtype=torch.int64),
    )


def mlp(seed: int, hidden: int = 12) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def split(ts: TensorSet, forget: list[int] | np.ndarray, *, indices: bool = True) -> UnlearnData:
    f = torch.as_tensor(np.asarray(forget), dtype=torch.long)
    keep = torch.as_tensor(np.setdiff1d(np.arange(len(ts)), f.numpy()))
    return UnlearnData(
        ts.x[f], ts.y[f], ts.x[keep], ts.y[keep], num_classes=10, forget_indices=f if indices else None
    )


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def roundtrip(obj: object) -> object:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def tensors_equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(tensors_equal(u, v) for u, v in zip(a, b, strict=True))
    return a == b


# =========================================================================== SISA


def hand_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, bs: int, lr: float, seed: int
):
    """train_model's recipe written out: Adam, a seeded permutation per epoch, global RNG seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=gen)
            for b in range(math.ceil(len(y) / bs)):
                idx = order[b * bs : (b + 1) * bs]
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    model.eval()


@pytest.fixture(scope="module")
def sisa_run(digits):
    train = TensorSet(digits.x[:240], digits.y[:240])
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, seed=3)
    method = get_method("sisa", shards=3, slices=3)
    trained = method.record_training(mlp(0), train, cfg, arch=ArchSpec("mlp", {"hidden": 12, "depth": 1}))
    return method, train, cfg, trained.model, trained.state, trained.arch


def test_sisa_unlearning_equals_retraining_the_affected_shards(sisa_run):
    method, train, cfg, ens, state, _ = sisa_run
    shard_of, slice_of = state["shard_of"].numpy(), state["slice_of"].numpy()
    # forget: two samples of shard 0 (one in slice 1, one in slice 2) and one of shard 2 (slice 2)
    pick = lambda s, r: int(np.flatnonzero((shard_of == s) & (slice_of == r))[0])  # noqa: E731
    forget = [pick(0, 1), pick(0, 2), pick(2, 2)]
    out = method.unlearn(ens, split(train, forget), state=state, seed=99)

    e = slice_epochs(cfg.epochs, 3)
    assert e == 1
    for s in range(3):
        if s == 1:  # untouched shard
            assert tensors_equal(state_of(out.model.members[1]), state_of(ens.members[1]))
            continue
        ref = mlp(0)  # from scratch: init under the shard's seed, then every slice without the forget set
        with torch.random.fork_rng():
            torch.manual_seed(sisa_seed(cfg.seed, s, 0))
            for m in ref.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        for r in range(3):
            idx = np.flatnonzero((shard_of == s) & (slice_of <= r) & ~np.isin(np.arange(240), forget))
            hand_train(
                ref, train.x[idx], train.y[idx], epochs=e, bs=32, lr=1e-2, seed=sisa_seed(cfg.seed, s, r + 1)
            )
        assert tensors_equal(state_of(out.model.members[s]), state_of(ref)), f"shard {s}"
        assert not tensors_equal(state_of(out.model.members[s]), state_of(ens.members[s]))

    # work redone: shard 0 from slice 1, shard 2 from slice 2, counted in sample passes
    sizes = {(s, r): int(((shard_of == s) & (slice_of <= r)).sum()) for s in range(3) for r in range(3)}
    total = e * sum(sizes.values())
    redone = e * ((sizes[0, 1] - 1) + (sizes[0, 2] - 2) + (sizes[2, 2] - 1))
    assert f"redid {redone} of {total} sample passes ({100 * redone / total:.1f}%" in out.notes[0]
    assert "shard 0 from slice 1, shard 2 from slice 2" in out.notes[0]
    assert out.touched == ("forget", "retain") and not out.model.training


def test_sisa_locates_forget_samples_by_content_and_refuses_bad_requests(sisa_run):
    method, train, _, ens, state, _ = sisa_run
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else copy.deepcopy(v)) for k, v in state.items()}
    by_index = method.unlearn(ens, split(train, [5, 77]), state=state)
    by_content = method.unlearn(ens, split(train, [5, 77], indices=False), state=state)
    assert tensors_equal(state_of(by_index.model), state_of(by_content.model))
    assert tensors_equal(state, before), "the given state must not change"
    assert int(by_index.state["removed"].sum()) == 2

    with pytest.raises(DataError, match="already unlearned"):
        method.unlearn(by_index.model, split(train, [5]), state=by_index.state)
    # a follow-up request on the new state works and is exact for the union
    again = method.unlearn(by_index.model, split(train, [6]), state=by_index.state)
    assert int(again.state["removed"].sum()) == 3
    with pytest.raises(DataError, match="differ from the training samples at their indices"):
        bad = split(train, [5])
        method.unlearn(
            ens,
            UnlearnData(
                bad.forget_x, bad.forget_y, bad.retain_x, bad.retain_y, 10, forget_indices=torch.tensor([6])
            ),
            state=state,
        )
    stranger = UnlearnData(torch.full((1, 1, 8, 8), 0.5), torch.tensor([3]), train.x, train.y, 10)
    with pytest.raises(DataError, match="not in the training set recorded"):
        method.unlearn(ens, stranger, state=state)
    with pytest.raises(ConfigError, match="needs the state recorded during training.*`for_method` sisa"):
        method.unlearn(ens, split(train, [5]))
    with pytest.raises(ModelError, match="shard 0 of the model differs"):
        method.unlearn(_perturbed(ens), split(train, [5]), state=state)
    retain_missing = split(train, [5])
    short = UnlearnData(
        retain_missing.forget_x,
        retain_missing.forget_y,
        retain_missing.retain_x[:10],
        retain_missing.retain_y[:10],
        10,
        forget_indices=retain_missing.forget_indices,
    )
    with pytest.raises(DataError, match="retain set lacks"):
        method.unlearn(ens, short, state=state)


def _perturbed(ens: SisaEnsemble) -> SisaEnsemble:
    other = copy.deepcopy(ens)
    with torch.no_grad():
        next(other.members[0].parameters()).add_(1.0)
    return other


def test_sisa_aggregation_is_a_vote_or_a_mean_of_probabilities():
    torch.manual_seed(0)
    members = [nn.Linear(5, 4) for _ in range(5)]
    x = torch.randn(300, 5)
    with torch.no_grad():
        probs = np.stack([F.softmax(m(x), 1).numpy() for m in members]).astype(np.float64)  # (S, N, K)
    mean = probs.mean(0)
    votes = np.zeros((300, 4))
    for p in probs:
        votes[np.arange(300), p.argmax(1)] += 1
    expected = [max(range(4), key=lambda c: (votes[i, c], mean[i, c])) for i in range(300)]

    vote = SisaEnsemble(members, "vote")
    with torch.no_grad():
        out = vote(x)
    assert out.shape == (300, 4) and out.dtype == torch.float32
    assert out.argmax(1).tolist() == expected
    assert any(len(set(row)) < 4 and sorted(row)[-1] == sorted(row)[-2] for row in votes.tolist()), (
        "no tie tested"
    )
    np.testing.assert_allclose(out.exp().sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(out.exp().numpy(), (votes + 1e-3 * mean) / (5 + 1e-3), rtol=1e-4, atol=1e-7)
    xg = x[:3].clone().requires_grad_(True)
    F.cross_entropy(vote(xg), torch.tensor([0, 1, 2])).backward()
    assert float(xg.grad.abs().sum()) > 0, "gradient attacks need a direction"

    np.testing.assert_allclose(
        SisaEnsemble(members, "mean")(x).detach().numpy(), np.log(mean), rtol=1e-5, atol=1e-6
    )


def test_sisa_ensemble_and_state_round_trip_through_a_native_checkpoint(sisa_run, tmp_path):
    method, train, _, ens, state, arch = sisa_run
    path = tmp_path / "sisa.pt"
    save_checkpoint(
        ens,
        path,
        arch=arch.name,
        num_classes=10,
        input_shape=(1, 8, 8),
        arch_kwargs=arch.kwargs,
        extra={"method_state": state},
    )
    raw = torch.load(path, weights_only=True)
    assert tensors_equal(raw["extra"]["method_state"], state)
    loaded = load_model(path)
    assert loaded.arch == "sisa" and isinstance(loaded.module, SisaEnsemble)
    assert loaded.arch_kwargs == {
        "base": "mlp",
        "shards": 3,
        "aggregation": "vote",
        "base_kwargs": {"hidden": 12, "depth": 1},
    }
    with torch.no_grad():
        assert torch.equal(loaded.module(train.x), ens(train.x))
    out = method.unlearn(loaded.module, split(train, [7]), state=loaded.metadata["extra"]["method_state"])
    assert tensors_equal(roundtrip(out.state), out.state)


def test_sisa_data_aware_sharding(digits):
    x, y = digits.x[:300], digits.y[:300]
    shard_of, slice_of = assign_shards(x, y, shards=5, slices=2, sharding="label", seed=0)
    labels = [sorted(set(y[shard_of == s].tolist())) for s in range(5)]
    assert all(ls == list(range(ls[0], ls[-1] + 1)) for ls in labels)  # each shard: a contiguous label range
    assert sum(len(ls) for ls in labels) <= 10 + 4  # each of the 4 cuts splits at most one label
    assert [int((shard_of == s).sum()) for s in range(5)] == [60] * 5
    shard_of, slice_of = assign_shards(x, y, shards=4, slices=2, sharding="kmeans", seed=0)
    km = KMeans(n_clusters=4, n_init=4, random_state=0).fit(x.reshape(300, -1).double().numpy())
    assert np.array_equal(shard_of, km.labels_)
    for s in range(4):
        sizes = np.bincount(slice_of[shard_of == s], minlength=2)
        assert abs(int(sizes[0]) - int(sizes[1])) <= 1
    shard_of, _ = assign_shards(x, y, shards=7, slices=3, sharding="random", seed=1)
    counts = np.bincount(shard_of)
    assert counts.sum() == 300 and counts.max() - counts.min() <= 1
    with pytest.raises(ConfigError, match="fewer than slices=80"):
        assign_shards(x, y, shards=5, slices=80, sharding="random", seed=0)


# =========================================================================== amnesiac


def test_amnesiac_subtracts_exactly_the_recorded_updates(digits):
    train = TensorSet(digits.x[:200], digits.y[:200])
    cfg = TrainConfig(epochs=2, batch_size=32, lr=1e-2, seed=1)
    sensitive = [3, 40, 41, 150, 199, 7]
    method = get_method("amnesiac")
    model, extra = method.train_with_state(mlp(0), train, cfg, sensitive=sensitive)
    state = extra["method_state"]

    # reference: the same training written out, recording every update
    ref = mlp(0)
    opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    deltas, batches_seen = [], []
    for _ in range(2):
        order = torch.randperm(200, generator=gen)
        for b in range(7):
            idx = order[b * 32 : (b + 1) * 32]
            before = parameters_to_vector(ref.parameters()).detach().clone()
            opt.zero_grad()
            F.cross_entropy(ref(train.x[idx]), train.y[idx]).backward()
            opt.step()
            deltas.append(parameters_to_vector(ref.parameters()).detach() - before)
            batches_seen.append(set(idx.tolist()))
    assert tensors_equal(state_of(model), state_of(ref)), "recording must not change training"
    recorded = [t for t, seen in enumerate(batches_seen) if seen & set(sensitive)]
    assert state["steps"].tolist() == recorded
    assert torch.equal(state["deltas"], torch.stack([deltas[t] for t in recorded]))

    forget = [40, 199]
    out = method.unlearn(model, split(train, forget), state=state)
    hit = [t for t in recorded if batches_seen[t] & set(forget)]
    expected = parameters_to_vector(ref.parameters()).double() - torch.stack(
        [deltas[t] for t in hit]
    ).double().sum(0)
    torch.testing.assert_close(
        parameters_to_vector(out.model.parameters()).detach(), expected.float(), atol=0, rtol=0
    )
    assert (
        out.touched == ("forget",) and f"subtracted {len(hit)} recorded batch updates of 14" in out.notes[0]
    )
    assert out.state["steps"].tolist() == [t for t in recorded if t not in hit]

    # the rest of the sensitive samples can follow, from the updated state and model
    rest = [i for i in sensitive if not any(i in batches_seen[t] for t in hit)]
    if rest:
        more = method.unlearn(out.model, split(train, rest), state=out.state)
        assert len(more.state["steps"]) < len(out.state["steps"])
    with pytest.raises(ConfigError, match="were not marked sensitive at training time"):
        method.unlearn(model, split(train, [0]), state=state)
    with pytest.raises(ModelError, match="differs from the one the state was recorded with"):
        method.unlearn(mlp(5), split(train, [3]), state=state)
    with pytest.raises(ConfigError, match="needs the retain set.*repair_epochs=0"):
        get_method("amnesiac", repair_epochs=1).unlearn(
            model, UnlearnData(train.x[:1], train.y[:1], None, None, 10), state=state
        )
    repaired = get_method("amnesiac", repair_epochs=1).unlearn(model, split(train, forget), state=state)
    assert repaired.touched == ("forget", "retain") and not tensors_equal(
        state_of(repaired.model), state_of(out.model)
    )
    with pytest.raises(ConfigError, match="needs the sensitive samples"):
        method.train_with_state(mlp(0), train, cfg)


def test_amnesiac_per_sample_records_add_up_to_the_training_update(digits):
    train = TensorSet(digits.x[:96], digits.y[:96])
    cfg = TrainConfig(epochs=2, batch_size=20, lr=0.05, optimizer="sgd", momentum=0.9, seed=2)
    theta0 = parameters_to_vector(mlp(0).parameters()).detach().clone()
    model, extra = get_method("amnesiac_per_sample", storage="float32").train_with_state(
        mlp(0), train, cfg, sensitive=np.arange(96)
    )
    state = extra["method_state"]
    theta_t = parameters_to_vector(model.parameters()).detach()
    # plain SGD with momentum and no weight decay: all samples' contributions = the whole update
    torch.testing.assert_close(
        (theta_t.double() + state["records"].double().sum(0)).float(), theta0, atol=2e-6, rtol=0
    )

    # slow reference for two samples: per-sample backward passes along the replayed trajectory
    ref = mlp(0)
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(2)
    total = 2 * 5
    rec = {11: torch.zeros_like(theta0), 60: torch.zeros_like(theta0)}
    step = 0
    for _ in range(2):
        order = torch.randperm(96, generator=gen)
        for b in range(5):
            idx = order[b * 20 : (b + 1) * 20]
            for i in rec:
                if i in idx.tolist():
                    ref.zero_grad()
                    F.cross_entropy(ref(train.x[i : i + 1]), train.y[i : i + 1]).backward()
                    g = torch.cat([p.grad.flatten() for p in ref.parameters()])
                    rec[i] += 0.05 / len(idx) * (1 - 0.9 ** (total - step)) / (1 - 0.9) * g
            opt.zero_grad()
            F.cross_entropy(ref(train.x[idx]), train.y[idx]).backward()
            opt.step()
            step += 1
    for i, r in rec.items():
        torch.testing.assert_close(state["records"][i], r, rtol=1e-4, atol=1e-7)
    out = get_method("amnesiac_per_sample").unlearn(model, split(train, [11, 60]), state=state)
    torch.testing.assert_close(
        parameters_to_vector(out.model.parameters()).detach(), theta_t + rec[11] + rec[60], rtol=0, atol=1e-6
    )

    # storage variants: dense float32 / float16, and top-k (float16 values + int32 positions)
    p = theta0.numel()
    half = get_method("amnesiac_per_sample", storage="float16").train_with_state(
        mlp(0), train, cfg, sensitive=[11, 60, 70]
    )[1]["method_state"]
    topk = get_method("amnesiac_per_sample", storage="topk", topk_fraction=0.1).train_with_state(
        mlp(0), train, cfg, sensitive=[11, 60, 70]
    )[1]["method_state"]
    k = math.ceil(0.1 * p)
    assert record_bytes(half) == 3 * p * 2 and record_bytes(topk) == 3 * k * (2 + 4)
    assert record_bytes(state) == 96 * p * 4
    dense = state["records"][11]
    kept = topk["positions"][0].long()
    assert set(kept.tolist()) == set(dense.abs().topk(k).indices.tolist())
    torch.testing.assert_close(topk["values"][0].float(), dense[kept], rtol=1e-3, atol=1e-6)
    assert topk["model_sha256"] == state["model_sha256"]  # recording never changes training
    out_topk = get_method("amnesiac_per_sample").unlearn(model, split(train, [11]), state=topk)
    moved = parameters_to_vector(out_topk.model.parameters()).detach() - theta_t
    assert int((moved != 0).sum()) <= k

    with pytest.raises(ConfigError, match="needs SGD training"):
        get_method("amnesiac_per_sample").train_with_state(mlp(0), train, TrainConfig(), sensitive=[1])
    with pytest.raises(ModelError, match="without BatchNorm"):
        get_method("amnesiac_per_sample").train_with_state(
            nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.BatchNorm1d(4), nn.Linear(4, 10)),
            train,
            cfg,
            sensitive=[1],
        )


# =========================================================================== DeltaGrad


def test_lbfgs_compact_form_matches_the_bfgs_recursion():
    g = torch.Generator().manual_seed(0)
    d, m = 7, 3
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    hess = a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)
    s = torch.randn(m, d, generator=g, dtype=torch.float64)
    y = s @ hess
    sigma = float(y[-1] @ s[-1] / (s[-1] @ s[-1]))
    b = sigma * torch.eye(d, dtype=torch.float64)
    for si, yi in zip(s, y, strict=True):
        bs = b @ si
        b = b - torch.outer(bs, bs) / (si @ bs) + torch.outer(yi, yi) / (yi @ si)
    v = torch.randn(d, generator=g, dtype=torch.float64)
    torch.testing.assert_close(lbfgs_hvp(s, y, v), b @ v)
    torch.testing.assert_close(lbfgs_hvp(s, y, s[-1]), y[-1])  # secant equation


def gd_reference(
    w0: torch.Tensor, x: torch.Tensor, y: torch.Tensor, schedule, keep: np.ndarray, *, lr: float, l2: float
) -> torch.Tensor:
    """Plain GD on the retained samples of each scheduled batch (skip a batch left empty)."""
    w = w0.clone()
    for batch in schedule:
        idx = [i for i in batch.tolist() if keep[i]]
        if not idx:
            continue
        wl = w.clone().requires_grad_(True)
        logits = x[idx].flatten(1) @ wl[:640].view(10, 64).T + wl[640:]
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y[idx]), wl)
        w = w - lr * (grad + l2 * w)
    return w


@pytest.mark.parametrize(("batch_size", "epochs", "ratio"), [(100_000, 120, 0.05), (128, 25, 0.2)])
def test_deltagrad_lands_close_to_retraining(digits, batch_size, epochs, ratio):
    n = 500
    train = TensorSet(digits.x[:n], digits.y[:n])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.5, optimizer="sgd", momentum=0.0, seed=4)
    method = get_method("deltagrad", l2=1e-3)
    model, extra = method.train_with_state(model, train, cfg)
    state = extra["method_state"]
    forget = np.random.default_rng(1).choice(n, 10, replace=False)
    keep = ~np.isin(np.arange(n), forget)
    schedule = batch_schedule(n, min(batch_size, n), epochs, 4)
    retrained = gd_reference(state["weights"][0], train.x, train.y, schedule, keep, lr=0.5, l2=1e-3)
    original = gd_reference(
        state["weights"][0], train.x, train.y, schedule, np.ones(n, dtype=bool), lr=0.5, l2=1e-3
    )
    torch.testing.assert_close(state["weights"][-1], original, atol=1e-5, rtol=0)

    out = method.unlearn(model, split(train, forget), state=state)
    w = parameters_to_vector(out.model.parameters()).detach()
    gap_orig = float((original - retrained).norm())
    gap_dg = float((w - retrained).norm())
    assert gap_dg < ratio * gap_orig, (gap_dg, gap_orig)
    exact = deltagrad_replay(model, state, train.x, train.y, deleted=np.sort(forget), exact=True)
    torch.testing.assert_close(exact.weights[-1], retrained, atol=1e-5, rtol=0)
    steps = len(schedule)
    assert f"{steps} GD steps: {20 + math.ceil((steps - 20) / 5)} exact" in out.notes[0]
    assert exact.exact_steps == steps and out.state["weights"].shape == state["weights"].shape


def test_deltagrad_addition_and_refusals(digits):
    n = 300
    train = TensorSet(digits.x[:n], digits.y[:n])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    cfg = TrainConfig(epochs=80, batch_size=10_000, lr=0.5, optimizer="sgd", momentum=0.0, seed=0)
    method = get_method("deltagrad", l2=1e-3)
    model, extra = method.train_with_state(model, train, cfg)
    state = extra["method_state"]
    new_x, new_y = digits.x[n : n + 15], digits.y[n : n + 15]
    approx = deltagrad_replay(
        model, state, train.x, train.y, deleted=np.zeros(0, dtype=np.int64), added_x=new_x, added_y=new_y
    )
    both_x, both_y = torch.cat([train.x, new_x]), torch.cat([train.y, new_y])
    schedule = [torch.arange(n + 15)] * 80
    ref = gd_reference(
        state["weights"][0], both_x, both_y, schedule, np.ones(n + 15, dtype=bool), lr=0.5, l2=1e-3
    )
    assert float((approx.weights[-1] - ref).norm()) < 0.1 * float((state["weights"][-1] - ref).norm())
    with pytest.raises(ConfigError, match="adversarial training is not supported"):
        method.train_with_state(model, train, TrainConfig(adversarial="fgsm"))
    with pytest.raises(ModelError, match="differs from the last cached iterate"):
        method.unlearn(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), split(train, [1]), state=state)


# =========================================================================== MCMC


def test_hmc_samples_a_correlated_gaussian():
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
    prec, mu = torch.linalg.inv(cov), torch.tensor([1.0, -2.0], dtype=torch.float64)
    res = hmc(
        lambda z: -0.5 * (((z - mu) @ prec) * (z - mu)).sum(1),
        torch.zeros(8, 2, dtype=torch.float64),
        num_samples=250,
        warmup=200,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.samples.shape == (2000, 2) and 0.6 < res.accept_rate <= 1.0
    torch.testing.assert_close(res.samples.mean(0), mu, atol=0.15, rtol=0)
    torch.testing.assert_close(torch.cov(res.samples.T), cov, atol=0.25, rtol=0)


def toy_logistic(n: int = 50, bad: int = 5, seed: int = 0):
    """A 2-D problem plus ``bad`` mislabelled points in one corner: deleting them moves the posterior."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g)
    y = (x[:, 0] + 0.3 * torch.randn(n, generator=g) > 0.5).long()
    bad_x = torch.tensor([[0.9, 0.9], [0.85, 0.95], [0.95, 0.8], [0.8, 0.85], [0.9, 0.75]])[:bad]
    return torch.cat([bad_x, x]), torch.cat([torch.zeros(bad, dtype=torch.long), y]), g


@pytest.mark.parametrize(("bad", "temperature"), [(3, 1.0), (5, 2.0)])
def test_mcmc_unlearning_reweights_towards_the_retrained_posterior(bad, temperature):
    x, y, _ = toy_logistic(100, bad)
    method = get_method("mcmc_unlearn", num_samples=1600, chains=8, warmup=200, temperature=temperature)
    model, extra = method.train_with_state(nn.Linear(2, 2), TensorSet(x, y), TrainConfig(seed=0))
    state = extra["method_state"]
    assert isinstance(model, BayesLogReg) and state["loglik"].shape == (100 + bad, 1600)
    ll = per_example_loglik(model.samples, x, y)
    torch.testing.assert_close(state["loglik"], ll)
    out = method.unlearn(
        model, UnlearnData(x[:bad], y[:bad], None, None, 2, forget_indices=torch.arange(bad)), state=state
    )
    lw = out.model.log_weights.double()
    assert abs(float(torch.logsumexp(lw, 0))) < 1e-5  # normalised
    s = model.samples.double()
    log_prior = -0.5 * (s * s).sum(dim=(1, 2)) / 3.0**2
    by_hand = log_prior + ll[bad:].sum(0) - (log_prior + ll.sum(0)) / temperature  # p(theta | D_r) / q(theta)
    if temperature == 1.0:
        torch.testing.assert_close(by_hand, -ll[:bad].sum(0))  # w ∝ 1 / p(D_e | theta)
    torch.testing.assert_close(lw, by_hand - torch.logsumexp(by_hand, 0), atol=1e-5, rtol=0)
    ess = effective_sample_size(lw)
    assert ess == pytest.approx(1 / float((torch.softmax(by_hand, 0) ** 2).sum()), rel=1e-6)
    assert f"effective sample size {ess:.1f}" in out.notes[0] and out.touched == ("forget",)

    retrained, _ = fit_bayes_logreg(x[bad:], y[bad:], 2, num_samples=1600, chains=8, warmup=200, seed=1)
    grid = torch.stack(torch.meshgrid(torch.linspace(0, 1, 6), torch.linspace(0, 1, 6), indexing="ij"), -1)
    with torch.no_grad():
        p_new, p_old, p_ret = (m(grid.reshape(-1, 2)).exp()[:, 1] for m in (out.model, model, retrained))
    gap_new, gap_old = float((p_new - p_ret).abs().mean()), float((p_old - p_ret).abs().mean())
    assert gap_new < 0.015 and gap_new < 0.25 * gap_old, (gap_new, gap_old)
    with pytest.raises(ConfigError, match="below min_ess=0.9"):
        get_method("mcmc_unlearn", min_ess=0.9, num_samples=1600, chains=8).unlearn(
            model, UnlearnData(x[:bad], y[:bad], None, None, 2), state=state
        )


def test_identify_causes_finds_the_mislabelled_points():
    x, y, g = toy_logistic()
    model, _ = fit_bayes_logreg(x, y, 2, num_samples=800, chains=8, warmup=150, seed=0)
    fail_x = torch.tensor([[0.88, 0.88], [0.9, 0.82], [0.82, 0.9], [0.95, 0.95]])
    fail_y = torch.ones(4, dtype=torch.long)
    report = identify_causes(model, x, y, fail_x, fail_y, update="reweight")
    lw = F.log_softmax(model.log_weights.double(), 0) + per_example_loglik(model.samples, fail_x, fail_y).sum(
        0
    )
    w_after = torch.softmax(lw, 0)
    ll = per_example_loglik(model.samples, x, y)
    torch.testing.assert_close(report.scores, ll.mean(1) - ll @ w_after)
    assert set(range(5)) <= set(report.causes[:8].tolist())  # the planted causes rank at the top
    assert bool((report.scores[report.causes] > 0).all()) and report.ess is not None
    resampled = identify_causes(model, x, y, fail_x, fail_y, update="resample", warmup=150, top_k=5)
    assert len(set(resampled.causes.tolist()) & set(range(5))) >= 4 and resampled.ess is None


def test_stateful_methods_keep_the_caller_inputs_and_serialise_their_state(digits):
    """Generic contract for every stateful method: input model, state and RNG untouched; safe state."""
    train = TensorSet(digits.x[:120], digits.y[:120])
    two = TensorSet(train.x[train.y < 2], train.y[train.y < 2])
    marked = {"sensitive": [0, 1, 2, 3]}
    cases = {
        "sisa": ({"shards": 2, "slices": 2}, TrainConfig(epochs=1, batch_size=32), train, {}),
        "amnesiac": ({}, TrainConfig(epochs=1, batch_size=32), train, marked),
        "amnesiac_per_sample": (
            {},
            TrainConfig(epochs=1, batch_size=32, optimizer="sgd", lr=0.05),
            train,
            marked,
        ),
        "deltagrad": (
            {},
            TrainConfig(epochs=30, batch_size=1000, optimizer="sgd", lr=0.5, momentum=0.0),
            train,
            {},
        ),
        "mcmc_unlearn": ({"num_samples": 40, "chains": 4, "warmup": 20}, TrainConfig(), two, {}),
    }
    for name, (params, cfg, data, extra_args) in cases.items():
        method = get_method(name, **params)
        base = nn.Sequential(nn.Flatten(), nn.Linear(64, 10 if name != "mcmc_unlearn" else 2))
        model, extra = method.train_with_state(base, data, cfg, **extra_args)
        state = extra["method_state"]
        assert tensors_equal(roundtrip(state), state), name
        snapshot = roundtrip(state)
        before = state_of(model)
        model.train()
        rng = torch.get_rng_state()
        k = data.y.max().item() + 1
        keep = torch.arange(4, len(data))
        udata = UnlearnData(
            data.x[:4], data.y[:4], data.x[keep], data.y[keep], int(k), forget_indices=torch.arange(4)
        )
        calls: list[tuple[int, int]] = []
        out = method.unlearn(model, udata, state=state, progress=lambda d, t, c=calls: c.append((d, t)))
        assert model.training and tensors_equal(state_of(model), before), name
        assert tensors_equal(state, snapshot), name
        assert torch.equal(torch.get_rng_state(), rng), name
        assert not out.model.training and out.method == name and out.state is not None
        assert calls and calls[-1][0] == calls[-1][1] > 0, name
        assert tensors_equal(roundtrip(out.state), out.state), name
        assert getattr(method, "needs_state", False) and method.state_name == name


# =========================================================================== unlearnable examples


def test_error_minimizing_noise_is_a_learnable_shortcut():
    g = torch.Generator().manual_seed(0)
    mu = 0.5 + 0.025 * torch.randn(4, 256, generator=g)

    def make(n: int):
        yy = torch.randint(0, 4, (n,), generator=g)
        return (mu[yy] + 0.2 * torch.randn(n, 256, generator=g)).clamp(0, 1).view(n, 1, 16, 16), yy

    x, y = make(800)
    tx, ty = make(800)

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))

    eps = 16 / 255
    noise = error_minimizing_noise(net(0), x, y, eps=eps, step_size=eps / 10, lr=0.01, max_rounds=20)
    assert float(noise.delta.abs().max()) <= eps + 1e-6
    assert float((x + noise.delta).min()) >= -1e-6 and float((x + noise.delta).max()) <= 1 + 1e-6
    assert noise.train_error < 0.01
    random_delta = torch.max(torch.min((torch.rand(x.shape, generator=g) * 2 - 1) * eps, 1 - x), -x)
    results = {
        name: protected_share_study(
            net, x, y, tx, ty, shares=(0.0, 1.0), epochs=15, noise=UnlearnableNoise(delta, 0, 0.0, 0.0)
        )
        for name, delta in (("em", noise.delta), ("random", random_delta))
    }
    clean, em_full = results["em"]
    assert clean.n_protected == 0 and math.isnan(clean.protected_acc_with_protected)
    assert clean.test_acc_clean_only == clean.test_acc_with_protected  # nothing protected: same model
    assert em_full.n_protected == 800 and math.isnan(em_full.test_acc_clean_only)
    rand_full = results["random"][1]
    assert abs(rand_full.test_acc_with_protected - clean.test_acc_clean_only) < 0.05  # random noise: harmless
    assert em_full.test_acc_with_protected < rand_full.test_acc_with_protected - 0.08
    with pytest.raises(ConfigError, match="shares must lie in"):
        protected_share_study(net, x, y, tx, ty, shares=(1.5,), noise=noise)
