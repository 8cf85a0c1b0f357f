"""Verdicts of the membership tests on mnist-5k, CNN, 400 random forget digits (issue #12, item 8).

For each seed: the original (trained on everything), a retrained model (without the forget
set), a second retraining with another seed (the honest "unlearned" model) and 8 reference
models (trained without the forget set, cached by :mod:`unlearn_audit.reference_models`).
Three audits per seed:

* (a) forgot nothing with ``--retrained``: should FAIL;
* (b) forgot nothing with the 8 reference models only: should FAIL;

"Forgot nothing" is the original with every weight moved by 0.1% of its tensor's scale: the same
behaviour, but past the integrity check's threshold, so the membership tests must fail it.
* (c) the honest retraining with both: should PASS.

Prints one row per audit: verdict, and the membership checks' status and interval.
Run: ``PYTHONPATH=. python benchmarks/bench_verdict.py --seeds 0 1 2 --out /tmp/bench_verdict``
(~6 minutes of training per seed on 2 CPU cores; checkpoints are reused on re-runs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unlearn_audit.audit import evaluate
from unlearn_audit.data import TensorSet, load_dataset, make_roles
from unlearn_audit.models import build_model, load_model, save_checkpoint
from unlearn_audit.policy import DEFAULT_POLICY
from unlearn_audit.reference_models import train_reference_set
from unlearn_audit.training import default_config, train_model

CHECKS = ("mia_population", "mia_paired", "mia_reference", "mia_rmia", "membership_power")


def trained(path: Path, train_set, *, arch: str, roles, seed: int):
    """A checkpoint trained with the architecture's recipe under ``seed`` (reused when present)."""
    if not path.is_file():
        cfg = default_config(arch, roles.family, seed=seed)
        model = build_model(arch, num_classes=roles.num_classes, input_shape=roles.input_shape, seed=seed)
        train_model(model, train_set, cfg)
        save_checkpoint(
            model,
            path,
            arch=arch,
            num_classes=roles.num_classes,
            input_shape=roles.input_shape,
            provenance={"train_config": cfg.to_dict()},
        )
    return load_model(path)


def disguised(model, seed: int):
    """The original with small relative noise on every weight (it forgot nothing)."""
    import copy

    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 1e-3 * p.abs().mean())
    return out


def run_seed(seed: int, out: Path, *, arch: str, n_refs: int) -> list[dict]:
    roles = make_roles(load_dataset("mnist-5k"), "random:400", seed=seed)
    everything = TensorSet(
        torch.cat([roles.retain.x, roles.forget.x]), torch.cat([roles.retain.y, roles.forget.y])
    )
    folder = out / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    original = trained(folder / "original.pt", everything, arch=arch, roles=roles, seed=seed)
    retrained = trained(folder / "retrained.pt", roles.retain, arch=arch, roles=roles, seed=seed + 100)
    honest = trained(folder / "honest.pt", roles.retain, arch=arch, roles=roles, seed=seed + 200)
    reference_set = train_reference_set(original, roles, count=n_refs, seed=seed, device="cpu", cache_dir=out)
    refs, note = reference_set.models, reference_set.note
    nothing = disguised(original, seed)
    audits = {
        "a: forgot nothing, --retrained": dict(unlearned=nothing, retrained=retrained),
        "b: forgot nothing, references": dict(unlearned=nothing, reference_models=refs, reference_note=note),
        "c: honest, both": dict(unlearned=honest, retrained=retrained, reference_models=refs),
    }
    rows = []
    for label, options in audits.items():
        start = time.perf_counter()
        unlearned = options.pop("unlearned")
        result = evaluate(original, unlearned, roles, policy=DEFAULT_POLICY, seed=seed, **options)
        checks = {c.name: c for c in result.checks}
        rows.append(
            {
                "seed": seed,
                "audit": label,
                "verdict": result.verdict,
                "seconds": round(time.perf_counter() - start, 1),
                "checks": {
                    n: [checks[n].status, checks[n].value, checks[n].ci] for n in CHECKS if n in checks
                },
                "failed": [c.name for c in result.checks if c.gating and c.status == "fail"],
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_verdict"))
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--references", type=int, default=8)
    args = parser.parse_args()
    rows = [
        row for seed in args.seeds for row in run_seed(seed, args.out, arch=args.arch, n_refs=args.references)
    ]
    print(f"\n{'seed':>4}  {'audit':<26} {'verdict':<13} " + " ".join(f"{c:<28}" for c in CHECKS[:-1]))
    for row in rows:
        cells = []
        for name in CHECKS[:-1]:
            status, _, ci = row["checks"].get(name, ["-", None, None])
            cells.append(f"{status[:5]} {ci}" if ci else status)
        print(
            f"{row['seed']:>4}  {row['audit']:<26} {row['verdict']:<13} "
            + " ".join(f"{c:<28}" for c in cells)
            + " failed: "
            + (",".join(row["failed"]) or "-")
        )


if __name__ == "__main__":
    main()
