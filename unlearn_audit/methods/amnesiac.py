"""Amnesiac unlearning (Graves, Nagisetty, Ganesh, AAAI 2021) and its per-sample variant.

Both record, while the original model trains, what the *sensitive* samples contributed, and
unlearn by taking it back out of the weights, optionally followed by a few "repair" epochs on
the retain set. The user marks the sensitive samples at training time with the forget spec:

    unlearn-audit train --data mnist-5k --forget class:3:100 --for-method amnesiac --out orig.pt
    unlearn-audit unlearn amnesiac --model orig.pt --data mnist-5k --forget class:3:100 --out u.pt

Only samples marked at training time can be unlearned later (any subset of them, over several
requests). Both are approximate: later updates depended on the ones taken out.

* ``amnesiac`` (``lmgraves/AmnesiacML``): for every batch that contains a sensitive sample the
  parameter update ``delta_b = theta_after - theta_before`` is stored (any optimizer, also
  adversarial training). Unlearning subtracts the updates of every batch that holds a forget
  sample: ``theta <- theta - sum_b delta_b`` (summed in float64). Memory: one parameter vector
  per recorded batch.
* ``amnesiac_per_sample`` (Marincione 2024, seed 003): for every sensitive sample ``i`` the sum
  of its own contributions to the weights, ``rec_i = sum_t lr / |B_t| * c_t * grad l_i(theta_t)``,
  with per-sample gradients from ``torch.func`` and ``c_t = (1 - mu^(T - t)) / (1 - mu)`` the
  total effect of a gradient on the final weights under SGD momentum ``mu`` over the ``T - t``
  remaining steps (1 without momentum). Unlearning adds them back: ``theta <- theta + sum_i rec_i``.
  For plain SGD without weight decay the records of all samples add up exactly to
  ``theta_0 - theta_T``. With dropout, a sample's recorded gradient uses its own dropout mask,
  not the one of the batch step. Needs SGD training (the recipe ``train --for-method`` uses) and
  a model without BatchNorm (per-sample gradients are undefined when a batch's statistics mix
  samples). Memory: one parameter vector per sensitive sample, stored as float32, float16, or
  sparsely as its top-k entries by magnitude (float16 values, int32 positions).

Weight decay is a pull towards zero that belongs to no sample: the per-sample records leave it
out. Buffers (BatchNorm running statistics) are not recorded by either variant.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from unlearn_audit.archs import ArchSpec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, ModelError
from unlearn_audit.methods._common import Progress, fit, make_optimizer, n_batches, trainable
from unlearn_audit.methods._state import (
    STATE_VERSION,
    RecipeRule,
    StatefulMethod,
    StatefulTraining,
    batch_schedule,
    locate_forget,
    mark_removed,
    sample_fingerprints,
    state_bytes,
)
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, param
from unlearn_audit.methods.registry import register_method
from unlearn_audit.models import fingerprint_module
from unlearn_audit.training import TrainConfig
from unlearn_audit.training import make_optimizer as make_train_optimizer

__all__ = ["Amnesiac", "AmnesiacPerSample", "sensitive_indices"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def sensitive_indices(roles: object | None, sensitive: object | None, n: int) -> np.ndarray:
    """The sorted training indices marked sensitive: ``sensitive`` if given, else ``roles.forget_indices``.

    Raises:
        ConfigError: none marked, or indices out of ``[0, n)``.
    """
    idx = sensitive if sensitive is not None else getattr(roles, "forget_indices", None)
    if idx is None:
        raise ConfigError(
            "amnesiac training needs the sensitive samples: pass `forget` SPEC when training with "
            "`for_method` amnesiac (those samples can be unlearned later)",
            param=("forget", "for_method"),
        )
    arr = np.unique(np.asarray(torch.as_tensor(idx).cpu().numpy(), dtype=np.int64))
    if arr.size == 0 or int(arr.min()) < 0 or int(arr.max()) >= n:
        raise ConfigError(
            f"sensitive indices must be a non-empty subset of [0, {n}), got {arr.size} in "
            f"[{arr.min() if arr.size else '-'}, {arr.max() if arr.size else '-'}]"
        )
    return arr


def _adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator):
    from unlearn_audit.training import _adversarial_batch

    return _adversarial_batch(model, x, y, cfg, gen)


def _check_model(model: nn.Module, state: dict, name: str) -> None:
    if fingerprint_module(model) != state["model_sha256"]:
        raise ModelError(
            f"method {name!r}: the model differs from the one the state was recorded with; pass the model "
            "saved "
            "with this state"
        )


def _training_batches(
    model: nn.Module,
    train_set: TensorSet,
    cfg: TrainConfig,
    schedule: list[torch.Tensor],
    device: torch.device,
    progress: ProgressFn | None,
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The batches of :func:`unlearn_audit.training.train_model` with ``cfg``, in its order.

    ``schedule`` is ``batch_schedule(len(train_set), cfg.batch_size, cfg.epochs, cfg.seed)``.
    Yields ``(step, idx, x_in, y)``: the global step (from 0), the batch's training indices, its
    inputs on ``device`` (adversarial ones, drawn as ``train_model`` draws them, when
    ``cfg.adversarial``) and its labels. The caller takes the optimizer step;
    ``progress(step + 1, len(schedule))`` follows it. ``model`` is in train mode during the
    steps and in eval mode after the last one.
    """
    attack_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    model.train()
    for step, idx in enumerate(schedule):
        x = train_set.x[idx].to(device)
        y = train_set.y[idx].to(device)
        x_in = _adversarial(model, x, y, cfg, attack_gen) if cfg.adversarial else x
        yield step, idx, x_in, y
        if progress is not None:
            progress(step + 1, len(schedule))
    model.eval()


@dataclass(frozen=True)
class _AmnesiacBase(StatefulMethod):
    """Shared hyperparameters: the optional repair fine-tuning on the retain set."""

    repair_epochs: int = param(
        0, "epochs of repair fine-tuning on the retain set after the subtraction (0 = none)"
    )
    lr: float = param(1e-3, "Adam learning rate of the repair epochs")
    batch_size: int = param(64, "samples per repair step")

    def _validate(self) -> None:
        if self.repair_epochs < 0:
            raise self._bad("repair_epochs", ">= 0")

    @property
    def needs_retain(self) -> bool:
        """Only the repair epochs read the retain set."""
        return self.repair_epochs > 0

    def _missing_retain_message(self) -> str:
        return (
            f"method {self.name!r} with repair_epochs={self.repair_epochs} needs the retain set; pass "
            "`data`/`forget` or `retain_data`, or `params` repair_epochs=0"
        )

    def _sensitive_forget(self, model: nn.Module, data: UnlearnData, state: dict) -> np.ndarray:
        """The training indices of the forget samples, once ``model`` is known to be the state's
        model and every forget sample to have been marked sensitive at training time."""
        _check_model(model, state, self.name)
        forget = locate_forget(data, state["fingerprints"], state["removed"]).indices
        _require_sensitive(forget, state["sensitive"].numpy(), self.name)
        return forget

    def _take_back(
        self,
        model: nn.Module,
        data: UnlearnData,
        state: dict,
        forget: np.ndarray,
        update: torch.Tensor,
        note: str,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
        changes: dict | None = None,
    ) -> tuple[RunResult, dict]:
        """The end of a request: ``theta <- theta + update`` (in float64; one step of ``progress``),
        the optional repair epochs (Adam on the retain set), and the new state: the training
        samples ``forget`` marked removed, the new model's fingerprint and ``changes``."""
        if self.repair_epochs:
            assert data.retain_x is not None and data.retain_y is not None
            progress.add_total(self.repair_epochs * n_batches(len(data.retain_x), self.batch_size))
        progress.add_total(1)
        theta = parameters_to_vector(model.parameters()).detach().double()
        vector_to_parameters((theta + update.to(theta.device)).to(_param_dtype(model)), model.parameters())
        progress.step()
        notes = [note]
        touched: tuple[str, ...] = ("forget",)
        if self.repair_epochs:
            fit(
                model,
                data.retain_x,
                data.retain_y,
                epochs=self.repair_epochs,
                batch_size=self.batch_size,
                optimizer=make_optimizer(trainable(model), kind="adam", lr=self.lr),
                generator=generator,
                device=device,
                progress=progress,
            )
            touched = ("forget", "retain")
            notes.append(f"repaired for {self.repair_epochs} epochs on the retain set")
        progress.finish()
        model.eval()
        new_state = dict(state)
        new_state.update(
            changes or {}, removed=mark_removed(state, forget), model_sha256=fingerprint_module(model)
        )
        return RunResult(model=model, touched=touched, notes=tuple(notes)), new_state


@register_method("amnesiac")
@dataclass(frozen=True)
class Amnesiac(_AmnesiacBase):
    """Amnesiac ML (Graves et al. 2021): subtract the recorded updates of batches with forget samples.

    Train with ``unlearn-audit train --for-method amnesiac --forget SPEC``: the forget samples are
    the sensitive ones; the update of every batch holding one of them is stored (``storage``
    dtype). Defaults of the paper's MNIST notebook: repair is optional (its 1-10 epochs of Adam).

    Hyperparameters:
        storage: dtype of the stored updates, float32, float16 or bfloat16 (training time) (float32).
        repair_epochs: repair epochs on the retain set, Adam (0).
        lr: Adam learning rate of the repair (1e-3).
        batch_size: repair batch size (64).

    Reads: forget (to locate it); retain only when repairing. Approximate.
    """

    storage: Literal["float32", "float16", "bfloat16"] = param(
        "float32", "dtype of the stored batch updates (training time)"
    )

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
        """Train ``model`` in place exactly as :func:`unlearn_audit.training.train_model` does, recording
        the update of every batch that holds a sensitive sample.

        ``sensitive`` are the training indices that may be unlearned later (``train --for-method``
        passes the forget set's). The state holds ``deltas`` ``(B_rec, P)``, the global step of
        each recorded batch, and the sensitive indices each batch held.
        """
        dev = torch.device(device)
        n = len(train_set)
        marked = sensitive_indices(None, sensitive, n)
        is_sensitive = torch.zeros(n, dtype=torch.bool)
        is_sensitive[torch.from_numpy(marked)] = True
        model.to(dev)
        opt = make_train_optimizer(model.parameters(), cfg)
        schedule = batch_schedule(n, cfg.batch_size, cfg.epochs, cfg.seed)
        total = len(schedule)
        deltas: list[torch.Tensor] = []
        steps: list[int] = []
        members: list[torch.Tensor] = []
        dtype = _DTYPES[self.storage]
        for step, idx, x_in, y in _training_batches(model, train_set, cfg, schedule, dev, progress):
            loss = F.cross_entropy(model(x_in), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            hit = idx[is_sensitive[idx]]
            before = parameters_to_vector(model.parameters()).detach().clone() if hit.numel() else None
            opt.step()
            if before is not None:
                after = parameters_to_vector(model.parameters()).detach()
                deltas.append((after - before).to(device="cpu", dtype=dtype))
                steps.append(step)
                members.append(torch.sort(hit).values)
        offsets = torch.tensor([0, *np.cumsum([len(m) for m in members]).tolist()], dtype=torch.long)
        p = sum(t.numel() for t in model.parameters())
        state = {
            "method": "amnesiac",
            "version": STATE_VERSION,
            "storage": self.storage,
            "train_config": cfg.to_dict(),
            "total_steps": total,
            "fingerprints": sample_fingerprints(train_set.x, train_set.y),
            "sensitive": torch.from_numpy(marked),
            "steps": torch.tensor(steps, dtype=torch.long),
            "members": torch.cat(members) if members else torch.zeros(0, dtype=torch.long),
            "offsets": offsets,
            "deltas": torch.stack(deltas) if deltas else torch.zeros(0, p, dtype=dtype),
            "removed": torch.zeros(n, dtype=torch.bool),
            "model_sha256": fingerprint_module(model),
        }
        logger.info(
            "amnesiac: recorded %d of %d batch updates (%.1f MB)",
            len(steps),
            total,
            state_bytes(state["deltas"]) / 1e6,
        )
        return StatefulTraining(model=model, state=state, recipe=cfg, arch=arch)

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
        forget = self._sensitive_forget(model, data, state)
        offsets = state["offsets"].numpy()
        members = state["members"].numpy()
        in_forget = np.zeros(len(state["fingerprints"]), dtype=bool)
        in_forget[forget] = True
        hit = np.array(
            [bool(in_forget[members[offsets[b] : offsets[b + 1]]].any()) for b in range(len(offsets) - 1)],
            dtype=bool,
        )
        deltas = state["deltas"]
        note = (
            f"subtracted {int(hit.sum())} recorded batch updates of {int(state['total_steps'])} training "
            "steps "
            f"({100 * hit.sum() / max(1, int(state['total_steps'])):.2f}%); "
            f"{len(hit) - int(hit.sum())} remain recorded "
            f"({state_bytes(deltas[torch.from_numpy(~hit)]) / 1e6:.2f} MB)"
        )
        # the recorded batches that were subtracted are gone; their other sensitive samples stay
        # unlearnable only through the batches that remain
        keep = torch.from_numpy(~hit)
        kept_members = [members[offsets[b] : offsets[b + 1]] for b in np.flatnonzero(~hit)]
        return self._take_back(
            model,
            data,
            state,
            forget,
            -deltas[torch.from_numpy(hit)].double().sum(dim=0),
            note,
            device=device,
            generator=generator,
            progress=progress,
            changes={
                "steps": state["steps"][keep],
                "members": torch.from_numpy(np.concatenate(kept_members))
                if kept_members
                else torch.zeros(0, dtype=torch.long),
                "offsets": torch.tensor(
                    [0, *np.cumsum([len(m) for m in kept_members]).tolist()], dtype=torch.long
                ),
                "deltas": deltas[keep],
            },
        )


def _param_dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _require_sensitive(forget: np.ndarray, sensitive: np.ndarray, name: str) -> None:
    unmarked = np.setdiff1d(forget, sensitive)
    if unmarked.size:
        raise ConfigError(
            f"method {name!r}: {unmarked.size} forget samples were not marked sensitive at training time "
            f"(e.g. training index {int(unmarked[0])}); train with `for_method` {name} and a `forget` SPEC "
            "covering them",
            param=("for_method", "forget"),
        )


@register_method("amnesiac_per_sample")
@dataclass(frozen=True)
class AmnesiacPerSample(_AmnesiacBase):
    """Per-sample amnesiac (Marincione 2024): add back each forget sample's recorded SGD contributions.

    Train with ``unlearn-audit train --for-method amnesiac_per_sample --forget SPEC``: for every
    sensitive sample the sum of its own weight updates is kept (see the module doc). The method
    trains with SGD (lr 0.05 unless ``--lr`` says otherwise, momentum 0.9) and refuses Adam.

    Hyperparameters:
        storage: float32, float16 (dense) or topk (sparse: top ``topk_fraction`` entries by
            magnitude, float16 values + int32 positions) (training time) (float16).
        topk_fraction: share of the parameters kept per sample with ``storage=topk`` (0.01).
        repair_epochs, lr, batch_size: optional Adam repair on the retain set (0, 1e-3, 64).

    Reads: forget (to locate it); retain only when repairing. Approximate.
    """

    recipe_defaults: ClassVar[Mapping[str, object]] = {"lr": 0.05}
    recipe_rules: ClassVar[Mapping[str, RecipeRule]] = {
        "optimizer": RecipeRule(
            "sgd", "needs SGD training (per-sample contributions of Adam steps are not additive)"
        )
    }

    storage: Literal["float32", "float16", "topk"] = param(
        "float16", "how per-sample records are stored: float32, float16 or topk (training time)"
    )
    topk_fraction: float = param(
        0.01, "share of parameters kept per sample with storage=topk (training time)"
    )

    def _validate(self) -> None:
        super()._validate()
        if not 0 < self.topk_fraction <= 1:
            raise self._bad("topk_fraction", "in (0, 1]")

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
        """Train ``model`` in place (as ``train_model`` does) with SGD, recording per-sample contributions.

        Raises:
            ConfigError: the recipe does not use SGD.
            ModelError: the model has BatchNorm layers.
        """
        from torch.func import functional_call, grad, vmap

        if cfg.optimizer != "sgd":
            raise ConfigError(
                "amnesiac_per_sample needs SGD training (per-sample contributions of Adam steps are not "
                "additive), "
                f"got optimizer {cfg.optimizer!r}; train with optimizer sgd and a matching lr (e.g. 0.05)"
            )
        if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            raise ModelError(
                "amnesiac_per_sample needs a model without BatchNorm (per-sample gradients mix samples "
                "there); "
                "use the batch-level method 'amnesiac'"
            )
        dev = torch.device(device)
        n = len(train_set)
        marked = sensitive_indices(None, sensitive, n)
        slot = torch.full((n,), -1, dtype=torch.long)
        slot[torch.from_numpy(marked)] = torch.arange(len(marked))
        model.to(dev)
        names = [k for k, _ in model.named_parameters()]
        p = sum(t.numel() for t in model.parameters())
        records = torch.zeros(len(marked), p, dtype=torch.float32, device=dev)
        opt = make_train_optimizer(model.parameters(), cfg)
        schedule = batch_schedule(n, cfg.batch_size, cfg.epochs, cfg.seed)
        total = len(schedule)
        mu = float(cfg.momentum)

        def loss_one(params: dict, buffers: dict, xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            out = functional_call(model, (params, buffers), (xi.unsqueeze(0),))
            return F.cross_entropy(out, yi.unsqueeze(0))

        per_sample = vmap(grad(loss_one), in_dims=(None, None, 0, 0), randomness="different")
        for step, idx, x_in, y in _training_batches(model, train_set, cfg, schedule, dev, progress):
            hit = (slot[idx] >= 0).nonzero().flatten()
            if hit.numel():
                params = {k: v.detach() for k, v in model.named_parameters()}
                buffers = {k: v.detach() for k, v in model.named_buffers()}
                grads = per_sample(params, buffers, x_in[hit.to(dev)].detach(), y[hit.to(dev)])
                flat = torch.cat([grads[k].reshape(hit.numel(), -1) for k in names], dim=1)
                remaining = total - step
                c = 1.0 if mu == 0 else (1 - mu**remaining) / (1 - mu)
                records.index_add_(0, slot[idx[hit]].to(dev), flat * (cfg.lr * c / len(idx)))
            loss = F.cross_entropy(model(x_in), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        state = {
            "method": "amnesiac_per_sample",
            "version": STATE_VERSION,
            "train_config": cfg.to_dict(),
            "fingerprints": sample_fingerprints(train_set.x, train_set.y),
            "sensitive": torch.from_numpy(marked),
            "removed": torch.zeros(n, dtype=torch.bool),
            "num_params": p,
            **_compress(records.cpu(), self.storage, self.topk_fraction),
            "model_sha256": fingerprint_module(model),
        }
        return StatefulTraining(model=model, state=state, recipe=cfg, arch=arch)

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
        forget = self._sensitive_forget(model, data, state)
        sensitive = state["sensitive"].numpy()
        slots = torch.from_numpy(np.searchsorted(sensitive, forget))
        note = (
            f"added back the recorded contributions of {len(forget)} samples "
            f"({state['storage']} records, {record_bytes(state) / 1e6:.2f} MB for {len(sensitive)} "
            "sensitive samples)"
        )
        return self._take_back(
            model,
            data,
            state,
            forget,
            _records(state, slots).double().sum(dim=0),
            note,
            device=device,
            generator=generator,
            progress=progress,
        )


def _compress(records: torch.Tensor, storage: str, fraction: float) -> dict:
    if storage == "float32":
        return {"storage": storage, "records": records.float()}
    if storage == "float16":
        return {"storage": storage, "records": records.half()}
    k = max(1, math.ceil(fraction * records.shape[1]))
    positions = records.abs().topk(k, dim=1).indices
    return {
        "storage": storage,
        "values": records.gather(1, positions).half(),
        "positions": positions.to(torch.int32),
    }


def _records(state: dict, slots: torch.Tensor) -> torch.Tensor:
    """Dense float32 records ``(len(slots), P)`` of the given sensitive-sample slots."""
    if state["storage"] in ("float32", "float16"):
        return state["records"][slots].float()
    out = torch.zeros(len(slots), int(state["num_params"]), dtype=torch.float32)
    out.scatter_(1, state["positions"][slots].long(), state["values"][slots].float())
    return out


def record_bytes(state: dict) -> int:
    """Bytes the recorded updates of an amnesiac or per-sample amnesiac state occupy."""
    keys = ("deltas", "records", "values", "positions")
    return sum(state_bytes(state[k]) for k in keys if k in state)
