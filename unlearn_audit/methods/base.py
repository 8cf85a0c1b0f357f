"""The contract every unlearning method follows: data in, a new model and a record out.

A method is a frozen dataclass whose fields are its hyperparameters (with the paper's
defaults) and whose :meth:`UnlearningMethod.unlearn` never touches the caller's model:

>>> method = get_method("finetune", epochs=2)             # doctest: +SKIP
>>> outcome = method.unlearn(model, UnlearnData(fx, fy, rx, ry, num_classes=10), seed=0)
>>> outcome.model, outcome.seconds, outcome.notes           # doctest: +SKIP

The base class owns the parts every method shares, so each method only writes its
algorithm (:meth:`UnlearningMethod._run`): validating the data, refusing when the retain
set is needed but absent, deep-copying the model onto ``device``, seeding every random
number generator from ``seed`` without disturbing the caller's global RNG state, timing
the run, putting the result in eval mode, and packaging the :class:`UnlearnOutcome`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from unlearn_audit.errors import ConfigError, DataError, ModelError
from unlearn_audit.methods._common import Progress, clone_model, model_dtype, seeded
from unlearn_audit.progress import ProgressFn
from unlearn_audit.torchutil import evaluation_mode

__all__ = ["UnlearnData", "UnlearnOutcome", "UnlearningMethod", "RunResult", "param", "ProgressFn"]

logger = logging.getLogger(__name__)


_PIXEL_TOL = 1e-6


def param(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse/typer naming
    """A hyperparameter field: ``lr: float = param(0.01, "SGD learning rate")``.

    The help text (with units) is what ``list_methods()`` and ``--help`` show.
    """
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class UnlearnData:
    """The data an unlearning method may read.

    Attributes:
        forget_x: float tensor ``(N_f, C, H, W)`` (or any ``(N_f, ...)``) with pixels in ``[0, 1]``.
        forget_y: int64 tensor ``(N_f,)`` of labels in ``[0, num_classes)``.
        retain_x: float tensor ``(N_r, ...)`` of the same per-sample shape, or ``None`` when
            the user has no access to the retain set.
        retain_y: int64 tensor ``(N_r,)``, ``None`` exactly when ``retain_x`` is ``None``.
        num_classes: number of model outputs (>= 2).
        forget_indices: optional int64 tensor ``(N_f,)``: the position of each forget sample in
            the original training set (``forget_x[i]`` is training sample ``forget_indices[i]``).
            Methods that recorded state during training (SISA, amnesiac, DeltaGrad, MCMC) use it
            to locate the forget samples; without it they match samples by content.

    Raises:
        DataError: on mismatched lengths or shapes, non-float images, pixels outside
            ``[0, 1]``, labels outside ``[0, num_classes)``, or forget indices that are not
            distinct non-negative integers, one per forget sample.
    """

    forget_x: torch.Tensor
    forget_y: torch.Tensor
    retain_x: torch.Tensor | None
    retain_y: torch.Tensor | None
    num_classes: int
    forget_indices: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (
            isinstance(self.num_classes, bool)
            or not isinstance(self.num_classes, int)
            or self.num_classes < 2
        ):
            raise DataError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        _check_role("forget", self.forget_x, self.forget_y, self.num_classes)
        if (self.retain_x is None) != (self.retain_y is None):
            raise DataError(
                "retain_x and retain_y must both be tensors or both be None; got "
                f"retain_x={type(self.retain_x).__name__}, retain_y={type(self.retain_y).__name__}"
            )
        if self.retain_x is not None and self.retain_y is not None:
            _check_role("retain", self.retain_x, self.retain_y, self.num_classes)
            if self.retain_x.shape[1:] != self.forget_x.shape[1:]:
                raise DataError(
                    f"retain_x samples have shape {tuple(self.retain_x.shape[1:])} but forget_x samples "
                    f"have shape {tuple(self.forget_x.shape[1:])}; both roles must share one input shape"
                )
        if self.forget_indices is not None:
            _check_indices(self.forget_indices, len(self.forget_y))

    @property
    def has_retain(self) -> bool:
        """Whether the retain set is available."""
        return self.retain_x is not None


def _check_indices(idx: object, n: int) -> None:
    if not isinstance(idx, torch.Tensor) or idx.dtype != torch.int64 or idx.ndim != 1:
        what = (
            f"dtype {idx.dtype} and shape {tuple(idx.shape)}"
            if isinstance(idx, torch.Tensor)
            else type(idx).__name__
        )
        raise DataError(f"forget_indices must be a 1-D int64 tensor, got {what}")
    if idx.shape[0] != n:
        raise DataError(f"forget_indices has {idx.shape[0]} entries but the forget set has {n} samples")
    if int(idx.min()) < 0:
        raise DataError(f"forget_indices must be >= 0, got min {int(idx.min())}")
    if torch.unique(idx).numel() != n:
        raise DataError("forget_indices must be distinct; got repeated training indices")


def _check_role(role: str, x: object, y: object, num_classes: int) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise DataError(
            f"{role}_x and {role}_y must be torch tensors, got {type(x).__name__} and {type(y).__name__}"
        )
    if not x.is_floating_point():
        raise DataError(f"{role}_x must be a float tensor with pixels in [0, 1], got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise DataError(f"{role}_x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if y.dtype != torch.int64 or y.ndim != 1:
        raise DataError(
            f"{role}_y must be a 1-D int64 tensor, got dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    if y.shape[0] != x.shape[0]:
        raise DataError(f"{role}_x has {x.shape[0]} samples but {role}_y has {y.shape[0]} labels")
    lo, hi = float(x.min()), float(x.max())
    if lo < -_PIXEL_TOL or hi > 1 + _PIXEL_TOL or lo != lo or hi != hi:
        raise DataError(
            f"{role}_x pixels must lie in [0, 1] (normalisation belongs inside the model), "
            f"got min {lo:.4g} and max {hi:.4g}"
        )
    ylo, yhi = int(y.min()), int(y.max())
    if ylo < 0 or yhi >= num_classes:
        raise DataError(f"{role}_y labels must lie in [0, {num_classes}), got min {ylo} and max {yhi}")


@dataclass(frozen=True)
class UnlearnOutcome:
    """What an unlearning run produced.

    Attributes:
        model: the unlearned model, a new object with the input's architecture, in eval mode
            and on the ``device`` the run used.
        method: the registry name of the method.
        params: the method's hyperparameters as run (``dataclasses.asdict`` of the method).
        seconds: wall-clock time of the whole run, including copying and attack search.
        touched: the data roles the method actually read, e.g. ``("forget", "retain")``.
        notes: human-readable facts about the run (e.g. AMUN's mean epsilon).
        state: for methods that keep state recorded during training (``needs_state``), the
            updated state to save with the new model, so later requests can build on it;
            ``None`` otherwise. Plain tensors, dicts, lists, strings and numbers only.
    """

    model: nn.Module
    method: str
    params: dict[str, object]
    seconds: float
    touched: tuple[str, ...]
    notes: tuple[str, ...] = ()
    state: dict | None = None


@dataclass(frozen=True)
class RunResult:
    """What a method's ``_run`` hands back to :meth:`UnlearningMethod.unlearn`."""

    model: nn.Module
    touched: tuple[str, ...]
    notes: tuple[str, ...] = ()


_Algorithm = Callable[[nn.Module, torch.device, torch.Generator, Progress], tuple[RunResult, dict | None]]
"""``run(model, device, generator, progress) -> (result, new state or None)``: the algorithm
:meth:`UnlearningMethod._execute` runs on its private copy of the model."""


class UnlearningMethod:
    """Base class of the bundled unlearning methods.

    Subclasses are ``@dataclass(frozen=True)`` classes registered with
    ``@register_method("name")``; their fields are hyperparameters declared with :func:`param`.
    They set ``requires`` (the data roles they cannot run without) and implement ``_run``.

    Field values are checked on construction: a field named ``lr`` must be > 0, ``epochs`` >= 0,
    ``batch_size`` >= 1, ``momentum`` in [0, 1), ``weight_decay`` >= 0, and every value must
    match its annotated type; subclasses add their own checks in ``_validate``.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset({"forget"})

    # -- construction-time checks -------------------------------------------------------------
    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if not _matches(value, hints[f.name]):
                raise ConfigError(
                    f"parameter {f.name!r} of method {self.name!r} must be {type_name(hints[f.name])}, "
                    f"got {value!r}"
                )
        checks: dict[str, tuple[Callable[[Any], bool], str]] = {
            "lr": (lambda v: v > 0, "> 0"),
            "epochs": (lambda v: v >= 0, ">= 0"),
            "batch_size": (lambda v: v >= 1, ">= 1"),
            "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
            "weight_decay": (lambda v: v >= 0, ">= 0"),
        }
        for key, (ok, what) in checks.items():
            if hasattr(self, key) and not ok(getattr(self, key)):
                raise ConfigError(
                    f"parameter {key!r} of method {self.name!r} must be {what}, got {getattr(self, key)!r}"
                )
        self._validate()

    def _validate(self) -> None:
        """Method-specific checks on field values; raise ``ConfigError`` naming the parameter."""

    def _bad(self, key: str, what: str) -> ConfigError:
        return ConfigError(
            f"parameter {key!r} of method {self.name!r} must be {what}, got {getattr(self, key)!r}"
        )

    # -- public API ---------------------------------------------------------------------------
    @property
    def needs_retain(self) -> bool:
        """Whether this configuration reads the retain set (and so refuses to run without it).

        True when the class requires it, or when the method has a ``retain`` parameter set to
        ``"use"`` (methods that can also run from the forget set alone with ``retain="none"``).
        """
        return "retain" in self.requires or getattr(self, "retain", None) == "use"

    def params(self) -> dict[str, object]:
        """The hyperparameters as a plain dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def unlearn(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device | str = "cpu",
        seed: int = 0,
        progress: ProgressFn | None = None,
    ) -> UnlearnOutcome:
        """Unlearn ``data``'s forget set from a copy of ``model``.

        Args:
            model: the original model; never modified (not even its train/eval mode).
            data: forget set, and retain set when available.
            device: where to run; the returned model lives there.
            seed: seeds batch order, random labels, re-initialisation and dropout. Two CPU runs
                with the same seed give bit-identical weights. The caller's global RNG state is
                left as it was.
            progress: optional ``progress(done, total)`` callback; the last call has ``done == total``.

        Returns:
            An :class:`UnlearnOutcome` whose model has the same ``state_dict`` keys and shapes.

        Raises:
            ConfigError: the method needs the retain set and ``data.retain_x`` is None.
            DataError: ``data`` is not an :class:`UnlearnData`.
            ModelError: the model cannot be copied, cannot process the inputs, or does not
                return ``(N, num_classes)`` logits.
        """
        self._check_request(data)
        return self._execute(
            model,
            data,
            device=device,
            seed=seed,
            progress=progress,
            run=lambda work, dev, gen, prog: (
                self._run(work, data, device=dev, generator=gen, progress=prog),
                None,
            ),
        )

    def _check_request(self, data: object) -> None:
        """Refuse what is not an :class:`UnlearnData`, and a missing retain set the method needs."""
        if not isinstance(data, UnlearnData):
            raise DataError(f"data must be an UnlearnData, got {type(data).__name__}")
        if self.needs_retain and not data.has_retain:
            raise ConfigError(
                self._missing_retain_message(), param=("data", "forget", "retain_data", "params")
            )

    def _execute(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device | str,
        seed: int,
        progress: ProgressFn | None,
        run: _Algorithm,
    ) -> UnlearnOutcome:
        """The frame of every run: seed, copy ``model`` onto ``device``, check its outputs, ``run``
        the algorithm on the copy, time it, and package the result (in eval mode) with its state."""
        dev = torch.device(device)
        start = time.perf_counter()
        with seeded(seed, dev):
            generator = torch.Generator().manual_seed(seed)
            work = clone_model(model, dev)
            _check_outputs(work, data, dev)
            result, state = run(work, dev, generator, Progress(progress))
        result.model.eval()
        seconds = time.perf_counter() - start
        logger.info("method %s finished in %.2f s (seed %d, device %s)", self.name, seconds, seed, dev)
        return UnlearnOutcome(
            model=result.model,
            method=self.name,
            params=self.params(),
            seconds=seconds,
            touched=result.touched,
            notes=result.notes,
            state=state,
        )

    def _missing_retain_message(self) -> str:
        if "retain" not in self.requires:
            return (
                f"method {self.name!r} with retain='use' needs the retain set; pass `data`/`forget` or "
                "`retain_data`, or `params` retain=none to unlearn from the forget set alone"
            )
        return f"method {self.name!r} needs the retain set; pass `data`/`forget` or `retain_data`"

    def _run(
        self,
        model: nn.Module,
        data: UnlearnData,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> RunResult:
        """The algorithm. ``model`` is already a private copy on ``device``; train it in place.

        ``generator`` (CPU) drives batch order and random labels; the global torch RNG is
        already seeded (for dropout and ``reset_parameters``) and restored afterwards.
        """
        raise NotImplementedError


def _check_outputs(model: nn.Module, data: UnlearnData, device: torch.device) -> None:
    """Fail early, with a clear message, if the model cannot classify the data (shape or class count)."""
    with evaluation_mode(model):
        try:
            with torch.no_grad():
                out = model(data.forget_x[:2].to(device=device, dtype=model_dtype(model)))
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ModelError(
                f"the model cannot process forget samples of shape {tuple(data.forget_x.shape[1:])}: {exc}"
            ) from exc
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != data.num_classes:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"the model must return logits of shape (N, num_classes={data.num_classes}), got {got}"
        )


# -- type helpers shared with the registry ----------------------------------------------------


def _matches(value: object, hint: object) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, _UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def type_name(hint: object) -> str:
    """A short readable name for a field annotation: ``float``, ``int | None``, ``'use' | 'none'``."""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, _UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "None"
    return getattr(hint, "__name__", str(hint))


_UnionType: Any = type(int | None)
