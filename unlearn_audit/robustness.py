"""Robust accuracy of one model as the audit reports it: ACC, R-ACC and Gap = ACC - R-ACC.

The attack is PGD L-inf (Madry et al.) with the data family's defaults (MNIST-like eps 0.3,
40 steps of 0.01; CIFAR-like and others eps 8/255, 10 steps of 2/255). Overriding ``steps``
without ``alpha`` re-derives the step as 2.5 * eps / steps so the attack can still reach the
edge of the ball.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from attacks.adversarial import AttackSpec, adversarial_examples, pgd_perturb
from unlearn_audit.data import TensorSet
from unlearn_audit.training import predict

FAMILY_DEFAULTS = {"mnist": (0.3, 0.01, 40), "cifar": (8 / 255, 2 / 255, 10), "other": (8 / 255, 2 / 255, 10)}


def pgd_spec(family: str, *, eps: float | None = None, steps: int | None = None, alpha: float | None = None):
    d_eps, d_alpha, d_steps = FAMILY_DEFAULTS.get(family, FAMILY_DEFAULTS["other"])
    e = d_eps if eps is None else eps
    s = d_steps if steps is None else steps
    if alpha is None:
        alpha = d_alpha if (eps is None and steps is None) else 2.5 * e / s
    return AttackSpec.pgd(e, alpha, s)


def _native_pgd(module: nn.Module, data: TensorSet, spec: AttackSpec, *, seed: int, device, batch_size: int):
    """Our PGD with early stopping, in eval mode (the caller's mode restored), batch by batch."""
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(seed)
    was_training = module.training
    module.eval()
    try:
        out = []
        for i in range(0, len(data), batch_size):
            x = data.x[i : i + batch_size].to(dev)
            y = data.y[i : i + batch_size].to(dev)
            out.append(
                pgd_perturb(
                    module,
                    x,
                    y,
                    spec.eps,
                    alpha=spec.alpha,
                    steps=spec.steps,
                    norm="linf",
                    random_start=True,
                    generator=gen,
                    early_stop=True,
                ).cpu()
            )
    finally:
        module.train(was_training)
    return torch.cat(out)


def measure_robustness(
    module: nn.Module,
    data: TensorSet,
    *,
    family: str,
    num_classes: int,
    eps: float | None = None,
    steps: int | None = None,
    alpha: float | None = None,
    backend: str = "native",
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict:
    """Clean accuracy, PGD robust accuracy and their gap on ``data``, with per-example outcomes.

    An example counts as robust only if it is classified correctly both clean and under attack.
    The ``native`` backend is our PGD with early stopping (an example is frozen at the first
    iterate that fools the model); ``torchattacks`` and ``art`` run those libraries' PGD.
    """
    spec = pgd_spec(family, eps=eps, steps=steps, alpha=alpha)
    start = time.perf_counter()
    if backend == "native":
        x_adv = _native_pgd(module, data, spec, seed=seed, device=device, batch_size=batch_size)
    else:
        x_adv = adversarial_examples(
            module,
            data.x,
            data.y,
            spec,
            backend=backend,
            num_classes=num_classes,
            batch_size=batch_size,
            device=device,
            seed=seed,
        )
    clean = predict(module, data.x, device=device) == data.y
    adv = predict(module, x_adv, device=device) == data.y
    robust = (clean & adv).numpy()
    acc, racc = float(clean.float().mean()), float(robust.mean())
    return {
        "attack": f"PGD-{spec.steps} L-inf eps={spec.eps:.4g} step={spec.alpha:.4g} ({backend})",
        "eps": spec.eps,
        "steps": spec.steps,
        "n": len(data),
        "clean_accuracy": round(acc, 6),
        "robust_accuracy": round(racc, 6),
        "gap": round(acc - racc, 6),
        "seconds": round(time.perf_counter() - start, 3),
        "correct": np.asarray(robust, dtype=int).tolist(),
    }
