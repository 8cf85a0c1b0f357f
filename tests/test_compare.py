"""``unlearn-audit compare old.json new.json``: what changed between two audits of a release line.

The old audit is the seeded digits audit; the new one is that result with the changes a next
release could bring (a check turning FAIL, an interval moving, the unlearned model's test
accuracy falling and its robust accuracy rising), kept consistent so it loads like a real file.
"""

from __future__ import annotations

import copy
import json

import pytest
from seeded_audit import seeded_audit

import unlearn_audit.cli as cli
from unlearn_audit.cli_compare import register
from unlearn_audit.compare import compare_results, format_comparison
from unlearn_audit.report import read_json, verdict_of_checks


@pytest.fixture(scope="module", autouse=True)
def compare_command():
    register(cli.app)  # what cli.py does once it registers the command; a second call is harmless


@pytest.fixture(scope="module")
def old() -> dict:
    """The seeded audit without its plot data: compare never reads it, and loading skips the plots."""
    result = copy.deepcopy(read_json(seeded_audit() / "audit.json"))
    del result["plots"]
    return result


def next_release(old: dict) -> dict:
    new = copy.deepcopy(old)
    check = next(c for c in new["checks"] if c["name"] == "forget_accuracy")
    check.update(status="fail", value=check["value"] + 0.1, ci=[check["ci"][0] + 0.2, check["ci"][1] + 0.1])
    new["verdict"] = verdict_of_checks(new["checks"])
    new["models"]["unlearned"]["accuracy"]["test"] -= 0.05
    new["models"]["unlearned"]["robustness"]["robust_accuracy"] += 0.25
    return new


@pytest.fixture
def files(old, tmp_path):
    paths = {"old": tmp_path / "old.json", "new": tmp_path / "new.json"}
    paths["old"].write_text(json.dumps(old), encoding="utf-8")
    paths["new"].write_text(json.dumps(next_release(old)), encoding="utf-8")
    return paths


def row(comparison, section, item, figure):
    return next(r for r in comparison.rows if (r.section, r.item, r.figure) == (section, item, figure))


def test_every_change_has_its_direction(old):
    comparison = compare_results(old, next_release(old))
    verdict = row(comparison, "verdict", "verdict", "status")
    assert (verdict.old, verdict.new, verdict.direction, verdict.assessment) == (
        old["verdict"].upper(),
        "FAIL",
        "down",
        "worse",
    )
    status = row(comparison, "check", "forget_accuracy", "status")
    assert status.new == "FAIL" and status.assessment == "worse"
    assert row(comparison, "check", "forget_accuracy", "value").direction == "up"
    assert row(comparison, "check", "forget_accuracy", "interval").direction == "up, narrower"
    test_acc = row(comparison, "accuracy", "unlearned test", "accuracy")
    assert (test_acc.direction, test_acc.assessment) == ("down", "worse")
    robust = row(comparison, "robustness", "unlearned", "robust_accuracy")
    assert (robust.direction, robust.assessment) == ("up", "better")
    moved = {(r.section, r.item, r.figure) for r in comparison.changes}
    assert len(moved) == 6  # verdict, three figures of one check, one accuracy, one robustness
    assert ("check", "model_changed", "status") not in moved


def test_a_check_only_one_audit_ran_is_added_or_removed(old):
    new = copy.deepcopy(old)
    gone = new["checks"].pop()
    comparison = compare_results(old, new)
    assert row(comparison, "check", gone["name"], "status").direction == "removed"
    assert row(compare_results(new, old), "check", gone["name"], "status").direction == "added"


def test_command_prints_changes_and_exits_with_the_new_verdict(run_cli, files, old):
    diff = files["old"].parent / "d.html"
    code, out, err = run_cli(["compare", files["old"], files["new"], "--html", diff])
    assert code == 1, err  # the new audit fails
    assert f"verdict: {old['verdict'].upper()} -> FAIL" in out
    assert "check forget_accuracy status" in out and "(worse)" in out
    assert "accuracy unlearned test accuracy" in out
    page = diff.read_text(encoding="utf-8")
    assert "forget_accuracy" in page and "worse" in page and "http" not in page.split("<body>")[1]
    code, out, _ = run_cli(["compare", files["new"], files["old"]])
    assert code == {"pass": 0, "fail": 1, "inconclusive": 3}[old["verdict"]]
    assert "(better)" in out


def test_the_same_audit_twice_changed_nothing(run_cli, files, old):
    code, out, _ = run_cli(["compare", files["old"], files["old"], "--all"])
    assert code == {"pass": 0, "fail": 1, "inconclusive": 3}[old["verdict"]]
    assert "nothing changed" not in out and " = " in out  # --all lists the unchanged figures
    assert all(r.direction == "same" for r in compare_results(old, old).rows)
    assert "nothing changed" in format_comparison(compare_results(old, old))


def test_bad_input_exits_2(run_cli, files, tmp_path):
    forged = json.loads(files["new"].read_text(encoding="utf-8"))
    forged["verdict"] = "pass"  # the checks say fail
    (tmp_path / "forged.json").write_text(json.dumps(forged), encoding="utf-8")
    (tmp_path / "junk.json").write_text("{not json", encoding="utf-8")
    for bad in ("forged.json", "junk.json", "missing.json"):
        code, _, err = run_cli(["compare", files["old"], tmp_path / bad])
        assert code == 2 and err.startswith("unlearn-audit: error:"), (bad, err)
    code, _, err = run_cli(["compare", files["old"], files["new"], "--html", files["old"]])
    assert code == 2 and "input" in err
    assert json.loads(files["old"].read_text(encoding="utf-8"))  # the input was not overwritten


def test_register_is_idempotent():
    import typer

    app = typer.Typer()
    register(app)
    register(app)
    assert len(app.registered_commands) == 1
