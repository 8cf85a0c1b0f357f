"""Reference models for ``evaluate --reference-models N``: trained without the forget set, cached.

A reference model is the original's architecture trained on the retain set with the original's
recipe (read from its checkpoint) under its own seed. Trained models are kept on disk, keyed by
architecture, recipe, retain-set fingerprint and class count, so a re-run costs nothing.

The cache folder (``--cache-dir``, else ``$XDG_CACHE_HOME/unlearn-audit``) is untrusted: whoever
can write it could plant models that never saw the retain set. Every cached checkpoint must
therefore record the provenance it was saved with (role, seed, recipe, retain-set fingerprint,
architecture and cache key); one that does not is retrained and replaced. That catches stale and
mismatched entries, not a forger who copies the provenance, so every reference model used is
listed with its SHA-256 in the result, and ``--no-cache`` trains them afresh without reading or
writing the cache (what CI should use when its cache can be restored from shared storage).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from unlearn_audit.data import Roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.executor import Executor
from unlearn_audit.models import LoadedModel, build_model, fingerprint_module, load_model, save_checkpoint
from unlearn_audit.progress import ProgressFn
from unlearn_audit.training import TrainConfig, train_model

__all__ = ["ReferenceSet", "cache_root", "load_reference_dir", "signal_cache", "train_reference_set"]

#: Architectures a stateful method built: their recipe cannot be replayed by plain training.
_METHOD_ARCHS = ("sisa", "bayes_logreg")


def cache_root(cache_dir: str | Path | None) -> Path:
    """``cache_dir``, else ``$XDG_CACHE_HOME/unlearn-audit`` (``~/.cache`` when unset)."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unlearn-audit"


def signal_cache(cache_dir: str | Path | None):
    """The membership attacks' cache of per-model signals, under :func:`cache_root`."""
    from attacks.reference import SignalCache

    return SignalCache(cache_root(cache_dir) / "signals")


@dataclass(frozen=True)
class ReferenceSet:
    """Reference models and, for the result, where each came from and its SHA-256."""

    models: list[nn.Module]
    note: str
    listing: list[dict]


def train_reference_set(
    original: LoadedModel,
    roles: Roles,
    *,
    count: int,
    seed: int,
    device,
    cache_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
    executor: Executor | None = None,
    mixed_precision: bool = False,
) -> ReferenceSet:
    """Train ``count`` reference models WITHOUT the forget set, with the original's recipe.

    Needs a native checkpoint (architecture and training recipe recorded). Cached checkpoints
    are used only when their recorded provenance matches (see the module docstring). The
    models still to train are trained by ``executor`` (in process when ``None``; one Ray task
    per model with :class:`unlearn_audit.executor.RayExecutor`). ``mixed_precision`` trains a
    plain Adam recipe with bfloat16/float16 forward passes (see
    :func:`attacks.reference_training.train_reference_models`); such models are cached apart.
    """
    cfg = _original_recipe(original)
    key = _cache_key(original, cfg, roles, mixed_precision)
    seeds = [10_000 + seed * 1_000 + r for r in range(count)]

    def train(chosen: list[int]) -> list[nn.Module]:
        return _train_references(
            original,
            cfg,
            roles,
            chosen,
            device=device,
            progress=progress,
            executor=executor,
            mixed_precision=mixed_precision,
        )

    if not use_cache:
        models = train(seeds)
        listing = [
            {"source": "trained (no cache)", "seed": s, "sha256": fingerprint_module(m)}
            for s, m in zip(seeds, models, strict=True)
        ]
        return ReferenceSet(
            models,
            f"trained on the retain set with the original's recipe; {count} trained afresh (no cache)",
            listing,
        )
    folder = cache_root(cache_dir) / "reference-models" / key
    expected = {s: _provenance(original, cfg, roles, s, key, mixed_precision) for s in seeds}
    paths = {s: folder / f"ref-{s}.pt" for s in seeds}
    stale = [s for s in seeds if paths[s].is_file() and not _matches(paths[s], expected[s], device)]
    missing = [s for s in seeds if not paths[s].is_file() or s in stale]
    if missing:
        models = train(missing)
        for s, m in zip(missing, models, strict=True):
            _save_reference(m, paths[s], original, expected[s])
    loaded = [load_model(paths[s], device=device) for s in seeds]
    listing = [
        {
            "source": "trained" if s in missing else "cache",
            "seed": s,
            "path": str(paths[s]),
            "sha256": m.sha256,
        }
        for s, m in zip(seeds, loaded, strict=True)
    ]
    note = (
        f"trained on the retain set with the original's recipe; {count - len(missing)} of {count} from cache "
        f"{folder}"
        + (
            f"; {len(stale)} cached models did not match their recorded provenance and were retrained"
            if stale
            else ""
        )
    )
    return ReferenceSet([m.module for m in loaded], note, listing)


def load_reference_dir(
    directory: str | Path, like: LoadedModel, device, *, trust_torchscript: bool = False
) -> ReferenceSet:
    """Every model file in ``directory`` (trained WITHOUT the forget set), loaded like ``like``."""
    from unlearn_audit.errors import ModelError

    directory = Path(directory)
    if not directory.is_dir():
        raise ModelError(f"reference directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ModelError(f"reference directory {directory} holds no model files")
    loaded = [
        load_model(
            path,
            arch=like.arch,
            num_classes=like.num_classes,
            input_shape=like.input_shape,
            arch_kwargs=like.arch_kwargs,
            device=device,
            trust_torchscript=trust_torchscript,
        )
        for path in files
    ]
    listing = [{"source": "reference dir", "path": m.path, "sha256": m.sha256} for m in loaded]
    return ReferenceSet([m.module for m in loaded], f"from {directory} ({len(files)} files)", listing)


def _provenance(
    original: LoadedModel, cfg: TrainConfig, roles: Roles, seed: int, key: str, mixed_precision: bool
) -> dict:
    """What a cached reference checkpoint must record to be used."""
    return {
        **({"mixed_precision": True} if mixed_precision else {}),
        "role": "reference",
        "seed": seed,
        "train_config": cfg.to_dict(),
        "trained_on": "retain",
        "retain_fingerprint": roles.retain.fingerprint(),
        "arch": original.arch,
        "arch_kwargs": original.arch_kwargs,
        "cache_key": key,
    }


def _matches(path: Path, expected: dict, device) -> bool:
    """Whether a cached checkpoint loads and records exactly the expected provenance."""
    from unlearn_audit.errors import UnlearnAuditError

    try:
        found = load_model(path, device=device)
    except UnlearnAuditError:
        return False
    recorded = json.loads(json.dumps(found.metadata.get("provenance", {}), sort_keys=True))
    return found.format == "native" and recorded == json.loads(json.dumps(expected, sort_keys=True))


def _original_recipe(original: LoadedModel) -> TrainConfig:
    """The recipe recorded in ``original``'s checkpoint (the default recipe when none is).

    Raises:
        ConfigError: the original is not a native checkpoint, or a stateful method built its
            architecture.
    """
    if original.arch in _METHOD_ARCHS:
        raise ConfigError(
            f"`reference_models` cannot retrain a {original.arch!r} model with its own recipe; "
            "train reference models without the forget set yourself and pass `reference_dir`",
            param=("reference_models", "reference_dir"),
        )
    if original.format != "native" or not original.arch:
        raise ConfigError(
            "`reference_models` needs a native checkpoint of the original (architecture and recipe); "
            "for other formats train reference models yourself and pass `reference_dir`",
            param=("reference_models", "reference_dir"),
        )
    recipe = original.metadata.get("provenance", {}).get("train_config")
    return TrainConfig.from_dict(recipe) if isinstance(recipe, dict) else TrainConfig()


def _cache_key(original: LoadedModel, cfg: TrainConfig, roles: Roles, mixed_precision: bool) -> str:
    """What decides a reference model besides its seed, hashed into a folder name (mixed
    precision only when on, so full-precision keys stay what they were)."""
    source = json.dumps(
        {
            **({"mixed_precision": True} if mixed_precision else {}),
            "arch": original.arch,
            "kwargs": original.arch_kwargs,
            "cfg": cfg.to_dict(),
            "data": roles.retain.fingerprint(),
            "classes": original.num_classes,
            "shape": list(original.input_shape or ()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(source.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class _ReferenceRecipe:
    """How every reference model of one original is built and trained (picklable for Ray tasks)."""

    arch: str
    num_classes: int
    input_shape: tuple[int, ...] | None
    arch_kwargs: dict
    cfg: TrainConfig
    device: torch.device
    mixed_precision: bool = False

    def make(self, seed: int | None = None) -> nn.Module:
        """A fresh model of the original's architecture (seeded when ``seed`` is given)."""
        return build_model(
            self.arch,  # type: ignore[arg-type]
            num_classes=self.num_classes,
            input_shape=self.input_shape,  # type: ignore[arg-type]
            seed=seed,
            **self.arch_kwargs,
        )


def _train_seeds(
    seeds: list[int], *, recipe: _ReferenceRecipe, retain, progress: ProgressFn | None = None
) -> list[nn.Module]:
    """One model per seed on the retain set: all at once (``attacks.reference``) for a plain Adam
    recipe (optionally in mixed precision), else one by one in full precision with
    :func:`unlearn_audit.training.train_model`. A job of
    :func:`_train_references`, so a top-level function."""
    from attacks.reference import resolve_strategy, train_reference_models

    cfg, device = recipe.cfg, recipe.device
    if cfg.optimizer == "adam" and cfg.adversarial is None:
        return train_reference_models(
            recipe.make,
            retain.x,
            retain.y,
            seeds=seeds,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            device=device,
            strategy=resolve_strategy(recipe.make(), "auto"),
            progress=progress,
            mixed_precision=recipe.mixed_precision,
        )
    models = []
    for s in seeds:
        m = recipe.make(s)
        train_model(m, retain, replace(cfg, seed=s), device=device)
        models.append(m)
    return models


def _train_references(
    original: LoadedModel,
    cfg: TrainConfig,
    roles: Roles,
    seeds: list[int],
    *,
    device,
    progress,
    executor: Executor | None = None,
    mixed_precision: bool = False,
) -> list[nn.Module]:
    """The models of ``seeds``: in process all in one job (batched training pays there), with an
    executor that distributes, one job per seed.

    Each model depends only on its seed, so both give the same models; with batched (vmap)
    training of convolutional models the two agree up to float rounding, since a convolution
    batched over several models sums in another order than one model's.
    """
    recipe = _ReferenceRecipe(
        arch=original.arch,  # type: ignore[arg-type]
        num_classes=original.num_classes,  # type: ignore[arg-type]
        input_shape=original.input_shape,
        arch_kwargs=dict(original.arch_kwargs),
        cfg=cfg,
        device=torch.device(device),
        mixed_precision=mixed_precision,
    )
    if executor is None or executor.local:
        return _train_seeds(seeds, recipe=recipe, retain=roles.retain, progress=progress)
    chunks = executor.map(
        _train_seeds,
        [[s] for s in seeds],
        shared={"recipe": recipe, "retain": roles.retain},
        device=recipe.device,
        progress=progress,
    )
    return [m.to(recipe.device) for chunk in chunks for m in chunk]


def _save_reference(model: nn.Module, path: Path, original: LoadedModel, provenance: dict) -> None:
    save_checkpoint(
        model,
        path,
        arch=original.arch,  # type: ignore[arg-type]
        num_classes=original.num_classes,  # type: ignore[arg-type]
        input_shape=original.input_shape,  # type: ignore[arg-type]
        arch_kwargs=original.arch_kwargs,
        provenance=provenance,
    )
