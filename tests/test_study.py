"""Tests for ``unlearn-audit robustness-study`` (``unlearn_audit.study``).

One quick study (digits, mlp, two seeds, PGD-10 at eps 0.1 on 200 test examples) runs through
the CLI once per module with AMUN, an unknown method, and a test double of a method that needs
state recorded during training (it refuses adversarial training, so its at_model rows must be
reported unavailable while its st_model rows are measured on its own trained model). Numbers are
checked against a fresh ``measure_robustness`` on the saved checkpoints and against numpy.
Runs in about 10 s on one CPU thread.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from unlearn_audit.cli import app
from unlearn_audit.cli_bench import register
from unlearn_audit.data import load_dataset
from unlearn_audit.errors import ConfigError
from unlearn_audit.methods import registry
from unlearn_audit.methods.finetune import Finetune
from unlearn_audit.models import load_model
from unlearn_audit.robustness import measure_robustness
from unlearn_audit.runs import robustness_subset
from unlearn_audit.study import RobustnessPoint, row_from_points
from unlearn_audit.training import train_model

STATEFUL = "test_recorded_finetune"
SEEDS = 2
RQS = {
    "RQ1": ("st_model", "before"),
    "RQ2": ("at_model", "before"),
    "RQ3": ("st_model", "after"),
    "RQ4": ("at_model", "after"),
}
STATES_SEEN: list[dict] = []


@dataclass(frozen=True)
class RecordedFinetune(Finetune):
    """Test double of a stateful method: trains one extra epoch and records a small state.

    It refuses adversarial training, the way a real method may refuse a recipe it cannot record.
    """

    needs_state: ClassVar[bool] = True

    def train_with_state(self, model, train_set, cfg, *, roles=None, device="cpu", progress=None):
        if cfg.adversarial:
            raise ConfigError(f"{self.name} cannot record adversarial training")
        train_model(model, train_set, replace(cfg, epochs=cfg.epochs + 1), device=device, progress=progress)
        return model, {"method_state": {"method": self.name, "n_train": len(train_set)}}

    def unlearn(self, model, data, *, device="cpu", seed=0, progress=None, state=None):
        if not state or state.get("method") != self.name:
            raise ConfigError(f"{self.name} needs its recorded state")
        STATES_SEEN.append(dict(state))
        return super().unlearn(model, data, device=device, seed=seed, progress=progress)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    register(app)  # idempotent; cli.py registers the commands too once it calls register(app)
    registry.register_method(STATEFUL)(RecordedFinetune)
    try:
        out = tmp_path_factory.mktemp("study")
        args = [
            "robustness-study",
            "--quick",
            "--methods",
            f"amun,nosuch,{STATEFUL}",
            "--seeds",
            str(SEEDS),
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    finally:
        registry._REGISTRY.pop(STATEFUL, None)  # keep the registry as other test modules expect it
    data = json.loads((out / "robustness-study.json").read_text(encoding="utf-8"))
    return out, data


def _rows(data: dict, method: str) -> dict[str, dict]:
    return {r["rq"]: r for r in data["rows"] if r["method"] == method}


def _points(data: dict, method: str, model: str, stage: str) -> list[dict]:
    pts = sorted(
        (p for p in data["points"] if (p["method"], p["model"], p["stage"]) == (method, model, stage)),
        key=lambda p: p["seed"],
    )
    return pts


# --------------------------------------------------------------------------- pure functions


def test_row_gap_is_acc_minus_racc_and_std_matches_numpy():
    accs, raccs = [91.5, 90.25, 93.0], [53.0, 50.5, 55.25]
    pts = [
        RobustnessPoint(s, "m", "st_model", "after", a, r, a - r, "PGD", 200, "x.pt", "0")
        for s, (a, r) in enumerate(zip(accs, raccs, strict=True))
    ]
    row = row_from_points("RQ3", "st_model", "after", "m", pts)
    assert row.accuracy.mean == pytest.approx(np.mean(accs)) and row.accuracy.std == pytest.approx(
        np.std(accs, ddof=1)
    )
    assert row.gap.mean == row.accuracy.mean - row.robust_accuracy.mean
    assert row.gap.std == pytest.approx(np.std(np.subtract(accs, raccs), ddof=1))


def test_robustness_subset_is_seeded_and_bounded():
    a, b = robustness_subset(450, 200, 0), robustness_subset(450, 200, 0)
    assert np.array_equal(a, b) and len(np.unique(a)) == 200 and np.all(np.diff(a) > 0)
    assert not np.array_equal(a, robustness_subset(450, 200, 1))
    assert np.array_equal(robustness_subset(50, 200, 0), np.arange(50))


# --------------------------------------------------------------------------- the study run


def test_table_has_rq1_to_rq4_for_each_available_method(study):
    _, data = study
    for method in ("amun",):
        rows = _rows(data, method)
        assert sorted(rows) == ["RQ1", "RQ2", "RQ3", "RQ4"]
        for rq, (model, stage) in RQS.items():
            assert (rows[rq]["model"], rows[rq]["stage"], rows[rq]["status"]) == (model, stage, "measured")
            assert rows[rq]["accuracy"]["n"] == SEEDS
    order = [(r["rq"], r["method"]) for r in data["rows"]]
    assert order == [(rq, m) for rq in RQS for m in ("amun", "nosuch", STATEFUL)]


def test_unknown_method_is_listed_unavailable_with_a_reason(study):
    _, data = study
    rows = _rows(data, "nosuch")
    assert sorted(rows) == ["RQ1", "RQ2", "RQ3", "RQ4"]
    for row in rows.values():
        assert row["status"] == "unavailable" and "not bundled" in row["note"]
        assert row["accuracy"] is None and row["robust_accuracy"] is None and row["gap"] is None
    assert not [p for p in data["points"] if p["method"] == "nosuch"]


def test_stateful_method_uses_its_own_original_and_reports_what_it_cannot_do(study):
    out, data = study
    rows = _rows(data, STATEFUL)
    for rq in ("RQ2", "RQ4"):  # at_model: the double refuses adversarial training
        assert rows[rq]["status"] == "unavailable"
        assert "cannot record adversarial training" in rows[rq]["note"]
    for rq in ("RQ1", "RQ3"):
        assert rows[rq]["status"] == "measured"
    assert "own st_model" in rows["RQ1"]["note"]
    assert len(STATES_SEEN) == SEEDS and all(s["method"] == STATEFUL for s in STATES_SEEN)
    for p in _points(data, STATEFUL, "st_model", "before"):
        assert p["checkpoint"].endswith(f"st_model-original-{STATEFUL}.pt")
        ckpt = load_model(p["checkpoint"])
        assert ckpt.metadata["provenance"]["for_method"] == STATEFUL
        shared = load_model(Path(p["checkpoint"]).with_name("st_model.pt"))
        assert ckpt.sha256 != shared.sha256 and p["sha256"] == ckpt.sha256
    amun_before = _points(data, "amun", "st_model", "before")
    assert all(p["checkpoint"].endswith("st_model.pt") for p in amun_before)


def test_gap_is_acc_minus_racc_exactly(study):
    _, data = study
    for p in data["points"]:
        assert p["gap"] == p["accuracy"] - p["robust_accuracy"]
    for r in data["rows"]:
        if r["status"] == "measured":
            assert r["gap"]["mean"] == r["accuracy"]["mean"] - r["robust_accuracy"]["mean"]


def test_rows_summarise_the_points_with_numpy(study):
    _, data = study
    for r in data["rows"]:
        if r["status"] != "measured":
            continue
        model, stage = RQS[r["rq"]]
        pts = _points(data, r["method"], model, stage)
        acc = np.array([p["accuracy"] for p in pts])
        racc = np.array([p["robust_accuracy"] for p in pts])
        assert r["accuracy"]["mean"] == pytest.approx(acc.mean(), abs=1e-9)
        assert r["robust_accuracy"]["std"] == pytest.approx(racc.std(ddof=1), abs=1e-9)
        assert r["gap"]["std"] == pytest.approx((acc - racc).std(ddof=1), abs=1e-9)


def test_numbers_are_the_measured_ones(study):
    """Recompute one after-deletion cell of the at_model with a fresh measure_robustness."""
    _, data = study
    test = load_dataset("digits").test
    for p in _points(data, "amun", "at_model", "after")[:1]:
        module = load_model(p["checkpoint"]).module
        subset = test.subset(robustness_subset(len(test), 200, p["seed"]))
        fresh = measure_robustness(
            module, subset, family="mnist", num_classes=10, eps=0.1, steps=10, seed=p["seed"]
        )
        assert p["n"] == 200
        assert p["accuracy"] == pytest.approx(100 * fresh["clean_accuracy"], abs=1e-9)
        assert p["robust_accuracy"] == pytest.approx(100 * fresh["robust_accuracy"], abs=1e-9)


def test_adversarial_training_makes_the_at_model_more_robust(study):
    _, data = study
    rows = _rows(data, "amun")
    assert rows["RQ2"]["robust_accuracy"]["mean"] > rows["RQ1"]["robust_accuracy"]["mean"] + 5
    at = load_model(_points(data, "amun", "at_model", "before")[0]["checkpoint"])
    st = load_model(_points(data, "amun", "st_model", "before")[0]["checkpoint"])
    assert at.metadata["provenance"]["train_config"]["adversarial"] == "pgd"
    assert at.metadata["provenance"]["train_config"]["eps"] == pytest.approx(0.1)
    assert st.metadata["provenance"]["train_config"]["adversarial"] is None


def test_all_four_outputs_exist_and_parse(study):
    out, data = study
    with open(out / "robustness-study.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 3
    for r, j in zip(rows, data["rows"], strict=True):
        assert (r["rq"], r["method"], r["status"]) == (j["rq"], j["method"], j["status"])
        if j["status"] == "measured":
            assert float(r["gap_mean"]) == pytest.approx(j["gap"]["mean"], abs=1e-9)
        else:
            assert r["acc_mean"] == "" and r["note"] == j["note"]
    md = (out / "robustness-study.md").read_text(encoding="utf-8")
    assert "| RQ | Model | Stage | Method | ACC (%) | R-ACC (%) | Gap (pp) | Note |" in md
    assert md.count("| RQ4 |") == 3
    page = (out / "robustness-study.html").read_text(encoding="utf-8")
    for method in ("amun", "nosuch", STATEFUL):
        assert f"<td>{html.escape(method)}</td>" in page
    assert '<td class="num na">unavailable</td>' in page
    assert "&#39;s own st_model" in page  # autoescaped note
