"""Is a robust accuracy real, or is the gradient attack being fooled? Gradient-masking checks.

A model can look robust to PGD only because PGD cannot see a useful gradient: the forward pass
rounds, detaches or hard-thresholds its output, or the softmax saturates. Robust accuracy then
over-estimates robustness, and an unlearning audit would credit a deletion with robustness that
is not there. ``masking_checks`` runs the sanity checks that the AutoAttack and "evaluating
adversarial robustness" guides ask for (Croce & Hein 2020; Carlini et al. 2019) and says which
ones fail in a ``MaskingReport``:

* the input gradient is absent (no graph reaches the input), exactly zero, or not finite;
* a gradient-free random search (``attacks.random_search``) fools examples that PGD left robust;
* one FGSM step does better than the iterative attack at the same radius;
* the attack makes the model *more* accurate (accuracy on adversarial inputs above clean
  accuracy; robust accuracy itself cannot exceed clean accuracy, it requires both);
* two clean passes disagree (a randomised forward pass, which needs EOT attacks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.random_search import random_search_perturb
from attacks.robust import attack_guard, batches, evaluate_attack, predict_labels, seeded, share_of
from attacks.spec import AttackSpec, check_count, check_inputs
from unlearn_audit.errors import ConfigError

__all__ = ["GradientHealth", "MaskingFlag", "MaskingReport", "gradient_health", "masking_checks"]


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
    is the random search's, and ``search_only_share`` the share of examples only it fooled.
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

    @property
    def masked(self) -> bool:
        """True when any check failed: the robust accuracy should not be trusted as it is."""
        return bool(self.flags)

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(flag.code for flag in self.flags)


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


def _search_correct(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    spec: AttackSpec,
    *,
    queries: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Random-search outcome per example (correct on its adversarial input) and a second clean pass."""
    y_cpu = y.detach().cpu().long()
    correct = []
    with attack_guard(model, device), seeded(seed, device):
        generator = torch.Generator(device=device).manual_seed(seed)
        for xb, yb in batches(x, y_cpu, batch_size, device):
            adv = random_search_perturb(
                model, xb, yb, spec.eps, norm=spec.norm, queries=queries, generator=generator
            )
            correct.append(predict_labels(model, adv, batch_size, device) == yb.cpu())
        clean = predict_labels(model, x, batch_size, device) == y_cpu
    return torch.cat(correct) if correct else torch.zeros(0, dtype=torch.bool), clean


def _flags(report: MaskingReport, *, tolerance: float, zero_gradient_threshold: float) -> list[MaskingFlag]:
    """The failed checks of ``report`` (whose own ``flags`` are ignored)."""
    r, g = report, report.gradient
    single = r.single_step_robust_accuracy
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
            r.randomised,
            "randomised_forward",
            "two clean passes disagree: the forward pass is "
            "randomised, so robust accuracies are not comparable (use EOT attacks)",
        ),
    ]
    return [MaskingFlag(code=code, message=message) for failed, code, message in found if failed]


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
    check_count(queries, "queries", 0)
    if not (0.0 <= tolerance <= 1.0 and 0.0 <= zero_gradient_threshold <= 1.0):
        raise ConfigError(
            f"tolerance and zero_gradient_threshold must lie in [0, 1]; got {tolerance!r} "
            f"and {zero_gradient_threshold!r}"
        )
    run = dict(
        backend=backend,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        seed=seed,
        early_stop=early_stop,
    )
    outcome = evaluate_attack(model, x, y, spec, **run)
    single = None
    if spec.norm == "linf" and spec.name != "fgsm":
        single = evaluate_attack(model, x, y, AttackSpec.fgsm(spec.eps), **run).result.robust_accuracy
    search_ok, clean_again = _search_correct(
        model, x, y, spec, queries=queries, batch_size=batch_size, device=torch.device(device), seed=seed
    )
    robust_ok = outcome.robust_correct
    res = outcome.result
    report = MaskingReport(
        n=res.n,
        attack=res.label,
        clean_accuracy=res.clean_accuracy,
        robust_accuracy=res.robust_accuracy,
        adversarial_accuracy=res.adversarial_accuracy,
        single_step_robust_accuracy=single,
        search_robust_accuracy=share_of(outcome.clean_correct & search_ok),
        search_only_share=share_of(robust_ok & ~search_ok),
        gradient=gradient_health(model, x, y, batch_size=batch_size, device=device),
        randomised=not torch.equal(clean_again, outcome.clean_correct),
        flags=(),
    )
    flags = _flags(report, tolerance=tolerance, zero_gradient_threshold=zero_gradient_threshold)
    return replace(report, flags=tuple(flags))
