"""Tabular robustness and audits: PGD in standardised feature space against the closed-form worst case
of a linear model, the bounds it must keep, a gradient-hiding cheat, and ``evaluate`` on pima.

Reference: for a two-class linear model the logit margin ``m(x) = (w_y - w_o) . x + (b_y - b_o)``
is smallest at a corner of the feasible box (per feature the lower end when its coefficient is
positive, else the upper end; fixed features stay; whole-valued features at the grid point
nearest inside), so the exact robust correctness is one comparison per example.
"""

from __future__ import annotations

import json

import pytest
import torch
from cheats import OneHot
from torch import nn

from attacks.tabular import FeatureBox, feasible_box, snap_to_grid, tabular_pgd
from unlearn_audit.data import TensorSet
from unlearn_audit.data_domain import tabular_domain
from unlearn_audit.robustness import measure_robustness

D = 5


def _linear(seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(D, 2)
    return model.double().requires_grad_(False).float()


def _data(seed: int, n: int = 300):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    x[:, 3] = torch.round(x[:, 3] * 2)  # whole-valued feature: moves on the integer grid
    x[:, 4] = (torch.rand(n, generator=g) > 0.5).float()  # binary indicator: fixed
    return x


def _closed_form(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, box: FeatureBox, eps: float):
    lo, hi = feasible_box(x, box, eps)
    lo, hi = snap_to_grid(lo, x, lo, hi, box), snap_to_grid(hi, x, lo, hi, box)
    w = (model.weight[1] - model.weight[0]).double()
    sign = torch.where(y == 1, 1.0, -1.0).double()[:, None]  # margin of the true class
    worst = torch.where(sign * w > 0, lo, hi)
    margin = sign[:, 0] * (worst @ w + (model.bias[1] - model.bias[0]).double())
    clean = model(x).argmax(1) == y
    return clean & (margin > 0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pgd_matches_the_closed_form_worst_case_of_a_linear_model(seed):
    model, x = _linear(seed), _data(seed)
    y = model(x + 0.3 * torch.randn_like(x)).argmax(1)  # some examples near the boundary
    box = FeatureBox.from_domain(tabular_domain(x))
    assert bool(box.fixed[4]) and float(box.grid_step[3]) == 1.0 and float(box.grid_step[0]) == 0.0
    eps = 0.3
    got = tabular_pgd(
        model, x, y, box, eps=eps, alpha=0.05, steps=30, generator=torch.Generator().manual_seed(0)
    )
    want = _closed_form(model, x, y, box, eps)
    assert torch.equal(got.robust_correct, want)
    assert 0 < int(want.sum()) < int(got.clean_correct.sum())  # the attack has something to do


def test_feasible_box_keeps_training_range_fixed_columns_and_grid():
    x = _data(5)
    box = FeatureBox.from_domain(tabular_domain(x))
    lo, hi = feasible_box(x, box, 10.0)  # a huge eps: the training range must bind
    assert torch.all(lo >= torch.minimum(box.lower, x).double() - 1e-6)
    assert torch.all(hi <= torch.maximum(box.upper, x).double() + 1e-6)
    assert torch.equal(lo[:, 4], x[:, 4].double()) and torch.equal(hi[:, 4], x[:, 4].double())
    v = x.double() + 0.37
    snapped = snap_to_grid(v, x.double(), lo, hi, box)
    assert torch.equal(snapped[:, 3], torch.round(snapped[:, 3]))


def test_a_model_hiding_its_gradient_is_not_reported_robust():
    model, x = _linear(0), _data(0)
    y = model(x).argmax(1)
    data = TensorSet(x, y, tabular_domain(x))
    honest = measure_robustness(model, data, family="tabular", num_classes=2, eps=1.0)
    cheat = measure_robustness(OneHot(model, 2), data, family="tabular", num_classes=2, eps=1.0)
    assert honest["inconclusive_reason"] is None and honest["robust_accuracy"] < 0.9
    # undefended, PGD sees no gradient (only its random start moves) and the same decision
    # boundary looks far more robust ...
    assert cheat["pgd_robust_accuracy"] > honest["robust_accuracy"] + 0.2
    # ... the zero-gradient check makes the result inconclusive instead
    assert cheat["inconclusive_reason"] and "exactly zero" in cheat["inconclusive_reason"]


@pytest.fixture(scope="module")
def pima_models(tmp_path_factory):
    from unlearn_audit.cli import main

    tmp = tmp_path_factory.mktemp("pima")
    data = ["--data", "pima", "--forget", "random:60", "--seed", "0", "--device", "cpu"]
    train = ["train", "--arch", "mlp", "--epochs", "15", *data]
    for args in (
        [*train, "--out", tmp / "orig.pt"],
        [*train, "--without-forget", "--out", tmp / "retr.pt"],
        [*train, "--without-forget", "--epochs", "14", "--out", tmp / "honest.pt"],
    ):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            assert exc.code in (0, None)
    (tmp / "policy.toml").write_text("[statistics]\nn_bootstrap = 200\n", encoding="utf-8")
    return tmp, data


@pytest.mark.slow
@pytest.mark.parametrize(("unlearned", "not_verdict"), [("honest", "FAIL"), ("orig", "PASS")])
def test_evaluate_on_pima(run_cli, pima_models, unlearned, not_verdict):
    tmp, data = pima_models
    out = tmp / f"{unlearned}.json"
    code, _, err = run_cli(
        ["evaluate", "--original", tmp / "orig.pt", "--unlearned", tmp / f"{unlearned}.pt",
         "--retrained", tmp / "retr.pt", *data, "--policy", tmp / "policy.toml", "--reference-models", "0",
         "--robust-samples", "40", "--json", out]
    )  # fmt: skip
    assert code in (0, 1, 3), err
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["verdict"].upper() != not_verdict
    assert result["data"]["input_shape"] == [7] and result["data"]["provenance"]["family"] == "tabular"
    robust = next(c for c in result["checks"] if c["name"] == "robust_accuracy_drop")
    assert "standardised feature space" in robust["detail"]
