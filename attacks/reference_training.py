"""Reference models for LiRA-style attacks: R models of one architecture that differ only in their seed.

:func:`train_reference_models` trains them one after another (``"loop"``) or all at once
with ``torch.func.vmap`` (``"vmap"``), which is much faster for small models and gives the
same models up to floating-point rounding; :func:`resolve_strategy` says which one a model
allows, and :func:`benchmark_strategies` times both.

Example::

    ref_models = train_reference_models(make_mlp, x_retain, y_retain, seeds=range(8), epochs=20)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from attacks._torch import check_inputs, check_positive_int, resolve_device
from unlearn_audit.errors import ConfigError, DataError

__all__ = [
    "Strategy",
    "StrategyBenchmark",
    "benchmark_strategies",
    "resolve_strategy",
    "train_reference_models",
]

logger = logging.getLogger(__name__)

Strategy = Literal["auto", "vmap", "loop"]


def _has_running_stats(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats for m in model.modules()
    )


def _has_dropout(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def resolve_strategy(model: nn.Module, strategy: Strategy) -> Literal["vmap", "loop"]:
    """The training strategy actually used for ``model`` ("auto" resolved).

    ``auto`` picks ``vmap`` unless the model has normalisation layers with running
    statistics (BatchNorm, InstanceNorm with ``track_running_stats``), whose buffers change
    during training and cannot be updated under vmap, or active dropout, whose random masks
    under vmap differ from the loop's (the models would train correctly but not reproduce
    the loop strategy).

    Raises:
        ConfigError: unknown ``strategy``, or ``"vmap"`` for a model with running statistics.
    """
    if strategy not in ("auto", "vmap", "loop"):
        raise ConfigError(f"strategy must be 'auto', 'vmap' or 'loop', got {strategy!r}")
    if strategy == "loop":
        return "loop"
    if _has_running_stats(model):
        if strategy == "vmap":
            raise ConfigError(
                f"strategy='vmap' cannot train {type(model).__name__}: it has normalisation layers with "
                "running statistics (e.g. BatchNorm); use strategy='loop' or 'auto'"
            )
        return "loop"
    if strategy == "auto" and _has_dropout(model):
        return "loop"
    return "vmap"


def _seeded_model(make_model: Callable[[], nn.Module], seed: int, device: torch.device) -> nn.Module:
    # fork_rng: seeding for the initialisation must not disturb the caller's global RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"make_model must return a torch.nn.Module, got {type(model).__name__}")
    return model.to(device)


def _batch_order(n: int, seed: int, epochs: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen) for _ in range(epochs)]


def _check_training_args(
    x: torch.Tensor,
    y: torch.Tensor,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
) -> list[int]:
    check_inputs(x, min_dims=2)
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise DataError(f"y must be a tensor of shape ({x.shape[0]},) to match x, got {shape}")
    if y.dtype.is_floating_point or y.dtype == torch.bool or y.dtype.is_complex:
        raise DataError(f"y must hold integer class labels, got dtype {y.dtype}")
    if x.shape[0] == 0:
        raise DataError("x must hold at least one training example, got 0")
    seed_list = [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds must name at least one seed, got an empty sequence")
    if len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds must be distinct (equal seeds give identical models), got {seed_list}")
    check_positive_int("epochs", epochs)
    check_positive_int("batch_size", batch_size)
    if not np.isfinite(lr) or lr <= 0:
        raise ConfigError(f"lr must be a positive number, got {lr!r}")
    if not np.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    return seed_list


@dataclass(frozen=True)
class _Recipe:
    """The checked arguments of :func:`train_reference_models`, shared by both strategies.

    ``x`` and ``y`` (long) are already on ``device``.
    """

    make_model: Callable[[], nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    seeds: list[int]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    device: torch.device
    progress: Callable[[int, int], None] | None
    precision: _Precision

    def new_model(self, seed: int) -> nn.Module:
        """The untrained model of ``seed`` on ``device``, in train mode."""
        model = _seeded_model(self.make_model, seed, self.device)
        model.train()
        return model

    def optimizer(self, params: Sequence[torch.Tensor]) -> torch.optim.Optimizer:
        """Adam with the recipe's learning rate and weight decay."""
        return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)

    def batches(self) -> list[slice]:
        """Positions of the batches in an epoch's permutation; the last one may be smaller."""
        n = self.x.shape[0]
        return [slice(start, start + self.batch_size) for start in range(0, n, self.batch_size)]

    def report(self, done: int) -> None:
        """``progress(done, R * epochs)`` in model-epochs, if a callback was given."""
        if self.progress is not None:
            self.progress(done, len(self.seeds) * self.epochs)


class _Precision:
    """Full precision, or mixed precision: forward and loss under ``torch.autocast`` (bfloat16
    where the device has it, else float16 with a gradient scaler), parameters and Adam's state
    in float32."""

    def __init__(self, device: torch.device, mixed: bool) -> None:
        self.device_type = device.type
        self.dtype: torch.dtype | None = None
        self.scaler = None
        if mixed:
            bf16 = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
            self.dtype = torch.bfloat16 if bf16 else torch.float16
            if not bf16:
                self.scaler = torch.amp.GradScaler(device.type)

    def forward(self):
        """The context the forward pass and loss run in."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """One Adam step on ``loss`` (scaled when float16 needs it)."""
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(opt)
        self.scaler.update()


def _train_loop(recipe: _Recipe) -> list[nn.Module]:
    n, epochs = recipe.x.shape[0], recipe.epochs
    models = []
    for r, seed in enumerate(recipe.seeds):
        model = recipe.new_model(seed)
        opt = recipe.optimizer(list(model.parameters()))
        for e, perm in enumerate(_batch_order(n, seed, epochs)):
            perm = perm.to(recipe.device)
            for batch in recipe.batches():
                idx = perm[batch]
                with recipe.precision.forward():
                    loss = F.cross_entropy(model(recipe.x[idx]), recipe.y[idx])
                recipe.precision.step(opt, loss)
            logger.debug(
                "reference model %d (seed %d) epoch %d: last batch loss %.4f", r, seed, e + 1, loss.item()
            )
            recipe.report(r * epochs + e + 1)
        models.append(model.eval())
    return models


def _train_vmap(recipe: _Recipe) -> list[nn.Module]:
    n, n_models = recipe.x.shape[0], len(recipe.seeds)
    models = [recipe.new_model(seed) for seed in recipe.seeds]
    # stack_module_state returns fresh leaf tensors with a leading model axis (R, ...);
    # Adam is element-wise, so one optimiser over them is R independent optimisers.
    params, buffers = stack_module_state(models)
    skeleton = copy.deepcopy(models[0]).to("meta")
    skeleton.train()
    randomness = "different" if _has_dropout(skeleton) else "error"
    if randomness == "different":
        logger.warning(
            "vmap training with dropout: each model draws its own masks, which differ from the "
            "loop strategy's; the models are valid but not identical to strategy='loop'"
        )

    def loss_one(
        p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(functional_call(skeleton, (p, b), (xb,)), yb)

    batched_loss = vmap(loss_one, in_dims=(0, 0, 0, 0), randomness=randomness)
    opt = recipe.optimizer(list(params.values()))
    orders = [_batch_order(n, seed, recipe.epochs) for seed in recipe.seeds]
    for e in range(recipe.epochs):
        perms = torch.stack([orders[r][e] for r in range(n_models)]).to(recipe.device)  # (R, n)
        for batch in recipe.batches():
            idx = perms[:, batch]  # (R, b): each model its own batch
            with recipe.precision.forward():
                losses = batched_loss(params, buffers, recipe.x[idx], recipe.y[idx])
            # Sum, not mean: each model's gradient is then exactly its own batch-mean gradient.
            recipe.precision.step(opt, losses.float().sum())
        logger.debug("vmap epoch %d: last batch losses %s", e + 1, losses.detach().cpu().numpy())
        recipe.report((e + 1) * n_models)
    with torch.no_grad():
        for r, model in enumerate(models):
            # Copy by name (not load_state_dict): handles tied parameters and non-persistent buffers.
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                tensor.copy_((params[name] if name in params else buffers[name])[r])
            model.eval()
    return models


def train_reference_models(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
    strategy: Strategy = "auto",
    progress: Callable[[int, int], None] | None = None,
    mixed_precision: bool = False,
) -> list[nn.Module]:
    """Train R reference models of one architecture that differ only in their seed.

    Model r is built as ``torch.manual_seed(seeds[r]); make_model()`` (inside
    ``torch.random.fork_rng``, so the caller's global RNG is untouched) and trained with
    Adam on cross-entropy for ``epochs`` passes over (x, y); the batch order of every epoch
    is ``torch.randperm(N, generator=torch.Generator().manual_seed(seeds[r]))``, drawn
    epoch after epoch from that one generator. No augmentation.

    Strategies:

    * ``"loop"``: the models one after another, each with its own ``torch.optim.Adam``.
    * ``"vmap"``: all R at once with ``torch.func``: parameters stacked by
      ``stack_module_state``, the per-model forward and loss vmapped over
      (params, x_batch_r, y_batch_r), one Adam over the stacked leaves. Same initialisation,
      same batches, same element-wise updates: the models equal the loop's up to
      floating-point rounding (tested). Not possible with running-statistics buffers.
    * ``"auto"`` (default): see :func:`resolve_strategy`.

    Args:
        make_model: zero-argument factory returning a fresh, untrained ``nn.Module``.
        x: (N, ...) training inputs, in the form the model expects.
        y: (N,) integer class labels.
        seeds: R >= 1 distinct integer seeds, one per model.
        epochs: passes over the data, >= 1.
        batch_size: examples per step (default 128); the last batch of an epoch may be smaller.
        lr: Adam learning rate (default 1e-3).
        weight_decay: Adam L2 penalty (default 0.0).
        device: where the models and data live during training (default ``"cpu"``).
        strategy: ``"auto"`` | ``"vmap"`` | ``"loop"``.
        progress: optional callback ``progress(done, total)`` in model-epochs,
            ``total = R * epochs``.
        mixed_precision: forward and loss in bfloat16 (float16 with a gradient scaler on GPUs
            without it), weights and Adam state in float32; faster on GPUs, other models (off).

    Returns:
        R trained models on ``device``, in eval mode, in the order of ``seeds``.

    Raises:
        DataError: x/y shapes or label dtype.
        ConfigError: empty or repeated seeds, non-positive epochs/batch size/lr, negative
            weight decay, unknown strategy, vmap on a model with running statistics.
    """
    seed_list = _check_training_args(x, y, seeds, epochs, batch_size, lr, weight_decay)
    dev = resolve_device(device)
    # The strategy depends only on the architecture: a parameter-free copy on "meta" shows it.
    chosen = resolve_strategy(_seeded_model(make_model, seed_list[0], torch.device("meta")), strategy)
    logger.info("training %d reference models (%s, %d epochs) on %s", len(seed_list), chosen, epochs, dev)
    recipe = _Recipe(
        make_model=make_model,
        x=x.to(dev),
        y=y.to(device=dev, dtype=torch.long),
        seeds=seed_list,
        epochs=epochs,
        batch_size=batch_size,
        lr=float(lr),
        weight_decay=float(weight_decay),
        device=dev,
        progress=progress,
        precision=_Precision(dev, mixed_precision),
    )
    return _train_vmap(recipe) if chosen == "vmap" else _train_loop(recipe)


@dataclass(frozen=True)
class StrategyBenchmark:
    """Wall time of :func:`train_reference_models` under the loop and vmap strategies.

    ``max_abs_param_diff`` is the largest absolute difference between any parameter of the
    loop-trained and the vmap-trained model with the same seed (should be float rounding).
    """

    num_models: int
    num_examples: int
    epochs: int
    batch_size: int
    device: str
    loop_seconds: float
    vmap_seconds: float
    speedup: float
    max_abs_param_diff: float


def _max_param_diff(models_a: list[nn.Module], models_b: list[nn.Module]) -> float:
    """Largest absolute difference between any floating-point entry of paired models' state_dicts."""
    diff = 0.0
    for m_a, m_b in zip(models_a, models_b, strict=True):
        sd_b = m_b.state_dict()
        for k, v in m_a.state_dict().items():
            if v.is_floating_point():
                diff = max(diff, float((v - sd_b[k]).abs().max()))
    return diff


def benchmark_strategies(
    make_model: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seeds: Sequence[int],
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    device: torch.device | str = "cpu",
) -> StrategyBenchmark:
    """Train the same R models with ``strategy="loop"`` and ``strategy="vmap"`` and time both.

    Arguments as in :func:`train_reference_models`. ``speedup = loop_seconds / vmap_seconds``.
    CUDA work is synchronised before each clock read.

    Raises:
        ConfigError: as :func:`train_reference_models`, including a model vmap cannot train.
    """
    dev = torch.device(device)
    kwargs = dict(
        seeds=seeds, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, device=dev
    )
    times: dict[str, float] = {}
    trained: dict[str, list[nn.Module]] = {}
    for strategy in ("loop", "vmap"):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        start = time.perf_counter()
        trained[strategy] = train_reference_models(make_model, x, y, strategy=strategy, **kwargs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times[strategy] = time.perf_counter() - start
    return StrategyBenchmark(
        num_models=len(trained["loop"]),
        num_examples=int(x.shape[0]),
        epochs=epochs,
        batch_size=batch_size,
        device=str(dev),
        loop_seconds=times["loop"],
        vmap_seconds=times["vmap"],
        speedup=times["loop"] / times["vmap"] if times["vmap"] > 0 else float("inf"),
        max_abs_param_diff=_max_param_diff(trained["loop"], trained["vmap"]),
    )
