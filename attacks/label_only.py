"""Label-only membership inference through IBM ART: the gap attack and the decision-boundary attack.

Both attacks see only the model's predicted LABEL, never its scores, so they measure what
an API that returns hard labels leaks (Choquette-Choo et al., "Label-Only Membership
Inference Attacks", ICML 2021, arXiv 2007.14321; Li & Zhang, CCS 2021, arXiv 2007.15528).

* ``method="gap"``: ART ``LabelOnlyGapAttack`` (= ``MembershipInferenceBlackBoxRuleBased``,
  Yeom et al.'s "gap attack"): score 1.0 if the model classifies the example correctly,
  else 0.0. Its AUC is ``(1 + train acc - test acc) / 2`` in expectation, the
  generalisation gap. It needs no calibration; the train split is ignored.
* ``method="boundary"``: ART ``LabelOnlyDecisionBoundary``: HopSkipJump (a decision-based
  L2 attack) estimates each example's distance d to the decision boundary (d = 0 when it is
  misclassified); members tend to sit farther from the boundary. The threshold tau is
  calibrated with ``calibrate_distance_threshold`` on the TRAIN split (known members and
  non-members, maximising accuracy), and the eval split is scored with ART's membership
  probability ``sigmoid(d - tau)``, a strictly increasing function of d. ART's
  accuracy-per-bin probabilities (``threshold_bins``) are switched off because they are
  not monotone in d and would distort the ROC curve. Scores saturate (tie at 1.0) only for
  d - tau > ~37, far beyond distances in [0, 1] images.

Cost: the boundary attack is slow. HopSkipJump makes up to about
``max_iter * (max_eval + binary-search steps)`` model queries PER EXAMPLE (ART's defaults,
50 x 10000, took hours per MNIST batch in ART issue #127), and it runs on the train split
for calibration and again on the eval split. The defaults here (``max_iter=10``,
``max_eval=500``, ``init_eval=50``, ``init_size=100``) are sized for a few hundred small
inputs on CPU; the distances they give are upper bounds of the true boundary distance, so
the attack is weaker than the paper's. Raise them for a final audit.

Example::

    member_scores, nonmember_scores = label_only_attack(
        model, x_tr_in, y_tr_in, x_tr_out, y_tr_out, x_ev_in, y_ev_in, x_ev_out, y_ev_out,
        method="boundary", num_classes=10, input_shape=(1, 28, 28), device="cpu")
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from torch import nn

from unlearn_audit.errors import ConfigError, DataError
from unlearn_audit.torchutil import kept_modes

__all__ = ["label_only_attack"]

logger = logging.getLogger(__name__)

Method = Literal["gap", "boundary"]
ArrayLike = np.ndarray | torch.Tensor


def _inputs(name: str, x: ArrayLike, input_shape: tuple[int, ...]) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if not np.issubdtype(a.dtype, np.number) or a.dtype == bool:
        raise DataError(f"{name} must hold numbers, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if a.ndim < 1 or tuple(a.shape[1:]) != input_shape:
        raise DataError(
            f"{name} must have shape (N, {', '.join(map(str, input_shape))}) to match "
            f"input_shape={input_shape}, got {a.shape}"
        )
    if a.size and (not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0):
        raise DataError(
            f"{name} must hold finite pixel values in [0, 1] (the attack clips to that box), got "
            f"min {np.nanmin(a):.4g}, max {np.nanmax(a):.4g}"
        )
    return a


def _one_hot(name: str, y: ArrayLike, n: int, num_classes: int) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.shape != (n,):
        raise DataError(f"{name} must have shape ({n},) to match its inputs, got {a.shape}")
    if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{name} must hold integer class labels, got dtype {a.dtype}")
    if n and (a.min() < 0 or a.max() >= num_classes):
        raise DataError(
            f"{name} must lie in [0, {num_classes - 1}] for num_classes={num_classes}, got min "
            f"{a.min()}, max {a.max()}"
        )
    # Always one-hot with num_classes columns: ART's gap attack one-hot encodes INDEX labels
    # with len(np.unique(y)) classes, which is wrong whenever a split lacks some classes.
    out = np.zeros((n, num_classes), dtype=np.float32)
    out[np.arange(n), a.astype(np.int64)] = 1.0
    return out


class _Float32Input(nn.Module):
    """Casts inputs to the model's floating dtype: HopSkipJump's random starts are float64."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


@contextlib.contextmanager
def _numpy_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global RNG (HopSkipJump draws from it) and restore its state afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass(frozen=True, kw_only=True)
class _Split:
    """Members and non-members of one split, as ART wants them: float32 inputs, one-hot labels."""

    x_member: np.ndarray
    y_member: np.ndarray
    x_nonmember: np.ndarray
    y_nonmember: np.ndarray

    @classmethod
    def of(cls, prefix: str, arrays: Sequence[ArrayLike], shape: tuple[int, ...], num_classes: int) -> _Split:
        """Checked split from ``(x_member, y_member, x_nonmember, y_nonmember)``; names in errors
        start with ``prefix`` (``"train"`` or ``"eval"``)."""
        xm = _inputs(f"x_{prefix}_member", arrays[0], shape)
        xn = _inputs(f"x_{prefix}_nonmember", arrays[2], shape)
        ym = _one_hot(f"y_{prefix}_member", arrays[1], xm.shape[0], num_classes)
        yn = _one_hot(f"y_{prefix}_nonmember", arrays[3], xn.shape[0], num_classes)
        return cls(x_member=xm, y_member=ym, x_nonmember=xn, y_nonmember=yn)


def _check_settings(method: str, num_classes: int, input_shape: tuple[int, ...], budget: dict[str, int]):
    """Reject a bad method, class count, input shape or HopSkipJump budget; the shape as ints."""
    if method not in ("gap", "boundary"):
        raise ConfigError(f"method must be 'gap' or 'boundary', got {method!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"input_shape must be a non-empty tuple of positive sizes, got {input_shape!r}")
    for name, value in budget.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if budget["init_eval"] > budget["max_eval"]:
        raise ConfigError(
            f"init_eval must not exceed max_eval, got init_eval={budget['init_eval']}, "
            f"max_eval={budget['max_eval']}"
        )
    return shape


def _device(device: torch.device | str) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from exc


def _calibration(arrays: Sequence[ArrayLike | None], shape: tuple[int, ...], num_classes: int) -> _Split:
    """The train split the boundary attack calibrates its threshold on: all four parts, both non-empty."""
    names = ("x_train_member", "y_train_member", "x_train_nonmember", "y_train_nonmember")
    missing = [name for name, value in zip(names, arrays, strict=True) if value is None]
    if missing:
        raise DataError(f"method='boundary' calibrates on the train split; missing {', '.join(missing)}")
    split = _Split.of("train", cast(Sequence[ArrayLike], arrays), shape, num_classes)
    if split.x_member.shape[0] == 0 or split.x_nonmember.shape[0] == 0:
        raise DataError(
            f"boundary calibration needs members and non-members, got {split.x_member.shape[0]} and "
            f"{split.x_nonmember.shape[0]}"
        )
    return split


@contextlib.contextmanager
def _art_classifier(
    model: nn.Module, shape: tuple[int, ...], num_classes: int, dev: torch.device, seed: int
) -> Iterator[object]:
    """ART's ``PyTorchClassifier`` around ``model``; the model's modes and device restored afterwards.

    ART moves the model to its device ("cpu", or the *current* CUDA device) and sets its modes.
    numpy's global RNG (HopSkipJump draws from it) is seeded for the block and restored.
    """
    from art.estimators.classification import PyTorchClassifier

    param = next(model.parameters(), None)
    original_device = param.device if param is not None else None
    cuda_ctx = torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()
    with kept_modes(model):
        try:
            with cuda_ctx, _numpy_seed(seed):
                dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
                yield PyTorchClassifier(
                    model=_Float32Input(model, dtype),
                    loss=nn.CrossEntropyLoss(),
                    input_shape=shape,
                    nb_classes=num_classes,
                    clip_values=(0.0, 1.0),
                    device_type="gpu" if dev.type == "cuda" else "cpu",
                )
        finally:
            if original_device is not None and param is not None and param.device != original_device:
                model.to(original_device)


def _gap_scores(classifier: object, split: _Split) -> tuple[np.ndarray, np.ndarray]:
    """1.0 for each correctly classified example, else 0.0 (Yeom et al.'s gap attack)."""
    from art.attacks.inference.membership_inference import LabelOnlyGapAttack

    attack = LabelOnlyGapAttack(classifier)
    member = attack.infer(split.x_member, split.y_member) if split.x_member.shape[0] else np.zeros(0)
    nonmember = (
        attack.infer(split.x_nonmember, split.y_nonmember) if split.x_nonmember.shape[0] else np.zeros(0)
    )
    return member, nonmember


def _boundary_scores(
    classifier: object, train: _Split, split: _Split, hsj: dict[str, object]
) -> tuple[np.ndarray, np.ndarray]:
    """``sigmoid(d - tau)``: HopSkipJump distance d to the boundary, tau calibrated on ``train``."""
    from art.attacks.inference.membership_inference import LabelOnlyDecisionBoundary

    attack = LabelOnlyDecisionBoundary(classifier)
    attack.calibrate_distance_threshold(
        train.x_member, train.y_member, train.x_nonmember, train.y_nonmember, **hsj
    )
    attack.threshold_bins = []  # score = sigmoid(d - tau): monotone in the distance d
    logger.info(
        "label-only boundary attack: calibrated tau = %.4g on %d + %d examples",
        attack.distance_threshold_tau,
        train.x_member.shape[0],
        train.x_nonmember.shape[0],
    )

    def score(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros(0)
        return attack.infer(x, y, probabilities=True, **hsj)[:, 1]

    return score(split.x_member, split.y_member), score(split.x_nonmember, split.y_nonmember)


def label_only_attack(
    model: nn.Module,
    x_train_member: ArrayLike | None,
    y_train_member: ArrayLike | None,
    x_train_nonmember: ArrayLike | None,
    y_train_nonmember: ArrayLike | None,
    x_eval_member: ArrayLike,
    y_eval_member: ArrayLike,
    x_eval_nonmember: ArrayLike,
    y_eval_nonmember: ArrayLike,
    *,
    method: Method = "gap",
    num_classes: int,
    input_shape: tuple[int, ...],
    device: torch.device | str = "cpu",
    max_iter: int = 10,
    max_eval: int = 500,
    init_eval: int = 50,
    init_size: int = 100,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Label-only membership scores of the eval split, via ART (see the module docstring).

    The model is wrapped in ``art.estimators.classification.PyTorchClassifier`` with
    ``clip_values=(0, 1)``; its train/eval flags (every submodule) and its device are
    restored afterwards, also on error. numpy's global RNG, which HopSkipJump uses for its
    gradient-estimation directions, is seeded with ``seed`` for the call and restored
    afterwards. Boundary scores are nevertheless NOT bit-reproducible: ART 1.20's
    HopSkipJump draws its random starting points from an unseeded
    ``np.random.RandomState()``.

    Args:
        model: classifier returning logits, taking inputs in [0, 1] (normalisation inside).
        x_train_member, y_train_member: calibration examples known to be members
            (``method="boundary"`` only; may be None for ``"gap"``).
        x_train_nonmember, y_train_nonmember: calibration non-members (boundary only).
        x_eval_member, y_eval_member: examples to score, members (e.g. the forget set).
        x_eval_nonmember, y_eval_nonmember: examples to score, non-members (e.g. test set).
            Inputs are (N, *input_shape) arrays or tensors in [0, 1]; labels (N,) integers.
        method: ``"gap"`` (default) or ``"boundary"``.
        num_classes: number of classes K >= 2 of the model.
        input_shape: shape of one input, e.g. ``(1, 28, 28)``.
        device: where the model runs (``"cpu"`` or a CUDA device).
        max_iter, max_eval, init_eval, init_size: HopSkipJump budget (boundary only), see
            the module docstring; defaults 10, 500, 50, 100.
        batch_size: HopSkipJump / prediction batch size (default 64).
        seed: numpy global seed for HopSkipJump's gradient-estimation directions (default 0).

    Returns:
        ``(member_scores, nonmember_scores)``, float64, higher = more member-like:
        gap: 1.0 correct / 0.0 wrong; boundary: ``sigmoid(d - tau)`` in (0, 1).

    Raises:
        ConfigError: unknown method, bad num_classes / input_shape / budgets / device.
        DataError: shapes, label range, inputs outside [0, 1], missing train split for boundary.
    """
    budget = dict(max_iter=max_iter, max_eval=max_eval, init_eval=init_eval, init_size=init_size)
    shape = _check_settings(method, num_classes, input_shape, {**budget, "batch_size": batch_size})
    dev = _device(device)
    evaluated = _Split.of(
        "eval", (x_eval_member, y_eval_member, x_eval_nonmember, y_eval_nonmember), shape, num_classes
    )
    train = None
    if method == "boundary":
        train_arrays = (x_train_member, y_train_member, x_train_nonmember, y_train_nonmember)
        train = _calibration(train_arrays, shape, num_classes)
    with _art_classifier(model, shape, num_classes, dev, seed) as classifier:
        if train is None:
            member, nonmember = _gap_scores(classifier, evaluated)
        else:
            hsj = dict(norm=2, **budget, batch_size=batch_size, verbose=False)
            member, nonmember = _boundary_scores(classifier, train, evaluated, hsj)
    return np.asarray(member, dtype=np.float64), np.asarray(nonmember, dtype=np.float64)
