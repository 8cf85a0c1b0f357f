"""Where independent jobs run: in this process (the default) or as Ray tasks.

Reference-model training, the benchmark's seeds and the robustness study's (seed, model) cells
are independent jobs: each one's result depends only on its inputs and seed. An
:class:`Executor` runs a list of them with :meth:`Executor.map` and returns the results in the
order of the jobs, so the caller assembles the same tables whichever executor ran them.

* :class:`InProcess` calls the jobs one after another here; jobs may report through the
  caller's console and progress bars (``local`` is true).
* :class:`RayExecutor` submits one Ray task per job to a cluster (``address``) or to a Ray
  instance started on this machine; each task asks for one GPU when the work runs on CUDA,
  else for one CPU, so Ray runs as many at once as the machine (or cluster) has. Job functions
  must be importable top-level functions and their arguments picklable (tensors are); large
  arguments every job shares are passed once through ``shared`` (one copy in Ray's object
  store). Tasks cannot call back into this process, so they report through their own standard
  error (:func:`worker_say`), which Ray forwards here. On a cluster every node needs this
  package installed and the output folder on shared storage.

The results are the same as in process for the same seeds: every job seeds itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from unlearn_audit.errors import ConfigError
from unlearn_audit.progress import ProgressFn

if TYPE_CHECKING:  # torch is not imported here: the CLI imports this module for its options
    import torch

__all__ = ["EXECUTORS", "Executor", "InProcess", "RayExecutor", "make_executor", "worker_say"]

#: Names accepted by :func:`make_executor` (``--executor``).
EXECUTORS = ("inprocess", "ray")


def worker_say(message: str) -> None:
    """How a job running away from the console reports a step: one line on its standard error."""
    print(message, file=sys.stderr, flush=True)


class Executor:
    """Runs independent jobs: ``map(fn, jobs)`` is ``[fn(job, **shared) for job in jobs]``.

    ``local`` says whether jobs run in this process (and so may be handed the caller's console
    and progress callbacks). Use as a context manager to release what the executor started.
    """

    name = "executor"
    local = True

    def map(
        self,
        fn: Callable[..., Any],
        jobs: Sequence[Any],
        *,
        shared: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressFn | None = None,
    ) -> list[Any]:
        """``fn(job, **shared)`` for every job, results in the order of ``jobs``.

        ``device`` is where the jobs compute (it decides the resources a task asks for);
        ``progress(done, len(jobs))`` is called as jobs finish.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor started (nothing by default)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcess(Executor):
    """The jobs one after another in this process: the default, and what the golden tests pin."""

    name = "inprocess"
    local = True

    def map(self, fn, jobs, *, shared=None, device="cpu", progress=None):
        results = []
        for done, job in enumerate(jobs, start=1):
            results.append(fn(job, **dict(shared or {})))
            if progress is not None:
                progress(done, len(jobs))
        return results


class RayExecutor(Executor):
    """One Ray task per job, on the cluster at ``address`` or on a local instance.

    The local instance is started on first use with ``num_cpus`` CPUs (all of them when
    ``None``) and stopped by :meth:`close`; an instance the caller already started (e.g. a
    test's ``ray.init``) is used as it is and left running.
    """

    name = "ray"
    local = False

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self._started = False

    def _ray(self):
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, log_to_driver=True)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True)
            self._started = True
        return ray

    def map(self, fn, jobs, *, shared=None, device="cpu", progress=None):
        ray = self._ray()
        refs = {key: ray.put(value) for key, value in dict(shared or {}).items()}
        task = ray.remote(**task_resources(device))(fn)
        pending = [task.remote(job, **refs) for job in jobs]
        waiting = list(pending)
        while waiting:
            _, waiting = ray.wait(waiting, num_returns=1)
            if progress is not None:
                progress(len(jobs) - len(waiting), len(jobs))
        try:
            return ray.get(pending)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None  # the job's own error (a ConfigError stays a ConfigError)
            raise

    def close(self) -> None:
        if self._started:
            _import_ray().shutdown()
            self._started = False


def task_resources(device: torch.device | str) -> dict[str, float]:
    """What one task asks Ray for: one GPU for work on CUDA, else one CPU."""
    return {"num_gpus": 1} if str(device).split(":")[0] == "cuda" else {"num_cpus": 1}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("`executor` ray needs the ray package: pip install ray", param="executor") from None
    return ray


def make_executor(name: str = "inprocess", ray_address: str | None = None) -> Executor:
    """The executor called ``name`` (:data:`EXECUTORS`); ``ray_address`` picks a Ray cluster.

    Raises:
        ConfigError: unknown name, an address without ``ray``, or ``ray`` not installed.
    """
    if name not in EXECUTORS:
        raise ConfigError(f"`executor` must be one of {', '.join(EXECUTORS)}, got {name!r}", param="executor")
    if name == "inprocess":
        if ray_address:
            raise ConfigError("`ray_address` needs `executor` ray", param=("ray_address", "executor"))
        return InProcess()
    _import_ray()
    return RayExecutor(ray_address)
