"""Robust accuracy of one model as the audit reports it: ACC, R-ACC and Gap = ACC - R-ACC.

The attack is PGD L-inf (Madry et al.) with the data family's threat model from
``attacks.threat`` (overriding ``steps`` or ``eps`` without ``alpha`` re-derives the step there),
run by ``attacks.robust.evaluate_attack``; the ``native`` back-end stops early per example, which
only saves time.

A PGD number alone can be faked: a model whose forward pass detaches its output, rounds its
input or answers with a one-hot vote gives PGD no gradient, and looks robust. So every
measurement also runs the gradient-masking checks of ``attacks.masking`` on a small subset. When
one fails, PGD is not trusted alone: a gradient-free random search (and, when given, inputs
crafted on another model, a transfer attack) attack every example, and an example counts as
robust only if no attack fools it. When even that cannot be trusted, the result says why in
``inconclusive_reason`` instead of reporting a number as robustness.

Tables and texts (families ``tabular`` and ``text``) are attacked in their own threat model
(``attacks.tabular``: standardised feature space within the training range; ``attacks.text``:
embedding space) by :func:`measure_modality`; there the masking check is the share of examples
whose input (or embedding) gradient is exactly zero, and a model without an embedding hook
cannot be measured at all: both make the result inconclusive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attacks.masking import MaskingReport, MaskingThresholds, inspect_attack, search_correct
from attacks.pgd import project
from attacks.robust import (
    adversarial_examples,
    as_float_logits,
    attack_guard,
    evaluate_attack,
    predict_labels,
)
from attacks.spec import AttackSpec
from attacks.tabular import BatchOutcome, FeatureBox, tabular_pgd
from attacks.text import embedding_pgd, has_embedding_hook
from attacks.threat import pgd_spec
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import DataError

__all__ = [
    "MASKING_SAMPLES",
    "MIN_SEARCH_QUERIES",
    "measure_robustness",
    "pgd_spec",
    "robustness_measure",
    "robustness_subset",
    "transfer_examples",
]

# Examples the masking checks look at: enough to see a systematic effect, cheap on any model.
MASKING_SAMPLES = 64
# Below this many queries per example a random search says little about a model PGD cannot
# attack; with such a budget and no transfer attack the result is inconclusive.
MIN_SEARCH_QUERIES = 100


def transfer_examples(
    original: nn.Module,
    data: TensorSet,
    *,
    family: str,
    num_classes: int,
    eps: float | None = None,
    steps: int | None = None,
    alpha: float | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> Tensor:
    """PGD adversarial inputs crafted on ``original`` for ``data``, to pass as ``transfer_from``.

    Craft them once and reuse them for every audited model: an unlearned model shares most of
    the original's weights, so inputs that fool the original usually fool it too, whatever its
    forward pass does to gradients. All steps are taken (no early stop): inputs pushed further
    past the decision boundary transfer better.
    """
    spec = pgd_spec(family, eps=eps, steps=steps, alpha=alpha)
    return adversarial_examples(
        original,
        data.x,
        data.y,
        spec,
        backend="native",
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )


def _transfer_correct(
    module: nn.Module, transfer_from: Tensor, data: TensorSet, spec: AttackSpec, batch_size: int, device
) -> Tensor:
    """Per example, whether ``module`` classifies its transferred input correctly (CPU bool).

    The inputs are projected onto the threat model around ``data.x`` first, so a transfer source
    cannot smuggle in a larger perturbation than PGD may use.
    """
    if not isinstance(transfer_from, Tensor) or tuple(transfer_from.shape) != tuple(data.x.shape):
        got = (
            tuple(transfer_from.shape) if isinstance(transfer_from, Tensor) else type(transfer_from).__name__
        )
        raise DataError(
            f"transfer_from must be adversarial inputs shaped like the attacked data "
            f"{tuple(data.x.shape)}; got {got}"
        )
    x_t = project(transfer_from.detach().cpu().to(data.x.dtype), data.x.detach().cpu(), spec.eps, spec.norm)
    dev = torch.device(device)
    model = as_float_logits(module)
    with attack_guard(model, dev):
        return predict_labels(model, x_t, batch_size, dev) == data.y.detach().cpu().long()


@dataclass(frozen=True, kw_only=True)
class _Combined:
    """Per-example robustness after every attack that was needed, and what ran."""

    correct: Tensor
    attacks: tuple[str, ...]
    fallback: str | None


def _combine(
    robust: Tensor, report: MaskingReport, rest_search: Tensor | None, transfer: Tensor | None
) -> _Combined:
    """PGD alone when no check failed; else an example is robust only if no attack fools it."""
    if not report.masked:
        return _Combined(correct=robust, attacks=("pgd",), fallback=None)
    searched = (
        report.search_correct if rest_search is None else torch.cat([report.search_correct, rest_search])
    )
    correct, used = robust & searched, ["random_search"]
    if transfer is not None:
        correct, used = correct & transfer, [*used, "transfer"]
    return _Combined(correct=correct, attacks=("pgd", *used), fallback="+".join(used))


def _inconclusive_reason(report: MaskingReport, *, queries: int, transfer: bool) -> str | None:
    """Why even the fallback's robust accuracy cannot be trusted, or None when it can."""
    if report.randomised:
        return (
            "the model's forward pass is randomised (two clean passes disagree): its robust accuracy "
            "needs an expectation-over-transformation attack, which this audit does not run"
        )
    if report.gradient_unusable and not transfer and report.flat_share > 0.5:
        return (
            f"gradient attacks are blind on this model and its scores do not move under random "
            f"perturbations for {report.flat_share:.0%} of the examples (hard labels), so the "
            f"gradient-free search gets no signal; a transfer attack from a reference model is needed"
        )
    if report.gradient_unusable and not transfer and queries < MIN_SEARCH_QUERIES:
        return (
            f"gradient attacks are blind on this model and the gradient-free search had only {queries} "
            f"queries per example (at least {MIN_SEARCH_QUERIES} are needed), with no transfer attack "
            f"to back it"
        )
    return None


def _masking_entry(report: MaskingReport, queries: int, seconds: float) -> dict:
    """The ``masking`` part of the result: the verdict, the failed checks and the evidence."""
    transfer = report.transfer_robust_accuracy
    return {
        "masked": report.masked,
        "flags": list(report.codes),
        "detail": "; ".join(flag.message for flag in report.flags),
        "n": report.n,
        "queries": queries,
        "pgd_robust_accuracy": round(report.robust_accuracy, 6),
        "search_robust_accuracy": round(report.search_robust_accuracy, 6),
        "transfer_robust_accuracy": None if transfer is None else round(transfer, 6),
        "seconds": round(seconds, 3),
    }


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
    transfer_from: Tensor | None = None,
    masking_samples: int = MASKING_SAMPLES,
    search_queries: int = 300,
) -> dict:
    """Clean accuracy, robust accuracy and their gap on ``data``, with per-example outcomes.

    An example counts as robust only if it is classified correctly both clean and under attack
    (``correct``, one 0/1 per example). ``masking`` reports the gradient-masking checks run on
    the first ``masking_samples`` examples (a random search of ``search_queries`` queries per
    example, FGSM, gradient health, a second clean pass, and the transfer attack when
    ``transfer_from`` is given: inputs aligned with ``data``, e.g. from ``transfer_examples``).
    When a check fails, ``robust_accuracy`` and ``correct`` also count the random search and the
    transfer attack on every example (``fallback`` names them; ``pgd_robust_accuracy`` keeps the
    PGD figure), and ``inconclusive_reason`` says when even that cannot be trusted.

    Integer or boolean logits are cast to float; the model's modes, gradients and device are as
    before the call. Tables and texts go to :func:`measure_modality` (image-only options unused)."""
    spec = pgd_spec(family, eps=eps, steps=steps, alpha=alpha)
    if family in MODALITY_FAMILIES:
        return measure_modality(
            module, data, spec, family=family, seed=seed, device=device, batch_size=batch_size
        )
    limits = MaskingThresholds(queries=search_queries)
    batching = dict(batch_size=batch_size, device=device, seed=seed)
    run = dict(num_classes=num_classes, **batching)
    start = time.perf_counter()
    outcome = evaluate_attack(module, data.x, data.y, spec, backend=backend, early_stop=True, **run)
    checked = time.perf_counter()
    transfer = None
    if transfer_from is not None:
        transfer = _transfer_correct(module, transfer_from, data, spec, batch_size, device)
    m = min(max(int(masking_samples), 1), len(data))
    head = torch.arange(m)
    report = inspect_attack(
        module,
        data.x[:m],
        data.y[:m],
        spec,
        outcome.subset(head),
        backend=backend,
        thresholds=limits,
        transfer_correct=None if transfer is None else transfer[:m],
        **run,
    )
    rest = None
    if report.masked and m < len(data):
        rest = search_correct(module, data.x[m:], data.y[m:], spec, queries=search_queries, **batching)
    combined = _combine(outcome.robust_correct, report, rest, transfer)
    acc, racc = outcome.result.clean_accuracy, float(combined.correct.float().mean())
    return {
        "attack": f"PGD-{spec.steps} L-inf eps={spec.eps:.4g} step={spec.alpha:.4g} ({backend})",
        "eps": spec.eps,
        "steps": spec.steps,
        "n": len(data),
        "clean_accuracy": round(acc, 6),
        "robust_accuracy": round(racc, 6),
        "gap": round(acc - racc, 6),
        "seconds": round(time.perf_counter() - start, 3),
        "correct": np.asarray(combined.correct.numpy(), dtype=int).tolist(),
        "pgd_robust_accuracy": round(outcome.result.robust_accuracy, 6),
        "masking": _masking_entry(report, search_queries, time.perf_counter() - checked),
        "attacks": list(combined.attacks),
        "fallback": combined.fallback,
        "inconclusive_reason": _inconclusive_reason(
            report, queries=search_queries, transfer=transfer is not None
        ),
    }


MODALITY_FAMILIES = ("tabular", "text")
# Above this share of examples with an exactly zero gradient, PGD's figure on a table or a text
# says nothing: the model hides its gradient (or answers with hard labels).
MAX_ZERO_GRADIENT_SHARE = 0.5


def measure_modality(
    module: nn.Module,
    data: TensorSet,
    spec: AttackSpec,
    *,
    family: str,
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> dict:
    """:func:`measure_robustness` for a table (``attacks.tabular``) or a text (``attacks.text``).

    The result has the same keys as for images; ``masking`` holds the zero-gradient share.
    """
    start, dev = time.perf_counter(), torch.device(device)
    if family == "text" and not has_embedding_hook(module):
        reason = (
            "the model exposes no embedding hook (embed / classify_embedded), so embedding-space PGD "
            "cannot attack it"
        )
        return _unmeasured(spec, data, family, start, reason)
    outcomes = _attack_batches(
        module, data, spec, family=family, seed=seed, device=dev, batch_size=batch_size
    )
    clean, robust, zero = (
        torch.cat([getattr(o, f).cpu() for o in outcomes]) for f in BatchOutcome.__dataclass_fields__
    )
    share = float(zero.float().mean())
    reason = None
    if share > MAX_ZERO_GRADIENT_SHARE:
        reason = (
            f"the input gradient is exactly zero for {share:.0%} of the examples: PGD gets no signal from "
            f"this model, so its robust accuracy cannot be trusted"
        )
    result = _modality_result(spec, family, clean, robust, start)
    result["masking"] = {
        "masked": reason is not None,
        "flags": ["zero_gradient"] if reason else [],
        "detail": reason or "",
        "n": len(data),
        "zero_gradient_share": round(share, 6),
    }
    result["inconclusive_reason"] = reason
    return result


def _attack_batches(
    module: nn.Module, data: TensorSet, spec: AttackSpec, *, family: str, seed: int, device, batch_size: int
) -> list[BatchOutcome]:
    """The modality's PGD on ``data`` in batches, seeded, with the model guarded."""
    domain = data.input_domain()
    gen = torch.Generator().manual_seed(seed)
    pgd = dict(eps=spec.eps, alpha=spec.alpha, steps=spec.steps, generator=gen)
    model = module if family == "text" else as_float_logits(module)
    box = None
    if family == "tabular":
        box = FeatureBox(**{k: v.to(device) for k, v in vars(FeatureBox.from_domain(domain)).items()})
    out = []
    with attack_guard(module, device):
        for i in range(0, len(data), batch_size):
            x, y = data.x[i : i + batch_size].to(device), data.y[i : i + batch_size].to(device)
            if box is None:
                out.append(embedding_pgd(model, x, y, pad_id=domain.pad_id, **pgd))
            else:
                out.append(tabular_pgd(model, x, y, box, **pgd))
    return out


def _attack_name(spec: AttackSpec, family: str) -> str:
    where = (
        "standardised feature space, within the training range" if family == "tabular" else "embedding space"
    )
    return f"PGD-{spec.steps} L-inf eps={spec.eps:.4g} step={spec.alpha:.4g} ({where})"


def _modality_result(spec: AttackSpec, family: str, clean: Tensor, robust: Tensor, start: float) -> dict:
    acc, racc = float(clean.float().mean()), float(robust.float().mean())
    return {
        "attack": _attack_name(spec, family),
        "eps": spec.eps,
        "steps": spec.steps,
        "n": int(clean.numel()),
        "clean_accuracy": round(acc, 6),
        "robust_accuracy": round(racc, 6),
        "gap": round(acc - racc, 6),
        "seconds": round(time.perf_counter() - start, 3),
        "correct": np.asarray(robust.numpy(), dtype=int).tolist(),
        "pgd_robust_accuracy": round(racc, 6),
        "attacks": ["pgd"],
        "fallback": None,
    }


def _unmeasured(spec: AttackSpec, data: TensorSet, family: str, start: float, reason: str) -> dict:
    """A result that says why no robust accuracy could be measured (its figures read 0)."""
    none = torch.zeros(len(data), dtype=torch.bool)
    result = _modality_result(spec, family, none, none, start)
    result.update(correct=None, attacks=[], inconclusive_reason=reason)
    result["masking"] = {"masked": True, "flags": ["no_embedding_hook"], "detail": reason, "n": len(data)}
    return result


def robustness_subset(n_test: int, samples: int, seed: int) -> np.ndarray:
    """Sorted indices of the ``min(samples, n_test)`` test examples attacked for seed ``seed``."""
    n = min(samples, n_test)
    return np.sort(np.random.default_rng(seed).choice(n_test, size=n, replace=False))


def robustness_measure(
    test: TensorSet,
    *,
    family: str,
    num_classes: int,
    samples: int,
    eps: float | None,
    steps: int | None,
    seed: int,
    device,
    original: nn.Module | None = None,
):
    """``measure(module) -> dict``: :func:`measure_robustness` on the seed's fixed subset of ``test``,
    so every model is attacked on the same examples.

    With ``original``, inputs crafted on it are made once (on first use) and tried on every
    model as a transfer attack: a model that masks its gradients but keeps the original's
    decision boundary is then still measured.
    """
    subset = test.subset(robustness_subset(len(test), samples, seed))
    crafted: list[Tensor] = []

    def measure(module) -> dict:
        if original is not None and not crafted and family not in MODALITY_FAMILIES:
            crafted.append(
                transfer_examples(
                    original, subset, family=family, num_classes=num_classes, eps=eps, steps=steps,
                    seed=seed, device=device,
                )
            )  # fmt: skip
        return measure_robustness(
            module,
            subset,
            family=family,
            num_classes=num_classes,
            eps=eps,
            steps=steps,
            seed=seed,
            device=device,
            transfer_from=crafted[0] if crafted else None,
        )

    return measure
