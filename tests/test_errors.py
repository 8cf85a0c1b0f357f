"""One message for both audiences: the library names the keyword, the CLI shows the flag."""

from __future__ import annotations

import pytest

from unlearn_audit.cli_common import flag_for, render_error
from unlearn_audit.errors import ConfigError
from unlearn_audit.evaluation import evaluate_audit


def test_flags_of_keywords():
    assert flag_for("reference_models") == "--reference-models"
    assert flag_for("policy_path") == "--policy"
    assert flag_for("json_out") == "--json"
    assert flag_for("set_") == "--set" and flag_for("params") == "--set"


def test_only_the_named_keywords_are_rendered():
    err = ConfigError("`forget` goes with `data`; keep `other` as it is", param=("forget", "data"))
    assert err.param == "forget"
    assert render_error(err) == "--forget goes with --data; keep `other` as it is"
    assert ConfigError("plain").params == () and ConfigError("plain").param is None


@pytest.mark.parametrize(
    ("options", "python", "cli"),
    [
        ({"reference_models": -1}, "`reference_models` must be >= 0, got -1",
         "--reference-models must be >= 0"),
        ({"reference_models": 2, "reference_dir": "refs"}, "give `reference_models` N or `reference_dir` DIR",
         "give --reference-models N or --reference-dir DIR"),
        ({"label_only": "x"}, "`label_only` must be gap or boundary", "--label-only must be gap or boundary"),
        ({"timeout": -1}, "`timeout` must be a positive number", "--timeout must be a positive number"),
    ],
)  # fmt: skip
def test_evaluate_errors_name_the_keyword_and_the_flag(options, python, cli, tmp_path):
    with pytest.raises(ConfigError) as err:
        evaluate_audit(original=tmp_path / "o.pt", unlearned=tmp_path / "u.pt", **options)
    assert python in str(err.value)
    assert cli in render_error(err.value)


def _quoted(field: str) -> str:
    """``THREAT_MODELS``' values of ``field`` as the help texts quote them."""
    from attacks.threat import THREAT_MODELS

    def number(value: float) -> str:
        return (
            f"{round(value * 255)}/255" if value < 0.1 and float(value * 255).is_integer() else f"{value:g}"
        )

    mnist, other = THREAT_MODELS["mnist"], THREAT_MODELS["other"]
    assert getattr(THREAT_MODELS["cifar"], field) == getattr(other, field)
    return f"{number(getattr(mnist, field))} MNIST-like, {number(getattr(other, field))} other"


def test_help_texts_quote_the_threat_model_table():
    from unlearn_audit.cli_common import EPS_DEFAULTS, STEPS_DEFAULTS

    assert EPS_DEFAULTS == _quoted("eps") and STEPS_DEFAULTS == _quoted("steps")


def test_adversarial_training_uses_the_family_threat_model():
    from attacks.threat import THREAT_MODELS
    from unlearn_audit.training import default_config

    for family, threat in THREAT_MODELS.items():
        assert default_config("mlp", family).eps == threat.eps
