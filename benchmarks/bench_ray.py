"""Reference-model training on 1 and on 2 local Ray workers: wall times and speed-up (issue 14).

Trains one original (``--data``, ``--arch``, ``--epochs``), then ``--models`` reference models
without its forget set, as ``evaluate --reference-models N --executor ray`` does: first on a
local Ray instance with 1 CPU (the tasks one after another), then with 2 CPUs (two at a time),
each task on one torch thread. The in-process time (all models in one process, one thread,
batched with vmap where the architecture allows) is printed for comparison. The models of both
Ray runs must be identical, since every task seeds itself.

The workers are started (and import torch and this package) before the clock starts. Other
processes on the machine distort the ratio, so the load average is printed: run it on an
otherwise idle machine.
Run: ``python benchmarks/bench_ray.py [--data mnist-5k] [--arch cnn] [--models 4] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray
import torch

from unlearn_audit.api import train_checkpoint
from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.executor import InProcess, RayExecutor
from unlearn_audit.models import fingerprint_module, load_model
from unlearn_audit.reference_models import train_reference_set


def timed_references(original, roles, executor, count: int) -> tuple[float, list[str]]:
    """Seconds to train ``count`` reference models with ``executor``, and their fingerprints."""
    start = time.perf_counter()
    refs = train_reference_set(
        original, roles, count=count, seed=0, device="cpu", use_cache=False, executor=executor
    )
    return time.perf_counter() - start, [fingerprint_module(m) for m in refs.models]


def warm(_: int) -> None:
    """Start a worker with this package imported, and hold it long enough for its neighbours to start."""
    import unlearn_audit.reference_models  # noqa: F401

    time.sleep(2)


def on_ray(original, roles, count: int, cpus: int) -> tuple[float, list[str]]:
    """:func:`timed_references` on a fresh local Ray instance with ``cpus`` CPUs, timed once its
    ``cpus`` workers have started and imported torch and this package."""
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        RayExecutor().map(warm, range(cpus))
        return timed_references(original, roles, RayExecutor(), count)
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist-5k")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--forget", default="random:0.1")
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "original.pt"
        train_checkpoint(
            out=path,
            data=args.data,
            arch=args.arch,
            forget=args.forget,
            overrides={"epochs": args.epochs},
            device="cpu",
        )
        original = load_model(path, device="cpu")
    roles = make_roles(load_dataset(args.data), args.forget, seed=0)
    print(
        f"{args.models} reference {args.arch} models on {args.data} "
        f"({len(roles.retain)} retain examples, {args.epochs} epochs)"
    )
    print(f"  load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    here, _ = timed_references(original, roles, InProcess(), args.models)
    print(f"  in process (1 thread):  {here:7.1f} s")
    one, models_one = on_ray(original, roles, args.models, 1)
    print(f"  Ray, 1 worker:          {one:7.1f} s")
    two, models_two = on_ray(original, roles, args.models, 2)
    print(f"  Ray, 2 workers:         {two:7.1f} s")
    print(f"  speed-up 2 workers / 1: {one / two:7.2f}x")
    print(f"  same models on 1 and 2 workers: {models_one == models_two}")


if __name__ == "__main__":
    main()
