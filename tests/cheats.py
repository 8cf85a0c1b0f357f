"""Models a dishonest supplier would hand over to get a PASS, built from an honest original.

Every cheat keeps the original's knowledge of the forget set; each hides it differently:

* :class:`Temperature` divides the logits by ``T`` (same predictions, flatter scores);
* :class:`OneHot` answers only a scaled one-hot vector of the original's prediction (all ties);
* :class:`TopLogitNoise` adds input-dependent noise to the top logit (predictions unchanged);
* :class:`ClampClass` keeps forgotten classes' logits just under the best other class, so they
  are never predicted but still ranked second;
* :func:`permute_hidden_units` reorders an MLP's hidden units (the same function, other weights);
* :func:`export_pt2` / :func:`script_file` / :func:`safetensors_file` re-package a model so
  that names and formats differ from the original's checkpoint.

Tests import this module (``from cheats import ...``; pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class Temperature(nn.Module):
    def __init__(self, inner: nn.Module, temperature: float) -> None:
        super().__init__()
        self.inner, self.temperature = inner, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) / self.temperature


class OneHot(nn.Module):
    def __init__(self, inner: nn.Module, num_classes: int, scale: float = 10.0) -> None:
        super().__init__()
        self.inner, self.num_classes, self.scale = inner, num_classes, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        top = logits.argmax(dim=1, keepdim=True)
        return torch.zeros_like(logits).scatter(1, top, self.scale)


class TopLogitNoise(nn.Module):
    """Adds ``sigma * u(x)`` to the top logit, ``u`` in [0, 1) a hash of the input pixels."""

    def __init__(self, inner: nn.Module, sigma: float) -> None:
        super().__init__()
        self.inner, self.sigma = inner, float(sigma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        u = torch.frac(torch.sin(x.flatten(1).sum(dim=1) * 12.9898) * 43758.5453).abs()
        top = logits.argmax(dim=1, keepdim=True)
        bump = torch.zeros_like(logits).scatter(1, top, 1.0) * (self.sigma * u)[:, None]
        return logits + bump


class ClampClass(nn.Module):
    """Forgotten classes' logits clamped just under the best remaining logit."""

    def __init__(self, inner: nn.Module, classes: list[int], gap: float = 1e-3) -> None:
        super().__init__()
        self.inner, self.gap = inner, float(gap)
        self.classes = list(classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.inner(x)
        mask = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
        mask[self.classes] = True
        best_other = logits.masked_fill(mask, float("-inf")).max(dim=1, keepdim=True).values
        clamped = torch.minimum(logits, best_other - self.gap)
        return torch.where(mask, clamped, logits)


def permute_hidden_units(model: nn.Module, seed: int = 0) -> nn.Module:
    """A copy of an MLP-like ``nn.Sequential`` with the hidden units of every Linear->act->Linear
    pair permuted: the same function, different weights at every position."""
    import copy

    out = copy.deepcopy(model)
    linears = [m for m in out.modules() if isinstance(m, nn.Linear)]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for first, second in zip(linears, linears[1:], strict=False):
            perm = torch.randperm(first.out_features, generator=gen)
            first.weight.copy_(first.weight[perm])
            if first.bias is not None:
                first.bias.copy_(first.bias[perm])
            second.weight.copy_(second.weight[:, perm])
    return out


def export_pt2(module: nn.Module, example: torch.Tensor, path: Path) -> Path:
    module.eval()
    program = torch.export.export(module, (example,))
    torch.export.save(program, str(path))
    return path


def script_file(module: nn.Module, path: Path) -> Path:
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def safetensors_file(module: nn.Module, path: Path, prefix: str = "") -> Path:
    from safetensors.torch import save_file

    state = {prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    return path
