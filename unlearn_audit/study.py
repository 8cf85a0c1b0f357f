"""``unlearn-audit robustness-study``: adversarial robustness before and after unlearning (RQ1-RQ4).

Zhang & Sui, "Understanding the Robustness of Machine Unlearning Models" (2022): a model trained
normally (``st_model``) and one trained adversarially (``at_model``, PGD of Madry et al. 2018, or
FGSM with a random start of Wong et al. 2020 for speed) are measured before and after a deletion
with each unlearning method:

=====  ==========  ======  ===============================================
RQ1    st_model    before  how robust is a standard model before deletion?
RQ2    at_model    before  how robust is an adversarially trained model?
RQ3    st_model    after   ... after the deletion?
RQ4    at_model    after   ... after the deletion?
=====  ==========  ======  ===============================================

Each cell reports ACC (clean accuracy), R-ACC (accuracy under a PGD L-inf attack; an example
counts only if it is classified correctly clean and attacked) and Gap = ACC - R-ACC, in percent,
on a fixed seeded subset of the test set (:func:`robustness_subset`), measured with
:func:`unlearn_audit.robustness.measure_robustness` (MNIST-like data eps 0.3 / 40 steps, others
8/255 / 10 steps, unless overridden). Adversarial training uses the same eps as the attack.

Both models are trained on the FULL training set (the forget set is drawn with the seed, as in
``unlearn-audit train --forget``). A method that needs state recorded during training (SISA,
amnesiac, ...) gets its own original trained through ``train_with_state`` with the same recipe,
so its "before" model is that method's own model (e.g. the SISA ensemble), not the shared one;
the table says so. Methods that are not bundled, or whose training state cannot be produced for
a model (e.g. a recipe the method refuses), appear as ``unavailable`` rows with the reason.

Checkpoints, measurements and ``.key.json`` sidecars go to ``out_dir/seed-<s>/``; with
``resume`` a re-run reuses everything made from the same inputs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from unlearn_audit.api import ProgressFactory, _no_progress
from unlearn_audit.bench import (
    ArtifactSteps,
    ArtifactStore,
    Say,
    Stat,
    Table,
    _silent,
    config_dict,
    parse_methods,
    prepare_out_dir,
    quick_common,
    quick_or,
    render_csv,
    result_dict,
    run_provenance,
    stat_cells,
    summarize,
    to_json_text,
    write_tables,
)
from unlearn_audit.errors import ConfigError, UnlearnAuditError
from unlearn_audit.fileio import atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_STUDY_METHODS = ("sisa", "amnesiac", "amun")
MODELS = ("st_model", "at_model")
RESEARCH_QUESTIONS = (
    ("RQ1", "st_model", "before"),
    ("RQ2", "at_model", "before"),
    ("RQ3", "st_model", "after"),
    ("RQ4", "at_model", "after"),
)
MEASURED, UNAVAILABLE = "measured", "unavailable"


@dataclass(frozen=True)
class StudyConfig:
    """What to study. Build it with :meth:`make` to apply ``--quick`` defaults.

    Attributes:
        data: data set spec (``mnist-5k``; ``digits`` with quick).
        arch: architecture (``cnn``; ``mlp`` with quick).
        forget: the deletion, a forget-set spec (``random:0.1``).
        methods: registry names; unknown ones become ``unavailable`` rows.
        seeds: seeds ``0..seeds-1`` (1); each trains both models and runs every method.
        adversarial: adversarial training of the at_model, ``pgd`` (Madry) or ``fgsm`` (Wong).
        attack_eps: L-inf radius of the evaluation attack and of adversarial training
            (data-family default: 0.3 MNIST-like, 8/255 others; 0.1 quick).
        attack_steps: PGD steps of the evaluation attack (40 MNIST-like, 10 others; 10 quick).
        train_steps: PGD steps in adversarial training (recipe default 10; 5 quick).
        robust_samples: test examples attacked (500; 200 quick).
        epochs: training epochs of both models (recipe default; 5 quick).
        method_params: per-method overrides ``{method: {key: value}}`` (1 epoch each with quick).
        split_seed, device, resume: as for the benchmark.
    """

    data: str = "mnist-5k"
    arch: str = "cnn"
    forget: str = "random:0.1"
    methods: tuple[str, ...] = DEFAULT_STUDY_METHODS
    seeds: int = 1
    adversarial: str = "pgd"
    attack_eps: float | None = None
    attack_steps: int | None = None
    train_steps: int | None = None
    robust_samples: int = 500
    epochs: int | None = None
    method_params: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    split_seed: int = 0
    device: str = "auto"
    resume: bool = True

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be >= 1, got {self.seeds}")
        if self.adversarial not in ("pgd", "fgsm"):
            raise ConfigError(f"--adversarial must be pgd or fgsm, got {self.adversarial!r}")
        if self.attack_eps is not None and not self.attack_eps > 0:
            raise ConfigError(f"--attack-eps must be > 0, got {self.attack_eps}")
        if self.attack_steps is not None and self.attack_steps < 1:
            raise ConfigError(f"--attack-steps must be >= 1, got {self.attack_steps}")
        if self.robust_samples < 1:
            raise ConfigError(f"--robust-samples must be >= 1, got {self.robust_samples}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
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
        methods: Sequence[str] = DEFAULT_STUDY_METHODS,
        method_params: Mapping[str, Mapping[str, object]] | None = None,
        attack_eps: float | None = None,
        attack_steps: int | None = None,
        train_steps: int | None = None,
        robust_samples: int | None = None,
        **rest: object,
    ) -> StudyConfig:
        """The config with ``None`` options filled by the normal or the ``quick`` defaults.

        ``quick``: ``digits``, ``mlp``, 5 epochs, 1 epoch per method, eps 0.1, PGD-10 on 200
        test examples, 5 PGD steps in adversarial training. Explicit values always win.
        """
        data, arch, methods, params = quick_common(quick, data, arch, methods, method_params)
        return cls(
            data=data,
            arch=arch,
            epochs=quick_or(epochs, 5, quick),
            methods=methods,
            method_params=params,
            attack_eps=quick_or(attack_eps, 0.1, quick),
            attack_steps=quick_or(attack_steps, 10, quick),
            train_steps=quick_or(train_steps, 5, quick),
            robust_samples=robust_samples or (200 if quick else 500),
            **rest,  # type: ignore[arg-type]
        )

    def to_dict(self) -> dict:
        return config_dict(self)


@dataclass(frozen=True)
class RobustnessPoint:
    """ACC, R-ACC and Gap (percent, ``gap == accuracy - robust_accuracy`` exactly) of one model."""

    seed: int
    method: str
    model: str  # st_model | at_model
    stage: str  # before | after
    accuracy: float
    robust_accuracy: float
    gap: float
    attack: str
    n: int
    checkpoint: str
    sha256: str


@dataclass(frozen=True)
class StudyRow:
    """One (research question, method) cell of the table, summarised over seeds.

    ``gap.mean`` is ``accuracy.mean - robust_accuracy.mean`` exactly; ``gap.std`` is the
    spread of the per-seed gaps. ``status`` is ``measured`` or ``unavailable`` (then the
    statistics are ``None`` and ``note`` gives the reason).
    """

    rq: str
    model: str
    stage: str
    method: str
    status: str
    accuracy: Stat | None
    robust_accuracy: Stat | None
    gap: Stat | None
    note: str = ""


@dataclass(frozen=True)
class StudyResult:
    config: dict
    rows: tuple[StudyRow, ...]
    points: tuple[RobustnessPoint, ...]
    provenance: dict
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return result_dict("unlearn-audit robustness-study", self, "points")


def robustness_subset(n_test: int, samples: int, seed: int) -> np.ndarray:
    """Sorted indices of the ``min(samples, n_test)`` test examples attacked for seed ``seed``."""
    n = min(samples, n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, size=n, replace=False))


def row_from_points(
    rq: str, model: str, stage: str, method: str, points: Sequence[RobustnessPoint], note: str = ""
) -> StudyRow:
    """Mean +/- std over seeds; the gap's mean is defined as ACC mean minus R-ACC mean."""
    acc = summarize([p.accuracy for p in points])
    racc = summarize([p.robust_accuracy for p in points])
    gaps = summarize([p.gap for p in points])
    gap_mean = None if acc.mean is None or racc.mean is None else acc.mean - racc.mean
    return StudyRow(rq, model, stage, method, MEASURED, acc, racc, Stat(gap_mean, gaps.std, gaps.n), note)


class _Runner(ArtifactSteps):
    """The steps of one study: train (or reuse), unlearn (or reuse), measure (or reuse)."""

    config: StudyConfig

    def __init__(self, config: StudyConfig, out: Path, say: Say, progress_factory: ProgressFactory) -> None:
        from unlearn_audit.data import load_dataset
        from unlearn_audit.models import resolve_device
        from unlearn_audit.robustness import pgd_spec

        super().__init__(config, ArtifactStore(out, resume=config.resume), say, progress_factory)
        self.device = resolve_device(config.device)
        self.dataset = load_dataset(config.data, split_seed=config.split_seed)
        self.spec = pgd_spec(self.dataset.family, eps=config.attack_eps, steps=config.attack_steps)

    def overrides(self, kind: str, seed: int) -> dict[str, object]:
        """The training recipe of ``kind``: adversarial training at the attack's eps for the at_model."""
        out: dict[str, object] = {"epochs": self.config.epochs, "seed": seed}
        if kind == "at_model":
            out.update(adversarial=self.config.adversarial, eps=self.spec.eps, steps=self.config.train_steps)
        return out

    def measure(self, path: Path, seed: int, what: str) -> dict:
        """``measure_robustness`` of the checkpoint at ``path`` (cached beside it), plus its sha256."""
        from unlearn_audit.models import load_model
        from unlearn_audit.robustness import measure_robustness

        c = self.config
        loaded = load_model(path, device=self.device)
        target = path.with_name(path.stem + ".robustness.json")
        key = {
            "kind": "robustness",
            "model": loaded.sha256,
            "eps": c.attack_eps,
            "steps": c.attack_steps,
            "samples": c.robust_samples,
            "seed": seed,
            "data": c.data,
            "split_seed": c.split_seed,
        }
        if self.store.reusable(target, key):
            return {**json.loads(target.read_text(encoding="utf-8")), "sha256": loaded.sha256}
        test = self.dataset.test
        subset = test.subset(robustness_subset(len(test), c.robust_samples, seed))
        t0 = time.perf_counter()
        result = measure_robustness(
            loaded.module,
            subset,
            family=self.dataset.family,
            num_classes=self.dataset.num_classes,
            eps=c.attack_eps,
            steps=c.attack_steps,
            seed=seed,
            device=self.device,
        )
        result.pop("correct", None)
        atomic_write_text(target, to_json_text(result))
        self.store.record(target, key)
        self.say(
            f"{what}: ACC {result['clean_accuracy']:.2%}, R-ACC {result['robust_accuracy']:.2%} "
            f"({time.perf_counter() - t0:.1f}s)"
        )
        return {**result, "sha256": loaded.sha256}

    def point(self, seed: int, method: str, kind: str, stage: str, path: Path, tag: str) -> RobustnessPoint:
        r = self.measure(path, seed, f"{tag}: measure {kind} {stage} {method}")
        acc, racc = 100.0 * float(r["clean_accuracy"]), 100.0 * float(r["robust_accuracy"])
        return RobustnessPoint(
            seed,
            method,
            kind,
            stage,
            acc,
            racc,
            acc - racc,
            str(r["attack"]),
            int(r["n"]),
            str(path),
            str(r["sha256"]),
        )


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    say: Say | None = None,
    progress_factory: ProgressFactory = _no_progress,
) -> StudyResult:
    """Run the study and write ``robustness-study.{md,csv,json,html}`` to ``out_dir``.

    Args:
        config: see :class:`StudyConfig`.
        out_dir: output folder (created).
        say: called with one line after every step (the CLI adds the elapsed time).
        progress_factory: ``progress_factory(description)`` -> context manager yielding a
            ``progress(done, total)`` callback, for training and unlearning.

    Raises:
        ConfigError: a bad parameter of a bundled method, a ``--set`` for a method not run, bad data.
    """
    from unlearn_audit.methods import get_method, list_methods

    methods = parse_methods(config.methods)
    for name in config.method_params:
        if name not in methods:
            raise ConfigError(
                f"--set {name}.*: method {name!r} is not among --methods ({', '.join(methods)})"
            )
    bundled = {i.name for i in list_methods()}
    unavailable: dict[tuple[str, str], str] = {}
    instances = {}
    for m in methods:
        if m in bundled:
            # a bad parameter of a bundled method is the user's error: it stops the run
            instances[m] = get_method(m, **dict(config.method_params.get(m, {})))
        else:
            for kind in MODELS:
                unavailable[(m, kind)] = (
                    "not bundled in this version (`unlearn-audit methods` lists the bundled ones)"
                )

    runner = _Runner(config, Path(out_dir), say or _silent, progress_factory)
    prepare_out_dir(out_dir)
    start = time.perf_counter()
    points: list[RobustnessPoint] = []
    before_notes: dict[tuple[str, str], str] = {}
    for s in range(config.seeds):
        sdir = Path(out_dir) / f"seed-{s}"
        tag = f"seed {s + 1}/{config.seeds}"
        for kind in MODELS:
            overrides = runner.overrides(kind, s)
            how = f"{config.adversarial} adversarial" if kind == "at_model" else "standard"
            base = runner.train(sdir / f"{kind}.pt", f"{kind} ({how} training)", tag, overrides)
            base_point: RobustnessPoint | None = None
            for m, inst in instances.items():
                if (m, kind) in unavailable:
                    continue
                params = dict(config.method_params.get(m, {}))
                stateful = bool(getattr(inst, "needs_state", False))
                original = base
                try:
                    if stateful:
                        state = str(getattr(inst, "state_name", m))
                        original = runner.train(
                            sdir / f"{kind}-original-{state}.pt",
                            f"{kind} trained for {m}",
                            tag,
                            overrides,
                            state,
                            params,
                        )
                    after = runner.unlearn(
                        sdir / f"{kind}-unlearned-{m}.pt", m, params, original.path, s, tag
                    )
                except UnlearnAuditError as exc:
                    if not stateful:
                        raise
                    reason = " ".join(str(exc).split())
                    log.warning("robustness study: %s on %s is unavailable: %s", m, kind, reason)
                    unavailable[(m, kind)] = f"training state could not be produced or used: {reason}"
                    runner.say(f"{tag}: {m} on {kind}: unavailable ({reason})")
                    continue
                if stateful:
                    before_notes[(m, kind)] = (
                        f"before = {m}'s own {kind}, trained with its recorded training state"
                    )
                    points.append(runner.point(s, m, kind, "before", original.path, tag))
                else:
                    if base_point is None:
                        base_point = runner.point(s, m, kind, "before", base.path, tag)
                    points.append(dataclasses.replace(base_point, method=m))
                points.append(runner.point(s, m, kind, "after", after.path, tag))

    rows: list[StudyRow] = []
    for rq, kind, stage in RESEARCH_QUESTIONS:
        for m in methods:
            if (m, kind) in unavailable:
                rows.append(
                    StudyRow(rq, kind, stage, m, UNAVAILABLE, None, None, None, unavailable[(m, kind)])
                )
                continue
            mine = [p for p in points if p.method == m and p.model == kind and p.stage == stage]
            note = before_notes.get((m, kind), "") if stage == "before" else ""
            rows.append(row_from_points(rq, kind, stage, m, mine, note))

    spec = runner.spec
    attacks = sorted({p.attack for p in points}) or [f"PGD-{spec.steps} L-inf eps={spec.eps:.4g}"]
    notes = (
        "ACC: clean accuracy; R-ACC: accuracy under the attack (correct both clean and attacked); "
        "Gap = ACC - R-ACC; percent, mean ± sample std over seeds, on a fixed seeded test subset "
        f"of {min(config.robust_samples, len(runner.dataset.test))} examples.",
        f"Attack: {'; '.join(attacks)}.",
        f"st_model: standard training; at_model: {config.adversarial.upper()} adversarial training at eps "
        f"{spec.eps:.4g}; both on the full training set. Deletion: forget {config.forget}.",
        "Methods needing recorded training state are measured on their own trained model (see Note).",
    )
    provenance = run_provenance(runner.device, start, instances, config.seeds, runner.dataset)
    result = StudyResult(config.to_dict(), tuple(rows), tuple(points), provenance, notes)
    write_study(result, out_dir)
    return result


# =========================================================================== output


def study_table(result: StudyResult) -> Table:
    columns = ("RQ", "Model", "Stage", "Method", "ACC (%)", "R-ACC (%)", "Gap (pp)", "Note")
    rows = []
    for r in result.rows:
        if r.status == UNAVAILABLE:
            nums = ("unavailable",) * 3
        else:
            nums = tuple(s.text() if s else "n/a" for s in (r.accuracy, r.robust_accuracy, r.gap))
        rows.append((r.rq, r.model, r.stage, r.method, *nums, r.note))
    numeric = tuple(c in ("ACC (%)", "R-ACC (%)", "Gap (pp)") for c in columns)
    cfg = result.config
    subtitle = (
        f"{cfg['arch']} on {cfg['data']}, deletion {cfg['forget']}, {cfg['seeds']} seed(s); "
        "RQ1/RQ2: standard / adversarially trained model before the deletion, RQ3/RQ4: after"
    )
    return Table(
        "Robustness of unlearned models (RQ1-RQ4)", columns, tuple(rows), numeric, result.notes, subtitle
    )


def study_csv(result: StudyResult) -> str:
    header = [
        "rq",
        "model",
        "stage",
        "method",
        "status",
        "acc_mean",
        "acc_std",
        "racc_mean",
        "racc_std",
        "gap_mean",
        "gap_std",
        "n_seeds",
        "note",
    ]
    rows = []
    for r in result.rows:
        cells: list[object] = [r.rq, r.model, r.stage, r.method, r.status]
        cells += stat_cells(r.accuracy, r.robust_accuracy, r.gap)
        cells += [r.accuracy.n if r.accuracy else 0, r.note]
        rows.append(cells)
    return render_csv(header, rows)


def write_study(result: StudyResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``robustness-study.md``, ``.csv``, ``.json`` and ``.html`` (atomically)."""
    return write_tables(out_dir, "robustness-study", result, study_table(result), study_csv)
