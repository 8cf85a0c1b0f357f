"""Texts: the vocabulary and its record, embedding-space PGD against the closed-form worst case of
a linear bag of embeddings, padding that never moves, and ``evaluate`` on token-id files.

Reference: ``textbag`` with ``depth=0`` is linear in the mean of the non-padding embeddings; an
L-inf perturbation of ``eps`` per coordinate of every token moves that mean by at most ``eps``
per coordinate, so the smallest margin against class ``o`` is
``(w_y - w_o) . mean + b_y - b_o - eps * ||w_y - w_o||_1``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attacks.text import embedding_pgd
from unlearn_audit.archs import build_model
from unlearn_audit.data import TensorSet
from unlearn_audit.data_domain import describe_domain
from unlearn_audit.data_text import UNKNOWN_ID, Vocabulary
from unlearn_audit.robustness import measure_robustness

V, L = 40, 8


def _tokens(seed: int, n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, V, (n, L), generator=g)
    lengths = torch.randint(1, L + 1, (n,), generator=g)
    tokens[torch.arange(L)[None, :] >= lengths[:, None]] = 0  # padding after each text
    return tokens


def _closed_form(model, tokens, y, eps):
    with torch.no_grad():
        emb = model.embed(tokens)
        mask = (tokens != 0).float().unsqueeze(-1)
        mean = (emb * mask).sum(1) / mask.sum(1)
        w, b = model.head[0].weight, model.head[0].bias
        logits = mean @ w.T + b
        margins = []
        for o in range(w.shape[0]):
            diff = w[y] - w[o]
            m = (logits.gather(1, y[:, None])[:, 0] - logits[:, o]) - eps * diff.abs().sum(1)
            margins.append(torch.where(y == o, torch.full_like(m, float("inf")), m))
        return (torch.stack(margins).min(0).values > 0) & (logits.argmax(1) == y)


@pytest.mark.parametrize(("seed", "classes"), [(0, 2), (1, 2), (2, 3)])
def test_embedding_pgd_matches_the_closed_form_of_a_linear_bag(seed, classes):
    model = build_model("textbag", num_classes=classes, input_shape=(L,), seed=seed, vocab_size=V, depth=0)
    model.eval()
    tokens = _tokens(seed)
    with torch.no_grad():
        y = (model(tokens) + 0.5 * torch.randn(len(tokens), classes)).argmax(1)
    eps = 0.05
    got = embedding_pgd(
        model, tokens, y, eps=eps, alpha=0.01, steps=20, generator=torch.Generator().manual_seed(0)
    )
    want = _closed_form(model, tokens, y, eps)
    assert 0 < int(want.sum()) < int(got.clean_correct.sum())
    if classes == 2:  # the cross-entropy gradient points at the one other class: PGD is exact
        assert torch.equal(got.robust_correct, want)
    else:  # PGD never fools a provably robust example, and finds nearly every other one
        assert not bool((want & ~got.robust_correct).any())
        assert float((got.robust_correct != want).float().mean()) <= 0.05


def test_forward_is_classify_of_embed_and_padding_is_ignored():
    model = build_model("textbag", num_classes=2, input_shape=(L,), seed=0, vocab_size=V)
    tokens = _tokens(3, 20)
    assert torch.allclose(model(tokens), model.classify_embedded(model.embed(tokens), tokens))
    longer = torch.cat([tokens, torch.zeros(20, 4, dtype=torch.long)], dim=1)  # more padding
    assert torch.allclose(model(tokens), model(longer), atol=1e-6)
    sisa = build_model("sisa", num_classes=2, input_shape=(L,), base="textbag", shards=3,
                       base_kwargs={"vocab_size": V})  # fmt: skip
    assert torch.allclose(sisa(tokens), sisa.classify_embedded(sisa.embed(tokens), tokens))


def test_vocabulary_is_built_on_training_texts_and_recorded():
    vocab = Vocabulary.fit(["The cat sat", "the dog, the CAT!", "a https://t.co/x"], max_words=3, length=5)
    assert vocab.words == ("the", "cat", "a")  # by frequency, ties alphabetically
    ids = vocab.encode(["the cat ate", "", "the the the the the the"])
    assert ids.tolist() == [[2, 3, UNKNOWN_ID, 0, 0], [0] * 5, [2] * 5]


def test_a_model_without_embedding_hook_is_inconclusive():
    model = build_model("textbag", num_classes=2, input_shape=(L,), seed=0, vocab_size=V)
    tokens = _tokens(4)
    data = TensorSet(tokens, model(tokens).argmax(1).detach(), describe_domain(tokens, vocab_size=V))
    measured = measure_robustness(model, data, family="text", num_classes=2, eps=0.5)
    assert measured["inconclusive_reason"] is None and measured["robust_accuracy"] < 1.0
    hidden = torch.nn.Sequential(model)  # same function, no embed / classify_embedded
    got = measure_robustness(hidden, data, family="text", num_classes=2)
    assert "no embedding hook" in got["inconclusive_reason"]


@pytest.fixture(scope="module")
def token_models(tmp_path_factory):
    """A token-id ``.npz`` (label: does the text hold token 5 or 6 more often; 15% of labels
    flipped so a model must memorise to fit them) and three textbag models through the CLI."""
    from unlearn_audit.cli import main

    tmp = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    x = rng.integers(1, V, size=(600, L))
    y = ((x == 5).sum(1) >= (x == 6).sum(1)).astype(np.int64)
    flip = rng.random(600) < 0.15
    y[flip] = 1 - y[flip]
    np.savez(tmp / "tokens.npz", x=x, y=y)
    data = ["--data", f"npz:{tmp / 'tokens.npz'}", "--forget", "random:60", "--seed", "0", "--device", "cpu"]
    train = ["train", "--arch", "textbag", "--epochs", "15", *data]
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
def test_evaluate_on_token_ids(run_cli, token_models, unlearned, not_verdict):
    tmp, data = token_models
    out = tmp / f"{unlearned}.json"
    code, _, err = run_cli(
        ["evaluate", "--original", tmp / "orig.pt", "--unlearned", tmp / f"{unlearned}.pt",
         "--retrained", tmp / "retr.pt", *data, "--policy", tmp / "policy.toml", "--reference-models", "0",
         "--robust-samples", "40", "--json", out]
    )  # fmt: skip
    assert code in (0, 1, 3), err
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["verdict"].upper() != not_verdict
    assert result["data"]["provenance"]["family"] == "text"
    robust = next(c for c in result["checks"] if c["name"] == "robust_accuracy_drop")
    assert "embedding space" in robust["detail"]
