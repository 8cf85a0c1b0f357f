"""`train --for-method X` then `unlearn --method X`, for every stateful method, with no extra flags.

Each method brings the training recipe it needs (amnesiac_per_sample: SGD; DeltaGrad: plain
full-batch GD); the checkpoint's provenance records the recipe actually followed. Settings the
user gives win where the method can train with them and are refused, in one line, where not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from unlearn_audit.data import load_dataset
from unlearn_audit.errors import ConfigError
from unlearn_audit.methods import StatefulMethod, get_method, list_methods
from unlearn_audit.models import load_model
from unlearn_audit.training import TrainConfig, default_config

DATA = ["--data", "digits", "--forget", "random:20", "--device", "cpu"]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _adam(digits, **changes) -> dict:
    """The logreg's own recipe on digits, as ``train`` records it."""
    return default_config("logreg", digits.family, seed=0, **changes).to_dict()


# method -> (train arguments besides the data, the recipe the checkpoint must record)
CASES = {
    "sisa": (["--epochs", "1", "--set", "shards=2", "--set", "slices=2"], lambda d: _adam(d, epochs=1)),
    "amnesiac": (["--epochs", "1"], lambda d: _adam(d, epochs=1)),
    "amnesiac_per_sample": (
        ["--epochs", "1"],
        lambda d: _adam(d, epochs=1, optimizer="sgd", lr=0.05),
    ),
    "deltagrad": (
        ["--epochs", "5"],
        lambda d: _adam(
            d, epochs=5, optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=1e-4, batch_size=len(d.train)
        ),
    ),
    "mcmc_unlearn": (
        ["--set", "num_samples=8", "--set", "chains=4", "--set", "warmup=10", "--set", "leapfrog_steps=3"],
        _adam,
    ),
}


def test_every_stateful_method_is_covered():
    stateful = {m.name for m in list_methods() if getattr(get_method(m.name), "needs_state", False)}
    assert stateful == set(CASES)


@pytest.mark.parametrize("method", sorted(CASES))
def test_train_for_method_then_unlearn_needs_no_extra_flags(run_cli, tmp_path, digits, method):
    extra, recipe = CASES[method]
    original, unlearned = tmp_path / "original.pt", tmp_path / "unlearned.pt"
    code, _, err = run_cli(
        ["train", "--arch", "logreg", "--for-method", method, *extra, *DATA, "--out", original]
    )
    assert code == 0, err
    provenance = load_model(original).metadata["provenance"]
    assert provenance["for_method"] == method
    assert provenance["train_config"] == recipe(digits)
    code, _, err = run_cli(["unlearn", "--method", method, "--model", original, *DATA, "--out", unlearned])
    assert code == 0, err
    done = load_model(unlearned)
    assert done.metadata["provenance"]["unlearning"]["method"] == method
    assert done.metadata["extra"]["method_state"]["method"] == method


def test_wrapped_architectures_are_named_in_the_checkpoint(run_cli, tmp_path):
    sisa, bayes = tmp_path / "sisa.pt", tmp_path / "bayes.pt"
    args = ["train", "--arch", "logreg", *DATA, "--epochs", "1"]
    assert run_cli([*args, "--for-method", "sisa", "--set", "shards=2", "--out", sisa]).code == 0
    loaded = load_model(sisa)
    assert (loaded.arch, loaded.arch_kwargs) == (
        "sisa",
        {"base": "logreg", "shards": 2, "aggregation": "vote", "base_kwargs": {}},
    )
    mcmc = ["--set", "num_samples=4", "--set", "chains=4", "--set", "warmup=4"]
    assert run_cli([*args, "--for-method", "mcmc_unlearn", *mcmc, "--out", bayes]).code == 0
    loaded = load_model(bayes)
    assert (loaded.arch, loaded.arch_kwargs) == ("bayes_logreg", {"num_samples": 4})


def test_explicit_settings_win_where_the_method_allows_them(run_cli, tmp_path):
    out = tmp_path / "per_sample.pt"
    code, _, err = run_cli(
        ["train", "--arch", "logreg", "--for-method", "amnesiac_per_sample", "--epochs", "1", "--lr", "0.02",
         "--optimizer", "sgd", "--batch-size", "32", *DATA, "--out", out]
    )  # fmt: skip
    assert code == 0, err
    recipe = load_model(out).metadata["provenance"]["train_config"]
    assert (recipe["optimizer"], recipe["lr"], recipe["batch_size"]) == ("sgd", 0.02, 32)


@pytest.mark.parametrize(
    "method,args,fragment",
    [
        ("amnesiac_per_sample", ["--optimizer", "adam"], "optimizer='adam': amnesiac_per_sample needs SGD"),
        ("deltagrad", ["--optimizer", "adam"], "optimizer='adam': deltagrad replays plain gradient"),
        ("deltagrad", ["--adversarial", "fgsm"], "adversarial training is not supported"),
        ("mcmc_unlearn", ["--adversarial", "pgd"], "no adversarial variant"),
        ("finetune", [], "method 'finetune' needs no training state"),
    ],
)  # fmt: skip
def test_settings_a_method_cannot_train_with_are_refused_in_one_line(
    run_cli, tmp_path, method, args, fragment
):
    out = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "logreg", "--for-method", method, *args, *DATA, "--out", out])
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert not out.exists()


def test_the_training_hook_is_declared():
    """A stateful method cannot be made without a training hook and an unlearning step."""

    @dataclass(frozen=True)
    class Incomplete(StatefulMethod):
        pass

    with pytest.raises(TypeError, match="record_training"):
        Incomplete()


def test_training_recipe_layers_defaults_rules_and_user_settings():
    base = TrainConfig(epochs=15, batch_size=64)
    method = get_method("deltagrad")
    recipe = method.training_recipe(base, {"epochs": 3, "lr": None})
    assert (recipe.epochs, recipe.lr, recipe.optimizer, recipe.momentum) == (3, 0.1, "sgd", 0.0)
    with pytest.raises(ConfigError, match="leave momentum unset"):
        method.training_recipe(base, {"momentum": 0.9})
    assert get_method("sisa").training_recipe(base, {"seed": 4}) == TrainConfig(
        epochs=15, batch_size=64, seed=4
    )
