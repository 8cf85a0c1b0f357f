"""The Python API behind each CLI command. The CLI only parses, calls these and prints."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_audit.archs import ArchSpec
from unlearn_audit.data import Roles, TensorSet, load_dataset, make_roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.evaluation import EvaluateOutputs, evaluate_audit, resolve_roles
from unlearn_audit.models import LoadedModel, build_model, resolve_device, save_checkpoint
from unlearn_audit.progress import ProgressFactory, no_progress
from unlearn_audit.provenance import environment
from unlearn_audit.reference_models import train_reference_set
from unlearn_audit.training import TrainConfig, accuracy, default_config, train_model

__all__ = [
    "EvaluateOutputs",
    "ProgressFactory",
    "TrainSummary",
    "UnlearnSummary",
    "evaluate_audit",
    "no_progress",
    "resolve_roles",
    "train_checkpoint",
    "train_reference_set",
    "unlearn_checkpoint",
]

log = logging.getLogger(__name__)

_no_progress = no_progress  # the name earlier releases used


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
    """Train ``arch`` on ``data`` (or on its retain set with ``without_forget``) and save a checkpoint.

    With ``for_method`` the method's training hook trains the model, with the method's own recipe
    (the ``overrides`` the user set win where the method allows them), and its state is saved.
    """
    if without_forget and forget is None:
        raise ConfigError(
            "`without_forget` needs `forget` SPEC to know what to leave out",
            param=("without_forget", "forget"),
        )
    dev = resolve_device(device)
    dataset = load_dataset(data, split_seed=split_seed)
    method = _stateful_method(for_method, method_params)
    cfg = _training_recipe(arch, dataset.family, dict(overrides or {}), method)
    roles: Roles | None = make_roles(dataset, forget, seed=cfg.seed) if forget else None
    train_set = roles.retain if (roles and without_forget) else dataset.train
    model = build_model(arch, num_classes=dataset.num_classes, input_shape=dataset.input_shape, seed=cfg.seed)
    start = time.perf_counter()
    label = f"training {arch} for {for_method}" if method is not None else f"training {arch} on {data}"
    with progress_factory(label) as progress:
        trained = _train(
            method, model, train_set, cfg, arch=ArchSpec(arch), roles=roles, device=dev, progress=progress
        )
    seconds = time.perf_counter() - start
    if roles is None:
        accs = {"train": accuracy(trained.model, train_set, device=dev)}
    else:
        accs = {"forget": accuracy(trained.model, roles.forget, device=dev)}
        accs["retain"] = accuracy(trained.model, roles.retain, device=dev)
    accs["test"] = accuracy(trained.model, dataset.test, device=dev)
    provenance = {
        **environment(dev),
        "data": dataset.provenance if roles is None else roles.provenance,
        "data_spec": data,
        "split_seed": split_seed,
        "forget_spec": forget,
        "trained_on": "retain" if (roles and without_forget) else "train",
        "train_config": trained.recipe.to_dict(),
        "for_method": for_method,
        "seconds": round(seconds, 3),
        "accuracy": accs,
    }
    spec = trained.arch or ArchSpec(arch)
    sha = save_checkpoint(
        trained.model,
        out,
        arch=spec.name,
        arch_kwargs=spec.kwargs,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        provenance=provenance,
        extra=trained.extra if method is not None else {},
    )
    trained_on = "retain set (forget set left out)" if (roles and without_forget) else "full training set"
    return TrainSummary(
        str(out), sha, arch, data, trained_on, len(train_set), seconds, accs, trained.recipe.adversarial
    )


def _stateful_method(name: str | None, params: dict | None) -> object | None:
    """The method ``--for-method`` names (None without one)."""
    if name is None:
        return None
    from unlearn_audit.methods import get_method

    return get_method(name, **(params or {}))


def _training_recipe(arch: str, family: str, overrides: dict, method: object | None) -> TrainConfig:
    """The architecture's recipe with the user's overrides; a stateful method brings its own."""
    if method is None:
        return default_config(arch, family, **overrides)
    from unlearn_audit.methods import stateful_recipe

    return stateful_recipe(method, default_config(arch, family), overrides)


def _train(
    method: object | None,
    model: torch.nn.Module,
    train_set: TensorSet,
    cfg: TrainConfig,
    *,
    arch: ArchSpec,
    roles: Roles | None,
    device: torch.device,
    progress,
):
    """Train ``model``: plainly (what comes back holds no state), or through ``method``'s training
    hook, which records its state and may replace the model and the recipe."""
    from unlearn_audit.methods import StatefulTraining, record_stateful_training

    if method is None:
        train_model(model, train_set, cfg, device=device, progress=progress)
        return StatefulTraining(model=model, state={}, recipe=cfg, arch=arch)
    return record_stateful_training(
        method, model, train_set, cfg, arch=arch, roles=roles, device=device, progress=progress
    )


# --------------------------------------------------------------------------- evaluate

# evaluate_audit and the role resolution live in unlearn_audit.evaluation; re-exported here.


# --------------------------------------------------------------------------- unlearn


@dataclass(frozen=True)
class UnlearnSummary:
    out: str
    sha256: str
    method: str
    seconds: float
    touched: tuple[str, ...]
    notes: tuple[str, ...]
    accuracy: dict[str, float]

    def summary(self) -> str:
        accs = ", ".join(f"{k} {v:.2%}" for k, v in self.accuracy.items())
        lines = [
            f"unlearned with {self.method} in {self.seconds:.1f}s "
            f"(touched: {', '.join(self.touched)}): {accs}"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append(f"wrote {self.out} (sha256 {self.sha256[:16]}...)")
        return "\n".join(lines)


def unlearn_checkpoint(
    *,
    method: str,
    model: str | Path,
    out: str | Path,
    params: dict | None = None,
    data: str | None = None,
    forget: str | None = None,
    forget_data: str | Path | None = None,
    retain_data: str | Path | None = None,
    test_data: str | Path | None = None,
    arch: str | None = None,
    seed: int = 0,
    split_seed: int = 0,
    device: str = "auto",
    progress_factory: ProgressFactory = _no_progress,
) -> UnlearnSummary:
    """Run a bundled unlearning method on a checkpoint and save the result as a native checkpoint.

    With role files, ``--forget-data`` is required and ``--retain-data`` optional: methods that
    need the retain set refuse without it.
    """
    from unlearn_audit.methods import get_method
    from unlearn_audit.models import load_model

    chosen = get_method(method, **(params or {}))
    dev = resolve_device(device)
    inputs = _unlearn_inputs(
        data, forget, forget_data, retain_data, test_data, seed=seed, split_seed=split_seed
    )
    loaded = load_model(
        model, arch=arch, num_classes=inputs.num_classes, input_shape=inputs.shape, device=dev
    )
    if loaded.arch is None:
        raise ConfigError(
            f"{model}: a {loaded.format} model cannot be unlearned here (its architecture is unknown); "
            "pass a native checkpoint or a state_dict with `arch`",
            param="arch",
        )
    num_classes = max(inputs.num_classes, loaded.num_classes or 0)
    udata = inputs.unlearn_data(num_classes)
    kwargs = _recorded_state(chosen, loaded)
    with progress_factory(f"unlearning with {chosen.name}") as progress:
        outcome = chosen.unlearn(loaded.module, udata, device=dev, seed=seed, progress=progress, **kwargs)
    accs = inputs.accuracies(outcome.model, dev)
    provenance = {
        **environment(dev),
        "unlearning": {
            "method": outcome.method,
            "params": outcome.params,
            "seconds": round(outcome.seconds, 3),
            "touched": list(outcome.touched),
            "notes": list(outcome.notes),
            "seed": seed,
        },
        "original": {"path": str(model), "sha256": loaded.sha256},
        "data": inputs.provenance,
        "data_spec": data,
        "forget_spec": forget,
        "train_config": loaded.metadata.get("provenance", {}).get("train_config"),
        "accuracy": accs,
    }
    sha = save_checkpoint(
        outcome.model,
        out,
        arch=loaded.arch,
        num_classes=loaded.num_classes or num_classes,
        input_shape=loaded.input_shape or inputs.shape,
        arch_kwargs=loaded.arch_kwargs,
        provenance=provenance,
        extra={"method_state": outcome.state} if outcome.state else {},
    )
    return UnlearnSummary(
        str(out), sha, outcome.method, outcome.seconds, outcome.touched, outcome.notes, accs
    )


@dataclass(frozen=True)
class _UnlearnInputs:
    """The data of an unlearning request: forget and retain sets (the retain set may be missing),
    the test set when the roles came from a data set, and what to record about them."""

    forget: TensorSet
    retain: TensorSet | None
    test: TensorSet | None
    num_classes: int
    shape: tuple[int, ...]
    provenance: dict
    forget_indices: torch.Tensor | None = None

    def unlearn_data(self, num_classes: int):
        from unlearn_audit.methods import UnlearnData

        rx, ry = (self.retain.x, self.retain.y) if self.retain is not None else (None, None)
        return UnlearnData(
            self.forget.x, self.forget.y, rx, ry, num_classes=num_classes, forget_indices=self.forget_indices
        )

    def accuracies(self, model: torch.nn.Module, device: torch.device) -> dict[str, float]:
        """Accuracy on every role present."""
        accs = {"forget": accuracy(model, self.forget, device=device)}
        if self.retain is not None:
            accs["retain"] = accuracy(model, self.retain, device=device)
        if self.test is not None:
            accs["test"] = accuracy(model, self.test, device=device)
        return accs


def _unlearn_inputs(
    data: str | None,
    forget: str | None,
    forget_data: str | Path | None,
    retain_data: str | Path | None,
    test_data: str | Path | None,
    *,
    seed: int,
    split_seed: int,
) -> _UnlearnInputs:
    """The roles from ``--data``/``--forget`` or all three role files, else from a forget file
    with an optional retain file (the class count is then read off their labels)."""
    from unlearn_audit.data import load_npz_set

    if data is not None or (forget_data and retain_data and test_data):
        roles = resolve_roles(
            data, forget, forget_data, retain_data, test_data, seed=seed, split_seed=split_seed
        )
        indices = None
        if data is not None and roles.forget_indices is not None:
            indices = torch.as_tensor(roles.forget_indices, dtype=torch.int64)
        return _UnlearnInputs(
            roles.forget,
            roles.retain,
            roles.test,
            roles.num_classes,
            roles.input_shape,
            roles.provenance,
            indices,
        )
    if forget_data is None:
        raise ConfigError(
            "name the data: `data` DATA `forget` SPEC, or `forget_data` F.npz [`retain_data` R.npz]",
            param=("data", "forget", "forget_data", "retain_data"),
        )
    if forget is not None:
        raise ConfigError(
            "`forget` goes with `data`; `forget_data` already is the forget set",
            param=("forget", "data", "forget_data"),
        )
    fset = load_npz_set(forget_data)
    rset = load_npz_set(retain_data) if retain_data else None
    num_classes = int(max(int(fset.y.max()), int(rset.y.max()) if rset is not None else 0) + 1)
    provenance = {"forget_file": str(forget_data), "retain_file": str(retain_data) if retain_data else None}
    return _UnlearnInputs(fset, rset, None, num_classes, tuple(fset.x.shape[1:]), provenance)


def _recorded_state(chosen, loaded: LoadedModel) -> dict:
    """``{"state": ...}`` for a method that needs the state recorded in training, else nothing.

    Raises:
        ConfigError: the checkpoint holds no state of that method.
    """
    if not getattr(chosen, "needs_state", False):
        return {}
    state_name = getattr(chosen, "state_name", chosen.name)
    state = loaded.metadata.get("extra", {}).get("method_state")
    if not state or state.get("method") != state_name:
        raise ConfigError(
            f"method {chosen.name!r} needs state recorded during training; record it when training the "
            f"original (train `for_method` {state_name})",
            param="for_method",
        )
    return {"state": state}
