"""The threat model the audit assumes for each data family: L-inf radius, PGD step size and steps.

One table, read by every place that needs a default (robust accuracy in the audit, the
robustness study, adversarial training): the numbers are the usual ones of the literature
(Madry et al. 2018 for MNIST; the RobustBench / torchattacks CIFAR-10 setting), and writing them
once keeps the attack that trains a model and the attack that evaluates it in step.

Families are those of ``unlearn_audit.data.dataset_family``: ``"mnist"`` (grey 28 x 28 digits
and the small ``digits`` set), ``"cifar"`` (colour 32 x 32) and ``"other"`` (anything else, which
gets the CIFAR setting: 8/255 is the common default for natural images).
"""

from __future__ import annotations

from dataclasses import dataclass

from attacks.spec import AttackSpec, check_choice, check_count, check_eps

__all__ = ["FAMILIES", "THREAT_MODELS", "ThreatModel", "pgd_spec", "threat_model"]


@dataclass(frozen=True, kw_only=True)
class ThreatModel:
    """An L-inf PGD setting: radius ``eps`` and ``steps`` steps of size ``alpha`` (pixel units)."""

    eps: float
    alpha: float
    steps: int


THREAT_MODELS: dict[str, ThreatModel] = {
    "mnist": ThreatModel(eps=0.3, alpha=0.01, steps=40),
    "cifar": ThreatModel(eps=8 / 255, alpha=2 / 255, steps=10),
    "other": ThreatModel(eps=8 / 255, alpha=2 / 255, steps=10),
}
FAMILIES: tuple[str, ...] = tuple(THREAT_MODELS)


def threat_model(
    family: str, *, eps: float | None = None, steps: int | None = None, alpha: float | None = None
) -> ThreatModel:
    """The family's default, with any of ``eps``, ``steps`` and ``alpha`` overridden.

    When ``eps`` or ``steps`` is overridden but ``alpha`` is not, the table's step no longer fits,
    so it is re-derived as ``2.5 * eps / steps`` (the robustness-library convention): enough for
    the attack to cross the ball from its centre to the edge and back.

    Raises:
        ConfigError: ``family`` is not one of ``FAMILIES``, or a bad override.
    """
    base = THREAT_MODELS[check_choice(family, FAMILIES, "data family")]
    e = base.eps if eps is None else check_eps(eps)
    s = base.steps if steps is None else steps
    check_count(s, "steps", 1)
    if alpha is None:
        alpha = base.alpha if (eps is None and steps is None) else 2.5 * e / s
    return ThreatModel(eps=e, alpha=alpha, steps=s)


def pgd_spec(
    family: str, *, eps: float | None = None, steps: int | None = None, alpha: float | None = None
) -> AttackSpec:
    """The PGD L-inf attack (random start) of ``threat_model(family, ...)``."""
    threat = threat_model(family, eps=eps, steps=steps, alpha=alpha)
    return AttackSpec.pgd(threat.eps, threat.alpha, threat.steps)
