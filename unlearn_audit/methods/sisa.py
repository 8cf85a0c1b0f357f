"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., IEEE S&P 2021).

The pieces every *stateful* method shares (SISA, amnesiac, DeltaGrad, MCMC) live in
:mod:`unlearn_audit.methods._state` and are re-exported here: :class:`StatefulMethod`
(``unlearn(..., state=...)`` returning an updated state), :func:`sample_fingerprints` and
:func:`locate_forget` (finding forget samples in the recorded training set by index or by
content) and :func:`rows_for` (finding training samples in the retain set).

Training (``record_training``) splits the training set into ``S`` disjoint shards and each
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

The aggregate is a :class:`~unlearn_audit.archs.SisaEnsemble` (architecture ``sisa``) whose ``forward``
returns log-probabilities, so every metric and attack can treat it as a classifier:

* ``aggregation="vote"`` (the paper's): majority vote of the shards' argmax, ties broken by the
  mean probability: ``log((v_c + t * pbar_c) / (S + t))`` with ``v_c`` the votes for class ``c``,
  ``pbar`` the shards' mean softmax and ``t = 1e-3``. Gradients flow only through the small
  ``t * pbar`` term, so gradient attacks still find a direction, but confidence-based scores are
  coarse (multiples of 1/S).
* ``aggregation="mean"``: ``log(pbar_c)``, the log of the mean of the shards' probabilities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from unlearn_audit.archs import ArchSpec, SisaEnsemble, sisa_spec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.methods._common import Progress, clone_model, reinitialize, seeded
from unlearn_audit.methods._state import (
    STATE_VERSION,
    StatefulMethod,
    StatefulTraining,
    locate_forget,
    rows_for,
    sample_fingerprints,
)

# Located and state_bytes lived here before _state.py; re-exported so old imports keep working.
from unlearn_audit.methods._state import Located as Located
from unlearn_audit.methods._state import state_bytes as state_bytes
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, param
from unlearn_audit.methods.registry import register_method
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


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


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


@dataclass(frozen=True)
class _Layout:
    """Where every training sample sits (shard and slice), which ones are gone, and the recipe of
    one slice run: what every step of SISA training and retraining reads."""

    shard_of: np.ndarray
    slice_of: np.ndarray
    removed: np.ndarray
    slices: int
    cfg: TrainConfig
    epochs: int  # per slice

    def cumulative(self, shard: int, slice_: int) -> np.ndarray:
        """Training indices of slice ``slice_``'s cumulative set (slices 0..slice_), increasing."""
        return np.flatnonzero((self.shard_of == shard) & (self.slice_of <= slice_) & ~self.removed)

    def steps(self, first: dict[int, int]) -> int:
        """Batches :func:`_train_slices` runs to train slices ``first[s]..slices-1`` of each shard ``s``."""
        return sum(
            self.epochs * math.ceil(self.cumulative(s, r).size / self.cfg.batch_size)
            for s, r0 in first.items()
            for r in range(r0, self.slices)
        )


@dataclass(frozen=True)
class _Rows:
    """The samples to train on: ``(x, y)`` and, when their rows are not the training indices,
    ``row_of`` mapping training indices to rows."""

    x: torch.Tensor
    y: torch.Tensor
    row_of: np.ndarray | None = None


@register_method("sisa")
@dataclass(frozen=True)
class Sisa(StatefulMethod):
    """SISA (Bourtoule et al. 2021): exact unlearning by retraining only the affected shards.

    Train with ``unlearn-audit train --for-method sisa [--set shards=5 --set slices=4]``: the
    recipe (epochs, batch size, optimizer, lr, adversarial training) trains every shard model; the
    checkpoint holds the :class:`SisaEnsemble` and, in ``extra["method_state"]``, the shard and slice
    of every training sample and the ``S x (R + 1)`` slice checkpoints (state_dicts). Any recipe
    works: the architecture's own is used unchanged.

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
    def record_training(
        self,
        model: nn.Module,
        train_set: TensorSet,
        cfg: TrainConfig,
        *,
        arch: ArchSpec | None = None,
        sensitive: object | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressFn | None = None,
    ) -> StatefulTraining:
        """Train the shard models and record the SISA state.

        ``model`` (of the base architecture ``arch``) is copied ``S`` times and re-initialised per
        shard; ``cfg`` is the recipe of every slice run (``epochs`` sets the total budget, see the
        module doc). The result's model is the :class:`SisaEnsemble`, named ``sisa`` with ``arch``
        as its base. ``sensitive`` is not used: SISA can unlearn any training sample.
        """
        dev = torch.device(device)
        shard_of, slice_of = assign_shards(
            train_set.x,
            train_set.y,
            shards=self.shards,
            slices=self.slices,
            sharding=self.sharding,
            seed=cfg.seed,
        )
        layout = _Layout(
            shard_of=shard_of,
            slice_of=slice_of,
            removed=np.zeros(len(train_set), dtype=bool),
            slices=self.slices,
            cfg=cfg,
            epochs=slice_epochs(cfg.epochs, self.slices),
        )
        prog = Progress(progress)
        prog.add_total(layout.steps(dict.fromkeys(range(self.shards), 0)))
        members, checkpoints, work = [], [], []
        for s in range(self.shards):
            member = _fresh_member(model, sisa_seed(cfg.seed, s, 0), dev)
            ckpts, costs = _train_slices(
                member, layout, s, 0, _Rows(train_set.x, train_set.y), dev, prog, [_cpu_state(member)], []
            )
            members.append(member)
            checkpoints.append(ckpts)
            work.append(costs)
        prog.finish()
        ensemble = SisaEnsemble(members, self.aggregation)
        ensemble.eval()
        return StatefulTraining(
            model=ensemble,
            state=self._first_state(train_set, layout, checkpoints, work),
            recipe=cfg,
            arch=sisa_spec(arch, shards=self.shards, aggregation=self.aggregation) if arch else None,
        )

    def _first_state(
        self, train_set: TensorSet, layout: _Layout, checkpoints: list, work: list[list[int]]
    ) -> dict:
        """The state right after training: nothing removed yet."""
        return {
            "method": "sisa",
            "version": STATE_VERSION,
            "shards": self.shards,
            "slices": self.slices,
            "sharding": self.sharding,
            "aggregation": self.aggregation,
            "seed": int(layout.cfg.seed),
            "slice_epochs": layout.epochs,
            "train_config": layout.cfg.to_dict(),
            "fingerprints": sample_fingerprints(train_set.x, train_set.y),
            "shard_of": torch.from_numpy(layout.shard_of),
            "slice_of": torch.from_numpy(layout.slice_of),
            "removed": torch.zeros(len(train_set), dtype=torch.bool),
            "checkpoints": checkpoints,
            "work": work,
        }

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
        ensemble = _saved_ensemble(model, state)
        assert data.retain_x is not None and data.retain_y is not None
        located = locate_forget(data, state["fingerprints"], state["removed"])
        removed = state["removed"].numpy().astype(bool).copy()
        removed[located.indices] = True
        layout = _Layout(
            shard_of=state["shard_of"].numpy(),
            slice_of=state["slice_of"].numpy(),
            removed=removed,
            slices=int(state["slices"]),
            cfg=TrainConfig.from_dict(state["train_config"]),
            epochs=int(state["slice_epochs"]),
        )
        start_slice = _first_affected_slices(layout, located.indices)
        progress.add_total(layout.steps(start_slice))
        checkpoints = list(state["checkpoints"])
        work = [list(w) for w in state["work"]]
        total_work = sum(sum(w) for w in work)
        rows = _retain_rows(layout, start_slice, state["fingerprints"], data)
        redone = 0
        for s, r0 in start_slice.items():
            member = ensemble.members[s]
            member.load_state_dict(checkpoints[s][r0])
            checkpoints[s], work[s] = _train_slices(
                member, layout, s, r0, rows, device, progress, list(checkpoints[s][: r0 + 1]), work[s][:r0]
            )
            redone += sum(work[s][r0:])
        progress.finish()
        share = redone / total_work if total_work else 0.0
        notes = [
            f"retrained {len(start_slice)} of {int(state['shards'])} shards ("
            + ", ".join(f"shard {s} from slice {r0}" for s, r0 in start_slice.items())
            + f"); redid {redone} of {total_work} sample passes ({100 * share:.1f}% of the training work)",
        ]
        if located.duplicates:
            notes.append(f"{located.duplicates} identical copies of forget samples were removed as well")
        new_state = dict(state)
        new_state.update(removed=torch.from_numpy(removed), checkpoints=checkpoints, work=work)
        return RunResult(model=ensemble, touched=("forget", "retain"), notes=tuple(notes)), new_state


def _fresh_member(model: nn.Module, seed: int, device: torch.device) -> nn.Module:
    """A copy of ``model`` on ``device``, re-initialised under ``seed``: one shard's starting point."""
    member = clone_model(model, device)
    with seeded(seed, device):
        skipped = reinitialize(member)
    if skipped:
        logger.warning("SISA shard init: modules without reset_parameters kept their weights: %s", skipped)
    return member


def _saved_ensemble(model: nn.Module, state: dict) -> SisaEnsemble:
    """``model`` as the ensemble saved with ``state``: every shard equal to its last checkpoint.

    Raises:
        ModelError: another model, or a shard that differs.
    """
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
    return model


def _first_affected_slices(layout: _Layout, forget: np.ndarray) -> dict[int, int]:
    """For every shard holding a forget sample, the earliest slice that holds one (shards in order)."""
    shard_of, slice_of = layout.shard_of[forget], layout.slice_of[forget]
    return {int(s): int(slice_of[shard_of == s].min()) for s in sorted({int(s) for s in shard_of})}


def _retain_rows(layout: _Layout, start_slice: dict[int, int], fingerprints: torch.Tensor, data: UnlearnData):
    """The retain-set rows of every sample the affected shards revisit, found in one pass."""
    assert data.retain_x is not None and data.retain_y is not None
    needed = np.flatnonzero(np.isin(layout.shard_of, list(start_slice)) & ~layout.removed)
    rows = rows_for(needed, fingerprints, data.retain_x, data.retain_y)
    row_of = np.full(len(layout.shard_of), -1, dtype=np.int64)
    row_of[needed] = rows.numpy()
    return _Rows(data.retain_x, data.retain_y, row_of)


def _train_slices(
    member: nn.Module,
    layout: _Layout,
    shard: int,
    first: int,
    rows: _Rows,
    device: torch.device,
    progress: Progress,
    checkpoints: list[dict[str, torch.Tensor]],
    costs: list[int],
) -> tuple[list[dict[str, torch.Tensor]], list[int]]:
    """Train ``member`` on slices ``first..slices-1`` of ``shard``; append checkpoints and costs."""
    tick: Callable[[int, int], None] = lambda done, total: progress.step()  # noqa: E731
    for r in range(first, layout.slices):
        idx = layout.cumulative(shard, r)
        picked = torch.as_tensor(idx if rows.row_of is None else rows.row_of[idx])
        if idx.size:
            seed = sisa_seed(layout.cfg.seed, shard, r + 1)
            subset = TensorSet(rows.x[picked], rows.y[picked])
            with seeded(seed, device):
                train_model(
                    member,
                    subset,
                    replace(layout.cfg, epochs=layout.epochs, seed=seed),
                    device=device,
                    progress=tick,
                )
        checkpoints.append(_cpu_state(member))
        costs.append(int(layout.epochs * idx.size))
    return checkpoints, costs
