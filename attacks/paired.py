"""The paired single-reference test: does the unlearned model still know the forget set?

With only ONE model retrained without the forget set, per-example reference attacks
cannot fit a distribution, but pairing still removes most of the example difficulty
that blinds population attacks. For every example compute the difference

    d(x) = s_unlearned(x) - s_retrained(x)

of a membership signal (the logit-scaled confidence by default in the audit; any
"higher = more member-like" signal works). On held-out test examples, unseen by both
models, d only reflects how two training runs differ. On forget examples d has the same
distribution if unlearning matched retraining, and is shifted UP if the unlearned model
still memorises them. The test compares the two samples of differences:

* AUC of forget diffs versus test diffs (Mann-Whitney U / (n_f n_t), ties count 1/2):
  0.5 = indistinguishable from retraining, near 1 = the forget set is still memorised,
  well below 0.5 = over-unlearning (the forget set is now LESS familiar than unseen data,
  itself a detectable trace);
* one-sided Mann-Whitney p-value for "forget diffs are stochastically larger";
* the median shift ``median(forget diffs) - median(test diffs)`` in signal units.

This is the one-model analogue of the per-example tests of the NeurIPS 2023 unlearning
challenge metric and U-LiRA (Hayes et al., arXiv 2403.01218), which need many retrained
models. One retrained model gives one draw of the retraining randomness, so the test has
less power than those and says nothing about individual examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu

from attacks._arrays import float_vector, readonly_copy
from unlearn_audit.errors import DataError

__all__ = ["PairedResult", "paired_scores", "paired_test"]

logger = logging.getLogger(__name__)


def paired_scores(
    unl_forget: np.ndarray,
    ret_forget: np.ndarray,
    unl_test: np.ndarray,
    ret_test: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example differences ``unlearned - retrained`` of a membership signal.

    Args:
        unl_forget: (n_f,) signal of the unlearned model on the forget set.
        ret_forget: (n_f,) the same signal of the retrained model on the same examples, same order.
        unl_test: (n_t,) signal of the unlearned model on test examples neither model trained on.
        ret_test: (n_t,) the retrained model's signal on the same test examples.

    Returns:
        ``(forget_diffs (n_f,), test_diffs (n_t,))`` float64, higher = more member-like.

    Raises:
        DataError: non-1-D or non-finite input, or paired arrays of different lengths.
    """
    uf, rf = float_vector("unl_forget", unl_forget), float_vector("ret_forget", ret_forget)
    ut, rt = float_vector("unl_test", unl_test), float_vector("ret_test", ret_test)
    if uf.shape != rf.shape:
        raise DataError(
            f"unl_forget and ret_forget must pair up example by example, got lengths "
            f"{uf.shape[0]} and {rf.shape[0]}"
        )
    if ut.shape != rt.shape:
        raise DataError(
            f"unl_test and ret_test must pair up example by example, got lengths "
            f"{ut.shape[0]} and {rt.shape[0]}"
        )
    return uf - rf, ut - rt


@dataclass(frozen=True, eq=False)
class PairedResult:
    """Outcome of :func:`paired_test`.

    Attributes:
        forget_diffs: (n_f,) read-only float64 ``s_unlearned - s_retrained`` on the forget set.
        test_diffs: (n_t,) read-only float64 differences on the held-out test set.
        auc: P(forget diff > test diff) + P(equal) / 2, in [0, 1]; 0.5 = like retraining.
        p_value: one-sided Mann-Whitney U p-value, alternative "forget diffs are larger"
            (scipy ``method="auto"``: exact for small samples without ties, else normal
            approximation with tie correction).
        u_statistic: the Mann-Whitney U of the forget sample (= auc * n_f * n_t).
        median_shift: ``median(forget_diffs) - median(test_diffs)``, in signal units.
        n_forget: n_f. n_test: n_t.
    """

    forget_diffs: np.ndarray
    test_diffs: np.ndarray
    auc: float
    p_value: float
    u_statistic: float
    median_shift: float
    n_forget: int
    n_test: int


def paired_test(
    unl_forget: np.ndarray,
    ret_forget: np.ndarray,
    unl_test: np.ndarray,
    ret_test: np.ndarray,
) -> PairedResult:
    """The paired single-reference test (see the module docstring).

    Args:
        as :func:`paired_scores`; n_f >= 1 and n_t >= 1.

    Returns:
        :class:`PairedResult`.

    Raises:
        DataError: as :func:`paired_scores`, or an empty forget or test set.

    Example::

        sig = lambda m, x, y: compute_signals(compute_logits(m, x), y).logit_confidence
        res = paired_test(sig(unlearned, xf, yf), sig(retrained, xf, yf),
                          sig(unlearned, xt, yt), sig(retrained, xt, yt))
        res.auc, res.p_value
    """
    forget_diffs, test_diffs = paired_scores(unl_forget, ret_forget, unl_test, ret_test)
    n_f, n_t = forget_diffs.shape[0], test_diffs.shape[0]
    if n_f == 0 or n_t == 0:
        raise DataError(
            f"paired_test needs at least one forget and one test example, got n_forget={n_f}, n_test={n_t}"
        )
    mw = mannwhitneyu(forget_diffs, test_diffs, alternative="greater")
    u = float(mw.statistic)
    result = PairedResult(
        forget_diffs=readonly_copy(forget_diffs, np.float64),
        test_diffs=readonly_copy(test_diffs, np.float64),
        auc=u / (n_f * n_t),
        p_value=float(mw.pvalue),
        u_statistic=u,
        median_shift=float(np.median(forget_diffs) - np.median(test_diffs)),
        n_forget=n_f,
        n_test=n_t,
    )
    logger.debug(
        "paired_test: n_f=%d n_t=%d AUC=%.4f p=%.3g shift=%.4g",
        n_f,
        n_t,
        result.auc,
        result.p_value,
        result.median_shift,
    )
    return result
