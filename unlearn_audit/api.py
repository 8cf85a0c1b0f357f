"""The Python API behind each CLI command. The CLI only parses, calls these and prints."""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from unlearn_audit.data import Roles, TensorSet, load_dataset, make_roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import LoadedModel, build_model, resolve_device, save_checkpoint
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
            params = inspect.signature(recorder).parameters
            takes_arch = "arch" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
            more = {"arch": arch} if takes_arch else {}
            model, extra = recorder(model, train_set, cfg, roles=roles, device=dev, progress=progress, **more)
    else:
        with progress_factory(f"training {arch} on {data}") as progress:
            train_model(model, train_set, cfg, device=dev, progress=progress)
    seconds = time.perf_counter() - start
    accs = {
        "train": accuracy(model, train_set, device=dev),
        "test": accuracy(model, dataset.test, device=dev),
    }
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
        # a method may wrap the architecture (SISA trains an ensemble of shard models)
        arch=getattr(model, "arch_name", None) or arch,
        arch_kwargs=getattr(model, "arch_kwargs", None) if getattr(model, "arch_name", None) else None,
        num_classes=dataset.num_classes,
        input_shape=dataset.input_shape,
        provenance=provenance,
        extra=extra,
    )
    return TrainSummary(str(out), sha, arch, data, trained_on, len(train_set), seconds, accs, cfg.adversarial)


# --------------------------------------------------------------------------- evaluate


def _cache_root(cache_dir: str | Path | None) -> Path:
    import os

    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit"


def _signal_cache(cache_dir: str | Path | None):
    from attacks.reference import SignalCache

    return SignalCache(_cache_root(cache_dir) / "signals")


def train_reference_set(
    original: LoadedModel,
    roles: Roles,
    *,
    count: int,
    seed: int,
    device,
    cache_dir: str | Path | None = None,
    progress=None,
) -> tuple[list, str]:
    """Train ``count`` reference models WITHOUT the forget set, with the original's recipe.

    Needs a native checkpoint (architecture and training recipe recorded). Trained models are
    cached on disk, keyed by architecture, recipe, retain-set fingerprint and seed, so a re-run
    costs nothing.
    """
    import hashlib
    import json

    from attacks.reference import resolve_strategy, train_reference_models
    from unlearn_audit.models import load_model
    from unlearn_audit.training import TrainConfig

    if original.arch in ("sisa", "bayes_logreg"):
        raise ConfigError(
            f"--reference-models cannot retrain a {original.arch!r} model with its own recipe; "
            "train reference "
            "models without the forget set yourself and pass --reference-dir"
        )
    if original.format != "native" or not original.arch:
        raise ConfigError(
            "--reference-models needs a native checkpoint of the original (architecture and recipe); "
            "for other formats train reference models yourself and pass --reference-dir"
        )
    recipe = original.metadata.get("provenance", {}).get("train_config")
    cfg = TrainConfig.from_dict(recipe) if isinstance(recipe, dict) else TrainConfig()
    key_src = json.dumps(
        {
            "arch": original.arch,
            "kwargs": original.arch_kwargs,
            "cfg": cfg.to_dict(),
            "data": roles.retain.fingerprint(),
            "classes": original.num_classes,
            "shape": list(original.input_shape or ()),
        },
        sort_keys=True,
    )
    key = hashlib.sha256(key_src.encode()).hexdigest()[:24]
    folder = _cache_root(cache_dir) / "reference-models" / key
    seeds = [10_000 + seed * 1_000 + r for r in range(count)]
    paths = [folder / f"ref-{s}.pt" for s in seeds]
    missing = [s for s, p in zip(seeds, paths, strict=True) if not p.is_file()]

    def make():
        return build_model(
            original.arch,
            num_classes=original.num_classes,
            input_shape=original.input_shape,
            **original.arch_kwargs,
        )

    if missing:
        plain_adam = cfg.optimizer == "adam" and cfg.adversarial is None
        if plain_adam:
            strategy = resolve_strategy(make(), "auto")
            models = train_reference_models(
                make,
                roles.retain.x,
                roles.retain.y,
                seeds=missing,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                weight_decay=cfg.weight_decay,
                device=device,
                strategy=strategy,
                progress=progress,
            )
        else:
            from dataclasses import replace

            models = []
            for s in missing:
                m = build_model(
                    original.arch,
                    num_classes=original.num_classes,
                    input_shape=original.input_shape,
                    seed=s,
                    **original.arch_kwargs,
                )
                train_model(m, roles.retain, replace(cfg, seed=s), device=device)
                models.append(m)
        for s, m in zip(missing, models, strict=True):
            save_checkpoint(
                m,
                folder / f"ref-{s}.pt",
                arch=original.arch,
                num_classes=original.num_classes,
                input_shape=original.input_shape,
                arch_kwargs=original.arch_kwargs,
                provenance={
                    "role": "reference",
                    "seed": s,
                    "train_config": cfg.to_dict(),
                    "trained_on": "retain",
                },
            )
    refs = [load_model(p, device=device).module for p in paths]
    cached = count - len(missing)
    note = f"trained on the retain set with the original's recipe; {cached} of {count} from cache {folder}"
    return refs, note


def resolve_roles(
    data: str | None,
    forget: str | None,
    forget_data: str | Path | None,
    retain_data: str | Path | None,
    test_data: str | Path | None,
    *,
    seed: int = 0,
    split_seed: int = 0,
) -> Roles:
    """The two ways of naming the roles: ``--data`` with ``--forget``, or three role files."""
    from unlearn_audit.data import load_role_files

    files = [forget_data, retain_data, test_data]
    if data is not None:
        if any(files):
            raise ConfigError("give either --data with --forget, or the three role files, not both")
        if forget is None:
            raise ConfigError("--data needs --forget (class:K, random:F or an index file)")
        return make_roles(load_dataset(data, split_seed=split_seed), forget, seed=seed)
    if all(files):
        if forget is not None:
            raise ConfigError("--forget goes with --data; the role files already name the forget set")
        return load_role_files(forget_data, retain_data, test_data)  # type: ignore[arg-type]
    if any(files):
        missing = [
            n for n, f in zip(("--forget-data", "--retain-data", "--test-data"), files, strict=True) if not f
        ]
        raise ConfigError(f"role files need all three; missing {', '.join(missing)}")
    raise ConfigError("name the data: --data DATA --forget SPEC, or --forget-data/--retain-data/--test-data")


@dataclass(frozen=True)
class EvaluateOutputs:
    result: dict
    verdict: str
    written: dict[str, str]


def evaluate_audit(
    *,
    original: str | Path,
    unlearned: str | Path,
    retrained: str | Path | None = None,
    data: str | None = None,
    forget: str | None = None,
    forget_data: str | Path | None = None,
    retain_data: str | Path | None = None,
    test_data: str | Path | None = None,
    arch: str | None = None,
    policy_path: str | Path | None = None,
    json_out: str | Path | None = None,
    html_out: str | Path | None = None,
    junit_out: str | Path | None = None,
    reference_models: int = 0,
    reference_dir: str | Path | None = None,
    robustness: bool = False,
    robust_samples: int = 500,
    robust_eps: float | None = None,
    robust_steps: int | None = None,
    label_only: str | None = None,
    seed: int = 0,
    split_seed: int = 0,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    progress_factory: ProgressFactory = _no_progress,
    say: Callable[[str], None] | None = None,
    command: str | None = None,
) -> EvaluateOutputs:
    """Load everything, run :func:`unlearn_audit.audit.evaluate`, write the requested outputs."""
    from unlearn_audit.audit import evaluate, load_reference_dir
    from unlearn_audit.models import load_model
    from unlearn_audit.policy import load_policy
    from unlearn_audit.report import write_html, write_json, write_junit

    if reference_models and reference_dir:
        raise ConfigError("give --reference-models N or --reference-dir DIR, not both")
    if label_only not in (None, "gap", "boundary"):
        raise ConfigError(f"--label-only must be gap or boundary, got {label_only!r}")
    if reference_models < 0:
        raise ConfigError(f"--reference-models must be >= 0, got {reference_models}")
    policy = load_policy(policy_path)
    dev = resolve_device(device)
    roles = resolve_roles(data, forget, forget_data, retain_data, test_data, seed=seed, split_seed=split_seed)

    def load(path):
        return load_model(
            path, arch=arch, num_classes=roles.num_classes, input_shape=roles.input_shape, device=dev
        )

    orig = load(original)
    unl = load(unlearned)
    ret = load(retrained) if retrained is not None else None
    for name, m in (("original", orig), ("unlearned", unl), ("retrained", ret)):
        if m is not None and m.num_classes is not None and m.num_classes < roles.num_classes:
            raise ConfigError(
                f"the {name} model has {m.num_classes} classes but the data has labels up to "
                f"{roles.num_classes - 1}"
            )

    refs, ref_note = None, ""
    if reference_models:
        with progress_factory(f"training {reference_models} reference models") as progress:
            refs, ref_note = train_reference_set(
                orig,
                roles,
                count=reference_models,
                seed=seed,
                device=dev,
                cache_dir=cache_dir,
                progress=progress,
            )
    elif reference_dir:
        refs = load_reference_dir(reference_dir, orig, dev)
        ref_note = f"from {reference_dir}"

    robust_fn = None
    if robustness:
        robust_fn = _robustness_measure(
            roles, samples=robust_samples, eps=robust_eps, steps=robust_steps, seed=seed, device=dev
        )

    result = evaluate(
        orig,
        unl,
        roles,
        retrained=ret,
        policy=policy,
        seed=seed,
        device=dev,
        reference_models=refs,
        reference_note=ref_note,
        robustness=robust_fn,
        label_only=label_only,
        progress=say,
        signal_cache=_signal_cache(cache_dir) if refs else None,
        extra_provenance={
            "policy_file": str(policy_path) if policy_path else None,
            **({"command": command} if command else {}),
        },
    ).to_dict()
    written: dict[str, str] = {}
    if json_out:
        written["json"] = str(write_json(result, json_out))
    if html_out:
        written["html"] = str(write_html(result, html_out))
    if junit_out:
        written["junit"] = str(write_junit(result, junit_out))
    return EvaluateOutputs(result, result["verdict"], written)


def _robustness_measure(
    roles: Roles, *, samples: int, eps: float | None, steps: int | None, seed: int, device
):
    """A closure measuring clean and PGD robust accuracy on a fixed subset of the test set."""
    import numpy as np

    from unlearn_audit.robustness import measure_robustness

    n = min(samples, len(roles.test))
    idx = np.sort(np.random.default_rng(seed).choice(len(roles.test), size=n, replace=False))
    subset = roles.test.subset(idx)

    def measure(module):
        return measure_robustness(
            module,
            subset,
            family=roles.family,
            num_classes=roles.num_classes,
            eps=eps,
            steps=steps,
            seed=seed,
            device=device,
        )

    return measure


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
    from unlearn_audit.data import load_npz_set
    from unlearn_audit.methods import UnlearnData, get_method
    from unlearn_audit.models import load_model

    chosen = get_method(method, **(params or {}))
    dev = resolve_device(device)
    test = None
    data_prov: dict
    if data is not None or (forget_data and retain_data and test_data):
        roles = resolve_roles(
            data, forget, forget_data, retain_data, test_data, seed=seed, split_seed=split_seed
        )
        fx, fy, rx, ry, test = roles.forget.x, roles.forget.y, roles.retain.x, roles.retain.y, roles.test
        num_classes, shape, data_prov = roles.num_classes, roles.input_shape, roles.provenance
    elif forget_data is not None:
        if forget is not None:
            raise ConfigError("--forget goes with --data; --forget-data already is the forget set")
        fset = load_npz_set(forget_data)
        rset = load_npz_set(retain_data) if retain_data else None
        fx, fy = fset.x, fset.y
        rx, ry = (rset.x, rset.y) if rset is not None else (None, None)
        num_classes = int(max(int(fy.max()), int(ry.max()) if ry is not None else 0) + 1)
        shape = tuple(fx.shape[1:])
        data_prov = {
            "forget_file": str(forget_data),
            "retain_file": str(retain_data) if retain_data else None,
        }
    else:
        raise ConfigError(
            "name the data: --data DATA --forget SPEC, or --forget-data F.npz [--retain-data R.npz]"
        )

    loaded = load_model(model, arch=arch, num_classes=num_classes, input_shape=shape, device=dev)
    if loaded.arch is None:
        raise ConfigError(
            f"{model}: a {loaded.format} model cannot be unlearned here (its architecture is unknown); "
            "pass a native checkpoint or a state_dict with --arch"
        )
    num_classes = max(num_classes, loaded.num_classes or 0)
    forget_indices = None
    if data is not None and roles.forget_indices is not None:
        forget_indices = torch.as_tensor(roles.forget_indices, dtype=torch.int64)
    udata = UnlearnData(fx, fy, rx, ry, num_classes=num_classes, forget_indices=forget_indices)
    kwargs = {}
    if getattr(chosen, "needs_state", False):
        state = loaded.metadata.get("extra", {}).get("method_state")
        if not state or state.get("method") != getattr(chosen, "state_name", chosen.name):
            raise ConfigError(
                f"method {chosen.name!r} needs state recorded during training; train the original with "
                f"`unlearn-audit train --for-method {getattr(chosen, 'state_name', chosen.name)}`"
            )
        kwargs["state"] = state
    with progress_factory(f"unlearning with {chosen.name}") as progress:
        outcome = chosen.unlearn(loaded.module, udata, device=dev, seed=seed, progress=progress, **kwargs)
    accs = {"forget": accuracy(outcome.model, TensorSet(fx, fy), device=dev)}
    if rx is not None:
        accs["retain"] = accuracy(outcome.model, TensorSet(rx, ry), device=dev)
    if test is not None:
        accs["test"] = accuracy(outcome.model, test, device=dev)
    orig_prov = loaded.metadata.get("provenance", {})
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
        "data": data_prov,
        "data_spec": data,
        "forget_spec": forget,
        "train_config": orig_prov.get("train_config"),
        "accuracy": accs,
    }
    extra = {}
    new_state = getattr(outcome, "state", None)
    if new_state:
        extra["method_state"] = new_state
    sha = save_checkpoint(
        outcome.model,
        out,
        arch=loaded.arch,
        num_classes=loaded.num_classes or num_classes,
        input_shape=loaded.input_shape or shape,
        arch_kwargs=loaded.arch_kwargs,
        provenance=provenance,
        extra=extra,
    )
    return UnlearnSummary(
        str(out), sha, outcome.method, outcome.seconds, outcome.touched, outcome.notes, accs
    )
