"""A ``.pt2`` archive's strings are code to torch: every way we found is refused before loading.

Each test rewrites an honest archive the way a supplier could. Where cheap, a control shows that
plain ``torch.export.load(...).module()`` runs the payload (it creates a marker file); then
:func:`unlearn_audit.models.load_model` refuses the file and the marker never appears.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from unlearn_audit import graphguard
from unlearn_audit.errors import ModelError
from unlearn_audit.models import GuardedModule, load_model


class _Buffered(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.l = torch.nn.Linear(4, 3)
        self.register_buffer("b", torch.ones(3))

    def forward(self, x):
        return self.l(x) + self.b


def _honest(tmp_path: Path) -> Path:
    path = tmp_path / "honest.pt2"
    torch.export.save(torch.export.export(_Buffered().eval(), (torch.randn(2, 4),)), str(path))
    return path


def _rewrite(src: Path, dst: Path, edit_program=None, edit_members=None) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for name in list(members):
        if edit_program and name.endswith("models/model.json"):
            program = json.loads(members[name])
            edit_program(program)
            members[name] = json.dumps(program).encode()
    if edit_members:
        edit_members(members)
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    return dst


def _rename(value, old: str, new: str):
    """Replace every string (value or key) equal to ``old`` in a JSON document."""
    if isinstance(value, dict):
        return {(new if k == old else k): _rename(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_rename(v, old, new) for v in value]
    return new if value == old else value


def _refused(path: Path, marker: Path, needle: str) -> None:
    with pytest.raises(ModelError, match=needle):
        load_model(path)
    assert not marker.exists(), "the payload ran"


def test_code_in_a_weight_input_name_is_refused(tmp_path):
    """The name becomes a parameter of the generated ``def forward``, exec'd by torch while loading."""
    marker = tmp_path / "pwned"
    evil = f'p_l_weight=__import__("os").system("touch {marker}"), *a'

    def edit(program):
        for key in ("graph", "signature"):
            program["graph_module"][key] = _rename(program["graph_module"][key], "p_l_weight", evil)

    path = _rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.load(str(path))  # control
    assert marker.exists()
    marker.unlink()
    _refused(path, marker, "is not a plain name")


def test_code_in_forward_argument_names_is_refused(tmp_path):
    """``program.module()`` pastes ``forward_arg_names`` into generated source and execs it."""
    marker = tmp_path / "pwned"

    def edit(program):
        names = program["graph_module"]["module_call_graph"][0]["signature"]["forward_arg_names"]
        names.append(f'_z=__import__("os").system("touch {marker}")')

    path = _rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit)
    torch.export.load(str(path)).module()  # control
    assert marker.exists()
    marker.unlink()
    _refused(path, marker, "where a name belongs")


def test_an_import_hidden_in_the_input_structure_is_refused(tmp_path):
    def edit(program):
        signature = program["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["context"] = json.dumps({"__enum__": {"fqn": "this:Zen", "name": "x"}})
        signature["in_spec"] = json.dumps(spec)

    _refused(_rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit), tmp_path / "none", "not plain")


def test_an_operator_passed_as_a_value_is_refused(tmp_path):
    def edit(program):
        node = program["graph_module"]["graph"]["nodes"][0]
        node["inputs"].append(
            {"name": "other", "arg": {"as_operator": "torch.ops.aten.neg_.default"}, "kind": 1}
        )

    _refused(
        _rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit), tmp_path / "none", "operator as a value"
    )


def test_a_string_input_is_refused(tmp_path):
    def edit(program):
        program["graph_module"]["graph"]["inputs"].append({"as_string": "abc"})

    _refused(_rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit), tmp_path / "none", "not a tensor")


def test_a_weight_declaring_more_than_its_payload_is_refused(tmp_path):
    """torch fills a short payload with zeros of the declared size: a small file, gigabytes of memory."""

    def edit(members):
        key = next(name for name in members if name.endswith("model_weights_config.json"))
        config = json.loads(members[key])
        first = next(iter(config["config"].values()))
        first["tensor_meta"]["sizes"] = [{"as_int": 1 << 15}, {"as_int": 1 << 15}]
        members[key] = json.dumps(config).encode()

    path = _rewrite(_honest(tmp_path), tmp_path / "evil.pt2", edit_members=edit)
    _refused(path, tmp_path / "none", "declares 4,294,967,296 bytes but its payload holds")


def test_dropout_in_training_mode_is_refused(tmp_path):
    class Noisy(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5, training=True)

    path = tmp_path / "noisy.pt2"
    torch.export.save(torch.export.export(Noisy(), (torch.randn(2, 4),)), str(path))
    _refused(path, tmp_path / "none", "training mode")


@pytest.mark.parametrize("kind", ["buffer", "random"])
def test_a_forward_that_changes_state_or_draws_random_numbers_is_refused(kind):
    """The backstop: whatever route a graph takes, the wrapper sees the write or the draw."""

    class Sly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("calls", torch.zeros(1))

        def forward(self, x):
            if kind == "buffer":
                self.calls.add_(1)
                return x + self.calls
            return x + 0 * torch.rand(1)

    model = GuardedModule(Sly(), source="sly.pt2")
    with pytest.raises(ModelError, match="wrote into its own weights" if kind == "buffer" else "random"):
        model(torch.zeros(2, 3))
    assert GuardedModule(torch.nn.Linear(3, 2))(torch.zeros(2, 3)).shape == (2, 2)  # honest: fine


@pytest.mark.parametrize("text", ["9 ** 9 ** 9", "Pow(9, 99999999)", "LShift(1, 10000000000)", "s0 * 10**30"])
def test_size_expressions_that_would_hang_sympy_are_refused(text):
    with pytest.raises(ModelError):
        graphguard.check_expression(text, "m")
