"""What the inputs of a data set are, judged from the data: the family that picks the threat model,
and for tables and texts the bounds an attack must respect.

A name says little (``mnist.npz`` may hold anything), so the family is read from the training
tensor: four-dimensional float images go to :func:`attacks.threat.infer_family` (``mnist``,
``cifar`` or ``other``), a two-dimensional float matrix is ``tabular`` and a two-dimensional
integer matrix is ``text`` (token ids). The reason is kept so provenance and reports can show it.

For a table, an adversary may move each feature by at most ``eps`` standard deviations
(``scale``), never outside the range observed in the training data (``lower``/``upper``), never
touch a ``fixed`` feature (one-hot indicators, constants) and, for a feature that only takes
whole values in its raw units, must land on its grid (``grid_offset + k * grid_step``).
For a text, the attack works in the model's embedding space; the domain records the number of
token ids and the padding id, which no attack perturbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attacks.threat import infer_family

__all__ = ["InputDomain", "RawSplit", "describe_domain", "seeded_split", "tabular_domain"]

PAD_ID = 0


@dataclass(frozen=True, kw_only=True, eq=False)
class InputDomain:
    """The family of a data set's inputs, why, and the limits an attack on them keeps to.

    Tabular fields are per-feature ``D`` tensors in the units of ``x``; ``grid_step`` is 0 for a
    continuous feature. ``vocab_size`` and ``pad_id`` describe token-id inputs.
    """

    family: str
    reason: str
    lower: Tensor | None = None
    upper: Tensor | None = None
    scale: Tensor | None = None
    fixed: Tensor | None = None
    grid_step: Tensor | None = None
    grid_offset: Tensor | None = None
    vocab_size: int | None = None
    pad_id: int = PAD_ID

    def summary(self) -> dict:
        """The JSON-able part provenance records: family, reason and the counts that describe it."""
        out: dict = {"family": self.family, "family_reason": self.reason}
        if self.fixed is not None and self.grid_step is not None:
            out["fixed_features"] = int(self.fixed.sum())
            out["integer_features"] = int((self.grid_step > 0).sum())
        if self.vocab_size is not None:
            out["vocab_size"] = self.vocab_size
        return out


def tabular_domain(
    x: Tensor,
    *,
    fixed: Tensor | None = None,
    grid_step: Tensor | None = None,
    grid_offset: Tensor | None = None,
    reason: str | None = None,
) -> InputDomain:
    """The tabular domain of training features ``x`` (``N x D``): observed range and spread.

    Without explicit ``fixed`` / grid information (an ``.npz`` of raw features), a feature that
    only takes the values 0 and 1 (or is constant) is held fixed and one that only takes whole
    values moves on the integer grid: the safe reading of features nobody described.
    """
    x = x.detach().to(torch.float64)
    lower, upper = x.min(dim=0).values, x.max(dim=0).values
    scale = x.std(dim=0, unbiased=False)
    whole = torch.all(x == torch.round(x), dim=0)
    if fixed is None:
        binary = torch.all((x == 0) | (x == 1), dim=0)
        fixed = binary | (scale == 0)
    else:
        fixed = fixed.to(torch.bool) | (scale == 0)
    if grid_step is None:
        grid_step = whole.to(torch.float64)
        grid_offset = torch.zeros_like(grid_step)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    why = reason or f"{x.shape[1]} float features per example (an N x D table): the tabular threat model"
    return InputDomain(
        family="tabular",
        reason=why,
        lower=lower.float(),
        upper=upper.float(),
        scale=scale.float(),
        fixed=fixed,
        grid_step=grid_step.float(),
        grid_offset=(torch.zeros_like(grid_step) if grid_offset is None else grid_offset).float(),
    )


def describe_domain(x: Tensor, *, vocab_size: int | None = None) -> InputDomain:
    """The domain of training inputs ``x``: images, a table or token ids, judged from the tensor."""
    if x.ndim == 2 and x.is_floating_point():
        return tabular_domain(x)
    if x.ndim == 2 and not x.is_floating_point():
        size = int(vocab_size if vocab_size is not None else int(x.max()) + 1)
        return InputDomain(
            family="text",
            reason=f"integer token ids, {x.shape[1]} per example (an N x L matrix): the text threat model",
            vocab_size=size,
        )
    family, reason = infer_family(x)
    return InputDomain(family=family, reason=reason)


@dataclass(frozen=True, kw_only=True, eq=False)
class RawSplit:
    """A training and a test split as plain arrays, as the table and text loaders hand them to
    :mod:`unlearn_audit.data` (which validates them and attaches the domain).

    ``fixed``, ``grid_step`` and ``grid_offset`` (per feature) describe a table's columns when the
    loader knows them (one-hot indicators are fixed; whole-valued raw columns move on a grid);
    ``vocab_size`` is the number of token ids of a text.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    provenance: dict
    fixed: np.ndarray | None = None
    grid_step: np.ndarray | None = None
    grid_offset: np.ndarray | None = None
    vocab_size: int | None = None

    def domain(self, x_train: Tensor) -> InputDomain:
        """The domain of the validated training inputs, using what the loader knows."""
        if self.vocab_size is not None:
            return describe_domain(x_train, vocab_size=self.vocab_size)
        if self.fixed is None:
            return describe_domain(x_train)
        return tabular_domain(
            x_train,
            fixed=torch.from_numpy(self.fixed),
            grid_step=torch.from_numpy(self.grid_step),
            grid_offset=torch.from_numpy(self.grid_offset),
            reason=(
                f"{x_train.shape[1]} features from a table (numeric columns standardised, categorical "
                f"ones one-hot encoded): the tabular threat model"
            ),
        )


def seeded_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and test indices of a seeded random split of ``n`` examples."""
    perm = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
