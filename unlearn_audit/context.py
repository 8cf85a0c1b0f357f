"""What every check of one audit shares, computed once: :class:`AuditContext`.

Building the context loads nothing new: it runs each model once per role (logits, signals,
correctness), picks the non-members the membership tests compare with, and takes the decisions
that shape several checks at once. Each decision is a small named function whose docstring gives
the reason, so the rules can be read (and tested) apart from the arithmetic.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from attacks.augment import augmented_views, mean_signal
from attacks.population import split_halves
from attacks.signals import Signals, compute_logits, compute_signals
from unlearn_audit.data import Roles, TensorSet
from unlearn_audit.errors import ModelError
from unlearn_audit.metrics import proportion_difference_ci
from unlearn_audit.models import LoadedModel
from unlearn_audit.policy import DEFAULT_POLICY, Policy

ROLES = ("forget", "retain", "test")
PER_EXAMPLE_ROLES = ("forget", "test")  # the roles per-example tests score
MIN_NONMEMBERS = 20
MIN_MEMBERS = 20


@dataclass(frozen=True, kw_only=True)
class AuditOptions:
    """The settings of one audit (the keywords of :func:`unlearn_audit.audit.evaluate`).

    ``reference_models`` are models trained WITHOUT the forget set (U-LiRA references);
    ``robustness(module) -> dict`` measures robust accuracy (keys ``clean_accuracy``,
    ``robust_accuracy``, ``gap``, ``attack``, optionally ``correct``) when given;
    ``label_only`` names an ART label-only attack to run on at most ``label_only_samples``
    examples per set. ``augmentations``: how many nearby queries per forget and test example
    the per-example tests also judge on (:mod:`attacks.augment`; 0 turns that off).
    ``signal_cache`` is accepted and ignored: reference logits are cheap and always recomputed,
    so no cache can decide a verdict (issue #11).
    """

    retrained: LoadedModel | None = None
    policy: Policy = DEFAULT_POLICY
    seed: int = 0
    device: torch.device | str = "cpu"
    reference_models: list[torch.nn.Module] | None = None
    reference_note: str = ""
    signal_cache: object | None = None
    robustness: Callable[[torch.nn.Module], dict] | None = None
    label_only: str | None = None
    label_only_samples: int = 200
    augmentations: int = 8
    batch_size: int = 512
    progress: Callable[[str], None] | None = None
    extra_provenance: dict | None = None


class StepTimer:
    """Wall-clock seconds per named step; a step entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 4)


@dataclass
class ModelView:
    """One model as every check sees it: its logits, signals and correctness on each role."""

    name: str
    loaded: LoadedModel
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    signals: dict[str, Signals] = field(default_factory=dict)
    correct: dict[str, np.ndarray] = field(default_factory=dict)
    augmented: dict[str, np.ndarray] = field(default_factory=dict)  # forget/test: mean logit margin


@dataclass(frozen=True, kw_only=True)
class ReferenceSignals:
    """The reference models' signals on the forget and test roles, one column per model.

    ``margin``: logit margin on the exact inputs; ``augmented``: the same averaged over the
    nearby queries (empty when augmentations are off); ``correct``: whether each reference
    model gets each example right.
    """

    margin: dict[str, np.ndarray]
    augmented: dict[str, np.ndarray]
    correct: dict[str, np.ndarray]

    @property
    def count(self) -> int:
        return self.margin["forget"].shape[1]


@dataclass(frozen=True)
class Decision:
    """A yes/no choice of the audit and, when it departs from the usual case, the note saying so."""

    value: bool
    note: str | None = None


@dataclass(frozen=True, kw_only=True)
class AuditContext:
    """Everything a check reads. Built once per audit by :func:`build_context`; never mutated."""

    roles: Roles
    options: AuditOptions
    device: torch.device
    views: dict[str, ModelView]
    nm_index: np.ndarray
    in_forget_classes: np.ndarray
    split: tuple[np.ndarray, np.ndarray] | None
    two_sided: bool
    baseline_fair: bool
    notes: tuple[str, ...]
    references: ReferenceSignals | None = None

    @property
    def policy(self) -> Policy:
        return self.options.policy

    @property
    def seed(self) -> int:
        return self.options.seed

    @property
    def sets(self) -> dict[str, TensorSet]:
        return {"forget": self.roles.forget, "retain": self.roles.retain, "test": self.roles.test}

    @property
    def has_retrained(self) -> bool:
        return "retrained" in self.views

    @property
    def has_augmented(self) -> bool:
        return bool(self.views["original"].augmented)

    @property
    def membership_ready(self) -> bool:
        """Whether there are enough members and non-members for any membership test."""
        return self.split is not None

    def say(self, message: str) -> None:
        if self.options.progress is not None:
            self.options.progress(message)


# --------------------------------------------------------------------------- decisions


def nonmember_index(roles: Roles) -> np.ndarray:
    """Indices of the test examples the membership tests use as non-members.

    Unseen test data stands for "never trained on". For class-wise forgetting only test examples
    of the forget set's labels qualify, so the attack compares like with like (a forgotten class
    is not told apart from other classes, only from unseen examples of itself).
    """
    test_y = roles.test.y.numpy()
    if not roles.class_wise:
        return np.arange(len(test_y))
    return np.flatnonzero(np.isin(test_y, np.unique(roles.forget.y.numpy())))


def forgotten_class_mask(roles: Roles) -> np.ndarray:
    """Mask of the test examples whose class is forgotten (all false unless class-wise).

    A model that forgot a class cannot predict it any more by design, so utility on unseen data
    is measured on the other classes only.
    """
    test_y = roles.test.y.numpy()
    if not roles.class_wise:
        return np.zeros(len(test_y), bool)
    return np.isin(test_y, list(roles.forget_classes))


def membership_two_sided(*, retrained: ModelView | None, class_wise: bool, policy: Policy) -> Decision:
    """Whether a membership test fails when the forget set scores far BELOW its baseline.

    Only a retrained model shows what "forgotten" looks like, so without one a low score can be
    honest: one-sided. With one, scoring lower than retraining reveals the deletion itself
    (over-forgetting): two-sided, except for mislabeled or poisoned forget data. A model that
    never saw such a set gets it wrong far more often than unseen test data; then calibration
    differences between honest models flip sign on it, and "lower than retraining" is no evidence.
    """
    if retrained is None:
        return Decision(False)
    if class_wise:
        return Decision(True)
    gap, ci = proportion_difference_ci(
        retrained.correct["forget"], retrained.correct["test"], level=policy.confidence_level
    )
    if ci[1] < -policy.forget_accuracy_margin:
        return Decision(
            False,
            f"the retrained model's forget accuracy is {-gap:.3f} below its test accuracy: the forget "
            "labels disagree with what the rest of the data teaches (mislabeled or poisoned data); "
            "membership tests judge only whether the forget set is still recognised",
        )
    return Decision(True)


def baseline_fair(*, has_retrained: bool, roles: Roles) -> Decision:
    """Whether unseen test data may gate as the baseline of a model that never saw the forget set.

    A retrained model is the baseline when given. Without one, test data is fair only when the
    forget set is a random sample of the training set (class-wise sets are compared with test
    examples of their classes): a hand-picked set (index or role files) may differ from test
    data for reasons that have nothing to do with memorisation. Unfair baselines only advise.
    """
    if has_retrained or roles.forget_is_random_sample or roles.class_wise:
        return Decision(True)
    return Decision(
        False,
        "the forget set is not known to be a random sample (index or role files) and no retrained model "
        "was given: the population test against unseen data and the forget-accuracy check are advisory; "
        "give --retrained or reference models for a verdict",
    )


def membership_sample_problem(n_forget: int, n_nonmembers: int) -> str | None:
    """Why the membership tests cannot run on sets this small, or ``None`` when they can.

    An AUC on a handful of examples has an interval too wide to say anything, and the non-members
    are split in two halves (calibration and scoring), so each half needs enough examples.
    """
    if n_forget < MIN_MEMBERS:
        return (
            f"only {n_forget} forget examples: membership tests need at least {MIN_MEMBERS} to say anything"
        )
    if n_nonmembers < 2 * MIN_NONMEMBERS:
        return (
            f"only {n_nonmembers} unseen test examples are comparable with the forget set; membership "
            f"tests need at least {2 * MIN_NONMEMBERS}"
        )
    return None


# --------------------------------------------------------------------------- building the context


def check_model_fits(name: str, model: LoadedModel, roles: Roles, device: torch.device) -> None:
    """Refuse, with a readable error, a model that cannot score these inputs and labels."""
    probe = roles.test.x[:2].to(device)
    was_training = model.module.training
    try:
        model.module.eval()  # a probe in train mode would update BatchNorm statistics
        with torch.no_grad():
            out = model.module(probe)
    except Exception as exc:  # shape errors surface as RuntimeError, guards as AssertionError, ...
        first = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"{name} model {model.path} does not accept inputs of shape {tuple(roles.test.x.shape[1:])} "
            f"({type(exc).__name__}: {first})"
        ) from None
    finally:
        model.module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != probe.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{name} model {model.path} must return logits of shape (batch, classes), got {shape}"
        )
    if out.shape[1] < roles.num_classes:
        raise ModelError(
            f"{name} model {model.path} has {out.shape[1]} outputs but the data has labels up to "
            f"{roles.num_classes - 1}"
        )


def _model_views(
    models: dict[str, LoadedModel], roles: Roles, options: AuditOptions, device: torch.device, timer
) -> dict[str, ModelView]:
    """Run every model once on every role: logits, then signals, then correctness."""
    views = {name: ModelView(name, loaded) for name, loaded in models.items()}
    sets = {"forget": roles.forget, "retain": roles.retain, "test": roles.test}
    with timer.step("logits"):
        for view in views.values():
            for role, s in sets.items():
                logits = compute_logits(view.loaded.module, s.x, batch_size=options.batch_size, device=device)
                if not torch.isfinite(logits).all():
                    raise ModelError(f"{view.loaded.path} produced NaN or infinite logits on the {role} set")
                view.logits[role] = logits[:, : max(roles.num_classes, logits.shape[1])]
    with timer.step("signals"):
        for view in views.values():
            for role, s in sets.items():
                view.signals[role] = compute_signals(view.logits[role], s.y)
    with timer.step("accuracy"):
        for view in views.values():
            view.correct = {r: view.signals[r].predictions == view.signals[r].labels for r in ROLES}
    return views


def nearby_queries(roles: Roles, options: AuditOptions) -> dict[str, list[torch.Tensor]]:
    """The augmented copies of the forget and test inputs every model is queried on (none if off).

    One noise scale (the test set's per-feature spread) for both roles, so that forget and test
    examples are perturbed alike, and the same copies for every model, so that comparisons
    between models stay paired example by example.
    """
    if options.augmentations <= 0:
        return {}
    spread = roles.test.x.float().std(dim=0)
    sets = {"forget": roles.forget, "test": roles.test}
    return {
        role: augmented_views(sets[role].x, options.augmentations, seed=options.seed + i, spread=spread)
        for i, role in enumerate(PER_EXAMPLE_ROLES)
    }


def _mean_margins(module, queries, roles: Roles, options: AuditOptions, device) -> dict[str, np.ndarray]:
    """A model's logit margin on the forget and test roles, averaged over the nearby queries."""
    labels = {"forget": roles.forget.y, "test": roles.test.y}
    return {
        role: mean_signal(module, views, labels[role], batch_size=options.batch_size, device=device)
        for role, views in queries.items()
    }


def reference_signals(
    roles: Roles, options: AuditOptions, queries: dict[str, list[torch.Tensor]], device: torch.device
) -> ReferenceSignals:
    """Every reference model's logit margin (exact and averaged over the queries) and correctness.

    Always recomputed: reference logits are cheap, and a cache keyed on file digests could be
    made to answer for other models (issue #11).
    """
    sets = {"forget": roles.forget, "test": roles.test}
    margin: dict[str, list] = {r: [] for r in PER_EXAMPLE_ROLES}
    correct: dict[str, list] = {r: [] for r in PER_EXAMPLE_ROLES}
    augmented: dict[str, list] = {r: [] for r in queries}
    for ref in options.reference_models:
        for role, s in sets.items():
            logits = compute_logits(ref, s.x, batch_size=options.batch_size, device=device)
            sig = compute_signals(logits, s.y)
            margin[role].append(sig.logit_margin)
            correct[role].append(sig.predictions == sig.labels)
        for role, values in _mean_margins(ref, queries, roles, options, device).items():
            augmented[role].append(values)

    def stacked(columns: dict[str, list]) -> dict[str, np.ndarray]:
        return {role: np.stack(cols, axis=1) for role, cols in columns.items()}

    return ReferenceSignals(margin=stacked(margin), augmented=stacked(augmented), correct=stacked(correct))


def build_context(
    original: LoadedModel, unlearned: LoadedModel, roles: Roles, options: AuditOptions, timer: StepTimer
) -> AuditContext:
    """Check the models fit the data, compute every view once and take the shared decisions."""
    device = torch.device(options.device)
    models = {"original": original, "unlearned": unlearned}
    if options.retrained is not None:
        models["retrained"] = options.retrained
    for name, loaded in models.items():
        check_model_fits(name, loaded, roles, device)
    if options.progress is not None:
        options.progress("computing logits")
    views = _model_views(models, roles, options, device, timer)
    queries = nearby_queries(roles, options)
    with timer.step("augmented_signals"):
        for view in views.values():
            view.augmented = _mean_margins(view.loaded.module, queries, roles, options, device)
    references = None
    if options.reference_models:
        with timer.step("reference_signals"):
            references = reference_signals(roles, options, queries, device)
    nm_index = nonmember_index(roles)
    two_sided = membership_two_sided(
        retrained=views.get("retrained"), class_wise=roles.class_wise, policy=options.policy
    )
    fair = baseline_fair(has_retrained="retrained" in views, roles=roles)
    problem = membership_sample_problem(len(roles.forget), len(nm_index))
    return AuditContext(
        roles=roles,
        options=options,
        device=device,
        views=views,
        nm_index=nm_index,
        in_forget_classes=forgotten_class_mask(roles),
        split=None if problem else split_halves(len(nm_index), options.seed),
        two_sided=two_sided.value,
        baseline_fair=fair.value,
        notes=tuple(n for n in (two_sided.note, fair.note, problem) if n),
        references=references,
    )
