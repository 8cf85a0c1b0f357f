"""Repair a Bayesian logistic regression trained on corrupted labels (breast-cancer data).

The experiment of seed 002 (Tanno et al. 2022 cause identification + Nguyen et al. 2022 MCMC
unlearning), on scikit-learn's Wisconsin breast-cancer set:

1. split 60/20/20 into train / validation / test (stratified, seeded); scale features to [0, 1]
   with the training set's min and max;
2. flip the labels of a share of the training set (``--corrupt``, default 0.3);
3. sample posteriors by HMC for the clean and for the corrupted training set, and report test
   accuracy and F1 of both;
4. the failure set F = validation samples the corrupted model misclassifies (correct labels);
5. score every training example with r(z) (``identify_causes``); the causes C are those with
   r(z) > 0 (or the ``--top-k`` highest); report how many of the corrupted samples C contains
   (recall), its precision, and how well r(z) ranks flipped labels first (ROC AUC);
6. unlearn C by importance re-weighting (``mcmc_unlearn``; its effective sample size shows how
   well the candidate set covers the repaired posterior) and, for reference, retrain on D \\ C;
   report test accuracy and F1 after repair.

Run: ``python examples/bayesian_repair.py [--corrupt 0.3] [--seed 0] [--samples 800]``
(about half a minute on one CPU core).
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.model_selection import train_test_split
from torch import nn

from unlearn_audit.data import TensorSet
from unlearn_audit.methods import UnlearnData, get_method
from unlearn_audit.methods.mcmc import BayesLogReg, fit_bayes_logreg, identify_causes
from unlearn_audit.training import TrainConfig


def load(seed: int) -> tuple[TensorSet, TensorSet, TensorSet]:
    x, y = load_breast_cancer(return_X_y=True)
    x_tr, x_rest, y_tr, y_rest = train_test_split(x, y, test_size=0.4, stratify=y, random_state=seed)
    x_val, x_te, y_val, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=seed
    )
    lo, hi = x_tr.min(0), x_tr.max(0)

    def scale(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(np.clip((a - lo) / (hi - lo), 0, 1), dtype=torch.float32)

    def pack(a: np.ndarray, b: np.ndarray) -> TensorSet:
        return TensorSet(scale(a), torch.tensor(b, dtype=torch.int64))

    return pack(x_tr, y_tr), pack(x_val, y_val), pack(x_te, y_te)


@torch.no_grad()
def scores(model: nn.Module, data: TensorSet) -> tuple[float, float]:
    pred = model(data.x).argmax(1)
    return float((pred == data.y).float().mean()), float(f1_score(data.y.numpy(), pred.numpy()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corrupt", type=float, default=0.3, help="share of training labels flipped")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=800, help="posterior samples K (a multiple of 4)")
    parser.add_argument(
        "--temperature",
        type=float,
        default=4.0,
        help="candidate-set temperature of the corrupted model (widens it for large deletions)",
    )
    parser.add_argument(
        "--update",
        choices=("resample", "reweight"),
        default="resample",
        help="how p(theta | D, F) is obtained: HMC on D and F, or re-weighting by p(F | theta)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="take the top-k examples by r(z) as causes instead of all with r(z) > 0",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)

    train, val, test = load(args.seed)
    rng = np.random.default_rng(args.seed)
    n = len(train)
    corrupted = np.sort(rng.choice(n, int(round(args.corrupt * n)), replace=False))
    bad_y = train.y.clone()
    bad_y[corrupted] = 1 - bad_y[corrupted]
    noisy = TensorSet(train.x, bad_y)
    hmc = {"chains": 4, "warmup": 400, "prior_std": 3.0}

    clean_model, _ = fit_bayes_logreg(train.x, train.y, 2, num_samples=args.samples, seed=args.seed, **hmc)
    method = get_method("mcmc_unlearn", num_samples=args.samples, temperature=args.temperature, **hmc)
    trained = method.record_training(nn.Linear(30, 2), noisy, TrainConfig(seed=args.seed))
    corrupt_model, state = trained.model, trained.state
    assert isinstance(corrupt_model, BayesLogReg)

    with torch.no_grad():
        wrong = corrupt_model(val.x).argmax(1) != val.y
    failure = TensorSet(val.x[wrong], val.y[wrong])
    report = identify_causes(
        corrupt_model,
        noisy.x,
        noisy.y,
        failure.x,
        failure.y,
        update=args.update,
        prior_std=hmc["prior_std"],
        warmup=hmc["warmup"],
        seed=args.seed + 1,
        top_k=args.top_k,
    )
    causes = np.sort(report.causes.numpy())
    found = np.intersect1d(causes, corrupted)

    keep = np.setdiff1d(np.arange(n), causes)
    udata = UnlearnData(
        noisy.x[causes],
        noisy.y[causes],
        None,
        None,
        2,
        forget_indices=torch.as_tensor(causes, dtype=torch.int64),
    )
    repaired = method.unlearn(corrupt_model, udata, state=state, seed=args.seed)
    retrained, _ = fit_bayes_logreg(
        noisy.x[keep], noisy.y[keep], 2, num_samples=args.samples, seed=args.seed + 2, **hmc
    )

    rows = [
        ("clean training labels", clean_model),
        (f"{100 * args.corrupt:.0f}% labels flipped", corrupt_model),
        ("repaired: MCMC unlearning of C", repaired.model),
        ("repaired: retrained without C", retrained),
    ]
    print(
        f"breast cancer: {n} train / {len(val)} validation / {len(test)} test, {len(corrupted)} labels "
        "flipped"
    )
    print(f"failure set F: {len(failure)} misclassified validation samples")
    rule = "r > 0" if args.top_k is None else f"top {args.top_k} by r"
    print(
        f"causes C ({rule}): {len(causes)} samples; {len(found)} of {len(corrupted)} flipped labels found "
        f"({100 * len(found) / max(1, len(corrupted)):.1f}%), precision "
        f"{100 * len(found) / max(1, len(causes)):.1f}%"
    )
    is_flipped = np.isin(np.arange(n), corrupted)
    print(
        "r(z) ranks flipped above clean labels with ROC AUC "
        f"{roc_auc_score(is_flipped, report.scores.numpy()):.3f}"
    )
    print(repaired.notes[0])
    print(f"{'model':34s} {'test acc':>8s} {'F1':>6s}")
    for name, model in rows:
        acc, f1 = scores(model, test)
        print(f"{name:34s} {100 * acc:7.2f}% {f1:6.3f}")


if __name__ == "__main__":
    main()
