"""Checks that turn caller input (numpy arrays, tensors, lists) into the arrays the attacks compute on.

The attacks accept tensors and arrays alike and reject bad input at the boundary with a
:class:`~unlearn_audit.errors.DataError` naming the argument, so that a NaN or a transposed
matrix never turns silently into a wrong membership score.
"""

from __future__ import annotations

import numpy as np
import torch

from unlearn_audit.errors import DataError


def to_numpy(value: object, name: str) -> np.ndarray:
    """``value`` as a numpy array (tensors detached and moved to the CPU), without copying when possible."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name} must be an array or tensor, got {type(value).__name__}") from exc


def _finite(name: str, a: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise DataError(f"{name} must be finite; {int(np.sum(~np.isfinite(a)))} entries are NaN or inf")
    return a


def float_vector(name: str, value: object) -> np.ndarray:
    """``value`` as a finite float64 array of shape (n,)."""
    a = to_numpy(value, name).astype(np.float64, copy=False)
    if a.ndim != 1:
        raise DataError(f"{name} must be a 1-D array of shape (n,), got shape {a.shape}")
    return _finite(name, a)


def float_matrix(name: str, value: object, n: int, n_name: str) -> np.ndarray:
    """``value`` as a finite float64 array of shape (n, R), R >= 1: one column per reference model."""
    a = to_numpy(value, name).astype(np.float64, copy=False)
    if a.ndim != 2 or a.shape[0] != n:
        raise DataError(
            f"{name} must have shape ({n}, R) to match {n_name} of length {n}, got shape {a.shape}"
        )
    if a.shape[1] < 1:
        raise DataError(f"{name} must have at least one reference column, got shape {a.shape}")
    return _finite(name, a)


def bool_mask(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as a boolean array of exactly ``shape``; integers are refused, not cast."""
    a = to_numpy(value, name)
    if a.dtype != bool:
        raise DataError(f"{name} must be a boolean array, got dtype {a.dtype}")
    if a.shape != shape:
        raise DataError(f"{name} must have shape {shape} like the reference scores, got shape {a.shape}")
    return a


def check_probabilities(name: str, a: np.ndarray) -> None:
    """Refuse values outside [0, 1]: a log-probability passed by mistake would score silently."""
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise DataError(f"{name} must hold probabilities in [0, 1], got min {a.min():.6g}, max {a.max():.6g}")


def readonly_copy(value: object, dtype: type[np.generic]) -> np.ndarray:
    """A contiguous copy of ``value`` as ``dtype`` that cannot be written, for frozen result objects."""
    a = np.array(value, dtype=dtype, copy=True, order="C")
    a.setflags(write=False)
    return a


def forget_and_test(
    target_forget: object, ref_forget: object, target_test: object, ref_test: object
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays of a forget-versus-test audit, checked; both sets scored by the same R references."""
    tf = float_vector("target_forget", target_forget)
    tt = float_vector("target_test", target_test)
    rf = float_matrix("ref_forget", ref_forget, tf.shape[0], "target_forget")
    rt = float_matrix("ref_test", ref_test, tt.shape[0], "target_test")
    if rf.shape[1] != rt.shape[1]:
        raise DataError(
            f"ref_forget and ref_test must come from the same reference models, got R={rf.shape[1]} "
            f"and R={rt.shape[1]} columns"
        )
    return tf, rf, tt, rt
