"""The bundled unlearning methods and their registry.

>>> from unlearn_audit.methods import get_method, list_methods, UnlearnData
>>> [m.name for m in list_methods()]                      # doctest: +SKIP
>>> outcome = get_method("amun", epochs=3).unlearn(model, data, seed=0)   # doctest: +SKIP

Importing this package registers every bundled method. Methods that need state recorded while
the original trains are :class:`StatefulMethod` subclasses: ``train --for-method NAME`` takes
their recipe from :func:`stateful_recipe` and runs their hook through
:func:`record_stateful_training`.
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
from unlearn_audit.methods._state import (
    RecipeRule,
    StatefulMethod,
    StatefulTraining,
    record_stateful_training,
    stateful_recipe,
)
from unlearn_audit.methods.amun import AdversarialSet, build_adversarial_set
from unlearn_audit.methods.base import UnlearnData, UnlearningMethod, UnlearnOutcome
from unlearn_audit.methods.registry import MethodInfo, ParamInfo, get_method, list_methods, register_method

__all__ = [
    "AdversarialSet",
    "MethodInfo",
    "ParamInfo",
    "RecipeRule",
    "StatefulMethod",
    "StatefulTraining",
    "UnlearnData",
    "UnlearnOutcome",
    "UnlearningMethod",
    "build_adversarial_set",
    "get_method",
    "list_methods",
    "record_stateful_training",
    "register_method",
    "stateful_recipe",
]
