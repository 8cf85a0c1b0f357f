"""What every ``unlearn-audit`` command shares: exit codes, console output and common options.

The commands live in :mod:`unlearn_audit.cli` and :mod:`unlearn_audit.cli_bench`; both import
this module and neither imports the other's internals, so the command line has no import cycle.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer

from unlearn_audit.errors import ConfigError, UnlearnAuditError

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


class _State:
    """Options of the root command that the subcommands read (set before any command runs)."""

    quiet = False
    command: str | None = None


state = _State()


@contextlib.contextmanager
def console_errors() -> Iterator[None]:
    """Turn input errors into one line on stderr and exit code 2."""
    try:
        yield
    except UnlearnAuditError as exc:
        typer.echo(f"unlearn-audit: error: {render_error(exc)}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except MemoryError:
        typer.echo("unlearn-audit: error: out of memory (the input is too large for this machine)", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except RuntimeError as exc:  # torch reports a failed allocation as a RuntimeError
        if "out of memory" not in str(exc) and "not enough memory" not in str(exc):
            raise
        typer.echo(f"unlearn-audit: error: out of memory ({one_line(exc)[:200]})", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        typer.echo("unlearn-audit: interrupted", err=True)
        raise typer.Exit(130) from None


@contextlib.contextmanager
def command_time_limit(seconds: float | None, command: str) -> Iterator[None]:
    """``--timeout`` of train, unlearn and benchmark: a limit on the whole command (none by default).

    Past it the watchdog ends the process with exit code 2 and one line; outputs are written
    atomically, so nothing is left half-written.
    """
    from unlearn_audit.watchdog import guarded, validate_timeout

    limit = validate_timeout(seconds, "--timeout")
    with guarded(f"the {command} command", limit) if limit else contextlib.nullcontext():
        yield


# Keywords whose flag is not the keyword with dashes for underscores.
_FLAGS = {
    "policy_path": "--policy",
    "json_out": "--json",
    "html_out": "--html",
    "junit_out": "--junit",
    "out_dir": "--out",
    "set_": "--set",
    "params": "--set",
    "method_params": "--set",
}


def flag_for(param: str) -> str:
    """The command-line flag of a library keyword: ``reference_models`` -> ``--reference-models``."""
    return _FLAGS.get(param, "--" + param.replace("_", "-"))


def render_error(exc: UnlearnAuditError) -> str:
    """The error's message on one line, each keyword it names (in backticks) shown as its flag."""
    text = str(exc)
    for param in exc.params:
        text = text.replace(f"`{param}`", flag_for(param))
    return one_line(text)


def one_line(message: object) -> str:
    """Collapse a message (which may quote a library's multi-line text) onto one line."""
    return " ".join(str(message).split())


@contextlib.contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr; yields the ``progress(done, total)`` callback the library takes."""
    if state.quiet or not sys.stderr.isatty():
        last = [0.0]

        def plain(done: int, total: int) -> None:
            now = time.monotonic()
            if not state.quiet and (done == total or now - last[0] > 10):
                last[0] = now
                typer.echo(f"  {description}: {done}/{total}", err=True)

        yield plain
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def info(message: str) -> None:
    typer.echo(message)


def check_output_path(path: Path) -> None:
    """Fail before long work when an output path cannot be written (or is not a regular file)."""
    from unlearn_audit.fileio import check_replaceable

    check_replaceable(path)
    if path.is_dir():
        raise ConfigError(f"output path {path} is a folder; give a file name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"cannot write {path}: folder {parent} is not writable")


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set key=value`` pairs as a dict of strings."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# The threat-model defaults (attacks.threat.THREAT_MODELS) that help texts quote. Written out here
# because importing the table loads torch, which would slow every start (--help included) tenfold;
# tests/test_errors.py checks them against the table.
EPS_DEFAULTS = "0.3 MNIST-like, 8/255 other"
STEPS_DEFAULTS = "40 MNIST-like, 10 other"

# Options with the same meaning in every command that takes them.
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the built-in train/test split.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        help="Seconds; evaluate: longest forward pass of a .pt2/TorchScript model (default "
        "$UNLEARN_AUDIT_TIMEOUT or 300); train/unlearn/benchmark: the whole command (default none). 0: off.",
    ),
]
