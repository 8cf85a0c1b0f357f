"""One seeded digits audit shared by the report tests (browser, PDF, compare, action).

The settings are those of ``tests/test_golden.py`` (MLPs on digits, finetune unlearning,
two reference models, a small PGD and the label-only gap attack), so the report carries every
kind of plot. The unlearned model lives under a long folder name without spaces: the page must
wrap it rather than overflow. The audit runs once per test process (``lru_cache``) in a
temporary folder; tests copy or re-render the result, never edit the files.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import torch

LONG_NAME = "release-candidate-" * 8 + "unlearned"
DATA = ["--data", "digits", "--forget", "random:150", "--seed", "0", "--device", "cpu"]


def _cli(args: list) -> int:
    from unlearn_audit.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


@functools.lru_cache(maxsize=1)
def seeded_audit() -> Path:
    """The folder holding ``audit.json`` (and the models) of the seeded audit."""
    folder = Path(tempfile.mkdtemp(prefix="unlearn-audit-seeded-"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        unlearned = folder / LONG_NAME / "model.pt"
        unlearned.parent.mkdir()
        train = ["train", "--arch", "mlp", "--epochs", "8", *DATA]
        assert _cli([*train, "--out", folder / "orig.pt"]) == 0
        assert _cli([*train, "--without-forget", "--out", folder / "retr.pt"]) == 0
        unlearn = ["unlearn", "--method", "finetune", "--model", folder / "orig.pt", "--set", "epochs=2"]
        assert _cli([*unlearn, *DATA, "--out", unlearned]) == 0
        policy = folder / "policy.toml"
        policy.write_text("[statistics]\nn_bootstrap = 200\n", encoding="utf-8")
        code = _cli(
            ["-q", "evaluate", "--original", folder / "orig.pt", "--unlearned", unlearned,
             "--retrained", folder / "retr.pt", *DATA, "--policy", policy,
             "--reference-models", "2", "--cache-dir", folder / "cache",
             "--robust-samples", "60", "--robust-steps", "5", "--label-only", "gap",
             "--json", folder / "audit.json"]
        )  # fmt: skip
        assert code in (0, 1, 3), f"seeded evaluate exited {code}"
    finally:
        torch.set_num_threads(before)
    return folder
