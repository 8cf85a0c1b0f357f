"""The calibration line: how much of a model's signal a difference in calibration explains.

Two models that know exactly the same things can still differ in calibration: a temperature,
for instance, divides every logit and so scales the logit-scaled confidence of every example
(and flips its sign's effect for wrongly labelled ones). Comparing such a model with
reference models example by example then measures the calibration gap, not membership. A
line ``signal ~ a + b * reference`` fitted on NON-MEMBERS only (examples neither the audited
model nor any reference model trained on) captures that gap, and the residual of every
example from the line is what is left to explain by membership. No member enters the fit, so
memorisation cannot be fitted away.

The line must be fitted on the RAW signal, before any per-example standardisation: a
temperature is (nearly) a common factor of the raw signal, which the line absorbs, but after
each example is divided by its own reference spread it no longer is, and the fit then removes
membership along with calibration (issue #12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Line", "calibration_residuals", "fit_line_on_nonmembers"]


@dataclass(frozen=True)
class Line:
    """``signal ~ intercept + slope * reference``."""

    intercept: float
    slope: float

    def predict(self, reference: np.ndarray) -> np.ndarray:
        """The signal a non-member with this reference value is expected to show."""
        return self.intercept + self.slope * reference


def fit_line_on_nonmembers(signal: np.ndarray, reference: np.ndarray) -> Line:
    """Least-squares line of the audited model's ``signal`` on the ``reference`` value, non-members only.

    Args:
        signal: (m,) the audited model's signal on m non-members.
        reference: (m,) the reference value of the same examples (e.g. the mean signal of
            the reference models, or the retrained model's signal).

    Returns:
        The fitted line; when ``reference`` takes a single value no slope can be fitted, and
        the line is flat at the mean of ``signal``.
    """
    if np.ptp(reference) > 0:
        slope, intercept = np.polyfit(reference, signal, 1)
    else:
        slope, intercept = 0.0, float(np.mean(signal))
    return Line(intercept=intercept, slope=slope)


def calibration_residuals(
    forget_score: np.ndarray, forget_ref: np.ndarray, test_score: np.ndarray, test_ref: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Forget and test scores minus the line fitted on the test (non-member) examples alone."""
    line = fit_line_on_nonmembers(test_score, test_ref)
    return forget_score - line.predict(forget_ref), test_score - line.predict(test_ref)
