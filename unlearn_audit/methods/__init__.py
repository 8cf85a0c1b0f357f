"""The bundled unlearning methods and their registry.

>>> from unlearn_audit.methods import get_method, list_methods, UnlearnData
>>> [m.name for m in list_methods()]                      # doctest: +SKIP
>>> outcome = get_method("amun", epochs=3).unlearn(model, data, seed=0)   # doctest: +SKIP

Importing this package registers every bundled method.
"""

from __future__ import annotations

# Importing the method modules registers them.
from unlearn_audit.methods import (  # noqa: F401
    amnesiac,
    amun,
    boundary_shrink,
    deltagrad,
    finetune,
    gradient_ascent,
    influence_distillation,
    l1_sparse,
    mcmc,
    random_label,
    retrain,
    salun,
    scrub,
    sisa,
    unlearnable,
)
from unlearn_audit.methods.amun import AdversarialSet, build_adversarial_set
from unlearn_audit.methods.base import UnlearnData, UnlearningMethod, UnlearnOutcome
from unlearn_audit.methods.registry import MethodInfo, ParamInfo, get_method, list_methods, register_method

__all__ = [
    "AdversarialSet",
    "MethodInfo",
    "ParamInfo",
    "UnlearnData",
    "UnlearnOutcome",
    "UnlearningMethod",
    "build_adversarial_set",
    "get_method",
    "list_methods",
    "register_method",
]
