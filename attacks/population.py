"""Population membership-inference attacks: one attacker for all examples, no extra models.

Two families, both on the signals of ``attacks.signals``:

* Threshold attacks (Yeom et al., CSF 2018; Song & Mittal, USENIX Security 2021): the
  membership score of one signal, thresholded; reported as a full ROC, so no threshold is
  chosen.
* Learned attacks: a scikit-learn classifier on the 5-signal vector, trained on members
  vs non-members of the target model (the "MIA-efficacy" set-up of Jia et al. / SalUn,
  with richer features and AUC instead of accuracy). ``"logreg"`` is a standardised,
  class-balanced logistic regression; ``"gbm"`` a class-balanced histogram gradient
  boosting classifier.

In an unlearning audit: members for training = the retain set, non-members = the test
set; it is split into halves A and B so that no test example both trains and evaluates an
attacker. Learned attackers train on retain vs test-A and are scored on forget vs test-B;
threshold attacks are scored on forget vs test-B. Population attacks overstate privacy
compared with per-example attacks (Hayes et al., arXiv 2403.01218); they are the cheap
first line, not the verdict.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from attacks.signals import SIGNAL_NAMES, Signals
from attacks.stats import AttackResult, evaluate_attack
from unlearn_audit.errors import ConfigError, DataError

__all__ = [
    "LEARNED_KINDS",
    "PopulationResult",
    "learned_attack",
    "population_attacks",
    "split_halves",
    "threshold_attacks",
]

logger = logging.getLogger(__name__)

LEARNED_KINDS: tuple[str, ...] = ("logreg", "gbm")
LearnedKind = Literal["logreg", "gbm"]


def _check_signals(sig: Any, what: str) -> Signals:
    if not isinstance(sig, Signals):
        raise DataError(f"{what} must be attacks.signals.Signals, got {type(sig).__name__}")
    if len(sig) == 0:
        raise DataError(f"{what} is empty; an attack needs at least one example in every role")
    return sig


def threshold_attacks(
    member: Signals,
    nonmember: Signals,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, AttackResult]:
    """One threshold attack per signal, keyed by signal name (``SIGNAL_NAMES`` order).

    Score = ``Signals.membership_score(name)``; the result's ``name`` is
    ``"threshold/<signal>"``. All attacks share ``seed``, hence the same bootstrap
    replicates, so their intervals are directly comparable.
    """
    _check_signals(member, "member")
    _check_signals(nonmember, "nonmember")
    return {
        name: evaluate_attack(
            f"threshold/{name}",
            member.membership_score(name),
            nonmember.membership_score(name),
            n_bootstrap=n_bootstrap,
            level=level,
            seed=seed,
        )
        for name in SIGNAL_NAMES
    }


def _make_classifier(kind: str, seed: int) -> Pipeline:
    clf: ClassifierMixin
    if kind == "logreg":
        clf = LogisticRegression(class_weight="balanced", max_iter=1000)
    elif kind == "gbm":
        # Shallow, regularised trees: 5 features, and the classes are often barely separable.
        clf = HistGradientBoostingClassifier(
            class_weight="balanced",
            max_iter=100,
            learning_rate=0.1,
            max_leaf_nodes=15,
            min_samples_leaf=20,
            l2_regularization=1.0,
            random_state=seed,
        )
    else:
        raise ConfigError(f"unknown learned attack kind {kind!r}; available: {', '.join(LEARNED_KINDS)}")
    return make_pipeline(StandardScaler(), clf)


def learned_attack(
    train_member: Signals,
    train_nonmember: Signals,
    eval_member: Signals,
    eval_nonmember: Signals,
    *,
    kind: LearnedKind = "logreg",
    seed: int = 0,
    n_bootstrap: int = 1000,
    level: float = 0.95,
) -> tuple[AttackResult, float]:
    """Train a classifier on the 5 member-oriented signals and score held-out examples.

    Features are ``Signals.as_matrix()`` (N, 5), standardised on the training rows;
    classes are balanced with ``class_weight="balanced"`` (retain is usually far larger
    than test). The attack score is ``predict_proba[:, 1]`` (member probability).

    Args:
        train_member, train_nonmember: examples the attacker learns from (e.g. retain, test-A).
        eval_member, eval_nonmember: examples it is scored on (e.g. forget, test-B).
        kind: ``"logreg"`` or ``"gbm"``.
        seed: seed of the classifier and of the bootstrap.
        n_bootstrap, level: bootstrap replicates and interval level for ``evaluate_attack``.

    Returns:
        ``(result, mia_efficacy)``: the eval ``AttackResult`` (name ``"learned/<kind>"``), and
        the share of ``eval_member`` the attacker calls non-member at its 0.5 decision
        threshold (Jia et al., NeurIPS 2023 "MIA-efficacy"; higher = looks more forgotten).

    Raises:
        ConfigError: unknown ``kind``.
        DataError: an empty role.
    """
    for sig, what in (
        (train_member, "train_member"),
        (train_nonmember, "train_nonmember"),
        (eval_member, "eval_member"),
        (eval_nonmember, "eval_nonmember"),
    ):
        _check_signals(sig, what)
    model = _make_classifier(kind, seed)
    x_train = np.vstack([train_member.as_matrix(), train_nonmember.as_matrix()])
    y_train = np.r_[np.ones(len(train_member), np.int64), np.zeros(len(train_nonmember), np.int64)]
    model.fit(x_train, y_train)

    member_class = int(np.flatnonzero(model.classes_ == 1)[0])
    p_member = model.predict_proba(eval_member.as_matrix())[:, member_class]
    p_nonmember = model.predict_proba(eval_nonmember.as_matrix())[:, member_class]
    mia_efficacy = float(np.mean(model.predict(eval_member.as_matrix()) == 0))
    result = evaluate_attack(
        f"learned/{kind}",
        p_member,
        p_nonmember,
        n_bootstrap=n_bootstrap,
        level=level,
        seed=seed,
        notes=(
            f"trained on {len(train_member)} members vs {len(train_nonmember)} non-members "
            f"(class-balanced); MIA-efficacy {mia_efficacy:.4f}",
        ),
    )
    logger.debug("learned attack %s: auc=%.4f efficacy=%.4f", kind, result.auc, mia_efficacy)
    return result, mia_efficacy


def split_halves(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into halves A (``n // 2``) and B (the rest).

    Both index arrays are sorted int64. Pass the same split to ``population_attacks`` to
    attack several models on identical halves.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
        raise DataError(f"need at least 2 test examples to split into halves, got n={n!r}")
    perm = np.random.default_rng(seed).permutation(int(n))
    half = int(n) // 2
    return np.sort(perm[:half]).astype(np.int64), np.sort(perm[half:]).astype(np.int64)


def _check_split(split: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        a, b = (np.asarray(part) for part in split)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"test_split must be a pair of index arrays (A, B), got {type(split).__name__}"
        ) from exc
    for part, label in ((a, "A"), (b, "B")):
        if part.ndim != 1 or part.size == 0 or not np.issubdtype(part.dtype, np.integer):
            raise DataError(f"test_split half {label} must be a non-empty 1-D integer array, got {part!r}")
        if part.min() < 0 or part.max() >= n:
            raise DataError(
                f"test_split half {label} has indices outside [0, {n - 1}]: {part.min()}..{part.max()}"
            )
    overlap = np.intersect1d(a, b)
    if overlap.size:
        raise DataError(f"test_split halves overlap in {overlap.size} indices (e.g. {int(overlap[0])})")
    return a.astype(np.int64), b.astype(np.int64)


@dataclass(frozen=True)
class PopulationResult:
    """All population attacks on one model.

    ``threshold`` is keyed by signal name, ``learned`` and ``mia_efficacy`` by kind;
    ``best`` is the ``AttackResult.name`` (e.g. ``"threshold/loss"`` or ``"learned/gbm"``)
    of the attack with the highest AUC.
    """

    threshold: dict[str, AttackResult]
    learned: dict[str, AttackResult]
    mia_efficacy: dict[str, float]
    best: str
    notes: tuple[str, ...] = ()
    seed: int = 0

    def all_results(self) -> dict[str, AttackResult]:
        """Every attack keyed by its ``AttackResult.name``."""
        return {r.name: r for r in (*self.threshold.values(), *self.learned.values())}

    def to_dict(self, include_scores: bool = False) -> dict[str, Any]:
        """A JSON-safe dict; see ``AttackResult.to_dict``."""
        return {
            "threshold": {k: v.to_dict(include_scores) for k, v in self.threshold.items()},
            "learned": {k: v.to_dict(include_scores) for k, v in self.learned.items()},
            "mia_efficacy": {k: float(v) for k, v in self.mia_efficacy.items()},
            "best": self.best,
            "notes": list(self.notes),
            "seed": int(self.seed),
        }


def population_attacks(
    forget: Signals,
    retain: Signals,
    test: Signals,
    *,
    seed: int = 0,
    n_bootstrap: int = 1000,
    kinds: Sequence[str] = LEARNED_KINDS,
    test_split: tuple[np.ndarray, np.ndarray] | None = None,
    level: float = 0.95,
) -> PopulationResult:
    """Threshold and learned attacks on the forget set of one model (see module docstring).

    Args:
        forget: signals of the forget set (evaluation members).
        retain: signals of the retain set (training members of the learned attackers).
        test: signals of held-out data; split into halves A (attacker training) and B
            (evaluation non-members).
        seed: seed of the split (when ``test_split`` is None), the classifiers and the bootstrap.
        n_bootstrap: bootstrap replicates per attack (default 1000; 0 = no intervals).
        kinds: learned attack kinds to run, a subset of ``("logreg", "gbm")``; may be empty.
        test_split: explicit ``(idx_A, idx_B)`` into ``test``, e.g. from ``split_halves``,
            so several models are attacked on the same halves.
        level: interval level (default 0.95).

    Raises:
        DataError: empty roles, or a malformed ``test_split``.
        ConfigError: unknown kind.
    """
    _check_signals(forget, "forget")
    _check_signals(retain, "retain")
    _check_signals(test, "test")
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in LEARNED_KINDS]
    if unknown:
        raise ConfigError(f"unknown learned attack kind(s) {unknown}; available: {', '.join(LEARNED_KINDS)}")
    idx_a, idx_b = (
        split_halves(len(test), seed) if test_split is None else _check_split(test_split, len(test))
    )
    test_a, test_b = test.subset(idx_a), test.subset(idx_b)

    threshold = threshold_attacks(forget, test_b, n_bootstrap=n_bootstrap, seed=seed, level=level)
    learned: dict[str, AttackResult] = {}
    efficacy: dict[str, float] = {}
    for kind in kinds:
        learned[kind], efficacy[kind] = learned_attack(
            retain, test_a, forget, test_b, kind=kind, seed=seed, n_bootstrap=n_bootstrap, level=level
        )
    every = [*threshold.values(), *learned.values()]
    best = max(every, key=lambda r: r.auc).name
    notes = (
        f"scored on forget ({len(forget)}) vs test half B ({len(test_b)}); learned attackers trained "
        f"on retain ({len(retain)}) vs test half A ({len(test_a)})",
        "population attacks: one attacker for all examples; per-example attacks (LiRA/U-LiRA) are stronger",
    )
    return PopulationResult(
        threshold=threshold, learned=learned, mia_efficacy=efficacy, best=best, notes=notes, seed=int(seed)
    )
