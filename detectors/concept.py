"""Concept drift on the joined stream: a CUSUM of the per-prediction error against the
labelled reference's error rate, calibrated with the model's false-alarm knob.

When labels arrive, each joined pair gives an error: 1.0 for a wrong class (binary,
multiclass), or the absolute error (regression).  A change of P(y|x) with unchanged inputs
moves the error rate, which no input detector sees.  :func:`error_cusum` builds a
two-sided :class:`~detectors.cusum.CUSUM` of that error stream, standardised with the mean
and standard deviation of the reference's errors (a reference that carries its labels
inline), with the allowance ``k`` tuned to a change of ``shift`` (in error units: 0.02 =
two points of accuracy), and its threshold calibrated by simulation exactly as the input
CUSUMs are (:func:`~detectors.calibration.calibrate_cusum`): bootstrap paths from the
reference's errors, with the uncertainty of the reference's rate as an offset per path.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = (rng.random(20_000) < 0.10).astype(float)   # 10 % errors in the reference
>>> det = error_cusum(ref, target_events=2_000, shift=0.05, n_values=1_000_000)
>>> round(det.mean, 3), det.threshold > 0
(0.102, True)
"""

from __future__ import annotations

import math

import numpy as np

from detectors.calibration import calibrate_cusum
from detectors.cusum import CUSUM
from detectors.errors import DetectorError

__all__ = ["error_cusum"]


def error_cusum(ref_errors: np.ndarray, target_events: float, shift: float = 0.02,
                n_values: int = 4_000_000, seed: int = 0) -> CUSUM:
    """A calibrated CUSUM of the error stream (see the module docstring).

    Parameters
    ----------
    ref_errors : array of float
        The errors of the labelled reference (at least 100).
    target_events : float
        Expected joined pairs between false alarms (the detector's share of the model's
        ``false_alarm_events``).
    shift : float
        The change of the mean error the allowance is tuned for (``k = shift / 2``
        standard deviations of the reference's errors).
    """
    x = np.asarray(ref_errors, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 100:
        raise DetectorError(f"error_cusum: needs at least 100 reference errors, got {x.size}")
    if not shift > 0:
        raise DetectorError(f"error_cusum: shift must be > 0, got {shift}")
    mean = float(x.mean())
    scale = float(x.std())
    if scale <= 0:  # a reference without a single error (or all wrong): a posterior rate
        p = (x.sum() + 0.5) / (x.size + 1.0)
        scale = math.sqrt(p * (1 - p))
    z = (x - mean) / scale
    k = shift / (2 * scale)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(z, n)

    cal = calibrate_cusum(sample, target_events, k, n_values=n_values,
                          offset_sd=1 / math.sqrt(x.size), seed=seed)
    return CUSUM(mean=mean, scale=scale, threshold=cal.threshold, k=k, name="error")
