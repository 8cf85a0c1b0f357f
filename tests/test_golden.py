"""Golden results: a seeded ``evaluate`` and a tiny ``benchmark`` give the same JSON as recorded.

Pins behaviour across refactors. Both runs are seeded end to end (data split, forget set,
training, unlearning, bootstraps, reference models, attacks) on one CPU thread, so their
results are deterministic on a given machine. Timings, provenance (versions, dates, the
command line), file hashes (checkpoints embed their own training time) and temporary paths are
dropped before the comparison; every other number must agree to 1e-6.

Regenerate after an *intended* change of results with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py

and say in the commit why the figures moved.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"
VOLATILE = {"timings", "provenance", "sha256", "seconds", "path", "generated", "command"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def normalise(value, tmp: str):
    """Drop volatile keys, replace the temporary folder by ``<tmp>``."""
    if isinstance(value, dict):
        return {k: normalise(v, tmp) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalise(v, tmp) for v in value]
    if isinstance(value, str):
        return value.replace(tmp, "<tmp>")
    return value


def assert_same(got, want, where: str = "$") -> None:
    """Structural equality with floats compared to 1e-6 (relative or absolute)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {type(got).__name__} instead of an object"
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: list length differs"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        assert math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-6), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def check_golden(name: str, result: dict, tmp: str) -> None:
    got = normalise(result, tmp)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    assert_same(got, want)


def test_evaluate_matches_golden(run_cli, tmp_path):
    data = ["--data", "digits", "--forget", "random:150", "--seed", "0", "--device", "cpu"]
    train = ["train", "--arch", "mlp", "--epochs", "8", *data]
    assert run_cli([*train, "--out", tmp_path / "orig.pt"]).code == 0
    assert run_cli([*train, "--without-forget", "--out", tmp_path / "retr.pt"]).code == 0
    code, _, err = run_cli(
        ["unlearn", "--method", "finetune", "--model", tmp_path / "orig.pt", "--set", "epochs=2",
         *data, "--out", tmp_path / "unl.pt"]
    )  # fmt: skip
    assert code == 0, err
    policy = tmp_path / "policy.toml"
    policy.write_text("[statistics]\nn_bootstrap = 200\n", encoding="utf-8")
    code, _, err = run_cli(
        ["evaluate", "--original", tmp_path / "orig.pt", "--unlearned", tmp_path / "unl.pt",
         "--retrained", tmp_path / "retr.pt", *data, "--policy", policy,
         "--reference-models", "2", "--cache-dir", tmp_path / "cache",
         "--robust-samples", "60", "--robust-steps", "5", "--label-only", "gap",
         "--json", tmp_path / "audit.json"]
    )  # fmt: skip
    assert code in (0, 1, 3), err
    result = json.loads((tmp_path / "audit.json").read_text(encoding="utf-8"))
    check_golden("evaluate_digits", result, str(tmp_path))


def test_benchmark_matches_golden(run_cli, tmp_path):
    out = tmp_path / "bench"
    code, _, err = run_cli(
        ["benchmark", "--quick", "--methods", "finetune,gradient_ascent", "--seeds", "1",
         "--robustness", "--set", "finetune.lr=0.02", "--device", "cpu", "--out", out]
    )  # fmt: skip
    assert code == 0, err
    result = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    check_golden("benchmark_quick", result, str(tmp_path))
