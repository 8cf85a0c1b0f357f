"""The reusable GitHub Action (action.yml), run locally: its scripts against a seeded audit.

``scripts/ci_summary.py`` writes the job summary and decides the gate; ``scripts/action_audit.sh``
(the action's main step) builds the ``evaluate`` command from the inputs. The shell script runs
here with a stand-in ``unlearn-audit`` on the PATH that records its arguments and answers with
the seeded audit, so the test checks what the action would run without auditing twice.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from seeded_audit import seeded_audit

from unlearn_audit.report import read_json, verdict_of_checks

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


@pytest.fixture(scope="module")
def seeded() -> dict:
    result = copy.deepcopy(read_json(seeded_audit() / "audit.json"))
    del result["plots"]  # the summary never reads them; loading without them is faster
    return result


def with_verdict(result: dict, status: str) -> dict:
    """The seeded audit with every gating check set to ``status``: a consistent pass or fail file."""
    changed = copy.deepcopy(result)
    for check in changed["checks"]:
        if check.get("gating", True):
            check["status"] = status
    changed["verdict"] = verdict_of_checks(changed["checks"])
    assert changed["verdict"] == status
    return changed


def env_for(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), **extra)
    env["GITHUB_STEP_SUMMARY"] = str(tmp_path / "summary.md")
    env["GITHUB_OUTPUT"] = str(tmp_path / "output.txt")
    return env


def summarise(result_path: Path, tmp_path: Path, *options: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, SCRIPTS / "ci_summary.py", result_path, *options],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    return done.returncode, summary, (tmp_path / "output.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("status", "treat", "code"),
    [("inconclusive", "fail", 1), ("inconclusive", "pass", 0), ("fail", "pass", 1), ("pass", "fail", 0)],
)
def test_summary_and_gate(seeded, tmp_path, status, treat, code):
    result = seeded if status == "inconclusive" else with_verdict(seeded, status)
    assert result["verdict"] == status
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    got, summary, output = summarise(path, tmp_path, "--treat-inconclusive-as", treat)
    assert got == code
    assert summary.startswith("## Unlearning audit:") and f"**{status.upper()}**" in summary
    for check in result["checks"]:
        assert f"| `{check['name']}` | {check['status'].upper()}" in summary
    assert "| unlearned |" in summary and result["provenance"]["models"]["unlearned"]["sha256"] in summary
    assert f"verdict={status}" in output


def test_summary_of_a_missing_result_is_an_error(tmp_path):
    code, summary, output = summarise(tmp_path / "result.json", tmp_path, "--evaluate-exit", "2")
    assert code == 2
    assert "**ERROR**" in summary and "exit code 2" in summary
    assert "verdict=error" in output


def test_summary_cells_cannot_break_the_table(seeded, tmp_path):
    result = copy.deepcopy(seeded)
    result["checks"][0]["detail"] = "a | b\nc <img src=x>"
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result), encoding="utf-8")
    _, summary, _ = summarise(path, tmp_path)
    assert "a \\| b c &lt;img src=x&gt;" in summary


FAKE_CLI = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$FAKE_LOG.$1"
if [ "$1" = evaluate ]; then
  while [ $# -gt 0 ]; do if [ "$1" = --json ]; then cp "$FAKE_RESULT" "$2"; fi; shift; done
  exit 3
fi
exit 0
"""


def test_action_script_runs_evaluate_with_the_inputs(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "unlearn-audit").write_text(FAKE_CLI, encoding="utf-8")
    (bin_dir / "unlearn-audit").chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    (bin_dir / "python").chmod(0o755)
    hostile = str(tmp_path / "$(touch pwned).pt")
    inputs = {
        "ORIGINAL": "models/original.pt", "UNLEARNED": hostile, "RETRAINED": "",
        "FORGET_DATA": "f.npz", "RETAIN_DATA": "r.npz", "TEST_DATA": "t.npz",
        "POLICY_TOML": "[utility]\nmax_test_accuracy_drop = 0.03", "ROBUSTNESS": "false",
        "REFERENCE_MODELS": "4", "TREAT_INCONCLUSIVE_AS": "fail", "OUTPUT_DIR": str(tmp_path / "out"),
        "FAKE_LOG": str(tmp_path / "called"), "FAKE_RESULT": str(seeded_audit() / "audit.json"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }  # fmt: skip
    done = subprocess.run(
        ["bash", SCRIPTS / "action_audit.sh"], env=env_for(tmp_path, **inputs), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "called.evaluate").read_text(encoding="utf-8").splitlines()
    out = tmp_path / "out"
    assert args[:5] == ["evaluate", "--original", "models/original.pt", "--unlearned", hostile]
    expected = {
        "--forget-data": "f.npz", "--reference-models": "4", "--policy": f"{out}/policy.toml",
        "--json": f"{out}/result.json", "--junit": f"{out}/junit.xml",
    }  # fmt: skip
    for option, value in expected.items():
        assert args[args.index(option) + 1] == value
    assert "--no-robustness" in args and "--retrained" not in args and "--data" not in args
    assert (out / "policy.toml").read_text(encoding="utf-8") == inputs["POLICY_TOML"] + "\n"
    assert not (tmp_path / "pwned").exists()  # a file name is data, never shell code
    report = (tmp_path / "called.report").read_text(encoding="utf-8").splitlines()
    assert report == ["report", f"{out}/result.json", "--pdf", f"{out}/report.pdf"]
    output = (tmp_path / "output.txt").read_text(encoding="utf-8").splitlines()
    assert "exit-code=3" in output and "verdict=inconclusive" in output and "gate=1" in output


def test_action_definition():
    action = (ROOT / "action.yml").read_text(encoding="utf-8")
    assert "using: composite" in action
    for needed in ("actions/upload-artifact@v4", "mikepenz/action-junit-report@v4", "action_audit.sh"):
        assert needed in action
    for name in ("original", "unlearned", "retrained", "forget-data", "retain-data", "test-data", "data",
                 "policy", "policy-toml", "treat-inconclusive-as", "fail-job", "pdf"):  # fmt: skip
        assert f"\n  {name}:\n" in action, name
    # inputs reach shell code only through env: no ${{ }} expression inside a run script
    run_indent = None
    for line in action.splitlines():
        indent = len(line) - len(line.lstrip())
        if run_indent is not None and line.strip() and indent <= run_indent:
            run_indent = None
        if line.strip().startswith("run:"):
            run_indent = indent
        if run_indent is not None:
            assert "${{" not in line, line
    example = (ROOT / "examples" / "github-actions-audit.yml").read_text(encoding="utf-8")
    assert "uses: your-org/unlearn-audit@" in example
