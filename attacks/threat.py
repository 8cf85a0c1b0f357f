"""The threat model the audit assumes for each data family: L-inf radius, PGD step size and steps.

One table, read by every place that needs a default (robust accuracy in the audit, the
robustness study, adversarial training): the numbers are the usual ones of the literature
(Madry et al. 2018 for MNIST; the RobustBench / torchattacks CIFAR-10 setting), and writing them
once keeps the attack that trains a model and the attack that evaluates it in step.

Families are judged from the data (``unlearn_audit.data_domain``): ``"mnist"`` (grey 28 x 28
digits and the small ``digits`` set), ``"cifar"`` (colour 32 x 32) and ``"other"`` (any other
images, which get the CIFAR setting: 8/255 is the common default for natural images), in pixel
units; ``"tabular"`` (``N x D`` features), where eps is in standard deviations of each feature
and the attack keeps to the training range and the columns' types (``attacks.tabular``); and
``"text"`` (``N x L`` token ids), where eps bounds each coordinate of each token's embedding
(``attacks.text``). The table and text radii are this tool's choice, not a literature standard:
a quarter of a standard deviation per feature is a change a loan officer would call small, and
0.05 per embedding coordinate moves the mean embedding of a text by a small fraction of its
spread (embeddings start as unit normals).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attacks.spec import AttackSpec, check_choice, check_count, check_eps

__all__ = ["FAMILIES", "THREAT_MODELS", "ThreatModel", "infer_family", "pgd_spec", "threat_model"]


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
    "tabular": ThreatModel(eps=0.25, alpha=0.025, steps=20),
    "text": ThreatModel(eps=0.05, alpha=0.01, steps=10),
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


# Grey image sizes of the MNIST-like family: MNIST / Fashion-MNIST (28 x 28) and sklearn digits (8 x 8).
_GREY_SIZES = ((28, 28), (8, 8))


def infer_family(x: Tensor) -> tuple[str, str]:
    """The threat-model family the data looks like, and why: judged from the tensor, not its name.

    A data set's name says little (a file called ``mnist.npz`` may hold anything), while the
    threat model must fit what the pixels are: eps 0.3 is right for grey digits in [0, 1] and
    absurd for colour photographs. So: ``"mnist"`` for single-channel 28 x 28 or 8 x 8 images in
    [0, 1], ``"cifar"`` for three-channel images in [0, 1], ``"other"`` for anything else, with a
    reason a report can show.
    """
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        return "other", f"inputs are not a non-empty batch of N x C x H x W images (shape {shape})"
    if not x.is_floating_point():
        return "other", f"inputs are {x.dtype}, not floating-point pixels in [0, 1]"
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        return "other", f"pixel values span [{lo:.4g}, {hi:.4g}], not [0, 1]"
    channels, size = int(x.shape[1]), (int(x.shape[2]), int(x.shape[3]))
    if channels == 1 and size in _GREY_SIZES:
        return "mnist", f"single-channel {size[0]}x{size[1]} images in [0, 1]: the MNIST-like threat model"
    if channels == 3:
        return "cifar", f"three-channel {size[0]}x{size[1]} images in [0, 1]: the natural-image threat model"
    return (
        "other",
        f"{channels}-channel {size[0]}x{size[1]} images fit neither the MNIST-like nor the CIFAR-like case",
    )
