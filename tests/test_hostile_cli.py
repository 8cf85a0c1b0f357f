"""``evaluate`` and ``report`` against a supplier who wants a PASS, end to end through the CLI.

Each test builds the hostile input itself: outputs aimed at the model file or at each other, a
FIFO as output, a forged verdict, malformed results, a TorchScript forward that takes forever,
planted reference-model cache entries, a forget set drawn with another seed, the same file as
unlearned and retrained model, and models that disagree on their outputs. Every refusal is one
``unlearn-audit: error:`` line with exit code 2, no traceback, and no output written.

Setting: sklearn digits, an MLP trained for a few epochs through ``unlearn-audit train``.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest
import torch

DATA = ["--data", "digits", "--forget", "random:120", "--device", "cpu"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """original (seed 0), retrained without the forget set drawn with seed 1, a 12-output model."""
    from unlearn_audit.cli import main

    folder = tmp_path_factory.mktemp("hostile")
    train = ["train", "--arch", "mlp", "--epochs", "3", *DATA]

    def run(args):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code == 0, args

    run([*train, "--out", folder / "original.pt"])
    run([*train, "--without-forget", "--seed", "1", "--out", folder / "retrained.pt"])
    policy = folder / "policy.toml"
    policy.write_text("[statistics]\nn_bootstrap = 200\n")
    return folder


def _refused(result, *fragments: str) -> str:
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearn-audit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _evaluate(models: Path, *extra) -> list:
    return [
        "evaluate", "--original", models / "original.pt", "--unlearned", models / "retrained.pt",
        *DATA, "--policy", models / "policy.toml", "--no-robustness", *extra,
    ]  # fmt: skip


# --------------------------------------------------------------------------- output paths


def test_json_aimed_at_the_unlearned_model_is_refused_and_the_model_kept(run_cli, models):
    before = (models / "retrained.pt").read_bytes()
    _refused(run_cli(_evaluate(models, "--json", models / "retrained.pt")), "is the input --unlearned")
    assert (models / "retrained.pt").read_bytes() == before


def test_json_and_html_on_one_path_are_refused(run_cli, models, tmp_path):
    target = tmp_path / "same"
    _refused(run_cli(_evaluate(models, "--json", target, "--html", target)), "name the same file")
    assert not target.exists()


def test_a_fifo_output_is_refused_before_any_work(run_cli, models, tmp_path):
    fifo = tmp_path / "audit.json"
    os.mkfifo(fifo)
    _refused(run_cli(_evaluate(models, "--json", fifo)), "named pipe")
    assert fifo.is_fifo()


# --------------------------------------------------------------------------- models and forget sets


def test_the_forget_seed_comes_from_the_checkpoints(run_cli, models, tmp_path):
    """The retrained model drew its forget set with seed 1; an audit with --seed 0 still uses it."""
    out = tmp_path / "a.json"
    code, _, err = run_cli(_evaluate(models, "--seed", "0", "--json", out))
    assert code in (0, 1, 3), err
    assert json.loads(out.read_text())["data"]["provenance"]["forget_seed"] == 1
    line = _refused(run_cli(_evaluate(models, "--forget-seed", "0", "--json", out)), "another forget set")
    assert "--forget-seed 1 reproduces it" in line


def test_the_same_file_as_unlearned_and_retrained_is_refused(run_cli, models):
    args = _evaluate(models, "--retrained", models / "retrained.pt")
    _refused(run_cli(args), "--unlearned and --retrained are the same model file")


def test_models_with_different_numbers_of_outputs_are_refused(run_cli, models, tmp_path):
    wide = tmp_path / "wide.pt"
    code, _, err = run_cli(
        ["train", "--arch", "mlp", "--epochs", "1", "--data", "digits", "--device", "cpu", "--out", wide]
    )
    assert code == 0, err
    payload = torch.load(wide, weights_only=True)
    from unlearn_audit.models import build_model

    model = build_model("mlp", num_classes=12, input_shape=tuple(payload["input_shape"]))
    payload["num_classes"] = 12
    payload["state_dict"] = model.state_dict()
    payload["provenance"] = {}
    torch.save(payload, wide)
    args = ["evaluate", "--original", models / "original.pt", "--unlearned", wide, *DATA, "--no-robustness"]
    _refused(run_cli(args), "disagree on their number of outputs")


class _Slow(torch.nn.Module):
    """Finite but far too long: 100,000 products of a 512 x 512 matrix per forward pass."""

    def __init__(self):
        super().__init__()
        self.inp = torch.nn.Linear(64, 512)
        self.w = torch.nn.Parameter(torch.randn(512, 512) / 512)
        self.out = torch.nn.Linear(512, 10)

    def forward(self, x):
        h = self.inp(x.flatten(1))
        for _ in range(100000):
            h = torch.tanh(h @ self.w)
        return self.out(h)


def test_a_forward_pass_over_the_time_limit_ends_with_exit_2_and_no_output(run_cli, models, tmp_path):
    slow = tmp_path / "slow.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(_Slow()), str(slow))
    out = tmp_path / "audit.json"
    args = [
        "evaluate", "--original", models / "original.pt", "--unlearned", slow, *DATA, "--no-robustness",
        "--trust-torchscript", "--timeout", "1", "--json", out,
    ]  # fmt: skip
    # a subprocess: the watchdog ends the whole process
    script = "import sys\nfrom unlearn_audit.cli import main\nmain(sys.argv[1:])\n"
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    _refused((proc.returncode, proc.stdout, proc.stderr), "did not finish within 1 s", "--timeout")
    assert not out.exists() and not list(tmp_path.glob(".audit.json*"))
    _refused(run_cli(args[:-5] + ["--json", out]), "pass --trust-torchscript")


# --------------------------------------------------------------------------- the reference-model cache


def test_planted_reference_models_are_retrained_and_every_model_is_listed(run_cli, models, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "a.json"
    args = _evaluate(models, "--reference-models", "2", "--cache-dir", cache, "--json", out)
    assert run_cli(args).code in (0, 1, 3)
    first = json.loads(out.read_text())["provenance"]["reference_models"]
    assert [r["source"] for r in first] == ["trained", "trained"]
    planted = [Path(r["path"]) for r in first]
    for path in planted:  # the supplier swaps in its original, which saw the forget set
        shutil.copyfile(models / "original.pt", path)
    assert run_cli(args).code in (0, 1, 3)
    result = json.loads(out.read_text())
    second = result["provenance"]["reference_models"]
    assert [r["source"] for r in second] == ["trained", "trained"]
    original_sha = json.loads(out.read_text())["provenance"]["models"]["original"]["sha256"]
    assert all(r["sha256"] != original_sha for r in second)
    reference = next(c for c in result["checks"] if c["name"] == "mia_reference")
    assert "did not match their recorded provenance" in reference["detail"]
    assert run_cli(args).code in (0, 1, 3)  # now the verified entries are reused
    assert [r["source"] for r in json.loads(out.read_text())["provenance"]["reference_models"]] == [
        "cache",
        "cache",
    ]


def test_no_cache_neither_reads_nor_writes_the_cache(run_cli, models, tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "a.json"
    args = _evaluate(models, "--reference-models", "2", "--cache-dir", cache, "--no-cache", "--json", out)
    assert run_cli(args).code in (0, 1, 3)
    listing = json.loads(out.read_text())["provenance"]["reference_models"]
    assert [r["source"] for r in listing] == ["trained (no cache)"] * 2
    assert not cache.exists()


# --------------------------------------------------------------------------- saved results


@pytest.fixture(scope="module")
def saved(models, tmp_path_factory):
    from unlearn_audit.cli import main

    out = tmp_path_factory.mktemp("saved") / "audit.json"
    try:
        main([str(a) for a in _evaluate(models, "--json", out)])
    except SystemExit:
        pass
    return json.loads(out.read_text())


def test_a_forged_pass_is_refused_by_report(run_cli, saved, tmp_path):
    forged = dict(saved, verdict="pass")
    assert any(c["status"] != "pass" and c.get("gating", True) for c in forged["checks"])
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(forged))
    _refused(run_cli(["report", path, "--html", tmp_path / "r.html"]), "its checks give")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["models"]["original"]["accuracy"].update(forget="high"),
        lambda r: r["checks"][0].update(gating="yes"),
        lambda r: r["plots"].update(roc=[1, 2]),
        lambda r: r.update(timings={"x": "slow"}),
        lambda r: r["checks"][0].update(ci=[0.1]),
        lambda r: r.update(models=[]),
    ],
    ids=["accuracy-text", "gating-text", "roc-list", "timing-text", "short-interval", "models-list"],
)
def test_malformed_results_are_one_line_exit_2(run_cli, saved, tmp_path, edit):
    broken = json.loads(json.dumps(saved))
    edit(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    _refused(run_cli(["report", path, "--html", tmp_path / "r.html"]))
    assert not (tmp_path / "r.html").exists()
