"""The architecture registry: every model a checkpoint can name, built by ``build_model``.

Besides the plain classifiers (``logreg`` and ``mlp`` for images and ``N x D`` tables, ``cnn`` and
``resnet18`` for images, ``textbag`` for ``N x L`` token ids) it holds the two
architectures that stateful unlearning methods train: the SISA ensemble (``sisa``) and the
Bayesian logistic regression of MCMC unlearning (``bayes_logreg``). They live here, not beside
their methods, so that loading a checkpoint never needs the methods package, and the methods
import the classes from here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.data_text import TEXT_VOCAB_SIZE
from unlearn_audit.errors import ConfigError
from unlearn_audit.suggest import did_you_mean

__all__ = [
    "ArchSpec",
    "BayesLogReg",
    "SisaEnsemble",
    "build_model",
    "list_archs",
    "register_arch",
]

_ARCHS: dict[str, Callable[..., nn.Module]] = {}
_IMAGE_ONLY = ("cnn", "resnet18")


@dataclass(frozen=True)
class ArchSpec:
    """A registered architecture's name and keyword arguments: what a checkpoint records to rebuild it."""

    name: str
    kwargs: dict = field(default_factory=dict)


def register_arch(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHS[name] = fn
        return fn

    return wrap


def list_archs() -> list[str]:
    return sorted(_ARCHS)


def _unknown(kind: str, name: str, valid: list[str]) -> str:
    return f"unknown {kind} {name!r}; available: {', '.join(valid)}{did_you_mean(name, valid)}"


def build_model(
    arch: str, *, num_classes: int, input_shape: tuple[int, ...], seed: int | None = None, **kwargs
) -> nn.Module:
    """Instantiate a registered architecture (initialised under ``seed`` when given)."""
    if arch not in _ARCHS:
        raise ConfigError(_unknown("architecture", arch, list_archs()))
    if len(input_shape) not in (1, 3):
        raise ConfigError(
            f"input_shape must be (C, H, W), got {tuple(input_shape)} (tables are (D,), texts (L,))"
        )
    if arch in _IMAGE_ONLY and len(input_shape) != 3:
        raise ConfigError(
            f"architecture {arch!r} takes images (C, H, W) but the data's inputs have shape "
            f"{tuple(input_shape)}; use mlp or logreg for tables and textbag for texts"
        )
    if seed is not None:
        torch.manual_seed(seed)
    try:
        return _ARCHS[arch](num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except TypeError as exc:
        raise ConfigError(f"architecture {arch!r}: bad arguments {kwargs} ({exc})") from None


# --------------------------------------------------------------------------- plain classifiers


@register_arch("logreg")
def _logreg(*, num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Multinomial logistic regression on the flattened image or the feature vector."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


@register_arch("mlp")
def _mlp(*, num_classes: int, input_shape: tuple[int, ...], hidden: int = 256, depth: int = 2) -> nn.Module:
    """``depth`` hidden layers of ``hidden`` ReLU units on the flattened image or the feature vector."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


@register_arch("cnn")
def _cnn(*, num_classes: int, input_shape: tuple[int, int, int], width: int = 32) -> nn.Module:
    """A small MNIST CNN: two conv-ReLU-maxpool blocks and a 128-unit head (no BatchNorm)."""
    c, h, w = input_shape
    feat = (h // 4) * (w // 4) * 2 * width
    return nn.Sequential(
        nn.Conv2d(c, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(feat, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@register_arch("resnet18")
def _resnet18(*, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """torchvision's ResNet-18 adapted to small images: 3x3 stem, stride 1, no max-pool."""
    from torchvision.models import resnet18

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------- text


class TextBag(nn.Module):
    """A bag of word embeddings: the mean embedding of a text's non-padding tokens, then an MLP.

    The forward pass is split at the embedding so attacks can work in embedding space (token
    ids have no gradient): ``forward(tokens) == classify_embedded(embed(tokens), tokens)``.
    ``embed`` maps ``N x L`` ids to ``N x L x E`` vectors; ``classify_embedded`` takes such
    vectors (perturbed or not) and the ids, which only say where the padding (id 0) is.
    """

    def __init__(self, vocab_size: int, num_classes: int, dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, dim, padding_idx=0)
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.embedding(tokens.long())

    def classify_embedded(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).to(embedded.dtype).unsqueeze(-1)
        mean = (embedded * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)
        return self.head(mean)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify_embedded(self.embed(tokens), tokens)


@register_arch("textbag")
def _textbag(
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    vocab_size: int = TEXT_VOCAB_SIZE,
    dim: int = 64,
    hidden: int = 64,
    depth: int = 1,
) -> nn.Module:
    """Mean of ``dim``-wide word embeddings over ``vocab_size`` token ids, ``depth`` hidden layers of
    ``hidden`` ReLU units (``depth=0``: a linear model of the mean embedding); see :class:`TextBag`."""
    if len(input_shape) != 1:
        raise ConfigError(f"textbag takes N x L token ids, got inputs of shape {tuple(input_shape)}")
    return TextBag(vocab_size, num_classes, dim, hidden, depth)


# --------------------------------------------------------------------------- SISA ensemble

VOTE_TIE_WEIGHT = 1e-3


class SisaEnsemble(nn.Module):
    """``S`` shard models aggregated into one classifier; ``forward`` returns log-probabilities.

    Args:
        members: the shard models (same architecture), each mapping ``(N, ...)`` to ``(N, K)`` logits.
        aggregation: ``"vote"`` (majority vote, ties broken by the mean probability) or ``"mean"``
            (mean of probabilities); see :mod:`unlearn_audit.methods.sisa` for the exact formulas.
    """

    def __init__(self, members: Sequence[nn.Module], aggregation: str = "vote") -> None:
        super().__init__()
        if aggregation not in ("vote", "mean"):
            raise ConfigError(f"aggregation must be 'vote' or 'mean', got {aggregation!r}")
        if len(members) < 1:
            raise ConfigError("a SISA ensemble needs at least one shard model")
        self.members = nn.ModuleList(members)
        self.aggregation = aggregation

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every member's embedding of ``tokens``, side by side (``N x L x S*E``), for text members:
        an embedding-space attack then perturbs each member's embedding within the same ball."""
        return torch.cat([m.embed(tokens) for m in self.members], dim=-1)

    def classify_embedded(self, embedded: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        parts = embedded.chunk(len(self.members), dim=-1)
        return self._aggregate(
            [m.classify_embedded(e, tokens) for m, e in zip(self.members, parts, strict=True)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._aggregate([m(x) for m in self.members], x)

    def _aggregate(self, logits: list[torch.Tensor], x: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble's log-probabilities from its members' logits (see the class docstring)."""
        dtype = x.dtype if x is not None and x.is_floating_point() else torch.float32
        logps = torch.stack([F.log_softmax(z.double(), dim=1) for z in logits])  # (S, N, K)
        s = logps.shape[0]
        log_mean = torch.logsumexp(logps, dim=0) - math.log(s)
        if self.aggregation == "mean":
            return log_mean.to(dtype)
        votes = F.one_hot(logps.detach().argmax(dim=2), logps.shape[2]).sum(dim=0).double()  # (N, K)
        out = torch.logaddexp(torch.log(votes), math.log(VOTE_TIE_WEIGHT) + log_mean)
        out = out - math.log(s + VOTE_TIE_WEIGHT)
        return out.to(dtype)


def sisa_spec(base: ArchSpec, *, shards: int, aggregation: str) -> ArchSpec:
    """How a checkpoint names a SISA ensemble of ``shards`` models of architecture ``base``."""
    return ArchSpec(
        "sisa",
        {"base": base.name, "shards": shards, "aggregation": aggregation, "base_kwargs": dict(base.kwargs)},
    )


@register_arch("sisa")
def _sisa_arch(
    *,
    num_classes: int,
    input_shape: tuple[int, int, int],
    base: str = "cnn",
    shards: int = 5,
    aggregation: str = "vote",
    base_kwargs: dict | None = None,
) -> nn.Module:
    """A SISA ensemble of ``shards`` models of architecture ``base`` (aggregation vote or mean)."""
    if base == "sisa":
        raise ConfigError("the base architecture of a SISA ensemble cannot itself be 'sisa'")
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"shards must be an int >= 1, got {shards!r}")
    members = [
        build_model(base, num_classes=num_classes, input_shape=input_shape, **dict(base_kwargs or {}))
        for _ in range(shards)
    ]
    return SisaEnsemble(members, aggregation)


# --------------------------------------------------------------------------- Bayesian logistic regression


class BayesLogReg(nn.Module):
    """Posterior samples of a multinomial logistic regression, used as one classifier.

    Attributes:
        samples: ``(K, C, D + 1)`` (weights then bias), a frozen ``nn.Parameter``.
        log_weights: ``(K,)`` buffer, normalised log importance weights.

    ``forward(x)`` flattens ``x`` to ``(N, D)`` and returns ``log sum_k w_k softmax(W_k x + b_k)``
    ``(N, C)``.
    """

    def __init__(self, num_features: int, num_classes: int, num_samples: int) -> None:
        super().__init__()
        self.samples = nn.Parameter(
            torch.zeros(num_samples, num_classes, num_features + 1), requires_grad=False
        )
        self.register_buffer("log_weights", torch.full((num_samples,), -math.log(num_samples)))

    @property
    def spec(self) -> ArchSpec:
        """How a checkpoint names this model."""
        return ArchSpec("bayes_logreg", {"num_samples": int(self.samples.shape[0])})

    def sample_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log softmax(W_k x + b_k)`` for every sample: ``(K, N, C)``."""
        xf = x.flatten(1).to(self.samples.dtype)
        w, b = self.samples[..., :-1], self.samples[..., -1]
        return F.log_softmax(torch.einsum("nd,kcd->knc", xf, w) + b[:, None, :], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lw = F.log_softmax(self.log_weights, dim=0)
        outs = []
        for start in range(0, max(1, x.shape[0]), 1024):
            lp = self.sample_log_probs(x[start : start + 1024])
            outs.append(torch.logsumexp(lp + lw[:, None, None], dim=0))
        return torch.cat(outs)


@register_arch("bayes_logreg")
def _bayes_logreg_arch(
    *, num_classes: int, input_shape: tuple[int, int, int], num_samples: int = 500
) -> nn.Module:
    """Bayesian logistic regression as ``num_samples`` posterior samples (see :class:`BayesLogReg`)."""
    return BayesLogReg(int(np.prod(input_shape)), num_classes, num_samples)
