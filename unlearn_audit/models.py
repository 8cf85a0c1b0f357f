"""Checkpoints in every accepted format, and model fingerprints.

The architectures live in :mod:`unlearn_audit.archs`; ``build_model``, ``list_archs`` and
``register_arch`` are re-exported here for the code that always imported them from this module.

A model file is untrusted input. Nothing here unpickles arbitrary objects:

* native checkpoints and bare state_dicts load with ``torch.load(weights_only=True)``, and
  their metadata (classes, input shape, architecture options) is bounded before a model is built;
* ``torch.export`` archives (``.pt2``) are scanned first: declared member sizes are bounded
  (:mod:`unlearn_audit.limits`), every pickled member must load with ``weights_only=True``
  before ``torch.export.load`` (which itself would unpickle freely) runs, and every operator of
  the graph must be a pure tensor computation (:mod:`unlearn_audit.graphguard`), checked on
  the serialised program before loading and on the loaded graph before it runs;
* TorchScript can run its own code while it loads (scripted ``__setstate__``) and is not
  sandboxed, so it is refused unless the caller trusts it (``--trust-torchscript``); a trusted
  file's graph still goes through the same operator allow-list;
* safetensors files hold tensors only.

The forward pass of a ``.pt2`` or TorchScript model runs under the watchdog's time limit
(:mod:`unlearn_audit.watchdog`) and its outputs are cast to floating point. A file that would
need arbitrary code to load is refused with a :class:`ModelError`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from unlearn_audit import graphguard
from unlearn_audit.archs import build_model, list_archs, register_arch
from unlearn_audit.data import sha256_file
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.fileio import atomic_write_bytes
from unlearn_audit.limits import check_zip_sizes, max_bytes
from unlearn_audit.program_text import check_weights_config
from unlearn_audit.watchdog import guarded

__all__ = [
    "CHECKPOINT_FORMAT",
    "ExportedModule",
    "GuardedModule",
    "LoadedModel",
    "build_model",
    "fingerprint_module",
    "list_archs",
    "load_model",
    "register_arch",
    "resolve_device",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "unlearn-audit-checkpoint"
CHECKPOINT_VERSION = 1

# --------------------------------------------------------------------------- loaded models


class GuardedModule(nn.Module):
    """Wrap a model whose graph came from a file (``torch.export`` or TorchScript).

    Every forward pass runs under the watchdog's time limit and returns floating-point logits.
    The wrapper keeps its own ``training`` flag (exported graph modules refuse ``.train()``),
    and feeds inputs in chunks of an exported program's fixed batch size (padding the last
    chunk) when it has one. ``source`` names the file in messages; ``code_digest`` (the file's
    SHA-256) makes digests of the model cover its graph, not only its weights.

    A model must answer every query the same way: a forward pass that draws random numbers or
    writes into its own weights or buffers (allow-listed operators used in training mode, or a
    write the graph checks did not foresee) is refused, so no model can tell queries apart.
    """

    def __init__(
        self, inner: nn.Module, batch_size: int | None = None, source: str = "model", code_digest: str = ""
    ) -> None:
        super().__init__()
        self.inner = inner
        self.fixed_batch = batch_size
        self.source = source
        self.code_digest = code_digest

    def train(self, mode: bool = True) -> GuardedModule:  # noqa: D102 - the mode does not apply
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rng = torch.get_rng_state()
        versions = [t._version for t in self.inner.state_dict(keep_vars=True).values()]
        with guarded(f"the forward pass of {self.source}"):
            out = self._forward(x)
        changed = [t._version for t in self.inner.state_dict(keep_vars=True).values()] != versions
        if changed or not torch.equal(rng, torch.get_rng_state()):
            what = "wrote into its own weights or buffers" if changed else "drew random numbers"
            raise ModelError(
                f"{self.source}: refused: its forward pass {what}, so it can answer queries differently"
            )
        if isinstance(out, torch.Tensor) and not out.is_floating_point():
            out = out.float()
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return self.inner(x)
        outs = []
        for start in range(0, x.shape[0], b):
            chunk = x[start : start + b]
            n = chunk.shape[0]
            if n < b:
                pad = chunk[-1:].expand(b - n, *chunk.shape[1:])
                chunk = torch.cat([chunk, pad])
            outs.append(self.inner(chunk)[:n])
        return torch.cat(outs)


ExportedModule = GuardedModule  # the name earlier releases used


@dataclass
class LoadedModel:
    """A model ready for auditing, with where it came from."""

    module: nn.Module
    path: str
    sha256: str
    format: str  # native | state_dict | safetensors | torchscript | export
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    metadata: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "format": self.format,
            "arch": self.arch,
            "arch_kwargs": self.arch_kwargs,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "provenance": self.metadata.get("provenance", {}),
        }


def save_checkpoint(
    module: nn.Module,
    path: str | Path,
    *,
    arch: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    arch_kwargs: dict | None = None,
    provenance: dict | None = None,
    extra: dict | None = None,
) -> str:
    """Write a native checkpoint atomically; returns its SHA-256.

    The file is a plain dict of tensors, strings, numbers, lists and dicts, so
    ``torch.load(path, weights_only=True)`` alone can read it.
    """
    state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "num_classes": int(num_classes),
        "input_shape": [int(s) for s in input_shape],
        "state_dict": state,
        "provenance": _jsonable(provenance or {}),
        "extra": extra or {},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return sha256_file(path)


def _jsonable(obj: object) -> object:
    """Round-trip through JSON so only plain types reach the checkpoint."""
    return json.loads(json.dumps(obj, default=str))


def _refusal_reason(exc: Exception) -> str:
    """What torch's weights-only unpickler refused, without its advice to load unsafely."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    blocked = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global[^\w]+([\w]+(?:\.[\w]+)+)", text)
    if blocked:
        return f"it names the Python object {blocked.group(1)}"
    reason = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. |\n|$)", text)
    if reason and "Re-running" not in reason.group(1):
        return reason.group(1)[:160]
    return "it holds objects other than tensors and plain containers"


def _safe_torch_load(source: str | Path | io.BytesIO, where: str) -> object:
    if not isinstance(source, io.BytesIO) and zipfile.is_zipfile(source):
        check_zip_sizes(source, error=ModelError)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ModelError(
            f"{where}: refused: loading it would run arbitrary code ({_refusal_reason(exc)}; only tensors "
            "and plain containers are accepted)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        first = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"{where}: corrupt or unreadable PyTorch file ({type(exc).__name__}: {first})"
        ) from None


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) == 0:
        raise ModelError(f"{path}: the file is empty")
    if head[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile as exc:
            raise ModelError(f"{path}: corrupt archive ({exc})") from None
        if any(n.endswith("/models/model.json") or n.endswith("archive_format") for n in names):
            return "export"
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        raise ModelError(f"{path}: a zip archive but not a PyTorch, TorchScript or torch.export file")
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch"  # legacy (non-zip) torch.save / raw pickle: still weights_only
    raise ModelError(
        f"{path}: not a recognised model file (native .pt, state_dict, safetensors, TorchScript, .pt2)"
    )


def _check_export_archive(path: Path) -> None:
    """Refuse a ``.pt2`` whose loading could run code beyond reading tensors.

    ``torch.export.load`` unpickles freely: every config entry with ``use_pickle``, opaque custom
    objects (whatever the config says), and the members of the older archive layout (even
    ``serialized_state_dict.json``). Its member lookup ignores case and the top folder. So every
    member must load with ``weights_only=True``, except raw tensor payloads (``weight_N`` /
    ``tensor_N``) that no config entry asks to unpickle, and JSON or text markers that no config
    entry names. Custom objects, compiled AOTInductor code and duplicate members are refused.
    """

    def key(name: str) -> str:  # how torch's reader finds a member: below the top folder, any case
        return (name.partition("/")[2] or name).casefold()

    with zipfile.ZipFile(path) as archive:
        members = [info for info in archive.infolist() if not info.is_dir()]
        keys = [key(info.filename) for info in members]
        if len(set(keys)) != len(keys):
            raise ModelError(f"{path}: refused: the archive holds duplicate members")
        raw: set[str] = set()
        unpickled: set[str] = set()
        sizes = {name: info.file_size for name, info in zip(keys, members, strict=True)}
        declared = 0
        for info in members:
            if not info.filename.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(info))["config"]
                entries = [(str(meta["path_name"]), meta.get("use_pickle")) for meta in config.values()]
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ModelError(f"{path}: corrupt export archive ({info.filename})") from None
            folder = key(info.filename).rpartition("/")[0]
            declared += check_weights_config(config, sizes, folder, str(path))
            for path_name, use_pickle in entries:
                if path_name.startswith(("custom_obj_", "opaque_obj_")):
                    raise ModelError(f"{path}: refused: custom object {path_name!r} needs arbitrary code")
                is_raw = use_pickle is False and _RAW_PAYLOAD.fullmatch(path_name)
                (raw if is_raw else unpickled).add(f"{folder}/{path_name.casefold()}")
        raw -= unpickled
        if declared > max_bytes():
            raise ModelError(f"{path}: refused: its weights declare {declared:,} bytes, over the size limit")
        for info, name in zip(members, keys, strict=True):
            base = name.rsplit("/", 1)[-1]
            if name.startswith("data/aotinductor/"):
                raise ModelError(
                    f"{path}: refused: holds compiled AOTInductor code; save with torch.export.save"
                )
            if name in raw:
                continue
            data = archive.read(info)
            if name.startswith("models/") and name.endswith(".json"):
                graphguard.check_export_json(data, str(path))  # operators, before anything loads them
            if name not in unpickled and (base in _EXPORT_TEXT_MEMBERS or _is_json(data)):
                continue
            _safe_torch_load(io.BytesIO(data), f"{path} (member {info.filename.rsplit('/', 1)[-1]})")


_EXPORT_TEXT_MEMBERS = frozenset(
    {"archive_format", "archive_version", "version", "byteorder", "serialization_id"}
)
_RAW_PAYLOAD = re.compile(r"(weight|tensor)_\d+")


def _is_json(data: bytes) -> bool:
    """True for UTF-8 JSON text, which no unpickler accepts (so it needs no pickle scan)."""
    try:
        json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return False
    return True


def _infer_export_batch(program: object) -> int | None:
    try:
        names = set(program.graph_signature.user_inputs)  # type: ignore[attr-defined]
        for node in program.graph.nodes:  # type: ignore[attr-defined]
            if node.op == "placeholder" and node.name in names:
                shape = node.meta["val"].shape
                first = shape[0]
                return int(first) if isinstance(first, int) else None
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    return None


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    arch_kwargs: dict | None = None,
    device: torch.device | str = "cpu",
    trust_torchscript: bool = False,
) -> LoadedModel:
    """Load a model from any accepted format; the returned module is in eval mode on ``device``.

    ``arch`` (with ``num_classes`` and ``input_shape``) is needed only for a bare state_dict or a
    safetensors file; native checkpoints carry their own metadata. TorchScript is refused unless
    ``trust_torchscript`` (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    digest = sha256_file(path)
    kind = _sniff(path)
    if kind == "export":
        loaded = LoadedModel(_load_export(path), str(path), digest, "export")
    elif kind == "torchscript":
        loaded = LoadedModel(_load_torchscript(path, trust_torchscript), str(path), digest, "torchscript")
    elif kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ModelError(f"{path}: corrupt safetensors file ({exc})") from None
        loaded = _from_state_dict(
            state, path, digest, "safetensors", arch, num_classes, input_shape, arch_kwargs
        )
    else:
        loaded = _load_torch_file(path, digest, arch, num_classes, input_shape, arch_kwargs)
    if loaded.format in ("export", "torchscript"):
        loaded.num_classes, loaded.input_shape = num_classes, input_shape
    loaded.module.to(device)
    loaded.module.eval()
    return loaded


def _load_export(path: Path) -> GuardedModule:
    check_zip_sizes(path, error=ModelError)
    _check_export_archive(path)
    try:
        with guarded(f"loading {path}"):
            program = torch.export.load(str(path))
    except Exception as exc:  # the exporter raises many types on corrupt archives
        raise ModelError(f"{path}: cannot load torch.export archive ({type(exc).__name__}: {exc})") from None
    graphguard.check_graph_module(program.graph_module, str(path))
    kinds = {spec.kind.name for spec in program.graph_signature.output_specs}
    if kinds - {"USER_OUTPUT"}:
        raise ModelError(
            f"{path}: refused: the program changes its own state when queried ({', '.join(sorted(kinds))}); "
            "export the model in eval mode"
        )
    try:
        inner = program.module()
    except Exception as exc:
        raise ModelError(f"{path}: cannot load torch.export archive ({type(exc).__name__}: {exc})") from None
    return GuardedModule(inner, _infer_export_batch(program), source=str(path), code_digest=sha256_file(path))


def _load_torchscript(path: Path, trusted: bool) -> GuardedModule:
    if not trusted:
        raise ModelError(
            f"{path}: refused: a TorchScript file can run its own code while it loads and is not sandboxed; "
            "export the model with torch.export (.pt2), or pass `trust_torchscript` if you trust its source",
            param="trust_torchscript",
        )
    check_zip_sizes(path, error=ModelError)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(f"{path}: cannot load TorchScript file ({type(exc).__name__}: {exc})") from None
    graphguard.check_torchscript(module, str(path))
    return GuardedModule(module, source=str(path), code_digest=sha256_file(path))


def _load_torch_file(path, digest, arch, num_classes, input_shape, arch_kwargs) -> LoadedModel:
    obj = _safe_torch_load(path, str(path))
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_native(obj, path, digest)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _from_state_dict(obj, path, digest, "state_dict", arch, num_classes, input_shape, arch_kwargs)
    raise ModelError(
        f"{path}: holds a {type(obj).__name__}, not a checkpoint or state_dict; export the model with "
        "torch.export, or save its state_dict and pass `arch`",
        param="arch",
    )


MAX_CLASSES = 100_000
MAX_INPUT_ELEMENTS = 50_000_000
MAX_ARCH_OPTION = 100_000


def check_model_metadata(num_classes: object, input_shape: object, arch_kwargs: object, where: str) -> None:
    """Refuse metadata that would build an absurd model (a checkpoint's metadata is untrusted)."""
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, int)
        or not 1 <= num_classes <= MAX_CLASSES
    ):
        raise ModelError(
            f"{where}: num_classes must be an integer in [1, {MAX_CLASSES}], got {num_classes!r}"
        )
    shape = list(input_shape) if isinstance(input_shape, list | tuple) else None
    if (
        not shape
        or len(shape) > 4
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)
        or math.prod(shape) > MAX_INPUT_ELEMENTS
    ):
        raise ModelError(
            f"{where}: input_shape must be 1 to 4 positive integers of moderate size, got {input_shape!r}"
        )
    _check_options(arch_kwargs, where, depth=0)


def _check_options(options: object, where: str, depth: int) -> None:
    """Architecture options: a small mapping of scalars, short lists and (nested once) mappings."""
    if not isinstance(options, dict) or len(options) > 32 or depth > 2:
        raise ModelError(f"{where}: architecture options must be a small mapping, got {options!r:.80}")
    for key, value in options.items():
        values = value if isinstance(value, list) and len(value) <= 64 else [value]
        for item in values:
            if isinstance(item, dict):
                _check_options(item, where, depth + 1)
                continue
            number = isinstance(item, int | float) and not isinstance(item, bool)
            scalar = isinstance(item, bool | int | float | str | type(None))
            if not isinstance(key, str) or not scalar or (number and not abs(item) <= MAX_ARCH_OPTION):
                raise ModelError(f"{where}: architecture option {key!r}={value!r:.80} is not accepted")


def _from_native(obj: dict, path: Path, digest: str) -> LoadedModel:
    version = obj.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise ModelError(f"{path}: checkpoint format version {version!r} is not supported (expected 1)")
    try:
        arch, kwargs = obj["arch"], obj.get("arch_kwargs") or {}
        num_classes, shape = obj["num_classes"], obj["input_shape"]
        state = obj["state_dict"]
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: checkpoint metadata is incomplete ({exc})") from None
    check_model_metadata(num_classes, shape, kwargs, str(path))
    kwargs, shape = dict(kwargs), tuple(shape)
    try:
        module = build_model(arch, num_classes=num_classes, input_shape=shape, **kwargs)
    except TypeError as exc:
        raise ModelError(f"{path}: architecture options do not fit {arch!r} ({exc})") from None
    _load_state(module, state, path)
    meta = {"provenance": obj.get("provenance", {}), "extra": obj.get("extra", {})}
    return LoadedModel(module, str(path), digest, "native", arch, kwargs, num_classes, shape, meta)


def _from_state_dict(
    state: dict,
    path: Path,
    digest: str,
    fmt: str,
    arch: str | None,
    num_classes: int | None,
    input_shape: tuple[int, ...] | None,
    arch_kwargs: dict | None,
) -> LoadedModel:
    if arch is None:
        raise ModelError(
            f"{path}: a bare {fmt} has no architecture; pass `arch` ({', '.join(list_archs())})", param="arch"
        )
    if num_classes is None or input_shape is None:
        raise ModelError(f"{path}: a bare {fmt} needs the number of classes and the input shape")
    kwargs = dict(arch_kwargs or {})
    module = build_model(arch, num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    _load_state(module, state, path)
    return LoadedModel(module, str(path), digest, fmt, arch, kwargs, num_classes, tuple(input_shape))


def _load_state(module: nn.Module, state: dict, path: Path) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        summary = " ".join(str(exc).split())[:300]
        raise ModelError(f"{path}: weights do not fit the architecture ({summary})") from None


def fingerprint_module(module: nn.Module) -> str:
    """SHA-256 of a module's state_dict tensors (names, shapes and bytes), for cache keys."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; anything else must name a usable device."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {spec!r} requested but CUDA is not available here; use `device` cpu or auto",
            param="device",
        )
    return device
