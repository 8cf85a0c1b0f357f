"""The ``benchmark`` and ``robustness-study`` commands, added to the app by :func:`register`.

``unlearn_audit.cli`` builds the app and calls ``register(app)``; the console helpers both
modules use live in :mod:`unlearn_audit.cli_common`, so this module never imports the CLI.
The library modules are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from unlearn_audit.cli_common import (
    EPS_DEFAULTS,
    STEPS_DEFAULTS,
    DeviceOpt,
    SplitSeedOpt,
    TimeoutOpt,
    command_time_limit,
    console_errors,
    info,
    parse_sets,
    progress_bar,
    state,
)
from unlearn_audit.cli_executor import ExecutorOpt, RayAddressOpt, opened_executor
from unlearn_audit.run_config import parse_method_sets, parse_methods

if TYPE_CHECKING:
    from unlearn_audit.api import ProgressFactory
    from unlearn_audit.progress import Say

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data source: mnist-5k (default; digits with --quick), npz:PATH, imagefolder:DIR, ..."
    ),
]
ArchOpt = Annotated[
    str | None,
    typer.Option("--arch", help="Architecture: logreg, mlp, cnn (default; mlp with --quick), resnet18."),
]
ForgetOpt = Annotated[
    str, typer.Option("--forget", help="Forget set: random:0.1 | random:100 | class:3 | index file.")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder: tables, checkpoints, audits.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Method hyperparameter method.key=value, e.g. amun.epochs=5 (repeatable)."),
]
EpochsOpt = Annotated[
    int | None,
    typer.Option("--epochs", help="Training epochs of the models (recipe default; 3-5 with --quick)."),
]
QuickOpt = Annotated[
    bool,
    typer.Option(
        "--quick", help="Shrink everything for a smoke test: digits, mlp, few epochs, small attacks."
    ),
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume/--no-resume", help="Reuse checkpoints and results in --out made from the same inputs."
    ),
]
RobustSamplesOpt = Annotated[
    int | None, typer.Option("--robust-samples", help="Test examples attacked (500; 100 with --quick).")
]
RobustEpsOpt = Annotated[float | None, typer.Option("--robust-eps", help="PGD L-inf radius.")]
RobustStepsOpt = Annotated[int | None, typer.Option("--robust-steps", help="PGD steps.")]

# benchmark
BenchMethodsOpt = Annotated[
    str,
    typer.Option(
        "--methods", help="Comma-separated methods (see `unlearn-audit methods`); retrain is always shown."
    ),
]
BenchSeedsOpt = Annotated[
    int, typer.Option("--seeds", help="Number of seeds (0..N-1): models, forget set, methods.")
]
LrOpt = Annotated[float | None, typer.Option("--lr", help="Learning rate of the models' training recipe.")]
OptimizerOpt = Annotated[
    str | None, typer.Option("--optimizer", help="adam or sgd (amnesiac_per_sample needs sgd).")
]
BenchRobustnessOpt = Annotated[
    bool,
    typer.Option("--robustness/--no-robustness", help="Also measure PGD robust accuracy in every audit."),
]
PolicyOpt = Annotated[Path | None, typer.Option("--policy", help="TOML file overriding audit thresholds.")]

# robustness-study
StudyMethodsOpt = Annotated[
    str, typer.Option("--methods", help="Comma-separated methods; unbundled ones are reported unavailable.")
]
StudySeedsOpt = Annotated[int, typer.Option("--seeds", help="Number of seeds (0..N-1).")]
AdversarialOpt = Annotated[
    str, typer.Option("--adversarial", help="at_model training: pgd (Madry) or fgsm (Wong, faster).")
]
AttackEpsOpt = Annotated[
    float | None,
    typer.Option(
        "--attack-eps",
        help="L-inf radius of the PGD attack and of adversarial training "
        f"({EPS_DEFAULTS}; 0.1 with --quick).",
    ),
]
AttackStepsOpt = Annotated[
    int | None, typer.Option("--attack-steps", help=f"PGD steps of the attack ({STEPS_DEFAULTS}).")
]
TrainStepsOpt = Annotated[
    int | None, typer.Option("--train-steps", help="PGD steps in adversarial training (10; 5 with --quick).")
]
StudySamplesOpt = Annotated[
    int | None, typer.Option("--robust-samples", help="Test examples attacked (500; 200 with --quick).")
]


def _stepper(quiet: bool) -> Say | None:
    """One console line per step, prefixed with the elapsed time since the command started."""
    if quiet:
        return None
    start = time.monotonic()

    def say(message: str) -> None:
        typer.echo(f"[{time.monotonic() - start:7.1f}s] {message}", err=True)

    return say


def _run_table_command(
    out: Path,
    stem: str,
    methods: str,
    set_: list[str] | None,
    run: Callable[..., Any],
    row_line: Callable[[Any], str],
    timeout: float | None = None,
) -> None:
    """The body both commands share: parse ``--methods`` and ``--set``, call
    ``run(names, method_params, say, progress_factory)`` (which builds the config and runs),
    then print ``row_line(row)`` for every row of the result and the four files written to
    ``out`` (``<stem>.md``, ``.csv``, ``.json``, ``.html``). Input errors exit with code 2; past
    ``timeout`` seconds the command ends with exit code 2."""
    with console_errors(), command_time_limit(timeout, stem):
        names = parse_methods(methods)
        result = run(names, parse_method_sets(parse_sets(set_), names), _stepper(state.quiet), progress_bar)
        for row in result.rows:
            info(row_line(row))
        for kind in ("md", "csv", "json", "html"):
            info(f"wrote {out / f'{stem}.{kind}'}")


def benchmark(
    out: OutOpt,
    data: DataOpt = None,
    arch: ArchOpt = None,
    forget: ForgetOpt = "random:0.1",
    methods: BenchMethodsOpt = "finetune,random_label,gradient_ascent,boundary_shrink,l1_sparse,salun,amun",
    seeds: BenchSeedsOpt = 3,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    lr: LrOpt = None,
    optimizer: OptimizerOpt = None,
    robustness: BenchRobustnessOpt = False,
    robust_samples: RobustSamplesOpt = None,
    robust_eps: RobustEpsOpt = None,
    robust_steps: RobustStepsOpt = None,
    policy: PolicyOpt = None,
    quick: QuickOpt = False,
    resume: ResumeOpt = True,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
    executor: ExecutorOpt = "inprocess",
    ray_address: RayAddressOpt = None,
) -> None:
    """Compare unlearning methods against retraining: the AMUN table, audited, mean ± std over seeds.

    Example: unlearn-audit benchmark --data mnist-5k --arch cnn --forget random:0.1
    --methods amun,salun,finetune --seeds 3 --out bench/ --set amun.epochs=5

    Per seed it trains the original and the retrained model, runs every method, audits each
    result against the retrained model, and writes benchmark.md, .csv, .json and .html to --out:
    forget, retain and test accuracy, membership AUC (forget vs test), Avg. Gap to retrain,
    time and verdict. Re-runs reuse finished work (--no-resume to redo it).
    """

    def run(
        names: tuple[str, ...], method_params: dict, say: Say | None, progress_factory: ProgressFactory
    ) -> Any:
        from unlearn_audit.bench import BenchmarkConfig, run_benchmark
        from unlearn_audit.policy import load_policy

        config = BenchmarkConfig.make(
            quick=quick,
            data=data,
            arch=arch,
            forget=forget,
            methods=names,
            seeds=seeds,
            method_params=method_params,
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            robustness=robustness,
            robust_samples=robust_samples,
            robust_eps=robust_eps,
            robust_steps=robust_steps,
            policy=load_policy(policy) if policy else None,
            split_seed=split_seed,
            device=device,
            resume=resume,
        )
        with opened_executor(executor, ray_address) as jobs:
            return run_benchmark(config, out, say=say, progress_factory=progress_factory, executor=jobs)

    _run_table_command(
        out,
        "benchmark",
        methods,
        set_,
        run,
        lambda row: f"  {row.method:<24} Avg. Gap {row.avg_gap.text():>14}   verdicts: {row.verdict_text()}",
        timeout,
    )


def robustness_study(
    out: OutOpt,
    data: DataOpt = None,
    arch: ArchOpt = None,
    forget: ForgetOpt = "random:0.1",
    methods: StudyMethodsOpt = "sisa,amnesiac,amun",
    seeds: StudySeedsOpt = 1,
    adversarial: AdversarialOpt = "pgd",
    attack_eps: AttackEpsOpt = None,
    attack_steps: AttackStepsOpt = None,
    train_steps: TrainStepsOpt = None,
    robust_samples: StudySamplesOpt = None,
    set_: SetOpt = None,
    epochs: EpochsOpt = None,
    quick: QuickOpt = False,
    resume: ResumeOpt = True,
    split_seed: SplitSeedOpt = 0,
    device: DeviceOpt = "auto",
    timeout: TimeoutOpt = None,
    executor: ExecutorOpt = "inprocess",
    ray_address: RayAddressOpt = None,
) -> None:
    """Robustness before and after unlearning: ACC, R-ACC and Gap for RQ1-RQ4.

    Example: unlearn-audit robustness-study --data mnist-5k --methods sisa,amnesiac,amun --out study/

    Trains a standard (st_model) and an adversarially trained model (at_model) on the full
    training set, unlearns the forget set from each with each method, and measures PGD robust
    accuracy before (RQ1 st, RQ2 at) and after (RQ3 st, RQ4 at) the deletion. Writes
    robustness-study.md, .csv, .json and .html to --out. Methods that are not bundled or whose
    training state cannot be produced are listed as unavailable, with the reason.
    """

    def run(
        names: tuple[str, ...], method_params: dict, say: Say | None, progress_factory: ProgressFactory
    ) -> Any:
        from unlearn_audit.study import StudyConfig, run_study

        config = StudyConfig.make(
            quick=quick,
            data=data,
            arch=arch,
            forget=forget,
            methods=names,
            seeds=seeds,
            adversarial=adversarial,
            attack_eps=attack_eps,
            attack_steps=attack_steps,
            train_steps=train_steps,
            robust_samples=robust_samples,
            method_params=method_params,
            epochs=epochs,
            split_seed=split_seed,
            device=device,
            resume=resume,
        )
        with opened_executor(executor, ray_address) as jobs:
            return run_study(config, out, say=say, progress_factory=progress_factory, executor=jobs)

    def row_line(row: Any) -> str:
        if not row.measured:
            return f"  {row.rq} {row.model} {row.stage:<6} {row.method:<14} unavailable: {row.note}"
        assert row.accuracy is not None and row.robust_accuracy is not None and row.gap is not None
        return (
            f"  {row.rq} {row.model} {row.stage:<6} {row.method:<14} ACC {row.accuracy.text():>14}  "
            f"R-ACC {row.robust_accuracy.text():>14}  Gap {row.gap.text():>14}"
        )

    _run_table_command(out, "robustness-study", methods, set_, run, row_line)


def register(app: typer.Typer) -> None:
    """Add ``benchmark`` and ``robustness-study`` to ``app`` (once; calling again is harmless)."""
    present = {c.name for c in app.registered_commands}
    for name, command in (("benchmark", benchmark), ("robustness-study", robustness_study)):
        if name not in present:
            app.command(name)(command)
