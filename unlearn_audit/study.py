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
on a fixed seeded subset of the test set (:func:`unlearn_audit.runs.robustness_subset`), measured with
:func:`unlearn_audit.robustness.measure_robustness` with the data family's threat model
(:data:`attacks.threat.THREAT_MODELS`, unless overridden). Adversarial training uses the same eps as
the attack.

Both models are trained on the FULL training set (the forget set is drawn with the seed, as in
``unlearn-audit train --forget``). A method that needs state recorded during training (SISA,
amnesiac, ...) gets its own original trained through ``record_training`` with the same recipe,
so its "before" model is that method's own model (e.g. the SISA ensemble), not the shared one;
the table says so. Methods that are not bundled, or whose training state cannot be produced for
a model (e.g. a recipe the method refuses), appear as ``unavailable`` rows with the reason.

Checkpoints, measurements and ``.key.json`` sidecars go to ``out_dir/seed-<s>/``; with
``resume`` a re-run reuses everything made from the same inputs.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unlearn_audit.api import ProgressFactory
from unlearn_audit.errors import ConfigError, UnlearnAuditError
from unlearn_audit.executor import Executor, InProcess
from unlearn_audit.methods import get_method, list_methods
from unlearn_audit.models import load_model
from unlearn_audit.progress import Say, no_progress, silent
from unlearn_audit.robustness import pgd_spec
from unlearn_audit.run_config import config_dict, parse_methods, quick_common, quick_or
from unlearn_audit.runs import (
    Built,
    RunSteps,
    Stat,
    needs_state,
    robustness_measure,
    summarize,
)
from unlearn_audit.tables import result_dict, write_study

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
            (default: the data family's, from :data:`attacks.threat.THREAT_MODELS`; 0.1 quick).
        attack_steps: PGD steps of the evaluation attack (the family's; 10 quick).
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
            raise ConfigError(f"`seeds` must be >= 1, got {self.seeds}", param="seeds")
        if self.adversarial not in ("pgd", "fgsm"):
            raise ConfigError(
                f"`adversarial` must be pgd or fgsm, got {self.adversarial!r}", param="adversarial"
            )
        if self.attack_eps is not None and not self.attack_eps > 0:
            raise ConfigError(f"`attack_eps` must be > 0, got {self.attack_eps}", param="attack_eps")
        if self.attack_steps is not None and self.attack_steps < 1:
            raise ConfigError(f"`attack_steps` must be >= 1, got {self.attack_steps}", param="attack_steps")
        if self.robust_samples < 1:
            raise ConfigError(
                f"`robust_samples` must be >= 1, got {self.robust_samples}", param="robust_samples"
            )
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"`epochs` must be >= 1, got {self.epochs}", param="epochs")
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

    @property
    def measured(self) -> bool:
        return self.status == MEASURED


@dataclass(frozen=True)
class StudyResult:
    config: dict
    rows: tuple[StudyRow, ...]
    points: tuple[RobustnessPoint, ...]
    provenance: dict
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return result_dict("unlearn-audit robustness-study", self, "points")


def row_from_points(
    rq: str, model: str, stage: str, method: str, points: Sequence[RobustnessPoint], note: str = ""
) -> StudyRow:
    """Mean +/- std over seeds; the gap's mean is defined as ACC mean minus R-ACC mean."""
    acc = summarize([p.accuracy for p in points])
    racc = summarize([p.robust_accuracy for p in points])
    gaps = summarize([p.gap for p in points])
    gap_mean = None if acc.mean is None or racc.mean is None else acc.mean - racc.mean
    return StudyRow(rq, model, stage, method, MEASURED, acc, racc, Stat(gap_mean, gaps.std, gaps.n), note)


def _bundled(
    methods: Sequence[str], method_params: Mapping[str, Mapping[str, object]]
) -> tuple[dict[str, object], dict[tuple[str, str], str]]:
    """``({name: method}, unavailable)``: the bundled methods instantiated with their ``--set``
    parameters, and the reason for every ``(method, model)`` of a method that is not bundled.

    Raises:
        ConfigError: a ``--set`` for a method not run, or a bad parameter of a bundled method
            (the user's error: it stops the run, unlike a method this version lacks).
    """
    for name in method_params:
        if name not in methods:
            raise ConfigError(
                f"`method_params` {name}.*: method {name!r} is not among `methods` ({', '.join(methods)})",
                param=("method_params", "methods"),
            )
    bundled = {i.name for i in list_methods()}
    instances = {m: get_method(m, **dict(method_params.get(m, {}))) for m in methods if m in bundled}
    reason = "not bundled in this version (`unlearn-audit methods` lists the bundled ones)"
    unavailable = {(m, kind): reason for m in methods if m not in bundled for kind in MODELS}
    return instances, unavailable


class _Study(RunSteps):
    """The steps of one study: train (or reuse), unlearn (or reuse), measure (or reuse).

    ``points`` collects the measurements, ``unavailable`` the ``(method, model)`` pairs that
    could not be run with the reason, ``before_notes`` what a "before" row measured instead of
    the shared model.
    """

    config: StudyConfig

    def __init__(
        self,
        config: StudyConfig,
        out_dir: str | Path,
        say: Say,
        progress_factory: ProgressFactory,
        instances: Mapping[str, object],
        unavailable: dict[tuple[str, str], str],
    ) -> None:
        super().__init__(config, out_dir, say, progress_factory)
        self.spec = pgd_spec(self.dataset.family, eps=config.attack_eps, steps=config.attack_steps)
        self.instances = instances
        self.unavailable = unavailable
        self.before_notes: dict[tuple[str, str], str] = {}
        self.points: list[RobustnessPoint] = []

    def overrides(self, kind: str, seed: int) -> dict[str, object]:
        """The training recipe of ``kind``: adversarial training at the attack's eps for the at_model."""
        out: dict[str, object] = {"epochs": self.config.epochs, "seed": seed}
        if kind == "at_model":
            out.update(adversarial=self.config.adversarial, eps=self.spec.eps, steps=self.config.train_steps)
        return out

    def run_model(self, seed: int, kind: str) -> None:
        """Seed ``seed``'s ``kind`` model, before and after the deletion with every method."""
        folder, tag = self.out / f"seed-{seed}", f"seed {seed + 1}/{self.config.seeds}"
        overrides = self.overrides(kind, seed)
        how = f"{self.config.adversarial} adversarial" if kind == "at_model" else "standard"
        base = self.train(folder / f"{kind}.pt", f"{kind} ({how} training)", tag, overrides)
        base_point: RobustnessPoint | None = None
        for m, instance in self.instances.items():
            if (m, kind) in self.unavailable:
                continue
            deleted = self.deletion(seed, kind, m, instance, base=base, overrides=overrides, tag=tag)
            if deleted is None:
                continue
            original, after = deleted
            if needs_state(instance):
                self.before_notes[(m, kind)] = (
                    f"before = {m}'s own {kind}, trained with its recorded training state"
                )
                self.points.append(self.point(seed, m, kind, "before", original.path, tag))
            else:
                if base_point is None:
                    base_point = self.point(seed, m, kind, "before", base.path, tag)
                self.points.append(dataclasses.replace(base_point, method=m))
            self.points.append(self.point(seed, m, kind, "after", after.path, tag))

    def deletion(
        self, seed: int, kind: str, method: str, instance: object, *, base: Built, overrides: dict, tag: str
    ) -> tuple[Built, Built] | None:
        """``(original, unlearned)`` of one method on one model; ``None`` (and the reason in
        ``unavailable``) when a stateful method's training state cannot be produced or used."""
        folder = self.out / f"seed-{seed}"
        params = dict(self.config.method_params.get(method, {}))
        stateful = needs_state(instance)
        original = base
        try:
            if stateful:
                original = self.train_stateful_original(
                    method,
                    instance,
                    params,
                    folder=folder,
                    prefix=f"{kind}-",
                    what=kind,
                    tag=tag,
                    overrides=overrides,
                )
            after = self.unlearn(
                folder / f"{kind}-unlearned-{method}.pt", method, params, original.path, seed, tag
            )
        except UnlearnAuditError as exc:
            if not stateful:
                raise
            reason = " ".join(str(exc).split())
            log.warning("robustness study: %s on %s is unavailable: %s", method, kind, reason)
            self.unavailable[(method, kind)] = f"training state could not be produced or used: {reason}"
            self.say(f"{tag}: {method} on {kind}: unavailable ({reason})")
            return None
        return original, after

    def measure(self, path: Path, seed: int, what: str) -> dict:
        """``measure_robustness`` of the checkpoint at ``path`` (cached beside it), plus its sha256."""
        c = self.config
        loaded = load_model(path, device=self.device)
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

        def make() -> dict:
            result = robustness_measure(
                self.dataset.test,
                family=self.dataset.family,
                num_classes=self.dataset.num_classes,
                samples=c.robust_samples,
                eps=c.attack_eps,
                steps=c.attack_steps,
                seed=seed,
                device=self.device,
            )(loaded.module)
            result.pop("correct", None)
            return result

        result, built = self.store.build_json(path.with_name(path.stem + ".robustness.json"), key, make)
        if not built.reused:
            self.say(
                f"{what}: ACC {result['clean_accuracy']:.2%}, R-ACC {result['robust_accuracy']:.2%} "
                f"({built.seconds:.1f}s)"
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

    def rows(self, methods: Sequence[str]) -> tuple[StudyRow, ...]:
        """The table: every research question for every method, measured or unavailable."""
        rows: list[StudyRow] = []
        for rq, kind, stage in RESEARCH_QUESTIONS:
            for m in methods:
                if (m, kind) in self.unavailable:
                    reason = self.unavailable[(m, kind)]
                    rows.append(StudyRow(rq, kind, stage, m, UNAVAILABLE, None, None, None, reason))
                    continue
                mine = [p for p in self.points if p.method == m and p.model == kind and p.stage == stage]
                note = self.before_notes.get((m, kind), "") if stage == "before" else ""
                rows.append(row_from_points(rq, kind, stage, m, mine, note))
        return tuple(rows)

    def notes(self) -> tuple[str, ...]:
        """How to read the table: the measure, the attack, the two models, the deletion."""
        c, spec = self.config, self.spec
        attacks = sorted({p.attack for p in self.points}) or [f"PGD-{spec.steps} L-inf eps={spec.eps:.4g}"]
        return (
            "ACC: clean accuracy; R-ACC: accuracy under the attack (correct both clean and attacked); "
            "Gap = ACC - R-ACC; percent, mean ± sample std over seeds, on a fixed seeded test subset "
            f"of {min(c.robust_samples, len(self.dataset.test))} examples.",
            f"Attack: {'; '.join(attacks)}.",
            f"st_model: standard training; at_model: {c.adversarial.upper()} adversarial training at eps "
            f"{spec.eps:.4g}; both on the full training set. Deletion: forget {c.forget}.",
            "Methods needing recorded training state are measured on their own trained model (see Note).",
        )


def _study_cell(
    cell: tuple[int, str], *, study: _Study
) -> tuple[list[RobustnessPoint], dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """One (seed, model) cell of the study (a job of the executor): its points, and the
    unavailable pairs and "before" notes it found, collected apart from ``study``'s so the
    caller merges every cell the same way wherever it ran."""
    seed, kind = cell
    mine = copy.copy(study)
    mine.points, mine.before_notes, mine.unavailable = [], {}, dict(study.unavailable)
    mine.run_model(seed, kind)
    return mine.points, mine.unavailable, mine.before_notes


def run_study(
    config: StudyConfig,
    out_dir: str | Path,
    *,
    say: Say | None = None,
    progress_factory: ProgressFactory = no_progress,
    executor: Executor | None = None,
) -> StudyResult:
    """Run the study and write ``robustness-study.{md,csv,json,html}`` to ``out_dir``.

    Args:
        config: see :class:`StudyConfig`.
        out_dir: output folder (created).
        say: called with one line after every step (the CLI adds the elapsed time).
        progress_factory: ``progress_factory(description)`` -> context manager yielding a
            ``progress(done, total)`` callback, for training and unlearning.
        executor: runs the (seed, model) cells (in process, one after another, when ``None``);
            a :class:`unlearn_audit.executor.RayExecutor` runs one Ray task per cell, with the
            same results.

    Raises:
        ConfigError: a bad parameter of a bundled method, a ``--set`` for a method not run, bad data.
    """
    methods = parse_methods(config.methods)
    instances, unavailable = _bundled(methods, config.method_params)
    study = _Study(config, out_dir, say or silent, progress_factory, instances, unavailable)
    executor = executor or InProcess()
    cells = [(s, kind) for s in range(config.seeds) for kind in MODELS]
    for points, cell_unavailable, before_notes in executor.map(
        _study_cell,
        cells,
        shared={"study": study if executor.local else study.detached()},
        device=study.device,
    ):
        study.points += points
        study.unavailable.update(cell_unavailable)
        study.before_notes.update(before_notes)
    rows = study.rows(methods)
    result = StudyResult(
        config.to_dict(), rows, tuple(study.points), study.provenance(instances), study.notes()
    )
    write_study(result, study.out)
    return result
