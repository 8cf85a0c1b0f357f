"""Tests for ``unlearn-audit train`` and the CLI's error contract (one line on stderr, exit code 2).

The trained checkpoints are checked against the library run with the same recipe (identical
weights), against independently computed data fingerprints (hashlib over the arrays), and through
a plain ``torch.load(weights_only=True)``. Every run uses sklearn's digits with logreg/mlp for one
or two epochs, so each takes well under a second after the first import.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import VALIDATION_CASES  # the same npz cases the library tests check

from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.models import build_model, load_model
from unlearn_audit.training import default_config, train_model

TRAIN_OPTIONS = [
    "--out",
    "--data",
    "--arch",
    "--forget",
    "--without-forget",
    "--epochs",
    "--batch-size",
    "--lr",
    "--optimizer",
    "--adversarial",
    "--eps",
    "--steps",
    "--for-method",
    "--set",
    "--seed",
    "--split-seed",
    "--device",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _usage_error(result, *fragments: str) -> str:
    """Assert exit code 2 and exactly one ``unlearn-audit: error:`` line; return that line."""
    code, out, err = result
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("unlearn-audit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _train(run_cli, out: Path, *extra: str):
    return run_cli(
        [
            "--quiet",
            "train",
            "--data",
            "digits",
            "--arch",
            "logreg",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--out",
            out,
            *extra,
        ]
    )


def _hash_set(x: torch.Tensor, y: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()


# ----------------------------------------------------------------------------------------------
# Help and usage errors
# ----------------------------------------------------------------------------------------------


def test_root_help_lists_options_and_commands(run_cli):
    code, out, err = run_cli(["--help"])
    assert code == 0 and err == ""
    for word in ("--verbose", "--quiet", "--version", "--help", "train"):
        assert word in out


def test_train_help_lists_every_option(run_cli):
    code, out, err = run_cli(["train", "--help"])
    assert code == 0 and err == ""
    missing = [opt for opt in TRAIN_OPTIONS if opt not in out]
    assert not missing, missing
    assert "unlearn-audit train --data mnist-5k --arch cnn --out original.pt" in " ".join(out.split())


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["trian"], "No such command 'trian'"),
        (["train", "--epoks", "1", "--out", "x.pt"], "No such option: --epoks"),
        (["train"], "Missing option '--out'"),
        (["train", "--out", "x.pt", "--epochs", "many"], "'--epochs'"),
    ],
)
def test_unknown_commands_and_options(run_cli, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    _usage_error(run_cli(args), fragment)
    assert not (tmp_path / "x.pt").exists()


# ----------------------------------------------------------------------------------------------
# Successful training
# ----------------------------------------------------------------------------------------------


def test_train_writes_a_checkpoint_that_matches_the_library_recipe(run_cli, tmp_path):
    out = tmp_path / "new" / "original.pt"
    code, stdout, err = _train(run_cli, out, "--seed", "4")
    assert code == 0, err
    assert f"wrote {out}" in stdout and "logreg on digits (full training set, 1348 examples)" in stdout

    raw = torch.load(out, weights_only=True)  # plain load, nothing custom inside
    prov = raw["provenance"]
    assert (
        prov["trained_on"] == "train"
        and prov["train_config"]["epochs"] == 1
        and prov["train_config"]["seed"] == 4
    )
    assert prov["device"] == "cpu" and prov["torch"] == torch.__version__

    dataset = load_dataset("digits")
    assert prov["data"]["train_sha256"] == _hash_set(dataset.train.x, dataset.train.y)
    assert prov["data"]["test_sha256"] == _hash_set(dataset.test.x, dataset.test.y)

    cfg = default_config("logreg", "mnist", epochs=1, seed=4)
    reference = build_model("logreg", num_classes=10, input_shape=(1, 8, 8), seed=4)
    train_model(reference, dataset.train, cfg)
    loaded = load_model(out)
    assert loaded.arch == "logreg" and loaded.num_classes == 10 and loaded.input_shape == (1, 8, 8)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value), key
    assert loaded.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()


def test_same_seed_gives_identical_weights(run_cli, tmp_path):
    paths = [tmp_path / "a.pt", tmp_path / "b.pt", tmp_path / "c.pt"]
    for path, seed in zip(paths, ("1", "1", "2"), strict=True):
        assert _train(run_cli, path, "--arch", "mlp", "--seed", seed).code == 0
    a, b, c = (torch.load(p, weights_only=True)["state_dict"] for p in paths)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_without_forget_trains_on_the_retain_set_only(run_cli, tmp_path):
    out = tmp_path / "retrained.pt"
    code, stdout, err = _train(run_cli, out, "--forget", "class:3", "--without-forget", "--seed", "0")
    assert code == 0, err
    dataset = load_dataset("digits")
    roles = make_roles(dataset, "class:3", seed=0)
    n_retain = int((dataset.train.y != 3).sum())
    assert len(roles.retain) == n_retain
    assert f"(retain set (forget set left out), {n_retain} examples)" in stdout

    prov = torch.load(out, weights_only=True)["provenance"]
    assert prov["trained_on"] == "retain" and prov["forget_spec"] == "class:3"
    assert (prov["data"]["n_forget"], prov["data"]["n_retain"]) == (len(dataset.train) - n_retain, n_retain)
    idx = np.flatnonzero(dataset.train.y.numpy() == 3).astype(np.int64)
    assert prov["data"]["forget_sha256"] == hashlib.sha256(idx.tobytes()).hexdigest()
    assert prov["data"]["forget_classes"] == [3]
    assert set(prov["accuracy"]) == {"forget", "retain", "test"}
    assert prov["accuracy"]["forget"] == 0.0  # class 3 was never seen, so it is never predicted

    reference = build_model("logreg", num_classes=10, input_shape=(1, 8, 8), seed=0)
    train_model(reference, roles.retain, default_config("logreg", "mnist", epochs=1, seed=0))
    state = load_model(out).module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())

    with_forget = tmp_path / "original.pt"
    assert _train(run_cli, with_forget, "--forget", "class:3", "--seed", "0").code == 0
    assert torch.load(with_forget, weights_only=True)["provenance"]["trained_on"] == "train"


def _has_attacks() -> bool:
    try:
        from attacks.adversarial import fgsm_perturb, pgd_perturb  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(
    not _has_attacks(), reason="attacks/adversarial.py with fgsm_perturb/pgd_perturb is not there yet"
)
def test_adversarial_fgsm_training_runs(run_cli, tmp_path):
    out = tmp_path / "robust.pt"
    code, stdout, err = _train(run_cli, out, "--arch", "mlp", "--adversarial", "fgsm", "--eps", "0.1")
    assert code == 0, err
    assert "fgsm-adversarially trained mlp" in stdout
    cfg = torch.load(out, weights_only=True)["provenance"]["train_config"]
    assert (cfg["adversarial"], cfg["eps"]) == ("fgsm", 0.1)
    clean = tmp_path / "clean.pt"
    assert _train(run_cli, clean, "--arch", "mlp").code == 0
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (out, clean))
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the attack changed the training inputs


# ----------------------------------------------------------------------------------------------
# Input errors: one line, exit 2, nothing written
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arrays,pattern", [c[1:] for c in VALIDATION_CASES], ids=[c[0] for c in VALIDATION_CASES]
)
def test_data_validation_errors(run_cli, write_npz, tmp_path, arrays, pattern):
    import re

    path = write_npz(**arrays)
    out = tmp_path / "m.pt"
    line = _usage_error(
        run_cli(["train", "--data", f"npz:{path}", "--arch", "logreg", "--out", out]), str(path)
    )
    assert re.search(pattern, line), line
    assert not out.exists()


def test_object_npz_through_the_cli_never_unpickles(run_cli, write_npz, tmp_path):
    from test_data import CreatesFile

    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = CreatesFile(str(marker))
    path = write_npz(x=np.zeros((4, 1, 2, 2)), y=np.arange(4), extra=evil)
    _usage_error(_train(run_cli, tmp_path / "m.pt", "--data", f"npz:{path}"), "without unpickling")
    assert not marker.exists()


def _index_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "forget.txt"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "make_args,fragment",
    [
        (
            lambda d: ["--arch", "mlpp"],
            # methods may register more architectures (sisa, ...), so match the start and the hint
            "unknown architecture 'mlpp'; available:",
        ),
        (lambda d: ["--epochs", "0"], "epochs must be >= 1, got 0"),
        (lambda d: ["--lr", "-1"], "learning rate must be > 0, got -1.0"),
        (lambda d: ["--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
        (lambda d: ["--adversarial", "cw"], "unknown adversarial training 'cw'"),
        (lambda d: ["--without-forget"], "--without-forget needs --forget SPEC"),
        (lambda d: ["--forget", "class:11"], "class(es) [11] not in the training labels"),
        (lambda d: ["--forget", "random:0"], "must be a fraction in (0, 1) or a count"),
        (lambda d: ["--forget", "random:nan"], "expected a fraction or a count"),
        (lambda d: ["--forget", "everything"], "not 'class:K', 'random:F' or an existing index file"),
        (lambda d: ["--forget", _index_file(d, "1\n2\n1\n")], "index 1 appears more than once"),
        (lambda d: ["--forget", _index_file(d, "5000\n")], "index 5000 is out of range for 1348"),
        (lambda d: ["--data", "digitz"], "unknown data source 'digitz'"),
        (lambda d: ["--data", f"mnist:{d / 'no-root'}"], "never downloads"),
        (lambda d: ["--data", f"cifar10:{d / 'no-root'}"], "never downloads"),
        (lambda d: ["--data", f"npz:{d / 'missing.npz'}"], "data file not found"),
        (lambda d: ["--set", "novalue"], "--set expects key=value, got 'novalue'"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_option_errors(run_cli, tmp_path, make_args, fragment):
    out = tmp_path / "m.pt"
    _usage_error(_train(run_cli, out, *make_args(tmp_path)), fragment)
    assert not out.exists()


def test_output_path_errors(run_cli, tmp_path):
    _usage_error(_train(run_cli, tmp_path), "is a folder; give a file name")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _usage_error(_train(run_cli, blocker / "m.pt"), "cannot create folder")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_requested_without_cuda(run_cli, tmp_path):
    _usage_error(_train(run_cli, tmp_path / "m.pt", "--device", "cuda"), "CUDA is not available")
