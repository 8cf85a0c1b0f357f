"""The ``unlearn-audit`` command line: thin commands that parse, call the library, print and exit.

Exit codes: 0 pass / success, 1 audit verdict fail, 3 audit verdict inconclusive,
2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import logging
import shlex
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from unlearn_audit import __version__
from unlearn_audit.cli_bench import register as register_bench_commands
from unlearn_audit.cli_common import (
    EPS_DEFAULTS,
    EXIT_FAIL,
    EXIT_INCONCLUSIVE,
    EXIT_PASS,
    EXIT_USAGE,
    STEPS_DEFAULTS,
    DeviceOpt,
    SplitSeedOpt,
    TimeoutOpt,
    check_output_path,
    command_time_limit,
    console_errors,
    info,
    one_line,
    parse_sets,
    progress_bar,
    render_error,
    state,
)
from unlearn_audit.cli_compare import register as register_compare_command
from unlearn_audit.cli_executor import ExecutorOpt, MixedPrecisionOpt, RayAddressOpt
from unlearn_audit.errors import ConfigError, UnlearnAuditError

try:  # typer >= 0.20 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer depends on click
    from click.exceptions import ClickException

app = typer.Typer(
    name="unlearn-audit",
    help="Audit machine unlearning: prove (or disprove) that a model has forgotten data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"unlearn-audit {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details to stderr.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars; print results only.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Audit machine unlearning: prove (or disprove) that a model has forgotten data.

    Commands: train (original, retrained or adversarially trained models), unlearn (bundled
    methods), methods (list them), evaluate (the audit: HTML, JSON, JUnit, exit code),
    report (re-render a saved audit), benchmark and robustness-study.
    """
    state.quiet = quiet
    if not verbose:  # library warnings would print tracebacks-like noise before a one-line error
        warnings.simplefilter("ignore")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --------------------------------------------------------------------------- data options

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data source: mnist-5k, digits, npz:PATH, imagefolder:DIR, mnist:ROOT, cifar10:ROOT."
    ),
]
ForgetOpt = Annotated[
    str | None,
    typer.Option(
        "--forget", help="Forget set: class:3 | class:3,5 | random:0.1 | random:100 | a file of indices."
    ),
]
ForgetDataOpt = Annotated[
    Path | None,
    typer.Option("--forget-data", help="Forget role as an .npz (x, y); with --retain-data, --test-data."),
]
RetainDataOpt = Annotated[Path | None, typer.Option("--retain-data", help="Retain role as an .npz (x, y).")]
TestDataOpt = Annotated[Path | None, typer.Option("--test-data", help="Test role as an .npz (x, y).")]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed for splits, forget sampling, training and attacks.")
]


# --------------------------------------------------------------------------- train


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the checkpoint (.pt).")],
    data: DataOpt = "mnist-5k",
    arch: Annotated[str, typer.Option("--arch", help="Architecture: logreg, mlp, cnn, resnet18.")] = "cnn",
    forget: ForgetOpt = None,
    without_forget: Annotated[
        bool,
        typer.Option("--without-forget", help="Train on the retain set only: the retrained gold standard."),
    ] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs (default 10).")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch size (default 128).")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Learning rate (default 1e-3, Adam).")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="adam or sgd.")] = None,
    adversarial: Annotated[
        str | None,
        typer.Option("--adversarial", help="Adversarial training: pgd (Madry) or fgsm (Wong, fast)."),
    ] = None,
    eps: Annotated[
        float | None, typer.Option("--eps", help=f"L-inf radius (default {EPS_DEFAULTS}).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="PGD steps in adversarial training.")] = None,
    for_method: Annotated[
        str | None,
        typer.Option("--for-method", help="Record the training state a method needs (sisa, amnesiac, ...)."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Parameter of --for-method training, key=value (repeatable)."),
    ] = None,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
) -> None:
    """Train a model on a data set and save a native checkpoint.

    Example: unlearn-audit train --data mnist-5k --arch cnn --out original.pt

    With --forget SPEC --without-forget it trains the retrained reference on the retain set only;
    with --adversarial pgd|fgsm it trains the adversarially trained model of the robustness study.
    """
    with console_errors(), command_time_limit(timeout, "train"):
        from unlearn_audit.api import train_checkpoint

        check_output_path(out)

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


# --------------------------------------------------------------------------- unlearn / methods


@app.command()
def unlearn(
    method: Annotated[
        str, typer.Option("--method", "-m", help="Registry name; see `unlearn-audit methods`.")
    ],
    model: Annotated[
        Path, typer.Option("--model", help="The original model (native checkpoint or state_dict + --arch).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the unlearned checkpoint.")],
    data: DataOpt = None,
    forget: ForgetOpt = None,
    forget_data: ForgetDataOpt = None,
    retain_data: RetainDataOpt = None,
    test_data: TestDataOpt = None,
    arch: Annotated[
        str | None, typer.Option("--arch", help="Architecture of a bare state_dict model.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Method hyperparameter key=value (repeatable).")
    ] = None,
    seed: SeedOpt = 0,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
) -> None:
    """Run a bundled unlearning method and save the unlearned model.

    Example: unlearn-audit unlearn --method amun --model original.pt --data mnist-5k --forget random:0.1
    --out unlearned.pt --set epochs=5

    With only --forget-data (no --retain-data) methods that need the retain set refuse;
    `--set retain=none` runs AMUN, RL and SalUn with forget-set access only.
    """
    with console_errors(), command_time_limit(timeout, "unlearn"):
        from unlearn_audit.api import unlearn_checkpoint

        check_output_path(out)

        result = unlearn_checkpoint(
            method=method,
            model=model,
            out=out,
            params=parse_sets(set_),
            data=data,
            forget=forget,
            forget_data=forget_data,
            retain_data=retain_data,
            test_data=test_data,
            arch=arch,
            seed=seed,
            split_seed=split_seed,
            device=device,
            progress_factory=progress_bar,
        )
        info(result.summary())


@app.command()
def methods(
    name: Annotated[str | None, typer.Argument(help="Show one method in full.")] = None,
) -> None:
    """List every bundled unlearning method with its parameters and defaults."""
    with console_errors():
        from unlearn_audit.methods import get_method, list_methods

        infos = list_methods()
        if name is not None:
            get_method(name)  # raises with a did-you-mean for unknown names
            infos = [i for i in infos if i.name == name]
        for i in infos:
            needs = ", ".join(sorted(i.requires))
            info(f"{i.name}  (needs: {needs})\n    {i.doc}")
            for p in i.params:
                info(f"    --set {p.name + '=' + str(p.default):<26} {p.type:<14} {p.help}")
            info("")


# --------------------------------------------------------------------------- evaluate

VERDICT_EXIT = {"pass": EXIT_PASS, "fail": EXIT_FAIL, "inconclusive": EXIT_INCONCLUSIVE}


# What evaluate compares, how deep it looks, and where its reports go.
OriginalOpt = Annotated[Path, typer.Option("--original", help="The model before unlearning.")]
UnlearnedOpt = Annotated[Path, typer.Option("--unlearned", help="The model after unlearning.")]
RetrainedOpt = Annotated[
    Path | None, typer.Option("--retrained", help="A model retrained without the forget set (gold standard).")
]
BareArchOpt = Annotated[
    str | None, typer.Option("--arch", help="Architecture of bare state_dict / safetensors models.")
]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="TOML file overriding gating thresholds.")]
JsonOutOpt = Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")]
HtmlReportOpt = Annotated[Path | None, typer.Option("--html", help="Write the HTML compliance report.")]
PdfReportOpt = Annotated[
    Path | None, typer.Option("--pdf", help="Write the report as PDF (needs a headless Chromium).")
]
JunitReportOpt = Annotated[
    Path | None, typer.Option("--junit", help="Write JUnit XML (one testcase per check).")
]
ReferenceModelsOpt = Annotated[
    int, typer.Option("--reference-models", help="Train N reference models without the forget set (U-LiRA).")
]
ReferenceDirOpt = Annotated[
    Path | None, typer.Option("--reference-dir", help="Folder of models trained without the forget set.")
]
RobustnessOpt = Annotated[
    bool, typer.Option("--robustness/--no-robustness", help="Measure PGD robust accuracy (ACC, R-ACC, Gap).")
]
RobustSamplesOpt = Annotated[int, typer.Option("--robust-samples", help="Test examples attacked.")]
RobustEpsOpt = Annotated[
    float | None, typer.Option("--robust-eps", help=f"PGD L-inf radius (default {EPS_DEFAULTS}).")
]
RobustStepsOpt = Annotated[int | None, typer.Option("--robust-steps", help=f"PGD steps ({STEPS_DEFAULTS}).")]
LabelOnlyOpt = Annotated[
    str | None,
    typer.Option("--label-only", help="Also run ART's label-only attack: gap (fast) or boundary (slow)."),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option("--cache-dir", help="Cache for reference models (default ~/.cache/unlearn-audit)."),
]
NoCacheOpt = Annotated[
    bool,
    typer.Option("--no-cache", help="Train reference models afresh; never read or write the cache (CI)."),
]
TrustTorchScriptOpt = Annotated[
    bool,
    typer.Option("--trust-torchscript", help="Load TorchScript files (they can run code while loading)."),
]
ForgetSeedOpt = Annotated[
    int | None,
    typer.Option(
        "--forget-seed", help="Seed of a random: forget set (default: the one the checkpoints record)."
    ),
]


@app.command()
def evaluate(
    original: OriginalOpt,
    unlearned: UnlearnedOpt,
    retrained: RetrainedOpt = None,
    data: DataOpt = None,
    forget: ForgetOpt = None,
    forget_data: ForgetDataOpt = None,
    retain_data: RetainDataOpt = None,
    test_data: TestDataOpt = None,
    arch: BareArchOpt = None,
    policy_path: PolicyOpt = None,
    json_out: JsonOutOpt = None,
    html_out: HtmlReportOpt = None,
    junit_out: JunitReportOpt = None,
    pdf_out: PdfReportOpt = None,
    reference_models: ReferenceModelsOpt = 0,
    reference_dir: ReferenceDirOpt = None,
    robustness: RobustnessOpt = True,
    robust_samples: RobustSamplesOpt = 500,
    robust_eps: RobustEpsOpt = None,
    robust_steps: RobustStepsOpt = None,
    label_only: LabelOnlyOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    trust_torchscript: TrustTorchScriptOpt = False,
    timeout: TimeoutOpt = None,
    seed: SeedOpt = 0,
    forget_seed: ForgetSeedOpt = None,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
    executor: ExecutorOpt = "inprocess",
    ray_address: RayAddressOpt = None,
    mixed_precision: MixedPrecisionOpt = False,
) -> None:
    """Audit an unlearned model: membership inference, accuracy, robustness, distances; gate on a policy.

    Example: unlearn-audit evaluate --original original.pt --unlearned unlearned.pt --retrained retrained.pt
    --data mnist-5k --forget random:0.1 --html audit.html --json audit.json --junit audit.xml

    Exit code: 0 pass, 1 fail, 3 inconclusive, 2 usage or input error.
    """
    options = dict(locals())  # every option, named as evaluate_audit names it
    with console_errors():
        from unlearn_audit.api import evaluate_audit

        for target in (json_out, html_out, junit_out, pdf_out):
            if target is not None:
                check_output_path(target)
        if robust_samples < 1:
            raise ConfigError(f"--robust-samples must be >= 1, got {robust_samples}")
        say = None if state.quiet else (lambda m: typer.echo(f"  {m} ...", err=True))
        outputs = evaluate_audit(**options, progress_factory=progress_bar, say=say, command=state.command)
        info(format_summary(outputs.result))
        for kind, path in outputs.written.items():
            info(f"wrote {kind}: {path}")
    raise typer.Exit(VERDICT_EXIT[outputs.verdict])


def format_summary(result: dict) -> str:
    """The console summary of an audit: one line per check, then the verdict."""
    lines = []
    width = max(len(c["name"]) for c in result["checks"])
    for c in result["checks"]:
        tag = c["status"].upper() + ("" if c.get("gating", True) else " (advisory)")
        lines.append(f"  {c['name']:<{width}}  {tag:<25} {c['detail']}")
    accs = []
    for name, m in result["models"].items():
        a = m["accuracy"]
        accs.append(f"  {name:<10} forget {a['forget']:.3f}  retain {a['retain']:.3f}  test {a['test']:.3f}")
    verdict = result["verdict"].upper()
    return "\n".join(["accuracy:", *accs, "checks:", *lines, f"verdict: {verdict}"])


@app.command()
def report(
    result_json: Annotated[Path, typer.Argument(help="A JSON result written by evaluate --json.")],
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the HTML report here.")] = None,
    junit_out: Annotated[Path | None, typer.Option("--junit", help="Write JUnit XML here.")] = None,
    pdf_out: Annotated[
        Path | None, typer.Option("--pdf", help="Write the report as PDF (needs a headless Chromium).")
    ] = None,
) -> None:
    """Re-render a saved audit result as HTML, PDF and/or JUnit; exits with the saved verdict's code.

    Example: unlearn-audit report audit.json --html audit.html --pdf audit.pdf
    """
    with console_errors():
        from unlearn_audit.pdf import require_browser, write_pdf
        from unlearn_audit.report import read_json, write_html, write_junit

        if html_out is None and junit_out is None and pdf_out is None:
            raise ConfigError("nothing to write: give --html, --pdf and/or --junit")
        browser = require_browser() if pdf_out else None  # before any output: no renderer, no partial work
        result = read_json(result_json)
        if html_out:
            info(f"wrote html: {write_html(result, html_out)}")
        if pdf_out:
            info(f"wrote pdf: {write_pdf(result, pdf_out, browser)}")
        if junit_out:
            info(f"wrote junit: {write_junit(result, junit_out)}")
        verdict = result.get("verdict")
        if verdict not in VERDICT_EXIT:
            raise ConfigError(f"{result_json}: unknown verdict {verdict!r}")
    raise typer.Exit(VERDICT_EXIT[verdict])


register_bench_commands(app)
register_compare_command(app)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    state.command = shlex.join(["unlearn-audit", *(sys.argv[1:] if argv is None else map(str, argv))])
    try:
        code = app(args=argv, prog_name="unlearn-audit", standalone_mode=False)
    except ClickException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and getattr(exc, "ctx", None) is not None:
            typer.echo(exc.ctx.get_help())
        else:
            typer.echo(f"unlearn-audit: error: {one_line(exc.format_message())} (see --help)", err=True)
        sys.exit(EXIT_USAGE)
    except UnlearnAuditError as exc:  # raised outside a command body (e.g. while parsing)
        typer.echo(f"unlearn-audit: error: {render_error(exc)}", err=True)
        sys.exit(EXIT_USAGE)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
