"""A rate test fed a run of zero flags while quiet skips its kernel and changes nothing.

``WindowTest._quiet_run`` moves the ring on in Python when the kernel provably would do
nothing else (no episode open, no flag in the full ring nor the open chunk, a zero rate
unable to open one).  Here the same sequences of runs of zero flags (of every length,
shorter and longer than a chunk, the window) and flag batches (quiet ones, bursts that
open episodes, their ends and closes) go to a rate test with the shortcut and to one
without it (every run through the kernel); every output and the exported state must be
equal after every call, for several settings and seeds, and the shortcut must have
been taken.
"""

from __future__ import annotations

import numpy as np
import pytest

from detectors.window import MissingRate, OutOfRangeRate, UnseenRate, WindowTest
from tests.detectors.test_quiet_shortcuts import _same

SETTINGS = [
    (MissingRate, {"base_rate": 0.01, "window": 500, "cadence": 50, "threshold": 0.04}),
    (UnseenRate, {"base_rate": 0.0, "window": 1000, "cadence": 100, "threshold": 0.01,
                   "min_effect": 0.005, "ref_count": 2000}),
    (OutOfRangeRate, {"base_rate": 0.2, "window": 300, "cadence": 30, "threshold": 0.3}),
    # a threshold below zero: a window without a flag opens an episode (no shortcut then)
    (MissingRate, {"base_rate": 0.0, "window": 200, "cadence": 20, "threshold": -1.0}),
]


def _ops(seed: int) -> list[tuple[str, object]]:
    rng = np.random.default_rng(seed)
    ops: list[tuple[str, object]] = []
    for _ in range(120):
        r = rng.random()
        if r < 0.6:
            ops.append(("zeros", int(rng.choice([0, 1, 7, 49, 50, 51, 99, 100, 333, 1000,
                                                  2500, 5000]))))
        elif r < 0.85:
            ops.append(("flags", rng.random(int(rng.integers(1, 400))) < 0.002))
        else:  # a burst of flags: an episode opens, later closes
            ops.append(("flags", rng.random(int(rng.integers(50, 600))) < 0.4))
    return ops


def _snapshot(det: WindowTest, hits: np.ndarray) -> list[object]:
    return [hits.tolist(), np.asarray(det.alarm_statistics).tolist(),
            np.asarray(det.close_positions).tolist(), bool(det.drift_detected),
            float(det.statistic), det.to_dict()]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("setting", range(len(SETTINGS)))
def test_quiet_runs_change_nothing(seed: int, setting: int, monkeypatch) -> None:
    cls, kw = SETTINGS[setting]
    fast, slow = cls(**kw), cls(**kw)
    for det in (fast, slow):
        det.configure_episodes(0.5, 3 * kw["cadence"])
    taken = 0
    real = WindowTest._quiet_run

    def counted(self: WindowTest, n: int) -> bool:
        nonlocal taken
        done = real(self, n)
        taken += done
        return done

    monkeypatch.setattr(WindowTest, "_quiet_run", counted)
    monkeypatch.setattr(slow, "_quiet_run", lambda n: False)
    for what, arg in _ops(seed):
        if what == "zeros":
            got = [_snapshot(d, d.update_constant(arg)) for d in (fast, slow)]
        else:
            got = [_snapshot(d, d.update(arg)) for d in (fast, slow)]
        assert _same(got[0], got[1]), (what, arg)
    if kw["threshold"] >= 0:
        assert taken >= 3
    else:
        assert taken == 0
