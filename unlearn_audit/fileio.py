"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a half-written report, result or checkpoint, and missing
parent folders are created. An existing target that is not a regular file (a FIFO, a device
node, a socket, or a symbolic link such as ``/proc/self/fd/1``) is never replaced: the write is
refused, since a rename would delete the node (as root, ``--json /dev/full`` would remove the
device). :func:`check_distinct_paths` refuses an output that is also an input or another output.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from unlearn_audit.errors import ConfigError
from unlearn_audit.watchdog import track_temp_file


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
    check_replaceable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write to folder {path.parent} ({exc.strerror})") from None
    track_temp_file(tmp)
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
    finally:
        track_temp_file(tmp, active=False)
    return path


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "symbolic link"),
        (stat.S_ISDIR, "folder"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return name
    return "special file"


def check_replaceable(path: str | Path) -> None:
    """Refuse an output path that exists and is not a regular file (links are not followed)."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # nothing there yet (a missing folder is reported later)
        return
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise ConfigError(f"output path {path} is a folder; give a file name")
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"refusing to write {path}: it is a {_kind(mode)}, not a regular file (outputs only replace "
            "regular files)"
        )


def _same(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_distinct_paths(
    outputs: Mapping[str, str | Path | None], inputs: Mapping[str, str | Path | None]
) -> None:
    """Refuse an output that names an input file or another output (hard and soft links included).

    Keys are the caller's keywords (``json_out``, ``unlearned``, ...); the error names them.
    """
    outs = [(name, Path(p)) for name, p in outputs.items() if p is not None]
    ins = [(name, Path(p)) for name, p in inputs.items() if p is not None]
    for i, (name, path) in enumerate(outs):
        for other, other_path in outs[i + 1 :]:
            if _same(path, other_path):
                raise ConfigError(
                    f"`{name}` and `{other}` name the same file {path}; give each output its own",
                    param=(name, other),
                )
        for other, other_path in ins:
            if _same(path, other_path):
                raise ConfigError(
                    f"`{name}` {path} is the input `{other}`; refusing to overwrite an input",
                    param=(name, other),
                )


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
