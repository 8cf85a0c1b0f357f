"""Size limits checked before an untrusted archive is read.

A zip archive (``.npz``, ``.pt2``, a torch checkpoint) states the uncompressed size of each
member in its central directory, and Python's reader never inflates a member past that size; an
``.npy`` member states its array's shape and dtype in a short header. Both are read and
checked against :func:`max_bytes` first, so a few hundred kilobytes that inflate to many
gigabytes (a "zip bomb") are refused with one line instead of exhausting memory.

``UNLEARN_AUDIT_MAX_BYTES`` sets the limit for one file's uncompressed contents (default
:data:`DEFAULT_MAX_BYTES`, 4 GiB).
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np

from unlearn_audit.errors import ConfigError, DataError

ENV_VAR = "UNLEARN_AUDIT_MAX_BYTES"
DEFAULT_MAX_BYTES = 4 << 30


def max_bytes() -> int:
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(float(raw))
    except ValueError:
        raise ConfigError(f"{ENV_VAR} must be a number of bytes, got {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{ENV_VAR} must be positive, got {raw!r}")
    return value


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def check_zip_sizes(
    path: str | Path, *, error: type[Exception] = DataError, limit: int | None = None
) -> None:
    """Refuse a zip archive whose members declare more than ``limit`` bytes in all."""
    limit = max_bytes() if limit is None else limit
    try:
        with zipfile.ZipFile(path) as archive:
            total = sum(max(info.file_size, 0) for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise error(f"{path}: not a readable zip archive ({exc})") from None
    if total > limit:
        raise error(
            f"{path}: refused: its members would inflate to {_gib(total)}, over the limit of {_gib(limit)} "
            f"(set {ENV_VAR} to raise it)"
        )


def check_npz_arrays(path: str | Path, *, limit: int | None = None) -> None:
    """Read every ``.npy`` header of an ``.npz`` and refuse arrays over ``limit`` bytes in all.

    An array whose declared size exceeds what its member holds is refused too (it cannot be
    read, and numpy would allocate it before noticing).
    """
    limit = max_bytes() if limit is None else limit
    check_zip_sizes(path, limit=limit)
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            nbytes = _declared_nbytes(archive, info, path)
            if nbytes > info.file_size:
                raise DataError(
                    f"{path}: array {info.filename} declares {_gib(nbytes)} but holds {info.file_size} bytes"
                )
            total += nbytes
    if total > limit:
        raise DataError(
            f"{path}: refused: arrays of {_gib(total)} exceed the limit of {_gib(limit)} "
            f"(set {ENV_VAR} to raise it)"
        )


def _read_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an ``.npy`` header, without reading the data."""
    version = np.lib.format.read_magic(stream)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in reader:
        raise ValueError(f"unsupported .npy format version {version}")
    shape, _, dtype = reader[version](stream)
    if any(int(d) < 0 for d in shape):
        raise ValueError(f"negative dimension in shape {shape}")
    return tuple(int(d) for d in shape), dtype


def _declared_nbytes(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str | Path) -> int:
    try:
        with archive.open(info) as member:
            shape, dtype = _read_header(member)
    except Exception as exc:  # ValueError for a bad header, zipfile errors, ...
        raise DataError(f"{path}: array {info.filename} has an unreadable header ({exc})") from None
    return math.prod(shape) * dtype.itemsize


def check_npy_file(path: str | Path, *, limit: int | None = None) -> None:
    """The same check for a bare ``.npy`` file (its size on disk bounds what it can hold)."""
    limit = max_bytes() if limit is None else limit
    try:
        with open(path, "rb") as f:
            shape, dtype = _read_header(f)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > min(limit, os.path.getsize(path)):
        raise DataError(f"{path}: refused: the array declares {_gib(nbytes)}")
