"""Options of the benchmark and the robustness study: ``--methods``, ``--set`` and ``--quick``.

Both commands take the same method list and per-method settings and shrink their defaults the
same way with ``--quick``; the helpers here turn those options into config fields, so the two
configs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from unlearn_audit.errors import ConfigError

_T = TypeVar("_T")


def parse_method_sets(pairs: Mapping[str, str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{"amun.epochs": "5"}`` -> ``{"amun": {"epochs": "5"}}``, for the methods being run.

    Raises:
        ConfigError: a key without ``method.`` prefix, or naming a method not in ``methods``.
    """
    out: dict[str, dict[str, str]] = {}
    for key, value in pairs.items():
        method, dot, name = key.partition(".")
        if not dot or not method or not name:
            raise ConfigError(
                f"`method_params` expects method.key=value (e.g. amun.epochs=5), got {key}={value}",
                param="method_params",
            )
        if method not in methods:
            raise ConfigError(
                f"`method_params` {key}={value}: method {method!r} is not among `methods` "
                f"({', '.join(methods)})",
                param=("method_params", "methods"),
            )
        out.setdefault(method, {})[name] = value
    return out


def parse_methods(text: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated method names (duplicates dropped, order kept)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise ConfigError(f"`methods` needs at least one method name, got {text!r}", param="methods")
    return names


def quick_method_params(
    methods: Sequence[str], given: Mapping[str, Mapping[str, object]], *, epochs: int = 1
) -> dict[str, dict[str, object]]:
    """``given`` plus ``epochs=<epochs>`` for every registered method that has an ``epochs``
    parameter the user did not set (``--quick``)."""
    from unlearn_audit.methods import list_methods

    has_epochs = {i.name for i in list_methods() if any(p.name == "epochs" for p in i.params)}
    out = {m: dict(p) for m, p in given.items()}
    for m in methods:
        if m in has_epochs and "epochs" not in out.get(m, {}):
            out.setdefault(m, {})["epochs"] = epochs
    return out


def quick_common(
    quick: bool,
    data: str | None,
    arch: str | None,
    methods: Sequence[str],
    method_params: Mapping[str, Mapping[str, object]] | None,
) -> tuple[str, str, tuple[str, ...], dict[str, dict[str, object]]]:
    """``(data, arch, methods, method_params)`` as the benchmark and the study fill them.

    ``data``: given, else ``mnist-5k`` (``digits`` with ``quick``); ``arch``: given, else ``cnn``
    (``mlp`` with ``quick``); ``method_params`` copied, with ``quick`` plus
    :func:`quick_method_params`.
    """
    methods = tuple(methods)
    params = {m: dict(p) for m, p in (method_params or {}).items()}
    if quick:
        params = quick_method_params(methods, params)
    return data or ("digits" if quick else "mnist-5k"), arch or ("mlp" if quick else "cnn"), methods, params


def quick_or(given: _T | None, quick_value: _T, quick: bool) -> _T | None:
    """``given`` if set, else ``quick_value`` with ``quick`` and ``None`` (the recipe default) without."""
    return given if given is not None else (quick_value if quick else None)


def config_dict(config: Any) -> dict:
    """``dataclasses.asdict`` of a benchmark or study config, with plain list and dict method fields."""
    data = dataclasses.asdict(config)
    data["methods"] = list(config.methods)
    data["method_params"] = {m: dict(p) for m, p in config.method_params.items()}
    return data
