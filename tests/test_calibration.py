"""The temperature cheat of issue #12 against U-LiRA and RMIA, and the calibration line they share.

A supplier who divides the original model's logits by a temperature ``T`` hands over a model
with the same predictions and the same knowledge of the forget set, but flatter scores. The
old U-LiRA pipeline (``ulira_scores``, then a line fitted on the standardised scores) and
plain RMIA (ratios of probabilities) lose the forget set as ``T`` grows; the calibrated forms
(``ulira_calibrated``, ``rmia_calibrated``: line on the raw signal, then standardise) on the
logit margin do not move at all.

Measured on this file's setup (an MLP trained on 400 digits of which 100 are the forget set,
8 reference MLPs trained on 240 of the other 300, 500 unseen test digits), AUC forget vs test:

=====================================  ========  ========  ========
pipeline                                 T = 1     T = 5    T = 100
=====================================  ========  ========  ========
U-LiRA calibrated, logit margin          0.6637    0.6637    0.6637
U-LiRA old (line after), logit margin    0.6570    0.5493    0.5151
RMIA calibrated, logit margin            0.6832    0.6832    0.6832
RMIA on probabilities (a = 0.3)          0.6578    0.6398    0.5406
RMIA calibrated, logit confidence        0.7041    0.6514    0.6165
U-LiRA calibrated, logit confidence      0.6817    0.6362    0.6061
U-LiRA old, logit confidence             0.6798    0.5419    0.5156
=====================================  ========  ========  ========

The last two rows show why the margin is the signal to calibrate: the logit-scaled confidence
follows the best rival logit at ``T = 1`` and the mean of all rivals at large ``T``, a
different signal that no line can map back; calibrating first still keeps most of the AUC.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from attacks.calibration import calibration_residuals, fit_line_on_nonmembers
from attacks.lira import ulira_calibrated, ulira_scores
from attacks.rmia import rmia, rmia_calibrated
from attacks.signals import compute_signals
from attacks.stats import roc_auc
from unlearn_audit.errors import ConfigError, DataError

TEMPERATURES = (1.0, 5.0, 100.0)


class _Digits:
    """The original model, its reference models and their logits on the forget and test digits."""

    def __init__(self) -> None:
        x, y = load_digits(return_X_y=True)
        self.x, self.y = x / 16.0, y
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(y))
        retain, self.forget, self.test = perm[:300], perm[300:400], perm[400:900]
        self.original = self._fit(np.r_[retain, self.forget], seed=0)
        self.references = [self._fit(rng.choice(retain, 240, replace=False), seed=1 + r) for r in range(8)]

    def _fit(self, idx: np.ndarray, seed: int) -> MLPClassifier:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-5, max_iter=400, random_state=seed)
            return model.fit(self.x[idx], self.y[idx])

    def logits(self, model: MLPClassifier, idx: np.ndarray) -> np.ndarray:
        hidden = np.maximum(self.x[idx] @ model.coefs_[0] + model.intercepts_[0], 0.0)
        return hidden @ model.coefs_[1] + model.intercepts_[1]

    def signal(
        self, name: str, model: MLPClassifier, idx: np.ndarray, temperature: float = 1.0
    ) -> np.ndarray:
        return getattr(compute_signals(self.logits(model, idx) / temperature, self.y[idx]), name)

    def audit_inputs(self, name: str, temperature: float) -> tuple[np.ndarray, ...]:
        """``(target_forget, ref_forget, target_test, ref_test)`` with the original at ``temperature``."""
        refs = {
            role: np.stack([self.signal(name, m, idx) for m in self.references], axis=1)
            for role, idx in (("forget", self.forget), ("test", self.test))
        }
        return (
            self.signal(name, self.original, self.forget, temperature),
            refs["forget"],
            self.signal(name, self.original, self.test, temperature),
            refs["test"],
        )


@pytest.fixture(scope="module")
def digits() -> _Digits:
    return _Digits()


def _old_ulira_auc(tf: np.ndarray, rf: np.ndarray, tt: np.ndarray, rt: np.ndarray) -> float:
    f, t = ulira_scores(tf, rf, tt, rt)
    return roc_auc(*calibration_residuals(f, rf.mean(axis=1), t, rt.mean(axis=1)))


def _plain_rmia_auc(digits: _Digits, temperature: float) -> float:
    """RMIA on probabilities, offline, population = first half of the test set."""
    tf, rf, tt, rt = digits.audit_inputs("confidence", temperature)
    half = tt.shape[0] // 2
    population = (tt[:half], rt[:half])
    return roc_auc(rmia(tf, rf, None, *population), rmia(tt[half:], rt[half:], None, *population))


def test_temperature_cannot_move_calibrated_ulira_or_rmia_on_the_logit_margin(digits: _Digits) -> None:
    ulira = [roc_auc(*ulira_calibrated(*digits.audit_inputs("logit_margin", t))) for t in TEMPERATURES]
    rmia_aucs = [roc_auc(*rmia_calibrated(*digits.audit_inputs("logit_margin", t))) for t in TEMPERATURES]
    assert ulira[0] > 0.62 and rmia_aucs[0] > 0.62, (ulira, rmia_aucs)  # the original is recognised
    assert max(ulira) - min(ulira) <= 0.01, ulira
    assert max(rmia_aucs) - min(rmia_aucs) <= 0.01, rmia_aucs
    assert rmia_calibrated(*digits.audit_inputs("logit_margin", 100.0), gamma=2.0)[0].mean() > 0.4


def test_the_temperature_cheat_is_real_for_the_old_pipelines(digits: _Digits) -> None:
    old = [_old_ulira_auc(*digits.audit_inputs("logit_margin", t)) for t in TEMPERATURES]
    plain = [_plain_rmia_auc(digits, t) for t in TEMPERATURES]
    assert old[0] > 0.62 and old[0] - old[-1] > 0.1, old
    assert plain[0] > 0.62 and plain[0] - plain[-1] > 0.1, plain


def test_calibrating_first_keeps_most_of_the_logit_confidence_signal(digits: _Digits) -> None:
    hot = digits.audit_inputs("logit_confidence", 100.0)
    assert roc_auc(*ulira_calibrated(*hot)) > _old_ulira_auc(*hot) + 0.06


# ----------------------------------------------------------------------------- the line and the scores


def test_line_on_nonmembers_and_its_flat_fallback() -> None:
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    line = fit_line_on_nonmembers(1.0 + 2.0 * ref, ref)
    assert line.intercept == pytest.approx(1.0) and line.slope == pytest.approx(2.0)
    flat = fit_line_on_nonmembers(np.array([1.0, 2.0, 6.0]), np.full(3, 4.0))
    assert (flat.intercept, flat.slope) == (3.0, 0.0)
    f_res, t_res = calibration_residuals(np.array([10.0]), np.array([1.0]), 1.0 + 2.0 * ref, ref)
    np.testing.assert_allclose(f_res, [7.0])
    np.testing.assert_allclose(t_res, 0.0, atol=1e-12)


def test_ulira_calibrated_is_the_residual_over_the_reference_spread() -> None:
    rng = np.random.default_rng(1)
    rf, rt = rng.normal(0, 1, (20, 4)), rng.normal(0, 1, (30, 4))
    tf, tt = rng.normal(1, 1, 20), 0.5 + 2.0 * rt.mean(axis=1) + rng.normal(0, 0.1, 30)
    f, t = ulira_calibrated(tf, rf, tt, rt)
    line = fit_line_on_nonmembers(tt, rt.mean(axis=1))
    np.testing.assert_allclose(f, (tf - line.predict(rf.mean(axis=1))) / rf.std(axis=1, ddof=1))
    np.testing.assert_allclose(t, (tt - line.predict(rt.mean(axis=1))) / rt.std(axis=1, ddof=1))
    with pytest.raises(DataError, match="same reference models"):
        ulira_calibrated(tf, rf, tt, rt[:, :3])
    with pytest.raises(ConfigError, match="at least 2"):
        ulira_calibrated(tf, rf[:, :1], tt, rt[:, :1])


def test_rmia_calibrated_scores_forget_and_test_by_one_function() -> None:
    rng = np.random.default_rng(2)
    rf, rt = rng.normal(0, 1, (15, 3)), rng.normal(0, 1, (40, 3))
    tt = rt.mean(axis=1) + rng.normal(0, 0.5, 40)
    # A forget row identical to a test row gets the same score: a test row never beats itself.
    tf, rf = np.r_[tt[:5], rng.normal(2, 1, 10)], np.r_[rt[:5], rf[5:]]
    f, t = rmia_calibrated(tf, rf, tt, rt)
    np.testing.assert_array_equal(f[:5], t[:5])
    assert t.min() == 0.0 and t.max() == (len(tt) - 1) / len(tt)  # ranks among the other test rows
    assert roc_auc(f[5:], t) > 0.8  # forget rows two reference spreads above the line
    strict = rmia_calibrated(tf, rf, tt, rt, gamma=3.0)
    assert np.all(strict[0] <= f) and np.all(strict[1] <= t)
    for gamma in (0.5, float("nan")):
        with pytest.raises(ConfigError, match="gamma"):
            rmia_calibrated(tf, rf, tt, rt, gamma=gamma)
    with pytest.raises(DataError, match="at least one population point"):
        rmia_calibrated(tf, rf, tt[:0], rt[:0])
