"""Guards against a hostile supplier: output paths, the watchdog, and graph inspection.

Each test builds the hostile input itself: a FIFO, a symbolic link to a device, an output that
is an input, a TorchScript forward that loops forever inside C++, graphs that call file, print,
random or looping operators, and a program that mutates its own state between queries.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from unlearn_audit import graphguard
from unlearn_audit.cli_common import render_error
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.fileio import atomic_write_text, check_distinct_paths
from unlearn_audit.models import build_model
from unlearn_audit.watchdog import validate_timeout

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- output paths


def test_a_fifo_is_refused_and_survives(tmp_path):
    fifo = tmp_path / "out.json"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="named pipe, not a regular file"):
        atomic_write_text(fifo, "{}")
    assert fifo.is_fifo()


def test_a_symlink_to_a_device_is_refused_and_the_device_untouched(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to("/dev/null")
    with pytest.raises(ConfigError, match="symbolic link"):
        atomic_write_text(link, "{}")
    assert link.is_symlink() and Path("/dev/null").is_char_device()


def test_a_device_node_is_refused():
    with pytest.raises(ConfigError, match="character device"):
        atomic_write_text("/dev/null", "{}")
    assert Path("/dev/null").is_char_device()


def test_a_regular_file_is_replaced(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and not target.is_symlink()


def test_an_output_that_is_an_input_is_refused(tmp_path):
    model = tmp_path / "unlearned.pt"
    model.write_bytes(b"weights")
    hard = tmp_path / "hard.pt"
    os.link(model, hard)
    soft = tmp_path / "soft.pt"
    soft.symlink_to(model)
    for alias in (model, hard, soft, tmp_path / "." / "unlearned.pt"):
        with pytest.raises(ConfigError, match="is the input `unlearned`") as err:
            check_distinct_paths({"json_out": alias}, {"unlearned": model})
        assert err.value.params == ("json_out", "unlearned")
        assert render_error(err.value).startswith("--json ") and "is the input --unlearned" in render_error(
            err.value
        )


def test_two_outputs_on_one_path_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="`json_out` and `html_out` name the same file") as err:
        check_distinct_paths({"json_out": tmp_path / "a", "html_out": tmp_path / "a"}, {})
    assert render_error(err.value).startswith("--json and --html name the same file")
    check_distinct_paths(
        {"json_out": tmp_path / "a", "html_out": tmp_path / "b"}, {"original": tmp_path / "c"}
    )


# --------------------------------------------------------------------------- the watchdog


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_timeouts_are_refused(bad):
    with pytest.raises(ConfigError):
        validate_timeout(bad)
    assert validate_timeout(0) is None and validate_timeout(2.5) == 2.5


def test_a_forward_that_loops_in_cpp_ends_with_exit_2_and_no_temp_file(tmp_path):
    """A scripted while loop never returns to Python; the watchdog still ends the process."""
    script = textwrap.dedent(
        f"""
        import torch, warnings
        warnings.simplefilter("ignore")
        from unlearn_audit.watchdog import guarded, set_limit, track_temp_file

        class Forever(torch.nn.Module):
            def forward(self, x):
                i = 0
                while i >= 0:
                    x = x + 1.0
                    i = i + 1
                return x

        model = torch.jit.script(Forever())
        tmp = {str(tmp_path / ".audit.json.tmp")!r}
        open(tmp, "w").write("half")
        track_temp_file(tmp)
        set_limit(1.0)
        with guarded("the unlearned model's forward pass"):
            model(torch.zeros(2))
        print("returned")
        """
    )
    path = tmp_path / "hang.py"  # TorchScript compiles from source, so the code lives in a file
    path.write_text(script, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("unlearn-audit: error: ")
    assert "did not finish within 1 s" in lines[0]
    assert "returned" not in proc.stdout
    assert not (tmp_path / ".audit.json.tmp").exists()


# --------------------------------------------------------------------------- graph inspection


def _quiet_script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(module)


@pytest.mark.parametrize("arch", ["logreg", "mlp", "cnn", "resnet18"])
def test_the_bundled_architectures_pass_inspection(arch):
    shape = (3, 32, 32) if arch == "resnet18" else (1, 28, 28)
    model = build_model(arch, num_classes=10, input_shape=shape).eval()
    program = torch.export.export(model, (torch.randn(2, *shape),))
    graphguard.check_graph_module(program.graph_module, arch)
    graphguard.check_graph_module(program.run_decompositions().graph_module, arch)
    graphguard.check_torchscript(_quiet_script(model), arch)


class _Print(torch.nn.Module):
    def forward(self, x):
        print(x)
        return x


class _Noise(torch.nn.Module):
    def forward(self, x):
        return x + torch.randn_like(x)


class _While(torch.nn.Module):
    def forward(self, x):
        i = 0
        while i < 5:
            x = x + 1
            i += 1
        return x


class _DataLoop(torch.nn.Module):
    def forward(self, x):
        for _ in range(int(x.sum())):
            x = x + 1
        return x


class _ShapeLoop(torch.nn.Module):
    def forward(self, x):
        for _ in range(x.shape[0]):
            x = x * 2
        return x


class _Counter(torch.nn.Module):
    """Answers differently on every query: state that changes between calls."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x):
        self.calls.add_(1)
        return x * self.calls


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (_Print(), "prim::Print"),
        (_Noise(), "aten::randn_like"),
        (_While(), "loop that may not end"),
        (_DataLoop(), "loop that may not end"),
    ],
    ids=["print", "random", "while", "data-sized-loop"],
)
def test_torchscript_graphs_with_side_effects_are_refused(module, needle):
    with pytest.raises(ModelError, match=needle):
        graphguard.check_torchscript(_quiet_script(module), "m.pt")


def test_a_loop_over_a_shape_is_bounded_and_allowed():
    graphguard.check_torchscript(_quiet_script(_ShapeLoop()), "m.pt")


def test_export_graphs_with_noise_or_state_are_refused():
    with pytest.raises(ModelError, match="randn_like"):
        graphguard.check_graph_module(torch.export.export(_Noise(), (torch.randn(2, 3),)).graph_module, "m")
    with pytest.raises(ModelError, match="writes into the model's inputs or weights"):
        graphguard.check_graph_module(torch.export.export(_Counter(), (torch.randn(2, 3),)).graph_module, "m")


def test_serialised_programs_are_checked_before_loading():
    node = {"target": "torch.ops.aten.from_file.default", "inputs": [], "outputs": []}
    program = {"graph_module": {"graph": {"nodes": [node]}, "signature": {"output_specs": []}}}
    import json

    with pytest.raises(ModelError, match="aten.from_file"):
        graphguard.check_export_json(json.dumps(program).encode(), "m.pt2")
    node["target"] = "torch.ops.higher_order.while_loop"
    with pytest.raises(ModelError, match="while_loop"):
        graphguard.check_export_json(json.dumps(program).encode(), "m.pt2")
    node["target"] = "torch.ops.mylib.anything.default"
    with pytest.raises(ModelError, match="not a pure tensor operator"):
        graphguard.check_export_json(json.dumps(program).encode(), "m.pt2")
    node["target"] = "torch.ops.aten.relu.default"
    program["graph_module"]["signature"]["output_specs"] = [{"buffer_mutation": {}}]
    with pytest.raises(ModelError, match="changes its own state"):
        graphguard.check_export_json(json.dumps(program).encode(), "m.pt2")


# --------------------------------------------------------------------------- archive bombs


def test_an_npz_that_inflates_past_the_limit_is_refused_before_reading(tmp_path, monkeypatch):
    from unlearn_audit.data import load_npz_set
    from unlearn_audit.errors import DataError

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((64, 1, 512, 512), np.float32), y=np.zeros(64, np.int64))
    assert path.stat().st_size < 200_000  # 64 MiB of zeros in a small file
    monkeypatch.setenv("UNLEARN_AUDIT_MAX_BYTES", str(16 << 20))
    with pytest.raises(DataError, match="over the limit of 16.0 MiB"):
        load_npz_set(path)
    monkeypatch.setenv("UNLEARN_AUDIT_MAX_BYTES", str(128 << 20))
    assert load_npz_set(path).x.shape == (64, 1, 512, 512)


def test_an_npy_header_declaring_more_than_its_member_holds_is_refused(tmp_path):
    import zipfile

    from unlearn_audit.data import load_npz_set
    from unlearn_audit.errors import DataError

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**4)}
    )
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + b"\0" * 64)
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3, np.int64))
        archive.writestr("y.npy", buffer.getvalue())
    with pytest.raises(DataError, match="x.npy declares"):
        load_npz_set(path)


# --------------------------------------------------------------------------- crafted .pt2 archives


class _Filler(torch.nn.Module):
    """``full`` then ``fill_``: the two nodes the attack below rewrites into ``from_file`` + ``fill_``."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        t = torch.full([5], 65, dtype=torch.uint8).fill_(66)
        return self.lin(x) + t.sum() * 0


def _file_writing_archive(tmp_path: Path, victim: Path) -> Path:
    """A .pt2 whose first node maps ``victim`` into memory (shared) so that ``fill_`` overwrites it."""
    import json
    import zipfile

    base = tmp_path / "base.pt2"
    torch.export.save(torch.export.export(_Filler(), (torch.randn(3, 4),)), str(base))
    with zipfile.ZipFile(base) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    key = next(name for name in members if name.endswith("models/model.json"))
    program = json.loads(members[key])
    node = program["graph_module"]["graph"]["nodes"][0]
    node["target"] = "torch.ops.aten.from_file.default"
    node["inputs"] = [
        {"name": "filename", "arg": {"as_string": str(victim)}, "kind": 1},
        {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
        {"name": "size", "arg": {"as_int": 5}, "kind": 1},
        {"name": "dtype", "arg": {"as_scalar_type": 1}, "kind": 2},
    ]
    members[key] = json.dumps(program).encode()
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(evil, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    return evil


def test_a_pt2_graph_that_writes_a_file_is_refused_before_it_runs(tmp_path):
    from unlearn_audit.models import load_model

    victim = tmp_path / "victim.txt"
    victim.write_text("hello world\n")
    evil = _file_writing_archive(tmp_path, victim)
    torch.export.load(str(evil)).module()(torch.randn(3, 4))  # control: unguarded, the attack works
    assert victim.read_text() == "BBBBB world\n"
    victim.write_text("hello world\n")
    with pytest.raises(ModelError, match=r"refused: the graph calls torch\.ops\.aten\.from_file"):
        load_model(evil)
    assert victim.read_text() == "hello world\n"


def test_a_pt2_while_loop_is_refused_at_load(tmp_path):
    from torch._higher_order_ops.while_loop import while_loop

    from unlearn_audit.models import load_model

    class Loop(torch.nn.Module):
        def forward(self, x):
            return while_loop(lambda i, y: i.sum() < 5, lambda i, y: (i + 1, y + 1), (torch.zeros(1), x))[1]

    path = tmp_path / "loop.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(Loop(), (torch.randn(2, 3),)), str(path))
    with pytest.raises(ModelError, match="while_loop, a loop that may never end"):
        load_model(path)


def test_a_pt2_zip_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    import zipfile

    from unlearn_audit.models import load_model

    path = tmp_path / "bomb.pt2"
    torch.export.save(torch.export.export(_Noise(), (torch.randn(2, 3),)), str(path))
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb/data/weights/padding", b"\0" * (64 << 20))
    assert path.stat().st_size < 1 << 20
    monkeypatch.setenv("UNLEARN_AUDIT_MAX_BYTES", str(16 << 20))
    with pytest.raises(ModelError, match="would inflate to 64.0 MiB, over the limit"):
        load_model(path)


def test_torchscript_is_refused_unless_trusted_and_then_still_inspected(tmp_path):
    from unlearn_audit.models import load_model

    path = tmp_path / "print.pt"
    torch.jit.save(_quiet_script(_Print()), str(path))
    with pytest.raises(ModelError, match="pass `trust_torchscript`") as err:
        load_model(path)
    assert err.value.param == "trust_torchscript" and "pass --trust-torchscript" in render_error(err.value)
    with pytest.raises(ModelError, match="prim::Print"):
        load_model(path, trust_torchscript=True)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("num_classes", 10**12, "num_classes must be an integer"),
        ("num_classes", -3, "num_classes must be an integer"),
        ("input_shape", [1, 10**6, 10**6], "input_shape must be"),
        ("arch_kwargs", {"hidden": 10**9}, "architecture option 'hidden'"),
    ],
)
def test_absurd_checkpoint_metadata_is_refused(tmp_path, field, value, needle):
    from unlearn_audit.models import load_model, save_checkpoint

    path = tmp_path / "m.pt"
    model = build_model("mlp", num_classes=3, input_shape=(1, 4, 4))
    save_checkpoint(model, path, arch="mlp", num_classes=3, input_shape=(1, 4, 4))
    payload = torch.load(path, weights_only=True)
    payload[field] = value
    torch.save(payload, path)
    with pytest.raises(ModelError, match=needle):
        load_model(path)


def test_integer_logits_are_cast_to_float():
    from unlearn_audit.models import GuardedModule

    class Rounded(torch.nn.Module):
        def forward(self, x):
            return (x * 10).round().to(torch.int64)

    out = GuardedModule(Rounded())(torch.rand(3, 4))
    assert out.dtype == torch.float32


def test_a_refusal_names_the_blocked_global_not_torchs_advice(tmp_path):
    import pickle

    from unlearn_audit.models import load_model

    class Shell:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "shell.pt"
    path.write_bytes(pickle.dumps({"state_dict": Shell()}, protocol=2))
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "posix.system" in message or "os.system" in message
    assert "Re-running" not in message and "\n" not in message


# --------------------------------------------------------------------------- Python text inside a .pt2


def _rewrite_program(src: Path, dst: Path, edit) -> Path:
    import json
    import zipfile

    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    key = next(name for name in members if name.endswith("models/model.json"))
    program = json.loads(members[key])
    edit(program)
    members[key] = json.dumps(program).encode()
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    return dst


def _dynamic_export(tmp_path: Path) -> Path:
    path = tmp_path / "dynamic.pt2"
    model = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU())
    shapes = ({0: torch.export.Dim("batch", min=2, max=1024)},)
    torch.export.save(torch.export.export(model, (torch.randn(3, 4),), dynamic_shapes=shapes), str(path))
    return path


def test_code_in_a_symbolic_size_is_refused_before_torch_evaluates_it(tmp_path):
    """torch parses ``expr_str`` with sympy.sympify (an eval) inside torch.export.load."""
    from unlearn_audit.models import load_model

    marker = tmp_path / "pwned"
    run = f"__import__('os').system('touch {marker}')"
    payload = f"Symbol('s77', positive=True, integer=True) + 0*len({run} or 'a')"

    def edit(program):
        node = program["graph_module"]["graph"]["tensor_values"]
        first = next(v for v in node.values() if any("as_expr" in s for s in v["sizes"]))
        next(s for s in first["sizes"] if "as_expr" in s)["as_expr"]["expr_str"] = payload

    evil = _rewrite_program(_dynamic_export(tmp_path), tmp_path / "evil.pt2", edit)
    torch.export.load(str(evil))  # control: torch alone runs the payload
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelError, match="holds code where a size expression belongs"):
        load_model(evil)
    assert not marker.exists()
    load_model(_dynamic_export(tmp_path))  # an honest dynamic-shape export still loads


def test_code_in_a_shape_guard_is_refused(tmp_path):
    """torch compiles ``guards_code`` with exec when the module is built, and runs it on each call."""
    from unlearn_audit.models import load_model

    marker = tmp_path / "pwned"

    def edit(program):
        program["guards_code"] = [f"__import__('os').system('touch {marker}') == 0"]

    evil = _rewrite_program(_dynamic_export(tmp_path), tmp_path / "evil.pt2", edit)
    torch.export.load(str(evil)).module()(torch.randn(3, 4))  # control
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelError, match="refused"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["torch.os.system", "_operator.call", "builtins.exec", "math.floor"])
def test_targets_outside_the_tensor_operators_are_refused(tmp_path, target):
    from unlearn_audit.models import load_model

    def edit(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = target

    evil = _rewrite_program(_dynamic_export(tmp_path), tmp_path / "evil.pt2", edit)
    with pytest.raises(ModelError, match="not a tensor operator"):
        load_model(evil)


@pytest.mark.parametrize(
    "text",
    ["s0 + 1", "Max(2, s77)", "FloorDiv(s1, 2) >= 3", "Symbol('s77', positive=True, integer=True)"],
)
def test_size_expressions_torch_writes_are_accepted(text):
    graphguard.check_expression(text, "m")


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "s0.__class__",
        "(lambda: 1)()",
        "Symbol('s0') + open('x')",
        '(s0 > 0 #")',
        "[s0 for s0 in range(9)]",
    ],
)
def test_code_disguised_as_a_size_expression_is_refused(text):
    with pytest.raises(ModelError):
        graphguard.check_expression(text, "m")
    with pytest.raises(ModelError):
        graphguard.check_expression(text, "m", guard=True)


def test_guards_torch_writes_are_accepted():
    graphguard.check_expression("L['x'].size()[0] <= 1024", "m", guard=True)
    with pytest.raises(ModelError):
        graphguard.check_expression("L['x'].size()[0] <= 1024", "m")  # no subscripts in a size
