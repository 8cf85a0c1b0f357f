"""What the benchmark and the robustness study share: seed statistics and a cache of artifacts.

Both commands train models, unlearn them and measure the results, seed after seed, into one
output folder. Each of those files is an *artifact*: it has a ``<name>.key.json`` sidecar with
the inputs it was made from, and a re-run with ``resume`` reuses every artifact whose inputs did
not change (:class:`ArtifactStore`), so an interrupted run picks up where it stopped.
:class:`RunSteps` binds the store to a run's data, device and console.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from unlearn_audit import __version__
from unlearn_audit.api import train_checkpoint, unlearn_checkpoint
from unlearn_audit.data import load_dataset, sha256_file
from unlearn_audit.errors import ConfigError
from unlearn_audit.executor import worker_say
from unlearn_audit.fileio import atomic_write_text
from unlearn_audit.models import resolve_device
from unlearn_audit.progress import ProgressFactory, Say, no_progress
from unlearn_audit.provenance import environment
from unlearn_audit.report import write_json
from unlearn_audit.robustness import robustness_measure, robustness_subset  # noqa: F401  (bench, study)

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


# =========================================================================== artifacts


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Create the output folder before any long work; a file in its place is a ``ConfigError``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"`out_dir` {out} is a file; give a folder for the tables, checkpoints and audits",
            param="out_dir",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output folder {out} ({exc.strerror})") from None
    return out


@dataclass(frozen=True)
class Built:
    """A checkpoint (or audit, or measurement) in the output folder and whether this run reused it."""

    path: Path
    reused: bool
    seconds: float


class ArtifactStore:
    """Files in the output folder with a ``<name>.key.json`` sidecar naming their inputs.

    A file is reused when ``resume`` is on, it exists and its sidecar holds the same key made by
    this tool version; the sidecar is written only after the file, so a run killed half-way
    never leaves a file that looks finished.
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

    def _reusable(self, path: Path, key: Mapping) -> bool:
        kp = self._key_path(path)
        if not (self.resume and path.is_file() and kp.is_file()):
            return False
        try:
            return kp.read_text(encoding="utf-8") == self._canonical(key)
        except OSError:
            return False

    def build(self, path: Path, key: Mapping, make: Callable[[], object]) -> Built:
        """Reuse ``path`` if it was made from ``key``; else run ``make()`` (which writes ``path``),
        time it and record the key."""
        if self._reusable(path, key):
            return Built(path, True, 0.0)
        start = time.perf_counter()
        make()
        atomic_write_text(self._key_path(path), self._canonical(key))
        return Built(path, False, time.perf_counter() - start)

    def build_json(self, path: Path, key: Mapping, make: Callable[[], dict]) -> tuple[dict, Built]:
        """:meth:`build` for a result that is a JSON dict: ``make()`` returns it, the store writes
        it; a reused result is read back from ``path``."""
        made: dict | None = None

        def make_and_write() -> None:
            nonlocal made
            made = make()
            write_json(made, path)

        built = self.build(path, key, make_and_write)
        return (made if made is not None else json.loads(path.read_text(encoding="utf-8"))), built


# =========================================================================== a run's steps


def needs_state(method: object) -> bool:
    """Whether a method instance unlearns from state recorded while its original was trained."""
    return bool(getattr(method, "needs_state", False))


def state_name(method: object, name: str) -> str:
    """The training state a stateful method records (``train --for-method``), by default its name."""
    return str(getattr(method, "state_name", name))


class RunOptions(Protocol):
    """The options every benchmark-like run shares (fields of its config)."""

    @property
    def data(self) -> str: ...

    @property
    def arch(self) -> str: ...

    @property
    def forget(self) -> str: ...

    @property
    def seeds(self) -> int: ...

    @property
    def split_seed(self) -> int: ...

    @property
    def device(self) -> str: ...

    @property
    def resume(self) -> bool: ...


class RunSteps:
    """One run: its data set, device and output folder, and the train and unlearn steps, each of
    which reuses its artifact when it can and reports one line through ``say``.

    Creating it loads the data and creates the output folder, so bad input fails before any
    training.
    """

    def __init__(
        self, config: RunOptions, out_dir: str | Path, say: Say, progress_factory: ProgressFactory
    ) -> None:
        self.config = config
        self.say = say
        self.progress_factory = progress_factory
        self.device = resolve_device(config.device)
        self.dataset = load_dataset(config.data, split_seed=config.split_seed)
        self.out = prepare_out_dir(out_dir)
        self.store = ArtifactStore(self.out, resume=config.resume)
        self.start = time.perf_counter()

    def train(
        self,
        path: Path,
        what: str,
        tag: str,
        overrides: Mapping[str, object],
        *,
        for_method: str | None = None,
        params: Mapping[str, object] | None = None,
        without_forget: bool = False,
    ) -> Built:
        """Train (or reuse) a native checkpoint with :func:`unlearn_audit.api.train_checkpoint`
        on the run's data, arch, forget set and split."""
        c, params = self.config, dict(params or {})
        key = {
            "kind": "train",
            "data": c.data,
            "arch": c.arch,
            "forget": c.forget,
            "without_forget": without_forget,
            "overrides": dict(overrides),
            "for_method": for_method,
            "method_params": params,
            "split_seed": c.split_seed,
        }
        built = self.store.build(
            path,
            key,
            lambda: train_checkpoint(
                out=path,
                data=c.data,
                arch=c.arch,
                forget=c.forget,
                without_forget=without_forget,
                overrides=dict(overrides),
                for_method=for_method,
                method_params=params if for_method else None,
                split_seed=c.split_seed,
                device=c.device,
                progress_factory=self.progress_factory,
            ),
        )
        self.say(f"{tag}: {what}: " + ("reused" if built.reused else f"trained in {built.seconds:.1f}s"))
        return built

    def train_stateful_original(
        self,
        method: str,
        instance: object,
        params: Mapping[str, object],
        *,
        folder: Path,
        prefix: str,
        what: str,
        tag: str,
        overrides: Mapping[str, object],
    ) -> Built:
        """The original a stateful method (:func:`needs_state`) unlearns from, trained with the
        run's recipe while recording the method's state, as ``folder/<prefix>original-<state>.pt``.

        The benchmark and the study both get such models here, so a change to how methods
        record their training state has one place to land.
        """
        state = state_name(instance, method)
        return self.train(
            folder / f"{prefix}original-{state}.pt",
            f"{what} trained for {method}",
            tag,
            overrides,
            for_method=state,
            params=params,
        )

    def unlearn(
        self, path: Path, method: str, params: Mapping[str, object], original: Path, seed: int, tag: str
    ) -> Built:
        """Unlearn (or reuse) with :func:`unlearn_audit.api.unlearn_checkpoint` on the run's data,
        forget set and split."""
        c = self.config
        key = {
            "kind": "unlearn",
            "method": method,
            "params": dict(params),
            "original_sha256": sha256_file(original),
            "data": c.data,
            "forget": c.forget,
            "seed": seed,
            "split_seed": c.split_seed,
        }
        built = self.store.build(
            path,
            key,
            lambda: unlearn_checkpoint(
                method=method,
                model=original,
                out=path,
                params=dict(params),
                data=c.data,
                forget=c.forget,
                seed=seed,
                split_seed=c.split_seed,
                device=c.device,
                progress_factory=self.progress_factory,
            ),
        )
        self.say(
            f"{tag}: unlearn {method}: " + ("reused" if built.reused else f"done in {built.seconds:.1f}s")
        )
        return built

    def detached(self) -> RunSteps:
        """A copy that can run as a job away from this process (a Ray task): it reports through
        :func:`unlearn_audit.executor.worker_say` and shows no progress bars; everything else
        (data, device, output folder, config) is shared."""
        job = copy.copy(self)
        job.say, job.progress_factory = worker_say, no_progress
        return job

    def provenance(self, instances: Mapping[str, Any]) -> dict:
        """Provenance of the run: the environment, wall time so far, every method's parameters,
        the seeds and the data's provenance."""
        return {
            **environment(self.device),
            "wall_seconds": round(time.perf_counter() - self.start, 3),
            "method_params": {m: inst.params() for m, inst in instances.items()},
            "seeds": list(range(self.config.seeds)),
            "data_provenance": self.dataset.provenance,
        }


def checkpoint_seconds(loaded) -> float:
    """Wall time recorded in a checkpoint: unlearning time, else training time."""
    prov = loaded.metadata.get("provenance", {})
    unl = prov.get("unlearning")
    if isinstance(unl, dict) and unl.get("seconds") is not None:
        return float(unl["seconds"])
    return float(prov.get("seconds") or 0.0)


# =========================================================================== robustness
