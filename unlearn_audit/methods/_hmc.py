"""Hamiltonian Monte Carlo with parallel chains and warm-up adaptation (Neal 2011).

The sampler behind MCMC unlearning (:mod:`unlearn_audit.methods.mcmc`); it knows nothing about
models: it draws from any differentiable log density over ``(chains, d)`` points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["HmcResult", "hmc"]


@dataclass(frozen=True)
class HmcResult:
    """Samples ``(chains * num_samples, d)`` (chain-major), mean acceptance, final step size."""

    samples: torch.Tensor
    accept_rate: float
    step_size: float
    seconds: float


@dataclass
class _Chains:
    """The chains' positions ``(chains, d)`` with their log densities and gradients."""

    q: torch.Tensor
    lp: torch.Tensor
    g: torch.Tensor


def _value_and_grad(
    log_prob: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.detach().requires_grad_(True)
    lp = log_prob(z)
    (g,) = torch.autograd.grad(lp.sum(), z)
    return lp.detach(), g.detach()


def _transition(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    chains: _Chains,
    *,
    eps: float,
    inv_mass: torch.Tensor,
    leapfrog_steps: int,
    gen: torch.Generator,
) -> tuple[_Chains, torch.Tensor, torch.Tensor]:
    """One HMC iteration of every chain: fresh momenta, ``leapfrog_steps`` leapfrog steps, and a
    Metropolis accept; returns the new chains, the acceptance probabilities and which accepted."""
    q, lp, g = chains.q, chains.lp, chains.g
    n, d = q.shape
    p0 = torch.randn(n, d, generator=gen, dtype=q.dtype).to(q.device) / inv_mass.sqrt()
    z, pz, gz = q, p0 + 0.5 * eps * g, g
    lpz = lp
    for step in range(leapfrog_steps):
        z = z + eps * inv_mass * pz
        lpz, gz = _value_and_grad(log_prob, z)
        pz = pz + (eps if step < leapfrog_steps - 1 else 0.5 * eps) * gz
    h0 = lp - 0.5 * (inv_mass * p0 * p0).sum(1)
    h1 = lpz - 0.5 * (inv_mass * pz * pz).sum(1)
    accept_prob = torch.nan_to_num(h1 - h0, nan=-math.inf).clamp(max=0.0).exp()
    take = torch.rand(n, generator=gen, dtype=q.dtype).to(q.device) < accept_prob
    moved = _Chains(
        q=torch.where(take[:, None], z, q),
        lp=torch.where(take, lpz, lp),
        g=torch.where(take[:, None], gz, g),
    )
    return moved, accept_prob, take


class _WarmUp:
    """The warm-up adaptation of :func:`hmc`: step size (Robbins-Monro) and diagonal mass matrix."""

    def __init__(self, warmup: int, step_size: float, target_accept: float, like: torch.Tensor) -> None:
        self.warmup = warmup
        self.target = target_accept
        self.log_eps = math.log(step_size)
        self.inv_mass = torch.ones(like.shape[1], dtype=like.dtype, device=like.device)
        self.trace: list[float] = []
        self.window: list[torch.Tensor] = []
        self.t = 0

    def update(self, it: int, accept_prob: torch.Tensor, q: torch.Tensor) -> None:
        """Adapt after warm-up iteration ``it`` with the chains now at ``q``."""
        warmup = self.warmup
        self.t += 1
        self.log_eps += (float(accept_prob.mean()) - self.target) / (self.t + 10) ** 0.6
        self.trace.append(self.log_eps)
        if warmup // 4 <= it < warmup // 2:
            self.window.append(q.clone())
        if it == warmup // 2 - 1 and len(self.window) >= 4:
            inv_mass = torch.cat(self.window).var(dim=0).clamp(min=1e-8)
            self.inv_mass = inv_mass / inv_mass.mean().clamp(min=1e-12)  # keep the step size's scale
            self.t = 0
        if it == warmup - 1:
            self.log_eps = float(np.mean(self.trace[-max(1, warmup // 4) :]))


def hmc(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    init: torch.Tensor,
    *,
    num_samples: int,
    warmup: int,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.8,
    generator: torch.Generator | None = None,
    progress: Callable[[], None] | None = None,
) -> HmcResult:
    """Hamiltonian Monte Carlo (Neal 2011) with parallel chains.

    Warm-up: the log step size follows a Robbins-Monro update towards ``target_accept``
    (``log eps += (accept - target) / (i + 10)^0.6``); at the middle of warm-up the inverse mass
    matrix becomes the per-coordinate variance of the second quarter's draws (diagonal metric)
    and the step size adaptation restarts. After warm-up the step size is fixed to the mean of
    the last quarter's log step sizes, jittered by ±10% per iteration.

    Args:
        log_prob: ``(chains, d) -> (chains,)``, differentiable (unnormalised log density).
        init: ``(chains, d)`` starting points.
        num_samples: kept draws per chain.
        warmup: adaptation iterations per chain (discarded).
        leapfrog_steps: L, leapfrog steps per iteration (10).
        step_size: initial step size (0.05).
        target_accept: acceptance rate targeted during warm-up (0.8).
        generator: CPU generator for momenta, jitter and accept decisions.
        progress: called after each iteration.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    start = time.perf_counter()
    q = init.detach().clone()
    chains = _Chains(q, *_value_and_grad(log_prob, q))
    adapt = _WarmUp(warmup, step_size, target_accept, q)
    kept: list[torch.Tensor] = []
    accepted = 0.0
    for it in range(warmup + num_samples):
        eps = math.exp(adapt.log_eps)
        if it >= warmup:
            eps *= 1.0 + 0.1 * (2 * float(torch.rand((), generator=gen)) - 1)
        chains, accept_prob, take = _transition(
            log_prob, chains, eps=eps, inv_mass=adapt.inv_mass, leapfrog_steps=leapfrog_steps, gen=gen
        )
        if it < warmup:
            adapt.update(it, accept_prob, chains.q)
        else:
            kept.append(chains.q.clone())
            accepted += float(take.double().mean())
        if progress is not None:
            progress()
    n, d = q.shape
    samples = torch.stack(kept, dim=1).reshape(n * num_samples, d) if kept else q.new_zeros(0, d)
    return HmcResult(
        samples=samples,
        accept_rate=accepted / max(1, num_samples),
        step_size=math.exp(adapt.log_eps),
        seconds=time.perf_counter() - start,
    )
