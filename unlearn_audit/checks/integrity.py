"""Integrity: did unlearning change the model at all? Also measures the model distances."""

from __future__ import annotations

import torch

from unlearn_audit.checks.base import AuditCheck, Outcome
from unlearn_audit.context import ROLES, AuditContext
from unlearn_audit.metrics import kl_divergence, parameter_distance
from unlearn_audit.results import FAIL, PASS, rounded


class ModelChanged(AuditCheck):
    """Fails a model identical to the original in its parameters or in every output.

    The parameter and output distances it measures (original to unlearned, and unlearned to
    retrained when given) are reported alongside; tensors that cannot be compared are noted.
    """

    name = "model_changed"
    group = "integrity"
    stage = "distances"
    explanation = "The unlearned model must differ from the original; an unchanged model forgot nothing."

    def announce(self, ctx: AuditContext) -> str:
        return "parameter and output distances"

    def run(self, ctx: AuditContext) -> Outcome:
        distances, per_layer, notes = {}, {}, []
        pairs = [("original", "unlearned")] + ([("unlearned", "retrained")] if ctx.has_retrained else [])
        for a, b in pairs:
            key = f"{a}_to_{b}"
            va, vb = ctx.views[a], ctx.views[b]
            pd = parameter_distance(va.loaded.module, vb.loaded.module)
            distances[key] = {
                "parameters": pd.to_dict(),
                "kl_forget": rounded(kl_divergence(va.logits["forget"], vb.logits["forget"])),
                "kl_test": rounded(kl_divergence(va.logits["test"], vb.logits["test"])),
            }
            if pd.comparable:
                per_layer[key] = pd.per_layer
            else:
                notes.append(f"{key}: {pd.note}")
        params = distances["original_to_unlearned"]["parameters"]
        same_params = params["comparable"] and params["l2"] == 0.0
        orig, unl = ctx.views["original"].logits, ctx.views["unlearned"].logits
        same_outputs = all(torch.equal(orig[r], unl[r]) for r in ROLES)
        unchanged = same_params or same_outputs
        detail = (
            "the unlearned model is identical to the original "
            "(same parameters or same outputs on every example)"
            if unchanged
            else "the unlearned model differs from the original"
        )
        check = self.statement(FAIL if unchanged else PASS, params["l2"], 0.0, detail)
        return Outcome(check=check, distances=distances, per_layer=per_layer, notes=tuple(notes))
