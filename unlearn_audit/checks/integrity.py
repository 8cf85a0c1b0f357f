"""Integrity: is the unlearned model more than the original in disguise? Also measures distances.

Judged before any statistics: a model holding the original's weights (renamed, re-exported,
nudged) or answering like the original up to a logit scale and shift forgot nothing, whatever
its other scores. The measurements and thresholds are in :mod:`unlearn_audit.integrity`.
"""

from __future__ import annotations

import torch

from unlearn_audit.checks.base import AuditCheck, Outcome
from unlearn_audit.context import ROLES, AuditContext
from unlearn_audit.integrity import (
    MIN_OUTPUT_RESIDUAL,
    MIN_RELATIVE_CHANGE,
    output_residual,
    relative_parameter_change,
)
from unlearn_audit.metrics import kl_divergence, parameter_distance
from unlearn_audit.results import FAIL, PASS, rounded


def _all_logits(ctx: AuditContext, name: str) -> torch.Tensor:
    return torch.cat([ctx.views[name].logits[r] for r in ROLES])


def pair_distances(ctx: AuditContext, a: str, b: str) -> tuple[dict, dict | None, str | None]:
    """Distances from model ``a`` to ``b``: the JSON entry, per-tensor distances, and a note.

    ``parameters`` compares tensors by name (per-layer plot); ``relative_change`` matches them by
    shape whatever their names (``None`` when the architectures differ); ``output_residual`` is
    what no logit scale and shift explains, on every role.
    """
    va, vb = ctx.views[a], ctx.views[b]
    by_name = parameter_distance(va.loaded.module, vb.loaded.module)
    change = relative_parameter_change(va.loaded.module, vb.loaded.module)
    entry = {
        "parameters": by_name.to_dict(),
        "kl_forget": rounded(kl_divergence(va.logits["forget"], vb.logits["forget"])),
        "kl_test": rounded(kl_divergence(va.logits["test"], vb.logits["test"])),
        "relative_change": rounded(change.relative, 9),
        "output_residual": rounded(output_residual(_all_logits(ctx, a), _all_logits(ctx, b)), 9),
    }
    note = None
    if not change.comparable:
        note = f"{a}_to_{b}: weights not compared ({change.note})"
    elif not by_name.comparable:
        note = f"{a}_to_{b}: per-tensor distances skipped ({by_name.note}); tensors were matched by shape"
    return entry, (by_name.per_layer if by_name.comparable else None), note


def disguised_original(entry: dict) -> str | None:
    """Why a model counts as the original (its weights or its outputs), or ``None`` when it does not."""
    change, residual = entry["relative_change"], entry["output_residual"]
    if change is not None and change < MIN_RELATIVE_CHANGE:
        return (
            f"relative parameter change {change:.3g} is below {MIN_RELATIVE_CHANGE:g}: it holds the "
            "original's weights (tensors matched by shape, names and format ignored)"
        )
    if residual < MIN_OUTPUT_RESIDUAL:
        return (
            f"output residual {residual:.3g} is below {MIN_OUTPUT_RESIDUAL:g}: its logits are the "
            "original's up to a scale and a per-example shift"
        )
    return None


class ModelChanged(AuditCheck):
    """Fails a model that is the original up to packaging or post-processing of its logits.

    Reports, for every audited model against the original (and unlearned against retrained),
    the relative parameter change and the output residual.
    """

    name = "model_changed"
    group = "integrity"
    stage = "distances"
    explanation = (
        "The unlearned model must differ from the original: not the same weights under other names or "
        "in another format, and not the same outputs rescaled or shifted. An unchanged model forgot nothing."
    )

    def announce(self, ctx: AuditContext) -> str:
        return "parameter and output distances"

    def run(self, ctx: AuditContext) -> Outcome:
        distances, per_layer, notes = {}, {}, []
        pairs = [("original", "unlearned")]
        if ctx.has_retrained:
            pairs += [("original", "retrained"), ("unlearned", "retrained")]
        for a, b in pairs:
            key = f"{a}_to_{b}"
            distances[key], layers, note = pair_distances(ctx, a, b)
            if layers is not None:
                per_layer[key] = layers
            if note:
                notes.append(note)
        if ctx.has_retrained and disguised_original(distances["original_to_retrained"]):
            notes.append("the retrained model is essentially the original: it is no reference for forgetting")
        entry = distances["original_to_unlearned"]
        reason = disguised_original(entry)
        detail = (
            f"the unlearned model is the original in disguise: {reason}"
            if reason
            else f"the unlearned model differs from the original (relative parameter change "
            f"{_shown(entry['relative_change'])}, output residual {entry['output_residual']:.3g})"
        )
        check = self.statement(
            FAIL if reason else PASS, entry["relative_change"], MIN_RELATIVE_CHANGE, detail
        )
        return Outcome(check=check, distances=distances, per_layer=per_layer, notes=tuple(notes))


def _shown(value: float | None) -> str:
    return "not comparable" if value is None else f"{value:.3g}"
