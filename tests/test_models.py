"""Tests for unlearn_audit/models.py: the architecture registry, every checkpoint format, and the
refusal of files that would run code when loaded.

Every round trip compares logits with the module that was saved (same inputs, exact equality
except torch.export, which may reorder float operations). Every refused payload is live: a control
shows that an unrestricted loader (``pickle``, ``torch.load(weights_only=False)`` or
``torch.export.load``) does create the marker file, and the test asserts ``load_model`` does not.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.models import (
    CHECKPOINT_FORMAT,
    ExportedModule,
    build_model,
    fingerprint_module,
    list_archs,
    load_model,
    resolve_device,
    save_checkpoint,
)

SHAPE = (1, 8, 8)
K = 10


class CreatesFile:
    """A pickle payload: unpickling it creates ``path`` (proof that code ran)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.rand(10, *SHAPE, generator=torch.Generator().manual_seed(0))


def _mlp() -> nn.Module:
    return build_model("mlp", num_classes=K, input_shape=SHAPE, seed=0, hidden=16).eval()


def _assert_refused_one_line(info: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message, message
    for fragment in fragments:
        assert fragment in message, message


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------


def test_unknown_arch_lists_the_valid_ones_and_suggests_the_closest():
    with pytest.raises(ConfigError) as info:
        build_model("resnet81", num_classes=K, input_shape=SHAPE)
    message = str(info.value)
    assert "unknown architecture 'resnet81'" in message
    assert "available: " + ", ".join(list_archs()) in message
    assert {"logreg", "mlp", "cnn", "resnet18"} <= set(list_archs())
    assert message.endswith("did you mean 'resnet18'?")
    with pytest.raises(ConfigError, match=r"unknown architecture 'zzz'; available: [^?]*$"):
        build_model("zzz", num_classes=K, input_shape=SHAPE)


def test_method_architectures_load_without_the_methods_package():
    """A SISA or Bayesian checkpoint loads through models.py alone: building a model imports no method."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from unlearn_audit.models import build_model, list_archs\n"
        "assert {'sisa', 'bayes_logreg'} <= set(list_archs())\n"
        "ens = build_model('sisa', num_classes=3, input_shape=(1, 4, 4), base='logreg', shards=2)\n"
        "bayes = build_model('bayes_logreg', num_classes=3, input_shape=(1, 4, 4), num_samples=5)\n"
        "assert len(ens.members) == 2 and bayes.samples.shape == (5, 3, 17)\n"
        "assert not [m for m in sys.modules if m.startswith('unlearn_audit.methods')], 'methods imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_build_model_is_seeded_and_checks_arguments():
    a, b = _mlp(), _mlp()
    assert all(
        torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    c = build_model("mlp", num_classes=K, input_shape=SHAPE, seed=1, hidden=16)
    assert fingerprint_module(c) != fingerprint_module(a)
    assert build_model("cnn", num_classes=3, input_shape=(3, 12, 12))(torch.rand(2, 3, 12, 12)).shape == (
        2,
        3,
    )
    with pytest.raises(ConfigError, match=r"input_shape must be \(C, H, W\), got \(8, 8\)"):
        build_model("mlp", num_classes=K, input_shape=(8, 8))
    with pytest.raises(ConfigError, match=r"architecture 'logreg': bad arguments \{'hidden': 3\}"):
        build_model("logreg", num_classes=K, input_shape=SHAPE, hidden=3)


def test_fingerprint_follows_the_weights():
    a, b = _mlp(), _mlp()
    assert fingerprint_module(a) == fingerprint_module(b)
    with torch.no_grad():
        b[1].weight[0, 0] += 1e-6
    assert fingerprint_module(a) != fingerprint_module(b)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"device 'cuda:1' requested but CUDA is not available"):
            resolve_device("cuda:1")


# ----------------------------------------------------------------------------------------------
# Round trips
# ----------------------------------------------------------------------------------------------


def test_native_checkpoint_round_trip_and_plain_weights_only_load(tmp_path, inputs):
    model = _mlp()
    path = tmp_path / "sub" / "model.pt"  # a missing folder is created
    prov = {"data": {"train_sha256": "ab" * 32}, "seed": 3, "odd": Path("/x")}
    digest = save_checkpoint(
        model, path, arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16}, provenance=prov
    )
    import hashlib

    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    raw = torch.load(path, weights_only=True)  # no custom classes inside
    assert raw["format"] == CHECKPOINT_FORMAT and raw["arch"] == "mlp" and raw["input_shape"] == list(SHAPE)
    assert raw["provenance"]["odd"] == "/x"  # made JSON-safe
    loaded = load_model(path)
    assert (loaded.format, loaded.arch, loaded.num_classes, loaded.input_shape) == ("native", "mlp", K, SHAPE)
    assert loaded.arch_kwargs == {"hidden": 16} and loaded.sha256 == digest
    assert loaded.describe()["provenance"]["data"]["train_sha256"] == "ab" * 32
    assert not loaded.module.training
    assert torch.equal(loaded.module(inputs), model(inputs))
    assert fingerprint_module(loaded.module) == fingerprint_module(model)


def test_save_does_not_touch_the_model(tmp_path):
    model = _mlp().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(
        model, tmp_path / "m.pt", arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16}
    )
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("wrap", ["bare", "state_dict-key"])
def test_state_dict_with_arch_round_trip(tmp_path, inputs, wrap):
    model = _mlp()
    state = model.state_dict()
    path = tmp_path / "weights.pth"
    torch.save(state if wrap == "bare" else {"state_dict": state, "epoch": 3}, path)
    loaded = load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16})
    assert loaded.format == "state_dict" and loaded.arch == "mlp"
    assert torch.equal(loaded.module(inputs), model(inputs))
    with pytest.raises(
        ModelError, match=r"has no architecture; pass `arch` \((?:\w+, )*cnn, logreg, mlp, resnet18"
    ):
        load_model(path)
    with pytest.raises(ModelError, match=r"needs the number of classes and the input shape"):
        load_model(path, arch="mlp")
    with pytest.raises(ModelError) as info:
        load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE)  # default hidden=256 does not fit
    _assert_refused_one_line(info, "weights do not fit the architecture")


def test_safetensors_round_trip(tmp_path, inputs):
    from safetensors.torch import save_file

    model = _mlp()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16})
    assert loaded.format == "safetensors"
    assert torch.equal(loaded.module(inputs), model(inputs))
    with pytest.raises(ModelError, match=r"bare safetensors has no architecture"):
        load_model(path)


def test_torchscript_round_trip(tmp_path, inputs):
    model = _mlp()
    path = tmp_path / "model.ts"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.trace(model, inputs[:2]).save(str(path))
    with pytest.raises(ModelError, match="refused: a TorchScript file can run its own code"):
        load_model(path)  # untrusted by default
    loaded = load_model(path, trust_torchscript=True)
    assert loaded.format == "torchscript" and not loaded.module.training
    assert torch.equal(loaded.module(inputs), model(inputs))


def _export(model: nn.Module, path: Path, batch: int, dynamic: bool) -> None:
    example = (torch.rand(batch, *SHAPE),)
    shapes = ({0: torch.export.Dim("batch", min=2, max=1024)},) if dynamic else None
    torch.export.save(torch.export.export(model, example, dynamic_shapes=shapes), str(path))


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "fixed-batch-4"])
def test_export_round_trip(tmp_path, inputs, dynamic):
    model = build_model("cnn", num_classes=K, input_shape=SHAPE, seed=0, width=4).eval()
    path = tmp_path / "model.pt2"
    _export(model, path, batch=4, dynamic=dynamic)
    loaded = load_model(path)
    assert loaded.format == "export" and isinstance(loaded.module, ExportedModule)
    assert loaded.module.fixed_batch == (None if dynamic else 4)
    with torch.no_grad():
        expected = model(inputs)
        # 10 inputs through a batch-4 export: chunks of 4, 4 and a padded 2; order must be kept.
        torch.testing.assert_close(loaded.module(inputs), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loaded.module(inputs[:3]), expected[:3], rtol=1e-5, atol=1e-6)
    # Callers save and restore the mode around their work; the wrapper must allow it.
    assert loaded.module.train() is loaded.module and loaded.module.training
    assert loaded.module.eval() is loaded.module and not loaded.module.training
    loaded.module.train(False)


# ----------------------------------------------------------------------------------------------
# Refused payloads: the code must not run
# ----------------------------------------------------------------------------------------------


def _torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_torch_saved_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    path.write_bytes(_torch_bytes({"state_dict": {"w": torch.zeros(1)}, "x": CreatesFile(str(marker))}))
    torch.load(path, weights_only=False)  # control: the payload is live
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ModelError) as info:
        load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE)
    assert not marker.exists(), "the payload ran"
    _assert_refused_one_line(info, "refused: loading it would run arbitrary code", "io.open")


def test_raw_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(CreatesFile(str(marker)), protocol=4)
    pickle.loads(payload)  # control
    assert marker.exists()
    marker.unlink()
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert not marker.exists(), "the payload ran"
    _assert_refused_one_line(info, "refused")


def test_pickled_whole_module_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(_mlp(), path)
    with pytest.raises(ModelError) as info:
        load_model(path)
    _assert_refused_one_line(info, "refused: loading it would run arbitrary code")


def _rezip(src: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(src) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    edit(members)
    with zipfile.ZipFile(dst, "w") as out:
        for name, data in members.items():
            out.writestr(name, data)
    return dst


def _member(members: dict[str, bytes], suffix: str) -> str:
    (name,) = [n for n in members if n.endswith(suffix)]
    return name


def _evil_weight(marker: Path):
    """Replace the first weight payload by a pickle marked use_pickle (as torch does for subclasses)."""

    def edit(members: dict[str, bytes]) -> None:
        cfg_name = _member(members, "data/weights/model_weights_config.json")
        cfg = json.loads(members[cfg_name])
        fqn = next(k for k, v in cfg["config"].items() if v["path_name"] == "weight_0")
        cfg["config"][fqn]["use_pickle"] = True
        members[cfg_name] = json.dumps(cfg).encode()
        members[_member(members, "data/weights/weight_0")] = _torch_bytes(CreatesFile(str(marker)))

    return edit


def _decoy_raw_entry(marker: Path):
    """Same, plus a second config entry naming weight_0 as raw bytes (a decoy for naive scanners)."""

    def edit(members: dict[str, bytes]) -> None:
        _evil_weight(marker)(members)
        cfg_name = _member(members, "data/weights/model_weights_config.json")
        cfg = json.loads(members[cfg_name])
        real = next(v for v in cfg["config"].values() if v["path_name"] == "weight_0")
        decoy = json.loads(json.dumps(real))
        decoy["use_pickle"], decoy["is_param"] = False, False
        decoy["tensor_meta"].update(
            dtype=1, requires_grad=False, sizes=[{"as_int": 1}], strides=[{"as_int": 1}]
        )
        cfg["config"] = {"0.decoy": decoy, **cfg["config"]}
        members[cfg_name] = json.dumps(cfg).encode()

    return edit


def _case_insensitive_name(marker: Path):
    """The pickled entry names WEIGHT_0, which torch's reader resolves to weight_0 (case-insensitive)."""

    def edit(members: dict[str, bytes]) -> None:
        _decoy_raw_entry(marker)(members)
        cfg_name = _member(members, "data/weights/model_weights_config.json")
        cfg = json.loads(members[cfg_name])
        for key, meta in cfg["config"].items():
            if meta["use_pickle"]:
                cfg["config"][key]["path_name"] = "WEIGHT_0"
        members[cfg_name] = json.dumps(cfg).encode()

    return edit


def _opaque_constant(marker: Path):
    """An opaque_obj_ constant is plain-pickled by torch whatever its use_pickle flag says."""

    def edit(members: dict[str, bytes]) -> None:
        cfg_name = _member(members, "data/constants/model_constants_config.json")
        payload = pickle.dumps(CreatesFile(str(marker)))
        meta = {
            "path_name": "opaque_obj_0",
            "is_param": False,
            "use_pickle": False,
            "tensor_meta": {
                "dtype": 1,
                "sizes": [{"as_int": len(payload)}],
                "requires_grad": False,
                "device": {"type": "cpu", "index": None},
                "strides": [{"as_int": 1}],
                "storage_offset": {"as_int": 0},
                "layout": 7,
            },
        }
        members[cfg_name] = json.dumps({"config": {"evil": meta}}).encode()
        members[cfg_name.replace("model_constants_config.json", "opaque_obj_0")] = payload

    return edit


def _legacy_layout(marker: Path):
    """torch.export.load falls back to the pre-2.8 layout and unpickles serialized_state_dict.json."""

    def edit(members: dict[str, bytes]) -> None:
        program = members[_member(members, "models/model.json")]
        members.clear()
        members["archive_format"] = b"pt2"  # makes the current reader fail, so the fallback runs
        members["version"] = b"8.0"
        members["serialized_exported_program.json"] = program
        members["serialized_state_dict.json"] = _torch_bytes(CreatesFile(str(marker)))
        members["serialized_constants.json"] = b""
        members["serialized_example_inputs.pt"] = _torch_bytes(((torch.rand(4, *SHAPE),), {}))

    return edit


EXPORT_ATTACKS = {
    "pickled-weight": (_evil_weight, "member weight_0): refused: loading it would run arbitrary code"),
    "decoy-raw-entry": (_decoy_raw_entry, "member weight_0): refused"),
    "case-insensitive-name": (_case_insensitive_name, "member weight_0): refused"),
    "opaque-constant": (_opaque_constant, "refused: custom object 'opaque_obj_0'"),
    "legacy-layout": (_legacy_layout, "member serialized_state_dict.json): refused"),
}


@pytest.mark.parametrize("attack", list(EXPORT_ATTACKS))
def test_pickle_hidden_in_export_archive_is_refused_and_never_runs(tmp_path, attack):
    make_edit, fragment = EXPORT_ATTACKS[attack]
    marker = tmp_path / "pwned"
    real = tmp_path / "real.pt2"
    _export(_mlp(), real, batch=4, dynamic=False)
    evil = _rezip(real, tmp_path / "evil.pt2", make_edit(marker))
    # Control: torch's own loader runs the payload (it may fail afterwards; the harm is done).
    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as mp:
        warnings.simplefilter("ignore")
        mp.setattr(logging.getLogger("torch.export"), "disabled", True)  # its fallback logs a traceback
        try:
            torch.export.load(str(evil))
        except Exception:
            pass
    assert marker.exists(), "the attack payload should be live for torch.export.load"
    marker.unlink()
    with pytest.raises(ModelError) as info:
        load_model(evil)
    assert not marker.exists(), "the payload ran"
    _assert_refused_one_line(info, fragment)


def test_export_archive_structure_is_checked(tmp_path):
    real = tmp_path / "real.pt2"
    _export(_mlp(), real, batch=4, dynamic=False)

    def duplicate(members):
        members[_member(members, "data/weights/weight_1").replace("weight_1", "WEIGHT_1")] = b"x"

    with pytest.raises(ModelError, match=r"refused: the archive holds duplicate members"):
        load_model(_rezip(real, tmp_path / "dup.pt2", duplicate))

    def aoti(members):
        root = next(iter(members)).split("/")[0]
        members[f"{root}/data/aotinductor/model/model.so"] = b"\x7fELF"

    with pytest.raises(ModelError, match=r"refused: holds compiled AOTInductor code"):
        load_model(_rezip(real, tmp_path / "aoti.pt2", aoti))

    def bad_config(members):
        members[_member(members, "model_weights_config.json")] = b'{"config": [1, 2]}'

    with pytest.raises(ModelError, match=r"corrupt export archive"):
        load_model(_rezip(real, tmp_path / "cfg.pt2", bad_config))


# ----------------------------------------------------------------------------------------------
# Corrupt, truncated, empty and non-model files
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_files(tmp_path_factory) -> dict[str, Path]:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("good")
    model = _mlp()
    files = {
        "native": folder / "native.pt",
        "safetensors": folder / "m.safetensors",
        "export": folder / "m.pt2",
    }
    save_checkpoint(
        model, files["native"], arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16}
    )
    save_file(dict(model.state_dict()), str(files["safetensors"]))
    _export(model, files["export"], batch=4, dynamic=False)
    return files


@pytest.mark.parametrize("kind", ["native", "safetensors", "export"])
def test_truncated_files(tmp_path, good_files, kind):
    data = good_files[kind].read_bytes()
    for cut in (len(data) // 2, len(data) - 7):
        path = tmp_path / f"cut{good_files[kind].suffix}"
        path.write_bytes(data[:cut])
        with pytest.raises(ModelError) as info:
            load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 16})
        _assert_refused_one_line(info, str(path))


BAD_FILES = {
    "empty": (b"", r"the file is empty"),
    "text": (b"hello, I am not a model\n", r"not a recognised model file"),
    "numpy": (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4'}", r"not a recognised model file"),
    "plain-zip": (None, r"a zip archive but not a PyTorch, TorchScript or torch.export file"),
    "list": (_torch_bytes([torch.zeros(2)]), r"holds a list, not a checkpoint or state_dict"),
    "mixed-dict": (_torch_bytes({"w": torch.zeros(2), "n": 3}), r"holds a dict, not a checkpoint"),
    "future-version": (
        _torch_bytes({"format": CHECKPOINT_FORMAT, "format_version": 99, "state_dict": {}}),
        r"checkpoint format version 99 is not supported",
    ),
    "incomplete": (
        _torch_bytes({"format": CHECKPOINT_FORMAT, "format_version": 1, "state_dict": {}}),
        r"checkpoint metadata is incomplete",
    ),
    "bad-safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", r"corrupt safetensors file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_non_model_files(tmp_path, kind):
    content, pattern = BAD_FILES[kind]
    path = tmp_path / "model.bin"
    if content is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hi")
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=pattern) as info:
        load_model(path, arch="mlp", num_classes=K, input_shape=SHAPE)
    _assert_refused_one_line(info)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match=r"model file not found: .*nope\.pt"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(ModelError, match=r"model file not found"):
        load_model(tmp_path)  # a folder is not a model file


# ----------------------------------------------------------------------------------------------
# Through the CLI: one line on stderr, exit 2, payload never runs
# ----------------------------------------------------------------------------------------------


def test_cli_refuses_a_pickle_payload_with_one_line(tmp_path, run_cli):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(_torch_bytes(CreatesFile(str(marker))))
    code, out, err = run_cli(
        [
            "evaluate",
            "--original",
            evil,
            "--unlearned",
            evil,
            "--data",
            "digits",
            "--forget",
            "class:3",
            "--device",
            "cpu",
            "--no-robustness",
        ]
    )
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearn-audit: error:"), err
    assert "evil.pt" in lines[0] and "refused" in lines[0] and "Traceback" not in err
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Atomic writes (checkpoints go through unlearn_audit.fileio)
# ----------------------------------------------------------------------------------------------


def test_interrupted_save_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import os

    path = tmp_path / "model.pt"
    path.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_mlp(), path, arch="mlp", num_classes=K, input_shape=SHAPE)
    assert path.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_unwritable_folder_is_a_config_error(tmp_path, monkeypatch):
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ConfigError, match=r"cannot write to folder .* \(Permission denied\)"):
        save_checkpoint(_mlp(), tmp_path / "m.pt", arch="mlp", num_classes=K, input_shape=SHAPE)


def test_saved_file_mode_follows_the_umask(tmp_path):
    import os
    import stat

    from unlearn_audit.fileio import atomic_write_text

    path = atomic_write_text(tmp_path / "a" / "b.txt", "héllo")
    mask = os.umask(0)
    os.umask(mask)
    assert path.read_text(encoding="utf-8") == "héllo"
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
