"""Tests for ``unlearn-audit benchmark`` (``unlearn_audit.bench``, ``unlearn_audit.cli_bench``).

One quick benchmark (digits, mlp, two seeds, finetune, with robustness) is run
through the CLI once per module; the tests check its table against independent recomputations:
the Avg. Gap by hand from the saved audits, mean and std with numpy, forget accuracy with a
plain torch forward pass on a forget set rebuilt from the data module, and the four output files
with the csv, json and html parsers. Runs in about 15 s on one CPU thread.
"""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unlearn_audit.bench import GOLD, Scores, avg_gap
from unlearn_audit.cli import app
from unlearn_audit.cli_bench import register
from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.errors import ConfigError
from unlearn_audit.models import load_model
from unlearn_audit.run_config import parse_method_sets
from unlearn_audit.runs import Stat, summarize
from unlearn_audit.tables import Table, render_table_html

METHODS = ("finetune",)
SEEDS = 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def _commands():
    register(app)  # idempotent; cli.py registers the commands too once it calls register(app)


def _bench_args(out: Path) -> list[str]:
    return [
        "benchmark",
        "--quick",
        "--methods",
        ",".join(METHODS),
        "--seeds",
        str(SEEDS),
        "--robustness",
        "--set",
        "finetune.lr=0.02",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(app, _bench_args(out))
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    data = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    return out, data, result


def _runs(data: dict, method: str) -> list[dict]:
    runs = sorted((r for r in data["runs"] if r["method"] == method), key=lambda r: r["seed"])
    assert [r["seed"] for r in runs] == list(range(SEEDS))
    return runs


def _row(data: dict, method: str) -> dict:
    return next(r for r in data["rows"] if r["method"] == method)


# --------------------------------------------------------------------------- pure functions


def test_avg_gap_hand_case():
    a = Scores(forget_acc=90.0, retain_acc=99.0, test_acc=88.0, mia_auc=55.0)
    r = Scores(forget_acc=94.0, retain_acc=100.0, test_acc=90.0, mia_auc=50.0)
    assert avg_gap(a, r) == pytest.approx((4 + 1 + 2 + 5) / 4)
    assert avg_gap(r, r) == 0.0
    assert avg_gap(Scores(90.0, 99.0, 88.0, None), r) is None


def test_summarize_matches_numpy_and_skips_missing():
    values = [94.49, 94.2, None, 94.9, float("nan")]
    kept = np.array([94.49, 94.2, 94.9])
    st = summarize(values)
    assert st.n == 3
    assert st.mean == pytest.approx(np.mean(kept), abs=1e-12)
    assert st.std == pytest.approx(np.std(kept, ddof=1), abs=1e-12)
    assert summarize([3.0]) == Stat(3.0, None, 1)
    assert summarize([None]) == Stat(None, None, 0)
    assert Stat(94.494, 0.2, 3).text() == "94.49 ± 0.20"
    assert Stat(1.0, None, 1).text() == "1.00" and Stat(None, None, 0).text() == "n/a"


def test_parse_method_sets():
    assert parse_method_sets(
        {"amun.epochs": "5", "amun.lr": "0.1", "salun.ratio": "0.5"}, ["amun", "salun"]
    ) == {
        "amun": {"epochs": "5", "lr": "0.1"},
        "salun": {"ratio": "0.5"},
    }
    with pytest.raises(ConfigError, match="method.key=value"):
        parse_method_sets({"epochs": "5"}, ["amun"])
    with pytest.raises(ConfigError, match="'scrub' is not among `methods`"):
        parse_method_sets({"scrub.epochs": "5"}, ["amun"])


def test_html_page_escapes_cells():
    table = Table(
        "T <b>",
        ("Method", "Value"),
        (("<script>alert(1)</script>", "1.00 ± 0.10"),),
        (False, True),
        ("a & b",),
    )
    page = render_table_html(table, {"device": "cpu"})
    assert "<script>alert(1)</script>" not in page
    assert html.escape("<script>alert(1)</script>", quote=True) in page
    assert "a &amp; b" in page and "T &lt;b&gt;" in page
    assert '<td class="num">1.00 ± 0.10</td>' in page


# --------------------------------------------------------------------------- the benchmark run


def test_retrain_row_is_the_gold_standard(bench):
    _, data, _ = bench
    assert [r["method"] for r in data["rows"]] == [GOLD, *METHODS]
    gold = _row(data, GOLD)
    assert gold["avg_gap"] == {"mean": 0.0, "std": 0.0, "n": SEEDS}
    for run in _runs(data, GOLD):
        assert run["avg_gap"] == 0.0
        assert run["scores"] == run["reference"]
        assert run["checkpoint"].endswith("retrained.pt")


def test_gap_is_the_mean_absolute_difference_of_the_audited_numbers(bench):
    _, data, _ = bench
    for method in METHODS:
        gaps = []
        for run in _runs(data, method):
            audit = json.loads(Path(run["audit"]).read_text(encoding="utf-8"))
            unl, ret = audit["models"]["unlearned"], audit["models"]["retrained"]
            diffs = [
                abs(100 * unl["accuracy"][role] - 100 * ret["accuracy"][role])
                for role in ("forget", "retain", "test")
            ]
            diffs.append(
                abs(100 * unl["mia"]["population_gated"]["auc"] - 100 * ret["mia"]["population_gated"]["auc"])
            )
            by_hand = sum(diffs) / 4
            assert run["avg_gap"] == pytest.approx(by_hand, abs=1e-9)
            assert run["mia_attack"] == unl["mia"]["population_gated"]["attack"]
            # the gated attack is the one chosen on the original model, the same for every model
            assert audit["models"]["original"]["mia"]["population_gated"]["attack"] == run["mia_attack"]
            gaps.append(by_hand)
        row = _row(data, method)
        assert row["avg_gap"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-9)
        assert row["avg_gap"]["std"] == pytest.approx(np.std(gaps, ddof=1), abs=1e-9)
        assert row["avg_gap"]["mean"] > 0  # an approximate method does not reproduce retraining exactly


def test_mean_and_std_match_numpy_over_seeds(bench):
    _, data, _ = bench
    for method in (GOLD, *METHODS):
        runs, row = _runs(data, method), _row(data, method)
        for key in ("forget_acc", "retain_acc", "test_acc", "mia_auc"):
            values = np.array([r["scores"][key] for r in runs])
            assert row[key]["mean"] == pytest.approx(values.mean(), abs=1e-9), (method, key)
            assert row[key]["std"] == pytest.approx(values.std(ddof=1), abs=1e-9), (method, key)
        secs = np.array([r["seconds"] for r in runs])
        assert row["seconds"]["mean"] == pytest.approx(secs.mean(), abs=1e-9)
        racc = np.array([r["robust_acc"] for r in runs])
        assert row["robust_acc"]["mean"] == pytest.approx(racc.mean(), abs=1e-9)
        assert sum(row["verdicts"].values()) == SEEDS


def test_scores_are_measured_on_the_right_models_and_sets(bench):
    """Forget accuracy recomputed with a plain forward pass on the forget set of each seed."""
    _, data, _ = bench
    dataset = load_dataset("digits")
    for method in (GOLD, "finetune"):
        for run in _runs(data, method):
            roles = make_roles(dataset, "random:0.1", seed=run["seed"])
            model = load_model(run["checkpoint"]).module
            with torch.no_grad():
                acc_f = (model(roles.forget.x).argmax(1) == roles.forget.y).double().mean().item()
                acc_t = (model(roles.test.x).argmax(1) == roles.test.y).double().mean().item()
            assert run["scores"]["forget_acc"] == pytest.approx(100 * acc_f, abs=1e-3)
            assert run["scores"]["test_acc"] == pytest.approx(100 * acc_t, abs=1e-3)
    retrained = load_model(_runs(data, GOLD)[0]["checkpoint"])
    assert retrained.metadata["provenance"]["trained_on"] == "retain"


def test_set_overrides_and_quick_defaults_reach_the_method(bench):
    _, data, _ = bench
    for run in _runs(data, "finetune"):
        params = load_model(run["checkpoint"]).metadata["provenance"]["unlearning"]["params"]
        assert params["lr"] == 0.02 and params["epochs"] == 1


def test_robustness_column_is_the_audits_measurement(bench):
    _, data, _ = bench
    for run in _runs(data, "finetune"):
        audit = json.loads(Path(run["audit"]).read_text(encoding="utf-8"))
        assert run["robust_acc"] == pytest.approx(
            100 * audit["models"]["unlearned"]["robustness"]["robust_accuracy"]
        )


def test_all_four_outputs_exist_and_parse(bench):
    out, data, result = bench
    with open(out / "benchmark.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == [GOLD, *METHODS]
    for r in rows:
        expected = _row(data, r["method"])
        for key in ("forget_acc", "avg_gap", "mia_auc"):
            assert math.isclose(float(r[f"{key}_mean"]), expected[key]["mean"], abs_tol=1e-9)
        assert int(r["n_seeds"]) == SEEDS
    assert float(rows[0]["avg_gap_mean"]) == 0.0

    md = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "| Method | Forget acc | Retain acc | Test acc | MIA AUC | Avg. Gap | R-ACC |" in md
    for method in (GOLD, *METHODS):
        assert f"| {method} |" in md

    page = (out / "benchmark.html").read_text(encoding="utf-8")
    assert (
        page.startswith("<!DOCTYPE html>") and "<style>" in page and "http" not in page.split("<footer>")[0]
    )
    for method in (GOLD, *METHODS):
        assert f"<td>{html.escape(method)}</td>" in page
    assert "original&#39;s recipe" in page and "original's recipe" not in page  # autoescaped note
    for line in ("wrote", "benchmark.html"):
        assert line in result.stdout


def test_rerun_reuses_every_artifact(bench):
    out, data, _ = bench
    checkpoints = sorted((out / "seed-0").glob("*.pt"))
    stamps = {p: p.stat().st_mtime_ns for p in checkpoints}
    again = CliRunner().invoke(app, _bench_args(out))
    assert again.exit_code == 0, again.stderr
    steps = [line for line in again.stderr.splitlines() if line.startswith("[")]
    assert len(steps) == SEEDS * (2 + 2 * len(METHODS) + 1)  # train x2, unlearn+audit per method, gold audit
    assert all(line.endswith("reused") for line in steps), steps
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == stamps
    rerun = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    assert rerun["rows"] == data["rows"]


def test_unknown_method_is_one_line_exit_2(run_cli, tmp_path):
    out = tmp_path / "b"
    code, _, err = run_cli(["benchmark", "--quick", "--methods", "finetune,amunn", "--out", out])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unlearn-audit: error: ")
    assert "unknown method 'amunn'" in lines[0] and "available:" in lines[0] and "'amun'" in lines[0]
    assert not out.exists()  # rejected before any training


@pytest.mark.parametrize(
    ("sets", "fragment"),
    [
        (["--set", "amun.epochs=1"], "'amun' is not among --methods"),
        (["--set", "epochs=1"], "method.key=value"),
        (["--set", "finetune.nosuch=1"], "unknown parameter 'nosuch'"),
    ],
)
def test_bad_set_is_one_line_exit_2(run_cli, tmp_path, sets, fragment):
    code, _, err = run_cli(["benchmark", "--quick", "--methods", "finetune", *sets, "--out", tmp_path / "b"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_out_path_that_is_a_file_is_one_line_exit_2(run_cli, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("x")
    code, _, err = run_cli(["benchmark", "--quick", "--methods", "finetune", "--out", target])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file" in err, err
    assert target.read_text() == "x"


def test_recipe_options_reach_the_trained_models(tmp_path):
    """--optimizer/--lr set the models' training recipe (amnesiac_per_sample needs SGD)."""
    out = tmp_path / "sgd"
    args = [
        "benchmark",
        "--quick",
        "--methods",
        "amnesiac_per_sample",
        "--seeds",
        "1",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    for name in ("original.pt", "retrained.pt"):
        recipe = load_model(out / "seed-0" / name).metadata["provenance"]["train_config"]
        assert recipe["optimizer"] == "sgd" and recipe["lr"] == 0.05
    data = json.loads((out / "benchmark.json").read_text(encoding="utf-8"))
    assert [(r["method"], r["seed"]) for r in data["runs"]] == [("retrain", 0), ("amnesiac_per_sample", 0)]
