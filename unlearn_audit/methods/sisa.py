"""SISA: Sharded, Isolated, Sliced, Aggregated training (Bourtoule et al., IEEE S&P 2021).

The pieces every *stateful* method shares (SISA, amnesiac, DeltaGrad, MCMC) live in
:mod:`unlearn_audit.methods._state` and are re-exported here: :class:`StatefulMethod`
(``unlearn(..., state=...)`` returning an updated state), :func:`sample_fingerprints` and
:func:`locate_forget` (finding forget samples in the recorded training set by index or by
content) and :func:`rows_for` (finding training samples in the retain set).

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

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.methods._common import Progress, clone_model, reinitialize, seeded
from unlearn_audit.methods._state import (
    STATE_VERSION,
    StatefulMethod,
    locate_forget,
    rows_for,
    sample_fingerprints,
)

# Located and state_bytes lived here before _state.py; re-exported so old imports keep working.
from unlearn_audit.methods._state import Located as Located
from unlearn_audit.methods._state import state_bytes as state_bytes
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, param
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

VOTE_TIE_WEIGHT = 1e-3


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
    return _record_arch(SisaEnsemble(members, aggregation), base, base_kwargs)


def _record_arch(ens: SisaEnsemble, base: str, base_kwargs: dict | None) -> SisaEnsemble:
    """``ens`` with ``arch_name`` and ``arch_kwargs`` set so that ``build_model`` can rebuild it."""
    ens.arch_name = "sisa"
    ens.arch_kwargs = {
        "base": base,
        "shards": len(ens.members),
        "aggregation": ens.aggregation,
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
        first = dict.fromkeys(range(self.shards), 0)
        prog.add_total(_slice_steps(shard_of, slice_of, removed, first, self.slices, cfg, e))
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
            _record_arch(ensemble, arch, arch_kwargs)
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

        progress.add_total(_slice_steps(shard_of, slice_of, removed, start_slice, slices, cfg, e))
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


def _slice_steps(
    shard_of: np.ndarray,
    slice_of: np.ndarray,
    removed: np.ndarray,
    first: dict[int, int],
    slices: int,
    cfg: TrainConfig,
    epochs: int,
) -> int:
    """Batches :func:`_train_slices` trains on to run slices ``first[s]..slices-1`` of each shard ``s``."""
    return sum(
        epochs * math.ceil(_cumulative(shard_of, slice_of, removed, s, r).size / cfg.batch_size)
        for s, r0 in first.items()
        for r in range(r0, slices)
    )


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
