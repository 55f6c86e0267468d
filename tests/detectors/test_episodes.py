"""Alarms are episodes: one per drift, latched while the evidence lasts, closed with
hysteresis, the same however the stream is batched."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detectors.adwin import ADWIN, adwin_detections
from detectors.base import Detector
from detectors.cusum import CUSUM
from detectors.model import ColumnSpec, DetectionSettings, ModelBaseline
from detectors.profile import NumericProfile
from detectors.window import KSWindow


def split_run(det, x: np.ndarray, rng: np.random.Generator | None) -> tuple[list, list]:
    """Opens and closes of ``det`` over ``x`` fed whole (rng None) or in random batches."""
    opens, closes, start = [], [], 0
    while start < x.size:
        n = x.size if rng is None else int(rng.integers(0, 400))
        chunk = x[start:start + n]
        opens.extend((det.update(chunk) + start).tolist())
        closes.extend((det.close_positions + start).tolist())
        start += chunk.size
    return opens, closes


def shifting(rng: np.random.Generator, n: int = 12_000) -> np.ndarray:
    """Normal values whose mean moves a few times, with missing and invalid values."""
    x = rng.normal(size=n)
    for lo in sorted(rng.integers(0, n, 4).tolist()):
        x[lo:lo + int(rng.integers(200, 2000))] += float(rng.choice([-1.5, 1.0, 2.0]))
    x[rng.choice(n, 100, replace=False)] = rng.choice([np.nan, np.inf, 1e300], 100)
    return x


def reference_episodes(x: np.ndarray, detections: list[int], release: int) -> tuple[list, list]:
    """Detections grouped: a new episode when ``release`` valid values passed since the last
    detection; it closes on the value where that count is reached."""
    valid = np.isfinite(x) & (np.abs(x) <= 1e100)
    cum = np.cumsum(valid)
    opens, closes, last = [], [], None
    for p in detections:
        if last is not None and cum[p] - valid[p] - cum[last] >= release:
            closes.append(int(np.searchsorted(cum, cum[last] + release)))
            last = None
        if last is None:
            opens.append(p)
        last = p
    if last is not None and cum[-1] - cum[last] >= release:
        closes.append(int(np.searchsorted(cum, cum[last] + release)))
    return opens, closes


@pytest.mark.parametrize("seed", range(6))
def test_adwin_groups_its_detections_into_episodes_under_any_batching(seed):
    rng = np.random.default_rng(seed)
    x = shifting(rng)
    release = int(rng.choice([700, 1500, 3000]))
    raw = adwin_detections(x, 0.05, clock=1).tolist()
    want = reference_episodes(x, raw, release)
    assert len(raw) > len(want[0]) > 0, "the stream should re-detect within an episode"
    whole = ADWIN(delta=0.05, clock=1, hold=release)
    assert split_run(whole, x, None) == want
    assert whole.n_alarms == len(want[0]) and whole.n_detections == len(raw)
    batched = ADWIN(delta=0.05, clock=1, hold=release)
    assert split_run(batched, x, rng) == want
    assert batched.drift_detected == whole.drift_detected


@pytest.mark.parametrize("seed", range(6))
def test_cusum_episodes_do_not_depend_on_batching(seed):
    rng = np.random.default_rng(seed)
    x = shifting(rng)
    whole = CUSUM(0.0, 1.0, 6.0, hold=int(rng.choice([1, 100, 1000])))
    want = split_run(whole, x, None)
    assert want[0]
    batched = CUSUM(0.0, 1.0, 6.0, hold=whole.hold)
    assert split_run(batched, x, rng) == want
    assert whole.n_alarms == len(want[0])
    assert len(want[0]) - len(want[1]) in (0, 1)  # every episode but the last closed


def ks_window(release: float, release_values: int) -> KSWindow:
    prof = NumericProfile.from_values(np.random.default_rng(99).normal(size=20_000), bins=16)
    ks = KSWindow(prof.bin_edges, prof.bin_probabilities, 500, 25, threshold=0.1)
    ks.configure_episodes(release, release_values)
    return ks


@pytest.mark.parametrize("seed", range(6))
def test_window_test_episodes_do_not_depend_on_batching(seed):
    rng = np.random.default_rng(seed)
    x = shifting(rng)
    x = x[np.isfinite(x) & (np.abs(x) < 1e100)]
    want = split_run(ks_window(0.8, 500), x, None)
    assert want[0]
    assert split_run(ks_window(0.8, 500), x, rng) == want


def test_a_statistic_hovering_around_the_threshold_is_one_episode():
    """A drift that comes and goes in short bursts: the KS statistic crosses its threshold
    again and again.  Every crossing alarms without hysteresis; with it, one episode."""
    rng = np.random.default_rng(3)
    clean = rng.normal(size=3_000)
    bursts = np.concatenate([rng.normal(0.7 if i % 2 else 0.0, 1.0, 150) for i in range(40)])
    x = np.concatenate([clean, bursts, rng.normal(size=3_000)])
    crossings = ks_window(1.0, 25)
    raw = split_run(crossings, x, None)[0]
    episodes = ks_window(0.8, 500)
    opens, closes = split_run(episodes, x, None)
    assert len(raw) >= 5
    assert len(opens) == 1 and len(closes) == 1
    assert 3_000 <= opens[0] < 3_600 and closes[0] > 3_000 + bursts.size  # closes after
    assert not episodes.drift_detected and episodes.episode_peak > 0.1


def test_a_persistent_drift_is_one_alarm_per_detector_and_closes_after_it_ends():
    rng = np.random.default_rng(5)
    spec = ColumnSpec("x", "numeric", detectors=("ks", "adwin", "cusum"))
    settings = DetectionSettings(false_alarm_events=1_000_000, window=500, cadence=25,
                                 calibration_values=400_000)
    base = ModelBaseline.build("m", {"x": rng.normal(size=10_000)}, [spec], settings)
    mon = base.monitor([spec], settings)
    col = mon.columns["x"]
    opened: list[tuple[str, int]] = []
    closed: list[tuple[str, int]] = []
    stream = np.concatenate([rng.normal(size=5_000), rng.normal(1.0, 1.0, 20_000),
                             rng.normal(size=10_000)])
    for start in range(0, stream.size, 1_000):
        alarms = mon.update({"x": stream[start:start + 1_000]})
        opened += [(a.detector, start + a.position) for a in alarms]
        closed += [(a.detector, start + a.position) for a in mon.closes]
        if start == 20_000:  # well into the drift: every detector that caught it holds
            assert col.drift_detected
    # ADWIN detects the change and, when the drift ends, the change back: that second
    # episode falls inside the column's episode, which the others hold open
    kinds = [k for k, i in opened if i < 25_000]
    assert sorted(kinds) == sorted(set(kinds)) and {"ks", "cusum", "adwin"} <= set(kinds)
    assert all(5_000 <= i < 6_000 for k, i in opened if i < 25_000)
    assert [k for k, i in opened if i >= 25_000] in ([], ["adwin"])
    assert sorted(k for k, _ in closed) == sorted(k for k, _ in opened)
    assert all(i > 25_000 for k, i in closed if k != "adwin")
    column_close = max(i for _, i in closed)
    assert max(i for _, i in opened) < column_close  # one column episode, 5,030 to the close
    assert not col.drift_detected
    assert {k: d.n_alarms for k, d in col.detectors.items() if d.n_alarms} == \
        {k: sum(1 for j, _ in opened if j == k) for k in
         {k for k, _ in opened}}


# -- a shift that holds is one episode, also for the change detectors -----------------
def configured(det, release: float, release_values: int):
    det.configure_episodes(release, release_values)
    return det


@pytest.mark.parametrize("seed", range(6))
def test_a_shift_below_the_allowance_is_one_cusum_episode(seed):
    """A 0.18σ shift (k = 0.25σ) crosses h = 16 every thousand values or so, and its sums
    return to 0 in between for longer than the release stretch.  The moving average stays
    above release × k = 0.125σ: one episode, closed once the shift has ended."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=2_000), rng.normal(0.18, 1.0, 30_000),
                        rng.normal(size=10_000)])
    crossings = split_run(CUSUM(0.0, 1.0, 16.0), x, None)[0]
    assert len(crossings) >= 10
    at_k = split_run(configured(CUSUM(0.0, 1.0, 16.0), 1.0, 1_000), x, None)[0]
    opens, closes = split_run(configured(CUSUM(0.0, 1.0, 16.0), 0.5, 1_000), x, None)
    # (h = 16 false-alarms about every 40,000 values: the clean tail may open one more)
    assert sum(p < 32_000 for p in opens) == 1 and 2_000 <= opens[0]
    assert 32_000 < closes[0] < 32_000 + 4_000
    assert len(at_k) >= len(opens)
    # batching and a restore in the middle of the episode change nothing
    det = configured(CUSUM(0.0, 1.0, 16.0), 0.5, 1_000)
    first = split_run(det, x[:20_000], rng)
    again = Detector.from_dict(json.loads(json.dumps(det.to_dict())))
    rest = split_run(again, x[20_000:], rng)
    assert (first[0] + [p + 20_000 for p in rest[0]], first[1] + [p + 20_000 for p in rest[1]]
            ) == (opens, closes)


def test_cusum_false_episodes_close_soon_after_their_crossing():
    """On clean data (h = 10: a false crossing every ~2,000 values, as at a budget of
    2,000 with a release stretch of 100) the moving average's release level, floored at
    its 99th percentile, hardly merges false crossings: every episode closes after about
    the release stretch, and there are nearly as many as crossings."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=400_000)
    crossings = split_run(CUSUM(0.0, 1.0, 10.0), x, None)[0]
    opens, closes = split_run(configured(CUSUM(0.0, 1.0, 10.0), 0.5, 100), x, None)
    assert len(crossings) > 100 and len(opens) >= 0.85 * len(crossings)
    assert len(closes) >= len(opens) - 1
    lengths = np.array(closes[:len(opens)]) - np.array(opens[:len(closes)])
    assert np.median(lengths) < 2 * 100


@pytest.mark.parametrize("seed", range(6))
def test_a_ramp_is_one_adwin_episode_closed_when_the_level_returns(seed):
    """Each step of a ramp is a new change to ADWIN (it starts afresh after a detection),
    so it detects the ramp several times; the episode holds while the mean since the last
    detection stays away from the level before the first, and closes once it is back."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=3_000), rng.normal(size=6_000)
                        + np.linspace(0.0, 2.0, 6_000), rng.normal(2.0, 1.0, 6_000),
                        rng.normal(size=8_000)])
    raw = adwin_detections(x, 0.002)
    assert raw.size >= 3
    opens, closes = split_run(configured(ADWIN(), 0.5, 500), x, None)
    assert len(opens) == 1 and 3_000 <= opens[0] < 9_000
    assert len(closes) == 1 and 15_000 < closes[0] < 15_000 + 3_000
    det = configured(ADWIN(), 0.5, 500)
    first = split_run(det, x[:7_000], rng)
    again = Detector.from_dict(json.loads(json.dumps(det.to_dict())))
    assert again.drift_detected == det.drift_detected
    rest = split_run(again, x[7_000:], rng)
    assert (first[0] + [p + 7_000 for p in rest[0]], first[1] + [p + 7_000 for p in rest[1]]
            ) == (opens, closes)


def test_adwin_false_episodes_close():
    rng = np.random.default_rng(4)
    x = rng.normal(size=300_000)
    det = configured(ADWIN(delta=0.5), 0.5, 300)
    opens, closes = split_run(det, x, None)
    assert len(opens) >= 10 and len(closes) >= len(opens) - 1
    lengths = np.array(closes[:len(opens)]) - np.array(opens[:len(closes)])
    assert np.median(lengths) < 3 * 300
