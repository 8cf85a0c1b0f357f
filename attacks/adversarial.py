"""Adversarial robustness in one import: perturbations, attack specs, robust accuracy, masking checks.

Answers RQ1-RQ4 of the robustness study (is a standard / adversarially trained model robust
before and after deletion?) with three numbers per attack: clean accuracy ACC, robust accuracy
R-ACC and Gap = ACC - R-ACC. The work is done in modules of one job each, re-exported here so
that callers need one name:

- ``attacks.spec``: ``AttackSpec`` (FGSM, PGD L-inf / L2, AutoAttack) and the argument checks;
- ``attacks.pgd``: our ``fgsm_perturb`` / ``pgd_perturb``, also the inner loop of adversarial
  training;
- ``attacks.threat``: the per-data-family threat model (eps, step, steps), ``pgd_spec`` and
  ``infer_family`` (which family a tensor of images looks like);
- ``attacks.backends``: native, torchattacks and ART back-ends;
- ``attacks.robust``: ``robust_accuracy`` / ``adversarial_examples``, the guarded entry point;
- ``attacks.random_search``: a gradient-free attack;
- ``attacks.masking``: ``masking_checks`` / ``inspect_attack``, the gradient-masking sanity checks.

Conventions (the RobustBench contract): inputs are float tensors ``N x C x H x W`` in [0, 1];
any normalisation lives inside the model; ``model(x)`` returns logits ``N x K``; eps is measured
in pixel units.
"""

from __future__ import annotations

from attacks.backends import BACKENDS
from attacks.masking import (
    GradientHealth,
    MaskingFlag,
    MaskingReport,
    MaskingThresholds,
    gradient_health,
    inspect_attack,
    masking_checks,
    search_correct,
)
from attacks.pgd import fgsm_perturb, pgd_perturb
from attacks.random_search import random_search_perturb
from attacks.robust import AttackOutcome, RobustResult, adversarial_examples, evaluate_attack, robust_accuracy
from attacks.spec import ATTACKS, NORMS, AttackSpec
from attacks.threat import THREAT_MODELS, ThreatModel, infer_family, pgd_spec, threat_model

__all__ = [
    "ATTACKS",
    "BACKENDS",
    "NORMS",
    "THREAT_MODELS",
    "AttackOutcome",
    "AttackSpec",
    "GradientHealth",
    "MaskingFlag",
    "MaskingReport",
    "MaskingThresholds",
    "RobustResult",
    "ThreatModel",
    "adversarial_examples",
    "evaluate_attack",
    "fgsm_perturb",
    "gradient_health",
    "infer_family",
    "inspect_attack",
    "masking_checks",
    "pgd_perturb",
    "pgd_spec",
    "random_search_perturb",
    "robust_accuracy",
    "search_correct",
    "threat_model",
]
