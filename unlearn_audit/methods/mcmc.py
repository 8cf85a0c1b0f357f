"""MCMC-based Bayesian unlearning (Nguyen et al., ASIACCS 2022) and failure-cause identification
(Tanno et al., NeurIPS 2022) for Bayesian multinomial logistic regression.

Model: ``p(y | x, theta) = softmax(W x + b)_y`` with ``theta = (W, b)``, prior
``theta ~ N(0, prior_std^2 I)``. Training draws a *candidate set* ``Theta`` of posterior samples
with Hamiltonian Monte Carlo (:func:`hmc`, several chains in parallel, step size and a diagonal
mass matrix adapted during warm-up) from ``q(theta) ∝ exp(h(theta) / T)``, where
``h(theta) = log p(D | theta) + log p(theta)`` and ``T`` (``temperature``, default 1) > 1 flattens
the target, which widens the candidate set so that it still covers the posterior after large
deletions (the "enlarged candidate set" of the replication ``hansaja1119/MCMC``).

The classifier is a :class:`~unlearn_audit.archs.BayesLogReg` (architecture ``bayes_logreg``): it holds
the samples and a normalised log-weight per sample, and ``forward`` returns the log posterior
predictive ``log sum_k w_k softmax(W_k x + b_k)``, a valid logit vector for every metric.

Unlearning ``D_e`` re-weights the candidates by importance sampling, never resampling:

    log w(theta) = log p(theta) + sum_{i in D \\ removed} log p(y_i | x_i, theta) - log q(theta)

normalised with log-sum-exp; with ``T = 1`` this is ``w ∝ 1 / p(D_e | theta)`` (Nguyen et al.).
The state keeps the per-example log-likelihoods ``(N, K)``, so a request needs only the forget
samples' identities. The notes report the effective sample size ``ESS = 1 / sum_k w_k^2``; an ESS
of a few percent of ``K`` means the candidates no longer cover the new posterior (retrain, or
train with a larger ``temperature``).

Cause identification (:func:`identify_causes`, Tanno et al. Algorithm 1 step I): fit the failure
set ``F`` on top of ``D`` (re-run HMC on ``D ∪ F``, or re-weight the candidates by
``p(F | theta)``), then score every training example

    r(z) = E_{p(theta | D)}[log p(z | theta)] - E_{p(theta | D, F)}[log p(z | theta)]

Examples with ``r(z) > 0`` (explained worse once the failures are fixed) are the failure causes.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from unlearn_audit.archs import ArchSpec, BayesLogReg
from unlearn_audit.data import TensorSet
from unlearn_audit.errors import ConfigError, DataError, ModelError
from unlearn_audit.methods._common import Progress
from unlearn_audit.methods._hmc import HmcResult, hmc
from unlearn_audit.methods._state import (
    STATE_VERSION,
    RecipeRule,
    StatefulMethod,
    StatefulTraining,
    locate_forget,
    mark_removed,
    sample_fingerprints,
)
from unlearn_audit.methods.base import ProgressFn, RunResult, UnlearnData, param
from unlearn_audit.methods.registry import register_method
from unlearn_audit.torchutil import evaluation_mode
from unlearn_audit.training import TrainConfig

__all__ = [
    "BayesLogReg",
    "CauseReport",
    "HmcResult",
    "McmcUnlearn",
    "effective_sample_size",
    "fit_bayes_logreg",
    "hmc",
    "identify_causes",
    "per_example_loglik",
]

logger = logging.getLogger(__name__)

# =========================================================================== likelihoods and the fit


def _loglik_batched(theta: torch.Tensor, x1: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed log-likelihoods ``(chains,)``; ``theta (chains, C, D+1)``, ``x1 (N, D+1)`` ends in ones."""
    logits = torch.einsum("nd,kcd->knc", x1, theta)
    return (
        F.log_softmax(logits, dim=-1)
        .gather(2, y[None, :, None].expand(theta.shape[0], -1, 1))
        .squeeze(2)
        .sum(1)
    )


def _with_ones(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    xf = x.flatten(1).to(dtype)
    return torch.cat([xf, torch.ones(xf.shape[0], 1, dtype=dtype, device=xf.device)], dim=1)


def per_example_loglik(
    samples: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *, chunk: int = 512
) -> torch.Tensor:
    """``log p(y_i | x_i, theta_k)`` for every example and sample: ``(N, K)`` float64."""
    s = samples.double()
    out = []
    for start in range(0, len(y), chunk):
        x1 = _with_ones(x[start : start + chunk].to(s.device), torch.float64)
        lp = F.log_softmax(torch.einsum("nd,kcd->nkc", x1, s), dim=-1)
        yy = y[start : start + chunk].to(s.device)
        out.append(lp.gather(2, yy[:, None, None].expand(-1, s.shape[0], 1)).squeeze(2))
    return torch.cat(out) if out else torch.zeros(0, s.shape[0], dtype=torch.float64)


def effective_sample_size(log_weights: torch.Tensor) -> float:
    """Kish's ESS ``1 / sum w^2`` of normalised weights given as (unnormalised) log-weights."""
    w = torch.softmax(log_weights.double(), dim=0)
    return float(1.0 / (w * w).sum())


@dataclass(frozen=True)
class FitInfo:
    """How the candidate set was drawn."""

    accept_rate: float
    step_size: float
    seconds: float


def fit_bayes_logreg(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    prior_std: float = 3.0,
    temperature: float = 1.0,
    chains: int = 4,
    num_samples: int = 500,
    warmup: int = 500,
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: Callable[[], None] | None = None,
) -> tuple[BayesLogReg, FitInfo]:
    """Draw ``num_samples`` candidates from ``q(theta) ∝ exp(h(theta) / temperature)`` by HMC.

    Args:
        x: ``(N, ...)`` inputs (flattened); y: ``(N,)`` labels in ``[0, num_classes)``.
        num_samples: total kept draws, split evenly over ``chains`` (must divide).
        Other arguments: see :func:`hmc`. Runs in float64.

    Returns:
        ``(model, info)``: a :class:`BayesLogReg` (float32, weights uniform) and sampler facts.
    """
    if num_samples % chains:
        raise ConfigError(f"num_samples ({num_samples}) must be a multiple of chains ({chains})")
    dev = torch.device(device)
    x1 = _with_ones(x.to(dev), torch.float64)
    yy = y.to(dev)
    d = x1.shape[1]
    shape = (num_classes, d)

    def log_q(flat: torch.Tensor) -> torch.Tensor:
        theta = flat.view(-1, *shape)
        prior = _log_prior(theta, prior_std)
        return (_loglik_batched(theta, x1, yy) + prior) / temperature

    gen = torch.Generator().manual_seed(seed)
    init = 0.1 * torch.randn(chains, num_classes * d, generator=gen, dtype=torch.float64).to(dev)
    res = hmc(
        log_q,
        init,
        num_samples=num_samples // chains,
        warmup=warmup,
        leapfrog_steps=leapfrog_steps,
        step_size=step_size,
        generator=gen,
        progress=progress,
    )
    model = BayesLogReg(d - 1, num_classes, num_samples).to(dev)
    with torch.no_grad():
        model.samples.copy_(res.samples.view(num_samples, *shape).float())
    logger.info(
        "HMC: %d samples, acceptance %.2f, step %.3g, %.1f s",
        num_samples,
        res.accept_rate,
        res.step_size,
        res.seconds,
    )
    return model, FitInfo(res.accept_rate, res.step_size, res.seconds)


def _log_prior(samples: torch.Tensor, prior_std: float) -> torch.Tensor:
    """``log N(theta; 0, prior_std^2 I)`` up to a constant, per sample ``(K, C, D + 1) -> (K,)``, float64."""
    s = samples.double()
    return -0.5 * (s * s).sum(dim=(1, 2)) / prior_std**2


def _samples_sha(model: BayesLogReg) -> str:
    return hashlib.sha256(model.samples.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


# =========================================================================== the method


@register_method("mcmc_unlearn")
@dataclass(frozen=True)
class McmcUnlearn(StatefulMethod):
    """MCMC unlearning (Nguyen et al. 2022): re-weight posterior samples by ``1 / p(D_e | theta)``.

    Train with ``unlearn-audit train --arch logreg --for-method mcmc_unlearn [--set num_samples=500]``:
    HMC draws the candidate set for a Bayesian logistic regression; the checkpoint holds a
    :class:`BayesLogReg` and the per-example log-likelihoods. Only the recipe's seed applies
    (adversarial training is refused). Unlearning is exact in the limit of
    many samples and reads only the forget set.

    Hyperparameters (all but ``min_ess`` apply at training time):
        num_samples: K, candidates kept (500).
        chains: parallel HMC chains (4).
        warmup: adaptation iterations per chain (500).
        leapfrog_steps: L (10).
        prior_std: prior standard deviation of every weight and bias (3.0).
        temperature: T, draw from ``p(theta | D)^(1/T)``-like ``exp(h / T)`` (1.0).
        min_ess: refuse (ConfigError) when the ESS after re-weighting falls below this share of
            K; 0 only reports it (0.0).

    Reads: forget. Exact as K grows (importance sampling).
    """

    requires: ClassVar[frozenset[str]] = frozenset({"forget"})
    recipe_rules: ClassVar[Mapping[str, RecipeRule]] = {
        "adversarial": RecipeRule(None, "samples a posterior by HMC, which has no adversarial variant")
    }

    num_samples: int = param(500, "K: posterior samples kept (training time)")
    chains: int = param(4, "parallel HMC chains (training time)")
    warmup: int = param(500, "HMC adaptation iterations per chain (training time)")
    leapfrog_steps: int = param(10, "HMC leapfrog steps per iteration (training time)")
    prior_std: float = param(3.0, "prior standard deviation of every weight and bias (training time)")
    temperature: float = param(1.0, "T >= 1: sample exp(h/T) to widen the candidate set (training time)")
    min_ess: float = param(0.0, "refuse when ESS / K falls below this after re-weighting (0 = report only)")

    def _validate(self) -> None:
        for key in ("num_samples", "chains", "leapfrog_steps"):
            if getattr(self, key) < 1:
                raise self._bad(key, ">= 1")
        if self.warmup < 0:
            raise self._bad("warmup", ">= 0")
        if self.num_samples % self.chains:
            raise self._bad("num_samples", f"a multiple of chains={self.chains}")
        if not self.prior_std > 0:
            raise self._bad("prior_std", "> 0")
        if not self.temperature >= 1:
            raise self._bad("temperature", ">= 1")
        if not 0 <= self.min_ess <= 1:
            raise self._bad("min_ess", "in [0, 1]")

    def record_training(
        self,
        model: nn.Module,
        train_set: TensorSet,
        cfg: TrainConfig,
        *,
        arch: ArchSpec | None = None,
        sensitive: object | None = None,
        device: torch.device | str = "cpu",
        progress: ProgressFn | None = None,
    ) -> StatefulTraining:
        """Sample the candidate set for ``train_set`` (``model`` only gives the class count).

        ``cfg.seed`` seeds the sampler; the other recipe fields do not apply. The result's model
        is a :class:`BayesLogReg`, whatever ``arch`` was given.
        """
        x, y = train_set.x, train_set.y
        with evaluation_mode(model), torch.no_grad():
            probe = model.to(device)(x[:1].to(device))
        num_classes = max(int(probe.shape[1]), int(y.max()) + 1)
        prog = Progress(progress)
        prog.add_total(self.warmup + self.num_samples // self.chains)
        bayes, info = fit_bayes_logreg(
            x,
            y,
            num_classes,
            prior_std=self.prior_std,
            temperature=self.temperature,
            chains=self.chains,
            num_samples=self.num_samples,
            warmup=self.warmup,
            leapfrog_steps=self.leapfrog_steps,
            seed=cfg.seed,
            device=device,
            progress=prog.step,
        )
        prog.finish()
        loglik = per_example_loglik(bayes.samples.detach(), x, y).cpu()
        log_prior = _log_prior(bayes.samples.detach(), self.prior_std).cpu()
        log_q = (loglik.sum(0) + log_prior) / self.temperature
        removed = torch.zeros(len(y), dtype=torch.bool)
        with torch.no_grad():
            bayes.log_weights.copy_(_log_target_weights(loglik, log_prior, log_q, removed).float())
        bayes.eval()
        state = {
            "method": "mcmc_unlearn",
            "version": STATE_VERSION,
            "prior_std": float(self.prior_std),
            "temperature": float(self.temperature),
            "accept_rate": float(info.accept_rate),
            "step_size": float(info.step_size),
            "fingerprints": sample_fingerprints(x, y),
            "removed": removed,
            "loglik": loglik,
            "log_prior": log_prior,
            "log_q": log_q,
            "samples_sha256": _samples_sha(bayes),
        }
        return StatefulTraining(model=bayes, state=state, recipe=cfg, arch=bayes.spec)

    def _run_stateful(
        self,
        model: nn.Module,
        data: UnlearnData,
        state: dict,
        *,
        device: torch.device,
        generator: torch.Generator,
        progress: Progress,
    ) -> tuple[RunResult, dict]:
        if not isinstance(model, BayesLogReg) or _samples_sha(model) != state["samples_sha256"]:
            raise ModelError(
                "method 'mcmc_unlearn' needs the BayesLogReg saved with the state (its samples differ or "
                "it is a "
                f"{type(model).__name__})"
            )
        progress.add_total(1)
        located = locate_forget(data, state["fingerprints"], state["removed"])
        removed = mark_removed(state, located.indices)
        lw = _log_target_weights(state["loglik"], state["log_prior"], state["log_q"], removed)
        k = lw.numel()
        ess = effective_sample_size(lw)
        if ess < self.min_ess * k:
            raise ConfigError(
                f"method 'mcmc_unlearn': the effective sample size after re-weighting is {ess:.1f} of {k} "
                f"({100 * ess / k:.1f}%), below min_ess={self.min_ess}; retrain or train with a larger "
                "temperature"
            )
        with torch.no_grad():
            model.log_weights.copy_(lw.to(model.log_weights.dtype))
        progress.step()
        progress.finish()
        notes = [
            f"re-weighted {k} posterior samples after removing {len(located.indices)} examples "
            f"({int(removed.sum())} removed in total); effective sample size {ess:.1f} "
            f"({100 * ess / k:.1f}% of K)"
        ]
        if ess < 0.1 * k:
            notes.append(
                "the effective sample size is below 10% of K: the candidates barely cover the new posterior"
            )
        new_state = dict(state)
        new_state["removed"] = removed
        return RunResult(model=model, touched=("forget",), notes=tuple(notes)), new_state


def _log_target_weights(
    loglik: torch.Tensor, log_prior: torch.Tensor, log_q: torch.Tensor, removed: torch.Tensor
) -> torch.Tensor:
    """Normalised ``log w = log p(theta) + sum_{i not removed} log p(z_i | theta) - log q(theta)``."""
    keep = ~removed.to(torch.bool)
    lw = log_prior + loglik[keep].sum(0) - log_q
    return lw - torch.logsumexp(lw, dim=0)


# =========================================================================== Tanno et al.


@dataclass(frozen=True)
class CauseReport:
    """Failure causes among training examples (Tanno et al. 2022, step I).

    Attributes:
        scores: ``r(z)`` for every training example, float64 ``(N,)``.
        causes: training indices selected (``r > 0``, or the ``top_k`` largest), int64, by decreasing r.
        before: ``E_{p(theta|D)}[log p(z|theta)]`` ``(N,)``.
        after: ``E_{p(theta|D,F)}[log p(z|theta)]`` ``(N,)``.
        update: how ``p(theta | D, F)`` was obtained (``resample`` or ``reweight``).
        ess: effective sample size of the re-weighting (``reweight`` only, else None).
    """

    scores: torch.Tensor
    causes: torch.Tensor
    before: torch.Tensor
    after: torch.Tensor
    update: str
    ess: float | None


def identify_causes(
    model: BayesLogReg,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    failure_x: torch.Tensor,
    failure_y: torch.Tensor,
    *,
    update: Literal["resample", "reweight"] = "resample",
    top_k: int | None = None,
    prior_std: float = 3.0,
    chains: int = 4,
    warmup: int = 500,
    leapfrog_steps: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> CauseReport:
    """Score training examples by how much fitting the failure set ``F`` lowers their likelihood.

    Args:
        model: the posterior ``p(theta | D)`` as weighted samples (e.g. from ``record_training``).
        train_x, train_y: the training set D ``(N, ...)``, ``(N,)``.
        failure_x, failure_y: the failure cases F with their *correct* labels.
        update: ``resample``: HMC on ``D ∪ F`` (same prior, K samples, the given sampler settings);
            ``reweight``: the same samples re-weighted by ``p(F | theta)`` (cheap; degenerates when
            F is large, see ``ess``).
        top_k: return the ``top_k`` highest-scoring examples instead of all with ``r > 0``.
        prior_std: the prior of the resampled posterior (use the one ``model`` was trained with).

    Returns:
        A :class:`CauseReport`.

    Raises:
        DataError: empty failure set or mismatched shapes.
    """
    if len(failure_y) == 0:
        raise DataError("identify_causes needs at least one failure case")
    if failure_x.shape[1:] != train_x.shape[1:]:
        raise DataError(
            f"failure_x samples have shape {tuple(failure_x.shape[1:])} but train_x samples "
            f"{tuple(train_x.shape[1:])}"
        )
    samples = model.samples.detach()
    lw = F.log_softmax(model.log_weights.detach().double(), dim=0).cpu()
    ll_train = per_example_loglik(samples, train_x, train_y).cpu()
    before = (ll_train * lw.exp()[None, :]).sum(1)
    ess: float | None = None
    if update == "reweight":
        lw_f = lw + per_example_loglik(samples, failure_x, failure_y).cpu().sum(0)
        lw_f = lw_f - torch.logsumexp(lw_f, 0)
        ess = effective_sample_size(lw_f)
        after = (ll_train * lw_f.exp()[None, :]).sum(1)
    elif update == "resample":
        k = samples.shape[0] - samples.shape[0] % chains or chains
        refit, _ = fit_bayes_logreg(
            torch.cat([train_x, failure_x]),
            torch.cat([train_y, failure_y]),
            samples.shape[1],
            prior_std=prior_std,
            chains=chains,
            num_samples=k,
            warmup=warmup,
            leapfrog_steps=leapfrog_steps,
            seed=seed,
            device=device,
        )
        after = per_example_loglik(refit.samples.detach(), train_x, train_y).cpu().mean(1)
    else:
        raise ConfigError(f"update must be 'resample' or 'reweight', got {update!r}")
    scores = before - after
    order = torch.argsort(scores, descending=True)
    if top_k is not None:
        if top_k < 0:
            raise ConfigError(f"top_k must be >= 0, got {top_k}")
        causes = order[:top_k]
    else:
        causes = order[scores[order] > 0]
    return CauseReport(scores=scores, causes=causes, before=before, after=after, update=update, ess=ess)
