"""Robust accuracy of a model under one attack: ACC, R-ACC and Gap = ACC - R-ACC.

``evaluate_attack`` is the one place where adversarial inputs are made and judged, whatever the
back-end (``attacks.backends``); ``adversarial_examples`` and ``robust_accuracy`` are its two
views, and ``unlearn_audit.robustness.measure_robustness`` builds on ``adversarial_examples``.
Every run is guarded (``attack_guard``, ``seeded``): the caller's model, tensors and random
states are as they were afterwards, so an audit can attack a model and keep using it.

Example::

    >>> res = robust_accuracy(model, x, y, AttackSpec.pgd(0.3, 0.01, 40), num_classes=10)
    >>> res.clean_accuracy, res.robust_accuracy, res.gap
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from attacks.backends import check_run, make_attack
from attacks.pgd import project
from attacks.spec import AttackSpec, check_inputs
from unlearn_audit.errors import ModelError
from unlearn_audit.torchutil import kept_modes, predict_labels

__all__ = [
    "AttackOutcome",
    "FloatLogits",
    "RobustResult",
    "adversarial_examples",
    "as_float_logits",
    "attack_guard",
    "batches",
    "evaluate_attack",
    "predict_labels",
    "robust_accuracy",
    "seeded",
    "share_of",
]

logger = logging.getLogger(__name__)

# Slack when checking that a back-end's output lies in the threat model (float32 rounding).
_BALL_TOL = 1e-6


@dataclass(frozen=True)
class RobustResult:
    """Clean and robust accuracy of one model under one attack.

    ``robust_accuracy`` counts an example only if it is classified correctly both clean and
    adversarially, so ``robust_accuracy <= clean_accuracy`` and ``gap = clean - robust >= 0``.
    ``adversarial_accuracy`` is the plain accuracy on the adversarial inputs (it ignores the clean
    prediction); above ``clean_accuracy`` it signals a broken attack or a randomised model.
    Accuracies are fractions in [0, 1].
    """

    attack: str
    label: str
    backend: str
    norm: str
    eps: float
    alpha: float | None
    steps: int
    random_start: bool
    n: int
    clean_accuracy: float
    robust_accuracy: float
    gap: float
    adversarial_accuracy: float
    seconds: float
    seed: int
    device: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AttackOutcome:
    """One attack run with its per-example outcomes (CPU bool tensors), for checks that need them."""

    result: RobustResult
    clean_correct: Tensor
    adversarial_correct: Tensor

    @property
    def robust_correct(self) -> Tensor:
        """Correct both clean and under attack: the examples R-ACC counts."""
        return self.clean_correct & self.adversarial_correct

    def subset(self, index: Tensor) -> AttackOutcome:
        """The outcome on the examples at ``index`` only, its accuracies recomputed on them."""
        clean, adv = self.clean_correct[index], self.adversarial_correct[index]
        acc, racc = share_of(clean), share_of(clean & adv)
        result = replace(
            self.result,
            n=int(clean.shape[0]),
            clean_accuracy=acc,
            robust_accuracy=racc,
            gap=acc - racc,
            adversarial_accuracy=share_of(adv),
        )
        return AttackOutcome(result=result, clean_correct=clean, adversarial_correct=adv)


@dataclass(frozen=True, kw_only=True)
class _Run:
    """How one attack runs (checked): back-end, class count, batching, device, seed."""

    backend: str
    num_classes: int
    batch_size: int
    device: torch.device
    seed: int
    early_stop: bool

    @classmethod
    def checked(
        cls,
        spec: AttackSpec,
        x: Tensor,
        y: Tensor,
        *,
        backend: str,
        num_classes: int,
        batch_size: int,
        device: str | torch.device,
        seed: int,
        early_stop: bool,
    ) -> _Run:
        """Settings after the checks of ``check_run`` and ``check_inputs`` (fail before attacking)."""
        backend = check_run(spec, backend, num_classes, batch_size)
        check_inputs(x, y, num_classes)
        return cls(
            backend=backend,
            num_classes=num_classes,
            batch_size=batch_size,
            device=torch.device(device),
            seed=seed,
            early_stop=early_stop,
        )


class FloatLogits(nn.Module):
    """``model`` with its logits cast to float: attacks need a loss to differentiate and a margin.

    A supplied model may return integer or boolean scores (a quantised head, a one-hot vote);
    cross-entropy and the random search's margin refuse those, and the cast keeps their order,
    so the attacks see the same decisions. Such outputs carry no gradient, which the masking
    checks then report. An output that is not an ``N x K`` tensor is refused with a
    ``ModelError`` naming the model's class.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ModelError(
                f"model {type(self.model).__name__} must return logits of shape "
                f"({x.shape[0]}, num_classes) for a batch of {x.shape[0]}; got {got}"
            )
        return out if out.is_floating_point() else out.float()


def as_float_logits(model: nn.Module) -> nn.Module:
    """``model`` wrapped in ``FloatLogits`` (once: a wrapped model is returned as it is)."""
    return model if isinstance(model, FloatLogits) else FloatLogits(model)


@contextlib.contextmanager
def attack_guard(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run an attack on ``model`` in eval mode on ``device``, then undo every side effect.

    Saved and restored in ``finally``: the train/eval flag of every submodule, each parameter's
    ``requires_grad`` and ``.grad`` (libraries call ``zero_grad()`` or ``backward()``), and the
    model's device. Parameters are frozen during the attack: gradients flow to the input only,
    which is also faster.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    home = params[0].device if params else None
    with kept_modes(model):
        try:
            if home is not None and home != device:
                model.to(device)
            model.eval()
            for p in params:
                p.requires_grad_(False)
            yield
        finally:
            if home is not None and home != device:
                model.to(home)
            for p, flag, grad in zip(params, flags, grads, strict=True):
                p.requires_grad_(flag)
                p.grad = grad


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (and NumPy, for ART) for the block, restoring the caller's RNG states after."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            yield
    finally:
        np.random.set_state(np_state)


def batches(x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` in batches on ``device``, detached; labels as int64."""
    for i in range(0, x.shape[0], batch_size):
        yield (
            x[i : i + batch_size].detach().to(device),
            y[i : i + batch_size].detach().to(device=device, dtype=torch.long),
        )


def _perturb(model: nn.Module, x: Tensor, y: Tensor, spec: AttackSpec, run: _Run) -> tuple[Tensor, list[str]]:
    """Adversarial inputs for all of ``x`` (CPU tensor) and any notes; the model is already guarded.

    Whatever a back-end returns is projected onto the threat model (ART's AutoAttack accepts a
    relative 1e-4 overshoot, DeepFool overshoots by design); a note says how many needed it.
    """
    n = x.shape[0]
    if spec.eps == 0.0 or n == 0:
        return x.detach().cpu().clone(), []
    with seeded(run.seed, run.device):
        attack = make_attack(
            model,
            spec,
            run.backend,
            num_classes=run.num_classes,
            input_shape=tuple(x.shape[1:]),
            batch_size=run.batch_size,
            device=run.device,
            seed=run.seed,
            early_stop=run.early_stop,
        )
        notes = list(attack.notes)
        chunks = []
        outside = 0
        for xb, yb in batches(x, y, run.batch_size, run.device):
            adv = attack(xb, yb).detach().to(device=run.device, dtype=xb.dtype)
            if adv.shape != xb.shape:
                raise RuntimeError(
                    f"backend {run.backend!r} returned shape {tuple(adv.shape)} "
                    f"for inputs of shape {tuple(xb.shape)}"
                )
            projected = project(adv, xb, spec.eps, spec.norm)
            outside += int(((projected - adv).flatten(1).abs().amax(dim=1) > _BALL_TOL).sum())
            chunks.append(projected.cpu())
    if outside:
        notes.append(
            f"backend {run.backend!r} returned {outside} of {n} examples outside the {spec.norm} "
            f"ball of radius {spec.eps:.4g} or outside [0, 1]; they were projected back"
        )
    return torch.cat(chunks), notes


def share_of(mask: Tensor) -> float:
    """The share of True entries of a per-example mask: an accuracy; NaN when there are no examples."""
    return float(mask.float().mean()) if len(mask) else float("nan")


def evaluate_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    backend: str = "torchattacks",
    num_classes: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    early_stop: bool = False,
) -> AttackOutcome:
    """``robust_accuracy`` together with the per-example outcomes; arguments as there."""
    run = _Run.checked(
        spec,
        x,
        y,
        backend=backend,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        seed=seed,
        early_stop=early_stop,
    )
    t0 = time.perf_counter()
    y_cpu = y.detach().cpu().long()
    model = as_float_logits(model)
    with attack_guard(model, run.device):
        clean_ok = predict_labels(model, x, batch_size, run.device) == y_cpu
        x_adv, notes = _perturb(model, x, y_cpu, spec, run)
        adv_ok = predict_labels(model, x_adv, batch_size, run.device) == y_cpu
    seconds = time.perf_counter() - t0
    clean_acc, robust_acc = share_of(clean_ok), share_of(clean_ok & adv_ok)
    result = RobustResult(
        attack=spec.name,
        label=spec.label,
        backend=run.backend,
        norm=spec.norm,
        eps=float(spec.eps),
        alpha=spec.step_size,
        steps=spec.steps,
        random_start=spec.uses_random_start,
        n=int(x.shape[0]),
        clean_accuracy=clean_acc,
        robust_accuracy=robust_acc,
        gap=clean_acc - robust_acc,
        adversarial_accuracy=share_of(adv_ok),
        seconds=seconds,
        seed=seed,
        device=str(run.device),
        warnings=tuple(notes),
    )
    logger.info(
        "%s [%s]: clean %.4f robust %.4f gap %.4f (n=%d, %.2fs)",
        spec.label,
        run.backend,
        clean_acc,
        robust_acc,
        clean_acc - robust_acc,
        result.n,
        seconds,
    )
    for note in notes:
        logger.warning("%s [%s]: %s", spec.label, run.backend, note)
    return AttackOutcome(result=result, clean_correct=clean_ok, adversarial_correct=adv_ok)


def adversarial_examples(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    backend: str = "torchattacks",
    num_classes: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    early_stop: bool = False,
) -> Tensor:
    """Adversarial inputs for ``x`` under ``spec``, exactly as ``robust_accuracy`` makes them.

    Same guards as ``robust_accuracy`` (eval mode forced then restored, parameter gradients and
    RNG states preserved, inputs untouched). The output is always inside the threat model:
    projected onto the eps ball around ``x`` and onto [0, 1].

    Returns:
        CPU tensor shaped like ``x``.
    """
    run = _Run.checked(
        spec,
        x,
        y,
        backend=backend,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        seed=seed,
        early_stop=early_stop,
    )
    model = as_float_logits(model)
    with attack_guard(model, run.device):
        x_adv, _ = _perturb(model, x, y.detach().cpu().long(), spec, run)
    return x_adv


def robust_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    backend: str = "torchattacks",
    num_classes: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    early_stop: bool = False,
) -> RobustResult:
    """Clean accuracy, robust accuracy and their gap under one attack.

    An example counts as robust only if it is classified correctly both clean and on its
    adversarial version, so R-ACC <= ACC by construction. Every example is attacked
    (also the misclassified ones) so that ``adversarial_accuracy`` is available as a sanity value.

    Backends:
        - ``native``: ``fgsm_perturb`` / ``pgd_perturb`` of ``attacks.pgd`` (no AutoAttack).
        - ``torchattacks`` (default): FGSM, FFGSM (FGSM-RS), PGD, PGDL2 and AutoAttack 'standard'
          assembled from APGD-CE, APGD-T, FAB-T and Square with ``steps`` iterations and the top
          ``min(K, 10) - 1`` targets (torchattacks' own ``AutoAttack`` class uses 10 iterations
          and needs ``n_classes``; it would assume 10 classes).
        - ``art``: IBM ART ``PyTorchClassifier(clip_values=(0, 1))`` with ``FastGradientMethod``,
          ``ProjectedGradientDescent`` (``num_random_init`` = 1 with a random start) or ART's
          ``AutoAttack``. Useful as an independent cross-check; slower.

    Side effects: none visible. The model runs in eval mode on ``device`` and every submodule's
    previous mode, each parameter's ``requires_grad`` / ``.grad`` and its device are restored in
    ``finally``; torch's and NumPy's global RNG states are restored; ``x`` and ``y`` are not
    mutated. Results are seeded by ``seed``.

    Args:
        model: returns logits ``N x K``; normalisation inside (integer or boolean scores are
            cast to float, see ``FloatLogits``).
        x: ``N x C x H x W`` float in [0, 1] (any device; batches are moved to ``device``).
        y: ``N`` class indices in ``[0, num_classes)``.
        spec: the attack (see ``AttackSpec``; per-family defaults in ``attacks.threat``).
        backend: ``"native"``, ``"torchattacks"`` (default) or ``"art"``.
        num_classes: K, the number of classes (required: AutoAttack's target count depends on it).
        batch_size: examples per attack batch (default 256).
        device: where the model and batches run (default ``"cpu"``).
        seed: seed of random starts and of AutoAttack (default 0).
        early_stop: native PGD only: freeze each example at its first fooling iterate (never
            weaker than plain PGD, much cheaper on models that are not robust).

    Raises:
        ConfigError: unknown backend, bad spec, ``autoattack`` with ``native``, bad num_classes.
        DataError: ``x`` not float in [0, 1], labels out of range or shapes inconsistent.
    """
    return evaluate_attack(
        model,
        x,
        y,
        spec,
        backend=backend,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        seed=seed,
        early_stop=early_stop,
    ).result
