"""The typed results of an audit, and the rule that turns checks into a verdict.

Everything here is plain data: the JSON, HTML and JUnit writers render ``AuditResult.to_dict()``,
whose layout is schema version 1 (key order included, so files stay comparable across versions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

SCHEMA_VERSION = 1
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"


@dataclass(frozen=True)
class Check:
    """One gated statement about the unlearned model."""

    name: str
    status: str  # pass | fail | inconclusive
    value: float | None
    threshold: float | None
    detail: str
    ci: tuple[float, float] | None = None
    group: str = "privacy"
    gating: bool = True
    explanation: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci else None
        return data


@dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """What the audit measured on one model (``models[name]`` in the JSON).

    ``forget_class_rate`` exists only for class-wise forgetting, ``mia`` only when membership
    tests ran, ``robustness`` only when it was measured; absent sections are left out of the JSON.
    """

    model: dict
    accuracy: dict
    forget_class_rate: dict | None = None
    mia: dict[str, dict] = field(default_factory=dict)
    robustness: dict | None = None

    def to_dict(self) -> dict:
        data: dict = {"model": self.model, "accuracy": self.accuracy}
        if self.forget_class_rate is not None:
            data["forget_class_rate"] = self.forget_class_rate
        if self.mia:
            data["mia"] = self.mia
        if self.robustness is not None:
            data["robustness"] = self.robustness
        return data


@dataclass(frozen=True)
class AuditResult:
    """Everything the JSON, HTML and JUnit outputs are rendered from."""

    verdict: str
    checks: tuple[Check, ...]
    models: dict[str, ModelEntry]
    distances: dict
    plots: dict
    timings: dict
    policy: dict
    data: dict
    provenance: dict
    notes: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "verdict": self.verdict,
            "checks": [c.to_dict() for c in self.checks],
            "models": {name: entry.to_dict() for name, entry in self.models.items()},
            "distances": self.distances,
            "data": self.data,
            "policy": self.policy,
            "timings": self.timings,
            "plots": self.plots,
            "notes": list(self.notes),
            "provenance": self.provenance,
        }


def decide_verdict(checks: tuple[Check, ...] | list[Check]) -> str:
    """fail if any gating check fails, else inconclusive if any gating check is, else pass.

    With nothing gating there is no evidence either way, hence inconclusive.
    """
    gating = [c for c in checks if c.gating]
    if any(c.status == FAIL for c in gating):
        return FAIL
    if not gating or any(c.status == INCONCLUSIVE for c in gating):
        return INCONCLUSIVE
    return PASS


def rounded(x: float | None, digits: int = 6) -> float | None:
    """A number as stored in the JSON: rounded, and ``None`` when missing or not finite."""
    return None if x is None or not np.isfinite(x) else round(float(x), digits)


def rounded_ci(ci: tuple[float, float] | None) -> tuple[float, float] | None:
    """An interval as stored in a :class:`Check`."""
    return None if ci is None else (round(float(ci[0]), 6), round(float(ci[1]), 6))
