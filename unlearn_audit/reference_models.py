"""Reference models for ``evaluate --reference-models N``: trained without the forget set, cached.

A reference model is the original's architecture trained on the retain set with the original's
recipe (read from its checkpoint) under its own seed. Trained models are kept on disk, keyed by
architecture, recipe, retain-set fingerprint and class count, so a re-run costs nothing. The
cache folder (``--cache-dir``, else ``$XDG_CACHE_HOME/unlearn-audit``) also holds the signal cache
of the membership attacks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

from torch import nn

from unlearn_audit.data import Roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import LoadedModel, build_model, load_model, save_checkpoint
from unlearn_audit.training import TrainConfig, train_model

__all__ = ["cache_root", "signal_cache", "train_reference_set"]

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

    Needs a native checkpoint (architecture and training recipe recorded). Returns the models
    and a note saying how many came from the cache.
    """
    cfg = _original_recipe(original)
    folder = cache_root(cache_dir) / "reference-models" / _cache_key(original, cfg, roles)
    seeds = [10_000 + seed * 1_000 + r for r in range(count)]
    paths = [folder / f"ref-{s}.pt" for s in seeds]
    missing = [s for s, p in zip(seeds, paths, strict=True) if not p.is_file()]
    if missing:
        models = _train_references(original, cfg, roles, missing, device=device, progress=progress)
        for s, m in zip(missing, models, strict=True):
            _save_reference(m, folder / f"ref-{s}.pt", original, cfg, s)
    refs = [load_model(p, device=device).module for p in paths]
    cached = count - len(missing)
    note = f"trained on the retain set with the original's recipe; {cached} of {count} from cache {folder}"
    return refs, note


def _original_recipe(original: LoadedModel) -> TrainConfig:
    """The recipe recorded in ``original``'s checkpoint (the default recipe when none is).

    Raises:
        ConfigError: the original is not a native checkpoint, or a stateful method built its
            architecture.
    """
    if original.arch in _METHOD_ARCHS:
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
    return TrainConfig.from_dict(recipe) if isinstance(recipe, dict) else TrainConfig()


def _cache_key(original: LoadedModel, cfg: TrainConfig, roles: Roles) -> str:
    """What decides a reference model besides its seed, hashed into a folder name."""
    source = json.dumps(
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
    return hashlib.sha256(source.encode()).hexdigest()[:24]


def _train_references(
    original: LoadedModel, cfg: TrainConfig, roles: Roles, seeds: list[int], *, device, progress
) -> list[nn.Module]:
    """One model per seed on the retain set: all at once (``attacks.reference``) for a plain Adam
    recipe, else one by one with :func:`unlearn_audit.training.train_model`."""
    from attacks.reference import resolve_strategy, train_reference_models

    def make(seed: int | None = None) -> nn.Module:
        return build_model(
            original.arch,  # type: ignore[arg-type]
            num_classes=original.num_classes,  # type: ignore[arg-type]
            input_shape=original.input_shape,  # type: ignore[arg-type]
            seed=seed,
            **original.arch_kwargs,
        )

    if cfg.optimizer == "adam" and cfg.adversarial is None:
        return train_reference_models(
            make,
            roles.retain.x,
            roles.retain.y,
            seeds=seeds,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            device=device,
            strategy=resolve_strategy(make(), "auto"),
            progress=progress,
        )
    models = []
    for s in seeds:
        m = make(s)
        train_model(m, roles.retain, replace(cfg, seed=s), device=device)
        models.append(m)
    return models


def _save_reference(model: nn.Module, path: Path, original: LoadedModel, cfg: TrainConfig, seed: int) -> None:
    save_checkpoint(
        model,
        path,
        arch=original.arch,  # type: ignore[arg-type]
        num_classes=original.num_classes,  # type: ignore[arg-type]
        input_shape=original.input_shape,  # type: ignore[arg-type]
        arch_kwargs=original.arch_kwargs,
        provenance={"role": "reference", "seed": seed, "train_config": cfg.to_dict(), "trained_on": "retain"},
    )
