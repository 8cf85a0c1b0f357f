"""An on-disk cache of model outputs, keyed by what determines them: the weights, the data and a caller key.

Reference models are reused across audits of the same data; their logits need not be
computed again. Keys are SHA-256 digests, so a retrained model or changed data can never
be served a stale entry.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attacks._arrays import to_numpy
from unlearn_audit.errors import ConfigError
from unlearn_audit.fileio import atomic_write_bytes

__all__ = ["SignalCache", "data_digest", "model_digest"]

logger = logging.getLogger(__name__)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    # view(uint8) works for every dtype, bfloat16 included, which numpy cannot represent.
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def model_digest(model: nn.Module) -> str:
    """SHA-256 of a model's class name, code and state_dict (names, dtypes, shapes and bytes).

    Code: a module's ``code_digest`` (the loader sets it to the file's SHA-256 for graph files)
    and the generated code of TorchScript and FX submodules, so two graphs with the same weights
    (or none) never share a digest.
    """
    h = hashlib.sha256()
    h.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    h.update(f"{getattr(model, 'code_digest', '')}\n".encode())
    for sub in model.modules():
        try:
            code = getattr(sub, "code", None)
        except (RuntimeError, AttributeError):  # a ScriptModule without a forward has no code
            code = None
        if isinstance(code, str):
            h.update(code.encode())
    for name, value in sorted(model.state_dict().items()):
        if isinstance(value, torch.Tensor):
            h.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
            h.update(_tensor_bytes(value))
        else:  # extra state
            h.update(f"{name}|{value!r}\n".encode())
    return h.hexdigest()


def data_digest(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> str:
    """SHA-256 of the bytes, dtypes and shapes of x and y."""
    h = hashlib.sha256()
    for name, arr in (("x", x), ("y", y)):
        t = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(arr))
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _load(path: Path, meta: tuple[str, str, str]) -> np.ndarray | None:
    """The values stored at ``path`` if its digests and key are ``meta``; None (with a warning) otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = (str(npz["model_digest"]), str(npz["data_digest"]), str(npz["key"]))
            if stored == meta:
                logger.debug("signal cache hit %s", path.name)
                return np.array(npz["values"])
        logger.warning("signal cache entry %s does not match its key; recomputing", path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("signal cache entry %s is unreadable (%s); recomputing", path, exc)
    return None


def _store(path: Path, values: np.ndarray, meta: tuple[str, str, str]) -> None:
    """Write ``values`` with their digests and key to ``path`` in one atomic replace."""
    m_digest, d_digest, key = meta
    buf = io.BytesIO()
    np.savez(
        buf,
        values=values,
        model_digest=np.array(m_digest),
        data_digest=np.array(d_digest),
        key=np.array(key),
    )
    atomic_write_bytes(path, buf.getvalue())
    logger.debug("signal cache stored %s (%s)", path.name, values.shape)


class SignalCache:
    """On-disk cache of a model's outputs (typically logits) on one data role.

    An entry is keyed by SHA-256 of (the model's state_dict, the data x and y, a caller
    key such as ``"logits:forget"``) and stored as ``<directory>/<sha256>.npz`` with the
    three digests inside; it is written atomically (temporary file + ``os.replace``), so a
    crash never leaves a half-written entry. A file that is unreadable or whose stored
    digests do not match is recomputed and overwritten (with a warning).

    Example::

        cache = SignalCache(".unlearn_audit_cache")
        logits = cache.get_or_compute(model, x_forget, y_forget,
                                      lambda m, x: compute_logits(m, x, device="cpu"), key="forget")
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise ConfigError(f"cache directory {self.directory} exists and is not a folder")

    def path_for(
        self, model: nn.Module, x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, key: str = ""
    ) -> Path:
        """Where the entry for (model, x, y, key) lives (whether or not it exists)."""
        return self._path((model_digest(model), data_digest(x, y), key))

    def _path(self, meta: tuple[str, str, str]) -> Path:
        """The entry file of (model digest, data digest, key)."""
        entry = hashlib.sha256("\n".join(meta).encode()).hexdigest()
        return self.directory / f"{entry}.npz"

    def get_or_compute(
        self,
        model: nn.Module,
        x: torch.Tensor | np.ndarray,
        y: torch.Tensor | np.ndarray,
        compute_fn: Callable[[nn.Module, torch.Tensor | np.ndarray], torch.Tensor | np.ndarray],
        *,
        key: str = "",
    ) -> np.ndarray:
        """The cached array for (model, x, y, key), or ``compute_fn(model, x)`` stored then returned.

        Args:
            model: the model; only its class and state_dict enter the key.
            x: (N, ...) inputs of the data role; y: (N,) labels. Both enter the key.
            compute_fn: called as ``compute_fn(model, x)`` on a miss; returns an array or tensor.
            key: caller's extra key (signal name, role, batch-norm mode, ...), default "".

        Returns:
            numpy array as returned by ``compute_fn`` (tensors are converted on CPU).
        """
        meta = (model_digest(model), data_digest(x, y), key)
        path = self._path(meta)
        values = _load(path, meta) if path.is_file() else None
        if values is None:
            values = to_numpy(compute_fn(model, x), "compute_fn output")
            _store(path, values, meta)
        return values
