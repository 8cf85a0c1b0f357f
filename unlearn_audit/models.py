"""Checkpoints in every accepted format, and model fingerprints.

The architectures live in :mod:`unlearn_audit.archs`; ``build_model``, ``list_archs`` and
``register_arch`` are re-exported here for the code that always imported them from this module.

A model file is untrusted input. Nothing here unpickles arbitrary objects:

* native checkpoints and bare state_dicts load with ``torch.load(weights_only=True)``;
* ``torch.export`` archives (``.pt2``) are scanned first: every pickled member must load with
  ``weights_only=True`` before ``torch.export.load`` (which itself would unpickle freely) runs;
* TorchScript files load through TorchScript's own restricted deserialiser;
* safetensors files hold tensors only.

A file that would need arbitrary code to load is refused with a :class:`ModelError`.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from unlearn_audit.archs import build_model, list_archs, register_arch
from unlearn_audit.data import sha256_file
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.fileio import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "ExportedModule",
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


class ExportedModule(nn.Module):
    """Wrap a module from ``torch.export`` so metrics and attacks can use it like any other.

    Exported graph modules refuse ``.train()``/``.eval()`` and may be specialised to one batch
    size. This wrapper keeps the ``training`` flag for callers that save and restore it, and
    feeds inputs in chunks of the exported batch size (padding the last chunk) when needed.
    """

    def __init__(self, inner: nn.Module, batch_size: int | None) -> None:
        super().__init__()
        self.inner = inner
        self.fixed_batch = batch_size

    def train(self, mode: bool = True) -> ExportedModule:  # noqa: D102 - the mode does not apply
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


def _safe_torch_load(source: str | Path | io.BytesIO, where: str) -> object:
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message opens with advice to load unsafely; quote only the unpickler's reason.
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        reason = re.search(r"WeightsUnpickler error: ([^\n]*?)(?:\. |\n|$)", text)
        first = reason.group(1) if reason else (text.strip().splitlines() or [""])[0]
        raise ModelError(
            f"{where}: refused: loading it would run arbitrary code (only tensors and plain containers are "
            f"accepted; {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"{where}: corrupt or unreadable PyTorch file ({type(exc).__name__}: {exc})"
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
        for info in members:
            if not info.filename.endswith("_config.json"):
                continue
            try:
                config = json.loads(archive.read(info))["config"]
                entries = [(str(meta["path_name"]), meta.get("use_pickle")) for meta in config.values()]
            except (ValueError, KeyError, TypeError, AttributeError):
                raise ModelError(f"{path}: corrupt export archive ({info.filename})") from None
            folder = key(info.filename).rpartition("/")[0]
            for path_name, use_pickle in entries:
                if path_name.startswith(("custom_obj_", "opaque_obj_")):
                    raise ModelError(f"{path}: refused: custom object {path_name!r} needs arbitrary code")
                is_raw = use_pickle is False and _RAW_PAYLOAD.fullmatch(path_name)
                (raw if is_raw else unpickled).add(f"{folder}/{path_name.casefold()}")
        raw -= unpickled
        for info, name in zip(members, keys, strict=True):
            base = name.rsplit("/", 1)[-1]
            if name.startswith("data/aotinductor/"):
                raise ModelError(
                    f"{path}: refused: holds compiled AOTInductor code; save with torch.export.save"
                )
            if name in raw:
                continue
            data = archive.read(info)
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
) -> LoadedModel:
    """Load a model from any accepted format; the returned module is in eval mode on ``device``.

    ``arch`` (with ``num_classes`` and ``input_shape``) is needed only for a bare state_dict or a
    safetensors file; native checkpoints carry their own metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    digest = sha256_file(path)
    kind = _sniff(path)
    if kind == "export":
        _check_export_archive(path)
        try:
            program = torch.export.load(str(path))
            inner = program.module()
        except Exception as exc:  # the exporter raises many types on corrupt archives
            raise ModelError(
                f"{path}: cannot load torch.export archive ({type(exc).__name__}: {exc})"
            ) from None
        module: nn.Module = ExportedModule(inner, _infer_export_batch(program))
        loaded = LoadedModel(
            module, str(path), digest, "export", num_classes=num_classes, input_shape=input_shape
        )
    elif kind == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{path}: cannot load TorchScript file ({type(exc).__name__}: {exc})") from None
        loaded = LoadedModel(
            module, str(path), digest, "torchscript", num_classes=num_classes, input_shape=input_shape
        )
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
        obj = _safe_torch_load(path, str(path))
        if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
            loaded = _from_native(obj, path, digest)
        elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            loaded = _from_state_dict(
                obj["state_dict"], path, digest, "state_dict", arch, num_classes, input_shape, arch_kwargs
            )
        elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            loaded = _from_state_dict(
                obj, path, digest, "state_dict", arch, num_classes, input_shape, arch_kwargs
            )
        else:
            raise ModelError(
                f"{path}: holds a {type(obj).__name__}, not a checkpoint or state_dict; "
                "export the model with "
                "torch.export or TorchScript, or save its state_dict and pass --arch"
            )
    loaded.module.to(device)
    loaded.module.eval()
    return loaded


def _from_native(obj: dict, path: Path, digest: str) -> LoadedModel:
    version = obj.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise ModelError(f"{path}: checkpoint format version {version!r} is not supported (expected 1)")
    try:
        arch, kwargs = obj["arch"], dict(obj.get("arch_kwargs") or {})
        num_classes, shape = int(obj["num_classes"]), tuple(int(s) for s in obj["input_shape"])
        state = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: checkpoint metadata is incomplete ({exc})") from None
    module = build_model(arch, num_classes=num_classes, input_shape=shape, **kwargs)
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
        raise ModelError(f"{path}: a bare {fmt} has no architecture; pass --arch ({', '.join(list_archs())})")
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
            f"device {spec!r} requested but CUDA is not available here; use --device cpu or auto"
        )
    return device
