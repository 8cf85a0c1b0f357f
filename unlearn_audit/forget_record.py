"""The forget set an audit uses must be the one the audited models were made for.

``random:F`` draws the forget set with a seed. ``train --forget`` and ``unlearn`` record the
spec, the seed and a SHA-256 of the chosen indices in each checkpoint's provenance; an audit
that drew its forget set with another seed would judge the wrong examples (an honest retrain
then looks like over-forgetting, a false fail). So ``evaluate``:

* draws the forget set with ``--forget-seed`` when given, else with the seed the checkpoints
  recorded (they must agree), else with ``--seed``;
* compares the audit's forget-set digest with every digest the checkpoints recorded and refuses
  a mismatch, naming the seed that would match when a short search finds it.
"""

from __future__ import annotations

import hashlib

import numpy as np

from unlearn_audit.data import Dataset, parse_forget_spec
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import LoadedModel

SEARCH_SEEDS = 1000


def recorded_forget(model: LoadedModel) -> dict | None:
    """``{"spec", "seed", "sha256"}`` a native checkpoint recorded for the forget set it was made
    without (a retrained or unlearned model), if any. A model trained on the whole training set
    names no forget set it depends on, whatever spec its command line carried."""
    provenance = model.metadata.get("provenance", {})
    if provenance.get("trained_on") == "train":
        return None
    data = provenance.get("data")
    if not isinstance(data, dict) or not data.get("forget_sha256"):
        return None
    return {"spec": data.get("forget_spec"), "seed": data.get("forget_seed"), "sha256": data["forget_sha256"]}


def choose_forget_seed(models: dict[str, LoadedModel], explicit: int | None, fallback: int) -> int:
    """``explicit``, else the one seed the checkpoints recorded, else ``fallback``."""
    if explicit is not None:
        return explicit
    seeds = {
        name: r["seed"] for name, m in models.items() if (r := recorded_forget(m)) and r["seed"] is not None
    }
    if len(set(seeds.values())) > 1:
        shown = ", ".join(f"{name} {seed}" for name, seed in seeds.items())
        raise ConfigError(
            f"the checkpoints record different forget-set seeds ({shown}); give `forget_seed`",
            param="forget_seed",
        )
    return int(next(iter(seeds.values()))) if seeds else fallback


def forget_digest(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices).astype(np.int64).tobytes()).hexdigest()


def verify_forget_set(
    models: dict[str, LoadedModel], dataset: Dataset, spec: str, digest: str, seed: int
) -> None:
    """Refuse when a checkpoint was made for another forget set than the audit's."""
    for name, model in models.items():
        record = recorded_forget(model)
        if record is None or record["sha256"] == digest:
            continue
        hint = ""
        if record["spec"] == spec and spec.strip().startswith("random:"):
            found = _matching_seed(dataset, spec, record["sha256"])
            hint = f"; `forget_seed` {found} reproduces it" if found is not None else ""
        raise ConfigError(
            f"the {name} model was made for another forget set (spec {record['spec']!r}, seed "
            f"{record['seed']}) than this audit's (spec {spec!r}, seed {seed}){hint}",
            param="forget_seed" if hint else None,
        )


def _matching_seed(dataset: Dataset, spec: str, digest: str) -> int | None:
    labels = dataset.train.y.numpy()
    for seed in range(SEARCH_SEEDS):
        if forget_digest(parse_forget_spec(spec, labels, seed=seed)) == digest:
            return seed
    return None
