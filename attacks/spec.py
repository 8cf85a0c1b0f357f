"""What an attack is (``AttackSpec``) and the argument checks every attack module shares.

Conventions (the RobustBench contract): inputs are float tensors ``N x C x H x W`` in [0, 1];
any normalisation lives inside the model; ``model(x)`` returns logits ``N x K``; eps is measured
in pixel units. The checks raise ``ConfigError`` for bad settings and ``DataError`` for bad
tensors, with the offending value in the message, before any time is spent attacking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.suggest import did_you_mean

__all__ = [
    "ATTACKS",
    "NORMS",
    "AttackSpec",
    "check_alpha",
    "check_choice",
    "check_count",
    "check_eps",
    "check_inputs",
]

ATTACKS: tuple[str, ...] = ("fgsm", "pgd", "pgd_l2", "autoattack")
NORMS: tuple[str, ...] = ("linf", "l2")


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """Return ``value`` lower-cased if it is one of ``valid``, else raise a ConfigError."""
    key = str(value).lower()
    if key in valid:
        return key
    raise ConfigError(f"unknown {what} {value!r}; available: {', '.join(valid)}{did_you_mean(key, valid)}")


def _is_real(value: object) -> bool:
    """A finite int or float (bools excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_eps(eps: float, name: str = "eps") -> float:
    """A radius: finite and >= 0 (0 means no attack, which is allowed)."""
    if not _is_real(eps) or eps < 0:
        raise ConfigError(f"{name} must be a finite number >= 0 (pixel units, inputs in [0, 1]); got {eps!r}")
    return float(eps)


def check_alpha(alpha: float | None, name: str = "alpha") -> float | None:
    """A step size: None (the attack's default) or finite and > 0."""
    if alpha is None:
        return None
    if not _is_real(alpha) or alpha <= 0:
        raise ConfigError(f"{name} (step size) must be a finite number > 0; got {alpha!r}")
    return float(alpha)


def check_count(value: object, name: str, minimum: int, context: str = "") -> None:
    """``value`` must be an int (not a bool) >= ``minimum``; ``context`` ends the error message."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}{context}")


def check_inputs(x: Tensor, y: Tensor, num_classes: int | None = None) -> None:
    """Inputs float in [0, 1] and batched, labels 1-D integer indices in ``[0, num_classes)``."""
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        raise DataError(
            f"x must be a floating-point tensor in [0, 1]; got {type(x).__name__} {getattr(x, 'dtype', '')}"
        )
    if x.ndim < 2:
        raise DataError(f"x must be batched (N x C x H x W); got shape {tuple(x.shape)}")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DataError(
            f"y must be a 1-D tensor of {x.shape[0]} class indices; got "
            f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}"
        )
    if torch.is_floating_point(y) or y.dtype == torch.bool:
        raise DataError(f"y must hold integer class indices; got dtype {y.dtype}")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise DataError(
            f"x must lie in [0, 1] (normalise inside the model); got range "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    if num_classes is not None and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise DataError(f"labels must lie in [0, num_classes={num_classes}); got range [{lo}, {hi}]")


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
        name = check_choice(self.name, ATTACKS, "attack")
        norm = check_choice(self.norm, NORMS, "norm")
        if name != self.name or norm != self.norm:
            raise ConfigError(
                f"write attack and norm names in lower case: name={name!r}, norm={norm!r}; "
                f"got name={self.name!r}, norm={self.norm!r}"
            )
        check_eps(self.eps)
        check_alpha(self.alpha)
        check_count(self.steps, "steps", 1, f" for attack {name!r}")
        expected_norm = {"fgsm": "linf", "pgd": "linf", "pgd_l2": "l2"}.get(name)
        if expected_norm is not None and norm != expected_norm:
            raise ConfigError(
                f"attack {name!r} needs norm={expected_norm!r}; got norm={norm!r} "
                f"(use 'pgd_l2' for L2 PGD, or AttackSpec.pgd(..., norm='l2'))"
            )
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
        norm = check_choice(norm, NORMS, "norm")
        name = "pgd" if norm == "linf" else "pgd_l2"
        return cls(name=name, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start)

    @classmethod
    def autoattack(cls, eps: float, *, norm: str = "linf", steps: int = 100) -> AttackSpec:
        """AutoAttack 'standard' (Croce & Hein 2020): APGD-CE, APGD-T, FAB-T, Square (5000 queries)."""
        return cls(
            name="autoattack", eps=eps, alpha=None, steps=steps, norm=check_choice(norm, NORMS, "norm")
        )

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
