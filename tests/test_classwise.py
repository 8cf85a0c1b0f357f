"""Class-wise forgetting judged on ranks (``forget_class_rank``) and mixed forget sets (issue 12).

The setting: sklearn digits, the default MLP recipe; class 3 forgotten. ``original`` saw it,
``without`` was trained on the retain set only (an honest class-wise retrain). The cheat keeps
the original and clamps class 3's logit just under the best other class: it never predicts 3,
so the top-prediction check passes it, yet it ranks 3 second on nearly every image of a 3.

A mixed forget set (all of class 3 plus examples of kept classes, from an index file) is
class-wise AND example-wise: ``forget_accuracy`` judges the extra examples.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cheats import ClampClass, export_pt2

from unlearn_audit.api import train_checkpoint
from unlearn_audit.audit import FAIL, PASS, AuditResult, evaluate
from unlearn_audit.data import Roles, load_dataset, make_roles
from unlearn_audit.models import LoadedModel, load_model, save_checkpoint
from unlearn_audit.policy import Policy
from unlearn_audit.training import TrainConfig, train_model

FORGOTTEN = 3
POLICY = Policy(n_bootstrap=200)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class Setting:
    folder: Path
    roles: Roles
    original: LoadedModel
    without: LoadedModel


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    folder = tmp_path_factory.mktemp("classwise")
    spec = f"class:{FORGOTTEN}"
    train_checkpoint(out=folder / "original.pt", data="digits", arch="mlp", device="cpu")
    train_checkpoint(
        out=folder / "without.pt", data="digits", arch="mlp", forget=spec, without_forget=True, device="cpu"
    )
    roles = make_roles(load_dataset("digits"), spec)
    return Setting(folder, roles, load_model(folder / "original.pt"), load_model(folder / "without.pt"))


def audit(setting: Setting, unlearned: LoadedModel, **kwargs) -> AuditResult:
    return evaluate(setting.original, unlearned, setting.roles, policy=POLICY, seed=0, **kwargs)


def checks_of(result: AuditResult) -> dict:
    return {c.name: c for c in result.checks}


def clamped_copy(setting: Setting, noise: float) -> LoadedModel:
    """The cheat, exported as ``.pt2``: the original (every weight moved by ``noise`` relative to
    its tensor's scale, 0 for none) with class 3 clamped just under the winner."""
    module = copy.deepcopy(setting.original.module)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(noise * p.abs().mean() * torch.randn(p.shape, generator=gen))
    path = setting.folder / f"clamped-{noise}.pt2"
    export_pt2(ClampClass(module, [FORGOTTEN]), setting.roles.test.x[:8], path)
    return load_model(path)


def test_the_honest_class_wise_retrain_passes_without_a_retrained_model(setting: Setting) -> None:
    result = audit(setting, setting.without)
    checks = checks_of(result)
    assert result.verdict == PASS, [(c.name, c.status, c.detail) for c in result.checks if c.status != PASS]
    rank = checks["forget_class_rank"]
    assert rank.status == PASS and rank.gating
    assert "forget_class_rank" in checks["membership_power"].detail  # the rank test is the power


def test_the_original_fails_the_rank_check(setting: Setting) -> None:
    checks = checks_of(audit(setting, setting.original))
    assert checks["forget_class_rank"].status == FAIL
    assert checks["forget_class_rank"].ci[0] > POLICY.forget_accuracy_margin


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_a_clamped_original_exported_as_pt2_fails_on_ranks(setting: Setting, noise: float) -> None:
    cheat = clamped_copy(setting, noise)
    assert cheat.format == "export"
    result = audit(setting, cheat)
    checks = checks_of(result)
    # the top-prediction check alone is fooled: the class is (almost) never predicted
    assert checks["forget_class_predictions"].status == PASS
    assert checks["forget_class_rank"].status == FAIL and checks["forget_class_rank"].value > 0.5
    assert result.verdict == FAIL
    # with noise on every weight the cheat gets past the integrity check: only the ranks catch it
    assert checks["model_changed"].status == (PASS if noise else FAIL)


def test_the_clamped_original_fails_against_the_retrained_model_too(setting: Setting) -> None:
    checks = checks_of(audit(setting, clamped_copy(setting, 0.01), retrained=setting.without))
    assert checks["forget_class_rank"].status == FAIL
    assert "the retrained model" in checks["forget_class_rank"].detail


# --------------------------------------------------------------------------- mixed forget sets


@pytest.fixture(scope="module")
def mixed(setting: Setting, tmp_path_factory) -> dict:
    """Forget set: all of class 3 and 60 examples of other classes with wrong labels (noise the
    original memorised). ``kept_extras`` was trained without class 3 but WITH the extras."""
    folder = tmp_path_factory.mktemp("mixed")
    data = load_dataset("digits")
    y = data.train.y.clone()
    rng = np.random.default_rng(0)
    extras = rng.choice(np.flatnonzero(y.numpy() != FORGOTTEN), 60, replace=False)
    flipped = (y[extras] + 1) % 10
    flipped[flipped == FORGOTTEN] = FORGOTTEN + 1
    y[extras] = flipped
    data = type(data)(**{**data.__dict__, "train": type(data.train)(data.train.x, y)})
    index_file = folder / "forget.txt"
    index_file.write_text("\n".join(map(str, sorted([*np.flatnonzero(y.numpy() == FORGOTTEN), *extras]))))
    roles = make_roles(data, str(index_file))
    cfg = TrainConfig(epochs=30, batch_size=64, lr=1e-2, seed=0)  # memorises most of the extras

    def trained(keep: np.ndarray, name: str) -> LoadedModel:
        from unlearn_audit.models import build_model

        model = build_model("mlp", num_classes=10, input_shape=data.input_shape, seed=0)
        train_model(model, data.train.subset(keep), cfg)
        save_checkpoint(model, folder / name, arch="mlp", num_classes=10, input_shape=data.input_shape)
        return load_model(folder / name)

    everything = np.arange(len(y))
    retain = np.setdiff1d(everything, np.concatenate([np.flatnonzero(y.numpy() == FORGOTTEN), extras]))
    return {
        "roles": roles,
        "original": trained(everything, "original.pt"),
        "retrained": trained(retain, "retrained.pt"),
        "kept_extras": trained(np.union1d(retain, extras), "kept-extras.pt"),
    }


def test_an_index_file_can_mix_a_class_with_extra_examples(mixed) -> None:
    roles = mixed["roles"]
    assert roles.class_wise and roles.forget_classes == (FORGOTTEN,)
    assert (roles.forget.y.numpy() != FORGOTTEN).sum() == 60


def test_a_model_that_forgot_the_class_but_not_the_extras_fails(mixed) -> None:
    def run(unlearned: LoadedModel) -> dict:
        result = evaluate(
            mixed["original"], unlearned, mixed["roles"], retrained=mixed["retrained"], policy=POLICY
        )
        return checks_of(result)

    cheat = run(mixed["kept_extras"])
    assert cheat["forget_class_predictions"].status == PASS  # the class is gone ...
    in_class = int((mixed["roles"].forget.y == FORGOTTEN).sum())
    assert f"({in_class} forget + " in cheat["forget_class_predictions"].detail  # judged on the class only
    accuracy = cheat["forget_accuracy"]  # ... the extras are not, and they are judged
    assert accuracy.status == FAIL and accuracy.gating and "60 examples outside" in accuracy.detail
    # the honest model: no failure (60 examples leave an interval too wide to pass a 0.05 margin)
    honest = run(mixed["retrained"])["forget_accuracy"]
    assert honest.status != FAIL and honest.value == pytest.approx(0.0, abs=0.05)
