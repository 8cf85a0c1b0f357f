"""Logits of a synthetic ImageFolder of 50,000 images: loaded whole vs streamed (issue 14).

Writes ``--images`` small PNG images (``--size`` x ``--size`` RGB, ``--classes`` folders) once
under ``--root``, then computes a CNN's logits over all of them two ways, each in a fresh
process so its peak resident memory is its own:

* ``load``: today's path, ``load_dataset("imagefolder:ROOT")`` (every image decoded into one
  float tensor), then the logits in batches of that tensor;
* ``stream``: a torchvision ``ImageFolder`` read through a ``DataLoader`` (``--workers``
  processes, pinned memory on CUDA), batch by batch; only one float per example (the loss) is
  kept for the whole set, which is all a membership signal needs.

It prints the throughput (images per second, reading included) and the peak RSS of each (the
process plus its loader workers). The streaming path is what ``data.py`` would use for
ImageFolder and torchvision roots; this script measures it without changing the package.
Run: ``python benchmarks/bench_stream.py [--images 50000] [--size 32] [--workers 2]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_images(root: Path, images: int, size: int, classes: int) -> None:
    """``images`` seeded random PNGs spread over ``classes`` class folders (skipped when present)."""
    from PIL import Image

    marker = root / f".complete-{images}-{size}-{classes}"
    if marker.exists():
        return
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c:02d}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"class_{i % classes:02d}" / f"{i:06d}.png")
    marker.touch()


def _model(size: int, classes: int) -> torch.nn.Module:
    from unlearn_audit.models import build_model

    return build_model("cnn", num_classes=classes, input_shape=(3, size, size), seed=0).eval()


def run_load(root: Path, size: int, classes: int, batch: int, workers: int) -> int:
    """Today's path: decode the whole folder into memory, then the logits in batches."""
    from attacks.signals import compute_logits
    from unlearn_audit.data import load_dataset

    data = load_dataset(f"imagefolder:{root}")
    model, n = _model(size, classes), 0
    for part in (data.train, data.test):
        logits = compute_logits(model, part.x, batch_size=batch, device="cpu")
        torch.nn.functional.cross_entropy(logits, part.y, reduction="none")
        n += len(part.y)
    return n


def run_stream(root: Path, size: int, classes: int, batch: int, workers: int) -> int:
    """Stream the folder through a DataLoader; keep one loss per example."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import ToTensor

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loader = DataLoader(
        ImageFolder(str(root), transform=ToTensor()),
        batch_size=batch,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model = _model(size, classes).to(device)
    losses = []
    with torch.no_grad():
        for x, y in loader:
            logits = model(x.to(device, non_blocking=True))
            losses.append(torch.nn.functional.cross_entropy(logits, y.to(device), reduction="none").cpu())
    return int(torch.cat(losses).numel())


def child(mode: str, args: argparse.Namespace) -> None:
    """One measurement, printed as JSON: examples, seconds, peak RSS of this process and its workers."""
    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    run = run_load if mode == "load" else run_stream
    n = run(Path(args.root), args.size, args.classes, args.batch, args.workers)
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {"n": n, "seconds": seconds, "peak_mb": peak_kb / 1024, "worker_peak_mb": workers_kb / 1024}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "unlearn-audit-stream-bench"))
    parser.add_argument("--modes", default="stream,load")
    parser.add_argument("--child", choices=("load", "stream"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args)
        return
    start = time.perf_counter()
    write_images(Path(args.root), args.images, args.size, args.classes)
    print(
        f"{args.images} {args.size}x{args.size} RGB images in {args.root} "
        f"(written in {time.perf_counter() - start:.0f} s)"
    )
    forwarded = [
        f"--{k}={getattr(args, k)}" for k in ("size", "classes", "batch", "workers", "threads", "root")
    ]
    for mode in args.modes.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--child", mode, *forwarded],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  {mode:<6}: {r['n']} images in {r['seconds']:6.1f} s ({r['n'] / r['seconds']:7.0f} images/s), "
            f"peak RSS {r['peak_mb']:6.0f} MB (largest child process {r['worker_peak_mb']:.0f} MB)"
        )


if __name__ == "__main__":
    main()
