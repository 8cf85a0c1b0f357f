"""Forget-set specs (``--forget``): which training examples a model is asked to forget.

``class:3`` or ``class:3,5``; ``random:0.1`` (a fraction) or ``random:100`` (a count), drawn with
the seed; or a file of training-set indices (``.txt``, ``.csv``, ``.json`` or ``.npy``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch

from unlearn_audit.errors import DataError
from unlearn_audit.limits import check_npy_file


def _read_index_file(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            check_npy_file(path)
            values = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            values = np.asarray(json.loads(path.read_text()))
        else:
            text = re.sub(r"#[^\n]*", "", path.read_text())  # '#' starts a comment to the end of the line
            tokens = [t for t in re.split(r"[\s,;]+", text) if t]
            values = np.asarray([float(t) for t in tokens])
    except (ValueError, OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"forget index file {path}: cannot parse ({exc}); write one integer index per line"
        ) from None
    values = np.asarray(values).ravel()
    if values.size and (
        not np.issubdtype(values.dtype, np.number)
        or not np.all(np.isfinite(values))
        or not np.all(values == np.round(values))
    ):
        raise DataError(f"forget index file {path}: indices must be whole numbers")
    return values.astype(np.int64)


def parse_forget_spec(spec: str, labels: np.ndarray | torch.Tensor, *, seed: int = 0) -> np.ndarray:
    """Return the sorted training-set indices named by a forget-set spec.

    ``labels`` are the training labels (their length bounds the indices).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "class" and arg:
        try:
            classes = sorted({int(c) for c in arg.split(",") if c.strip()})
        except ValueError:
            raise DataError(
                f"forget spec {spec!r}: classes must be integers, e.g. class:3 or class:3,5"
            ) from None
        present = set(np.unique(labels).tolist())
        absent = [c for c in classes if c not in present]
        if not classes or absent:
            raise DataError(f"forget spec {spec!r}: class(es) {absent or classes} not in the training labels")
        indices = np.flatnonzero(np.isin(labels, classes))
        if len(indices) == n:
            raise DataError(
                f"forget spec {spec!r}: would forget the whole training set; nothing is left to retain"
            )
        return indices
    if kind == "random" and arg:
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            raise DataError(f"forget spec {spec!r}: expected a fraction or a count, e.g. random:0.1")
        count = int(round(value * n)) if 0 < value < 1 else int(value)
        if value <= 0 or value != int(value) and value >= 1 or count < 1 or count >= n:
            raise DataError(
                f"forget spec {spec!r}: must be a fraction in (0, 1) "
                f"or a count in [1, {n - 1}] of {n} examples"
            )
        return np.sort(np.random.default_rng(seed).choice(n, size=count, replace=False))
    path = Path(spec)
    if not spec or not path.is_file():
        raise DataError(f"forget spec {spec!r}: not 'class:K', 'random:F' or an existing index file")
    indices = _read_index_file(path)
    if indices.size == 0:
        raise DataError(f"forget index file {path}: the forget set is empty")
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.size:
        raise DataError(
            f"forget index file {path}: index {int(bad[0])} is out of range for {n} training examples"
        )
    uniq, counts = np.unique(indices, return_counts=True)
    if np.any(counts > 1):
        raise DataError(f"forget index file {path}: index {int(uniq[counts > 1][0])} appears more than once")
    if uniq.size >= n:
        raise DataError(f"forget index file {path}: would forget the whole training set")
    return uniq
