"""How the library reports progress: a factory of context managers, one per long step.

``progress_factory(description)`` opens a step and yields a ``progress(done, total)`` callback (or
``None``); the CLI passes a factory that draws a progress bar, library users may pass their own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

ProgressFactory = Callable[[str], contextlib.AbstractContextManager]


@contextlib.contextmanager
def no_progress(_: str) -> Iterator[None]:
    """The factory that shows nothing."""
    yield None
