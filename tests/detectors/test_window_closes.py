"""A window test reports the close of its episode in whatever batch it happens."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.window import MissingRate


@pytest.mark.parametrize("split", [1, 7, 60, 240])
def test_a_close_is_reported_in_a_batch_without_alarms(split: int) -> None:
    """The batch in which an episode closes rarely raises an alarm too: its close must be
    reported all the same (the column's episode, and the demo's view, close on it)."""
    det = MissingRate(0.0, window=20, cadence=5, threshold=0.5)
    det.configure_episodes(0.8, 20)
    flags = np.r_[np.ones(40, dtype=bool), np.zeros(200, dtype=bool)]
    opened: list[int] = []
    closed: list[int] = []
    for start in range(0, flags.size, split):
        opened += (det.update(flags[start:start + split]) + start).tolist()
        closed += (det.close_positions + start).tolist()
    assert len(opened) == 1 and not det.drift_detected
    # the rate falls under release x threshold once the window is mostly zeros (~52),
    # and the episode closes 20 values later, at a test point (every 5 values)
    assert len(closed) == 1 and 40 < closed[0] <= 40 + 20 + 20 + 5
