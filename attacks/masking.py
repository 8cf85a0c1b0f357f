"""Is a robust accuracy real, or is the gradient attack being fooled? Gradient-masking checks.

A model can look robust to PGD only because PGD cannot see a useful gradient: the forward pass
rounds, detaches or hard-thresholds its output, or the softmax saturates. Robust accuracy then
over-estimates robustness, and an unlearning audit would credit a deletion with robustness that
is not there. ``masking_checks`` runs the sanity checks that the AutoAttack and "evaluating
adversarial robustness" guides ask for (Croce & Hein 2020; Carlini et al. 2019) and says which
ones fail in a ``MaskingReport``:

* the input gradient is absent (no graph reaches the input), exactly zero, or not finite;
* a gradient-free random search (``attacks.random_search``) fools examples that PGD left robust;
* adversarial inputs crafted on another model (a transfer attack, e.g. from the original model
  of an unlearning audit) fool examples that PGD left robust;
* one FGSM step does better than the iterative attack at the same radius;
* the attack makes the model *more* accurate (accuracy on adversarial inputs above clean
  accuracy; robust accuracy itself cannot exceed clean accuracy, it requires both);
* two clean passes disagree (a randomised forward pass, which needs EOT attacks);
* the scores do not move at all under random perturbations inside the threat model (hard labels
  or coarsely quantised scores): then a score-based search gets no signal either.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.pgd import project, sample_like
from attacks.random_search import random_search_perturb
from attacks.robust import (
    AttackOutcome,
    as_float_logits,
    attack_guard,
    batches,
    evaluate_attack,
    predict_labels,
    seeded,
    share_of,
)
from attacks.spec import AttackSpec, check_count, check_inputs
from unlearn_audit.errors import ConfigError

__all__ = [
    "GradientHealth",
    "MaskingFlag",
    "MaskingReport",
    "MaskingThresholds",
    "gradient_health",
    "flat_share",
    "inspect_attack",
    "masking_checks",
    "search_correct",
]


@dataclass(frozen=True, kw_only=True)
class GradientHealth:
    """Input gradients of the cross-entropy, per example: how many are useless to an attack.

    ``zero_share`` counts examples whose gradient is exactly zero everywhere (absent gradients
    count as zero); ``nonfinite_share`` those with a NaN or infinite entry; ``absent`` says that
    no gradient reaches the input at all (a detached or hard-argmax output). Shares are NaN for
    an empty input.
    """

    zero_share: float
    nonfinite_share: float
    absent: bool


@dataclass(frozen=True, kw_only=True)
class MaskingFlag:
    """One failed check: a stable ``code`` for machines and a ``message`` for people."""

    code: str
    message: str


@dataclass(frozen=True, kw_only=True)
class MaskingReport:
    """The checks of ``masking_checks`` on one model, attack and set of examples.

    Accuracies are fractions in [0, 1] over ``n`` examples. ``robust_accuracy`` and
    ``adversarial_accuracy`` are those of the attack under test; ``single_step_robust_accuracy``
    is FGSM's at the same radius (None when the attack is FGSM or L2); ``search_robust_accuracy``
    is the random search's, and ``search_only_share`` the share of examples it fooled but the
    attack did not; ``transfer_robust_accuracy`` and ``transfer_only_share`` are the same for the
    transfer attack (None without one). ``flat_share`` is the share of examples whose scores did
    not change at all at a random vertex of the threat model. ``search_correct`` holds the random
    search's per-example outcome (classified correctly on its adversarial input; CPU bool), so a
    caller can combine it with other attacks without searching again.
    """

    n: int
    attack: str
    clean_accuracy: float
    robust_accuracy: float
    adversarial_accuracy: float
    single_step_robust_accuracy: float | None
    search_robust_accuracy: float
    search_only_share: float
    gradient: GradientHealth
    randomised: bool
    flags: tuple[MaskingFlag, ...]
    transfer_robust_accuracy: float | None = None
    transfer_only_share: float | None = None
    flat_share: float = 0.0
    search_correct: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool), repr=False)

    @property
    def gradient_unusable(self) -> bool:
        """Gradient attacks are blind here: no gradient, or a zero one on most examples."""
        return self.gradient.absent or self.gradient.zero_share > 0.5

    @property
    def masked(self) -> bool:
        """True when any check failed: the robust accuracy should not be trusted as it is."""
        return bool(self.flags)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(flag.code for flag in self.flags)


@dataclass(frozen=True, kw_only=True)
class MaskingThresholds:
    """When a check fails, and how hard the gradient-free search tries.

    Shares and accuracy differences above ``tolerance`` (default one point) fail a check; the
    zero-gradient check fails above ``zero_gradient_threshold`` (default 5 %, AutoAttack's flag).
    ``queries`` is the random search's budget per example.
    """

    queries: int = 300
    tolerance: float = 0.01
    zero_gradient_threshold: float = 0.05

    def __post_init__(self) -> None:
        check_count(self.queries, "queries", 0)
        if not (0.0 <= self.tolerance <= 1.0 and 0.0 <= self.zero_gradient_threshold <= 1.0):
            raise ConfigError(
                f"tolerance and zero_gradient_threshold must lie in [0, 1]; got {self.tolerance!r} "
                f"and {self.zero_gradient_threshold!r}"
            )


def _batch_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor | None:
    """Input gradient of the summed cross-entropy, or None when no graph reaches the input."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        if not loss.requires_grad:
            return None
        (grad,) = torch.autograd.grad(loss, x, allow_unused=True)
    return grad


def gradient_health(
    model: nn.Module, x: Tensor, y: Tensor, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> GradientHealth:
    """How many input gradients are absent, zero or not finite (eval mode, model state restored)."""
    check_inputs(x, y)
    check_count(batch_size, "batch_size", 1)
    n = int(x.shape[0])
    if n == 0:
        return GradientHealth(zero_share=float("nan"), nonfinite_share=float("nan"), absent=False)
    dev = torch.device(device)
    model = as_float_logits(model)
    zero = nonfinite = 0
    absent = False
    with attack_guard(model, dev):
        for xb, yb in batches(x, y, batch_size, dev):
            grad = _batch_gradient(model, xb, yb)
            if grad is None:
                absent, zero = True, zero + len(xb)
                continue
            flat = grad.flatten(1)
            zero += int((flat == 0).all(dim=1).sum())
            nonfinite += int((~torch.isfinite(flat)).any(dim=1).sum())
    return GradientHealth(zero_share=zero / n, nonfinite_share=nonfinite / n, absent=absent)


def search_correct(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    queries: int,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> Tensor:
    """Per example, whether the model still classifies the random search's adversarial input
    correctly (CPU bool); seeded, model state and RNG states restored."""
    dev = torch.device(device)
    model = as_float_logits(model)
    y_cpu = y.detach().cpu().long()
    correct = []
    with attack_guard(model, dev), seeded(seed, dev):
        generator = torch.Generator(device=dev).manual_seed(seed)
        for xb, yb in batches(x, y_cpu, batch_size, dev):
            adv = random_search_perturb(
                model, xb, yb, spec.eps, norm=spec.norm, queries=queries, generator=generator
            )
            correct.append(predict_labels(model, adv, batch_size, dev) == yb.cpu())
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool)


def _clean_again(
    model: nn.Module, x: Tensor, y: Tensor, batch_size: int, device: torch.device, seed: int
) -> Tensor:
    """A second clean pass, under its own seed: does the model give the same answers twice?"""
    model = as_float_logits(model)
    with attack_guard(model, device), seeded(seed + 1, device):
        return predict_labels(model, x, batch_size, device) == y.detach().cpu().long()


def flat_share(
    model: nn.Module,
    x: Tensor,
    spec: AttackSpec,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> float:
    """Share of examples whose scores are identical at ``x`` and at a random vertex of its ball.

    A model with honest scores moves them under any perturbation of this size; one that outputs
    hard labels (a one-hot vote) or scores rounded to a coarse grid does not, so neither a gradient
    nor a score-based search can tell which way its decision boundary lies.
    """
    dev = torch.device(device)
    model = as_float_logits(model)
    flat, n = 0, int(x.shape[0])
    with attack_guard(model, dev), seeded(seed, dev), torch.no_grad():
        generator = torch.Generator(device=dev).manual_seed(seed)
        for i in range(0, n, batch_size):
            xb = x[i : i + batch_size].detach().to(dev)
            signs = torch.where(sample_like(torch.rand, xb, generator) < 0.5, -spec.eps, spec.eps)
            moved = project(xb + signs, xb, spec.eps, spec.norm)
            flat += int((model(xb) == model(moved)).all(dim=1).sum())
    return flat / n if n else float("nan")


def _flags(report: MaskingReport, *, tolerance: float, zero_gradient_threshold: float) -> list[MaskingFlag]:
    """The failed checks of ``report`` (whose own ``flags`` are ignored)."""
    r, g = report, report.gradient
    single = r.single_step_robust_accuracy
    transfer = r.transfer_only_share
    found: list[tuple[bool, str, str]] = [
        (
            g.absent,
            "no_gradient",
            "no gradient reaches the input (a detached or hard-argmax output): "
            "gradient attacks cannot move, their robust accuracy is meaningless",
        ),
        (
            not g.absent and g.zero_share > zero_gradient_threshold,
            "zero_gradient",
            f"the input gradient is exactly zero for {g.zero_share:.1%} of the examples (rounding, "
            f"quantisation or a saturated softmax): gradient attacks stall on them",
        ),
        (
            g.nonfinite_share > 0,
            "nonfinite_gradient",
            f"the input gradient is NaN or infinite for {g.nonfinite_share:.1%} of the examples",
        ),
        (
            r.search_only_share > tolerance,
            "search_beats_gradient",
            f"a gradient-free random search fools {r.search_only_share:.1%} of the examples that "
            f"{r.attack} left robust (R-ACC {r.search_robust_accuracy:.4f} vs {r.robust_accuracy:.4f})",
        ),
        (
            transfer is not None and transfer > tolerance,
            "transfer_beats_gradient",
            f"inputs crafted on another model fool {transfer or 0.0:.1%} of the examples that "
            f"{r.attack} left robust (R-ACC {r.transfer_robust_accuracy or 0.0:.4f} vs "
            f"{r.robust_accuracy:.4f})",
        ),
        (
            single is not None and r.robust_accuracy > single + tolerance,
            "single_step_beats_iterative",
            f"one FGSM step leaves robust accuracy {single or 0.0:.4f}, below the iterative "
            f"{r.attack} ({r.robust_accuracy:.4f})",
        ),
        (
            r.adversarial_accuracy > r.clean_accuracy + tolerance,
            "attack_raises_accuracy",
            f"accuracy on adversarial inputs {r.adversarial_accuracy:.4f} exceeds clean accuracy "
            f"{r.clean_accuracy:.4f}: the attack makes the model more accurate (broken attack or "
            f"randomised model)",
        ),
        (
            r.flat_share > 0.5,
            "flat_output",
            f"the scores do not change at all at a random point of the threat model for "
            f"{r.flat_share:.1%} of the examples (hard labels or coarsely quantised scores): "
            f"score-based attacks get no signal either",
        ),
        (
            r.randomised,
            "randomised_forward",
            "two clean passes disagree: the forward pass is "
            "randomised, so robust accuracies are not comparable (use EOT attacks)",
        ),
    ]
    return [MaskingFlag(code=code, message=message) for failed, code, message in found if failed]


def inspect_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    outcome: AttackOutcome,
    *,
    num_classes: int,
    backend: str = "native",
    early_stop: bool = True,
    thresholds: MaskingThresholds | None = None,
    transfer_correct: Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> MaskingReport:
    """The gradient-masking checks of the module docstring for an attack that already ran.

    ``outcome`` is ``spec``'s run on ``x`` (``evaluate_attack``); ``transfer_correct`` says, per
    example, whether the model classifies a transferred adversarial input correctly (None: no
    transfer attack). Other arguments are as in ``masking_checks``.
    """
    limits = thresholds or MaskingThresholds()
    dev = torch.device(device)
    single = None
    if spec.norm == "linf" and spec.name != "fgsm":
        run = dict(backend=backend, num_classes=num_classes, batch_size=batch_size, device=dev, seed=seed)
        fgsm = AttackSpec.fgsm(spec.eps)
        single = evaluate_attack(model, x, y, fgsm, early_stop=early_stop, **run).result.robust_accuracy
    search_ok = search_correct(
        model, x, y, spec, queries=limits.queries, batch_size=batch_size, device=dev, seed=seed
    )
    robust_ok, clean_ok, res = outcome.robust_correct, outcome.clean_correct, outcome.result
    transfer = {}
    if transfer_correct is not None:
        transfer = dict(
            transfer_robust_accuracy=share_of(clean_ok & transfer_correct),
            transfer_only_share=share_of(robust_ok & ~transfer_correct),
        )
    report = MaskingReport(
        n=res.n,
        attack=res.label,
        clean_accuracy=res.clean_accuracy,
        robust_accuracy=res.robust_accuracy,
        adversarial_accuracy=res.adversarial_accuracy,
        single_step_robust_accuracy=single,
        search_robust_accuracy=share_of(clean_ok & search_ok),
        search_only_share=share_of(robust_ok & ~search_ok),
        gradient=gradient_health(model, x, y, batch_size=batch_size, device=dev),
        randomised=not torch.equal(_clean_again(model, x, y, batch_size, dev, seed), clean_ok),
        flat_share=flat_share(model, x, spec, batch_size=batch_size, device=dev, seed=seed),
        flags=(),
        search_correct=search_ok,
        **transfer,
    )
    flags = _flags(report, tolerance=limits.tolerance, zero_gradient_threshold=limits.zero_gradient_threshold)
    return replace(report, flags=tuple(flags))


def masking_checks(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    num_classes: int,
    backend: str = "native",
    early_stop: bool = True,
    queries: int = 300,
    tolerance: float = 0.01,
    zero_gradient_threshold: float = 0.05,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> MaskingReport:
    """Run ``spec`` (as ``robust_accuracy`` does) and the gradient-masking checks of the module docstring.

    Shares and accuracy differences above ``tolerance`` (default one point) fail a check; the
    zero-gradient check fails above ``zero_gradient_threshold`` (default 5 %, AutoAttack's flag).
    ``queries`` is the random search's budget per example. The model's state is restored, as in
    ``robust_accuracy``; other arguments are as there (``early_stop`` defaults to True, as in the
    audit's PGD).
    """
    limits = MaskingThresholds(
        queries=queries, tolerance=tolerance, zero_gradient_threshold=zero_gradient_threshold
    )
    run = dict(num_classes=num_classes, batch_size=batch_size, device=device, seed=seed)
    outcome = evaluate_attack(model, x, y, spec, backend=backend, early_stop=early_stop, **run)
    return inspect_attack(
        model, x, y, spec, outcome, backend=backend, early_stop=early_stop, thresholds=limits, **run
    )
