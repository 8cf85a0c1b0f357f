"""Tests for the adversarial modules of attacks/ (spec, pgd, threat, backends, robust, random_search,
masking), imported through attacks.adversarial as other modules do.

References used: an analytic worst case for linear two-class models (exact robust accuracy under
L-inf with the [0, 1] box, and under L2 where the box cannot bind), a slow per-example PGD loop in
float64, and IBM ART's ProjectedGradientDescent / FastGradientMethod on the same model.
Models are tiny and trained on sklearn's 8x8 digits inside the test (about a second).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from attacks.adversarial import (
    AttackSpec,
    adversarial_examples,
    fgsm_perturb,
    gradient_health,
    masking_checks,
    pgd_perturb,
    pgd_spec,
    random_search_perturb,
    robust_accuracy,
    threat_model,
)
from unlearn_audit.errors import ConfigError, DataError

BACKENDS = ("native", "torchattacks", "art")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The machine's cores are shared; one intra-op thread is faster for these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)
    return x, y


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 150) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def mlp(digits) -> nn.Module:
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _train(model, x[:1200], y[:1200])


@pytest.fixture(scope="module")
def test_split(digits) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits
    return x[1200:1500].clone(), y[1200:1500].clone()


class Rounded(nn.Module):
    """Gradient masking by rounding: torch.round has a zero derivative almost everywhere."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(self.base(x))


class HardArgmax(nn.Module):
    """Gradient masking by a hard one-hot output: no graph reaches the input at all."""

    def __init__(self, base: nn.Module, num_classes: int = 10) -> None:
        super().__init__()
        self.base, self.num_classes = base, num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 * F.one_hot(self.base(x).argmax(dim=1), self.num_classes).float()


# ----------------------------------------------------------------------------------------------
# Analytic reference: linear two-class model
# ----------------------------------------------------------------------------------------------


def _linear_problem(lo: float, hi: float, n: int = 200, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(2, 16, generator=g) * 0.5)
        model[1].bias.zero_()
        x = lo + (hi - lo) * torch.rand(n, 1, 4, 4, generator=g)
        logits = model(x)
        # Centre the bias so that classes are balanced, then label with the model, 15% flipped.
        model[1].bias.copy_(torch.tensor([0.0, -float((logits[:, 1] - logits[:, 0]).mean())]))
        y = model(x).argmax(dim=1)
    flip = torch.rand(n, generator=g) < 0.15
    y = torch.where(flip, 1 - y, y)
    return model, x, y


def _exact_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Robust mask: correct and the margin stays > 0 at the worst corner of ball ∩ box."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    xf = x.flatten(1).double()
    v = w[y] - w[1 - y]  # margin = v . x + c
    margin = (xf * v).sum(1) + b[y] - b[1 - y]
    room = torch.where(v > 0, xf, 1.0 - xf)  # how far x may move in the margin-decreasing direction
    worst = margin - (v.abs() * torch.clamp(room, max=eps)).sum(1)
    assert (worst.abs() > 1e-4).all() and (margin.abs() > 1e-4).all()  # no ties in the test data
    return (margin > 0) & (worst > 0)


def _exact_l2(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Robust mask for L2 when the box cannot bind (every coordinate has more than eps of room)."""
    w, b = model[1].weight.detach().double(), model[1].bias.detach().double()
    xf = x.flatten(1).double()
    assert float(xf.min()) > eps and float(xf.max()) < 1.0 - eps
    v = w[y] - w[1 - y]
    margin = (xf * v).sum(1) + b[y] - b[1 - y]
    worst = margin - eps * v.norm(dim=1)
    assert (worst.abs() > 1e-4).all() and (margin.abs() > 1e-4).all()
    return (margin > 0) & (worst > 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_model_matches_exact_robust_accuracy(backend: str) -> None:
    model, x, y = _linear_problem(0.0, 1.0)
    eps = 0.07
    exact = _exact_linf(model, x, y, eps).double().mean().item()
    clean = (model(x).argmax(1) == y).double().mean().item()
    assert 0.2 < exact < clean - 0.1  # the case is not trivial
    for spec in (
        AttackSpec.fgsm(eps),
        AttackSpec.pgd(eps, eps / 8, 20, random_start=False),
        AttackSpec.pgd(eps, eps / 8, 20, random_start=True),
    ):
        res = robust_accuracy(model, x, y, spec, backend=backend, num_classes=2)
        assert res.clean_accuracy == pytest.approx(clean)
        assert res.robust_accuracy == pytest.approx(exact), spec.label
        assert res.gap == pytest.approx(clean - exact)

    model, x, y = _linear_problem(0.3, 0.7, seed=2)
    eps2 = 0.1
    exact2 = _exact_l2(model, x, y, eps2).double().mean().item()
    assert 0.2 < exact2 < 0.8
    spec = AttackSpec.pgd(eps2, eps2 / 4, 10, norm="l2", random_start=False)
    res = robust_accuracy(model, x, y, spec, backend=backend, num_classes=2)
    assert res.robust_accuracy == pytest.approx(exact2)


class Periodic(nn.Module):
    """logit_1 = A sin(2 pi mean(x) / P), logit_0 = 0: an FGSM step of 0.75 P overshoots."""

    period, amplitude = 0.2, 5.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).mean(1)
        z = self.amplitude * torch.sin(2 * torch.pi * s / self.period)
        return torch.stack([torch.zeros_like(z), z], dim=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_robust_requires_clean_and_adversarial_correct(backend: str) -> None:
    # Phases (j + 0.5) pi / 4 from 3 pi, two per quarter period, far from every boundary. The
    # signed step of 0.75 P lands every example, right or wrong, in a class-1 half period:
    # accuracy on the adversarial inputs is 100 %, but robust accuracy must stay at clean (50 %).
    p = Periodic.period
    s = 0.3 + p * (torch.arange(8, dtype=torch.float32) + 0.5) / 8
    x = s.repeat(4).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    y = torch.ones(32, dtype=torch.long)
    theta = 2 * np.pi * s.double().repeat(4) / p
    clean_ok = torch.sin(theta) > 0
    adv_theta = theta - 0.75 * 2 * np.pi * torch.sign(torch.cos(theta))  # s - eps sign(cos)
    assert clean_ok.double().mean() == 0.5 and (torch.sin(adv_theta) > 0).all()
    spec = AttackSpec.fgsm(0.75 * p)
    res = robust_accuracy(Periodic(), x, y, spec, backend=backend, num_classes=2)
    assert res.clean_accuracy == 0.5
    assert res.adversarial_accuracy == 1.0
    assert res.robust_accuracy == 0.5 and res.gap == 0.0
    report = masking_checks(Periodic(), x, y, spec, backend=backend, num_classes=2)
    assert "attack_raises_accuracy" in report.codes
    assert any("accuracy on adversarial inputs" in f.message for f in report.flags)


def test_eps_zero_gives_clean_accuracy(mlp, test_split) -> None:
    x, y = test_split
    clean = (mlp(x).argmax(1) == y).float().mean().item()
    for backend in BACKENDS:
        res = robust_accuracy(mlp, x, y, AttackSpec.pgd(0.0, 0.01, 5), backend=backend, num_classes=10)
        assert res.robust_accuracy == pytest.approx(clean) and res.gap == 0.0


# ----------------------------------------------------------------------------------------------
# Own perturbation functions against a slow reference
# ----------------------------------------------------------------------------------------------


def _slow_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int, norm: str
) -> torch.Tensor:
    """One example at a time, written from the definition (no random start)."""
    out = []
    for xi, yi in zip(x, y, strict=True):
        xa = xi.clone()
        for _ in range(steps):
            xa = xa.clone().requires_grad_(True)
            loss = F.cross_entropy(model(xa[None]), yi[None])
            (g,) = torch.autograd.grad(loss, xa)
            if norm == "linf":
                xa = xa.detach() + alpha * g.sign()
                xa = torch.min(torch.max(xa, xi - eps), xi + eps)
            else:
                xa = xa.detach() + alpha * g / g.norm()
                d = xa - xi
                if d.norm() > eps:
                    d = d * (eps / d.norm())
                xa = xi + d
            xa = xa.clamp(0.0, 1.0)
        out.append(xa.detach())
    return torch.stack(out)


@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.02), ("l2", 0.8, 0.2)])
def test_pgd_perturb_matches_slow_reference(mlp, test_split, norm, eps, alpha) -> None:
    x, y = test_split
    model64 = _double_copy(mlp)
    x64 = x[:60].double()
    ours = pgd_perturb(model64, x64, y[:60], eps, alpha=alpha, steps=7, norm=norm, random_start=False)
    ref = _slow_pgd(model64, x64, y[:60], eps, alpha, 7, norm)
    assert torch.allclose(ours, ref, atol=1e-9)
    assert (ours - x64).abs().max() > 0.5 * min(eps, alpha)  # it did move


def _double_copy(model: nn.Module) -> nn.Module:
    clone = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    clone.load_state_dict(model.state_dict())
    return clone.double().eval()


def test_fgsm_perturb_closed_form(mlp, test_split) -> None:
    x, y = test_split
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(mlp(xr), y, reduction="sum"), xr)
    expected = (x + 0.1 * g.sign()).clamp(0, 1)
    assert torch.allclose(fgsm_perturb(mlp, x, y, 0.1), expected, atol=1e-7)
    # FGSM-RS: one signed step of 1.25 eps from a random start, projected back to the ball.
    gen = torch.Generator().manual_seed(3)
    adv = fgsm_perturb(mlp, x, y, 0.1, random_start=True, generator=gen)
    gen = torch.Generator().manual_seed(3)
    start = (x + (2 * torch.rand(x.shape, generator=gen) - 1) * 0.1).clamp(0, 1)
    sr = start.clone().requires_grad_(True)
    (gs,) = torch.autograd.grad(F.cross_entropy(mlp(sr), y, reduction="sum"), sr)
    manual = (x + (start + 0.125 * gs.sign() - x).clamp(-0.1, 0.1)).clamp(0, 1)
    assert torch.allclose(adv, manual, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Threat model: every backend stays inside the eps ball and [0, 1]
# ----------------------------------------------------------------------------------------------

_BALL_SPECS = [
    AttackSpec.fgsm(0.1),
    AttackSpec.fgsm(0.1, random_start=True),
    AttackSpec.pgd(0.1, 0.02, 10),
    AttackSpec.pgd(0.8, 0.2, 10, norm="l2"),
]


def _assert_in_threat_model(adv: torch.Tensor, x: torch.Tensor, spec: AttackSpec) -> None:
    delta = (adv - x).flatten(1)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if spec.norm == "linf":
        assert float(delta.abs().max()) <= spec.eps + 1e-6
    else:
        assert float(delta.norm(dim=1).max()) <= spec.eps + 1e-6
    # and the attack actually used its budget on some example (a no-op would pass the above)
    size = delta.abs().amax(1) if spec.norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) > 0.9 * spec.eps


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", _BALL_SPECS, ids=lambda s: s.label)
def test_adversarial_examples_stay_in_threat_model(mlp, test_split, backend, spec) -> None:
    x, y = test_split
    adv = adversarial_examples(mlp, x[:100], y[:100], spec, backend=backend, num_classes=10, batch_size=64)
    assert adv.shape == x[:100].shape
    _assert_in_threat_model(adv, x[:100], spec)


def test_own_perturbations_stay_in_threat_model(mlp, test_split) -> None:
    x, y = test_split
    for spec in _BALL_SPECS:
        if spec.name == "fgsm":
            adv = fgsm_perturb(mlp, x, y, spec.eps, random_start=spec.uses_random_start)
        else:
            adv = pgd_perturb(mlp, x, y, spec.eps, alpha=spec.alpha, steps=spec.steps, norm=spec.norm)
        _assert_in_threat_model(adv, x, spec)
    # steps=0 returns the random start itself, which must already lie in the ball
    gen = torch.Generator().manual_seed(0)
    for spec in _BALL_SPECS[2:]:
        start = pgd_perturb(mlp, x, y, spec.eps, alpha=spec.alpha, steps=0, norm=spec.norm, generator=gen)
        _assert_in_threat_model(start, x, spec)


def test_autoattack_torchattacks_settings() -> None:
    """AutoAttack 'standard' parts with the paper's settings: top-9 targets, `steps` iterations."""
    from attacks.backends import _TorchattacksAttack

    for num_classes, targets in ((100, 9), (10, 9), (5, 4), (3, None)):
        model = nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))
        built = _TorchattacksAttack(model, AttackSpec.autoattack(0.1, steps=7), num_classes, seed=0)
        parts = {type(a).__name__: a for a in built.attack.attacks}
        assert set(parts) == {"APGD", "FAB", "Square"} | ({"APGDT"} if targets else set())
        assert parts["APGD"].steps == parts["FAB"].steps == 7 and parts["Square"].n_queries == 5000
        assert parts["FAB"].multi_targeted and parts["FAB"].n_target_classes == (targets or num_classes - 1)
        if targets:
            assert parts["APGDT"].n_target_classes == targets
        else:
            assert any("APGD-T skipped" in note for note in built.notes)


def test_autoattack_torchattacks_in_threat_model_and_strongest(mlp, test_split) -> None:
    x, y = test_split[0][:40], test_split[1][:40]
    spec = AttackSpec.autoattack(0.3, steps=20)  # large eps: APGD-CE breaks all, later parts skipped
    res = robust_accuracy(mlp, x, y, spec, num_classes=10)
    adv = adversarial_examples(mlp, x, y, spec, num_classes=10)
    _assert_in_threat_model(adv, x, spec)
    pgd = robust_accuracy(mlp, x, y, AttackSpec.pgd(0.3, 0.01, 40), num_classes=10)
    assert res.robust_accuracy <= pgd.robust_accuracy
    assert res.robust_accuracy == pytest.approx(0.0)


@pytest.mark.skipif(importlib.util.find_spec("multiprocess") is not None, reason="ART AutoAttack usable")
def test_art_autoattack_without_multiprocess_is_a_config_error(mlp, test_split) -> None:
    x, y = test_split
    with pytest.raises(ConfigError, match="multiprocess"):
        robust_accuracy(mlp, x, y, AttackSpec.autoattack(0.1), backend="art", num_classes=10)


# ----------------------------------------------------------------------------------------------
# Cross-check against ART and attack ordering
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm,eps,alpha", [("linf", 0.1, 0.0125), ("l2", 0.5, 0.0625)])
def test_pgd_agrees_with_art(mlp, test_split, norm, eps, alpha, random_start) -> None:
    x, y = test_split
    spec = AttackSpec.pgd(eps, alpha, 20, norm=norm, random_start=random_start)
    art = robust_accuracy(mlp, x, y, spec, backend="art", num_classes=10)
    assert 0.15 < art.robust_accuracy < 0.75  # not trivially 0 or 100 %
    for backend in ("native", "torchattacks"):
        ours = robust_accuracy(mlp, x, y, spec, backend=backend, num_classes=10)
        assert ours.n == art.n == 300
        assert ours.clean_accuracy == art.clean_accuracy
        assert abs(ours.robust_accuracy - art.robust_accuracy) <= 0.02, (backend, ours, art)


def test_fgsm_agrees_with_art_and_pgd_is_stronger(mlp, test_split) -> None:
    x, y = test_split
    eps = 0.1
    art_fgsm = robust_accuracy(mlp, x, y, AttackSpec.fgsm(eps), backend="art", num_classes=10)
    for backend in BACKENDS:
        fgsm = robust_accuracy(mlp, x, y, AttackSpec.fgsm(eps), backend=backend, num_classes=10)
        pgd = robust_accuracy(mlp, x, y, AttackSpec.pgd(eps, eps / 8, 20), backend=backend, num_classes=10)
        assert abs(fgsm.robust_accuracy - art_fgsm.robust_accuracy) <= 0.01
        assert pgd.robust_accuracy <= fgsm.robust_accuracy + 0.01
        for res in (fgsm, pgd):
            assert res.robust_accuracy <= res.clean_accuracy
            assert res.gap == pytest.approx(res.clean_accuracy - res.robust_accuracy)
            assert res.backend == backend and res.warnings == ()


# ----------------------------------------------------------------------------------------------
# Side effects: mode, gradients, inputs, RNG
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bn_dropout_model(digits) -> nn.Module:
    x, y = digits
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)
    )
    return _train(model, x[:1200], y[:1200], epochs=100)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("start_training", [True, False])
def test_no_side_effects(bn_dropout_model, test_split, backend, start_training) -> None:
    model = bn_dropout_model
    x, y = test_split
    x_before, y_before = x.clone(), y.clone()
    params = list(model.parameters())
    # Some parameters carry a gradient, one is frozen, others have none: all must survive.
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i + 1)) if i % 2 == 0 else None
    grads_before = [None if p.grad is None else p.grad.clone() for p in params]
    params[-1].requires_grad_(False)
    buffers_before = [b.clone() for b in model.buffers()]
    model.train(start_training)
    model[4].train(not start_training)  # a mixed state must be restored exactly
    modes_before = [m.training for m in model.modules()]
    torch_rng, np_rng = torch.get_rng_state(), np.random.get_state()
    try:
        res = robust_accuracy(model, x, y, AttackSpec.pgd(0.1, 0.02, 5), backend=backend, num_classes=10)
        assert [m.training for m in model.modules()] == modes_before
        assert torch.equal(x, x_before) and torch.equal(y, y_before)
        for p, g in zip(params, grads_before, strict=True):
            assert (p.grad is None) if g is None else torch.equal(p.grad, g)
        assert [p.requires_grad for p in params] == [True] * (len(params) - 1) + [False]
        # BatchNorm running statistics unchanged: the attack ran in eval mode, not train mode
        for b, b0 in zip(model.buffers(), buffers_before, strict=True):
            assert torch.equal(b, b0)
        assert torch.equal(torch.get_rng_state(), torch_rng)
        assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:3], np_rng[1:3], strict=True))
        # clean accuracy is the eval-mode accuracy (dropout off, running statistics)
        model.eval()
        with torch.no_grad():
            expected = (model(x).argmax(1) == y).float().mean().item()
        assert res.clean_accuracy == pytest.approx(expected)
    finally:
        params[-1].requires_grad_(True)
        for p in params:
            p.grad = None
        model.eval()


@pytest.mark.parametrize("start_training", [True, False])
def test_perturb_functions_leave_model_mode_and_grads(bn_dropout_model, test_split, start_training) -> None:
    model = bn_dropout_model
    x, y = test_split
    x_before = x.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(start_training)
    try:
        for fn in (
            lambda: fgsm_perturb(model, x, y, 0.1, random_start=True),
            lambda: pgd_perturb(model, x, y, 0.1, alpha=0.02, steps=3),
            lambda: pgd_perturb(model, x, y, 0.5, alpha=0.1, steps=3, norm="l2"),
        ):
            with torch.no_grad():  # gradients are re-enabled locally for the input only
                adv = fn()
            assert model.training is start_training
            assert all(p.grad is None for p in model.parameters())
            assert torch.equal(x, x_before) and not adv.requires_grad
        assert gradient_health(model, x, y).zero_share == 0.0
        assert model.training is start_training
    finally:
        model.load_state_dict(state)  # train-mode forwards moved the BatchNorm statistics
        model.eval()


def test_seed_reproducible(mlp, test_split) -> None:
    x, y = test_split
    spec = AttackSpec.pgd(0.1, 0.02, 3)
    for backend in ("native", "torchattacks"):
        a = adversarial_examples(mlp, x, y, spec, backend=backend, num_classes=10, seed=5)
        b = adversarial_examples(mlp, x, y, spec, backend=backend, num_classes=10, seed=5)
        c = adversarial_examples(mlp, x, y, spec, backend=backend, num_classes=10, seed=6)
        assert torch.equal(a, b) and not torch.equal(a, c)


# ----------------------------------------------------------------------------------------------
# Gradient masking
# ----------------------------------------------------------------------------------------------


def test_gradient_masking_is_flagged(mlp, test_split) -> None:
    x, y = test_split
    spec = AttackSpec.pgd(0.1, 0.0125, 20)

    normal = masking_checks(mlp, x, y, spec, num_classes=10)
    assert normal.gradient.zero_share == 0.0 and not normal.gradient.absent
    assert normal.flags == () and not normal.masked
    assert normal.robust_accuracy <= normal.single_step_robust_accuracy + 0.01

    masked_model = Rounded(mlp)
    masked = masking_checks(masked_model, x, y, spec, num_classes=10)
    assert masked.gradient.zero_share == 1.0
    assert "zero_gradient" in masked.codes
    assert any("exactly zero" in f.message for f in masked.flags)
    # The masked model looks (falsely) far more robust than the one it wraps.
    assert masked.robust_accuracy > normal.robust_accuracy + 0.3

    hard = HardArgmax(mlp)
    health = gradient_health(hard, x, y)
    assert health.zero_share == 1.0 and health.absent
    assert torch.equal(pgd_perturb(hard, x, y, 0.1, alpha=0.01, steps=3, random_start=False), x)


class Detached(nn.Module):
    """Gradient masking by a detached output: the logits are right, no gradient reaches the input."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x).detach()


def test_detached_model_looks_robust_to_pgd_but_is_flagged(mlp, test_split) -> None:
    x, y = test_split
    spec = AttackSpec.pgd(0.1, 0.0125, 20)
    honest = masking_checks(mlp, x, y, spec, num_classes=10)
    report = masking_checks(Detached(mlp), x, y, spec, num_classes=10)
    assert report.clean_accuracy == honest.clean_accuracy  # same logits
    # PGD cannot move: its robust accuracy stays near clean accuracy, far above the honest figure.
    assert report.robust_accuracy > report.clean_accuracy - 0.05
    assert report.robust_accuracy > honest.robust_accuracy + 0.3
    assert report.masked and {"no_gradient", "search_beats_gradient"} <= set(report.codes)
    assert report.gradient.absent and report.gradient.zero_share == 1.0
    # The gradient-free search sees the same logits, hence the same robust accuracy on both.
    assert report.search_robust_accuracy == honest.search_robust_accuracy
    assert report.search_robust_accuracy < report.robust_accuracy - 0.3
    assert honest.search_only_share <= 0.01 and not honest.masked


def test_random_search_stays_in_threat_model_and_is_seeded(mlp, test_split) -> None:
    x, y = test_split
    for norm, eps in (("linf", 0.1), ("l2", 0.8)):
        spec = AttackSpec.pgd(eps, eps / 4, 10, norm=norm)
        adv = random_search_perturb(
            mlp, x, y, eps, norm=norm, queries=50, generator=torch.Generator().manual_seed(1)
        )
        _assert_in_threat_model(adv, x, spec)
        again = random_search_perturb(
            mlp, x, y, eps, norm=norm, queries=50, generator=torch.Generator().manual_seed(1)
        )
        assert torch.equal(adv, again)
        with torch.no_grad():
            assert (mlp(adv).argmax(1) != y).float().mean() > (mlp(x).argmax(1) != y).float().mean()
    assert torch.equal(random_search_perturb(mlp, x, y, 0.0), x)


class Noisy(nn.Module):
    """A randomised defence: Gaussian input noise at inference."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x + 0.5 * torch.randn_like(x))


def test_randomised_model_is_flagged(mlp, test_split) -> None:
    x, y = test_split
    torch.manual_seed(0)
    res = masking_checks(Noisy(mlp), x, y, AttackSpec.pgd(0.05, 0.01, 5), backend="native", num_classes=10)
    assert res.randomised
    assert any("two clean passes disagree" in f.message for f in res.flags)


def test_weaker_attack_beating_stronger_is_flagged(mlp, test_split) -> None:
    x, y = test_split
    # "PGD" with two tiny steps is weaker than FGSM: the ordering check must notice.
    spec = AttackSpec.pgd(0.1, 0.001, 2, random_start=False)
    res = masking_checks(mlp, x, y, spec, backend="native", num_classes=10)
    assert res.robust_accuracy > res.single_step_robust_accuracy + 0.01
    assert "single_step_beats_iterative" in res.codes
    assert any("pgd-2" in f.message for f in res.flags)


# ----------------------------------------------------------------------------------------------
# Configuration and errors
# ----------------------------------------------------------------------------------------------


def test_threat_model_table_and_overrides() -> None:
    assert threat_model("mnist") == threat_model("MNIST")
    assert (threat_model("mnist").eps, threat_model("mnist").alpha, threat_model("mnist").steps) == (
        0.3,
        0.01,
        40,
    )
    for family in ("cifar", "other"):
        t = threat_model(family)
        assert (t.eps, t.alpha, t.steps) == (8 / 255, 2 / 255, 10)
    # Overriding eps or steps without a step size re-derives it as 2.5 * eps / steps.
    assert threat_model("mnist", steps=10).alpha == pytest.approx(0.075)
    assert threat_model("cifar", eps=4 / 255).alpha == pytest.approx(2.5 * 4 / 255 / 10)
    assert threat_model("mnist", steps=20, alpha=0.02).alpha == 0.02
    pgd = pgd_spec("mnist")
    assert (pgd.name, pgd.eps, pgd.alpha, pgd.steps, pgd.uses_random_start) == ("pgd", 0.3, 0.01, 40, True)


def test_config_errors(mlp, test_split) -> None:
    x, y = test_split
    with pytest.raises(ConfigError, match=r"'pgdd'.*fgsm, pgd, pgd_l2, autoattack.*did you mean 'pgd'"):
        AttackSpec(name="pgdd", eps=0.1, alpha=0.01, steps=3)
    with pytest.raises(ConfigError, match=r"norm 'l1'.*linf, l2"):
        AttackSpec.pgd(0.1, 0.01, 3, norm="l1")
    with pytest.raises(ConfigError, match=r"eps.*-0.1"):
        AttackSpec.fgsm(-0.1)
    with pytest.raises(ConfigError, match=r"eps.*-0.1"):
        pgd_perturb(mlp, x, y, -0.1, alpha=0.01, steps=1)
    with pytest.raises(ConfigError, match=r"needs norm='l2'"):
        AttackSpec(name="pgd_l2", eps=0.5, alpha=0.1, steps=3, norm="linf")
    with pytest.raises(ConfigError, match=r"backend 'foolbox'.*native, torchattacks, art"):
        robust_accuracy(mlp, x, y, AttackSpec.fgsm(0.1), backend="foolbox", num_classes=10)
    with pytest.raises(ConfigError, match=r"not available with backend 'native'"):
        robust_accuracy(mlp, x, y, AttackSpec.autoattack(0.1), backend="native", num_classes=10)
    with pytest.raises(ConfigError, match=r"data family 'imagenet'.*mnist, cifar, other"):
        threat_model("imagenet")
    with pytest.raises(ConfigError, match=r"steps.*0"):
        threat_model("mnist", steps=0)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        robust_accuracy(mlp, x * 16, y, AttackSpec.fgsm(0.1), num_classes=10)
    with pytest.raises(DataError, match=r"num_classes=5"):
        robust_accuracy(mlp, x, y, AttackSpec.fgsm(0.1), num_classes=5)
