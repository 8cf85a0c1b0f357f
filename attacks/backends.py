"""The three ways to compute adversarial examples: our own attacks, torchattacks and IBM ART.

Each back-end is a callable ``attack(x_batch, y_batch) -> x_adv`` built once per run from an
``AttackSpec``. ``native`` is fast and is what the audit uses; the libraries are independent
cross-checks and provide AutoAttack. ``make_attack`` picks one; ``check_run`` rejects impossible
combinations (AutoAttack without a library, ART's AutoAttack without ``multiprocess``) before
any time is spent.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from attacks.pgd import fgsm_perturb, pgd_perturb
from attacks.spec import AttackSpec, check_choice, check_count
from unlearn_audit.errors import ConfigError, DataError

__all__ = ["BACKENDS", "Attack", "check_run", "make_attack"]

BACKENDS: tuple[str, ...] = ("native", "torchattacks", "art")


class Attack(Protocol):
    """A back-end built for one run: adversarial inputs for a batch, plus notes for the report."""

    notes: list[str]

    def __call__(self, x: Tensor, y: Tensor) -> Tensor: ...


def check_run(spec: AttackSpec, backend: str, num_classes: int, batch_size: int) -> str:
    """The back-end name lower-cased, once the run is known to be possible (else ConfigError)."""
    if not isinstance(spec, AttackSpec):
        raise ConfigError(f"spec must be an AttackSpec; got {type(spec).__name__}")
    backend = check_choice(backend, BACKENDS, "backend")
    if spec.name == "autoattack" and backend == "native":
        raise ConfigError(
            "attack 'autoattack' is not available with backend 'native'; use backend 'torchattacks' or 'art'"
        )
    if spec.name == "autoattack" and backend == "art" and importlib.util.find_spec("multiprocess") is None:
        # ART imports it inside AutoAttack.generate but does not declare it as a dependency.
        raise ConfigError(
            "attack 'autoattack' with backend 'art' needs the package 'multiprocess' "
            "(pip install multiprocess); or use backend 'torchattacks'"
        )
    check_count(num_classes, "num_classes", 2)
    check_count(batch_size, "batch_size", 1)
    return backend


class _NativeAttack:
    """Our FGSM / PGD; ``early_stop`` freezes each example at its first fooling PGD iterate."""

    def __init__(self, model: nn.Module, spec: AttackSpec, seed: int, device: torch.device, early_stop: bool):
        self.model, self.spec, self.early_stop = model, spec, early_stop
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.notes: list[str] = []

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        s = self.spec
        if s.name == "fgsm":
            return fgsm_perturb(
                self.model,
                x,
                y,
                s.eps,
                random_start=s.uses_random_start,
                alpha=s.step_size,
                generator=self.generator,
            )
        assert s.alpha is not None  # guaranteed by AttackSpec validation
        return pgd_perturb(
            self.model,
            x,
            y,
            s.eps,
            alpha=s.alpha,
            steps=s.steps,
            norm=s.norm,
            random_start=s.uses_random_start,
            generator=self.generator,
            early_stop=self.early_stop,
        )


def _import(module: str, package: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - both are hard dependencies
        raise ConfigError(
            f"backend needs the package {package!r}, which is not installed ({exc}); pip install {package}"
        ) from exc


class _TorchattacksAttack:
    """torchattacks FGSM / FFGSM / PGD / PGDL2 / AutoAttack-standard built from its parts."""

    def __init__(self, model: nn.Module, spec: AttackSpec, num_classes: int, seed: int) -> None:
        ta = _import("torchattacks", "torchattacks")
        self.notes: list[str] = []
        s = spec
        if s.name == "fgsm":
            if s.uses_random_start:
                self.attack = ta.FFGSM(model, eps=s.eps, alpha=s.step_size)
            elif s.step_size == s.eps:
                self.attack = ta.FGSM(model, eps=s.eps)
            else:  # one signed step of a custom size, then projection == PGD with one step
                self.attack = ta.PGD(model, eps=s.eps, alpha=s.step_size, steps=1, random_start=False)
        elif s.name == "pgd":
            self.attack = ta.PGD(
                model, eps=s.eps, alpha=s.alpha, steps=s.steps, random_start=s.uses_random_start
            )
        elif s.name == "pgd_l2":
            self.attack = ta.PGDL2(
                model, eps=s.eps, alpha=s.alpha, steps=s.steps, random_start=s.uses_random_start
            )
        else:
            self.attack = self._autoattack(ta, model, s, num_classes, seed)

    def _autoattack(
        self, ta: ModuleType, model: nn.Module, s: AttackSpec, num_classes: int, seed: int
    ) -> object:
        # torchattacks.AutoAttack(version="standard") hard-codes its parts' defaults: 10 APGD/FAB
        # iterations (the paper uses 100) and n_classes - 1 targets (the paper uses the top 9;
        # with n_classes=10 on fewer classes it indexes out of range). We assemble the same four
        # attacks with the paper's settings instead. `n_classes` only sets the number of targets.
        norm = "Linf" if s.norm == "linf" else "L2"
        n_targets_classes = min(num_classes, 10)
        parts = [ta.APGD(model, norm=norm, eps=s.eps, steps=s.steps, n_restarts=1, seed=seed, loss="ce")]
        if num_classes >= 4:  # the targeted DLR loss reads the 3rd and 4th largest logits
            parts.append(
                ta.APGDT(
                    model,
                    norm=norm,
                    eps=s.eps,
                    steps=s.steps,
                    n_restarts=1,
                    seed=seed,
                    n_classes=n_targets_classes,
                )
            )
        else:
            self.notes.append(f"APGD-T skipped: its DLR loss needs >= 4 classes, got {num_classes}")
        parts.append(
            ta.FAB(
                model,
                norm=norm,
                eps=s.eps,
                steps=s.steps,
                n_restarts=1,
                seed=seed,
                multi_targeted=True,
                n_classes=n_targets_classes,
            )
        )
        parts.append(ta.Square(model, norm=norm, eps=s.eps, n_queries=5000, n_restarts=1, seed=seed))
        return ta.MultiAttack(parts)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(x, y)


class _ArtAttack:
    """IBM ART FastGradientMethod / ProjectedGradientDescent / AutoAttack on a PyTorchClassifier."""

    def __init__(
        self,
        model: nn.Module,
        spec: AttackSpec,
        num_classes: int,
        input_shape: tuple[int, ...],
        batch_size: int,
        device: torch.device,
    ) -> None:
        _import("art", "adversarial-robustness-toolbox")
        from art.attacks.evasion import AutoAttack, FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        self.notes: list[str] = []
        self.device = device
        s = spec
        clf = PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=input_shape,
            nb_classes=num_classes,
            clip_values=(0.0, 1.0),
            device_type="gpu" if device.type == "cuda" else "cpu",
        )
        art_norm = np.inf if s.norm == "linf" else 2
        if s.name == "fgsm" and not s.uses_random_start and s.step_size == s.eps:
            self.attack = FastGradientMethod(
                clf,
                norm=np.inf,
                eps=s.eps,
                eps_step=s.eps,
                targeted=False,
                num_random_init=0,
                batch_size=batch_size,
            )
        elif s.name == "fgsm":
            # FGSM-RS / custom step == one PGD iteration (ART's FGM has no separate step size).
            self.attack = ProjectedGradientDescent(
                clf,
                norm=np.inf,
                eps=s.eps,
                eps_step=s.step_size,
                max_iter=1,
                num_random_init=int(s.uses_random_start),
                batch_size=batch_size,
                verbose=False,
            )
        elif s.name in ("pgd", "pgd_l2"):
            self.attack = ProjectedGradientDescent(
                clf,
                norm=art_norm,
                eps=s.eps,
                eps_step=s.alpha,
                max_iter=s.steps,
                num_random_init=int(s.uses_random_start),
                batch_size=batch_size,
                verbose=False,
            )
        else:
            # ART's own AutoAttack list: APGD-CE, APGD-DLR (5 restarts each), DeepFool, Square.
            # The initial APGD step 2 * eps follows Croce & Hein 2020.
            self.attack = AutoAttack(clf, norm=art_norm, eps=s.eps, eps_step=2 * s.eps, batch_size=batch_size)
            self.notes.append(
                "ART AutoAttack uses ART's attack list (APGD-CE, APGD-DLR, DeepFool, Square), "
                "not the torchattacks/fra31 'standard' list"
            )

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        x_np = x.detach().cpu().numpy().astype(np.float32)
        adv = self.attack.generate(x=x_np, y=y.detach().cpu().numpy().astype(np.int64))
        return torch.from_numpy(np.asarray(adv, dtype=np.float32)).to(device=x.device, dtype=x.dtype)


def make_attack(
    model: nn.Module,
    spec: AttackSpec,
    backend: str,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    batch_size: int,
    device: torch.device,
    seed: int,
    early_stop: bool = False,
) -> Attack:
    """The back-end ``backend`` (already checked by ``check_run``) set up for ``spec``.

    ``early_stop`` only concerns the native PGD: the libraries run their own loops (torchattacks'
    and ART's PGD report the last iterate, AutoAttack keeps the first success anyway).
    """
    if backend == "native":
        return _NativeAttack(model, spec, seed, device, early_stop)
    if backend == "torchattacks":
        if len(input_shape) != 3 and (spec.norm == "l2" or spec.name == "autoattack"):
            raise DataError(
                f"backend 'torchattacks' needs N x C x H x W inputs for {spec.name!r}; "
                f"got examples of shape {input_shape}"
            )
        return _TorchattacksAttack(model, spec, num_classes, seed)
    return _ArtAttack(model, spec, num_classes, input_shape, batch_size, device)
