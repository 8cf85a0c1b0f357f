"""Shared fixtures: an ``.npz`` writer and an in-process ``unlearn-audit`` runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest


class CliResult(NamedTuple):
    """What one ``unlearn-audit`` invocation did; unpacks as ``code, out, err``."""

    code: int
    out: str
    err: str


@pytest.fixture
def write_npz(tmp_path: Path) -> Callable[..., Path]:
    """``write_npz(name, **arrays)`` saves plain arrays to ``tmp_path / name`` and returns the path."""

    def write(name: str = "data.npz", **arrays: np.ndarray) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return path

    return write


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[[Sequence[str]], CliResult]:
    """``run_cli(args)`` calls ``unlearn_audit.cli.main(args)`` in-process; returns ``(code, out, err)``.

    The exit code is what ``main`` passes to ``sys.exit`` (0 when it returns normally).
    """
    from unlearn_audit.cli import main

    def run(args: Sequence[str]) -> CliResult:
        capsys.readouterr()  # drop whatever earlier steps of the test printed
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run
