"""The gating policy: defaults, TOML overrides, and every kind of bad policy file.

Library errors are ``ConfigError``s that name the section, key or value; through the CLI
each is one ``unlearn-audit: error:`` line and exit code 2. One audit shows that the
policy's numbers reach the result (JSON ``policy`` and each check's ``threshold``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from unlearn_audit.errors import ConfigError
from unlearn_audit.policy import DEFAULT_POLICY, Policy, load_policy

DEFAULTS = {
    "mia_auc_margin": 0.05,
    "max_retain_accuracy_drop": 0.05,
    "max_test_accuracy_drop": 0.05,
    "forget_accuracy_margin": 0.05,
    "max_forget_class_rate": 0.05,
    "max_robust_accuracy_drop": 0.10,
    "confidence_level": 0.95,
    "n_bootstrap": 1000,
}
SECTION_OF = {
    "mia_auc_margin": "privacy",
    "max_retain_accuracy_drop": "utility",
    "max_test_accuracy_drop": "utility",
    "forget_accuracy_margin": "utility",
    "max_forget_class_rate": "utility",
    "max_robust_accuracy_drop": "robustness",
    "confidence_level": "statistics",
    "n_bootstrap": "statistics",
}


def _toml(tmp_path: Path, text: str, name: str = "policy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- defaults and overrides


def test_defaults_are_the_documented_ones() -> None:
    assert DEFAULT_POLICY.to_dict() == DEFAULTS
    assert load_policy(None) == DEFAULT_POLICY
    assert Policy(**DEFAULT_POLICY.to_dict()) == DEFAULT_POLICY
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT_POLICY.mia_auc_margin = 0.5  # type: ignore[misc]


def test_an_empty_file_and_empty_tables_keep_every_default(tmp_path: Path) -> None:
    assert load_policy(_toml(tmp_path, "")) == DEFAULT_POLICY
    assert (
        load_policy(_toml(tmp_path, "[privacy]\n[utility]\n[robustness]\n[statistics]\n")) == DEFAULT_POLICY
    )


@pytest.mark.parametrize(("key", "value"), [(k, 0.2 if k != "n_bootstrap" else 250) for k in DEFAULTS])
def test_each_key_overrides_only_itself(tmp_path: Path, key: str, value: float) -> None:
    if key == "confidence_level":
        value = 0.9
    policy = load_policy(_toml(tmp_path, f"[{SECTION_OF[key]}]\n{key} = {value}\n"))
    assert policy.to_dict() == {**DEFAULTS, key: value}


def test_a_full_policy_file(tmp_path: Path) -> None:
    text = """
    # a comment
    [privacy]
    mia_auc_margin = 0.02
    [utility]
    max_retain_accuracy_drop = 0.01
    max_test_accuracy_drop = 0.03
    forget_accuracy_margin = 0      # integers are numbers too
    max_forget_class_rate = 0.5
    [robustness]
    max_robust_accuracy_drop = 0.2
    [statistics]
    confidence_level = 0.99
    n_bootstrap = 2000
    """
    policy = load_policy(_toml(tmp_path, text))
    assert policy == Policy(0.02, 0.01, 0.03, 0, 0.5, 0.2, 0.99, 2000)


# --------------------------------------------------------------------------- bad files


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[privacy]\nmia_margin = 0.1\n", "unknown key privacy.mia_margin"),
        ("[utility]\nmia_auc_margin = 0.1\n", "unknown key utility.mia_auc_margin"),  # right key, wrong table
        ("[gating]\nmia_auc_margin = 0.1\n", "unknown section [gating]"),
        ("mia_auc_margin = 0.1\n", "unknown section [mia_auc_margin]"),  # a key outside any table
        ("privacy = 0.1\n", "[privacy] must be a table"),
        ("[privacy.extra]\nx = 1\n", "unknown key privacy.extra"),
    ],
    ids=[
        "unknown-key",
        "key-in-wrong-table",
        "unknown-section",
        "top-level-key",
        "section-not-a-table",
        "subtable",
    ],
)
def test_unknown_sections_and_keys_are_errors(tmp_path: Path, text: str, needle: str) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("line", "key", "shown"),
    [
        ("[privacy]\nmia_auc_margin = -0.01", "mia_auc_margin", "-0.01"),
        ("[privacy]\nmia_auc_margin = 1.5", "mia_auc_margin", "1.5"),
        ("[privacy]\nmia_auc_margin = nan", "mia_auc_margin", "nan"),
        ("[privacy]\nmia_auc_margin = inf", "mia_auc_margin", "inf"),
        ('[privacy]\nmia_auc_margin = "0.05"', "mia_auc_margin", "'0.05'"),
        ("[privacy]\nmia_auc_margin = true", "mia_auc_margin", "True"),
        ("[utility]\nmax_test_accuracy_drop = [0.1]", "max_test_accuracy_drop", "[0.1]"),
        ("[statistics]\nn_bootstrap = 10", "n_bootstrap", "10"),
        ("[statistics]\nn_bootstrap = 1000000000", "n_bootstrap", "1000000000"),
        ("[statistics]\nn_bootstrap = 20001", "n_bootstrap", "20001"),
        ("[privacy]\nmia_auc_margin = 0.3", "mia_auc_margin", "0.3"),
        ("[utility]\nforget_accuracy_margin = 0.5", "forget_accuracy_margin", "0.5"),
        ("[utility]\nmax_forget_class_rate = 1", "max_forget_class_rate", "1"),
        ("[statistics]\nconfidence_level = 0.9999", "confidence_level", "0.9999"),
        ("[statistics]\nn_bootstrap = 1000.0", "n_bootstrap", "1000.0"),
        ("[statistics]\nn_bootstrap = true", "n_bootstrap", "True"),
        ("[statistics]\nconfidence_level = 1.0", "confidence_level", "1.0"),
        ("[statistics]\nconfidence_level = 0.3", "confidence_level", "0.3"),
        ("[statistics]\nconfidence_level = nan", "confidence_level", "nan"),
        ("[robustness]\nmax_robust_accuracy_drop = 2", "max_robust_accuracy_drop", "2"),
    ],
)
def test_bad_values_are_errors_that_name_the_key_and_value(
    tmp_path: Path, line: str, key: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(_toml(tmp_path, line + "\n"))
    message = str(info.value)
    assert key in message
    assert message.endswith(f"got {shown}")


@pytest.mark.parametrize(
    "text",
    [
        "[privacy\nmia_auc_margin = 0.1\n",
        "[privacy]\nmia_auc_margin = 0.1\nmia_auc_margin = 0.2\n",
        "[privacy]\nx = \n",
    ],
    ids=["unclosed-table", "duplicate-key", "missing-value"],
)
def test_invalid_toml_is_an_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(_toml(tmp_path, text))


def test_missing_and_undecodable_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="policy file not found"):
        load_policy(tmp_path)  # a folder is not a policy file
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"[privacy]\nmia_auc_margin = 0.1 # \xff\xfe\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_policy(binary)


def test_policy_constructor_validates_too() -> None:
    with pytest.raises(ConfigError, match="n_bootstrap"):
        Policy(n_bootstrap=99)
    with pytest.raises(ConfigError, match="max_forget_class_rate"):
        Policy(max_forget_class_rate=-1)


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture
def tiny_audit_inputs(tmp_path: Path) -> list[str]:
    """Role files and two untrained native checkpoints: enough for a real (fast) audit."""
    from unlearn_audit.models import build_model, save_checkpoint

    rng = np.random.default_rng(0)
    files = []
    for role, n in (("forget", 60), ("retain", 120), ("test", 120)):
        path = tmp_path / f"{role}.npz"
        np.savez(path, x=rng.random((n, 1, 4, 4)).astype(np.float32), y=np.arange(n) % 3)
        files += [f"--{role}-data", str(path)]
    models = []
    for seed in (0, 1):
        path = tmp_path / f"model{seed}.pt"
        save_checkpoint(
            build_model("logreg", num_classes=3, input_shape=(1, 4, 4), seed=seed),
            path,
            arch="logreg",
            num_classes=3,
            input_shape=(1, 4, 4),
        )
        models.append(str(path))
    return [
        "evaluate",
        "--original",
        models[0],
        "--unlearned",
        models[1],
        *files,
        "--no-robustness",
        "--device",
        "cpu",
    ]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[privacy]\nmia_auc_margn = 0.1\n", "unknown key privacy.mia_auc_margn"),
        ("[gate]\n", "unknown section [gate]"),
        ("[statistics]\nn_bootstrap = 5\n", "n_bootstrap"),
        ("[statistics\n", "not valid TOML"),
    ],
    ids=["unknown-key", "unknown-section", "bad-value", "invalid-toml"],
)
def test_bad_policy_through_the_cli_is_one_line_and_exit_2(
    run_cli, tiny_audit_inputs: list[str], tmp_path: Path, text: str, needle: str
) -> None:
    policy = _toml(tmp_path, text, "bad.toml")
    json_out = tmp_path / "audit.json"
    code, out, err = run_cli(["-q", *tiny_audit_inputs, "--policy", policy, "--json", json_out])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearn-audit: error:") and needle in lines[0]
    assert "Traceback" not in err + out
    assert not json_out.exists()  # nothing is audited or written with a bad policy


def test_policy_values_reach_the_audit_result(run_cli, tiny_audit_inputs: list[str], tmp_path: Path) -> None:
    text = """
    [privacy]
    mia_auc_margin = 0.2
    [utility]
    max_test_accuracy_drop = 0.3
    [statistics]
    n_bootstrap = 100
    """
    policy = _toml(tmp_path, text)
    json_out = tmp_path / "audit.json"
    code, _, err = run_cli(["-q", *tiny_audit_inputs, "--policy", policy, "--json", json_out])
    assert code in (0, 1, 3), err
    result = json.loads(json_out.read_text())
    assert result["policy"] == {
        **DEFAULTS,
        "mia_auc_margin": 0.2,
        "max_test_accuracy_drop": 0.3,
        "n_bootstrap": 100,
    }
    thresholds = {c["name"]: c["threshold"] for c in result["checks"]}
    assert thresholds["mia_population"] == 0.2
    assert thresholds["test_accuracy_drop"] == 0.3
    assert thresholds["retain_accuracy_drop"] == DEFAULTS["max_retain_accuracy_drop"]
    assert result["provenance"]["policy_file"] == str(policy)
