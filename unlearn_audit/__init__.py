"""unlearn-audit: prove (or disprove) that a model has forgotten data."""

from __future__ import annotations

__version__ = "0.1.0"

from unlearn_audit.errors import ConfigError, DataError, ModelError, UnlearnAuditError

__all__ = ["__version__", "UnlearnAuditError", "DataError", "ModelError", "ConfigError"]
