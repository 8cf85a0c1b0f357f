"""Calibrates the integrity thresholds of ``model_changed`` against the bundled methods (issue 12).

For every bundled unlearning method, run with its default parameters on a small setting
(``digits`` + ``mlp`` by default, ``--data mnist-5k --arch cnn`` for the larger one), this prints
how far the unlearned model is from its original:

* the relative parameter change ``||delta|| / ||theta||``, tensors matched by shape, not name;
* the output residual: the share of the original's centred logits (forget, retain and test sets)
  that no positive scale of the unlearned model's logits explains.

Stateful methods (SISA, amnesiac, ...) get their own original, trained through their hook
(``train --for-method``). The last lines give the smallest honest values and the thresholds of
:mod:`unlearn_audit.integrity`, which must sit well below them. A few minutes on two CPU cores.
Run: ``python benchmarks/bench_integrity.py [--data digits] [--arch mlp] [--forget random:0.1]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from attacks.signals import compute_logits
from unlearn_audit.api import train_checkpoint, unlearn_checkpoint
from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.integrity import (
    MIN_OUTPUT_RESIDUAL,
    MIN_RELATIVE_CHANGE,
    output_residual,
    relative_parameter_change,
)
from unlearn_audit.methods import StatefulMethod, get_method, list_methods
from unlearn_audit.models import load_model


def all_logits(module: torch.nn.Module, sets) -> torch.Tensor:
    return torch.cat([compute_logits(module, s.x, batch_size=512, device="cpu") for s in sets])


def measure(args: argparse.Namespace, folder: Path) -> list[tuple[str, float | None, float, float]]:
    roles = make_roles(load_dataset(args.data), args.forget, seed=0)
    sets = (roles.forget, roles.retain, roles.test)
    common = {"data": args.data, "forget": args.forget, "device": "cpu"}
    plain = folder / "original.pt"
    train_checkpoint(out=plain, arch=args.arch, **common)
    rows = []
    for info in list_methods():
        stateful = isinstance(get_method(info.name), StatefulMethod) or getattr(
            get_method(info.name), "needs_state", False
        )
        original = plain
        if stateful:
            original = folder / f"original-{info.name}.pt"
            train_checkpoint(out=original, arch=args.arch, for_method=info.name, **common)
        out = folder / f"{info.name}.pt"
        start = time.perf_counter()
        unlearn_checkpoint(method=info.name, model=original, out=out, **common)
        seconds = time.perf_counter() - start
        a, b = load_model(original).module, load_model(out).module
        change = relative_parameter_change(a, b)
        residual = output_residual(all_logits(a, sets), all_logits(b, sets))
        rows.append((info.name, change.relative, residual, seconds))
        shown = "n/a" if change.relative is None else f"{change.relative:.3g}"
        print(f"{info.name:24s} {shown:>12s} {residual:12.3g} {seconds:8.1f}s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="digits")
    parser.add_argument("--arch", default="mlp")
    parser.add_argument("--forget", default="random:0.1")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"== {args.data} + {args.arch}, forget {args.forget}, every method with its defaults ==")
    print(f"{'method':24s} {'rel. change':>12s} {'out. residual':>12s} {'time':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args, Path(tmp))
    approximate = [r for r in rows if r[0] != "retrain"]
    changes = [r[1] for r in approximate if r[1] is not None]
    print(f"smallest relative change of an approximate method: {min(changes):.3g}")
    print(f"smallest output residual of an approximate method: {min(r[2] for r in approximate):.3g}")
    thresholds = {"MIN_RELATIVE_CHANGE": MIN_RELATIVE_CHANGE, "MIN_OUTPUT_RESIDUAL": MIN_OUTPUT_RESIDUAL}
    print("thresholds: " + ", ".join(f"{k} = {v:g}" for k, v in thresholds.items()))


if __name__ == "__main__":
    main()
