"""Membership inference on mnist-5k: what each attack sees, with intervals, and what it costs.

Setting (issue 3): a CNN trained on all 4,000 training digits (original) and one retrained
without a random 10% forget set (400 digits); non-members are the 1,000 test digits. For both
models it prints every attack's AUC and TPR at 1% FPR on the forget set with 95% bootstrap
intervals, then the time of each step: logits and signals, population attacks, training 8
reference models, U-LiRA / RMIA scoring, and the vmap-versus-loop training ratio.

    python benchmarks/bench_mia.py [--refs 8] [--workdir bench-out/mia]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from attacks.paired import paired_test
from attacks.population import population_attacks
from attacks.reference import benchmark_strategies, rmia, train_reference_models, ulira_scores
from attacks.signals import compute_logits, compute_signals
from attacks.stats import AttackResult, evaluate_attack
from unlearn_audit.data import load_dataset, make_roles
from unlearn_audit.models import build_model, load_model, save_checkpoint
from unlearn_audit.training import default_config, train_model


def fmt(res: AttackResult) -> str:
    ci = f"[{res.auc_ci[0]:.3f}, {res.auc_ci[1]:.3f}]" if res.auc_ci else "n/a"
    tpr = "n/a" if res.tpr_at_1pct_fpr is None else f"{res.tpr_at_1pct_fpr:.3f}"
    tci = (
        f"[{res.tpr_at_1pct_fpr_ci[0]:.3f}, {res.tpr_at_1pct_fpr_ci[1]:.3f}]"
        if res.tpr_at_1pct_fpr_ci
        else ""
    )
    return f"AUC {res.auc:.3f} {ci}   TPR@1%FPR {tpr} {tci}"


def get_model(path: Path, train_set, seed: int) -> torch.nn.Module:
    if path.exists():
        return load_model(path).module
    cfg = default_config("cnn", "mnist", seed=seed)
    model = build_model("cnn", num_classes=10, input_shape=(1, 28, 28), seed=seed)
    train_model(model, train_set, cfg)
    save_checkpoint(
        model,
        path,
        arch="cnn",
        num_classes=10,
        input_shape=(1, 28, 28),
        provenance={"train_config": cfg.to_dict()},
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refs", type=int, default=8)
    parser.add_argument("--workdir", default="bench-out/mia")
    args = parser.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    roles = make_roles(load_dataset("mnist-5k"), "random:0.1", seed=0)
    dataset = load_dataset("mnist-5k")

    t = time.perf_counter()
    original = get_model(work / "original.pt", dataset.train, 0)
    retrained = get_model(work / "retrained.pt", roles.retain, 1)
    times["train original + retrained (or load)"] = time.perf_counter() - t

    t = time.perf_counter()
    sig = {}
    for name, model in (("original", original), ("retrained", retrained)):
        for role in ("forget", "retain", "test"):
            s = getattr(roles, role)
            sig[name, role] = compute_signals(compute_logits(model, s.x), s.y)
    times["logits + signals (2 models x 3 roles)"] = time.perf_counter() - t

    t = time.perf_counter()
    pops = {
        n: population_attacks(sig[n, "forget"], sig[n, "retain"], sig[n, "test"], seed=0)
        for n in ("original", "retrained")
    }
    times["population attacks (7 attacks x 2 models, 1000 bootstrap)"] = time.perf_counter() - t

    print("\n== population attacks: forget (members) vs test half B (non-members)")
    for name, pop in pops.items():
        for attack, res in pop.all_results().items():
            print(f"  {name:<9} {attack:<28} {fmt(res)}")
        print(
            f"  {name:<9} MIA-efficacy (share of forget called non-member): "
            + ", ".join(f"{k} {v:.3f}" for k, v in pop.mia_efficacy.items())
        )

    t = time.perf_counter()
    pt = paired_test(
        sig["original", "forget"].logit_confidence,
        sig["retrained", "forget"].logit_confidence,
        sig["original", "test"].logit_confidence,
        sig["retrained", "test"].logit_confidence,
    )
    paired = evaluate_attack("paired", pt.forget_diffs, pt.test_diffs)
    times["paired test"] = time.perf_counter() - t
    print("\n== paired single-reference test (original minus retrained, forget vs test)")
    print(f"  original  {fmt(paired)}  p={pt.p_value:.2e}")

    def make():
        return build_model("cnn", num_classes=10, input_shape=(1, 28, 28))

    cfg = default_config("cnn", "mnist")
    t = time.perf_counter()
    refs = train_reference_models(
        make,
        roles.retain.x,
        roles.retain.y,
        seeds=list(range(100, 100 + args.refs)),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        strategy="auto",
    )
    times[f"train {args.refs} reference models (auto strategy)"] = time.perf_counter() - t

    t = time.perf_counter()
    ref_sig = {
        role: [
            compute_signals(compute_logits(m, getattr(roles, role).x), getattr(roles, role).y) for m in refs
        ]
        for role in ("forget", "test")
    }
    ref_f = np.stack([s.logit_confidence for s in ref_sig["forget"]], 1)
    ref_t = np.stack([s.logit_confidence for s in ref_sig["test"]], 1)
    print(f"\n== U-LiRA (offline LiRA against {args.refs} reference models trained without the forget set)")
    for name in ("original", "retrained"):
        f, te = ulira_scores(
            sig[name, "forget"].logit_confidence, ref_f, sig[name, "test"].logit_confidence, ref_t
        )
        print(f"  {name:<9} {fmt(evaluate_attack('ulira', f, te))}")
    print(f"\n== RMIA (offline, a=0.3, population = test set, {args.refs} references)")
    pf = np.stack([s.confidence for s in ref_sig["forget"]], 1)
    ptst = np.stack([s.confidence for s in ref_sig["test"]], 1)
    for name in ("original", "retrained"):
        tf, tt = sig[name, "forget"].confidence, sig[name, "test"].confidence
        half = len(tt) // 2
        s_f = rmia(tf, pf, None, tt[:half], ptst[:half])
        s_t = rmia(tt[half:], ptst[half:], None, tt[:half], ptst[:half])
        print(f"  {name:<9} {fmt(evaluate_attack('rmia', s_f, s_t))}")
    times["U-LiRA + RMIA scoring"] = time.perf_counter() - t

    t = time.perf_counter()
    bench = benchmark_strategies(
        make,
        roles.retain.x,
        roles.retain.y,
        seeds=list(range(4)),
        epochs=1,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
    )
    times["vmap vs loop timing run (4 models, 1 epoch each way)"] = time.perf_counter() - t
    print(
        f"\n== training 4 CNNs for 1 epoch: loop {bench.loop_seconds:.1f}s, vmap {bench.vmap_seconds:.1f}s, "
        f"loop/vmap = {bench.speedup:.2f}x (max parameter difference {bench.max_abs_param_diff:.1e})"
    )

    print("\n== time per step")
    for step, sec in times.items():
        print(f"  {step:<60} {sec:8.1f}s")
    print(f"  torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
