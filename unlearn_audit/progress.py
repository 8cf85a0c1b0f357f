"""How the library reports progress. Three channels, each with one meaning and one name:

``progress(done, total)`` (:data:`ProgressFn`)
    A counter inside one long step: called after each unit of work (an optimizer step, a batch of
    attacked examples) with how many are done out of how many. Methods, training and reference
    models take it as ``progress=``.
``progress_factory(description)`` (:data:`ProgressFactory`)
    Opens one long step: a context manager that yields the ``progress(done, total)`` callback for
    that step (or ``None``). The CLI passes a factory that draws a progress bar; the library calls
    it once per step it is about to run. :func:`no_progress` shows nothing.
``say(line)`` (:data:`Say`)
    One line of text when a step ends ("trained the original in 12 s"), for a log or a console.
    The benchmark, the robustness study and ``evaluate`` take it as ``say=``; :func:`silent` prints
    nothing.

A caller that wants a bar per step passes a ``progress_factory``; one that wants a line per step
passes ``say``; both may be given and neither is required.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["ProgressFactory", "ProgressFn", "Say", "no_progress", "silent"]

ProgressFn = Callable[[int, int], None]
"""``progress(done, total)``: called after each unit of work of one step."""

ProgressFactory = Callable[[str], contextlib.AbstractContextManager]
"""``progress_factory(description)``: a context manager per step, yielding a ``ProgressFn`` or None."""

Say = Callable[[str], None]
"""``say(line)``: one line of text per finished step."""


@contextlib.contextmanager
def no_progress(_: str) -> Iterator[None]:
    """The factory that shows nothing."""
    yield None


def silent(_: str) -> None:
    """The ``say`` that prints nothing (library use without a console)."""
    return None
