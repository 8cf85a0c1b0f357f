"""The ``unlearn-audit`` command line: thin commands that parse, call the library, print and exit.

Exit codes: 0 pass / success, 1 audit verdict fail, 3 audit verdict inconclusive,
2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from unlearn_audit import __version__
from unlearn_audit.errors import ConfigError, UnlearnAuditError

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3

app = typer.Typer(
    name="unlearn-audit",
    help="Audit machine unlearning: prove (or disprove) that a model has forgotten data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _State:
    quiet = False


state = _State()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; print results only.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Audit machine unlearning: prove (or disprove) that a model has forgotten data.

    Commands: train (original, retrained or adversarially trained models), unlearn (bundled
    methods), methods (list them), evaluate (the audit: HTML, JSON, JUnit, exit code),
    report (re-render a saved audit), benchmark and robustness-study.
    """
    if version:
        typer.echo(f"unlearn-audit {__version__}")
        raise typer.Exit(0)
    state.quiet = quiet
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --------------------------------------------------------------------------- console helpers


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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
        console=_stderr_console(),
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def info(message: str) -> None:
    typer.echo(message)


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set key=value`` pairs as a dict of strings."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- data options

DataOpt = Annotated[
    Optional[str],
    typer.Option("--data", help="Data source: mnist-5k, digits, npz:PATH, imagefolder:DIR, mnist:ROOT, cifar10:ROOT."),
]
ForgetOpt = Annotated[
    Optional[str],
    typer.Option("--forget", help="Forget set: class:3 | class:3,5 | random:0.1 | random:100 | a file of indices."),
]
ForgetDataOpt = Annotated[
    Optional[Path], typer.Option("--forget-data", help="Forget role as an .npz (x, y); with --retain-data, --test-data.")
]
RetainDataOpt = Annotated[Optional[Path], typer.Option("--retain-data", help="Retain role as an .npz (x, y).")]
TestDataOpt = Annotated[Optional[Path], typer.Option("--test-data", help="Test role as an .npz (x, y).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for splits, forget sampling, training and attacks.")]
SplitSeedOpt = Annotated[int, typer.Option("--split-seed", help="Seed of the built-in train/test split.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")]


def load_roles(
    data: str | None,
    forget: str | None,
    forget_data: Path | None,
    retain_data: Path | None,
    test_data: Path | None,
    *,
    seed: int,
    split_seed: int,
    num_classes: int | None = None,
):
    """Resolve the two ways of naming the roles into a :class:`~unlearn_audit.data.Roles`."""
    from unlearn_audit.data import load_dataset, load_role_files, make_roles

    files = [forget_data, retain_data, test_data]
    if data is not None:
        if any(files):
            raise ConfigError("give either --data with --forget, or the three role files, not both")
        if forget is None:
            raise ConfigError("--data needs --forget (class:K, random:F or an index file)")
        roles = make_roles(load_dataset(data, split_seed=split_seed), forget, seed=seed)
        if num_classes is not None and roles.num_classes > num_classes:
            raise ConfigError(f"data has labels up to {roles.num_classes - 1} but the model has {num_classes} classes")
        return roles
    if all(files):
        if forget is not None:
            raise ConfigError("--forget goes with --data; the role files already name the forget set")
        return load_role_files(forget_data, retain_data, test_data, num_classes=num_classes)  # type: ignore[arg-type]
    if any(files):
        missing = [n for n, f in zip(("--forget-data", "--retain-data", "--test-data"), files, strict=True) if not f]
        raise ConfigError(f"role files need all three; missing {', '.join(missing)}")
    raise ConfigError("name the data: --data DATA --forget SPEC, or --forget-data/--retain-data/--test-data")


# --------------------------------------------------------------------------- train


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the checkpoint (.pt).")],
    data: DataOpt = "mnist-5k",
    arch: Annotated[str, typer.Option("--arch", help="Architecture: logreg, mlp, cnn, resnet18.")] = "cnn",
    forget: ForgetOpt = None,
    without_forget: Annotated[
        bool, typer.Option("--without-forget", help="Train on the retain set only: the retrained gold standard.")
    ] = False,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs (default 10).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Batch size (default 128).")] = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default 1e-3, Adam).")] = None,
    optimizer: Annotated[Optional[str], typer.Option("--optimizer", help="adam or sgd.")] = None,
    adversarial: Annotated[
        Optional[str], typer.Option("--adversarial", help="Adversarial training: pgd (Madry) or fgsm (Wong, fast).")
    ] = None,
    eps: Annotated[Optional[float], typer.Option("--eps", help="L-inf radius (default 0.3 MNIST, 8/255 CIFAR).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="PGD steps in adversarial training.")] = None,
    for_method: Annotated[
        Optional[str], typer.Option("--for-method", help="Record the training state a method needs (sisa, amnesiac, ...).")
    ] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Parameter of --for-method training, key=value (repeatable).")
    ] = None,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
) -> None:
    """Train a model on a data set and save a native checkpoint.

    Example: unlearn-audit train --data mnist-5k --arch cnn --out original.pt

    With --forget SPEC --without-forget it trains the retrained reference on the retain set only;
    with --adversarial pgd|fgsm it trains the adversarially trained model of the robustness study.
    """
    with _errors():
        from unlearn_audit.api import train_checkpoint

        result = train_checkpoint(
            out=out,
            data=data or "mnist-5k",
            arch=arch,
            forget=forget,
            without_forget=without_forget,
            overrides={
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "optimizer": optimizer,
                "adversarial": adversarial,
                "eps": eps,
                "steps": steps,
                "seed": seed,
            },
            for_method=for_method,
            method_params=parse_sets(set_),
            split_seed=split_seed,
            device=device,
            progress_factory=progress_bar,
        )
        info(result.summary())


# --------------------------------------------------------------------------- error handling


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    """Turn input errors into one line on stderr and exit code 2."""
    try:
        yield
    except UnlearnAuditError as exc:
        typer.echo(f"unlearn-audit: error: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        typer.echo("unlearn-audit: interrupted", err=True)
        raise typer.Exit(130) from None


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    try:
        code = app(args=argv, prog_name="unlearn-audit", standalone_mode=False)
    except ClickException as exc:
        message = exc.format_message().strip().splitlines()
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.ctx.get_help() if getattr(exc, "ctx", None) else message[0], err=True)
        else:
            typer.echo(f"unlearn-audit: error: {' '.join(message)} (see --help)", err=True)
        sys.exit(EXIT_USAGE)
    except UnlearnAuditError as exc:  # raised outside a command body (e.g. while parsing)
        typer.echo(f"unlearn-audit: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
