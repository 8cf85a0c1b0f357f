"""Speed: `unlearn-audit evaluate` against the same measurements done with ART.

Setting (issue 4): three mnist-5k CNNs (original, unlearned, retrained); forget 100, retain 900,
test 2,000. Both sides measure, for each model: accuracy on the three roles, population
membership inference on the forget set, and PGD-10 (L-inf, eps 0.3) robust accuracy on 1,000
test images; evaluate also runs the paired test and the distances.

ART side: PyTorchClassifier + MembershipInferenceBlackBox (attack model "gb", the strongest
ART black-box attack on this data in tests/test_population.py) + ProjectedGradientDescent.

    python benchmarks/bench_evaluate_speed.py            # prints both times and the ratio
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from unlearn_audit.audit import evaluate
from unlearn_audit.data import Roles, TensorSet, load_dataset
from unlearn_audit.models import LoadedModel, build_model
from unlearn_audit.robustness import measure_robustness
from unlearn_audit.training import TrainConfig, train_model


def make_roles(seed: int) -> Roles:
    ds = load_dataset("mnist-5k")
    full = TensorSet(torch.cat([ds.train.x, ds.test.x]), torch.cat([ds.train.y, ds.test.y]))
    perm = np.random.default_rng(seed).permutation(len(full))
    forget, retain, test = perm[:100], perm[100:1000], perm[1000:3000]
    return Roles(full.subset(forget), full.subset(retain), full.subset(test), 10, name="mnist-5k")


def train(data: TensorSet, seed: int) -> torch.nn.Module:
    model = build_model("cnn", num_classes=10, input_shape=(1, 28, 28), seed=seed)
    train_model(model, data, TrainConfig(epochs=15, batch_size=64, seed=seed))
    return model


def art_side(models: dict[str, torch.nn.Module], roles: Roles, robust: TensorSet) -> float:
    from art.attacks.evasion import ProjectedGradientDescent
    from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
    from art.estimators.classification import PyTorchClassifier
    from sklearn.metrics import roc_auc_score

    half = len(roles.test) // 2
    xs = {r: getattr(roles, r).x.numpy() for r in ("forget", "retain", "test")}
    ys = {r: getattr(roles, r).y.numpy() for r in ("forget", "retain", "test")}
    start = time.perf_counter()
    for name, model in models.items():
        clf = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(1, 28, 28),
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        accs = {r: float((clf.predict(xs[r]).argmax(1) == ys[r]).mean()) for r in xs}
        mia = MembershipInferenceBlackBox(clf, attack_model_type="gb")
        mia.fit(xs["retain"], ys["retain"], xs["test"][:half], ys["test"][:half])
        p_in = mia.infer(xs["forget"], ys["forget"], probabilities=True)[:, 0]
        p_out = mia.infer(xs["test"][half:], ys["test"][half:], probabilities=True)[:, 0]
        auc = roc_auc_score(np.r_[np.ones(len(p_in)), np.zeros(len(p_out))], np.r_[p_in, p_out])
        pgd = ProjectedGradientDescent(
            clf,
            norm=np.inf,
            eps=0.3,
            eps_step=0.075,
            max_iter=10,
            num_random_init=1,
            batch_size=256,
            verbose=False,
        )
        x_adv = pgd.generate(robust.x.numpy(), y=robust.y.numpy())
        racc = float((clf.predict(x_adv).argmax(1) == robust.y.numpy()).mean())
        print(f"  ART {name:<9} acc {accs}  MIA AUC {auc:.3f}  PGD-10 R-ACC {racc:.3f}")
    return time.perf_counter() - start


def ours(models: dict[str, torch.nn.Module], roles: Roles, robust: TensorSet) -> float:
    loaded = {n: LoadedModel(m, n, "0" * 64, "native", "cnn", {}, 10, (1, 28, 28)) for n, m in models.items()}

    def measure(module):
        return measure_robustness(module, robust, family="mnist", num_classes=10, steps=10)

    start = time.perf_counter()
    result = evaluate(
        loaded["original"], loaded["unlearned"], roles, retrained=loaded["retrained"], robustness=measure
    )
    seconds = time.perf_counter() - start
    for name, m in result.models.items():
        pop = m["mia"]["population_gated"]
        print(
            f"  ours {name:<9} acc {m['accuracy']}  MIA AUC {pop['auc']:.3f} ({pop['attack']})  "
            f"PGD-10 R-ACC {m['robustness']['robust_accuracy']:.3f}"
        )
    print(f"  ours per step: {result.timings}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    roles = make_roles(args.seed)
    print(f"torch threads: {torch.get_num_threads()}; training three CNNs ...")
    full = TensorSet(torch.cat([roles.forget.x, roles.retain.x]), torch.cat([roles.forget.y, roles.retain.y]))
    original = train(full, 1)
    retrained = train(roles.retain, 2)
    # "unlearned": the original fine-tuned on retain for one epoch (a cheap approximate method)
    unlearned = build_model("cnn", num_classes=10, input_shape=(1, 28, 28))
    unlearned.load_state_dict(original.state_dict())
    train_model(unlearned, roles.retain, TrainConfig(epochs=1, batch_size=64, lr=1e-3, seed=3))
    models = {"original": original, "unlearned": unlearned, "retrained": retrained}
    idx = np.random.default_rng(args.seed).choice(len(roles.test), size=1000, replace=False)
    robust = roles.test.subset(np.sort(idx))
    # Warm-up so neither side pays one-off library initialisation.
    measure_robustness(original, robust.subset(np.arange(8)), family="mnist", num_classes=10, steps=1)
    t_ours = ours(models, roles, robust)
    t_art = art_side(models, roles, robust)
    print(
        f"\nunlearn-audit evaluate: {t_ours:.1f}s   ART: {t_art:.1f}s   "
        f"speed-up (ART time / ours): {t_art / t_ours:.2f}x"
    )


if __name__ == "__main__":
    main()
