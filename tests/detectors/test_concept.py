"""The concept-drift CUSUM of the error stream: false-alarm rate and delay as statistics."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.concept import error_cusum
from detectors.errors import DetectorError


def _null_arl(p: float, target: float, seed: int, n: int) -> float:
    rng = np.random.default_rng(1000 + seed)
    ref = (rng.random(20_000) < p).astype(float)
    det = error_cusum(ref, target, shift=0.05, seed=seed, n_values=4_000_000)
    alarms = det.update((rng.random(n) < p).astype(float))  # the same error rate: no drift
    return n / max(1, len(alarms))


@pytest.mark.parametrize(("p", "target", "n"), [(0.10, 2_000, 400_000),
                                               (0.25, 10_000, 1_500_000)])
def test_the_false_alarm_rate_is_the_calibrated_one_over_seeds(p: float, target: float,
                                                               n: int) -> None:
    # each seed draws its own reference (20,000 labelled events) and null stream; the
    # reference's rate is an estimate, which the calibration accounts for
    arls = [_null_arl(p, target, seed, n) for seed in range(5)]
    pooled = 5 * n / sum(n / a for a in arls)
    assert all(0.6 * target <= a <= 1.6 * target for a in arls), arls
    assert 0.8 * target <= pooled <= 1.25 * target, (pooled, arls)


def test_a_five_point_rise_of_the_error_rate_is_caught() -> None:
    delays = []
    for seed in range(20):
        rng = np.random.default_rng(2000 + seed)
        ref = (rng.random(20_000) < 0.10).astype(float)
        det = error_cusum(ref, 2_000, shift=0.05, seed=seed, n_values=1_000_000)
        # from the change on (the null test above covers the alarms before one)
        hits = det.update((rng.random(5_000) < 0.15).astype(float))
        delays.append(int(hits[0]) if len(hits) else 10**9)
    caught = [d for d in delays if d < 5_000]
    assert len(caught) >= 19, delays
    assert 100 < float(np.median(delays)) < 1_500, delays


def test_bad_arguments() -> None:
    with pytest.raises(DetectorError, match="at least 100"):
        error_cusum(np.zeros(10), 1000)
    with pytest.raises(DetectorError, match="shift"):
        error_cusum(np.zeros(1000), 1000, shift=0)
    det = error_cusum(np.zeros(1000), 2000, n_values=500_000)  # a reference without errors
    assert det.scale > 0 and np.isfinite(det.threshold)
