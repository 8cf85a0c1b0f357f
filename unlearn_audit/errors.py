"""The exception hierarchy. Every error a user can cause is an ``UnlearnAuditError``.

The CLI turns each into one line on stderr and exit code 2; library callers can catch
the base class. Messages say what is wrong, what was received and what to do.
"""

from __future__ import annotations


class UnlearnAuditError(Exception):
    """Base class for errors caused by input: files, options, data, models."""


class DataError(UnlearnAuditError):
    """A data set, a forget-set spec or a role file is missing, malformed or inconsistent."""


class ModelError(UnlearnAuditError):
    """A model file is missing, corrupt, unsafe to load, or does not fit the data."""


class ConfigError(UnlearnAuditError):
    """An option, a policy file or a method parameter is unknown or out of range."""
