"""``unlearn-audit benchmark``: the comparison table of the AMUN paper, audited.

Ebrahimpour-Borojeny, Sundaram & Chandrasekaran, "Not All Wrong is Bad: Using Adversarial
Examples for Unlearning" (AMUN, ICML 2025), Table "Random Forget (10%)": for every method the
unlearn (forget-set) accuracy FA, retain accuracy RA, test accuracy TA, a membership AUC on the
forget set vs the test set, and the average gap to the model retrained without the forget set,

    Avg. Gap = (|FA - FA_r| + |RA - RA_r| + |TA - TA_r| + |MIA - MIA_r|) / 4   (percentage points),

each as mean +/- standard deviation over seeds. ``retrain`` is the gold standard (gap 0).

What one seed ``s`` does (everything is written below ``out_dir/seed-<s>/``):

1. train ``original.pt`` on the full training set and ``retrained.pt`` on the retain set with the
   same recipe (:func:`unlearn_audit.api.train_checkpoint`, ``seed=s``; the forget set is drawn
   with seed ``s`` too);
2. for every method, unlearn the original (:func:`unlearn_audit.api.unlearn_checkpoint`,
   ``seed=s``) into ``unlearned-<method>.pt``. A method that needs state recorded during training
   (``needs_state``, e.g. SISA) gets its own original, ``original-<state>.pt``, trained through
   ``record_training``; its audit then compares against that model;
3. audit every result with :func:`unlearn_audit.audit.evaluate` against the retrained model
   (``audit-<method>.json``); the ``retrain`` row audits the retrained model itself.

The MIA column is the AUC of the *population* attack the audit gates on
(``models.unlearned.mia.population_gated``): the strongest of the loss / confidence / entropy
attacks on the ORIGINAL model, so the choice does not favour any unlearned model; the table
names it. ``MIA_r`` and the other reference values come from the retrained model in the same
audit. The gap is computed per seed against that seed's retrained model, then averaged.

Every artifact has a ``.key.json`` beside it holding the inputs it was made from; with
``resume`` (the default) a re-run reuses each artifact whose inputs did not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from unlearn_audit.api import ProgressFactory
from unlearn_audit.audit import evaluate
from unlearn_audit.data import Roles, make_roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.executor import Executor, InProcess
from unlearn_audit.models import LoadedModel, fingerprint_module, load_model
from unlearn_audit.policy import DEFAULT_POLICY, Policy
from unlearn_audit.progress import Say, no_progress, silent
from unlearn_audit.run_config import config_dict, quick_common, quick_or
from unlearn_audit.runs import (
    Built,
    RunSteps,
    Stat,
    checkpoint_seconds,
    needs_state,
    robustness_measure,
    state_name,
    summarize,
)
from unlearn_audit.tables import result_dict, write_benchmark

GOLD = "retrain"
DEFAULT_METHODS = (
    "finetune",
    "random_label",
    "gradient_ascent",
    "boundary_shrink",
    "l1_sparse",
    "salun",
    "amun",
)
QUICK_N_BOOTSTRAP = 200  # the policy minimum is 100; 200 keeps intervals usable and audits ~1 s on digits


@dataclass(frozen=True)
class Scores:
    """The four numbers of one model in the AMUN table, in percent.

    Attributes:
        forget_acc: accuracy on the forget set ("unlearn accuracy" FA).
        retain_acc: accuracy on the retain set RA.
        test_acc: accuracy on the test set TA.
        mia_auc: membership AUC, forget set (members) vs test set (non-members), times 100;
            ``None`` when the audit could not run the attack (too few test examples).
    """

    forget_acc: float
    retain_acc: float
    test_acc: float
    mia_auc: float | None


def avg_gap(scores: Scores, reference: Scores) -> float | None:
    """AMUN's Avg. Gap: ``(|FA-FA_r| + |RA-RA_r| + |TA-TA_r| + |MIA-MIA_r|) / 4``.

    In the units of the inputs (percentage points for :class:`Scores`); ``None`` when either
    MIA value is missing, since a three-term mean would not be comparable.
    """
    if scores.mia_auc is None or reference.mia_auc is None:
        return None
    return (
        abs(scores.forget_acc - reference.forget_acc)
        + abs(scores.retain_acc - reference.retain_acc)
        + abs(scores.test_acc - reference.test_acc)
        + abs(scores.mia_auc - reference.mia_auc)
    ) / 4


def check_methods(methods: Sequence[str], params: Mapping[str, Mapping[str, object]]):
    """Instantiate every method once: unknown names and bad parameters fail before any training.

    Returns ``{name: method}``. ``retrain`` is the gold-standard row and is not instantiated.
    """
    from unlearn_audit.methods import get_method

    return {m: get_method(m, **dict(params.get(m, {}))) for m in methods if m != GOLD}


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to benchmark. Build it with :meth:`make` to apply ``--quick`` defaults.

    Attributes:
        data: data set spec (``mnist-5k``; ``digits`` with quick).
        arch: architecture (``cnn``; ``mlp`` with quick).
        forget: forget-set spec (``random:0.1``, the AMUN 10% setting).
        methods: registry names; ``retrain`` here means the gold row, always shown first.
        seeds: number of seeds ``0..seeds-1`` (3).
        method_params: per-method overrides ``{method: {key: value}}`` (values as text or typed).
        epochs: training epochs of the original and retrained models (recipe default; 3 quick).
        robustness: also measure PGD robust accuracy in every audit (off).
        robust_samples: test examples attacked (500; 100 quick).
        robust_eps, robust_steps: PGD radius and steps (data-family defaults; 10 steps quick).
        policy: audit thresholds (the default policy; ``n_bootstrap`` 200 quick).
        split_seed: seed of the built-in train/test split (0).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
        resume: reuse artifacts already in the output folder made from the same inputs (on).
    """

    data: str = "mnist-5k"
    arch: str = "cnn"
    forget: str = "random:0.1"
    methods: tuple[str, ...] = DEFAULT_METHODS
    seeds: int = 3
    method_params: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    epochs: int | None = None
    lr: float | None = None  # training recipe of the models (recipe default when None)
    optimizer: str | None = None  # adam | sgd; amnesiac_per_sample needs sgd
    robustness: bool = False
    robust_samples: int = 500
    robust_eps: float | None = None
    robust_steps: int | None = None
    policy: Policy = DEFAULT_POLICY
    split_seed: int = 0
    device: str = "auto"
    resume: bool = True

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"`seeds` must be >= 1, got {self.seeds}", param="seeds")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"`epochs` must be >= 1, got {self.epochs}", param="epochs")
        if self.robust_samples < 1:
            raise ConfigError(
                f"`robust_samples` must be >= 1, got {self.robust_samples}", param="robust_samples"
            )
        if not self.methods:
            raise ConfigError("`methods` needs at least one method name", param="methods")

    @classmethod
    def make(
        cls,
        *,
        quick: bool = False,
        data: str | None = None,
        arch: str | None = None,
        epochs: int | None = None,
        methods: Sequence[str] = DEFAULT_METHODS,
        method_params: Mapping[str, Mapping[str, object]] | None = None,
        robust_samples: int | None = None,
        robust_steps: int | None = None,
        policy: Policy | None = None,
        **rest: object,
    ) -> BenchmarkConfig:
        """The config with ``None`` options filled by the normal or the ``quick`` defaults.

        ``quick``: ``digits``, ``mlp``, 3 training epochs, 1 epoch per method, 100 PGD-10
        examples, 200 bootstrap resamples. Values given explicitly always win.
        """
        data, arch, methods, params = quick_common(quick, data, arch, methods, method_params)
        if quick:
            policy = policy or replace(DEFAULT_POLICY, n_bootstrap=QUICK_N_BOOTSTRAP)
        return cls(
            data=data,
            arch=arch,
            epochs=quick_or(epochs, 3, quick),
            methods=methods,
            method_params=params,
            robust_samples=robust_samples or (100 if quick else 500),
            robust_steps=quick_or(robust_steps, 10, quick),
            policy=policy or DEFAULT_POLICY,
            **rest,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict:
        return config_dict(self)


@dataclass(frozen=True)
class BenchmarkRun:
    """One method on one seed: its scores, the retrained model's, and the audit's verdict."""

    seed: int
    method: str
    scores: Scores
    reference: Scores
    avg_gap: float | None
    seconds: float  # unlearning time (for retrain: the retraining time)
    verdict: str
    mia_attack: str | None
    robust_acc: float | None  # percent, when robustness was measured
    original: str
    checkpoint: str
    audit: str
    sha256: str


@dataclass(frozen=True)
class BenchmarkRow:
    """One row of the table: a method's runs summarised over seeds."""

    method: str
    forget_acc: Stat
    retain_acc: Stat
    test_acc: Stat
    mia_auc: Stat
    avg_gap: Stat
    seconds: Stat
    robust_acc: Stat | None
    verdicts: dict[str, int]
    mia_attacks: tuple[str, ...]
    note: str = ""

    def verdict_text(self) -> str:
        return ", ".join(f"{v} {k}" for k, v in sorted(self.verdicts.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class BenchmarkResult:
    """The table (``rows``), every per-seed run, the config and provenance."""

    config: dict
    rows: tuple[BenchmarkRow, ...]
    runs: tuple[BenchmarkRun, ...]
    provenance: dict
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return result_dict("unlearn-audit benchmark", self, "runs")


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * float(value)


def scores_of(model_entry: Mapping) -> Scores:
    """:class:`Scores` of one model in an audit dict (``AuditResult.to_dict()["models"][name]``)."""
    acc = model_entry["accuracy"]
    gated = model_entry.get("mia", {}).get("population_gated") or {}
    return Scores(_pct(acc["forget"]), _pct(acc["retain"]), _pct(acc["test"]), _pct(gated.get("auc")))  # type: ignore[arg-type]


def run_from_audit(
    audit: Mapping,
    *,
    seed: int,
    method: str,
    seconds: float,
    original: str,
    checkpoint: str,
    audit_path: str,
    sha256: str,
) -> BenchmarkRun:
    """The benchmark's numbers for one audit: unlearned vs retrained scores and their gap."""
    models = audit["models"]
    scores, reference = scores_of(models["unlearned"]), scores_of(models["retrained"])
    gated = models["unlearned"].get("mia", {}).get("population_gated") or {}
    rob = models["unlearned"].get("robustness")
    return BenchmarkRun(
        seed=seed,
        method=method,
        scores=scores,
        reference=reference,
        avg_gap=avg_gap(scores, reference),
        seconds=seconds,
        verdict=str(audit["verdict"]),
        mia_attack=gated.get("attack"),
        robust_acc=_pct(rob["robust_accuracy"]) if rob else None,
        original=original,
        checkpoint=checkpoint,
        audit=audit_path,
        sha256=sha256,
    )


def summarize_runs(
    method: str, runs: Sequence[BenchmarkRun], *, robustness: bool, note: str = ""
) -> BenchmarkRow:
    """Mean +/- std over seeds of one method's runs."""
    verdicts: dict[str, int] = {}
    for r in runs:
        verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
    return BenchmarkRow(
        method=method,
        forget_acc=summarize([r.scores.forget_acc for r in runs]),
        retain_acc=summarize([r.scores.retain_acc for r in runs]),
        test_acc=summarize([r.scores.test_acc for r in runs]),
        mia_auc=summarize([r.scores.mia_auc for r in runs]),
        avg_gap=summarize([r.avg_gap for r in runs]),
        seconds=summarize([r.seconds for r in runs]),
        robust_acc=summarize([r.robust_acc for r in runs]) if robustness else None,
        verdicts=verdicts,
        mia_attacks=tuple(dict.fromkeys(r.mia_attack for r in runs if r.mia_attack)),
        note=note,
    )


def _cached_robustness(measure: Callable) -> Callable:
    """Measure each distinct model once (the original and retrained models recur in every audit)."""
    cache: dict[str, dict] = {}

    def wrapped(module):
        key = fingerprint_module(module)
        if key not in cache:
            cache[key] = measure(module)
        return cache[key]

    return wrapped


@dataclass(frozen=True, kw_only=True)
class _Seed:
    """What every method of one seed shares: its folder, forget set, recipe and models."""

    seed: int
    folder: Path
    tag: str
    roles: Roles
    overrides: dict[str, object]
    original: Built
    original_model: LoadedModel
    retrained: Built
    retrained_model: LoadedModel
    robustness: Callable | None


class _Benchmark(RunSteps):
    """The steps of one benchmark: per seed, train both models, then unlearn and audit each method."""

    config: BenchmarkConfig

    def __init__(
        self,
        config: BenchmarkConfig,
        out_dir: str | Path,
        say: Say,
        progress_factory: ProgressFactory,
        instances: Mapping[str, object],
    ) -> None:
        super().__init__(config, out_dir, say, progress_factory)
        self.instances = instances
        self.row_notes: dict[str, str] = {
            GOLD: "gold standard: trained on the retain set with the original's recipe"
        }

    def prepare_seed(self, s: int) -> _Seed:
        """Train (or reuse) seed ``s``'s original and retrained models."""
        c = self.config
        folder, tag = self.out / f"seed-{s}", f"seed {s + 1}/{c.seeds}"
        roles = make_roles(self.dataset, c.forget, seed=s)
        overrides = {"epochs": c.epochs, "seed": s, "lr": c.lr, "optimizer": c.optimizer}
        original = self.train(folder / "original.pt", "original model", tag, overrides)
        retrained = self.train(
            folder / "retrained.pt",
            "retrained model (without the forget set)",
            tag,
            overrides,
            without_forget=True,
        )
        retrained_model = load_model(retrained.path, device=self.device)
        original_model = load_model(original.path, device=self.device)
        robustness = None
        if c.robustness:
            robustness = _cached_robustness(
                robustness_measure(
                    roles.test,
                    family=roles.family,
                    num_classes=roles.num_classes,
                    samples=c.robust_samples,
                    eps=c.robust_eps,
                    steps=c.robust_steps,
                    seed=s,
                    device=self.device,
                )
            )
        return _Seed(
            seed=s,
            folder=folder,
            tag=tag,
            roles=roles,
            overrides=overrides,
            original=original,
            original_model=original_model,
            retrained=retrained,
            retrained_model=retrained_model,
            robustness=robustness,
        )

    def method_run(self, seed: _Seed, method: str) -> BenchmarkRun:
        """Unlearn (or, for ``retrain``, take the retrained model) and audit against the retrained model."""
        original, original_model = seed.original, seed.original_model
        if method == GOLD:
            checkpoint, model = seed.retrained.path, seed.retrained_model
        else:
            instance = self.instances[method]
            params = dict(self.config.method_params.get(method, {}))
            if needs_state(instance):
                original = self.train_stateful_original(
                    method,
                    instance,
                    params,
                    folder=seed.folder,
                    prefix="",
                    what="original",
                    tag=seed.tag,
                    overrides=seed.overrides,
                )
                original_model = load_model(original.path, device=self.device)
                self.row_notes[method] = (
                    f"audited against its own original, trained with {state_name(instance, method)}'s "
                    "recorded training state"
                )
            unlearned = self.unlearn(
                seed.folder / f"unlearned-{method}.pt", method, params, original.path, seed.seed, seed.tag
            )
            checkpoint, model = unlearned.path, load_model(unlearned.path, device=self.device)
        audit_path = seed.folder / f"audit-{method}.json"
        return run_from_audit(
            self.audit(seed, method, original_model, model, audit_path),
            seed=seed.seed,
            method=method,
            seconds=checkpoint_seconds(model),
            original=str(original.path),
            checkpoint=str(checkpoint),
            audit_path=str(audit_path),
            sha256=model.sha256,
        )

    def audit(
        self, seed: _Seed, method: str, original: LoadedModel, unlearned: LoadedModel, path: Path
    ) -> dict:
        """The audit of ``unlearned`` against the seed's retrained model (reused when its inputs match)."""
        c = self.config
        key = {
            "kind": "audit",
            "original": original.sha256,
            "unlearned": unlearned.sha256,
            "retrained": seed.retrained_model.sha256,
            "seed": seed.seed,
            "policy": c.policy.to_dict(),
            "robustness": [c.robustness, c.robust_samples, c.robust_eps, c.robust_steps],
            "data": c.data,
            "forget": c.forget,
            "split_seed": c.split_seed,
        }
        audit, built = self.store.build_json(
            path,
            key,
            lambda: evaluate(
                original,
                unlearned,
                seed.roles,
                retrained=seed.retrained_model,
                policy=c.policy,
                seed=seed.seed,
                device=self.device,
                robustness=seed.robustness,
                extra_provenance={"benchmark": {"method": method, "seed": seed.seed}},
            ).to_dict(),
        )
        done = "reused" if built.reused else f"{audit['verdict']} in {built.seconds:.1f}s"
        self.say(f"{seed.tag}: audit {method}: {done}")
        return audit


def run_benchmark(
    config: BenchmarkConfig,
    out_dir: str | Path,
    *,
    say: Say | None = None,
    progress_factory: ProgressFactory = no_progress,
    executor: Executor | None = None,
) -> BenchmarkResult:
    """Run the benchmark and write ``benchmark.{md,csv,json,html}`` to ``out_dir``.

    Args:
        config: see :class:`BenchmarkConfig`.
        out_dir: output folder (created); checkpoints and audits go to ``seed-<s>/``.
        say: called with one line after every step (the CLI adds the elapsed time).
        progress_factory: ``progress_factory(description)`` -> context manager yielding a
            ``progress(done, total)`` callback, for training and unlearning.
        executor: runs the seeds (in process, one after another, when ``None``); a
            :class:`unlearn_audit.executor.RayExecutor` runs one Ray task per seed, with the
            same results.

    Raises:
        ConfigError: unknown method (the message lists the valid ones), bad parameter, bad data.
    """
    methods = tuple(m for m in config.methods if m != GOLD)
    if GOLD in config.method_params:
        raise ConfigError(
            "`method_params` retrain.*: the retrain row is the retrained model; set `epochs` for its recipe",
            param=("method_params", "epochs"),
        )
    instances = check_methods(methods, config.method_params)
    bench = _Benchmark(config, out_dir, say or silent, progress_factory, instances)
    executor = executor or InProcess()
    runs: list[BenchmarkRun] = []
    for seed_runs, notes in executor.map(
        _seed_runs,
        range(config.seeds),
        shared={"bench": bench if executor.local else bench.detached()},
        device=bench.device,
    ):
        runs += seed_runs
        bench.row_notes.update(notes)
    rows = tuple(
        summarize_runs(
            m,
            [r for r in runs if r.method == m],
            robustness=config.robustness,
            note=bench.row_notes.get(m, ""),
        )
        for m in (GOLD, *methods)
    )
    result = BenchmarkResult(config.to_dict(), rows, tuple(runs), bench.provenance(instances), _notes(runs))
    write_benchmark(result, bench.out)
    return result


def _seed_runs(s: int, *, bench: _Benchmark) -> tuple[list[BenchmarkRun], dict[str, str]]:
    """One seed of the benchmark (a job of the executor): train its two models, then unlearn
    and audit every method; returns the runs and the row notes the methods set."""
    seed = bench.prepare_seed(s)
    methods = tuple(m for m in bench.config.methods if m != GOLD)
    runs = [bench.method_run(seed, method) for method in (GOLD, *methods)]
    return runs, dict(bench.row_notes)


def _notes(runs: Sequence[BenchmarkRun]) -> tuple[str, ...]:
    """How to read the table; names the membership attacks the MIA column took."""
    attacks = sorted({r.mia_attack for r in runs if r.mia_attack})
    return (
        "Accuracies and MIA AUC in percent; Avg. Gap = (|FA-FA_r| + |RA-RA_r| + |TA-TA_r| + |MIA-MIA_r|)/4 "
        "in percentage points against the same seed's retrained model, then mean ± sample std over seeds.",
        "MIA: AUC of the population membership attack (forget set vs test set) chosen as the strongest on "
        f"the original model of each seed: {', '.join(attacks) or 'none (too few test examples)'}.",
        "Time: unlearning wall time in seconds (retrain: the retraining time).",
    )
