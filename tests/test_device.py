"""Device-agnostic tensor paths: distances in chunks on the model's device, mixed precision, CUDA.

The CPU paths are tested here on CPU; the tests that need a GPU are skipped without one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearn_audit import metrics
from unlearn_audit.integrity import float_tensors, relative_parameter_change
from unlearn_audit.metrics import pair_sums, parameter_distance

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _pair(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 3))
    b = nn.Sequential(nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 3))
    return a, b


def test_pair_sums_in_small_chunks_equal_numpy(monkeypatch):
    a, b = torch.randn(7, 9), torch.randn(7, 9)
    monkeypatch.setattr(metrics, "CHUNK", 5)  # 63 elements: 13 chunks, the last one short
    got = pair_sums(a, b).tolist()
    x, y = a.double().numpy().ravel(), b.double().numpy().ravel()
    want = [np.sum((x - y) ** 2), np.sum(x**2), np.sum(y**2), np.sum(x * y)]
    assert got == pytest.approx(want, rel=1e-12)


def test_distances_do_not_depend_on_the_chunk_size(monkeypatch):
    a, b = _pair()
    whole = parameter_distance(a, b)
    change = relative_parameter_change(a, b)
    monkeypatch.setattr(metrics, "CHUNK", 4)
    chunked = parameter_distance(a, b)
    assert chunked.l2 == pytest.approx(whole.l2, rel=1e-12)
    assert chunked.cosine == pytest.approx(whole.cosine, rel=1e-12)
    assert chunked.per_layer == pytest.approx(whole.per_layer, rel=1e-12)
    assert relative_parameter_change(a, b).relative == pytest.approx(change.relative, rel=1e-12)


def test_integrity_reads_the_weights_where_they_are():
    a, _ = _pair()
    held = float_tensors(a)
    # The very storage of the parameters: nothing was copied to the host or to float64.
    assert {t.data_ptr() for t in held} == {p.data_ptr() for p in a.parameters()}
    assert all(t.dtype == torch.float32 for t in held)


def test_half_precision_weights_are_summed_in_float64():
    a, b = _pair()
    want = parameter_distance(a.double(), b.double())
    got = parameter_distance(a.half(), b.half())  # the half weights, exactly, summed in float64
    assert got.l2 == pytest.approx(want.l2, rel=5e-3)
    assert math.isfinite(got.relative)


def test_cuda_without_cuda_is_one_line_exit_2(run_cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    code, _, err = run_cli(
        ["train", "--data", "digits", "--arch", "mlp", "--device", "cuda", "--out", tmp_path / "m.pt"]
    )
    assert code == 2
    assert "CUDA is not available" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16, torch.tensor(d.target)


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x.to(next(model.parameters()).device)).argmax(1).cpu() == y).float().mean())


@pytest.mark.parametrize("strategy", ["loop", "vmap"])
def test_mixed_precision_reference_training_learns_in_float32_weights(digits, strategy):
    from attacks.reference_training import train_reference_models

    x, y = digits
    kw = dict(seeds=[0, 1], epochs=3, lr=3e-3, strategy=strategy)
    full = train_reference_models(_mlp, x, y, **kw)
    mixed = train_reference_models(_mlp, x, y, mixed_precision=True, **kw)
    for f, m in zip(full, mixed, strict=True):
        assert all(p.dtype == torch.float32 for p in m.parameters())
        assert parameter_distance(f, m).l2 > 0  # it really ran in bfloat16
        assert _accuracy(m, x, y) > 0.85 and abs(_accuracy(m, x, y) - _accuracy(f, x, y)) < 0.05


def test_mixed_precision_references_are_cached_apart(tmp_path):
    from unlearn_audit.api import train_checkpoint
    from unlearn_audit.data import load_dataset, make_roles
    from unlearn_audit.models import load_model
    from unlearn_audit.reference_models import train_reference_set

    path = tmp_path / "orig.pt"
    train_checkpoint(
        out=path, data="digits", arch="mlp", forget="random:100", overrides={"epochs": 1}, device="cpu"
    )
    original, roles = load_model(path, device="cpu"), make_roles(load_dataset("digits"), "random:100", seed=0)
    kw = dict(count=1, seed=0, device="cpu", cache_dir=tmp_path / "cache")
    mixed = train_reference_set(original, roles, mixed_precision=True, **kw)
    full = train_reference_set(original, roles, **kw)
    assert [e["source"] for e in full.listing] == ["trained"]  # not the mixed-precision model
    assert [
        e["source"] for e in train_reference_set(original, roles, mixed_precision=True, **kw).listing
    ] == ["cache"]
    assert parameter_distance(mixed.models[0], full.models[0]).l2 > 0


@cuda
def test_distances_on_cuda_equal_the_cpu_ones():
    a, b = _pair()
    cpu = parameter_distance(a, b)
    gpu = parameter_distance(a.cuda(), b.cuda())
    assert gpu.l2 == pytest.approx(cpu.l2, rel=1e-9)
    assert relative_parameter_change(a.cuda(), b.cuda()).relative == pytest.approx(
        relative_parameter_change(a, b).relative, rel=1e-9
    )


@cuda
def test_reference_training_on_cuda_in_mixed_precision(digits):
    from attacks.reference_training import train_reference_models

    x, y = digits
    models = train_reference_models(
        _mlp, x, y, seeds=[0], epochs=3, lr=3e-3, device="cuda", mixed_precision=True
    )
    assert next(models[0].parameters()).is_cuda and _accuracy(models[0], x, y) > 0.85
