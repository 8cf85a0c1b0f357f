"""DeltaGrad (Wu, Dobriban, Davidson, ICML 2020): fast retraining from a cached GD trajectory.

Training (``record_training``) runs plain (mini-)batch gradient descent on

    F_B(w) = mean_{i in B} l_i(w) + (l2 / 2) * ||w||^2        (l_i: cross-entropy)

with a fixed batch schedule (the permutations of ``train_model``, seeded by the recipe's seed; the
whole set every step when ``batch_size >= N``), learning rate ``lr`` and ``epochs`` passes, and
caches every iterate ``w_t`` and gradient ``g_t = grad F_{B_t}(w_t)``. The model is evaluated in
eval mode (no dropout), so every gradient is deterministic. The recipe's optimizer and momentum
are not used: DeltaGrad replays plain GD.

Deleting a set ``D`` (or adding samples ``A``) replays GD from ``w_0`` on the changed batches
``B'_t = B_t - D + A_t``. For the first ``init`` steps (j0) and every ``period``-th step after
(T0) the gradient on the original batch is computed exactly at the new iterate ``w'_t`` and the
pair ``(w'_t - w_t, grad F_{B_t}(w'_t) - g_t)`` joins an L-BFGS history of ``history`` pairs (m);
at the other steps ``grad F_{B_t}(w'_t) ~ g_t + B (w'_t - w_t)`` with ``B`` the compact L-BFGS
Hessian approximation (Byrd, Nocedal, Schnabel 1994). Either way

    grad F_{B'_t}(w') = (|B_t| a - sum_{i in D_t} grad l_i(w') + sum_{i in A_t} grad l_i(w')) / |B'_t| + l2 w'

with ``a = grad F_{B_t}(w') - l2 w'`` (exact or approximated) and the deleted/added samples'
gradients always exact (they are few). A step whose new batch is empty leaves ``w'`` unchanged.
For strongly convex models (logistic regression with ``l2 > 0``) the result is provably close to
retraining; for small MLPs it is a heuristic. Defaults follow the DeltaGrad README (T0 = 5,
j0 = 20, m = 2, ``wd 1e-4``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from unlearn_audit.archs import ArchSpec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.methods._common import Progress
from unlearn_audit.methods._state import (
    STATE_VERSION,
    RecipeRule,
    StatefulMethod,
    StatefulTraining,
    batch_schedule,
    locate_forget,
    mark_removed,
    rows_for,
    sample_fingerprints,
)
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, param
from unlearn_audit.methods.registry import register_method
from unlearn_audit.torchutil import evaluation_mode
from unlearn_audit.training import TrainConfig

__all__ = ["FULL_BATCH", "DeltaGrad", "ReplayResult", "batch_schedule", "deltagrad_replay", "lbfgs_hvp"]

logger = logging.getLogger(__name__)

FULL_BATCH = 2**31 - 1
"""The recipe's batch size for full-batch GD: larger than any training set (capped at its size)."""


def lbfgs_hvp(s: torch.Tensor, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``B v`` for the compact L-BFGS Hessian approximation built from pairs ``(s_i, y_i)``.

    ``B = sigma I - [sigma S, Y] M^-1 [sigma S^T; Y^T]`` with ``M = [[sigma S^T S, L], [L^T, -D]]``,
    ``L`` the strictly lower triangle of ``S^T Y``, ``D`` its diagonal and
    ``sigma = y_m^T s_m / s_m^T s_m`` (newest pair). ``B`` satisfies the secant equation
    ``B s_m = y_m``.

    Args:
        s, y: ``(m, d)``, oldest pair first.
        v: ``(d,)``.
    """
    s64, y64, v64 = s.double(), y.double(), v.double()
    m = s64.shape[0]
    sigma = (y64[-1] @ s64[-1]) / (s64[-1] @ s64[-1])
    sy = s64 @ y64.T
    low = torch.tril(sy, diagonal=-1)
    mid = torch.zeros(2 * m, 2 * m, dtype=torch.float64, device=s.device)
    mid[:m, :m] = sigma * (s64 @ s64.T)
    mid[:m, m:] = low
    mid[m:, :m] = low.T
    mid[m:, m:] = -torch.diag(torch.diagonal(sy))
    q = torch.cat([sigma * (s64 @ v64), y64 @ v64])
    p = torch.linalg.solve(mid, q)
    out = sigma * v64 - (sigma * (s64.T @ p[:m]) + y64.T @ p[m:])
    return out.to(v.dtype)


class _Objective:
    """Per-sample cross-entropy of ``model`` as a function of the flat parameter vector."""

    def __init__(self, model: nn.Module, chunk: int = 4096) -> None:
        self.model = model
        self.names = [k for k, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.buffers = {k: v.detach() for k, v in model.named_buffers()}
        self.chunk = chunk

    def _params(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        out, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            k = int(np.prod(shape)) if len(shape) else 1
            out[name] = w[start : start + k].view(shape)
            start += k
        return out

    def grad_sum(self, w: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``sum_i grad l_i(w)`` over the rows of ``(x, y)`` (zeros for no rows)."""
        total = torch.zeros_like(w)
        for start in range(0, len(y), self.chunk):
            wl = w.detach().requires_grad_(True)
            out = functional_call(
                self.model, (self._params(wl), self.buffers), (x[start : start + self.chunk],)
            )
            loss = F.cross_entropy(out, y[start : start + self.chunk], reduction="sum")
            total += torch.autograd.grad(loss, wl)[0]
        return total


@dataclass(frozen=True)
class ReplayResult:
    """A replayed trajectory: final weights, all iterates and gradients, and what it cost."""

    weights: torch.Tensor  # (T + 1, d)
    grads: torch.Tensor  # (T, d): gradient of the new objective used at each step
    exact_steps: int
    approx_steps: int
    seconds: float


@dataclass(frozen=True)
class _Batch:
    """One replayed step's samples: the kept and deleted rows of the original batch (samples
    removed by earlier requests dropped) and the added samples that join it."""

    keep: torch.Tensor
    dele: torch.Tensor
    add: torch.Tensor

    @property
    def size_old(self) -> int:
        return len(self.keep) + len(self.dele)

    @property
    def size_new(self) -> int:
        return len(self.keep) + len(self.add)


class _Pairs:
    """The L-BFGS history: the newest ``size`` curvature pairs ``(s, y)`` with ``s^T y > 0``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.s: list[torch.Tensor] = []
        self.y: list[torch.Tensor] = []

    def add(self, s_vec: torch.Tensor, y_vec: torch.Tensor) -> None:
        if float(s_vec @ y_vec) > 1e-10 * float(s_vec @ s_vec) and float(s_vec @ s_vec) > 0:
            self.s.append(s_vec)
            self.y.append(y_vec)
            if len(self.s) > self.size:
                self.s.pop(0)
                self.y.pop(0)

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        return lbfgs_hvp(torch.stack(self.s), torch.stack(self.y), v)


class _Replay:
    """What one replay reads: the objective, the cached run, the samples and what changes."""

    def __init__(
        self,
        model: nn.Module,
        state: dict,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        deleted: np.ndarray,
        added: tuple[torch.Tensor, torch.Tensor] | None,
        device: torch.device,
    ) -> None:
        self.obj = _Objective(model)
        n = int(state["n"])
        self.l2 = float(state["l2"])
        self.schedule = batch_schedule(n, int(state["batch_size"]), int(state["epochs"]), int(state["seed"]))
        self.per_epoch = len(self.schedule) // max(1, int(state["epochs"]))
        self.gone = state["removed"].numpy().astype(bool)
        self.is_deleted = np.zeros(n, dtype=bool)
        self.is_deleted[deleted] = True
        self.x, self.y = x.to(device), y.to(device)
        self.added = (added[0].to(device), added[1].to(device)) if added else None
        self.device = device

    def batch(self, t: int) -> _Batch:
        """Step ``t``'s samples: added sample ``j`` joins batch ``j mod b`` of every epoch."""
        idx = self.schedule[t].numpy()
        idx = idx[~self.gone[idx]]
        n_add = 0 if self.added is None else len(self.added[1])
        dev = self.device
        return _Batch(
            keep=torch.as_tensor(idx[~self.is_deleted[idx]], device=dev),
            dele=torch.as_tensor(idx[self.is_deleted[idx]], device=dev),
            add=torch.arange(t % self.per_epoch, n_add, self.per_epoch, device=dev)
            if n_add and self.per_epoch > 1
            else torch.arange(n_add, device=dev),
        )

    def grad_sum(self, w: torch.Tensor, rows: torch.Tensor, *, added: bool = False) -> torch.Tensor:
        """``sum_i grad l_i(w)`` over training samples ``rows`` (or added samples)."""
        if not len(rows):
            return torch.zeros_like(w)
        x, y = self.added if added else (self.x, self.y)  # type: ignore[misc]
        return self.obj.grad_sum(w, x[rows], y[rows])

    def exact_gradient(
        self, w: torch.Tensor, b: _Batch, sum_del: torch.Tensor, sum_add: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The new batch's gradient at ``w`` and the original batch's, both computed exactly."""
        sum_keep = self.grad_sum(w, b.keep)
        full = (sum_keep + sum_del) / b.size_old + self.l2 * w if b.size_old else torch.zeros_like(w)
        return (sum_keep + sum_add) / b.size_new + self.l2 * w, full


def deltagrad_replay(
    model: nn.Module,
    state: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    deleted: np.ndarray,
    added_x: torch.Tensor | None = None,
    added_y: torch.Tensor | None = None,
    period: int = 5,
    init: int = 20,
    history: int = 2,
    exact: bool = False,
    device: torch.device | str = "cpu",
    progress: Callable[[], None] | None = None,
) -> ReplayResult:
    """Replay the cached GD run of ``state`` with ``deleted`` removed (and ``added_*`` added).

    Args:
        model: any module of the trained architecture (its parameters are not changed).
        state: a ``deltagrad`` state.
        x, y: the training samples by training index (``x[i]`` is training sample ``i``); rows of
            samples removed by earlier requests are never read.
        deleted: training indices to delete now.
        added_x, added_y: samples to add: added sample ``j`` joins batch ``j mod b`` of every epoch
            (``b`` batches per epoch), i.e. every step in full-batch GD.
        period, init, history: T0, j0 and m of DeltaGrad.
        exact: compute every gradient exactly: the "retrain" baseline (BaseL) on the same schedule.
        progress: called after each step.
    """
    dev = torch.device(device)
    start = time.perf_counter()
    added = (added_x, added_y) if added_y is not None and len(added_y) else None
    replay = _Replay(model, state, x, y, deleted=deleted, added=added, device=dev)  # type: ignore[arg-type]
    lr, l2 = float(state["lr"]), float(state["l2"])
    weights, grads = state["weights"], state["grads"]
    w = weights[0].to(dev).clone()
    new_w, new_g = [w.detach().cpu().clone()], []
    pairs = _Pairs(history)
    exact_steps = approx_steps = 0
    for t in range(len(replay.schedule)):
        b = replay.batch(t)
        if b.size_new == 0:
            g_new = torch.zeros_like(w)
        else:
            w_t, g_t = weights[t].to(dev), grads[t].to(dev)
            sum_del = replay.grad_sum(w, b.dele)
            sum_add = replay.grad_sum(w, b.add, added=True)
            if exact or t < init or (t - init) % period == 0 or not pairs.s or b.size_old == 0:
                g_new, full = replay.exact_gradient(w, b, sum_del, sum_add)
                if b.size_old and not exact:
                    pairs.add(w - w_t, full - g_t)
                exact_steps += 1
            else:
                data_mean = g_t + pairs.hvp(w - w_t) - l2 * w
                g_new = (b.size_old * data_mean - sum_del + sum_add) / b.size_new + l2 * w
                approx_steps += 1
            w = w - lr * g_new
        new_g.append(g_new.detach().cpu().clone())
        new_w.append(w.detach().cpu().clone())
        if progress is not None:
            progress()
    return ReplayResult(
        weights=torch.stack(new_w),
        grads=torch.stack(new_g) if new_g else torch.zeros(0, w.numel()),
        exact_steps=exact_steps,
        approx_steps=approx_steps,
        seconds=time.perf_counter() - start,
    )


@register_method("deltagrad")
@dataclass(frozen=True)
class DeltaGrad(StatefulMethod):
    """DeltaGrad (Wu et al. 2020): replay the cached GD run with L-BFGS-approximated gradients.

    Train with ``unlearn-audit train --arch logreg --for-method deltagrad [--set l2=1e-3]``: the
    method's recipe is full-batch GD, lr 0.1, 200 epochs (``--lr``, ``--epochs`` and
    ``--batch-size`` change it; a smaller batch size gives mini-batch GD with a fixed schedule).
    Every iterate and gradient is cached (``2 T d`` floats). Unlearning needs the forget set and
    the retain set (exact steps read the remaining samples of each batch).

    Hyperparameters:
        period: T0, an exact gradient every ``period`` steps after the warm-up (5).
        init: j0, warm-up steps with exact gradients (20).
        history: m, L-BFGS pairs kept (2).
        l2: L2 regularisation of the training objective; strong convexity needs > 0 (training
            time; the state's value rules afterwards) (1e-4).

    Reads: forget and retain. Approximate (provably close for strongly convex models).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget", "retain"})
    recipe_defaults: ClassVar[Mapping[str, object]] = {"lr": 0.1, "epochs": 200, "batch_size": FULL_BATCH}
    recipe_rules: ClassVar[Mapping[str, RecipeRule]] = {
        "optimizer": RecipeRule("sgd", "replays plain gradient descent"),
        "momentum": RecipeRule(0.0, "replays plain gradient descent"),
        "adversarial": RecipeRule(
            None, "replays plain gradient descent; adversarial training is not supported"
        ),
    }

    period: int = param(5, "T0: an exact gradient every `period` steps after the warm-up")
    init: int = param(20, "j0: warm-up steps with exact gradients")
    history: int = param(2, "m: L-BFGS (s, y) pairs kept")
    l2: float = param(1e-4, "L2 regularisation of the GD objective, (l2/2)||w||^2 (training time)")

    def _validate(self) -> None:
        if self.period < 1:
            raise self._bad("period", ">= 1")
        if self.init < 0:
            raise self._bad("init", ">= 0")
        if self.history < 1:
            raise self._bad("history", ">= 1")
        if self.l2 < 0:
            raise self._bad("l2", ">= 0")

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
        """Train ``model`` in place by plain GD (``cfg.lr``, ``cfg.epochs``, ``cfg.batch_size``,
        ``cfg.seed``; ``l2`` from this method) and cache the trajectory.

        The result's recipe is the GD run as SGD without momentum, with weight decay ``l2`` and
        the batch size capped at the training set's size.

        Raises:
            ConfigError: adversarial training was requested (DeltaGrad replays plain GD).
        """
        if cfg.adversarial:
            raise ConfigError(
                "deltagrad replays plain gradient descent; adversarial training is not supported"
            )
        if cfg.optimizer != "sgd" or cfg.momentum:
            logger.warning(
                "deltagrad trains with plain GD at lr %g; the recipe's optimizer %r (momentum %g) is not "
                "used",
                cfg.lr,
                cfg.optimizer,
                cfg.momentum,
            )
        n = len(train_set)
        gd = replace(
            cfg, optimizer="sgd", momentum=0.0, weight_decay=self.l2, batch_size=min(cfg.batch_size, n)
        )
        weights, grads = self._descend(model, train_set, gd, torch.device(device), progress)
        state = {
            "method": "deltagrad",
            "version": STATE_VERSION,
            "n": n,
            "lr": float(gd.lr),
            "l2": float(self.l2),
            "batch_size": gd.batch_size,
            "epochs": int(gd.epochs),
            "seed": int(gd.seed),
            "train_config": gd.to_dict(),
            "fingerprints": sample_fingerprints(train_set.x, train_set.y),
            "removed": torch.zeros(n, dtype=torch.bool),
            "weights": weights,
            "grads": grads,
        }
        return StatefulTraining(model=model, state=state, recipe=gd, arch=arch)

    def _descend(
        self,
        model: nn.Module,
        train_set: TensorSet,
        gd: TrainConfig,
        dev: torch.device,
        progress: ProgressFn | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run GD on ``model`` in place (in eval mode, so every gradient is deterministic); returns
        every iterate ``(T + 1, d)`` and gradient ``(T, d)``. ``model`` ends in eval mode."""
        model.to(dev)
        with evaluation_mode(model):
            obj = _Objective(model)
            schedule = batch_schedule(len(train_set), gd.batch_size, gd.epochs, gd.seed)
            x, y = train_set.x.to(dev), train_set.y.to(dev)
            w = parameters_to_vector(model.parameters()).detach().clone()
            ws, gs = [w.cpu().clone()], []
            for t, batch in enumerate(schedule):
                b = batch.to(dev)
                g = obj.grad_sum(w, x[b], y[b]) / len(b) + self.l2 * w
                gs.append(g.cpu().clone())
                w = w - gd.lr * g
                ws.append(w.cpu().clone())
                if progress is not None:
                    progress(t + 1, len(schedule))
            vector_to_parameters(w, model.parameters())
        model.eval()
        return torch.stack(ws), torch.stack(gs)

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
        assert data.retain_x is not None and data.retain_y is not None
        theta = parameters_to_vector(model.parameters()).detach().cpu()
        if theta.shape != state["weights"][-1].shape or not torch.equal(theta, state["weights"][-1]):
            raise ModelError(
                "method 'deltagrad': the model differs from the last cached iterate; pass the model saved "
                "with "
                "this state"
            )
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ModelError("method 'deltagrad' supports models without BatchNorm (e.g. logreg, mlp)")
        located = locate_forget(data, state["fingerprints"], state["removed"])
        deleted = located.indices
        n = int(state["n"])
        alive = np.flatnonzero(~state["removed"].numpy().astype(bool))
        keep = np.setdiff1d(alive, deleted)
        rows = rows_for(keep, state["fingerprints"], data.retain_x, data.retain_y)
        x = torch.zeros((n, *data.forget_x.shape[1:]), dtype=data.forget_x.dtype)
        y = torch.zeros(n, dtype=torch.long)
        x[torch.from_numpy(keep)] = data.retain_x[rows].to(x.dtype)
        y[torch.from_numpy(keep)] = data.retain_y[rows]
        frows = rows_for(deleted, state["fingerprints"], data.forget_x, data.forget_y, role="forget")
        x[torch.from_numpy(deleted)] = data.forget_x[frows].to(x.dtype)
        y[torch.from_numpy(deleted)] = data.forget_y[frows]
        total = len(state["grads"])
        progress.add_total(total)
        with evaluation_mode(model):
            result = deltagrad_replay(
                model,
                state,
                x.to(next(model.parameters()).dtype),
                y,
                deleted=deleted,
                period=self.period,
                init=self.init,
                history=self.history,
                device=device,
                progress=progress.step,
            )
        vector_to_parameters(result.weights[-1].to(device), model.parameters())
        progress.finish()
        if len(deleted) != len(data.forget_y):
            logger.info(
                "deltagrad: %d training samples matched %d forget samples", len(deleted), len(data.forget_y)
            )
        notes = [
            f"replayed {total} GD steps: {result.exact_steps} exact, {result.approx_steps} "
            "L-BFGS-approximated "
            f"(T0={self.period}, j0={self.init}, m={self.history}); deleted {len(deleted)} of {len(alive)} "
            "samples",
        ]
        new_state = dict(state)
        new_state.update(removed=mark_removed(state, deleted), weights=result.weights, grads=result.grads)
        return RunResult(model=model, touched=("forget", "retain"), notes=tuple(notes)), new_state
