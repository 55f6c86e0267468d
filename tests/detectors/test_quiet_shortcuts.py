"""The hot path's shortcuts for a quiet batch change nothing.

ADWIN with episodes skips the episode kernel when a batch has no detection and no episode
is open, and the alarm hold skips its count of valid values while no alarm was ever
raised; the completeness check and the column monitor count flags with
``np.count_nonzero``.  Here the same streams (shifts, NaN, ±inf, huge values, several
seeds, batches of random sizes) go through the detectors with the shortcuts and through
a copy of the code before them; every output and the exported state must be equal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors import adwin as adwin_mod
from detectors.adwin import ADWIN, EpisodeGrouper
from detectors.base import HeldAlarm
from detectors.column import ColumnMonitor
from detectors.cusum import CUSUM
from detectors.profile import NumericProfile


def _grouper_run_before(self, values, positions, stats, levels, changes, release, hold, clip):
    """EpisodeGrouper.run as it was: the kernel on every batch."""
    lo, hi = clip if clip is not None else (-np.inf, np.inf)
    out_open = np.empty(positions.size, dtype=np.int64)
    out_stat = np.empty(positions.size, dtype=np.float64)
    out_close = np.empty(positions.size + 1, dtype=np.int64)
    counts = np.zeros(2, dtype=np.int64)
    adwin_mod._episode_kernel(values, float(lo), float(hi), positions, stats, levels,
                              changes, float(release), max(int(hold), 1), self.fstate,
                              self.istate, out_open, out_stat, out_close, counts)
    no, nc = int(counts[0]), int(counts[1])
    self.opened += no
    return out_open[:no].copy(), out_stat[:no].copy(), out_close[:nc].copy()


def _track_hold_before(self, arr, positions, stats):
    """HeldAlarm._track_hold as it was: the valid values counted on every batch."""
    if not self.hold:
        return
    valid = np.isfinite(arr) & (np.abs(arr) <= 1e100)
    after = int(np.count_nonzero(valid[positions[-1] + 1:])) if positions.size else 0
    self._advance_hold(after, int(np.count_nonzero(valid)), stats)


def _stream(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0.0, 1.0, 3000), rng.normal(1.5, 1.0, 1500),
             rng.normal(0.0, 1.0, 2500), rng.normal(0.0, 3.0, 1500),
             rng.normal(-1.0, 1.0, 1500)]
    x = np.concatenate(parts)
    bad = rng.random(x.size)
    x[bad < 0.01] = np.nan
    x[(bad >= 0.01) & (bad < 0.012)] = np.inf
    x[(bad >= 0.012) & (bad < 0.013)] = 1e300
    return x


def _batches(x: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1000)
    cuts = np.cumsum(rng.integers(1, 120, size=x.size))
    cuts = cuts[cuts < x.size]
    return np.split(x, cuts)


def _feed(det, batches) -> list[tuple[list[int], list[float], list[int], bool, float]]:
    out = []
    for b in batches:
        hits = det.update(b)
        out.append((hits.tolist(), np.asarray(det.alarm_statistics).tolist(),
                    np.asarray(getattr(det, "close_positions", [])).tolist(),
                    bool(det.drift_detected), float(det.statistic)))
    return out


def _detectors():
    a = ADWIN(delta=0.002, clip=(-6.0, 6.0), name="x")
    a.configure_episodes(0.5, 300)
    c = CUSUM(0.0, 1.0, threshold=8.0, clip=(-6.0, 6.0), hold=300, name="x")
    c.configure_episodes(0.5, 300)
    return [a, c]


def _same(a, b) -> bool:
    """Equal, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_adwin_and_cusum_shortcuts_change_nothing(seed: int, monkeypatch) -> None:
    x = _stream(seed)
    batches = _batches(x, seed)
    fast = [_feed(d, batches) + [d.to_dict()] for d in _detectors()]
    with monkeypatch.context() as m:
        m.setattr(EpisodeGrouper, "run", _grouper_run_before)
        m.setattr(HeldAlarm, "_track_hold", _track_hold_before)
        slow = [_feed(d, batches) + [d.to_dict()] for d in _detectors()]
    # the stream does raise alarms and close episodes (else the shortcut is all it sees)
    assert sum(len(step[0]) for step in fast[0][:-1]) >= 2
    assert sum(len(step[2]) for step in fast[0][:-1]) >= 1
    for f, s in zip(fast, slow, strict=True):
        assert _same(f, s)


@pytest.mark.parametrize("seed", [5, 6])
def test_column_monitor_with_invalid_masks_unchanged(seed: int) -> None:
    """The invalid mask counted with count_nonzero: a mask with and without flags."""
    rng = np.random.default_rng(seed)
    prof = NumericProfile.from_values(rng.normal(size=5000), bins=16)

    def monitor() -> ColumnMonitor:
        from detectors.catalogue import make_detector
        dets = {k: make_detector(k, prof, 200, 20, threshold=t)
                for k, t in (("ks", 0.2), ("missing", 0.05), ("out_of_range", 0.05))}
        return ColumnMonitor("x", prof, dets, window=200, cadence=20)

    a, b = monitor(), monitor()
    for i in range(30):
        v = rng.normal(0.5 if i > 15 else 0.0, 1.0, int(rng.integers(1, 300)))
        mask = rng.random(v.size) < (0.05 if i % 3 == 0 else 0.0)
        ra = a.update(v, mask)
        rb = b.update(v.copy(), None if not mask.any() else mask)
        assert ra == rb and a.closes == b.closes
    assert _same(a.to_dict(), b.to_dict())
