"""What the *stateful* methods (SISA, amnesiac, DeltaGrad, MCMC) share.

These methods record state while the original model trains and read it back when a request
comes. :class:`StatefulMethod` is their contract: a training hook (:meth:`~StatefulMethod.
record_training`, run by ``unlearn-audit train --for-method NAME``) that returns a
:class:`StatefulTraining`, the training recipe the method needs (:meth:`~StatefulMethod.
training_recipe`), and ``unlearn(..., state=...)``. Samples are found again by index or by
content: :func:`sample_fingerprints` hashes them, :func:`locate_forget` finds the forget samples
in the recorded training set, :func:`rows_for` finds recorded training samples in the retain set
and :func:`mark_removed` records which ones are gone. :func:`batch_schedule` replays the batch
order of :func:`unlearn_audit.training.train_model`; :func:`state_bytes` measures a state.
"""

from __future__ import annotations

import hashlib
from abc import ABCMeta, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from unlearn_audit.archs import ArchSpec
from unlearn_audit.data import Roles, TensorSet
from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.methods._common import Progress
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, UnlearningMethod, UnlearnOutcome
from unlearn_audit.training import TrainConfig

__all__ = [
    "STATE_VERSION",
    "Located",
    "RecipeRule",
    "StatefulMethod",
    "StatefulTraining",
    "batch_schedule",
    "locate_forget",
    "mark_removed",
    "record_stateful_training",
    "rows_for",
    "sample_fingerprints",
    "state_bytes",
    "stateful_recipe",
]

STATE_VERSION = 1


@dataclass(frozen=True)
class StatefulTraining:
    """What a stateful method's training hook hands back.

    Attributes:
        model: the trained model in eval mode: the given one trained in place, or the model the
            method built from it (SISA's ensemble, MCMC's Bayesian logistic regression).
        state: what unlearning needs later; saved as the checkpoint's ``extra["method_state"]``.
        recipe: the recipe the training actually followed, recorded as the checkpoint's
            ``train_config`` (so reference models can be trained the same way).
        arch: how a checkpoint names ``model``; None when the caller did not name the
            architecture it gave (then only the caller knows how to rebuild it).
    """

    model: nn.Module
    state: dict
    recipe: TrainConfig
    arch: ArchSpec | None

    @property
    def extra(self) -> dict:
        """The checkpoint's ``extra`` entry."""
        return {"method_state": self.state}


@dataclass(frozen=True)
class RecipeRule:
    """A recipe field a method cannot train without: its value and why (a phrase after the name)."""

    value: object
    why: str


class StatefulMethod(UnlearningMethod, metaclass=ABCMeta):
    """A method that needs state recorded while the original model was trained.

    Subclasses implement :meth:`record_training` and :meth:`_run_stateful`, and say what
    training recipe they need: ``recipe_defaults`` (fields they train with unless the user sets
    them) and ``recipe_rules`` (fields they cannot train without). Their :meth:`unlearn` takes the
    recorded ``state`` (the checkpoint's ``extra["method_state"]``) and returns an
    :class:`UnlearnOutcome` whose ``state`` is the updated state to save with the new model, so
    further requests can follow. The given state is never modified.
    """

    needs_state: ClassVar[bool] = True
    recipe_defaults: ClassVar[Mapping[str, object]] = {}
    recipe_rules: ClassVar[Mapping[str, RecipeRule]] = {}

    @property
    def state_name(self) -> str:
        """The ``state["method"]`` this method accepts."""
        return self.name

    # -- training ---------------------------------------------------------------------------------
    def training_recipe(self, base: TrainConfig, explicit: Mapping[str, object]) -> TrainConfig:
        """The recipe ``train --for-method`` trains with and records.

        ``base`` (the architecture's defaults), then this method's ``recipe_defaults`` and
        ``recipe_rules``, then the user's ``explicit`` settings (None values are unset ones).

        Raises:
            ConfigError: an explicit setting breaks one of the method's ``recipe_rules``.
        """
        given = {k: v for k, v in explicit.items() if v is not None}
        for key, rule in self.recipe_rules.items():
            if key in given and given[key] != rule.value:
                raise ConfigError(
                    f"training with `for_method` {self.name} cannot use {key}={given[key]!r}: {self.name} "
                    f"{rule.why}; leave {key} unset (the method trains with {key}={rule.value!r})",
                    param="for_method",
                )
        fixed = {k: rule.value for k, rule in self.recipe_rules.items()}
        return replace(base, **{**self.recipe_defaults, **fixed, **given})

    @abstractmethod
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
        """Train on ``train_set`` with the recipe ``cfg`` and record the method's state.

        Args:
            model: a freshly initialised model of the architecture ``arch``.
            train_set: the whole training set; indices in the state refer to its rows.
            cfg: the recipe (normally :meth:`training_recipe`'s).
            arch: the registry name and arguments of ``model``'s architecture, when known.
            sensitive: training indices marked for later unlearning (``train --for-method``
                passes the forget set's); only methods that record per sample use them.
            device: where to train.
            progress: ``progress(done, total)`` over the training work.
        """

    def train_with_state(
        self,
        model: nn.Module,
        train_set: TensorSet,
        cfg: TrainConfig,
        *,
        roles: Roles | None = None,
        sensitive: object | None = None,
        arch: str | None = None,
        arch_kwargs: dict | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressFn | None = None,
    ) -> tuple[nn.Module, dict]:
        """:meth:`record_training` in the older call shape: returns ``(model, extra)``.

        ``sensitive`` defaults to ``roles.forget_indices``; ``arch`` and ``arch_kwargs`` name
        ``model``'s architecture.
        """
        marked = sensitive if sensitive is not None or roles is None else roles.forget_indices
        spec = ArchSpec(arch, dict(arch_kwargs or {})) if arch is not None else None
        result = self.record_training(
            model, train_set, cfg, arch=spec, sensitive=marked, device=device, progress=progress
        )
        return result.model, result.extra

    # -- unlearning -------------------------------------------------------------------------------
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
            state: the state recorded by :meth:`record_training` (or returned by a previous request).

        Raises:
            ConfigError: no state, a state of another method or version, or a missing retain set.
            DataError: a forget sample is not in the recorded training set or was already unlearned.
            ModelError: ``model`` is not the model the state was recorded with.
        """
        self._check_request(data)
        checked = self._check_state(state)
        return self._execute(
            model,
            data,
            device=device,
            seed=seed,
            progress=progress,
            run=lambda work, dev, gen, prog: self._run_stateful(
                work, data, checked, device=dev, generator=gen, progress=prog
            ),
        )

    def _check_state(self, state: object) -> dict:
        how = f"record it when training the original (train `for_method` {self.state_name})"
        if state is None:
            raise ConfigError(
                f"method {self.name!r} needs the state recorded during training; {how}", param="for_method"
            )
        if not isinstance(state, dict) or state.get("method") != self.state_name:
            got = state.get("method") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(
                f"method {self.name!r} needs a {self.state_name!r} state, got {got!r}; {how}",
                param="for_method",
            )
        if state.get("version") != STATE_VERSION:
            raise ConfigError(
                f"method {self.name!r}: state version {state.get('version')!r} is not supported "
                f"(expected {STATE_VERSION}); {how}",
                param="for_method",
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

    @abstractmethod
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


# -- what `train --for-method` runs ------------------------------------------------------------


def _records_state(method: object) -> bool:
    """A method outside :class:`StatefulMethod` that still records state: it says ``needs_state``
    and has ``train_with_state(model, train_set, cfg, *, roles, device, progress) -> (model, extra)``,
    the call shape from before the contract was declared."""
    return bool(getattr(method, "needs_state", False)) and callable(getattr(method, "train_with_state", None))


def stateful_recipe(method: object, base: TrainConfig, explicit: Mapping[str, object]) -> TrainConfig:
    """The recipe ``train --for-method`` uses for ``method``: :meth:`StatefulMethod.training_recipe`,
    or ``base`` with the ``explicit`` settings for a method that brings no recipe of its own.

    Raises:
        ConfigError: ``method`` records no training state, or refuses an explicit setting.
    """
    if isinstance(method, StatefulMethod):
        return method.training_recipe(base, explicit)
    if not _records_state(method):
        name = getattr(method, "name", type(method).__name__)
        raise ConfigError(
            f"method {name!r} needs no training state; train without `for_method`", param="for_method"
        )
    return replace(base, **{k: v for k, v in explicit.items() if v is not None})


def record_stateful_training(
    method: object,
    model: nn.Module,
    train_set: TensorSet,
    cfg: TrainConfig,
    *,
    arch: ArchSpec,
    roles: Roles | None,
    device: torch.device | str,
    progress: ProgressFn | None,
) -> StatefulTraining:
    """Run ``method``'s training hook as ``train --for-method`` does (the sensitive samples are the
    forget set's). A method with the older ``train_with_state`` call shape keeps ``model``'s
    architecture and records ``cfg``."""
    if isinstance(method, StatefulMethod):
        sensitive = roles.forget_indices if roles is not None else None
        return method.record_training(
            model, train_set, cfg, arch=arch, sensitive=sensitive, device=device, progress=progress
        )
    model, extra = method.train_with_state(  # type: ignore[attr-defined]
        model, train_set, cfg, roles=roles, device=device, progress=progress
    )
    return StatefulTraining(model=model, state=extra.get("method_state", {}), recipe=cfg, arch=arch)


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


def mark_removed(state: dict, indices: np.ndarray) -> torch.Tensor:
    """A copy of ``state["removed"]`` with the training samples ``indices`` marked as removed."""
    removed = state["removed"].clone()
    removed[torch.from_numpy(indices)] = True
    return removed


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


def batch_schedule(n: int, batch_size: int, epochs: int, seed: int) -> list[torch.Tensor]:
    """The index batch of every training step: ``train_model``'s per-epoch permutations cut into batches."""
    gen = torch.Generator().manual_seed(seed)
    per_epoch = (n + batch_size - 1) // batch_size
    out: list[torch.Tensor] = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        out.extend(order[b * batch_size : (b + 1) * batch_size] for b in range(per_epoch))
    return out


def state_bytes(obj: object) -> int:
    """Bytes held by the tensors in a (nested) state."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(state_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(state_bytes(v) for v in obj)
    return 0
