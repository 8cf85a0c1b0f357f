"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a half-written report, result or checkpoint, and missing
parent folders are created.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from unlearn_audit.errors import ConfigError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create folder {path.parent} ({exc.strerror})") from None
    if path.is_dir():
        raise ConfigError(f"output path {path} is a folder; give a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write to folder {path.parent} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):  # disk full, I/O error: an input-side problem, one line
            raise ConfigError(f"cannot write {path} ({exc.strerror or exc})") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
