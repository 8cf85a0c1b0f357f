"""``--executor`` and ``--ray-address``: the command-line side of :mod:`unlearn_audit.executor`.

The commands that run independent jobs (``benchmark``, ``robustness-study``, and ``evaluate``
for its reference models) take both options and open the executor with :func:`opened_executor`
around their run, so a local Ray instance started for the run is stopped when it ends.
``--mixed-precision`` is ``evaluate``'s switch for reference training in mixed precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated

import typer

from unlearn_audit.executor import Executor, make_executor

__all__ = ["ExecutorOpt", "MixedPrecisionOpt", "RayAddressOpt", "opened_executor"]

ExecutorOpt = Annotated[
    str,
    typer.Option(
        "--executor",
        help="Where independent jobs run (reference models, benchmark seeds, study cells): inprocess "
        "(default) or ray (one Ray task per job, asking for a GPU on CUDA, else a CPU; same results).",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Ray cluster to submit to with --executor ray, e.g. ray://head:10001 or auto "
        "(default: start a local Ray instance on this machine's cores).",
    ),
]

MixedPrecisionOpt = Annotated[
    bool,
    typer.Option(
        "--mixed-precision",
        help="Train reference models with bfloat16/float16 forward passes (faster on GPUs; other models, "
        "cached apart). The audit's statistics always stay in full precision.",
    ),
]


@contextlib.contextmanager
def opened_executor(executor: str, ray_address: str | None) -> Iterator[Executor]:
    """The executor the two options name, closed (local Ray instance stopped) when the block ends.

    Raises:
        ConfigError: unknown executor, an address without ``--executor ray``, ray not installed.
    """
    with make_executor(executor, ray_address) as opened:
        yield opened
