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
   ``train_with_state``; its audit then compares against that model;
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

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from unlearn_audit import __version__
from unlearn_audit.api import ProgressFactory, _no_progress, _robustness_measure
from unlearn_audit.data import sha256_file
from unlearn_audit.errors import ConfigError
from unlearn_audit.fileio import atomic_write_text
from unlearn_audit.policy import DEFAULT_POLICY, Policy

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

Say = Callable[[str], None]

_T = TypeVar("_T")


def _silent(_: str) -> None:
    return None


# =========================================================================== statistics


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``) of one quantity over seeds.

    ``std`` is ``None`` with fewer than two values; ``mean`` is ``None`` with none (e.g. a
    membership AUC that could not be computed). ``n`` counts the values used.
    """

    mean: float | None
    std: float | None
    n: int

    def text(self, digits: int = 2) -> str:
        """``"94.49 ± 0.20"``, ``"94.49"`` for one seed, ``"n/a"`` without values."""
        if self.mean is None:
            return "n/a"
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def summarize(values: Sequence[float | None]) -> Stat:
    """:class:`Stat` of the values that are not ``None`` (NaN counts as missing too)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not kept:
        return Stat(None, None, 0)
    arr = np.asarray(kept, dtype=np.float64)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else None
    return Stat(float(np.mean(arr)), std, int(arr.size))


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


# =========================================================================== options


def parse_method_sets(pairs: Mapping[str, str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{"amun.epochs": "5"}`` -> ``{"amun": {"epochs": "5"}}``, for the methods being run.

    Raises:
        ConfigError: a key without ``method.`` prefix, or naming a method not in ``methods``.
    """
    out: dict[str, dict[str, str]] = {}
    for key, value in pairs.items():
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise ConfigError(f"--set expects method.key=value (e.g. amun.epochs=5), got {key}={value}")
        if method not in methods:
            raise ConfigError(
                f"--set {key}={value}: method {method!r} is not among --methods ({', '.join(methods)})"
            )
        out.setdefault(method, {})[name] = value
    return out


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated method names (duplicates dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise ConfigError(f"--methods needs at least one method name, got {text!r}")
    return names


def quick_method_params(
    methods: Sequence[str], given: Mapping[str, Mapping[str, object]], *, epochs: int = 1
) -> dict[str, dict[str, object]]:
    """``given`` plus ``epochs=<epochs>`` for every registered method that has an ``epochs``
    parameter the user did not set (``--quick``)."""
    from unlearn_audit.methods import list_methods

    has_epochs = {i.name for i in list_methods() if any(p.name == "epochs" for p in i.params)}
    out = {m: dict(p) for m, p in given.items()}
    for m in methods:
        if m in has_epochs and "epochs" not in out.get(m, {}):
            out.setdefault(m, {})["epochs"] = epochs
    return out


def quick_common(
    quick: bool,
    data: str | None,
    arch: str | None,
    methods: Sequence[str],
    method_params: Mapping[str, Mapping[str, object]] | None,
) -> tuple[str, str, tuple[str, ...], dict[str, dict[str, object]]]:
    """``(data, arch, methods, method_params)`` as the benchmark and the study fill them.

    ``data``: given, else ``mnist-5k`` (``digits`` with ``quick``); ``arch``: given, else ``cnn``
    (``mlp`` with ``quick``); ``method_params`` copied, with ``quick`` plus
    :func:`quick_method_params`.
    """
    methods = tuple(methods)
    params = {m: dict(p) for m, p in (method_params or {}).items()}
    if quick:
        params = quick_method_params(methods, params)
    return data or ("digits" if quick else "mnist-5k"), arch or ("mlp" if quick else "cnn"), methods, params


def quick_or(given: _T | None, quick_value: _T, quick: bool) -> _T | None:
    """``given`` if set, else ``quick_value`` with ``quick`` and ``None`` (the recipe default) without."""
    return given if given is not None else (quick_value if quick else None)


def config_dict(config: Any) -> dict:
    """``dataclasses.asdict`` of a benchmark or study config, with plain list and dict method fields."""
    data = dataclasses.asdict(config)
    data["methods"] = list(config.methods)
    data["method_params"] = {m: dict(p) for m, p in config.method_params.items()}
    return data


def check_methods(methods: Sequence[str], params: Mapping[str, Mapping[str, object]]):
    """Instantiate every method once: unknown names and bad parameters fail before any training.

    Returns ``{name: method}``. ``retrain`` is the gold-standard row and is not instantiated.
    """
    from unlearn_audit.methods import get_method

    return {m: get_method(m, **dict(params.get(m, {}))) for m in methods if m != GOLD}


# =========================================================================== artifacts


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder before any long work; a file in its place is a ``ConfigError``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the tables, checkpoints and audits")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out} ({exc.strerror})") from None
    return out


class ArtifactStore:
    """Files in the output folder with a ``<name>.key.json`` sidecar naming their inputs.

    ``reusable(path, key)`` is true when ``resume`` is on, the file exists and was made from the
    same ``key`` by this tool version; ``record(path, key)`` writes the sidecar after the file;
    ``build(path, key, make)`` does both around ``make()``.
    """

    def __init__(self, root: Path, *, resume: bool) -> None:
        self.root = root
        self.resume = resume

    @staticmethod
    def _key_path(path: Path) -> Path:
        return path.with_name(path.name + ".key.json")

    @staticmethod
    def _canonical(key: Mapping) -> str:
        return json.dumps({"tool_version": __version__, **key}, sort_keys=True, default=str)

    def reusable(self, path: Path, key: Mapping) -> bool:
        kp = self._key_path(path)
        if not (self.resume and path.is_file() and kp.is_file()):
            return False
        try:
            return kp.read_text(encoding="utf-8") == self._canonical(key)
        except OSError:
            return False

    def record(self, path: Path, key: Mapping) -> None:
        atomic_write_text(self._key_path(path), self._canonical(key))

    def build(self, path: Path, key: Mapping, make: Callable[[], object]) -> Built:
        """Reuse ``path`` if it is :meth:`reusable` for ``key``; else run ``make()`` (which writes
        ``path``), time it and :meth:`record` the key."""
        if self.reusable(path, key):
            return Built(path, True, 0.0)
        start = time.perf_counter()
        make()
        self.record(path, key)
        return Built(path, False, time.perf_counter() - start)


@dataclass(frozen=True)
class Built:
    """A checkpoint (or audit) in the output folder and whether this run reused it."""

    path: Path
    reused: bool
    seconds: float


def train_artifact(
    store: ArtifactStore,
    path: Path,
    *,
    data: str,
    arch: str,
    forget: str,
    without_forget: bool,
    overrides: Mapping[str, object],
    for_method: str | None,
    method_params: Mapping[str, object],
    split_seed: int,
    device: str,
    progress_factory: ProgressFactory,
) -> Built:
    """Train (or reuse) a native checkpoint with :func:`unlearn_audit.api.train_checkpoint`."""
    from unlearn_audit.api import train_checkpoint

    key = {
        "kind": "train",
        "data": data,
        "arch": arch,
        "forget": forget,
        "without_forget": without_forget,
        "overrides": dict(overrides),
        "for_method": for_method,
        "method_params": dict(method_params),
        "split_seed": split_seed,
    }
    return store.build(
        path,
        key,
        lambda: train_checkpoint(
            out=path,
            data=data,
            arch=arch,
            forget=forget,
            without_forget=without_forget,
            overrides=dict(overrides),
            for_method=for_method,
            method_params=dict(method_params) if for_method else None,
            split_seed=split_seed,
            device=device,
            progress_factory=progress_factory,
        ),
    )


def unlearn_artifact(
    store: ArtifactStore,
    path: Path,
    *,
    method: str,
    params: Mapping[str, object],
    original: Path,
    data: str,
    forget: str,
    seed: int,
    split_seed: int,
    device: str,
    progress_factory: ProgressFactory,
) -> Built:
    """Unlearn (or reuse) with :func:`unlearn_audit.api.unlearn_checkpoint`."""
    from unlearn_audit.api import unlearn_checkpoint

    key = {
        "kind": "unlearn",
        "method": method,
        "params": dict(params),
        "original_sha256": sha256_file(original),
        "data": data,
        "forget": forget,
        "seed": seed,
        "split_seed": split_seed,
    }
    return store.build(
        path,
        key,
        lambda: unlearn_checkpoint(
            method=method,
            model=original,
            out=path,
            params=dict(params),
            data=data,
            forget=forget,
            seed=seed,
            split_seed=split_seed,
            device=device,
            progress_factory=progress_factory,
        ),
    )


class RunOptions(Protocol):
    """The options every benchmark-like run shares (fields of its config)."""

    @property
    def data(self) -> str: ...

    @property
    def arch(self) -> str: ...

    @property
    def forget(self) -> str: ...

    @property
    def split_seed(self) -> int: ...

    @property
    def device(self) -> str: ...


class ArtifactSteps:
    """The train and unlearn steps of a run: each reuses its artifact when it can (see
    :class:`ArtifactStore`) and reports one line through ``say``."""

    def __init__(
        self, config: RunOptions, store: ArtifactStore, say: Say, progress_factory: ProgressFactory
    ) -> None:
        self.config = config
        self.store = store
        self.say = say
        self.progress_factory = progress_factory

    def train(
        self,
        path: Path,
        what: str,
        tag: str,
        overrides: Mapping[str, object],
        for_method: str | None = None,
        params: Mapping[str, object] | None = None,
        *,
        without_forget: bool = False,
    ) -> Built:
        """:func:`train_artifact` with the run's data, arch, forget set, split seed and device."""
        c = self.config
        built = train_artifact(
            self.store,
            path,
            data=c.data,
            arch=c.arch,
            forget=c.forget,
            without_forget=without_forget,
            overrides=overrides,
            for_method=for_method,
            method_params=params or {},
            split_seed=c.split_seed,
            device=c.device,
            progress_factory=self.progress_factory,
        )
        self.say(f"{tag}: {what}: " + ("reused" if built.reused else f"trained in {built.seconds:.1f}s"))
        return built

    def unlearn(
        self, path: Path, method: str, params: Mapping[str, object], original: Path, seed: int, tag: str
    ) -> Built:
        """:func:`unlearn_artifact` with the run's data, forget set, split seed and device."""
        c = self.config
        built = unlearn_artifact(
            self.store,
            path,
            method=method,
            params=params,
            original=original,
            data=c.data,
            forget=c.forget,
            seed=seed,
            split_seed=c.split_seed,
            device=c.device,
            progress_factory=self.progress_factory,
        )
        self.say(
            f"{tag}: unlearn {method}: " + ("reused" if built.reused else f"done in {built.seconds:.1f}s")
        )
        return built


def run_provenance(
    device: object, start: float, instances: Mapping[str, Any], seeds: int, dataset: Any
) -> dict:
    """Provenance of a run: the environment, wall time since ``start`` (``time.perf_counter``),
    every method's parameters, the seeds ``0..seeds-1`` and the data's provenance."""
    from unlearn_audit.provenance import environment

    return {
        **environment(device),
        "wall_seconds": round(time.perf_counter() - start, 3),
        "method_params": {m: inst.params() for m, inst in instances.items()},
        "seeds": list(range(seeds)),
        "data_provenance": dataset.provenance,
    }


def checkpoint_seconds(loaded) -> float:
    """Wall time recorded in a checkpoint: unlearning time, else training time."""
    prov = loaded.metadata.get("provenance", {})
    unl = prov.get("unlearning")
    if isinstance(unl, dict) and unl.get("seconds") is not None:
        return float(unl["seconds"])
    return float(prov.get("seconds") or 0.0)


# =========================================================================== the benchmark


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
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.robust_samples < 1:
            raise ConfigError(f"--robust-samples must be >= 1, got {self.robust_samples}")
        if not self.methods:
            raise ConfigError("--methods needs at least one method name")

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


def result_dict(kind: str, result: Any, records: str) -> dict:
    """The JSON form of a benchmark or study result: ``kind``, its ``config``, ``rows`` and the
    per-seed records in field ``records`` (as lists of dicts), ``notes`` and ``provenance``."""
    return {
        "kind": kind,
        "config": result.config,
        "rows": [dataclasses.asdict(r) for r in result.rows],
        records: [dataclasses.asdict(r) for r in getattr(result, records)],
        "notes": list(result.notes),
        "provenance": result.provenance,
    }


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
    from unlearn_audit.models import fingerprint_module

    cache: dict[str, dict] = {}

    def wrapped(module):
        key = fingerprint_module(module)
        if key not in cache:
            cache[key] = measure(module)
        return cache[key]

    return wrapped


def run_benchmark(
    config: BenchmarkConfig,
    out_dir: str | Path,
    *,
    say: Say | None = None,
    progress_factory: ProgressFactory = _no_progress,
) -> BenchmarkResult:
    """Run the benchmark and write ``benchmark.{md,csv,json,html}`` to ``out_dir``.

    Args:
        config: see :class:`BenchmarkConfig`.
        out_dir: output folder (created); checkpoints and audits go to ``seed-<s>/``.
        say: called with one line after every step (the CLI adds the elapsed time).
        progress_factory: ``progress_factory(description)`` -> context manager yielding a
            ``progress(done, total)`` callback, for training and unlearning.

    Raises:
        ConfigError: unknown method (the message lists the valid ones), bad parameter, bad data.
    """
    from unlearn_audit.audit import evaluate
    from unlearn_audit.data import load_dataset, make_roles
    from unlearn_audit.models import load_model, resolve_device
    from unlearn_audit.report import write_json

    say = say or _silent
    out = Path(out_dir)
    methods = tuple(m for m in config.methods if m != GOLD)
    if GOLD in config.method_params:
        raise ConfigError(
            "--set retrain.*: the retrain row is the retrained model; set --epochs for its recipe"
        )
    instances = check_methods(methods, config.method_params)
    dev = resolve_device(config.device)
    dataset = load_dataset(config.data, split_seed=config.split_seed)
    prepare_out_dir(out)
    store = ArtifactStore(out, resume=config.resume)
    steps = ArtifactSteps(config, store, say, progress_factory)
    start = time.perf_counter()
    runs: list[BenchmarkRun] = []
    stateful_notes: dict[str, str] = {}
    n = config.seeds

    for s in range(n):
        sdir = out / f"seed-{s}"
        tag = f"seed {s + 1}/{n}"
        roles = make_roles(dataset, config.forget, seed=s)
        overrides = {"epochs": config.epochs, "seed": s, "lr": config.lr, "optimizer": config.optimizer}
        original = steps.train(sdir / "original.pt", "original model", tag, overrides)
        retrained = steps.train(
            sdir / "retrained.pt",
            "retrained model (without the forget set)",
            tag,
            overrides,
            without_forget=True,
        )
        ret_model = load_model(retrained.path, device=dev)
        plain_original = load_model(original.path, device=dev)
        robust = None
        if config.robustness:
            robust = _cached_robustness(
                _robustness_measure(
                    roles,
                    samples=config.robust_samples,
                    eps=config.robust_eps,
                    steps=config.robust_steps,
                    seed=s,
                    device=dev,
                )
            )

        for method in (GOLD, *methods):
            orig_built, orig_model = original, plain_original
            if method == GOLD:
                unl_path = retrained.path
            else:
                inst = instances[method]
                params = dict(config.method_params.get(method, {}))
                if getattr(inst, "needs_state", False):
                    state = str(getattr(inst, "state_name", method))
                    orig_built = steps.train(
                        sdir / f"original-{state}.pt",
                        f"original trained for {method}",
                        tag,
                        overrides,
                        for_method=state,
                        params=params,
                    )
                    orig_model = load_model(orig_built.path, device=dev)
                    stateful_notes[method] = (
                        f"audited against its own original, trained with {state}'s recorded training state"
                    )
                unl_path = steps.unlearn(
                    sdir / f"unlearned-{method}.pt", method, params, orig_built.path, s, tag
                ).path
            unl_model = ret_model if method == GOLD else load_model(unl_path, device=dev)
            audit_path = sdir / f"audit-{method}.json"
            key = {
                "kind": "audit",
                "original": orig_model.sha256,
                "unlearned": unl_model.sha256,
                "retrained": ret_model.sha256,
                "seed": s,
                "policy": config.policy.to_dict(),
                "robustness": [
                    config.robustness,
                    config.robust_samples,
                    config.robust_eps,
                    config.robust_steps,
                ],
                "data": config.data,
                "forget": config.forget,
                "split_seed": config.split_seed,
            }
            t0 = time.perf_counter()
            if store.reusable(audit_path, key):
                audit = json.loads(audit_path.read_text(encoding="utf-8"))
                say(f"{tag}: audit {method}: reused")
            else:
                audit = evaluate(
                    orig_model,
                    unl_model,
                    roles,
                    retrained=ret_model,
                    policy=config.policy,
                    seed=s,
                    device=dev,
                    robustness=robust,
                    extra_provenance={"benchmark": {"method": method, "seed": s}},
                ).to_dict()
                write_json(audit, audit_path)
                store.record(audit_path, key)
                say(f"{tag}: audit {method}: {audit['verdict']} in {time.perf_counter() - t0:.1f}s")
            runs.append(
                run_from_audit(
                    audit,
                    seed=s,
                    method=method,
                    seconds=checkpoint_seconds(unl_model),
                    original=str(orig_built.path),
                    checkpoint=str(unl_path),
                    audit_path=str(audit_path),
                    sha256=unl_model.sha256,
                )
            )

    rows = tuple(
        summarize_runs(
            m,
            [r for r in runs if r.method == m],
            robustness=config.robustness,
            note="gold standard: trained on the retain set with the original's recipe"
            if m == GOLD
            else stateful_notes.get(m, ""),
        )
        for m in (GOLD, *methods)
    )
    attacks = sorted({r.mia_attack for r in runs if r.mia_attack})
    notes = (
        "Accuracies and MIA AUC in percent; Avg. Gap = (|FA-FA_r| + |RA-RA_r| + |TA-TA_r| + |MIA-MIA_r|)/4 "
        "in percentage points against the same seed's retrained model, then mean ± sample std over seeds.",
        "MIA: AUC of the population membership attack (forget set vs test set) chosen as the strongest on "
        f"the original model of each seed: {', '.join(attacks) or 'none (too few test examples)'}.",
        "Time: unlearning wall time in seconds (retrain: the retraining time).",
    )
    provenance = run_provenance(dev, start, instances, n, dataset)
    result = BenchmarkResult(config.to_dict(), rows, tuple(runs), provenance, notes)
    write_benchmark(result, out)
    return result


# =========================================================================== output


@dataclass(frozen=True)
class Table:
    """A rendered table: header, rows of cell strings, which columns are numeric."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]
    notes: tuple[str, ...] = ()
    subtitle: str = ""


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured markdown table with the notes below it."""
    lines = [f"# {table.title}", ""]
    if table.subtitle:
        lines += [table.subtitle, ""]
    lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
    lines.append("|" + "|".join("---:" if num else "---" for num in table.numeric) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def stat_cells(*stats: Stat | None) -> list[object]:
    """CSV cells ``mean, std`` of each statistic (two empty cells for a missing one)."""
    cells: list[object] = []
    for st in stats:
        cells += [st.mean, st.std] if st is not None else [None, None]
    return cells


def render_csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue()


def render_table_html(table: Table, provenance: Mapping[str, object]) -> str:
    """The self-contained page of ``templates/benchmark.html.j2`` (inline CSS, autoescaped)."""
    from unlearn_audit.report import page_environment

    env, css = page_environment()
    shown = {
        k: provenance[k]
        for k in ("tool_version", "torch", "device", "date", "command", "wall_seconds")
        if k in provenance
    }
    return env.get_template("benchmark.html.j2").render(t=table, css=css, provenance=shown)


def to_json_text(data: Mapping) -> str:
    return json.dumps(data, indent=2, allow_nan=False, default=str) + "\n"


def benchmark_table(result: BenchmarkResult) -> Table:
    """The AMUN-style table of a benchmark result."""
    robustness = bool(result.config.get("robustness"))
    columns = ["Method", "Forget acc", "Retain acc", "Test acc", "MIA AUC", "Avg. Gap"]
    if robustness:
        columns.append("R-ACC")
    columns += ["Time (s)", "Verdict", "Note"]
    rows = []
    for r in result.rows:
        cells = [
            r.method,
            r.forget_acc.text(),
            r.retain_acc.text(),
            r.test_acc.text(),
            r.mia_auc.text(),
            r.avg_gap.text(),
        ]
        if robustness:
            cells.append(r.robust_acc.text() if r.robust_acc else "n/a")
        cells += [r.seconds.text(), r.verdict_text(), r.note]
        rows.append(tuple(cells))
    numeric = tuple(c not in ("Method", "Verdict", "Note") for c in columns)
    cfg = result.config
    subtitle = (
        f"{cfg['arch']} on {cfg['data']}, forget {cfg['forget']}, {cfg['seeds']} seed(s), "
        f"training epochs {cfg['epochs'] if cfg['epochs'] is not None else 'recipe default'}"
    )
    return Table("Unlearning benchmark", tuple(columns), tuple(rows), numeric, result.notes, subtitle)


CSV_STATS = ("forget_acc", "retain_acc", "test_acc", "mia_auc", "avg_gap", "seconds", "robust_acc")


def benchmark_csv(result: BenchmarkResult) -> str:
    header = ["method"]
    for name in CSV_STATS:
        header += [f"{name}_mean", f"{name}_std"]
    header += ["n_seeds", "verdicts", "mia_attack", "note"]
    rows = []
    for r in result.rows:
        cells: list[object] = [r.method, *stat_cells(*(getattr(r, name) for name in CSV_STATS))]
        cells += [r.seconds.n, r.verdict_text(), ";".join(r.mia_attacks), r.note]
        rows.append(cells)
    return render_csv(header, rows)


class TableResult(Protocol):
    """A benchmark-like result: its JSON is ``to_dict()``, its HTML page shows ``provenance``."""

    @property
    def provenance(self) -> dict: ...

    def to_dict(self) -> dict: ...


_R = TypeVar("_R", bound=TableResult)


def write_tables(
    out_dir: str | Path, stem: str, result: _R, table: Table, csv: Callable[[_R], str]
) -> dict[str, Path]:
    """Write ``<stem>.md``, ``.csv`` (``csv(result)``), ``.json`` and ``.html`` (atomically) to
    ``out_dir``: the markdown and the HTML page show ``table``. Returns the paths by format."""
    out = Path(out_dir)
    return {
        "markdown": atomic_write_text(out / f"{stem}.md", render_markdown(table)),
        "csv": atomic_write_text(out / f"{stem}.csv", csv(result)),
        "json": atomic_write_text(out / f"{stem}.json", to_json_text(result.to_dict())),
        "html": atomic_write_text(out / f"{stem}.html", render_table_html(table, result.provenance)),
    }


def write_benchmark(result: BenchmarkResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``benchmark.md``, ``.csv``, ``.json`` and ``.html`` (atomically) to ``out_dir``."""
    return write_tables(out_dir, "benchmark", result, benchmark_table(result), benchmark_csv)
