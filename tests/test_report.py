"""The three outputs of an audit: JSON (schema), JUnit XML (validity) and HTML (escaping).

One small real audit (three MLPs trained for a second on 460 synthetic examples) runs once
per module through ``unlearn_audit.api.evaluate_audit``, the code behind ``evaluate``. Its
model file lives at ``<script>alert(1)</script>.pt`` (a folder ``<script>alert(1)<`` holding
``script>.pt``), its forget file and test file have hostile names too: the HTML must show
them escaped. Atomic writes are checked by making the rename, the sync or the rendering fail.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import numpy as np
import pytest
import torch

import unlearn_audit.fileio as fileio
import unlearn_audit.report as report
from unlearn_audit.api import evaluate_audit
from unlearn_audit.audit import decide_verdict
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, DataError, UnlearnAuditError
from unlearn_audit.models import build_model, save_checkpoint
from unlearn_audit.training import TrainConfig, train_model

K = 10
SHAPE = (1, 8, 8)
HOSTILE_MODEL = "<script>alert(1)</script>.pt"
HOSTILE_FORGET = '"><img src=x onerror=alert(2)>.npz'
HOSTILE_TEST = "<b onmouseover=alert(3)>test.npz"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _blobs(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, 64))
    out = []
    for n in (60, 200, 200):
        y = rng.integers(0, K, n)
        z = means[y] + 2.5 * rng.normal(size=(n, 64))
        out.append(((1 / (1 + np.exp(-z))).astype(np.float32).reshape(n, *SHAPE), y.astype(np.int64)))
    return out


def _train(x: np.ndarray, y: np.ndarray, seed: int, path: Path) -> Path:
    model = build_model("mlp", num_classes=K, input_shape=SHAPE, seed=seed, hidden=64)
    train_model(
        model,
        TensorSet(torch.from_numpy(x), torch.from_numpy(y)),
        TrainConfig(epochs=20, batch_size=64, seed=seed),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, path, arch="mlp", num_classes=K, input_shape=SHAPE, arch_kwargs={"hidden": 64})
    return path


@pytest.fixture(scope="module")
def audit_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report")
    forget, retain, test = _blobs()
    files = {
        "forget": folder / HOSTILE_FORGET,
        "retain": folder / "retain.npz",
        "test": folder / HOSTILE_TEST,
    }
    for role, (x, y) in zip(("forget", "retain", "test"), (forget, retain, test), strict=True):
        np.savez(files[role], x=x, y=y)
    both = (np.concatenate([forget[0], retain[0]]), np.concatenate([forget[1], retain[1]]))
    files["original"] = _train(*both, seed=0, path=folder / HOSTILE_MODEL)
    files["retrained"] = _train(*retain, seed=1, path=folder / "retrained.pt")
    files["unlearned"] = _train(*retain, seed=2, path=folder / "unlearned.pt")
    policy = folder / "policy.toml"
    policy.write_text("[statistics]\nn_bootstrap = 100\n")
    outputs = {
        "json": folder / "out" / "audit.json",
        "html": folder / "out" / "audit.html",
        "junit": folder / "out" / "audit.xml",
    }
    evaluate_audit(
        original=files["original"],
        unlearned=files["unlearned"],
        retrained=files["retrained"],
        forget_data=files["forget"],
        retain_data=files["retain"],
        test_data=files["test"],
        policy_path=policy,
        json_out=outputs["json"],
        html_out=outputs["html"],
        junit_out=outputs["junit"],
        device="cpu",
    )
    return {**files, **outputs}


@pytest.fixture(scope="module")
def result(audit_files) -> dict:
    return json.loads(audit_files["json"].read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- JSON schema

NUMBER = (int, float)


class Enum:
    def __init__(self, *values: object) -> None:
        self.values = values


class MapOf:
    """A JSON object with any keys whose values all match ``spec``."""

    def __init__(self, spec: object) -> None:
        self.spec = spec


class Check:
    def __init__(self, spec: object, predicate: Callable[[object], bool], what: str) -> None:
        self.spec, self.predicate, self.what = spec, predicate, what


def validate(value: object, spec: object, where: str = "$") -> list[str]:
    """Errors of ``value`` against a small schema language.

    A type: isinstance (a bool is not a number); ``None``: null; a tuple: any one of its specs;
    ``{key: spec}``: an object
    with those keys (``key?`` optional, other keys allowed); ``[spec]``: a list of items;
    ``Enum``, ``MapOf``, ``Check`` as defined above.
    """
    if isinstance(spec, Check):
        errors = validate(value, spec.spec, where)
        return errors or ([] if spec.predicate(value) else [f"{where}: {value!r} is not {spec.what}"])
    if isinstance(spec, Enum):
        return [] if value in spec.values else [f"{where}: {value!r} not in {spec.values}"]
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        return [e for k, v in value.items() for e in validate(v, spec.spec, f"{where}.{k}")]
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return [f"{where}: expected an object, got {type(value).__name__}"]
        errors = []
        for key, sub in spec.items():
            name = key.rstrip("?")
            if name in value:
                errors += validate(value[name], sub, f"{where}.{name}")
            elif not key.endswith("?"):
                errors.append(f"{where}: missing key {name!r}")
        return errors
    if isinstance(spec, list):
        if not isinstance(value, list):
            return [f"{where}: expected an array, got {type(value).__name__}"]
        return [e for i, item in enumerate(value) for e in validate(item, spec[0], f"{where}[{i}]")]
    if isinstance(spec, tuple):  # any one of the alternatives
        failures = [validate(value, alt, where) for alt in spec]
        return [] if any(not f for f in failures) else [f"{where}: {value!r} matches none of {spec}"]
    kind = type(None) if spec is None else spec
    if isinstance(value, bool) and kind is not bool:
        return [f"{where}: expected {kind.__name__}, got a boolean"]
    return (
        [] if isinstance(value, kind) else [f"{where}: expected {kind.__name__}, got {type(value).__name__}"]
    )


SHA256 = Check(str, lambda s: re.fullmatch(r"[0-9a-f]{64}", s) is not None, "a sha256 hex digest")
FRACTION = Check(NUMBER, lambda v: 0 <= v <= 1, "a fraction in [0, 1]")
INTERVAL = ([NUMBER], None)
ISO_DATE = Check(
    str, lambda s: dt.datetime.fromisoformat(s).tzinfo is not None, "an ISO date with a time zone"
)
CHECK = {
    "name": str,
    "status": Enum("pass", "fail", "inconclusive"),
    "value": (*NUMBER, None),
    "threshold": (*NUMBER, None),
    "detail": str,
    "ci": Check(INTERVAL, lambda ci: ci is None or (len(ci) == 2 and ci[0] <= ci[1]), "an interval [lo, hi]"),
    "group": Enum("privacy", "utility", "integrity", "robustness"),
    "gating": bool,
    "explanation": str,
}
ATTACK = {"auc": FRACTION, "auc_ci": INTERVAL}
MODEL = {
    "model": {"path": str, "sha256": SHA256, "format": str, "arch": (str, None), "num_classes": (int, None)},
    "accuracy": {"forget": FRACTION, "retain": FRACTION, "test": FRACTION},
    "mia": {
        "population": {"best": str, "threshold": MapOf(ATTACK), "learned": MapOf(ATTACK)},
        "population_gated": {"attack": str, "auc": FRACTION, "auc_ci": INTERVAL},
    },
}
DISTANCE = {
    "parameters": {
        "comparable": bool,
        "l2": (*NUMBER, None),
        "relative": (*NUMBER, None),
        "cosine": (*NUMBER, None),
        "per_layer": MapOf(NUMBER),
        "note": str,
    },
    "kl_forget": (*NUMBER, None),
    "kl_test": (*NUMBER, None),
}
RESULT = {
    "schema_version": Enum(1),
    "verdict": Enum("pass", "fail", "inconclusive"),
    "checks": [CHECK],
    "models": {"original": MODEL, "unlearned": MODEL, "retrained?": MODEL},
    "distances": {"original_to_unlearned": DISTANCE, "unlearned_to_retrained?": DISTANCE},
    "data": {
        "name": str,
        "num_classes": int,
        "input_shape": [int],
        "n_forget": int,
        "n_retain": int,
        "n_test": int,
        "class_wise": bool,
        "forget_classes": [int],
        "provenance": dict,
    },
    "policy": MapOf(NUMBER),
    "timings": MapOf(NUMBER),
    "plots": {"roc": dict, "histograms": dict, "per_layer": dict},
    "notes": [str],
    "provenance": {
        "tool": Enum("unlearn-audit"),
        "tool_version": str,
        "python": str,
        "platform": str,
        "torch": str,
        "numpy": str,
        "scikit_learn": str,
        "device": str,
        "seed": int,
        "command": str,
        "date": ISO_DATE,
        "models": MapOf({"path": str, "sha256": SHA256}),
    },
}


def test_the_schema_validator_rejects_what_it_should() -> None:
    assert validate({"a": 1}, {"a": int}) == []
    assert validate({"a": True}, {"a": NUMBER})  # a boolean is not a number
    assert validate({}, {"a": int})
    assert validate({}, {"a?": int}) == []
    assert validate([1, "x"], [int])
    assert validate("z" * 64, SHA256)
    assert validate({"ci": [2, 1]}, {"ci": CHECK["ci"]})


def test_json_result_follows_schema_version_1(result: dict) -> None:
    assert validate(result, RESULT) == []
    assert set(result["models"]) == {"original", "unlearned", "retrained"}
    assert len(result["checks"]) == len({c["name"] for c in result["checks"]})


def test_json_is_strict_json(audit_files) -> None:
    def refuse(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(audit_files["json"].read_text(encoding="utf-8"), parse_constant=refuse)


def test_json_verdict_follows_from_its_checks(result: dict) -> None:
    from unlearn_audit.audit import Check as AuditCheck

    checks = [
        AuditCheck(c["name"], c["status"], c["value"], c["threshold"], c["detail"], gating=c["gating"])
        for c in result["checks"]
    ]
    assert result["verdict"] == decide_verdict(checks)


def test_json_provenance_has_every_fingerprint(result: dict, audit_files) -> None:
    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    for name in ("original", "unlearned", "retrained"):
        assert result["provenance"]["models"][name] == {
            "path": str(audit_files[name]),
            "sha256": sha(audit_files[name]),
        }
    for role in ("forget", "retain", "test"):
        assert result["data"]["provenance"][f"{role}_sha256"] == sha(audit_files[role])
        assert result["data"]["provenance"][f"{role}_file"] == str(audit_files[role])
    assert result["provenance"]["torch"] == torch.__version__


# --------------------------------------------------------------------------- JUnit


def _suite(text: str) -> ET.Element:
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == "testsuite"
    return root


def test_junit_file_is_valid_and_has_one_testcase_per_check(audit_files, result: dict) -> None:
    text = audit_files["junit"].read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    suite = _suite(text)
    cases = suite.findall("testcase")
    checks = result["checks"]
    assert [c.get("name") for c in cases] == [c["name"] for c in checks]
    assert suite.get("tests") == str(len(checks))
    assert suite.get("errors") == "0"
    n_fail = sum(c["status"] == "fail" for c in checks)
    n_skip = sum(c["status"] == "inconclusive" for c in checks)
    assert suite.get("failures") == str(n_fail) == str(len(suite.findall("testcase/failure")))
    assert suite.get("skipped") == str(n_skip) == str(len(suite.findall("testcase/skipped")))
    for case, check in zip(cases, checks, strict=True):
        assert case.get("classname") == f"unlearn_audit.{check['group']}"
        assert (case.find("failure") is not None) == (check["status"] == "fail")
        assert (case.find("skipped") is not None) == (check["status"] == "inconclusive")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["verdict"] == result["verdict"]
    for name, info in result["provenance"]["models"].items():
        assert props[f"{name}.sha256"] == info["sha256"]
    float(suite.get("time"))


def _with_checks(result: dict, checks: list[dict]) -> dict:
    out = copy.deepcopy(result)
    out["checks"] = checks
    return out


def _check(name: str, status: str, *, gating: bool = True, detail: str = "d") -> dict:
    return {
        "name": name,
        "status": status,
        "value": 0.1,
        "threshold": 0.05,
        "detail": detail,
        "ci": [0.0, 0.2],
        "group": "privacy",
        "gating": gating,
        "explanation": "",
    }


def test_junit_counts_fail_as_failure_and_inconclusive_as_skipped(result: dict) -> None:
    checks = [
        _check("a", "pass"),
        _check("b", "fail"),
        _check("c", "inconclusive"),
        _check("d", "inconclusive", gating=False),
        _check("e", "pass"),
    ]
    suite = _suite(report.to_junit(_with_checks(result, checks)))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("5", "1", "2")
    skipped = {
        c.get("name"): c.find("skipped").get("message")
        for c in suite.findall("testcase")
        if c.find("skipped") is not None
    }
    assert skipped["c"].startswith("inconclusive:")
    assert skipped["d"].startswith("advisory (not gating):")


def test_junit_escapes_hostile_text(result: dict) -> None:
    hostile = 'a <failure> & "quote" \' ]]> <![CDATA[ x ]]> ünïcode ✓'
    suite = _suite(report.to_junit(_with_checks(result, [_check(hostile, "fail", detail=hostile)])))
    case = suite.find("testcase")
    assert case.get("name") == hostile
    assert case.find("failure").get("message") == f"fail: {hostile}"
    assert case.find("failure").text.endswith(hostile)
    assert len(suite.findall(".//failure")) == 1


# --------------------------------------------------------------------------- HTML


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(html: str) -> list[tuple[str, dict]]:
    parser = _Tags()
    parser.feed(html)
    return parser.tags


def test_hostile_file_names_are_escaped_in_the_html(audit_files, result: dict) -> None:
    html = audit_files["html"].read_text(encoding="utf-8")
    for raw in ("<script>alert", "<img src=x", "<b onmouseover"):
        assert raw not in html
    # the names are shown, escaped: the model path, the forget file, the data set's name
    assert str(markupsafe.escape(str(audit_files["original"]))) in html
    assert str(markupsafe.escape(str(audit_files["forget"]))) in html
    assert str(markupsafe.escape(Path(HOSTILE_TEST).stem)) in html
    tags = _tags(html)
    assert all(tag not in ("script", "iframe", "object", "embed") for tag, _ in tags)
    assert all(not name.startswith("on") for _, attrs in tags for name in attrs)


def test_html_is_self_contained(audit_files) -> None:
    html = audit_files["html"].read_text(encoding="utf-8")
    images = [attrs["src"] for tag, attrs in _tags(html) if tag == "img"]
    assert images, "the report has plots"
    for src in images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    refs = [v for _, attrs in _tags(html) for k, v in attrs.items() if k in ("src", "href") and v]
    assert all(v.startswith("data:") for v in refs)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", html)


def test_html_shows_every_check_and_the_verdict(audit_files, result: dict) -> None:
    html = audit_files["html"].read_text(encoding="utf-8")
    for c in result["checks"]:
        assert f'<code class="name">{report._breakable(c["name"])}</code>' in html  # wraps at "_" only
    assert f'<div class="banner {result["verdict"]}">' in html
    assert f"<title>Unlearning audit: {report.STATUS_LABEL[result['verdict']]}</title>" in html


@pytest.fixture
def no_plots(monkeypatch) -> None:
    """Rendering without the matplotlib figures (slow, and not what these tests are about)."""
    monkeypatch.setattr(report, "_roc_figures", lambda plots: [])
    monkeypatch.setattr(report, "_histogram_figure", lambda plots: None)
    monkeypatch.setattr(report, "_layer_figure", lambda plots: None)


def test_hostile_text_in_checks_and_notes_is_escaped(result: dict, no_plots) -> None:
    hostile = "<script>alert('x')</script>"
    edited = _with_checks(result, [_check("c", "fail", detail=hostile)])
    edited["notes"] = [hostile]
    edited["data"]["name"] = hostile
    html = report.render_html(edited)
    assert "<script>alert" not in html
    assert html.count(str(markupsafe.escape(hostile))) >= 3


# --------------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


WRITERS = {"json": report.write_json, "html": report.write_html, "junit": report.write_junit}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_failing_rename_keeps_the_previous_file_and_no_temp_file(
    tmp_path: Path, result: dict, kind: str, monkeypatch, no_plots
) -> None:
    target = tmp_path / f"audit.{kind}"
    target.write_text("previous content", encoding="utf-8")

    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", refuse)
    with pytest.raises((OSError, UnlearnAuditError)):
        WRITERS[kind](result, target)
    assert target.read_text(encoding="utf-8") == "previous content"
    assert _leftovers(tmp_path, {target.name}) == []


def test_a_failing_write_removes_its_temp_file(tmp_path: Path, result: dict, monkeypatch) -> None:
    target = tmp_path / "audit.json"
    target.write_text("previous content", encoding="utf-8")

    def broken_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fileio.os, "fsync", broken_sync)
    with pytest.raises((OSError, UnlearnAuditError)):
        report.write_json(result, target)
    assert target.read_text(encoding="utf-8") == "previous content"
    assert _leftovers(tmp_path, {target.name}) == []


def test_rendering_that_fails_midway_writes_nothing(
    tmp_path: Path, result: dict, monkeypatch, no_plots
) -> None:
    target = tmp_path / "audit.html"
    target.write_text("previous content", encoding="utf-8")

    def broken(plots):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report, "_layer_figure", broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        report.write_html(result, target)
    assert target.read_text(encoding="utf-8") == "previous content"
    assert _leftovers(tmp_path, {target.name}) == []


def test_writes_create_missing_folders_and_respect_the_umask(tmp_path: Path, result: dict) -> None:
    target = tmp_path / "a" / "b" / "c" / "audit.xml"
    assert report.write_junit(result, target) == target
    _suite(target.read_text(encoding="utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(target.parent, {target.name}) == []


def test_writing_to_a_folder_is_a_config_error(tmp_path: Path, result: dict) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        report.write_json(result, tmp_path)


def test_json_round_trips_through_write_and_read(tmp_path: Path, result: dict) -> None:
    path = report.write_json(result, tmp_path / "again.json")
    assert report.read_json(path) == result


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "not found"),
        ("{", "not valid JSON"),
        ("[]", "not an unlearn-audit result"),
        ('{"verdict": "pass"}', "not an unlearn-audit result"),
    ],
)
def test_read_json_rejects_what_it_cannot_render(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "x.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=needle):
        report.read_json(path)


def test_read_json_rejects_another_schema_version(tmp_path: Path, result: dict) -> None:
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({**result, "schema_version": 2}))
    with pytest.raises(DataError, match="schema_version 2"):
        report.read_json(path)


def test_a_failing_write_through_the_cli_is_one_error_line(
    audit_files, run_cli, tmp_path: Path, monkeypatch
) -> None:
    def refuse(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", refuse)
    args = [
        "-q",
        "evaluate",
        "--original",
        audit_files["original"],
        "--unlearned",
        audit_files["unlearned"],
        "--forget-data",
        audit_files["forget"],
        "--retain-data",
        audit_files["retain"],
        "--test-data",
        audit_files["test"],
        "--no-robustness",
        "--device",
        "cpu",
        "--json",
        tmp_path / "audit.json",
    ]
    code, out, err = run_cli(args)
    assert code == 2
    assert err.strip().startswith("unlearn-audit: error:") and len(err.strip().splitlines()) == 1
    assert "No space left" in err and "Traceback" not in err
    assert _leftovers(tmp_path, set()) == []


def test_a_result_saved_before_the_checks_rebuild_still_renders(run_cli, tmp_path: Path) -> None:
    """``tests/golden/evaluate_digits.json`` was written by the audit before it became registered
    check classes. The golden normalisation dropped its volatile parts (provenance, timings, model
    paths and hashes, data provenance); they are put back as any saved result has them, then
    ``report`` renders it."""
    from unlearn_audit.cli import VERDICT_EXIT
    from unlearn_audit.provenance import environment

    saved = json.loads(
        (Path(__file__).parent / "golden" / "evaluate_digits.json").read_text(encoding="utf-8")
    )
    for name, entry in saved["models"].items():
        entry["model"].update(path=f"{name}.pt", sha256="0" * 64, provenance={})
    saved["data"]["provenance"] = {"name": "digits", "forget_spec": "random:150", "forget_seed": 0}
    saved["timings"] = {"logits": 0.5, "mia_population": 1.5}
    saved["provenance"] = {
        **environment("cpu"),
        "seed": 0,
        "models": {name: {"path": f"{name}.pt", "sha256": "0" * 64} for name in saved["models"]},
        "command": "unlearn-audit evaluate",
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(saved), encoding="utf-8")
    html, xml = tmp_path / "old.html", tmp_path / "old.xml"
    code, _, err = run_cli(["report", path, "--html", html, "--junit", xml])
    assert code == VERDICT_EXIT[saved["verdict"]], err
    page = html.read_text(encoding="utf-8")
    assert all(check["name"] in page for check in saved["checks"])
    cases = ET.parse(xml).getroot().findall("testcase")
    assert [c.get("name") for c in cases] == [check["name"] for check in saved["checks"]]
