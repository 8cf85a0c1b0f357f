"""Gating thresholds: the default policy and its TOML overrides.

A policy file has up to four tables; every key is optional and an unknown key is an error::

    [privacy]
    mia_auc_margin = 0.05          # tolerated membership-AUC excess over the baseline
    [utility]
    max_retain_accuracy_drop = 0.05
    max_test_accuracy_drop = 0.05
    forget_accuracy_margin = 0.05  # tolerated forget-accuracy excess over the baseline
    max_forget_class_rate = 0.05   # class-wise: share still predicted as a forgotten class
    [robustness]
    max_robust_accuracy_drop = 0.10
    [statistics]
    confidence_level = 0.95
    n_bootstrap = 1000
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from unlearn_audit.errors import ConfigError

_SECTIONS = {
    "privacy": ("mia_auc_margin",),
    "utility": (
        "max_retain_accuracy_drop",
        "max_test_accuracy_drop",
        "forget_accuracy_margin",
        "max_forget_class_rate",
    ),
    "robustness": ("max_robust_accuracy_drop",),
    "statistics": ("confidence_level", "n_bootstrap"),
}


# Accepted range of every policy value (README, "Policy"). Margins stay small enough that a
# membership test can still fail (an AUC excess cannot exceed 0.5); the bootstrap count is
# bounded so that a policy cannot make the audit run for hours.
BOUNDS: dict[str, tuple[float, float]] = {
    "mia_auc_margin": (0.0, 0.2),
    "max_retain_accuracy_drop": (0.0, 1.0),
    "max_test_accuracy_drop": (0.0, 1.0),
    "forget_accuracy_margin": (0.0, 0.2),
    "max_forget_class_rate": (0.0, 0.5),
    "max_robust_accuracy_drop": (0.0, 1.0),
    "confidence_level": (0.5, 0.999),
    "n_bootstrap": (100, 20_000),
}


@dataclass(frozen=True)
class Policy:
    """Thresholds the audit gates on. Accuracy and AUC values are fractions in [0, 1]."""

    mia_auc_margin: float = 0.05
    max_retain_accuracy_drop: float = 0.05
    max_test_accuracy_drop: float = 0.05
    forget_accuracy_margin: float = 0.05
    max_forget_class_rate: float = 0.05
    max_robust_accuracy_drop: float = 0.10
    confidence_level: float = 0.95
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            lo, hi = BOUNDS[f.name]
            if f.name == "n_bootstrap":
                if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                    raise ConfigError(
                        f"policy: n_bootstrap must be an integer in [{lo}, {hi}], got {value!r}"
                    )
            elif isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                raise ConfigError(f"policy: {f.name} must be a number in [{lo}, {hi}], got {value!r}")

    def to_dict(self) -> dict:
        return asdict(self)


DEFAULT_POLICY = Policy()


def load_policy(path: str | Path | None) -> Policy:
    """Read a TOML policy; missing keys keep their defaults, unknown keys are errors."""
    if path is None:
        return DEFAULT_POLICY
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"policy file not found: {path}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"policy file {path}: not valid TOML ({exc})") from None
    values: dict = {}
    for section, table in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(
                f"policy file {path}: unknown section [{section}]; known: {', '.join(_SECTIONS)}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"policy file {path}: [{section}] must be a table")
        for key, value in table.items():
            if key not in _SECTIONS[section]:
                raise ConfigError(
                    f"policy file {path}: unknown key {section}.{key}; known in [{section}]: "
                    f"{', '.join(_SECTIONS[section])}"
                )
            values[key] = value
    return Policy(**values)
