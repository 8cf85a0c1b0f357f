"""The bundled unlearning methods and their registry.

>>> from unlearn_audit.methods import get_method, list_methods, UnlearnData
>>> [m.name for m in list_methods()]                      # doctest: +SKIP
>>> outcome = get_method("amun", epochs=3).unlearn(model, data, seed=0)   # doctest: +SKIP

Importing this package registers every bundled method.
"""

from __future__ import annotations

from unlearn_audit.methods.base import UnlearnData, UnlearningMethod, UnlearnOutcome
from unlearn_audit.methods.registry import MethodInfo, ParamInfo, get_method, list_methods, register_method

# Importing the method modules registers them (in this order).
from unlearn_audit.methods import (  # noqa: E402, I001  (registration side effect)
    retrain,
    finetune,
    gradient_ascent,
    random_label,
    boundary_shrink,
    l1_sparse,
    salun,
    scrub,
    amun,
    influence_distillation,
)
from unlearn_audit.methods.amun import AdversarialSet, build_adversarial_set

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

