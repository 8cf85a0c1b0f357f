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
