"""Adversarial robustness: perturbations, robust accuracy and gradient-masking checks.

Answers RQ1-RQ4 of the robustness study (is a standard / adversarially trained model robust
before and after deletion?) with three numbers per attack: clean accuracy ACC, robust accuracy
R-ACC and Gap = ACC - R-ACC.

Conventions (the RobustBench contract): inputs are float tensors ``N x C x H x W`` in [0, 1];
any normalisation lives inside the model; ``model(x)`` returns logits ``N x K``; eps is measured
in pixel units.

Contents
--------
- ``fgsm_perturb`` / ``pgd_perturb``: our own batched attacks. They are also the inner loop of
  adversarial *training*, so they never touch the model's train/eval mode (the caller decides),
  never write parameter ``.grad`` (``torch.autograd.grad`` on the input only) and never mutate
  their inputs.
- ``AttackSpec`` / ``default_attack_specs``: what to run (FGSM, PGD L-inf, PGD L2, AutoAttack).
- ``robust_accuracy``: one attack through one backend (``native``, ``torchattacks`` or ``art``)
  with eval mode forced and restored, parameter gradients preserved, seeded, batched.
- ``robustness_suite`` / ``gradient_check``: several attacks plus the sanity checks that
  AutoAttack's authors recommend against gradient masking (Croce & Hein 2020, "flags").

Example::

    >>> specs = default_attack_specs("mnist")
    >>> res = robust_accuracy(model, x, y, specs[1], num_classes=10)
    >>> res.clean_accuracy, res.robust_accuracy, res.gap
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unlearn_audit.errors import ConfigError, DataError

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "NORMS",
    "AttackSpec",
    "RobustResult",
    "SuiteResult",
    "WorstCase",
    "adversarial_examples",
    "default_attack_specs",
    "fgsm_perturb",
    "gradient_check",
    "pgd_perturb",
    "robust_accuracy",
    "robustness_suite",
]

logger = logging.getLogger(__name__)

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "pgd_l2", "autoattack")
BACKENDS: tuple[str, ...] = ("native", "torchattacks", "art")
NORMS: tuple[str, ...] = ("linf", "l2")

# Data-set families for the default threat models. Names are matched after lower-casing and
# dropping "-" and "_", so "CIFAR-10", "cifar_10" and "cifar10" are the same.
_MNIST_LIKE: tuple[str, ...] = ("mnist", "mnist5k", "digits")
_CIFAR_LIKE: tuple[str, ...] = ("cifar10", "cifar100", "svhn", "tinyimagenet", "miniimagenet")

# Slack when checking that a backend's output lies in the threat model (float32 rounding).
_BALL_TOL = 1e-6


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------


def _choice(value: str, valid: Sequence[str], what: str) -> str:
    """Return ``value`` lower-cased if it is one of ``valid``, else raise a ConfigError."""
    key = str(value).lower()
    if key in valid:
        return key
    hint = difflib.get_close_matches(key, list(valid), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"unknown {what} {value!r}; available: {', '.join(valid)}{suggestion}")


def _is_real(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_eps(eps: float, name: str = "eps") -> float:
    if not _is_real(eps) or eps < 0:
        raise ConfigError(f"{name} must be a finite number >= 0 (pixel units, inputs in [0, 1]); got {eps!r}")
    return float(eps)


def _check_alpha(alpha: float | None, name: str = "alpha") -> float | None:
    if alpha is None:
        return None
    if not _is_real(alpha) or alpha <= 0:
        raise ConfigError(f"{name} (step size) must be a finite number > 0; got {alpha!r}")
    return float(alpha)


def _check_count(value: object, name: str, minimum: int, context: str = "") -> None:
    """``value`` must be an int (not a bool) >= ``minimum``; ``context`` ends the error message."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}{context}")


def _check_xy(x: Tensor, y: Tensor, num_classes: int | None = None) -> None:
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise DataError(f"x must be a floating-point tensor in [0, 1]; got {type(x).__name__} "
                        f"{getattr(x, 'dtype', '')}")
    if x.ndim < 2:
        raise DataError(f"x must be batched (N x C x H x W); got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(f"y must be a 1-D tensor of {x.shape[0]} class indices; got "
                        f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
    if torch.is_floating_point(y) or y.dtype == torch.bool:
        raise DataError(f"y must hold integer class indices; got dtype {y.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(f"x must lie in [0, 1] (normalise inside the model); got range "
                        f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    if num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"labels must lie in [0, num_classes={num_classes}); got range [{lo}, {hi}]")


# --------------------------------------------------------------------------------------------
# Own perturbations (also used by adversarial training)
# --------------------------------------------------------------------------------------------


def _input_gradient(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
    """Gradient of the summed cross-entropy w.r.t. ``x_adv`` only; parameters' ``.grad`` untouched.

    The sum (not the mean) keeps per-example gradients independent of the batch size, so tiny
    gradients do not underflow when the batch is large. A model whose output carries no graph
    (e.g. a hard argmax) has, by definition, a zero input gradient.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x_adv), y, reduction="sum")
        if not loss.requires_grad:
            return torch.zeros_like(x_adv)
        (grad,) = torch.autograd.grad(loss, x_adv, allow_unused=True)
    return torch.zeros_like(x_adv) if grad is None else grad.detach()


def _per_example_norm(t: Tensor) -> Tensor:
    """L2 norm of each example, shaped ``N x 1 x ... x 1`` for broadcasting."""
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.ndim - 1)))


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then onto [0, 1].

    Clamping to the box after the ball projection never leaves the ball: ``x`` is in [0, 1], so
    clamping only shrinks each coordinate of the perturbation towards zero.
    """
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        scale = (eps / _per_example_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0)


def _noise(sample: Callable[..., Tensor], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``sample`` (``torch.rand`` or ``torch.randn``) shaped like ``like``, drawn from ``generator``
    (on its own device) if given, and moved to ``like``'s device."""
    if generator is None:
        return sample(like.shape, dtype=like.dtype, device=like.device)
    noise = sample(like.shape, dtype=like.dtype, device=generator.device, generator=generator)
    return noise.to(like.device)


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniformly random point of the ``norm`` ball of radius ``eps`` around ``x``, clamped to [0, 1]."""
    if norm == "linf":
        delta = (2.0 * _noise(torch.rand, x, generator) - 1.0) * eps
    else:
        # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
        direction = _noise(torch.randn, x, generator)
        direction = direction / _per_example_norm(direction).clamp_min(1e-12)
        d = x[0].numel()
        u = _noise(torch.rand, x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)), generator)
        delta = direction * eps * u.pow(1.0 / d)
    return (x + delta).clamp(0.0, 1.0)


def _ascent_direction(grad: Tensor, norm: str) -> Tensor:
    """The PGD step direction: ``sign(grad)`` for L-inf, ``grad / ||grad||_2`` per example for L2."""
    if norm == "linf":
        return grad.sign()
    return grad / _per_example_norm(grad).clamp_min(1e-12)


def fgsm_perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    random_start: bool = False,
    alpha: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fast Gradient Sign Method, L-inf (Goodfellow et al. 2015), optionally with a random start.

    Without ``random_start``: ``x' = clip_[0,1](x + alpha * sign(grad_x CE(f(x), y)))`` with
    ``alpha = eps`` by default. With ``random_start`` it is FGSM-RS from Wong, Rice & Kolter 2020,
    "Fast is better than free": start at a uniform point of the eps ball, take one signed step of
    ``alpha = 1.25 * eps`` (their default), then project back to the ball and to [0, 1].

    The model's train/eval mode is NOT changed (adversarial training calls this in train mode);
    parameter ``.grad`` is not written; ``x`` and ``y`` are not mutated.

    Args:
        model: returns logits ``N x K`` for inputs in [0, 1].
        x: ``N x C x H x W`` float in [0, 1].
        y: ``N`` class indices.
        eps: L-inf radius in pixel units, >= 0.
        random_start: FGSM-RS (default False: plain FGSM).
        alpha: step size; default ``eps`` (plain) or ``1.25 * eps`` (random start).
        generator: ``torch.Generator`` for the random start (default: the global RNG).

    Returns:
        Detached adversarial inputs, same shape, dtype and device as ``x``.
    """
    eps = _check_eps(eps)
    alpha = _check_alpha(alpha)
    if alpha is None:
        alpha = 1.25 * eps if random_start else eps
    x0 = x.detach()
    if eps == 0.0:
        return x0.clone()
    x_start = _random_start(x0, eps, "linf", generator) if random_start else x0
    grad = _input_gradient(model, x_start, y)
    return _project(x_start + alpha * grad.sign(), x0, eps, "linf").detach()


def pgd_perturb(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    alpha: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    early_stop: bool = False,
) -> Tensor:
    """Projected Gradient Descent on the cross-entropy (Madry et al. 2018), L-inf or L2.

    ``x_{t+1} = Proj_{B(x, eps) ∩ [0,1]^d}(x_t + alpha * s_t)`` where ``s_t = sign(g_t)`` for
    L-inf and ``s_t = g_t / ||g_t||_2`` per example for L2, ``g_t = grad_x CE(f(x_t), y)``.
    The random start is uniform in the eps ball (then clamped to [0, 1]). Projection onto the
    ball and clamping to [0, 1] happen after every step.

    Typical settings: MNIST L-inf eps 0.3, alpha 0.01, 40 steps; CIFAR-10 L-inf eps 8/255,
    alpha 2/255, 10 steps (Madry et al.; torchattacks defaults).

    The model's train/eval mode is NOT changed (the caller decides); gradients are taken with
    ``torch.autograd.grad`` on the input only, so parameter ``.grad`` is never written; inputs
    are not mutated. Works inside ``torch.no_grad()`` blocks (gradients are re-enabled locally).

    Args:
        model: returns logits ``N x K`` for inputs in [0, 1].
        x: ``N x C x H x W`` float in [0, 1].
        y: ``N`` class indices.
        eps: radius in pixel units, >= 0.
        alpha: step size (> 0).
        steps: number of gradient steps (>= 0; 0 returns the random start, or ``x``).
        norm: ``"linf"`` or ``"l2"``.
        random_start: start from a uniform point of the ball (default True).
        generator: ``torch.Generator`` for the random start (default: the global RNG).
        early_stop: freeze an example at the first iterate the model misclassifies (as
            AutoAttack's APGD does). For evaluation: never weaker than plain PGD (a success at
            any step counts), and much cheaper on non-robust models, whose examples fall in a
            few steps. Leave it off for adversarial training.

    Returns:
        Detached adversarial inputs, same shape, dtype and device as ``x``.
    """
    eps = _check_eps(eps)
    alpha_ = _check_alpha(alpha)
    if alpha_ is None:
        raise ConfigError("alpha (step size) is required for PGD; got None")
    norm = _choice(norm, NORMS, "norm")
    _check_count(steps, "steps", 0)
    x0 = x.detach()
    if eps == 0.0:
        return x0.clone()
    x_adv = _random_start(x0, eps, norm, generator) if random_start else x0.clone()
    if early_stop:
        return _pgd_early_stop(model, x0, x_adv, y, eps, alpha_, steps, norm)
    for _ in range(steps):
        grad = _input_gradient(model, x_adv, y)
        x_adv = _project(x_adv + alpha_ * _ascent_direction(grad, norm), x0, eps, norm)
    return x_adv.detach()


def _pgd_early_stop(
    model: nn.Module, x0: Tensor, x_adv: Tensor, y: Tensor, eps: float, alpha: float, steps: int, norm: str
) -> Tensor:
    """PGD that stops moving an example once the model misclassifies it (one pass per step).

    Each step's forward pass both tells which examples are already fooled at the current
    iterate (they are frozen there) and gives the gradient for the others.
    """
    x_adv = x_adv.detach().clone()
    active = torch.arange(x0.shape[0], device=x0.device)
    for _ in range(steps):
        xa = x_adv[active].requires_grad_(True)
        with torch.enable_grad():
            logits = model(xa)
            loss = F.cross_entropy(logits, y[active], reduction="sum")
            grad = torch.autograd.grad(loss, xa, allow_unused=True)[0] if loss.requires_grad else None
        if grad is None:
            grad = torch.zeros_like(xa)
        still = logits.detach().argmax(1) == y[active]
        active, grad = active[still], grad.detach()[still]
        if active.numel() == 0:
            break
        x_adv[active] = _project(x_adv[active] + alpha * _ascent_direction(grad, norm), x0[active], eps, norm)
    return x_adv.detach()


# --------------------------------------------------------------------------------------------
# Attack specifications
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackSpec:
    """One threat model and attack: what ``robust_accuracy`` runs.

    Prefer the constructors ``AttackSpec.fgsm``, ``AttackSpec.pgd`` and ``AttackSpec.autoattack``.

    Attributes:
        name: ``"fgsm"``, ``"pgd"`` (L-inf), ``"pgd_l2"`` or ``"autoattack"``.
        eps: radius in pixel units (inputs in [0, 1]), >= 0.
        alpha: step size. FGSM: default ``eps`` (``1.25 * eps`` with a random start). PGD:
            required. AutoAttack: unused (parameter-free; ART's initial APGD step is ``2 * eps``).
        steps: PGD iterations; for AutoAttack the iterations of APGD-CE / APGD-T / FAB-T (the
            standard version of Croce & Hein 2020 uses 100). FGSM: always 1.
        norm: ``"linf"`` or ``"l2"``; must be ``"linf"`` for fgsm/pgd and ``"l2"`` for pgd_l2.
        random_start: None means the attack's usual choice (FGSM: no, PGD: yes).
    """

    name: str
    eps: float
    alpha: float | None = None
    steps: int = 1
    norm: str = "linf"
    random_start: bool | None = None

    def __post_init__(self) -> None:
        name = _choice(self.name, ATTACKS, "attack")
        norm = _choice(self.norm, NORMS, "norm")
        if name != self.name or norm != self.norm:
            raise ConfigError(f"write attack and norm names in lower case: name={name!r}, norm={norm!r}; "
                              f"got name={self.name!r}, norm={self.norm!r}")
        _check_eps(self.eps)
        _check_alpha(self.alpha)
        _check_count(self.steps, "steps", 1, f" for attack {name!r}")
        expected_norm = {"fgsm": "linf", "pgd": "linf", "pgd_l2": "l2"}.get(name)
        if expected_norm is not None and norm != expected_norm:
            raise ConfigError(f"attack {name!r} needs norm={expected_norm!r}; got norm={norm!r} "
                              f"(use 'pgd_l2' for L2 PGD, or AttackSpec.pgd(..., norm='l2'))")
        if name == "fgsm" and self.steps != 1:
            raise ConfigError(f"FGSM takes exactly one step; got steps={self.steps!r} (use 'pgd')")
        if name in ("pgd", "pgd_l2") and self.alpha is None:
            raise ConfigError(f"attack {name!r} needs a step size alpha; got None")

    # Constructors ---------------------------------------------------------------------------

    @classmethod
    def fgsm(cls, eps: float, *, random_start: bool = False, alpha: float | None = None) -> AttackSpec:
        """FGSM (L-inf); with ``random_start`` FGSM-RS (Wong et al. 2020, alpha 1.25 eps)."""
        return cls(name="fgsm", eps=eps, alpha=alpha, steps=1, norm="linf", random_start=random_start)

    @classmethod
    def pgd(
        cls, eps: float, alpha: float, steps: int, *, norm: str = "linf", random_start: bool = True
    ) -> AttackSpec:
        """PGD (Madry et al. 2018); ``norm="l2"`` gives the ``"pgd_l2"`` attack."""
        norm = _choice(norm, NORMS, "norm")
        name = "pgd" if norm == "linf" else "pgd_l2"
        return cls(name=name, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start)

    @classmethod
    def autoattack(cls, eps: float, *, norm: str = "linf", steps: int = 100) -> AttackSpec:
        """AutoAttack 'standard' (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square (5000 queries)."""
        return cls(name="autoattack", eps=eps, alpha=None, steps=steps, norm=_choice(norm, NORMS, "norm"))

    # Derived values --------------------------------------------------------------------------

    @property
    def uses_random_start(self) -> bool:
        """Whether the attack starts from a random point (None resolves to the attack's usual choice)."""
        if self.random_start is not None:
            return bool(self.random_start)
        return self.name in ("pgd", "pgd_l2")

    @property
    def step_size(self) -> float | None:
        """The step actually taken (FGSM defaults resolved); None for AutoAttack."""
        if self.name == "fgsm" and self.alpha is None:
            return 1.25 * self.eps if self.uses_random_start else self.eps
        return self.alpha

    @property
    def label(self) -> str:
        """Short human-readable name, e.g. ``"pgd-40 linf eps=0.3"``."""
        if self.name == "fgsm":
            head = "fgsm-rs" if self.uses_random_start else "fgsm"
        elif self.name == "autoattack":
            head = "autoattack"
        else:
            head = f"{self.name}-{self.steps}"
        return f"{head} {self.norm} eps={self.eps:.4g}"

    @property
    def strength(self) -> tuple[int, float]:
        """Order used by the gradient-masking check: FGSM < PGD (by steps) < AutoAttack."""
        if self.name == "fgsm":
            return (0, 1.0)
        if self.name == "autoattack":
            return (2, math.inf)
        return (1, float(self.steps))


def _dataset_family(dataset: str) -> str:
    key = str(dataset).lower().replace("-", "").replace("_", "")
    if key in _MNIST_LIKE:
        return "mnist"
    if key in _CIFAR_LIKE:
        return "cifar"
    valid = _MNIST_LIKE + _CIFAR_LIKE
    hint = difflib.get_close_matches(key, list(valid), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(f"no default threat model for dataset {dataset!r}; known: {', '.join(valid)}"
                      f"{suggestion}. Build AttackSpec objects by hand for other data sets.")


def default_attack_specs(
    dataset: str,
    *,
    eps: float | None = None,
    alpha: float | None = None,
    steps: int | None = None,
    l2_eps: float | None = None,
    include_l2: bool = True,
    include_autoattack: bool = False,
) -> list[AttackSpec]:
    """Per-data-set default attacks: FGSM, PGD L-inf, PGD L2 and optionally AutoAttack.

    =============================  ==========  =====================  ======================
    family (names)                 L-inf eps   PGD L-inf alpha/steps  L2 eps (alpha/steps)
    =============================  ==========  =====================  ======================
    MNIST-like (mnist, mnist-5k,   0.3         0.01 / 40 (Madry)      2.0 (0.125 / 40)
    digits)
    CIFAR-like (cifar10, cifar100, 8/255       2/255 / 10             0.5 (0.125 / 10)
    svhn, tiny-imagenet, ...)
    =============================  ==========  =====================  ======================

    L2 steps use alpha = 2.5 * eps / steps (the Madry robustness-library convention). Every
    value can be overridden; ``eps``/``alpha``/``steps`` act on the L-inf attacks and ``steps`` also
    on the L2 attack, whose alpha is then re-derived. AutoAttack (standard, 100 iterations) is
    expensive and therefore opt-in.

    Raises:
        ConfigError: unknown data set (the message lists the known ones) or invalid overrides.
    """
    family = _dataset_family(dataset)
    if family == "mnist":
        d_eps, d_alpha, d_steps, d_l2, d_l2_steps = 0.3, 0.01, 40, 2.0, 40
    else:
        d_eps, d_alpha, d_steps, d_l2, d_l2_steps = 8 / 255, 2 / 255, 10, 0.5, 10
    linf_eps = d_eps if eps is None else eps
    linf_alpha = d_alpha if alpha is None else alpha
    linf_steps = d_steps if steps is None else steps
    specs = [AttackSpec.fgsm(linf_eps), AttackSpec.pgd(linf_eps, linf_alpha, linf_steps)]
    if include_l2:
        r = d_l2 if l2_eps is None else _check_eps(l2_eps, "l2_eps")
        l2_steps = d_l2_steps if steps is None else steps
        l2_alpha = 2.5 * r / l2_steps if r > 0 else 2.5 / l2_steps
        specs.append(AttackSpec.pgd(r, l2_alpha, l2_steps, norm="l2"))
    if include_autoattack:
        specs.append(AttackSpec.autoattack(linf_eps, norm="linf"))
    return specs


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class WorstCase:
    """Point-wise worst case over all attacks of one threat model (same norm and eps).

    An example is robust only if no attack of the group fooled it; this is how AutoAttack and
    RobustBench report robustness.
    """

    norm: str
    eps: float
    attacks: tuple[str, ...]
    robust_accuracy: float
    gap: float


@dataclass(frozen=True)
class SuiteResult:
    """Several attacks on one model plus gradient-masking sanity checks.

    ``zero_gradient_share`` is the share of examples whose input gradient of the cross-entropy is
    exactly zero; ``warnings`` collects every flag raised (see ``robustness_suite``).
    """

    n: int
    clean_accuracy: float
    results: tuple[RobustResult, ...]
    worst_case: tuple[WorstCase, ...]
    zero_gradient_share: float
    warnings: tuple[str, ...]
    seconds: float


# --------------------------------------------------------------------------------------------
# Model guard: eval mode, device, parameter gradients, RNG
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _attack_guard(model: nn.Module, device: torch.device) -> Iterator[None]:
    """Run an attack on ``model`` in eval mode on ``device``, then undo every side effect.

    Saved and restored in ``finally``: the train/eval flag of every submodule, each parameter's
    ``requires_grad`` and ``.grad`` (libraries call ``zero_grad()`` or ``backward()``), and the
    model's device. Parameters are frozen during the attack: gradients flow to the input only,
    which is also faster.
    """
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.detach().clone() for p in params]
    home = params[0].device if params else None
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
        for m, mode in modes:
            m.training = mode


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch (and NumPy, for ART) for the block, restoring the caller's RNG states after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            yield
    finally:
        np.random.set_state(np_state)


def _batches(x: Tensor, y: Tensor, batch_size: int, device: torch.device) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` in batches on ``device``, detached; labels as int64."""
    for i in range(0, x.shape[0], batch_size):
        yield (x[i:i + batch_size].detach().to(device),
               y[i:i + batch_size].detach().to(device=device, dtype=torch.long))


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """Arg-max predictions (CPU, long) for ``x`` in batches, without gradients."""
    out = [model(x[i:i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------


def _validate_run(spec: AttackSpec, backend: str, num_classes: int, batch_size: int) -> str:
    if not isinstance(spec, AttackSpec):
        raise ConfigError(f"spec must be an AttackSpec; got {type(spec).__name__}")
    backend = _choice(backend, BACKENDS, "backend")
    if spec.name == "autoattack" and backend == "native":
        raise ConfigError("attack 'autoattack' is not available with backend 'native'; "
                          "use backend 'torchattacks' or 'art'")
    if spec.name == "autoattack" and backend == "art" and importlib.util.find_spec("multiprocess") is None:
        # ART imports it inside AutoAttack.generate but does not declare it as a dependency.
        raise ConfigError("attack 'autoattack' with backend 'art' needs the package 'multiprocess' "
                          "(pip install multiprocess); or use backend 'torchattacks'")
    _check_count(num_classes, "num_classes", 2)
    _check_count(batch_size, "batch_size", 1)
    return backend


def _prepare_run(spec: AttackSpec, backend: str, x: Tensor, y: Tensor, num_classes: int, batch_size: int,
                 device: str | torch.device) -> tuple[str, torch.device]:
    """Check a run's arguments (``_validate_run``, ``_check_xy``); returns the backend and the device."""
    backend = _validate_run(spec, backend, num_classes, batch_size)
    _check_xy(x, y, num_classes)
    return backend, torch.device(device)


class _NativeAttack:
    def __init__(self, model: nn.Module, spec: AttackSpec, seed: int, device: torch.device) -> None:
        self.model, self.spec = model, spec
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        s = self.spec
        if s.name == "fgsm":
            return fgsm_perturb(self.model, x, y, s.eps, random_start=s.uses_random_start,
                                alpha=s.step_size, generator=self.generator)
        assert s.alpha is not None  # guaranteed by AttackSpec validation
        return pgd_perturb(self.model, x, y, s.eps, alpha=s.alpha, steps=s.steps, norm=s.norm,
                           random_start=s.uses_random_start, generator=self.generator)


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - both are hard dependencies
        raise ConfigError(f"backend needs the package {package!r}, which is not installed "
                          f"({exc}); pip install {package}") from exc


class _TorchattacksAttack:
    """torchattacks FGSM / FFGSM / PGD / PGDL2 / AutoAttack-standard built from its parts."""

    def __init__(self, model: nn.Module, spec: AttackSpec, num_classes: int, seed: int) -> None:
        ta = _import("torchattacks", "torchattacks")
        self.notes: list[str] = []
        s = spec
        if s.name == "fgsm":
            if s.uses_random_start:
                self.attack = ta.FFGSM(model, eps=s.eps, alpha=s.step_size)
            elif s.step_size == s.eps:
                self.attack = ta.FGSM(model, eps=s.eps)
            else:  # one signed step of a custom size, then projection == PGD with one step
                self.attack = ta.PGD(model, eps=s.eps, alpha=s.step_size, steps=1, random_start=False)
        elif s.name == "pgd":
            self.attack = ta.PGD(model, eps=s.eps, alpha=s.alpha, steps=s.steps,
                                 random_start=s.uses_random_start)
        elif s.name == "pgd_l2":
            self.attack = ta.PGDL2(model, eps=s.eps, alpha=s.alpha, steps=s.steps,
                                   random_start=s.uses_random_start)
        else:
            self.attack = self._autoattack(ta, model, s, num_classes, seed)

    def _autoattack(
        self, ta: ModuleType, model: nn.Module, s: AttackSpec, num_classes: int, seed: int
    ) -> object:
        # torchattacks.AutoAttack(version="standard") hard-codes its parts' defaults: 10 APGD/FAB
        # iterations (the paper uses 100) and n_classes - 1 targets (the paper uses the top 9;
        # with n_classes=10 on fewer classes it indexes out of range). We assemble the same four
        # attacks with the paper's settings instead. `n_classes` only sets the number of targets.
        norm = "Linf" if s.norm == "linf" else "L2"
        n_targets_classes = min(num_classes, 10)
        parts = [ta.APGD(model, norm=norm, eps=s.eps, steps=s.steps, n_restarts=1, seed=seed, loss="ce")]
        if num_classes >= 4:  # the targeted DLR loss reads the 3rd and 4th largest logits
            parts.append(ta.APGDT(model, norm=norm, eps=s.eps, steps=s.steps, n_restarts=1, seed=seed,
                                  n_classes=n_targets_classes))
        else:
            self.notes.append(f"APGD-T skipped: its DLR loss needs >= 4 classes, got {num_classes}")
        parts.append(ta.FAB(model, norm=norm, eps=s.eps, steps=s.steps, n_restarts=1, seed=seed,
                            multi_targeted=True, n_classes=n_targets_classes))
        parts.append(ta.Square(model, norm=norm, eps=s.eps, n_queries=5000, n_restarts=1, seed=seed))
        return ta.MultiAttack(parts)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(x, y)


class _ArtAttack:
    """IBM ART FastGradientMethod / ProjectedGradientDescent / AutoAttack on a PyTorchClassifier."""

    def __init__(self, model: nn.Module, spec: AttackSpec, num_classes: int, input_shape: tuple[int, ...],
                 batch_size: int, device: torch.device) -> None:
        _import("art", "adversarial-robustness-toolbox")
        from art.attacks.evasion import AutoAttack, FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        self.notes: list[str] = []
        self.device = device
        s = spec
        clf = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=input_shape,
                                nb_classes=num_classes, clip_values=(0.0, 1.0),
                                device_type="gpu" if device.type == "cuda" else "cpu")
        art_norm = np.inf if s.norm == "linf" else 2
        if s.name == "fgsm" and not s.uses_random_start and s.step_size == s.eps:
            self.attack = FastGradientMethod(clf, norm=np.inf, eps=s.eps, eps_step=s.eps, targeted=False,
                                             num_random_init=0, batch_size=batch_size)
        elif s.name == "fgsm":
            # FGSM-RS / custom step == one PGD iteration (ART's FGM has no separate step size).
            self.attack = ProjectedGradientDescent(clf, norm=np.inf, eps=s.eps, eps_step=s.step_size,
                                                   max_iter=1, num_random_init=int(s.uses_random_start),
                                                   batch_size=batch_size, verbose=False)
        elif s.name in ("pgd", "pgd_l2"):
            self.attack = ProjectedGradientDescent(clf, norm=art_norm, eps=s.eps, eps_step=s.alpha,
                                                   max_iter=s.steps, num_random_init=int(s.uses_random_start),
                                                   batch_size=batch_size, verbose=False)
        else:
            # ART's own AutoAttack list: APGD-CE, APGD-DLR (5 restarts each), DeepFool, Square.
            # The initial APGD step 2 * eps follows Croce & Hein 2020.
            self.attack = AutoAttack(clf, norm=art_norm, eps=s.eps, eps_step=2 * s.eps, batch_size=batch_size)
            self.notes.append("ART AutoAttack uses ART's attack list (APGD-CE, APGD-DLR, DeepFool, Square), "
                              "not the torchattacks/fra31 'standard' list")

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x_np = x.detach().cpu().numpy().astype(np.float32)
        adv = self.attack.generate(x=x_np, y=y.detach().cpu().numpy().astype(np.int64))
        return torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(device=x.device, dtype=x.dtype)


# --------------------------------------------------------------------------------------------
# Robust accuracy
# --------------------------------------------------------------------------------------------


def _run_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    backend: str,
    num_classes: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[Tensor, list[str]]:
    """Adversarial inputs for all of ``x`` (CPU tensor) and any notes; the model is already guarded."""
    notes: list[str] = []
    n = x.shape[0]
    if spec.eps == 0.0 or n == 0:
        return x.detach().cpu().clone(), notes
    with _seeded(seed, device):
        if backend == "native":
            attack = _NativeAttack(model, spec, seed, device)
        elif backend == "torchattacks":
            if x.ndim != 4 and (spec.norm == "l2" or spec.name == "autoattack"):
                raise DataError(f"backend 'torchattacks' needs N x C x H x W inputs for {spec.name!r}; "
                                f"got shape {tuple(x.shape)}")
            attack = _TorchattacksAttack(model, spec, num_classes, seed)
            notes += attack.notes
        else:
            attack = _ArtAttack(model, spec, num_classes, tuple(x.shape[1:]), batch_size, device)
            notes += attack.notes
        chunks = []
        outside = 0
        for xb, yb in _batches(x, y, batch_size, device):
            adv = attack(xb, yb).detach().to(device=device, dtype=xb.dtype)
            if adv.shape != xb.shape:
                raise RuntimeError(f"backend {backend!r} returned shape {tuple(adv.shape)} "
                                   f"for inputs of shape {tuple(xb.shape)}")
            # Guarantee the threat model whatever the backend did (ART's AutoAttack accepts a
            # relative 1e-4 overshoot, DeepFool overshoots by design).
            projected = _project(adv, xb, spec.eps, spec.norm)
            outside += int(((projected - adv).flatten(1).abs().amax(dim=1) > _BALL_TOL).sum())
            chunks.append(projected.cpu())
    if outside:
        notes.append(f"backend {backend!r} returned {outside} of {n} examples outside the {spec.norm} "
                     f"ball of radius {spec.eps:.4g} or outside [0, 1]; they were projected back")
    return torch.cat(chunks), notes


def _evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    backend: str,
    num_classes: int,
    batch_size: int,
    device: str | torch.device,
    seed: int,
) -> tuple[RobustResult, Tensor, Tensor]:
    """``robust_accuracy`` plus the per-example clean-correct and robust masks (CPU, bool)."""
    backend, dev = _prepare_run(spec, backend, x, y, num_classes, batch_size, device)
    t0 = time.perf_counter()
    y_cpu = y.detach().cpu().long()
    with _attack_guard(model, dev):
        clean_pred = _predict(model, x, batch_size, dev)
        x_adv, notes = _run_attack(model, x, y_cpu, spec, backend, num_classes, batch_size, dev, seed)
        adv_pred = _predict(model, x_adv, batch_size, dev)
    seconds = time.perf_counter() - t0
    n = int(x.shape[0])
    clean_ok = clean_pred == y_cpu
    adv_ok = adv_pred == y_cpu
    robust_ok = clean_ok & adv_ok
    clean_acc = float(clean_ok.float().mean()) if n else float("nan")
    robust_acc = float(robust_ok.float().mean()) if n else float("nan")
    adv_acc = float(adv_ok.float().mean()) if n else float("nan")
    if n and robust_acc > clean_acc:  # impossible by construction; a bug if it ever happens
        raise RuntimeError(f"internal error: robust accuracy {robust_acc} exceeds clean accuracy {clean_acc}")
    result = RobustResult(
        attack=spec.name, label=spec.label, backend=backend, norm=spec.norm, eps=float(spec.eps),
        alpha=spec.step_size, steps=spec.steps, random_start=spec.uses_random_start, n=n,
        clean_accuracy=clean_acc, robust_accuracy=robust_acc, gap=clean_acc - robust_acc,
        adversarial_accuracy=adv_acc, seconds=seconds, seed=seed, device=str(dev), warnings=tuple(notes),
    )
    logger.info("%s [%s]: clean %.4f robust %.4f gap %.4f (n=%d, %.2fs)", spec.label, backend, clean_acc,
                robust_acc, clean_acc - robust_acc, n, seconds)
    for note in notes:
        logger.warning("%s [%s]: %s", spec.label, backend, note)
    return result, clean_ok, robust_ok


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
) -> Tensor:
    """Adversarial inputs for ``x`` under ``spec``, exactly as ``robust_accuracy`` makes them.

    Same guards as ``robust_accuracy`` (eval mode forced then restored, parameter gradients and
    RNG states preserved, inputs untouched). The output is always inside the threat model:
    projected onto the eps ball around ``x`` and onto [0, 1].

    Returns:
        CPU tensor shaped like ``x``.
    """
    backend, dev = _prepare_run(spec, backend, x, y, num_classes, batch_size, device)
    with _attack_guard(model, dev):
        x_adv, _ = _run_attack(model, x, y.detach().cpu().long(), spec, backend, num_classes, batch_size,
                               dev, seed)
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
) -> RobustResult:
    """Clean accuracy, robust accuracy and their gap under one attack.

    An example counts as robust only if it is classified correctly both clean and on its
    adversarial version, so R-ACC <= ACC by construction (and checked). Every example is attacked
    (also the misclassified ones) so that ``adversarial_accuracy`` is available as a sanity value.

    Backends:
        - ``native``: ``fgsm_perturb`` / ``pgd_perturb`` of this module (no AutoAttack).
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
        model: returns logits ``N x K``; normalisation inside.
        x: ``N x C x H x W`` float in [0, 1] (any device; batches are moved to ``device``).
        y: ``N`` class indices in ``[0, num_classes)``.
        spec: the attack (see ``AttackSpec``, ``default_attack_specs``).
        backend: ``"native"``, ``"torchattacks"`` (default) or ``"art"``.
        num_classes: K, the number of classes (required: AutoAttack's target count depends on it).
        batch_size: examples per attack batch (default 256).
        device: where the model and batches run (default ``"cpu"``).
        seed: seed of random starts and of AutoAttack (default 0).

    Raises:
        ConfigError: unknown backend, bad spec, ``autoattack`` with ``native``, bad num_classes.
        DataError: ``x`` not float in [0, 1], labels out of range or shapes inconsistent.
    """
    result, _, _ = _evaluate(model, x, y, spec, backend=backend, num_classes=num_classes,
                             batch_size=batch_size, device=device, seed=seed)
    return result


# --------------------------------------------------------------------------------------------
# Gradient-masking checks
# --------------------------------------------------------------------------------------------


def gradient_check(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> float:
    """Share of examples whose input gradient of the cross-entropy is exactly zero everywhere.

    A zero gradient stops every gradient-based attack (``sign(0) = 0``), so a noticeable share
    means FGSM/PGD/APGD numbers over-estimate robustness: the "zero gradient" flag of AutoAttack
    (Croce & Hein 2020) and RobustBench's eligibility rule. Typical causes are rounding,
    quantisation or a hard argmax in the forward pass, and logits so large that the softmax
    saturates in float32. Runs in eval mode (restored afterwards); parameter ``.grad`` untouched.

    Args:
        model: returns logits ``N x K``.
        x: ``N x C x H x W`` float in [0, 1]; y: ``N`` class indices.
        batch_size: default 256. device: default ``"cpu"``.

    Returns:
        A fraction in [0, 1] (NaN for an empty input).
    """
    _check_xy(x, y)
    _check_count(batch_size, "batch_size", 1)
    n = int(x.shape[0])
    if n == 0:
        return float("nan")
    dev = torch.device(device)
    zero = 0
    with _attack_guard(model, dev):
        for xb, yb in _batches(x, y, batch_size, dev):
            grad = _input_gradient(model, xb, yb)
            zero += int((grad.flatten(1) == 0).all(dim=1).sum())
    return zero / n


def robustness_suite(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    specs: Sequence[AttackSpec],
    *,
    backend: str = "torchattacks",
    num_classes: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
    order_tolerance: float = 0.01,
    zero_gradient_threshold: float = 0.05,
) -> SuiteResult:
    """Run several attacks and flag signs of gradient masking (Croce & Hein 2020; Carlini et al. 2019).

    Flags recorded in ``SuiteResult.warnings`` (besides each attack's own warnings):
        1. ordering: within one threat model (same norm and eps), a stronger attack (FGSM < PGD
           with fewer steps < PGD with more steps < AutoAttack) leaves a robust accuracy higher
           than a weaker one by more than ``order_tolerance`` (default 0.01 = 1 point);
        2. robust accuracy above clean accuracy, or accuracy on the adversarial inputs above
           clean accuracy by more than ``order_tolerance`` (a broken attack or a randomised model);
        3. clean accuracy differing between runs (a randomised forward pass);
        4. zero input gradient (``gradient_check``) for more than ``zero_gradient_threshold``
           (default 0.05) of the examples.
    Also reports the point-wise worst case per threat model (``WorstCase``).

    Args: as ``robust_accuracy``, with ``specs`` a non-empty sequence of ``AttackSpec``.
    """
    specs = list(specs)
    if not specs:
        raise ConfigError("specs must hold at least one AttackSpec; got an empty sequence")
    backend = _choice(backend, BACKENDS, "backend")
    for spec in specs:  # fail before spending time on the first attacks
        _validate_run(spec, backend, num_classes, batch_size)
    if not (0.0 <= order_tolerance <= 1.0):
        raise ConfigError(f"order_tolerance must lie in [0, 1]; got {order_tolerance!r}")
    if not (0.0 <= zero_gradient_threshold <= 1.0):
        raise ConfigError(f"zero_gradient_threshold must lie in [0, 1]; got {zero_gradient_threshold!r}")
    _check_xy(x, y, num_classes)
    t0 = time.perf_counter()
    results: list[RobustResult] = []
    masks: list[tuple[Tensor, Tensor]] = []
    for spec in specs:
        res, clean_ok, robust_ok = _evaluate(model, x, y, spec, backend=backend, num_classes=num_classes,
                                             batch_size=batch_size, device=device, seed=seed)
        results.append(res)
        masks.append((clean_ok, robust_ok))
    zero_share = gradient_check(model, x, y, batch_size=batch_size, device=device)

    warnings: list[str] = []
    for res in results:
        warnings += [f"{res.label}: {w}" for w in res.warnings]
        if res.robust_accuracy > res.clean_accuracy:
            warnings.append(f"{res.label}: robust accuracy {res.robust_accuracy:.4f} exceeds clean accuracy "
                            f"{res.clean_accuracy:.4f}")
        if res.adversarial_accuracy > res.clean_accuracy + order_tolerance:
            warnings.append(f"{res.label}: accuracy on adversarial inputs {res.adversarial_accuracy:.4f} "
                            f"exceeds clean accuracy {res.clean_accuracy:.4f}: the attack makes the model "
                            f"more accurate (broken attack or randomised model)")
    cleans = {round(r.clean_accuracy, 12) for r in results}
    if len(cleans) > 1:
        warnings.append(f"clean accuracy differs between runs ({sorted(cleans)}): the forward pass is "
                        f"randomised, so robust accuracies are not comparable (use EOT attacks)")

    groups: dict[tuple[str, float], list[int]] = {}
    for i, spec in enumerate(specs):
        groups.setdefault((spec.norm, float(spec.eps)), []).append(i)
    worst: list[WorstCase] = []
    for (norm, eps), idx in groups.items():
        for i in idx:
            for j in idx:
                weak, strong = results[i], results[j]
                if specs[i].strength < specs[j].strength and \
                        strong.robust_accuracy > weak.robust_accuracy + order_tolerance:
                    warnings.append(
                        f"possible gradient masking: stronger attack {strong.label} leaves robust accuracy "
                        f"{strong.robust_accuracy:.4f}, above the weaker {weak.label} "
                        f"({weak.robust_accuracy:.4f})")
        robust_all = masks[idx[0]][0].clone()
        for i in idx:
            robust_all &= masks[i][1]
        wc_acc = float(robust_all.float().mean()) if len(robust_all) else float("nan")
        clean_acc = results[idx[0]].clean_accuracy
        worst.append(WorstCase(norm=norm, eps=eps, attacks=tuple(results[i].label for i in idx),
                               robust_accuracy=wc_acc, gap=clean_acc - wc_acc))
    if zero_share > zero_gradient_threshold:
        warnings.append(f"possible gradient masking: the input gradient is exactly zero for "
                        f"{zero_share:.1%} of the examples (threshold {zero_gradient_threshold:.1%}); "
                        f"gradient-based robust accuracies over-estimate robustness, confirm with a "
                        f"black-box attack (AutoAttack's Square)")
    for w in warnings:
        logger.warning(w)
    return SuiteResult(n=int(x.shape[0]), clean_accuracy=results[0].clean_accuracy, results=tuple(results),
                       worst_case=tuple(worst), zero_gradient_share=zero_share, warnings=tuple(warnings),
                       seconds=time.perf_counter() - t0)
