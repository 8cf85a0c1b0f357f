"""Tests for the bundled unlearning methods (unlearn_audit.methods).

Data: sklearn's 8x8 digits scaled to [0, 1], shaped (N, 1, 8, 8). Two tiny models: a CNN with
BatchNorm and dropout for the contract tests (mode handling, seeding), and a 64-16-10 MLP that
memorises a forget set with wrong labels for the behaviour tests (its forget accuracy is 100%,
a retrained model's is near 0%, so "forgetting" is measurable). Everything runs on one CPU thread.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchattacks
from sklearn.datasets import load_digits
from torch import nn

from unlearn_audit.cli_common import render_error
from unlearn_audit.errors import ConfigError, DataError, ModelError
from unlearn_audit.methods import UnlearnData, build_adversarial_set, get_method, list_methods
from unlearn_audit.methods._common import batches, n_batches, random_wrong_labels
from unlearn_audit.methods.boundary_shrink import fgsm_neighbour_labels
from unlearn_audit.methods.influence_distillation import per_sample_kl
from unlearn_audit.methods.l1_sparse import l1_alpha
from unlearn_audit.methods.salun import saliency_mask
from unlearn_audit.methods.scrub import distill_kl

# Methods that need state recorded during training (SISA, amnesiac, ...) have their own
# contract tests in test_methods_ii.py: they cannot run on a plain model.
STATEFUL = {m.name for m in list_methods() if getattr(get_method(m.name), "needs_state", False)}
METHODS = [m.name for m in list_methods() if m.name not in STATEFUL]

# Small-but-working overrides per method, so each contract test runs in well under a second.
FAST: dict[str, dict[str, object]] = {
    "retrain": {"epochs": 1},
    "finetune": {"epochs": 1},
    "gradient_ascent": {"epochs": 1},
    "random_label": {"epochs": 1},
    "boundary_shrink": {"epochs": 1},
    "l1_sparse": {"epochs": 2},
    "salun": {"epochs": 1},
    "scrub": {"epochs": 2, "max_steps": 1},
    "amun": {"epochs": 1, "attack_steps": 10, "max_doublings": 6},
    "amun_salun": {"epochs": 1, "attack_steps": 10, "max_doublings": 6},
    "influence_distillation": {"epochs": 1},
}
# Methods that can run from the forget set alone via retain="none".
OPTIONAL_RETAIN = {"random_label", "salun", "amun", "amun_salun"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest (and reproducibly) on one thread, especially on a shared machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    xt = torch.tensor(x / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    yt = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(xt), generator=torch.Generator().manual_seed(0))
    f, r, t = perm[:30], perm[30:330], perm[330:830]
    return {"fx": xt[f], "fy": yt[f], "rx": xt[r], "ry": yt[r], "tx": xt[t], "ty": yt[t]}


@pytest.fixture(scope="module")
def data(digits) -> UnlearnData:
    return UnlearnData(digits["fx"], digits["fy"], digits["rx"], digits["ry"], num_classes=10)


def make_cnn(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(4 * 8 * 8, 10),
    )


def make_mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 150, lr: float = 1e-2
) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def cnn(digits) -> nn.Module:
    return train(
        make_cnn(1), torch.cat([digits["fx"], digits["rx"]]), torch.cat([digits["fy"], digits["ry"]]), 60
    )


@pytest.fixture(scope="module")
def memorised(digits):
    """An MLP that memorised 30 forget digits carrying random WRONG labels (plus 300 retain digits)."""
    fy_wrong = random_wrong_labels(digits["fy"], 10, torch.Generator().manual_seed(1))
    model = train(
        make_mlp(1), torch.cat([digits["fx"], digits["rx"]]), torch.cat([fy_wrong, digits["ry"]]), 300
    )
    data = UnlearnData(digits["fx"], fy_wrong, digits["rx"], digits["ry"], num_classes=10)
    return model, data


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).float().mean())


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------- contract, every method


@pytest.mark.parametrize("name", METHODS)
def test_contract(name, cnn, data):
    """Same architecture out, eval mode, input untouched (weights and mode), progress to the end."""
    before = state(cnn)
    cnn.train()  # the caller's mode must survive
    calls: list[tuple[int, int]] = []
    rng_before = torch.get_rng_state()
    out = get_method(name, **FAST[name]).unlearn(
        cnn, data, seed=0, progress=lambda d, t: calls.append((d, t))
    )
    assert cnn.training
    cnn.eval()
    assert_same_state(state(cnn), before)
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's global RNG must be restored"

    assert out.model is not cnn and not out.model.training
    after = out.model.state_dict()
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert changed, f"{name} returned the original weights"

    assert out.method == name and out.seconds > 0
    assert out.params == dataclasses.asdict(get_method(name, **FAST[name]))
    assert calls and calls[-1][0] == calls[-1][1] > 0
    assert all(d1 <= d2 for (d1, _), (d2, _) in zip(calls, calls[1:], strict=False))
    assert all(d <= t for d, t in calls)
    expected = {
        "retrain": ("retain",),
        "finetune": ("retain",),
        "l1_sparse": ("retain",),
        "gradient_ascent": ("forget",),
        "boundary_shrink": ("forget",),
    }
    assert out.touched == expected.get(name, ("forget", "retain"))


@pytest.mark.parametrize("name", METHODS)
def test_same_seed_same_weights(name, cnn, data):
    method = get_method(name, **FAST[name])
    a = method.unlearn(cnn, data, seed=3).model
    b = method.unlearn(cnn, data, seed=3).model
    assert_same_state(state(a), state(b))
    torch.manual_seed(12345)  # the caller's global RNG state must not matter
    assert_same_state(state(method.unlearn(cnn, data, seed=3).model), state(a))
    c = method.unlearn(cnn, data, seed=4).model  # batch order, labels, dropout or init differ
    assert any(not torch.equal(v, state(c)[k]) for k, v in state(a).items()), "the seed has no effect"


@pytest.mark.parametrize("name", METHODS)
def test_retain_access(name, cnn, data):
    """Methods that need the retain set refuse cleanly without it; the others run forget-only."""
    forget_only = UnlearnData(data.forget_x, data.forget_y, None, None, num_classes=10)
    info = next(m for m in list_methods() if m.name == name)
    if "retain" in info.requires or name in OPTIONAL_RETAIN:
        with pytest.raises(ConfigError, match=f"method '{name}'.*needs the retain set") as err:
            get_method(name, **FAST[name]).unlearn(cnn, forget_only)
        if name == "finetune":
            assert str(err.value) == (
                "method 'finetune' needs the retain set; pass `data`/`forget` or `retain_data`"
            )
            assert render_error(err.value) == (
                "method 'finetune' needs the retain set; pass --data/--forget or --retain-data"
            )
        if name in OPTIONAL_RETAIN:
            assert "`params` retain=none" in str(err.value)
            assert "--set retain=none" in render_error(err.value)
    if name in OPTIONAL_RETAIN:
        out = get_method(name, **FAST[name], retain="none").unlearn(cnn, forget_only)
        assert out.touched == ("forget",)
    elif "retain" not in info.requires:
        assert get_method(name, **FAST[name]).unlearn(cnn, forget_only).touched == ("forget",)


# --------------------------------------------------------------------------- registry


def test_list_methods_describes_every_parameter():
    infos = {m.name: m for m in list_methods()}
    assert set(infos) >= {
        "retrain",
        "finetune",
        "gradient_ascent",
        "random_label",
        "boundary_shrink",
        "l1_sparse",
        "salun",
        "scrub",
        "amun",
        "amun_salun",
        "influence_distillation",
    }
    for info in infos.values():
        assert info.doc and info.requires in (frozenset({"forget"}), frozenset({"forget", "retain"}))
        defaults = dataclasses.asdict(get_method(info.name))
        assert [p.name for p in info.params] == list(defaults)
        for p in info.params:
            assert p.help and p.default == defaults[p.name]
    amun = {p.name: p for p in infos["amun"].params}
    assert (amun["eps_init"].default, amun["attack_steps"].default, amun["lr"].default) == (0.04, 50, 0.01)
    assert amun["retain"].type == "'use' | 'none'"


def test_get_method_converts_cli_strings():
    m = get_method("amun", epochs="3", lr="1e-3", retain="none", eps_init="0.5", max_doublings="1e1")
    assert (m.epochs, m.lr, m.retain, m.eps_init, m.max_doublings) == (3, 1e-3, "none", 0.5, 10)
    assert isinstance(m.epochs, int) and isinstance(m.lr, float)
    assert get_method("influence_distillation", kl_bound="none").kl_bound is None
    assert get_method("influence_distillation", kl_bound="NULL").kl_bound is None
    assert get_method("influence_distillation", kl_bound="1.5").kl_bound == 1.5
    assert get_method("finetune", lr=0.5).lr == 0.5  # plain Python values pass through


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"epochs": "three"}, r"parameter 'epochs' of method 'amun' must be int, got 'three'"),
        ({"epochs": "2.5"}, r"'epochs'.*must be int"),
        ({"lr": "fast"}, r"'lr'.*must be float, got 'fast'"),
        ({"lr": "nan"}, r"'lr'.*must be float"),
        ({"lr": "-0.1"}, r"'lr'.*must be > 0, got -0.1"),
        ({"retain": "maybe"}, r"'retain'.*must be 'use' \| 'none', got 'maybe'"),
        ({"momentum": "1.0"}, r"'momentum'.*in \[0, 1\)"),
        ({"epochs": 2.0}, r"'epochs'.*must be int, got 2.0"),
        (
            {"lrr": "0.1"},
            r"unknown parameter 'lrr' for method 'amun'; valid parameters: eps_init, .*"
            r"did you mean 'lr'\?",
        ),
    ],
)
def test_get_method_rejects_bad_values(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        get_method("amun", **kwargs)


def test_unknown_method_suggests_the_closest():
    with pytest.raises(
        ConfigError,
        match=r"unknown method 'amunn'; available: (?:\w+, )*amun, amun_salun, .*; "
        r"did you mean 'amun'\?",
    ):
        get_method("amunn")
    with pytest.raises(ConfigError, match=r"unknown method 'zzz'; available: [a-z0-9_, ]+$"):
        get_method("zzz")


def test_bool_conversion():
    from unlearn_audit.methods.registry import _convert

    for text, value in [("true", True), ("Yes", True), ("1", True), ("off", False), ("FALSE", False)]:
        assert _convert("m", "flag", text, bool) is value
    with pytest.raises(ConfigError, match="'flag'.*must be bool, got 'maybe'"):
        _convert("m", "flag", "maybe", bool)


def test_unlearn_data_validation(digits):
    fx, fy = digits["fx"], digits["fy"]
    with pytest.raises(DataError, match=r"pixels must lie in \[0, 1\].*max 255"):
        UnlearnData(fx * 255, fy, None, None, num_classes=10)
    with pytest.raises(DataError, match=r"forget_y labels must lie in \[0, 10\)"):
        UnlearnData(fx, fy + 10, None, None, num_classes=10)
    with pytest.raises(DataError, match="30 samples but forget_y has 29"):
        UnlearnData(fx, fy[:29], None, None, num_classes=10)
    with pytest.raises(DataError, match="both be tensors or both be None"):
        UnlearnData(fx, fy, digits["rx"], None, num_classes=10)
    with pytest.raises(DataError, match="int64"):
        UnlearnData(fx, fy.int(), None, None, num_classes=10)


def test_unlearn_rejects_a_model_that_does_not_fit_the_data(data):
    with pytest.raises(ModelError, match=r"logits of shape \(N, num_classes=10\), got \(2, 3\)"):
        get_method("finetune", epochs=1).unlearn(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), data)
    with pytest.raises(ModelError, match=r"cannot process forget samples of shape \(1, 8, 8\)"):
        get_method("finetune", epochs=1).unlearn(nn.Sequential(nn.Flatten(), nn.Linear(65, 10)), data)


# --------------------------------------------------------------------------- behaviour


def test_retrain_ignores_the_original_weights(digits, data):
    """Two differently initialised and trained originals give bit-identical retrained models."""
    a = train(make_mlp(1), digits["rx"], digits["ry"], 20)
    b = train(make_mlp(2), digits["fx"], digits["fy"], 20)
    assert not torch.equal(a[1].weight, b[1].weight)
    method = get_method("retrain", epochs=2)
    ra, rb = method.unlearn(a, data, seed=5).model, method.unlearn(b, data, seed=5).model
    assert_same_state(state(ra), state(rb))
    # and it equals a fresh model initialised under the seed and trained on the retain set alone
    ref = make_mlp(0)
    with torch.random.fork_rng():
        torch.manual_seed(5)
        for mod in ref.modules():
            if hasattr(mod, "reset_parameters"):
                mod.reset_parameters()
    opt = torch.optim.Adam(ref.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        for idx in batches(len(digits["rx"]), 128, gen):
            opt.zero_grad()
            F.cross_entropy(ref(digits["rx"][idx]), digits["ry"][idx]).backward()
            opt.step()
    for k, v in state(ref).items():
        torch.testing.assert_close(v, state(ra)[k])


def test_retrain_notes_modules_it_cannot_reset(data):
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = nn.Parameter(torch.ones(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.s

    model = nn.Sequential(nn.Flatten(), Scale(), nn.Linear(64, 10))
    out = get_method("retrain", epochs=1).unlearn(model, data)
    assert any("without reset_parameters" in n and "1" in n for n in out.notes)


@pytest.mark.parametrize(
    ("name", "kwargs", "at_most"),
    [
        ("gradient_ascent", {"lr": 0.05, "epochs": 5, "batch_size": 30}, 0.7),
        ("random_label", {"retain": "none", "lr": 0.05, "epochs": 5, "batch_size": 10}, 0.5),
        ("salun", {"retain": "none", "lr": 0.05, "epochs": 5, "batch_size": 10}, 0.6),
        ("boundary_shrink", {"lr": 0.05, "epochs": 5, "batch_size": 10}, 0.3),
    ],
)
def test_forget_set_methods_lower_forget_accuracy(name, kwargs, at_most, memorised):
    model, data = memorised
    assert accuracy(model, data.forget_x, data.forget_y) == 1.0
    out = get_method(name, **kwargs).unlearn(model, data, seed=0).model
    assert accuracy(out, data.forget_x, data.forget_y) <= at_most


def test_amun_forgets_through_its_adversarial_examples(memorised, digits):
    """AMUN lowers forget accuracy; the same fine-tuning without D_A (forget set twice) does not."""
    model, data = memorised
    orig_test = accuracy(model, digits["tx"], digits["ty"])
    # A tiny set gets few optimizer steps per epoch, so the test uses a constant lr and batch 32.
    kwargs = {"lr": 0.05, "epochs": 3, "batch_size": 32, "lr_gamma": 1.0}
    amun_acc, control_acc = [], []
    for seed in (0, 1, 2):
        out = get_method("amun", **kwargs).unlearn(model, data, seed=seed)
        amun_acc.append(accuracy(out.model, data.forget_x, data.forget_y))
        assert accuracy(out.model, digits["tx"], digits["ty"]) >= orig_test - 0.08  # no collapse
        assert (
            "30/30 forget samples flipped" in out.notes[0] and "0.0% of searches hit the cap" in out.notes[1]
        )

        control = copy.deepcopy(model)
        opt = torch.optim.SGD(control.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        gen = torch.Generator().manual_seed(seed)
        x = torch.cat([data.forget_x, data.forget_x, data.retain_x])
        y = torch.cat([data.forget_y, data.forget_y, data.retain_y])
        for _ in range(3):
            for idx in batches(len(x), 32, gen):
                opt.zero_grad()
                F.cross_entropy(control(x[idx]), y[idx]).backward()
                opt.step()
        control_acc.append(accuracy(control, data.forget_x, data.forget_y))
    assert np.mean(amun_acc) <= 0.75
    assert np.mean(amun_acc) <= np.mean(control_acc) - 0.2


def test_amun_adversarial_examples_are_valid(memorised):
    model, data = memorised
    before = state(model)
    adv = build_adversarial_set(model, data.forget_x, data.forget_y, batch_size=7)
    assert_same_state(state(model), before)
    assert bool(adv.success.all())
    with torch.no_grad():
        pred = model(adv.x_adv).argmax(1)
    assert torch.equal(pred, adv.y_adv)
    assert bool((adv.y_adv != data.forget_y).all())
    dist = (adv.x_adv - data.forget_x).flatten(1).norm(dim=1)
    torch.testing.assert_close(dist, adv.delta_norm)
    assert bool((dist <= adv.eps + 1e-5).all())
    assert float(adv.x_adv.min()) >= 0.0 and float(adv.x_adv.max()) <= 1.0
    # eps is always eps_init * 2^k
    k = torch.log2(adv.eps / 0.04)
    torch.testing.assert_close(k, k.round(), atol=1e-9, rtol=0)
    assert adv.mean_eps == pytest.approx(float(adv.eps.mean())) and adv.capped_share == 0.0


def test_amun_search_on_linear_model_is_within_factor_two_of_the_exact_distance():
    """For a 2-class linear model the minimal L2 distance to the boundary is |w.x + b| / ||w||."""
    g = torch.Generator().manual_seed(0)
    d = 16
    model = nn.Linear(d, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, d, generator=g, dtype=torch.float64))
        w = model.weight[1] - model.weight[0]
        u = w / w.norm()
        centre = torch.full((d,), 0.5, dtype=torch.float64)
        model.bias.copy_(torch.tensor([0.0, -float(w @ centre)], dtype=torch.float64))
    n = 40
    signed = torch.logspace(math.log10(0.01), math.log10(0.3), n, dtype=torch.float64)
    signed = signed * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0).double()
    noise = 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)
    noise = noise - (noise @ u)[:, None] * u  # orthogonal to w: keeps the distance exact
    x = centre + signed[:, None] * u + noise
    assert float(x.min()) > 0 and float(x.max()) < 1
    with torch.no_grad():
        y = model(x).argmax(1)
        wb = model.weight[1] - model.weight[0]
        bb = model.bias[1] - model.bias[0]
        exact = (x @ wb + bb).abs() / wb.norm()
    torch.testing.assert_close(exact, signed.abs())

    adv = build_adversarial_set(model, x, y, eps_init=0.004)
    assert bool(adv.success.all())
    assert bool((adv.eps >= exact * (1 - 1e-9)).all()), "flipped at a radius below the exact distance"
    assert bool((adv.eps < 2 * exact).all()), "the doubling search overshot by a factor >= 2"
    assert bool((adv.delta_norm >= exact * (1 - 1e-9)).all()) and bool(
        (adv.delta_norm <= adv.eps + 1e-12).all()
    )


def test_amun_pgd_round_matches_torchattacks_pgdl2(memorised):
    """One round without a flip is plain L2 PGD (no random start, alpha = eps / 10)."""
    model, data = memorised
    adv = build_adversarial_set(model, data.forget_x, data.forget_y, eps_init=0.02, steps=20, max_doublings=0)
    kept = ~adv.success
    assert int(kept.sum()) >= 5
    attack = torchattacks.PGDL2(model, eps=0.02, alpha=0.002, steps=20, random_start=False)
    ref = attack(data.forget_x[kept], data.forget_y[kept])
    torch.testing.assert_close(adv.x_adv[kept], ref, atol=1e-5, rtol=0)


def test_amun_keeps_already_misclassified_samples_unperturbed(memorised):
    model, data = memorised
    x = data.forget_x[:4]
    with torch.no_grad():
        wrong = (model(x).argmax(1) + 1) % 10
    adv = build_adversarial_set(model, x, wrong)
    assert torch.equal(adv.x_adv, x) and bool(adv.success.all())
    assert torch.equal(adv.delta_norm, torch.zeros(4)) and torch.equal(adv.y_adv, (wrong - 1) % 10)


def test_amun_caps_the_search():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))  # constant prediction: never flips
    x = torch.full((3, 1, 2, 2), 0.5)
    adv = build_adversarial_set(model, x, torch.zeros(3, dtype=torch.int64), steps=3, max_doublings=2)
    assert not bool(adv.success.any()) and adv.capped_share == 1.0
    assert adv.max_eps == pytest.approx(0.16) and torch.equal(
        adv.eps, torch.full((3,), 0.16, dtype=torch.float64)
    )
    assert math.isnan(adv.mean_eps)


def test_influence_penalty_pushes_away_from_the_teacher(memorised):
    model, data = memorised
    kw = {"student_init": "copy", "epochs": 3, "batch_size": 32}
    plain = get_method("influence_distillation", forget_weight=0.0, **kw).unlearn(model, data).model
    pushed = get_method("influence_distillation", forget_weight=3.0, **kw).unlearn(model, data).model
    assert accuracy(plain, data.forget_x, data.forget_y) == 1.0
    assert accuracy(pushed, data.forget_x, data.forget_y) <= 0.8


def test_scrub_max_steps_push_the_student_away_on_the_forget_set(memorised):
    model, data = memorised
    kw = {"lr": 0.01, "epochs": 2, "forget_batch_size": 8}
    without = get_method("scrub", max_steps=0, **kw).unlearn(model, data).model
    with_max = get_method("scrub", max_steps=2, **kw).unlearn(model, data).model
    with torch.no_grad():
        kl_f0 = float(per_sample_kl(model(data.forget_x), without(data.forget_x)).mean())
        kl_f2 = float(per_sample_kl(model(data.forget_x), with_max(data.forget_x)).mean())
        kl_r2 = float(per_sample_kl(model(data.retain_x), with_max(data.retain_x)).mean())
    assert kl_f2 > 5 * kl_f0
    assert kl_f2 > 3 * kl_r2  # the push is specific to the forget set


def test_l1_sparse_is_finetune_plus_a_shrinking_penalty(memorised):
    model, data = memorised
    l1 = lambda m: float(sum(p.detach().abs().sum() for p in m.parameters()))  # noqa: E731
    ft = get_method("finetune", epochs=2).unlearn(model, data, seed=1).model
    plain = get_method("l1_sparse", epochs=2, alpha=0.0).unlearn(model, data, seed=1).model
    assert_same_state(state(ft), state(plain))
    sparse = get_method("l1_sparse", epochs=2, alpha=1e-2).unlearn(model, data, seed=1).model
    assert l1(sparse) < l1(ft) - 1.0


def test_saliency_mask_matches_a_slow_reference(memorised):
    model, data = memorised
    mask = saliency_mask(
        model, data.forget_x, data.forget_y, ratio=0.5, device=torch.device("cpu"), batch_size=8
    )
    # reference: summed per-batch gradients of the mean CE, ranked with numpy over all weights
    grads = {n: np.zeros(p.shape) for n, p in model.named_parameters()}
    for start in range(0, 30, 8):  # batches of 8, 8, 8, 6
        model.zero_grad()
        F.cross_entropy(model(data.forget_x[start : start + 8]), data.forget_y[start : start + 8]).backward()
        for n, p in model.named_parameters():
            grads[n] += p.grad.double().numpy()
    model.zero_grad(set_to_none=True)
    flat = np.concatenate([np.abs(g).ravel() for g in grads.values()])
    threshold = np.sort(flat)[::-1][int(len(flat) * 0.5) - 1]
    for n, g in grads.items():
        clear = np.abs(np.abs(g) - threshold) > 1e-6  # ignore float ties at the threshold
        np.testing.assert_array_equal(mask[n].numpy()[clear], (np.abs(g) >= threshold)[clear])
    assert sum(int(m.sum()) for m in mask.values()) == int(len(flat) * 0.5)


@pytest.mark.parametrize("name", ["salun", "amun_salun"])
def test_masked_methods_only_change_salient_weights(name, memorised):
    model, data = memorised
    ratio_key = "ratio" if name == "salun" else "mask_ratio"
    kw = {
        "epochs": 2,
        "batch_size": 32,
        ratio_key: 0.3,
        **({"attack_steps": 10} if name == "amun_salun" else {}),
    }
    mask = saliency_mask(
        model, data.forget_x, data.forget_y, ratio=0.3, device=torch.device("cpu"), batch_size=32
    )
    out = get_method(name, **kw).unlearn(model, data).model
    for n, p in model.named_parameters():
        new = dict(out.named_parameters())[n]
        assert torch.equal(new[~mask[n]], p[~mask[n]]), f"{n}: a masked-out weight moved"
    changed = sum(int((dict(out.named_parameters())[n] != p).sum()) for n, p in model.named_parameters())
    assert changed > 0


def test_fgsm_neighbour_labels_match_torchattacks(memorised):
    model, data = memorised
    ours = fgsm_neighbour_labels(model, data.forget_x, data.forget_y, bound=0.1, device=torch.device("cpu"))
    x_adv = torchattacks.FGSM(model, eps=0.1)(data.forget_x, data.forget_y)
    with torch.no_grad():
        assert torch.equal(ours, model(x_adv).argmax(1))


def test_l1_alpha_decays_linearly():
    assert [l1_alpha(5e-4, e, 10, 0) for e in (0, 5, 9)] == pytest.approx([5e-4, 2.5e-4, 5e-5])
    assert [l1_alpha(1.0, e, 10, 2) for e in (0, 4, 7, 8, 9)] == pytest.approx([1.0, 0.5, 0.125, 0.0, 0.0])


def test_distill_kl_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    temp = 4.0
    ps = np.exp(s.numpy() / temp) / np.exp(s.numpy() / temp).sum(1, keepdims=True)
    pt = np.exp(t.numpy() / temp) / np.exp(t.numpy() / temp).sum(1, keepdims=True)
    ref = (pt * np.log(pt / ps)).sum(1).mean() * temp**2
    assert float(distill_kl(s, t, temp)) == pytest.approx(ref, rel=1e-5)


def test_random_wrong_labels_and_batching():
    y = torch.arange(10).repeat(500)
    z = random_wrong_labels(y, 10, torch.Generator().manual_seed(0))
    assert bool((z != y).all())
    counts = torch.bincount((z - y) % 10, minlength=10)
    assert counts[0] == 0 and int(counts[1:].min()) > 450  # 5000 draws over 9 offsets: ~556 each
    for n, bs in [(1, 4), (9, 4), (8, 4), (5, 4), (330, 128)]:
        chunks = batches(n, bs, torch.Generator().manual_seed(0))
        assert len(chunks) == n_batches(n, bs)
        assert sorted(torch.cat(chunks).tolist()) == list(range(n))
        assert n == 1 or min(len(c) for c in chunks) > 1
