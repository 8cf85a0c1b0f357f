"""The exception hierarchy. Every error a user can cause is an ``UnlearnAuditError``.

The CLI turns each into one line on stderr and exit code 2; library callers can catch
the base class. Messages say what is wrong, what was received and what to do.

The same message serves Python callers and the command line, so a message names a parameter
by its Python keyword in backticks (```reference_models` must be >= 0``) and lists that keyword
in ``param``. A Python caller reads the keyword it passed; the CLI
(:func:`unlearn_audit.cli_common.render_error`) swaps each listed keyword for its flag
(``--reference-models``).
"""

from __future__ import annotations

from collections.abc import Sequence


class UnlearnAuditError(Exception):
    """Base class for errors caused by input: files, options, data, models.

    ``param``: the keyword (or keywords) of the call the message names in backticks.
    """

    def __init__(self, message: str = "", *, param: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.params: tuple[str, ...] = (param,) if isinstance(param, str) else tuple(param or ())

    @property
    def param(self) -> str | None:
        """The keyword at fault (the first one named), or None when the message names none."""
        return self.params[0] if self.params else None


class DataError(UnlearnAuditError):
    """A data set, a forget-set spec or a role file is missing, malformed or inconsistent."""


class ModelError(UnlearnAuditError):
    """A model file is missing, corrupt, unsafe to load, or does not fit the data."""


class ConfigError(UnlearnAuditError):
    """An option, a policy file or a method parameter is unknown or out of range."""
