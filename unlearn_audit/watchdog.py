"""A time limit on untrusted model code that also stops a loop running inside C++.

A Python signal handler runs only between bytecodes, so it cannot stop a TorchScript or
``torch.export`` forward pass that loops inside ATen. Torch releases the GIL while it computes,
so a watchdog *thread* keeps running: when a guarded call overruns its deadline the watchdog
prints one error line, removes the temporary files of writes in progress and ends the process
with exit code 2 (``os._exit``: the stuck call never returns, so nothing else can run). Results
are only ever written through :mod:`unlearn_audit.fileio` (temporary file, then rename), so
no output is left half-written.

``UNLEARN_AUDIT_TIMEOUT`` (seconds) sets the default limit; ``0`` turns it off.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "UNLEARN_AUDIT_TIMEOUT"
DEFAULT_SECONDS = 300.0
EXIT_CODE = 2


def default_timeout() -> float | None:
    """The limit from ``UNLEARN_AUDIT_TIMEOUT``, else :data:`DEFAULT_SECONDS`; ``None`` when 0."""
    raw = os.environ.get(ENV_VAR)
    if raw is None or not raw.strip():
        return DEFAULT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        from unlearn_audit.errors import ConfigError

        raise ConfigError(f"{ENV_VAR} must be a number of seconds, got {raw!r}") from None
    return validate_timeout(seconds, ENV_VAR)


def validate_timeout(seconds: float | None, name: str = "timeout") -> float | None:
    """``None``/0 -> no limit; negative or non-finite values are refused."""
    from unlearn_audit.errors import ConfigError

    if seconds is None or seconds == 0:
        return None
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(
            f"{name} must be a positive number of seconds (0 turns the limit off), got {seconds}"
        )
    return float(seconds)


class _Watchdog:
    """One daemon thread; guarded calls register a deadline and remove it when they return."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deadlines: dict[int, tuple[float, float, str]] = {}
        self._next = 0
        self._temp_files: set[str] = set()
        self._thread: threading.Thread | None = None
        self.limit: float | None = None

    def arm(self, seconds: float, what: str) -> int:
        with self._lock:
            self._next += 1
            self._deadlines[self._next] = (time.monotonic() + seconds, seconds, what)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._watch, name="unlearn-audit-watchdog", daemon=True
                )
                self._thread.start()
            self._lock.notify()
            return self._next

    def disarm(self, token: int) -> None:
        with self._lock:
            self._deadlines.pop(token, None)
            self._lock.notify()

    def track_temp(self, path: str | Path, active: bool) -> None:
        with self._lock:
            (self._temp_files.add if active else self._temp_files.discard)(str(path))

    def _watch(self) -> None:
        with self._lock:
            while True:
                if not self._deadlines:
                    self._lock.wait()
                    continue
                due, seconds, what = min(self._deadlines.values())
                left = due - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                self._expire(seconds, what)

    def _expire(self, seconds: float, what: str) -> None:
        for path in self._temp_files:
            with contextlib.suppress(OSError):
                os.unlink(path)
        message = (
            f"unlearn-audit: error: {what} did not finish within {seconds:g} s "
            f"(raise the limit with --timeout or {ENV_VAR}; 0 turns it off)\n"
        )
        with contextlib.suppress(OSError):
            os.write(2, message.encode())
        os._exit(EXIT_CODE)


_WATCHDOG = _Watchdog()


def set_limit(seconds: float | None) -> None:
    """The limit that :func:`guarded` applies when it is not given one (``None``: no limit)."""
    _WATCHDOG.limit = seconds


def current_limit() -> float | None:
    return _WATCHDOG.limit


@contextlib.contextmanager
def guarded(what: str, seconds: float | None = None) -> Iterator[None]:
    """Run the body under a deadline; overrunning it ends the process with exit code 2."""
    limit = _WATCHDOG.limit if seconds is None else seconds
    if limit is None:
        yield
        return
    token = _WATCHDOG.arm(limit, what)
    try:
        yield
    finally:
        _WATCHDOG.disarm(token)


def track_temp_file(path: str | Path, active: bool = True) -> None:
    """Register (or release) a temporary file that must not outlive a timed-out process."""
    _WATCHDOG.track_temp(path, active)
