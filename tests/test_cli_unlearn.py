"""The `unlearn` and `methods` commands end to end on scikit-learn's digits (seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.models import load_model
from unlearn_audit.training import accuracy


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    from unlearn_audit.api import train_checkpoint

    path = tmp_path_factory.mktemp("unlearn") / "original.pt"
    train_checkpoint(out=path, data="digits", arch="logreg", overrides={"epochs": 3}, device="cpu")
    return path


def test_unlearn_writes_a_checkpoint_with_its_provenance(run_cli, tmp_path, original):
    before = original.read_bytes()
    out = tmp_path / "sub" / "unlearned.pt"
    code, stdout, err = run_cli(
        [
            "unlearn",
            "--method",
            "finetune",
            "--model",
            str(original),
            "--data",
            "digits",
            "--forget",
            "class:3",
            "--out",
            str(out),
            "--set",
            "epochs=2",
            "--set",
            "lr=0.05",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, err
    assert "unlearned with finetune" in stdout
    assert original.read_bytes() == before  # the input model is untouched
    plain = torch.load(out, weights_only=True)
    unl = plain["provenance"]["unlearning"]
    assert unl["method"] == "finetune" and unl["params"]["epochs"] == 2 and unl["params"]["lr"] == 0.05
    assert unl["touched"] == ["retain"]  # fine-tuning reads only the retain set
    assert plain["provenance"]["original"]["sha256"] == load_model(original).sha256
    # The printed accuracies are the model's real accuracies on the roles.
    roles = make_roles(load_dataset("digits"), "class:3")
    model = load_model(out).module
    forget_acc = accuracy(model, roles.forget)
    assert f"forget {forget_acc:.2%}" in stdout


def test_methods_needing_retain_refuse_forget_only_access(run_cli, tmp_path, original, write_npz):
    roles = make_roles(load_dataset("digits"), "random:20", seed=0)
    forget = write_npz("forget.npz", x=roles.forget.x.numpy(), y=roles.forget.y.numpy())
    out = tmp_path / "u.pt"
    code, _, err = run_cli(
        [
            "unlearn",
            "--method",
            "finetune",
            "--model",
            str(original),
            "--forget-data",
            str(forget),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and err.count("\n") == 1 and "needs the retain set" in err
    assert not out.exists()
    # AMUN runs with forget-only access when told so.
    code, stdout, err = run_cli(
        [
            "unlearn",
            "--method",
            "amun",
            "--model",
            str(original),
            "--forget-data",
            str(forget),
            "--out",
            str(out),
            "--set",
            "retain=none",
            "--set",
            "epochs=1",
            "--set",
            "attack_steps=5",
            "--device",
            "cpu",
        ]
    )
    assert code == 0, err
    assert np.isfinite(next(load_model(out).module.parameters()).detach().numpy()).all()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--method", "amunn"], "did you mean 'amun'?"),
        (["--method", "amun", "--set", "epochz=3"], "epochz"),
        (["--method", "amun", "--set", "epochs"], "--set expects key=value"),
        (["--method", "sisa"], "train --for-method sisa"),
    ],
)
def test_unlearn_input_errors_are_one_line(run_cli, tmp_path, original, args, fragment):
    out = tmp_path / "u.pt"
    code, _, err = run_cli(
        [
            "unlearn",
            "--model",
            str(original),
            "--data",
            "digits",
            "--forget",
            "class:3",
            "--out",
            str(out),
            *args,
        ]
    )
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_methods_lists_every_method_with_parameters(run_cli):
    from unlearn_audit.methods import list_methods

    code, stdout, _ = run_cli(["methods"])
    assert code == 0
    for info in list_methods():
        assert f"{info.name}  (needs:" in stdout
        for p in info.params:
            assert f"--set {p.name}=" in stdout
