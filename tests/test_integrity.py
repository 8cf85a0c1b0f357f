"""``model_changed``: the original in disguise fails, whatever its names, format or logit scale.

The setting: sklearn digits, the default MLP recipe, a random tenth forgotten. Each cheat is the
original re-packaged (``.pt2``, TorchScript, safetensors, a prefix on every name), nudged by
noise far below any honest change, with its hidden units permuted, or wrapped to rescale or
shift its logits. Where cheap, the test shows the name-based comparison the check used before
is fooled; then that the check fails the cheat. Honest models (a retrain, a bundled method with
its defaults) pass, and every audited model's distances to the original are reported.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cheats import Temperature, export_pt2, permute_hidden_units, safetensors_file, script_file
from torch import nn

from unlearn_audit.api import train_checkpoint
from unlearn_audit.checks import run_checks
from unlearn_audit.checks.integrity import ModelChanged
from unlearn_audit.context import AuditOptions, StepTimer, build_context
from unlearn_audit.data import Roles, load_dataset, make_roles
from unlearn_audit.integrity import (
    MIN_OUTPUT_RESIDUAL,
    MIN_RELATIVE_CHANGE,
    float_tensors,
    output_residual,
    relative_parameter_change,
)
from unlearn_audit.methods import UnlearnData, get_method
from unlearn_audit.metrics import parameter_distance
from unlearn_audit.models import LoadedModel, build_model, load_model
from unlearn_audit.results import FAIL, PASS


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
    retrained: LoadedModel


@pytest.fixture(scope="module")
def setting(tmp_path_factory) -> Setting:
    folder = tmp_path_factory.mktemp("integrity")
    common = {"data": "digits", "arch": "mlp", "forget": "random:0.1", "device": "cpu"}
    train_checkpoint(out=folder / "original.pt", **common)
    train_checkpoint(out=folder / "retrained.pt", without_forget=True, **common)
    roles = make_roles(load_dataset("digits"), "random:0.1")
    return Setting(folder, roles, load_model(folder / "original.pt"), load_model(folder / "retrained.pt"))


def wrapped(module: nn.Module, fmt: str = "native") -> LoadedModel:
    return LoadedModel(module.eval(), f"<{fmt}>", "0" * 64, fmt)


def integrity(setting: Setting, unlearned: LoadedModel, retrained: LoadedModel | None = None):
    """Run ``model_changed`` alone; returns its check and the distances it reports."""
    options = AuditOptions(retrained=retrained)
    timer = StepTimer()
    ctx = build_context(setting.original, unlearned, setting.roles, options, timer)
    (outcome,) = run_checks(ctx, timer, (ModelChanged(),))
    return outcome.check, outcome.distances


class Shifted(nn.Module):
    """The original's logits times ``scale`` plus a constant: the same softmax up to temperature."""

    def __init__(self, inner: nn.Module, scale: float, shift: float) -> None:
        super().__init__()
        self.inner, self.scale, self.shift = inner, scale, shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.scale + self.shift


def noisy(module: nn.Module, relative: float) -> nn.Module:
    """A copy with every weight moved by Gaussian noise of ``relative`` times its tensor's RMS."""
    out = copy.deepcopy(module)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(relative * p.pow(2).mean().sqrt() * torch.randn(p.shape, generator=gen))
    return out


# --------------------------------------------------------------------------- re-packaged originals


def test_a_pt2_export_of_the_original_fails(setting: Setting) -> None:
    cheat = load_model(
        export_pt2(setting.original.module, setting.roles.test.x[:8], setting.folder / "o.pt2")
    )
    # the name-based comparison is fooled: every name gained a prefix
    assert not parameter_distance(setting.original.module, cheat.module).comparable
    check, distances = integrity(setting, cheat)
    assert check.status == FAIL and "relative parameter change" in check.detail
    assert distances["original_to_unlearned"]["relative_change"] == pytest.approx(0.0, abs=1e-7)


def test_a_torchscript_copy_of_the_original_fails(setting: Setting) -> None:
    path = script_file(setting.original.module, setting.folder / "o.ts")
    cheat = wrapped(torch.jit.load(str(path)), "torchscript")
    check, distances = integrity(setting, cheat)
    assert check.status == FAIL
    assert distances["original_to_unlearned"]["relative_change"] == 0.0


def test_a_safetensors_copy_of_the_original_fails(setting: Setting) -> None:
    path = safetensors_file(setting.original.module, setting.folder / "o.safetensors")
    cheat = load_model(path, arch="mlp", num_classes=10, input_shape=setting.roles.input_shape)
    assert integrity(setting, cheat)[0].status == FAIL


def test_tensors_are_matched_by_shape_not_name(setting: Setting) -> None:
    prefixed = nn.Sequential(copy.deepcopy(setting.original.module))  # every name gains "0."
    assert not parameter_distance(setting.original.module, prefixed).comparable
    change = relative_parameter_change(setting.original.module, prefixed)
    assert change.comparable and change.relative == 0.0
    assert change.matched_tensors == len(float_tensors(setting.original.module))
    assert integrity(setting, wrapped(prefixed))[0].status == FAIL


def test_tiny_noise_on_every_weight_fails(setting: Setting) -> None:
    cheat = noisy(setting.original.module, 1e-6)
    assert parameter_distance(setting.original.module, cheat).l2 > 0  # not identical: the old check passed it
    check, distances = integrity(setting, wrapped(cheat))
    assert (
        check.status == FAIL and distances["original_to_unlearned"]["relative_change"] < MIN_RELATIVE_CHANGE
    )


# --------------------------------------------------------------------------- same function, other weights


def test_permuted_hidden_units_fail_on_outputs(setting: Setting) -> None:
    cheat = permute_hidden_units(setting.original.module)
    change = relative_parameter_change(setting.original.module, cheat)
    assert change.relative > 0.5  # the weights moved everywhere: the parameter test alone is fooled
    check, distances = integrity(setting, wrapped(cheat))
    assert check.status == FAIL and "output residual" in check.detail
    assert distances["original_to_unlearned"]["output_residual"] < MIN_OUTPUT_RESIDUAL


@pytest.mark.parametrize(
    "make",
    [
        lambda m: Temperature(permute_hidden_units(m), 3.0),
        lambda m: Shifted(permute_hidden_units(m), 0.5, 7.0),
    ],
    ids=["temperature", "scale-and-shift"],
)
def test_rescaled_or_shifted_logits_fail_on_outputs(setting: Setting, make) -> None:
    cheat = make(setting.original.module)
    with torch.no_grad():
        moved = (cheat(setting.roles.test.x) - setting.original.module(setting.roles.test.x)).abs().max()
    assert moved > 0.1  # not the same logits: an exact comparison of outputs is fooled
    check, _ = integrity(setting, wrapped(cheat))
    assert check.status == FAIL and "output residual" in check.detail


def test_output_residual_ignores_scale_and_shift_only() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(50, 10, generator=gen, dtype=torch.float64)
    shift = torch.randn(50, 1, generator=gen, dtype=torch.float64)
    assert output_residual(a, 2.5 * a + shift) == pytest.approx(0.0, abs=1e-9)
    assert output_residual(a, -a) == 1.0  # a negative scale reverses every ranking
    other = torch.randn(50, 10, generator=gen)
    assert output_residual(a, other) > 0.5


# --------------------------------------------------------------------------- honest models and reporting


def test_an_honest_retrain_and_a_bundled_method_pass(setting: Setting) -> None:
    check, distances = integrity(setting, setting.retrained, retrained=setting.retrained)
    assert check.status == PASS
    for key in ("original_to_unlearned", "original_to_retrained", "unlearned_to_retrained"):
        entry = distances[key]
        assert {"relative_change", "output_residual", "parameters", "kl_forget"} <= entry.keys()
    assert distances["original_to_retrained"] == distances["original_to_unlearned"]
    assert distances["unlearned_to_retrained"]["relative_change"] == 0.0
    roles = setting.roles
    data = UnlearnData(roles.forget.x, roles.forget.y, roles.retain.x, roles.retain.y, 10)
    outcome = get_method("gradient_ascent").unlearn(setting.original.module, data, seed=0)
    check, distances = integrity(setting, wrapped(outcome.model))
    assert check.status == PASS and check.value == distances["original_to_unlearned"]["relative_change"]


def test_another_architecture_is_compared_on_outputs_only(setting: Setting) -> None:
    other = build_model("logreg", num_classes=10, input_shape=setting.roles.input_shape, seed=0)
    change = relative_parameter_change(setting.original.module, other)
    assert not change.comparable and "shapes differ" in change.note
    check, distances = integrity(setting, wrapped(other))
    assert check.status == PASS and check.value is None
    assert distances["original_to_unlearned"]["relative_change"] is None
    assert integrity(setting, wrapped(Temperature(setting.original.module, 2.0)))[0].status == FAIL


def test_the_report_shows_every_models_change_and_residual(setting: Setting, monkeypatch) -> None:
    from unlearn_audit import report
    from unlearn_audit.audit import evaluate
    from unlearn_audit.policy import Policy

    # this checkout's templates (an editable install may point the package at another checkout)
    monkeypatch.setattr(report, "template_dir", lambda: Path(__file__).resolve().parents[1] / "templates")
    cheat = wrapped(Temperature(permute_hidden_units(setting.original.module), 2.0))
    result = evaluate(
        setting.original, cheat, setting.roles, retrained=setting.retrained, policy=Policy(n_bootstrap=200)
    )
    assert result.checks[0].name == "model_changed"  # integrity is judged (and shown) first
    assert result.verdict == FAIL
    assert list(result.distances) == [
        "original_to_unlearned",
        "original_to_retrained",
        "unlearned_to_retrained",
    ]
    html = report.render_html(result)
    assert "Output residual" in html
    residual = result.distances["original_to_retrained"]["output_residual"]
    assert f"{residual:.3g}" in html
