"""The Python API behind each CLI command. The CLI only parses, calls these and prints."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from unlearn_audit.data import Roles, load_dataset, make_roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import build_model, resolve_device, save_checkpoint
from unlearn_audit.provenance import environment
from unlearn_audit.training import accuracy, default_config, train_model

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], contextlib.AbstractContextManager]


@contextlib.contextmanager
def _no_progress(_: str):
    yield None


@dataclass(frozen=True)
class TrainSummary:
    out: str
    sha256: str
    arch: str
    data: str
    trained_on: str
    n_train: int
    seconds: float
    accuracy: dict[str, float]
    adversarial: str | None

    def summary(self) -> str:
        accs = ", ".join(f"{k} {v:.2%}" for k, v in self.accuracy.items())
        kind = f"{self.adversarial}-adversarially trained " if self.adversarial else ""
        return (
            f"trained {kind}{self.arch} on {self.data} ({self.trained_on}, {self.n_train} examples) "
            f"in {self.seconds:.1f}s: {accs}\nwrote {self.out} (sha256 {self.sha256[:16]}...)"
        )


def train_checkpoint(
    *,
    out: str | Path,
    data: str = "mnist-5k",
    arch: str = "cnn",
    forget: str | None = None,
    without_forget: bool = False,
    overrides: dict | None = None,
    for_method: str | None = None,
    method_params: dict | None = None,
    split_seed: int = 0,
    device: str = "auto",
    progress_factory: ProgressFactory = _no_progress,
) -> TrainSummary:
    """Train ``arch`` on ``data`` (or on its retain set with ``without_forget``) and save a checkpoint."""
    if without_forget and forget is None:
        raise ConfigError("--without-forget needs --forget SPEC to know what to leave out")
    dev = resolve_device(device)
    dataset = load_dataset(data, split_seed=split_seed)
    overrides = dict(overrides or {})
    cfg = default_config(arch, dataset.family, **overrides)
    roles: Roles | None = make_roles(dataset, forget, seed=cfg.seed) if forget else None
    train_set = roles.retain if (roles and without_forget) else dataset.train
    model = build_model(arch, num_classes=dataset.num_classes, input_shape=dataset.input_shape, seed=cfg.seed)
    start = time.perf_counter()
    extra: dict = {}
    if for_method:
        from unlearn_audit.methods.registry import get_method

        method = get_method(for_method, **(method_params or {}))
        recorder = getattr(method, "train_with_state", None)
        if recorder is None:
            raise ConfigError(f"method {for_method!r} needs no training state; train without --for-method")
        with progress_factory(f"training {arch} for {for_method}") as progress:
            model, extra = recorder(model, train_set, cfg, roles=roles, device=dev, progress=progress)
    else:
        with progress_factory(f"training {arch} on {data}") as progress:
            train_model(model, train_set, cfg, device=dev, progress=progress)
    seconds = time.perf_counter() - start
    accs = {"train": accuracy(model, train_set, device=dev), "test": accuracy(model, dataset.test, device=dev)}
    if roles is not None:
        accs = {
            "forget": accuracy(model, roles.forget, device=dev),
            "retain": accuracy(model, roles.retain, device=dev),
            "test": accs["test"],
        }
    trained_on = "retain set (forget set left out)" if (roles and without_forget) else "full training set"
    provenance = {
        **environment(dev),
        "data": dataset.provenance if roles is None else roles.provenance,
        "data_spec": data,
        "split_seed": split_seed,
        "forget_spec": forget,
        "trained_on": "retain" if (roles and without_forget) else "train",
        "train_config": cfg.to_dict(),
        "for_method": for_method,
        "seconds": round(seconds, 3),
        "accuracy": accs,
    }
    sha = save_checkpoint(
        model,
        out,
        arch=arch,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        provenance=provenance,
        extra=extra,
    )
    return TrainSummary(str(out), sha, arch, data, trained_on, len(train_set), seconds, accs, cfg.adversarial)
