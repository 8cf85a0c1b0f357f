"""Per-example membership signals computed from a model's logits.

Every score here is computed in float64 from the logits with log-sum-exp, never from a
float32 softmax: a well-fitted model saturates ``softmax`` to exactly ``1.0`` for most
training *and* test points, which ties members with non-members and hides the leak that
the loss and the logit-scaled confidence still show.

Signals (one value per example, ``z`` = logits, ``y`` = label, ``p = softmax(z)``):

* ``loss``: cross-entropy, ``logsumexp(z) - z_y`` (Yeom et al., CSF 2018).
* ``confidence``: ``p_y``.
* ``entropy``: ``-sum_i p_i log p_i`` of the predicted distribution.
* ``modified_entropy``: ``-(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i)``
  (Song & Mittal, "Systematic Evaluation of Privacy Risks of Machine Learning Models",
  USENIX Security 2021), with every ``log(1 - p_i)`` formed in log space.
* ``logit_confidence``: ``log(p_y / (1 - p_y)) = z_y - logsumexp_{i != y} z_i``
  (Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022).
* ``logit_margin``: ``z_y - max_{i != y} z_i``, the label's logit over its best rival. Unlike
  every signal above it is homogeneous in the logits: dividing them by a temperature ``T``
  divides it by ``T`` exactly, a common factor that the calibration line of
  :mod:`attacks.calibration` absorbs. The logit-scaled confidence is not: it follows the
  best rival at ``T = 1`` but the mean of all rivals at large ``T``, a different and often
  weaker signal, so an audited model could choose which one it shows. Per-example tests
  against reference models (:func:`attacks.lira.ulira_calibrated`,
  :func:`attacks.rmia.rmia_calibrated`) should use it. It is not one of ``SIGNAL_NAMES``
  (the threshold and learned population attacks).

Example::

    logits = compute_logits(model, x_forget, device="cuda")
    sig = compute_signals(logits, y_forget)
    sig.membership_score("loss")      # -loss: higher = more member-like
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

from attacks._arrays import readonly_copy, to_numpy
from attacks._torch import check_inputs, check_positive_int, forward_in_batches, resolve_device
from unlearn_audit.errors import ConfigError, DataError, ModelError

__all__ = ["SIGNAL_NAMES", "Signals", "compute_logits", "compute_signals"]

logger = logging.getLogger(__name__)

SIGNAL_NAMES: tuple[str, ...] = ("loss", "confidence", "entropy", "modified_entropy", "logit_confidence")

# Signals for which a LOWER raw value means "more member-like"; their membership score is negated.
_LOWER_IS_MEMBER = frozenset({"loss", "entropy", "modified_entropy"})


# ----------------------------------------------------------------------------- logits


def _same_device(a: torch.device, b: torch.device) -> bool:
    """True when tensors on ``a`` and ``b`` can meet (``cuda`` matches ``cuda:0`` etc.)."""
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def _checked_logits(out: object) -> torch.Tensor:
    """One batch's output as float32 CPU logits; anything but a (B, K) tensor is a model error."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"model must return logits of shape (batch, classes), got {shape}")
    return out.detach().to(device="cpu", dtype=torch.float32)


def compute_logits(
    model: nn.Module,
    x: torch.Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Logits of ``model`` on ``x``, batched, without gradients.

    The model is switched to eval mode for the pass and every submodule's train/eval flag
    is restored afterwards (also on error). The model is not moved: it must already live
    on ``device``; each batch of ``x`` is moved there.

    Args:
        model: a classifier returning logits of shape (B, K).
        x: inputs, shape (N, ...); any dtype the model accepts.
        batch_size: examples per forward pass (default 512), >= 1.
        device: where the forward passes run (default ``"cpu"``).

    Returns:
        float32 CPU tensor of shape (N, K).

    Raises:
        ConfigError: ``batch_size`` < 1 or an unknown ``device``.
        DataError: ``x`` is not a tensor with at least one dimension.
        ModelError: the model's parameters are on another device, or its output is not (B, K).
    """
    check_positive_int("batch_size", batch_size)
    dev = resolve_device(device)
    check_inputs(x, min_dims=1)
    param = next(model.parameters(), None)
    if param is not None and not _same_device(param.device, dev):
        raise ModelError(
            f"model parameters are on {param.device} but device={str(dev)!r}; move the model with "
            f"model.to({str(dev)!r}) or pass device={str(param.device)!r}"
        )
    outputs = forward_in_batches(model, x, batch_size=batch_size, device=dev, keep=_checked_logits)
    logits = torch.cat(outputs, dim=0)
    logger.debug("compute_logits: %d examples, %d classes on %s", logits.shape[0], logits.shape[1], dev)
    return logits


# ----------------------------------------------------------------------------- signals


@dataclass(frozen=True, eq=False)
class Signals:
    """Per-example membership signals of one model on one set of examples.

    Every array has length N; the float arrays are float64, ``labels`` and
    ``predictions`` (argmax of the logits) are int64. Arrays are read-only.
    """

    loss: np.ndarray
    confidence: np.ndarray
    entropy: np.ndarray
    modified_entropy: np.ndarray
    logit_confidence: np.ndarray
    logit_margin: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray

    def __post_init__(self) -> None:
        n: int | None = None
        for f in fields(self):
            value = np.asarray(getattr(self, f.name))
            dtype = np.int64 if f.name in ("labels", "predictions") else np.float64
            if value.ndim != 1:
                raise DataError(f"Signals.{f.name} must be 1-D, got shape {value.shape}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise DataError(f"Signals.{f.name} has length {value.shape[0]}, expected {n} like the others")
            object.__setattr__(self, f.name, readonly_copy(value, dtype))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, idx: np.ndarray | list[int] | slice) -> Signals:
        """The signals of the examples selected by ``idx`` (integer indices, a boolean mask or a slice)."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype == bool:
                if idx.shape != (len(self),):
                    raise DataError(f"boolean idx must have shape ({len(self)},), got {idx.shape}")
            elif idx.size and not np.issubdtype(idx.dtype, np.integer):
                raise DataError(f"idx must hold integers or booleans, got dtype {idx.dtype}")
            elif idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
                raise DataError(
                    f"idx out of range for {len(self)} examples: min {idx.min()}, max {idx.max()}"
                )
            else:
                idx = idx.astype(np.int64)
        return Signals(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def membership_score(self, name: str) -> np.ndarray:
        """Signal ``name`` oriented so that HIGHER means MORE MEMBER-LIKE (float64, length N).

        ``-loss``, ``confidence``, ``-entropy``, ``-modified_entropy``, ``logit_confidence``.
        """
        if name not in SIGNAL_NAMES:
            raise ConfigError(f"unknown signal {name!r}; available: {', '.join(SIGNAL_NAMES)}")
        raw = getattr(self, name)
        return -raw if name in _LOWER_IS_MEMBER else raw.copy()

    def as_matrix(self) -> np.ndarray:
        """(N, 5) float64 matrix of the member-oriented scores, columns in ``SIGNAL_NAMES`` order."""
        return np.column_stack([self.membership_score(name) for name in SIGNAL_NAMES]).reshape(
            len(self), len(SIGNAL_NAMES)
        )


def _loo_logsumexp(z: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``logsumexp_{i != cols[r]} z[r, i]`` for every row r (leave one column out)."""
    masked = z.copy()
    masked[np.arange(z.shape[0]), cols] = -np.inf
    return logsumexp(masked, axis=1)


def _checked_inputs(logits: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Logits as finite float64 (N, K), K >= 2, and labels as int64 (N,) in ``[0, K)``."""
    z = to_numpy(logits, "logits")
    y = to_numpy(labels, "labels")
    if z.ndim != 2:
        raise DataError(f"logits must have shape (N, K), got {z.shape}")
    n, k = z.shape
    if k < 2:
        raise DataError(f"logits must have at least 2 classes (columns), got K={k}")
    if not (np.issubdtype(z.dtype, np.floating) or np.issubdtype(z.dtype, np.integer)):
        raise DataError(f"logits must be real numbers, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.all(np.isfinite(z)):
        bad = int(np.sum(~np.isfinite(z).all(axis=1)))
        raise DataError(f"logits must be finite; {bad} of {n} rows contain NaN or inf")
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels must have shape ({n},) to match logits {z.shape}, got {y.shape}")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if n and (y.min() < 0 or y.max() >= k):
        raise DataError(
            f"labels must lie in [0, {k - 1}] for K={k} classes, got min {y.min()}, max {y.max()}"
        )
    return z, y


def compute_signals(logits: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> Signals:
    """All membership signals (see the module docstring) from logits and labels, in float64.

    Args:
        logits: (N, K) real logits, K >= 2, all finite; any float dtype (cast to float64).
        labels: (N,) integer class labels in ``[0, K)``.

    Returns:
        ``Signals`` with N examples.

    Raises:
        DataError: wrong shapes, K < 2, non-finite logits, non-integer or out-of-range labels.

    Precision: ``log p`` is formed as ``(z - z_max) - log1p(sum_{i != argmax} exp(z_i - z_max))``,
    so a loss of 1e-30 is kept to full relative precision; ``log(1 - p_i)`` is ``log1p(-p_i)``
    where ``p_i <= 1/2`` and an exact leave-one-out log-sum-exp for the arg-max column and the
    label column, where ``p`` can round to 1.
    """
    z, y = _checked_inputs(logits, labels)
    n = z.shape[0]

    rows = np.arange(n)
    top = np.argmax(z, axis=1) if n else np.zeros(0, dtype=np.int64)
    z_top = z[rows, top]
    shifted = z - z_top[:, None]  # <= 0, exactly 0 at the arg-max
    e = np.exp(shifted)
    e[rows, top] = 0.0
    log_norm = np.log1p(e.sum(axis=1))  # log sum_i exp(z_i - z_max), accurate when tiny
    lse = z_top + log_norm
    log_p = shifted - log_norm[:, None]
    p = np.exp(log_p)

    # log(1 - p_i): log1p(-p_i) is accurate for p_i <= 1/2, which holds for every column
    # except possibly the arg-max; that one (and the label column) uses the exact
    # leave-one-out form log(sum_{j != i} e^{z_j}) - log(sum_j e^{z_j}).
    with np.errstate(divide="ignore"):
        log1m = np.log1p(-p)
    log1m[rows, top] = _loo_logsumexp(z, top) - lse
    lse_not_y = _loo_logsumexp(z, y)
    log1m_y = lse_not_y - lse
    log1m[rows, y] = log1m_y

    log_p_y = log_p[rows, y]
    loss = 0.0 - log_p_y  # 0.0 - x, not -x: a loss that underflows is +0.0, never -0.0
    confidence = np.exp(log_p_y)
    entropy = 0.0 - (p * log_p).sum(axis=1)
    others = p * log1m
    others[rows, y] = 0.0
    modified_entropy = -np.exp(log1m_y) * log_p_y - others.sum(axis=1)
    logit_confidence = z[rows, y] - lse_not_y
    rivals = z.copy()
    rivals[rows, y] = -np.inf

    return Signals(
        loss=loss,
        confidence=confidence,
        entropy=entropy,
        modified_entropy=modified_entropy,
        logit_confidence=logit_confidence,
        logit_margin=z[rows, y] - rivals.max(axis=1),
        labels=y,
        predictions=top.astype(np.int64),
    )
