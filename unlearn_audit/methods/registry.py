"""The method registry (timm style): ``@register_method``, ``get_method``, ``list_methods``.

``get_method`` accepts overrides as Python values or as the strings the CLI collects from
``--set key=value``; strings are converted to the field's annotated type:

* ``int``: ``"10"`` (also ``"1e3"`` when it is a whole number);
* ``float``: ``"1e-3"``, ``"0.01"``;
* ``bool``: ``true/false``, ``yes/no``, ``on/off``, ``1/0`` (any case);
* ``X | None``: ``"none"`` / ``"null"`` (any case) gives ``None``;
* ``Literal[...]``: the string must be one of the choices.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from unlearn_audit.errors import ConfigError
from unlearn_audit.methods.base import UnlearningMethod, _UnionType, type_name
from unlearn_audit.suggest import did_you_mean

__all__ = ["MethodInfo", "ParamInfo", "get_method", "list_methods", "register_method"]

M = TypeVar("M", bound=type[UnlearningMethod])

_REGISTRY: dict[str, type[UnlearningMethod]] = {}

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"none", "null"}


@dataclass(frozen=True)
class ParamInfo:
    """One hyperparameter: its name, type (as text), default and help (with units)."""

    name: str
    type: str
    default: object
    help: str


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: name, one-line description, required data roles, hyperparameters."""

    name: str
    doc: str
    requires: frozenset[str]
    params: tuple[ParamInfo, ...]


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: register a frozen-dataclass :class:`UnlearningMethod` under ``name``."""

    def decorator(cls: M) -> M:
        if not (
            isinstance(cls, type) and issubclass(cls, UnlearningMethod) and dataclasses.is_dataclass(cls)
        ):
            raise TypeError(
                f"@register_method({name!r}) needs a dataclass subclass of UnlearningMethod, got {cls!r}"
            )
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"method name {name!r} is already registered by {_REGISTRY[name].__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_method(name: str, **overrides: object) -> UnlearningMethod:
    """Instantiate the method registered as ``name`` with its defaults plus ``overrides``.

    Raises:
        ConfigError: unknown method, unknown parameter, a value that cannot be converted to
            the parameter's type, or a value out of range.
    """
    if name not in _REGISTRY:
        available = sorted(_REGISTRY)
        raise ConfigError(
            f"unknown method {name!r}; available: {', '.join(available)}{did_you_mean(name, available)}"
        )
    cls = _REGISTRY[name]
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in valid:
            raise ConfigError(
                f"unknown parameter {key!r} for method {name!r}; valid parameters: {', '.join(valid)}"
                f"{did_you_mean(key, valid)}"
            )
        kwargs[key] = _convert(name, key, value, hints[key]) if isinstance(value, str) else value
    return cls(**kwargs)


def list_methods() -> list[MethodInfo]:
    """All registered methods, sorted by name."""
    infos = []
    for name in sorted(_REGISTRY):
        cls = _REGISTRY[name]
        hints = typing.get_type_hints(cls)
        params = tuple(
            ParamInfo(
                name=f.name,
                type=type_name(hints[f.name]),
                default=f.default,
                help=str(f.metadata.get("help", "")),
            )
            for f in dataclasses.fields(cls)
        )
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        infos.append(MethodInfo(name=name, doc=doc, requires=cls.requires, params=params))
    return infos


def _convert(method: str, key: str, text: str, hint: object) -> object:
    """Convert CLI text to ``hint``; raise ConfigError naming the parameter and the text."""

    def fail() -> ConfigError:
        return ConfigError(f"parameter {key!r} of method {method!r} must be {type_name(hint)}, got {text!r}")

    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        if text in typing.get_args(hint):
            return text
        raise fail()
    if origin in (typing.Union, _UnionType):
        args = typing.get_args(hint)
        if type(None) in args and text.strip().lower() in _NONE:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(method, key, text, arg)
            except ConfigError:
                continue
        raise fail()
    s = text.strip()
    if hint is bool:
        if s.lower() in _TRUE:
            return True
        if s.lower() in _FALSE:
            return False
        raise fail()
    if hint is int:
        try:
            return int(s)
        except ValueError:
            pass
        try:
            as_float = float(s)
        except ValueError:
            raise fail() from None
        if as_float.is_integer():
            return int(as_float)
        raise fail()
    if hint is float:
        try:
            number = float(s)
        except ValueError:
            raise fail() from None
        if not math.isfinite(number):
            raise fail()
        return number
    if hint is str:
        return text
    raise fail()
