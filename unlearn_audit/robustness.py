"""Robust accuracy of one model as the audit reports it: ACC, R-ACC and Gap = ACC - R-ACC.

The attack is PGD L-inf (Madry et al.) with the data family's threat model from
``attacks.threat`` (overriding ``steps`` or ``eps`` without ``alpha`` re-derives the step there).
The adversarial inputs come from ``attacks.robust.adversarial_examples``, the one entry point of
every back-end; the ``native`` one stops early per example, which only saves time.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from attacks.robust import adversarial_examples
from attacks.threat import pgd_spec
from unlearn_audit.data import TensorSet
from unlearn_audit.training import predict

__all__ = ["measure_robustness", "pgd_spec"]


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
    The model's modes, gradients and device are as before the call.
    """
    spec = pgd_spec(family, eps=eps, steps=steps, alpha=alpha)
    start = time.perf_counter()
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
        early_stop=True,
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
