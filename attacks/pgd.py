"""Our own gradient attacks, FGSM and PGD, written for both evaluation and adversarial training.

Because adversarial *training* calls them in its inner loop, they never touch the model's
train/eval mode (the caller decides), never write parameter ``.grad`` (``torch.autograd.grad``
on the input only) and never mutate their inputs. Inputs are ``N x C x H x W`` floats in
[0, 1]; eps is in pixel units.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.spec import NORMS, check_alpha, check_choice, check_count, check_eps
from unlearn_audit.errors import ConfigError

__all__ = ["fgsm_perturb", "input_gradient", "pgd_perturb", "project", "sample_like"]


def input_gradient(model: nn.Module, x_adv: Tensor, y: Tensor) -> Tensor:
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


def project(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
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


def sample_like(sample: Callable[..., Tensor], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``sample`` (``torch.rand`` or ``torch.randn``) shaped like ``like``, drawn from ``generator``
    (on its own device) if given, and moved to ``like``'s device."""
    if generator is None:
        return sample(like.shape, dtype=like.dtype, device=like.device)
    noise = sample(like.shape, dtype=like.dtype, device=generator.device, generator=generator)
    return noise.to(like.device)


def _random_start(x: Tensor, eps: float, norm: str, generator: torch.Generator | None) -> Tensor:
    """A uniformly random point of the ``norm`` ball of radius ``eps`` around ``x``, clamped to [0, 1]."""
    if norm == "linf":
        delta = (2.0 * sample_like(torch.rand, x, generator) - 1.0) * eps
    else:
        # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
        direction = sample_like(torch.randn, x, generator)
        direction = direction / _per_example_norm(direction).clamp_min(1e-12)
        d = x[0].numel()
        u = sample_like(torch.rand, x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)), generator)
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
    eps = check_eps(eps)
    alpha = check_alpha(alpha)
    if alpha is None:
        alpha = 1.25 * eps if random_start else eps
    x0 = x.detach()
    if eps == 0.0:
        return x0.clone()
    x_start = _random_start(x0, eps, "linf", generator) if random_start else x0
    grad = input_gradient(model, x_start, y)
    return project(x_start + alpha * grad.sign(), x0, eps, "linf").detach()


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

    The per-family defaults of eps, alpha and steps are in ``attacks.threat``.

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
    eps = check_eps(eps)
    alpha_ = check_alpha(alpha)
    if alpha_ is None:
        raise ConfigError("alpha (step size) is required for PGD; got None")
    norm = check_choice(norm, NORMS, "norm")
    check_count(steps, "steps", 0)
    x0 = x.detach()
    if eps == 0.0:
        return x0.clone()
    x_adv = _random_start(x0, eps, norm, generator) if random_start else x0.clone()
    if early_stop:
        return _pgd_early_stop(model, x0, x_adv, y, eps, alpha_, steps, norm)
    for _ in range(steps):
        grad = input_gradient(model, x_adv, y)
        x_adv = project(x_adv + alpha_ * _ascent_direction(grad, norm), x0, eps, norm)
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
        x_adv[active] = project(x_adv[active] + alpha * _ascent_direction(grad, norm), x0[active], eps, norm)
    return x_adv.detach()
