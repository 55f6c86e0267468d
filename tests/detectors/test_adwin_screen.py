"""ADWIN's cut screen: the screened kernel must equal River's exact scan bit for bit.

The kernel skips River's exact scan at a check that is not the batch's last when
``_no_cut_can_fire`` proves that no cut is significant.  These tests run the same
streams, in the same random batches, through the kernel with and without the
screen and compare every output and the whole state after every batch; the
streams include the cases where a conservative bound could go wrong: changes of
every size (checks near the threshold), huge offsets with a tiny spread (the
products cancel), heavy tails, constants, non-finite values and every setting
that changes the schedule of checks.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.adwin import MAX_LEVELS, _KernelState, _no_cut_can_fire

SETTINGS = [
    # delta, clock, max_buckets, min_window_length, grace_period, min_effect
    (0.002, 32, 5, 5, 10, 0.0),
    (0.002, 1, 5, 5, 10, 0.0),
    (0.05, 4, 3, 1, 0, 0.0),
    (0.5, 32, 5, 10, 50, 0.0),
    (0.002, 16, 5, 5, 100, 0.0),  # grace longer than the clock
    (0.002, 32, 5, 5, 10, 0.05),
    (0.002, 32, 5, 0, 10, 0.0),  # unscreened: the bound needs min_window_length >= 1
]


def _stream(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    if kind == "shifts":  # changes of every size, many checks near the threshold
        sizes = rng.choice([0.0, 0.05, 0.1, 0.2, 0.5, 2.0], size=n // 1_000 + 1)
        x = np.concatenate([rng.normal(np.cumsum(sizes)[i], 1.0, 1_000)
                            for i in range(len(sizes))])[:n]
    elif kind == "offset":  # huge mean, tiny spread: u0*n1 and u1*n0 nearly cancel
        x = 1e9 + rng.normal(0.0, 1e-3, n)
        x[n // 2:] += 2e-4
    elif kind == "heavy":
        x = rng.standard_t(1.5, n)
    elif kind == "constant":
        x = np.full(n, 3.25)
        x[n // 2:] = 3.5
    elif kind == "integers":
        x = rng.poisson(rng.choice([2.0, 2.3]), n).astype(np.float64)
    else:  # "tiny": values near the smallest normal numbers
        x = rng.normal(0.0, 1e-300, n)
    holes = rng.random(n) < 0.02
    x[holes] = rng.choice([np.nan, np.inf, -np.inf, 1e200], size=int(holes.sum()))
    return x


def _assert_same_state(a: _KernelState, b: _KernelState) -> None:
    for name in ("totals", "variances", "counts", "fstate", "istate"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("kind", ["shifts", "offset", "heavy", "constant", "integers", "tiny"])
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("seed", range(3))
def test_screened_kernel_equals_exact_scan(kind, setting, seed):
    rng = np.random.default_rng(seed)
    x = _stream(rng, kind, 12_000)
    clip = (-5.0, 5.0) if kind == "heavy" and seed == 1 else None
    screened, exact = _KernelState(setting[2]), _KernelState(setting[2])
    bounds = [0, *np.sort(rng.integers(0, x.size, 15)).tolist(), x.size]
    detections = 0
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        got = screened.run(x[lo:hi], *setting, clip=clip, screen=True)
        want = exact.run(x[lo:hi], *setting, clip=clip, screen=False)
        np.testing.assert_array_equal(got, want)
        for name in ("last_stats", "last_levels", "last_changes"):
            np.testing.assert_array_equal(getattr(screened, name), getattr(exact, name))
        _assert_same_state(screened, exact)
        detections += got.size
    if kind == "shifts" and setting[0] == 0.002:
        assert detections > 0  # the exact path ran at detecting checks


def _window(values: np.ndarray) -> tuple[_KernelState, tuple]:
    k = _KernelState(5)
    k.run(values, 0.002, 10**9, 5, 5, 10, 0.0)  # fill the window, no check
    f = k.fstate
    pow2 = 2.0 ** np.arange(MAX_LEVELS)
    scratch = (np.empty(k.totals.size + 1), np.empty(k.totals.size + 1))
    delta_prime = np.log(2.0 * np.log(f[2]) / 0.002)  # River's, at this width
    return k, (k.totals, k.counts, int(k.istate[0]), pow2, f[2], f[0], f[1], delta_prime,
               5.0, *scratch)


def test_screen_clears_a_stationary_window_and_not_a_shifted_one():
    """The screen does skip (else it saves nothing) and never clears a real change."""
    rng = np.random.default_rng(3)
    cleared = sum(_no_cut_can_fire(*_window(rng.normal(0.0, 1.0, 20_000))[1])
                  for _ in range(20))
    assert cleared >= 18  # at delta 0.002 nearly every stationary check
    shifted = np.r_[rng.normal(0.0, 1.0, 10_000), rng.normal(0.3, 1.0, 10_000)]
    assert not _no_cut_can_fire(*_window(shifted)[1])
    # just below River's threshold the bound may not clear, but it must never
    # clear a window that River's exact scan finds significant
    for shift in np.linspace(0.02, 0.1, 17):
        x = np.r_[rng.normal(0.0, 1.0, 10_000), rng.normal(shift, 1.0, 10_000)]
        k, args = _window(x)
        exact = _KernelState(5)
        exact.run(x, 0.002, 20_000, 5, 5, 10, 0.0, screen=False)  # one check, at the end
        if exact.last_stats.size:
            assert not _no_cut_can_fire(*args)
