"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., IEEE S&P 2021).

Also home of the pieces every *stateful* method shares (SISA, amnesiac, DeltaGrad, MCMC):
:class:`StatefulMethod` (``unlearn(..., state=...)`` returning an updated state),
:func:`sample_fingerprints` and :func:`locate_forget` (finding forget samples in the recorded
training set by index or by content) and :func:`rows_for` (finding training samples in the
retain set).

Training (``train_with_state``) splits the training set into ``S`` disjoint shards and each
shard into ``R`` slices, and trains one isolated model per shard, slice by slice: slice ``r``
trains on slices ``0..r`` of the shard (cumulative) for ``max(1, round(2E/(R+1)))`` epochs with a
fresh optimizer, starting from the model after slice ``r - 1``; a checkpoint is kept before the
first slice (the initialisation) and after every slice. With ``E`` the recipe's epochs, the total
work equals ``E`` passes over the shard, as in ``cleverhans-lab/machine-unlearning``.

Unlearning retrains only the shards that hold forget samples, from the checkpoint taken before
the earliest slice that holds one, on the shard's remaining samples: the result is bit-identical
(on CPU) to training that shard from scratch without the forget samples. It is exact.

Every random choice is seeded from the recipe's seed through :func:`sisa_seed`:
``sisa_seed(seed, shard, 0)`` initialises shard ``shard`` (``reset_parameters`` of every layer),
``sisa_seed(seed, shard, r + 1)`` drives slice ``r``'s batch order, dropout and attack noise. The
cumulative training set of slice ``r`` lists the shard's remaining samples with slice <= ``r`` in
increasing training-index order.

The aggregate is a :class:`SisaEnsemble` (registered architecture ``sisa``) whose ``forward``
returns log-probabilities, so every metric and attack can treat it as a classifier:

* ``aggregation="vote"`` (the paper's): majority vote of the shards' argmax, ties broken by the
  mean probability: ``log((v_c + t * pbar_c) / (S + t))`` with ``v_c`` the votes for class ``c``,
  ``pbar`` the shards' mean softmax and ``t = 1e-3``. Gradients flow only through the small
  ``t * pbar`` term, so gradient attacks still find a direction, but confidence-based scores are
  coarse (multiples of 1/S).
* ``aggregation="mean"``: ``log(pbar_c)``, the log of the mean of the shards' probabilities.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, DataError, ModelError
from unlearn_audit.methods._common import Progress, clone_model, reinitialize, seeded
from unlearn_audit.methods.base import (
    ProgressFn,
    RunResult,
    UnlearnData,
    UnlearningMethod,
    UnlearnOutcome,
    _check_outputs,
    param,
)
from unlearn_audit.methods.registry import register_method
from unlearn_audit.models import build_model, register_arch
from unlearn_audit.training import TrainConfig, train_model

__all__ = [
    "Sisa",
    "SisaEnsemble",
    "StatefulMethod",
    "locate_forget",
    "rows_for",
    "sample_fingerprints",
    "sisa_seed",
    "slice_epochs",
]

logger = logging.getLogger(__name__)

STATE_VERSION = 1
VOTE_TIE_WEIGHT = 1e-3

# =========================================================================== shared by stateful methods


class StatefulMethod(UnlearningMethod):
    """A method that needs state recorded while the original model was trained.

    Subclasses implement ``train_with_state`` (called by ``unlearn-audit train --for-method NAME``)
    and :meth:`_run_stateful`. Their :meth:`unlearn` takes the recorded ``state`` (the checkpoint's
    ``extra["method_state"]``) and returns an :class:`UnlearnOutcome` whose ``state`` is the
    updated state to save with the new model, so further requests can follow. The given state is
    never modified.
    """

    needs_state: ClassVar[bool] = True

    @property
    def state_name(self) -> str:
        """The ``state["method"]`` this method accepts."""
        return self.name

    def unlearn(  # type: ignore[override]
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        progress: ProgressFn | None = None,
        state: dict | None = None,
    ) -> UnlearnOutcome:
        """Unlearn ``data``'s forget set from a copy of ``model`` using the recorded ``state``.

        Args:
            model: the model saved with ``state``; never modified.
            data: forget set (and retain set when the method needs it); ``data.forget_indices``
                locates the forget samples in the training set, else they are matched by content.
            device: where to run; the returned model lives there.
            seed: seeds whatever randomness the method uses; the caller's RNG is left as it was.
            progress: optional ``progress(done, total)`` callback.
            state: the state recorded by ``train_with_state`` (or returned by a previous request).

        Raises:
            ConfigError: no state, a state of another method or version, or a missing retain set.
            DataError: a forget sample is not in the recorded training set or was already unlearned.
            ModelError: ``model`` is not the model the state was recorded with.
        """
        if not isinstance(data, UnlearnData):
            raise DataError(f"data must be an UnlearnData, got {type(data).__name__}")
        if self.needs_retain and not data.has_retain:
            raise ConfigError(self._missing_retain_message())
        checked = self._check_state(state)
        dev = torch.device(device)
        start = time.perf_counter()
        with seeded(seed, dev):
            generator = torch.Generator().manual_seed(seed)
            work = clone_model(model, dev)
            _check_outputs(work, data, dev)
            result, new_state = self._run_stateful(
                work, data, checked, device=dev, generator=generator, progress=Progress(progress)
            )
        result.model.eval()
        seconds = time.perf_counter() - start
        logger.info("method %s finished in %.2f s (seed %d, device %s)", self.name, seconds, seed, dev)
        return UnlearnOutcome(
            model=result.model,
            method=self.name,
            params=self.params(),
            seconds=seconds,
            touched=result.touched,
            notes=result.notes,
            state=new_state,
        )

    def _check_state(self, state: object) -> dict:
        how = f"train the original with `unlearn-audit train --for-method {self.state_name}`"
        if state is None:
            raise ConfigError(f"method {self.name!r} needs the state recorded during training; {how}")
        if not isinstance(state, dict) or state.get("method") != self.state_name:
            got = state.get("method") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"method {self.name!r} needs a {self.state_name!r} state, got {got!r}; {how}")
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"method {self.name!r}: state version {state.get('version')!r} is not supported "
                f"(expected {STATE_VERSION}); {how}"
            )
        return state

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        raise ConfigError(f"method {self.name!r} needs the state recorded during training")

    def _run_stateful(
        self,
        model: nn.Module,
        data: UnlearnData,
        state: dict,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> tuple[RunResult, dict]:
        """The algorithm: returns ``(RunResult, new_state)``; ``model`` is a private copy."""
        raise NotImplementedError


def sample_fingerprints(x: torch.Tensor, y: torch.Tensor, *, chunk: int = 4096) -> torch.Tensor:
    """A 64-bit content hash per sample, to find training samples again without their indices.

    The pixels are quantised to 16 bits (``round(x * 65535)``), so 8-bit images (values
    ``k / 255``) hash identically however they were converted to float; the label is hashed too.

    Args:
        x: float tensor ``(N, ...)``.
        y: int64 tensor ``(N,)``.

    Returns:
        int64 tensor ``(N,)`` (BLAKE2b, 8-byte digest).
    """
    n = len(y)
    out = np.empty(n, dtype=np.int64)
    labels = y.detach().cpu().to(torch.int64).numpy()
    for start in range(0, n, chunk):
        block = x[start : start + chunk].detach().cpu().reshape(min(chunk, n - start), -1).double()
        q = torch.round(block * 65535).to(torch.int32).numpy()
        for i, row in enumerate(q):
            h = hashlib.blake2b(row.tobytes(), digest_size=8)
            h.update(labels[start + i].tobytes())
            out[start + i] = int.from_bytes(h.digest(), "little", signed=True)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class Located:
    """Training indices of a forget set, and how many extra identical copies were included."""

    indices: np.ndarray
    duplicates: int


def locate_forget(data: UnlearnData, fingerprints: torch.Tensor, removed: torch.Tensor) -> Located:
    """The training indices of ``data``'s forget samples.

    With ``data.forget_indices`` the indices are checked against the recorded fingerprints (so a
    forget set drawn from another split or seed is refused). Without them each forget sample is
    matched by content; every remaining training sample with identical content is included (the
    conservative choice for exact unlearning), and :attr:`Located.duplicates` counts the extras.

    Raises:
        DataError: an index is out of range or does not match the recorded sample, a sample is
            not in the recorded training set, or it was unlearned by an earlier request.
    """
    n = int(fingerprints.shape[0])
    fps = sample_fingerprints(data.forget_x, data.forget_y)
    done = removed.cpu().numpy().astype(bool)
    if data.forget_indices is not None:
        idx = data.forget_indices.cpu().numpy().astype(np.int64)
        if int(idx.max()) >= n:
            raise DataError(
                f"forget index {int(idx.max())} is out of range: the recorded training set has {n}"
            )
        bad = np.flatnonzero(fingerprints.numpy()[idx] != fps.numpy())
        if bad.size:
            raise DataError(
                f"{bad.size} forget samples differ from the training samples at their indices (first: forget "
                f"sample {int(bad[0])} vs training index {int(idx[bad[0]])}); use the data, split seed and "
                "forget seed the model was trained with"
            )
        again = idx[done[idx]]
        if again.size:
            raise DataError(
                f"{again.size} forget samples were already unlearned (e.g. training index {int(again[0])})"
            )
        return Located(np.sort(idx), 0)
    table: dict[int, list[int]] = {}
    for i, f in enumerate(fingerprints.tolist()):
        table.setdefault(f, []).append(i)
    chosen: set[int] = set()
    for k, f in enumerate(fps.tolist()):
        hits = table.get(f, [])
        live = [i for i in hits if not done[i]]
        if not hits:
            raise DataError(
                f"forget sample {k} is not in the training set recorded in the state; pass the forget set "
                "the "
                "model was trained with (or its training indices)"
            )
        if not live:
            raise DataError(f"forget sample {k} was already unlearned (training index {hits[0]})")
        chosen.update(live)
    idx = np.array(sorted(chosen), dtype=np.int64)
    return Located(idx, int(idx.size - len(set(fps.tolist()))))


def rows_for(
    indices: np.ndarray, fingerprints: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, role: str = "retain"
) -> torch.Tensor:
    """Row numbers in ``(x, y)`` holding the training samples ``indices`` (matched by content).

    Raises:
        DataError: a training sample is missing from ``(x, y)``.
    """
    if len(indices) == 0:
        return torch.zeros(0, dtype=torch.long)
    table: dict[int, int] = {}
    for row, f in enumerate(sample_fingerprints(x, y).tolist()):
        table.setdefault(f, row)
    wanted = fingerprints[torch.as_tensor(indices, dtype=torch.long)].tolist()
    rows = [table.get(f, -1) for f in wanted]
    missing = [int(indices[i]) for i, r in enumerate(rows) if r < 0]
    if missing:
        raise DataError(
            f"the {role} set lacks {len(missing)} training samples the method must revisit (e.g. training "
            f"index {missing[0]}); pass the full retain set the model was trained with"
        )
    return torch.tensor(rows, dtype=torch.long)


def state_bytes(obj: object) -> int:
    """Bytes held by the tensors in a (nested) state."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


# =========================================================================== the ensemble


class SisaEnsemble(nn.Module):
    """``S`` shard models aggregated into one classifier; ``forward`` returns log-probabilities.

    Args:
        members: the shard models (same architecture), each mapping ``(N, ...)`` to ``(N, K)`` logits.
        aggregation: ``"vote"`` (majority vote, ties broken by the mean probability) or ``"mean"``
            (mean of probabilities); see the module docstring for the exact formulas.

    Attributes ``arch_name`` / ``arch_kwargs`` say how to rebuild it with ``build_model``
    (``arch_name`` is None when the base architecture is unknown).
    """

    def __init__(self, members: Sequence[nn.Module], aggregation: str = "vote") -> None:
        super().__init__()
        if aggregation not in ("vote", "mean"):
            raise ConfigError(f"aggregation must be 'vote' or 'mean', got {aggregation!r}")
        if len(members) < 1:
            raise ConfigError("a SISA ensemble needs at least one shard model")
        self.members = nn.ModuleList(members)
        self.aggregation = aggregation
        self.arch_name: str | None = None
        self.arch_kwargs: dict = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logps = torch.stack([F.log_softmax(m(x).double(), dim=1) for m in self.members])  # (S, N, K)
        s = logps.shape[0]
        log_mean = torch.logsumexp(logps, dim=0) - math.log(s)
        if self.aggregation == "mean":
            return log_mean.to(x.dtype if x.is_floating_point() else torch.float32)
        votes = F.one_hot(logps.detach().argmax(dim=2), logps.shape[2]).sum(dim=0).double()  # (N, K)
        out = torch.logaddexp(torch.log(votes), math.log(VOTE_TIE_WEIGHT) + log_mean)
        out = out - math.log(s + VOTE_TIE_WEIGHT)
        return out.to(x.dtype if x.is_floating_point() else torch.float32)


@register_arch("sisa")
def _sisa_arch(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    base: str = "cnn",
    shards: int = 5,
    aggregation: str = "vote",
    base_kwargs: dict | None = None,
) -> nn.Module:
    """A SISA ensemble of ``shards`` models of architecture ``base`` (aggregation vote or mean)."""
    if base == "sisa":
        raise ConfigError("the base architecture of a SISA ensemble cannot itself be 'sisa'")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an int >= 1, got {shards!r}")
    members = [
        build_model(base, num_classes=num_classes, input_shape=input_shape, **dict(base_kwargs or {}))
        for _ in range(shards)
    ]
    ens = SisaEnsemble(members, aggregation)
    ens.arch_name = "sisa"
    ens.arch_kwargs = {
        "base": base,
        "shards": shards,
        "aggregation": aggregation,
        "base_kwargs": dict(base_kwargs or {}),
    }
    return ens


# =========================================================================== sharding and seeds


def sisa_seed(seed: int, shard: int, step: int) -> int:
    """Seed of a unit of SISA work: ``step`` 0 initialises ``shard``, ``step = r + 1`` trains slice r."""
    return int(np.random.SeedSequence([int(seed), int(shard), int(step)]).generate_state(1)[0])


def slice_epochs(epochs: int, slices: int) -> int:
    """Epochs per slice so that R cumulative slices cost about ``epochs`` passes over a shard."""
    return max(1, round(2 * epochs / (slices + 1)))


def assign_shards(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    shards: int,
    slices: int,
    sharding: str,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Shard and slice of every training sample.

    ``random``: a seeded permutation cut into ``shards`` near-equal parts (Bourtoule et al.).
    ``label``: samples ordered by label (random order within a label) and cut into ``shards``
    contiguous parts, so each shard holds about ``K / S`` classes. ``kmeans``: shard = k-means
    cluster of the flattened inputs (``sklearn.cluster.KMeans``, seeded; shards may differ in size).
    Within a shard, the samples (in permutation order) are cut into ``slices`` near-equal slices.

    Returns:
        ``(shard_of, slice_of)``, two int64 arrays of length N.

    Raises:
        ConfigError: a shard would hold fewer samples than there are slices.
    """
    n = len(y)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    if sharding == "random":
        parts = np.array_split(perm, shards)
    elif sharding == "label":
        labels = y.cpu().numpy()[perm]
        parts = np.array_split(perm[np.argsort(labels, kind="stable")], shards)
    elif sharding == "kmeans":
        from sklearn.cluster import KMeans

        feats = x.detach().cpu().reshape(n, -1).double().numpy()
        km = KMeans(n_clusters=shards, n_init=4, random_state=int(seed) % (2**31)).fit(feats)
        parts = [perm[km.labels_[perm] == s] for s in range(shards)]
    else:
        raise ConfigError(f"sharding must be 'random', 'label' or 'kmeans', got {sharding!r}")
    shard_of = np.full(n, -1, dtype=np.int64)
    slice_of = np.full(n, -1, dtype=np.int64)
    for s, part in enumerate(parts):
        if len(part) < slices:
            raise ConfigError(
                f"shard {s} holds {len(part)} samples, fewer than slices={slices}; use fewer shards or slices"
            )
        shard_of[part] = s
        for r, piece in enumerate(np.array_split(part, slices)):
            slice_of[piece] = r
    return shard_of, slice_of


# =========================================================================== the method


@register_method("sisa")
@dataclass(frozen=True)
class Sisa(StatefulMethod):
    """SISA (Bourtoule et al. 2021): exact unlearning by retraining only the affected shards.

    Train with ``unlearn-audit train --for-method sisa [--set shards=5 --set slices=4]``: the
    recipe (epochs, batch size, optimizer, lr, adversarial training) trains every shard model; the
    checkpoint holds the :class:`SisaEnsemble` and, in ``extra["method_state"]``, the shard and slice
    of every training sample and the ``S x (R + 1)`` slice checkpoints (state_dicts).

    Unlearning finds the forget samples' training indices (``data.forget_indices``, else by
    content), then retrains each affected shard from the checkpoint before its earliest affected
    slice, on the remaining samples read from the retain set. Notes report the share of the
    training work (sample passes) redone.

    Hyperparameters (training time: shards, slices, sharding; the state's values rule afterwards):
        shards: number of disjoint shards S (5).
        slices: slices per shard R, one checkpoint after each (4).
        sharding: ``random`` (paper), ``label`` or ``kmeans`` (data-aware) (random).
        aggregation: ``vote`` (paper: majority vote) or ``mean`` (mean probability) (vote).

    Reads: forget (to locate it) and retain (the affected shards' remaining samples). Exact.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})

    shards: int = param(5, "number of disjoint shards S (training time)")
    slices: int = param(4, "slices per shard R, a checkpoint after each (training time)")
    sharding: Literal["random", "label", "kmeans"] = param(
        "random", "how samples are assigned to shards: random, label or kmeans (training time)"
    )
    aggregation: Literal["vote", "mean"] = param("vote", "vote: majority vote; mean: mean probability")

    def _validate(self) -> None:
        if self.shards < 1:
            raise self._bad("shards", ">= 1")
        if self.slices < 1:
            raise self._bad("slices", ">= 1")

    # -- training ---------------------------------------------------------------------------------
    def train_with_state(
        self,
        model: nn.Module,
        train_set: TensorSet,
        cfg: TrainConfig,
        *,
        roles: object | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressFn | None = None,
        arch: str | None = None,
        arch_kwargs: dict | None = None,
        **_: object,
    ) -> tuple[SisaEnsemble, dict]:
        """Train the shard models and record the SISA state.

        Args:
            model: a model of the base architecture (copied ``S`` times and re-initialised per shard).
            train_set: the full training set; indices in the state refer to its rows.
            cfg: the recipe of every slice run (``epochs`` sets the total budget, see module doc).
            roles: unused (SISA needs no forget set at training time).
            device: where to train.
            progress: ``progress(done, total)`` over all batches of all shards.
            arch, arch_kwargs: the base architecture's registry name and arguments, recorded in
                the ensemble (``arch_name="sisa"``) so the checkpoint can be rebuilt.
            Other keyword arguments (e.g. ``sensitive``) are ignored.

        Returns:
            ``(ensemble, {"method_state": state})``.
        """
        dev = torch.device(device)
        n = len(train_set)
        shard_of, slice_of = assign_shards(
            train_set.x,
            train_set.y,
            shards=self.shards,
            slices=self.slices,
            sharding=self.sharding,
            seed=cfg.seed,
        )
        e = slice_epochs(cfg.epochs, self.slices)
        prog = Progress(progress)
        removed = np.zeros(n, dtype=bool)
        for s in range(self.shards):
            for r in range(self.slices):
                k = _cumulative(shard_of, slice_of, removed, s, r).size
                prog.add_total(e * math.ceil(k / cfg.batch_size))
        members, checkpoints, work = [], [], []
        for s in range(self.shards):
            member = clone_model(model, dev)
            with seeded(sisa_seed(cfg.seed, s, 0), dev):
                skipped = reinitialize(member)
            if skipped:
                logger.warning(
                    "SISA shard init: modules without reset_parameters kept their weights: %s", skipped
                )
            ckpts, costs = _train_slices(
                member,
                train_set.x,
                train_set.y,
                None,
                shard_of,
                slice_of,
                removed,
                s,
                0,
                self.slices,
                cfg,
                e,
                dev,
                prog,
                [_cpu_state(member)],
                [],
            )
            members.append(member)
            checkpoints.append(ckpts)
            work.append(costs)
        prog.finish()
        ensemble = SisaEnsemble(members, self.aggregation)
        if arch is not None:
            ensemble.arch_name = "sisa"
            ensemble.arch_kwargs = {
                "base": arch,
                "shards": self.shards,
                "aggregation": self.aggregation,
                "base_kwargs": dict(arch_kwargs or {}),
            }
        ensemble.eval()
        state = {
            "method": "sisa",
            "version": STATE_VERSION,
            "shards": self.shards,
            "slices": self.slices,
            "sharding": self.sharding,
            "aggregation": self.aggregation,
            "seed": int(cfg.seed),
            "slice_epochs": e,
            "train_config": cfg.to_dict(),
            "fingerprints": sample_fingerprints(train_set.x, train_set.y),
            "shard_of": torch.from_numpy(shard_of),
            "slice_of": torch.from_numpy(slice_of),
            "removed": torch.zeros(n, dtype=torch.bool),
            "checkpoints": checkpoints,
            "work": work,
        }
        return ensemble, {"method_state": state}

    # -- unlearning -------------------------------------------------------------------------------
    def _run_stateful(
        self,
        model: nn.Module,
        data: UnlearnData,
        state: dict,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> tuple[RunResult, dict]:
        shards, slices = int(state["shards"]), int(state["slices"])
        if not isinstance(model, SisaEnsemble) or len(model.members) != shards:
            raise ModelError(
                f"method 'sisa' needs the SISA ensemble saved with the state ({shards} shards), got "
                f"{type(model).__name__}"
            )
        for s in range(shards):
            final = state["checkpoints"][s][slices]
            current = model.members[s].state_dict()
            if final.keys() != current.keys() or any(
                not torch.equal(final[k], current[k].detach().cpu()) for k in final
            ):
                raise ModelError(
                    f"shard {s} of the model differs from the state's last checkpoint; pass the model saved "
                    "with this state"
                )
        assert data.retain_x is not None and data.retain_y is not None
        cfg = TrainConfig.from_dict(state["train_config"])
        e = int(state["slice_epochs"])
        located = locate_forget(data, state["fingerprints"], state["removed"])
        shard_of = state["shard_of"].numpy()
        slice_of = state["slice_of"].numpy()
        removed = state["removed"].numpy().astype(bool).copy()
        removed[located.indices] = True
        affected = sorted({int(s) for s in shard_of[located.indices]})
        start_slice = {
            s: int(slice_of[located.indices][shard_of[located.indices] == s].min()) for s in affected
        }

        # one pass over the retain set gives the rows of every sample the affected shards revisit
        needed = np.flatnonzero(np.isin(shard_of, affected) & ~removed)
        rows = rows_for(needed, state["fingerprints"], data.retain_x, data.retain_y)
        row_of = np.full(len(shard_of), -1, dtype=np.int64)
        row_of[needed] = rows.numpy()

        for s in affected:
            for r in range(start_slice[s], slices):
                k = _cumulative(shard_of, slice_of, removed, s, r).size
                progress.add_total(e * math.ceil(k / cfg.batch_size))
        checkpoints = list(state["checkpoints"])
        work = [list(w) for w in state["work"]]
        total_work = sum(sum(w) for w in work)
        redone = 0
        for s in affected:
            r0 = start_slice[s]
            member = model.members[s]
            member.load_state_dict(checkpoints[s][r0])
            ckpts, costs = _train_slices(
                member,
                data.retain_x,
                data.retain_y,
                row_of,
                shard_of,
                slice_of,
                removed,
                s,
                r0,
                slices,
                cfg,
                e,
                device,
                progress,
                list(checkpoints[s][: r0 + 1]),
                list(work[s][:r0]),
            )
            redone += sum(costs[r0:])
            checkpoints[s] = ckpts
            work[s] = costs
        progress.finish()
        share = redone / total_work if total_work else 0.0
        notes = [
            f"retrained {len(affected)} of {shards} shards ("
            + ", ".join(f"shard {s} from slice {start_slice[s]}" for s in affected)
            + f"); redid {redone} of {total_work} sample passes ({100 * share:.1f}% of the training work)",
        ]
        if located.duplicates:
            notes.append(f"{located.duplicates} identical copies of forget samples were removed as well")
        new_state = dict(state)
        new_state.update(removed=torch.from_numpy(removed), checkpoints=checkpoints, work=work)
        return RunResult(model=model, touched=("forget", "retain"), notes=tuple(notes)), new_state


def _cumulative(
    shard_of: np.ndarray, slice_of: np.ndarray, removed: np.ndarray, shard: int, slice_: int
) -> np.ndarray:
    """Training indices of slice ``slice_``'s cumulative set (slices 0..slice_), increasing."""
    return np.flatnonzero((shard_of == shard) & (slice_of <= slice_) & ~removed)


def _train_slices(
    member: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    row_of: np.ndarray | None,
    shard_of: np.ndarray,
    slice_of: np.ndarray,
    removed: np.ndarray,
    shard: int,
    first: int,
    slices: int,
    cfg: TrainConfig,
    epochs: int,
    device: torch.device,
    progress: Progress,
    checkpoints: list[dict[str, torch.Tensor]],
    costs: list[int],
) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Train ``member`` on slices ``first..slices-1`` of ``shard``; append checkpoints and costs.

    ``row_of`` maps training indices to rows of ``(x, y)`` (None: the rows are the indices).
    """
    tick: Callable[[int, int], None] = lambda done, total: progress.step()  # noqa: E731
    for r in range(first, slices):
        idx = _cumulative(shard_of, slice_of, removed, shard, r)
        rows = idx if row_of is None else row_of[idx]
        if idx.size:
            seed = sisa_seed(cfg.seed, shard, r + 1)
            subset = TensorSet(x[torch.as_tensor(rows)], y[torch.as_tensor(rows)])
            with seeded(seed, device):
                train_model(
                    member, subset, replace(cfg, epochs=epochs, seed=seed), device=device, progress=tick
                )
        checkpoints.append(_cpu_state(member))
        costs.append(int(epochs * idx.size))
    return checkpoints, costs
