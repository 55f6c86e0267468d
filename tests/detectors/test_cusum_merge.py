"""Segment summaries of the CUSUM (detectors/cusum_merge.py): a fold of summaries is the
CUSUM over the concatenated segments, and pooling monitors keeps its false-alarm rate."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.bench_pooled_cusum import delay_cell, null_cell
from detectors.cusum import CUSUM, SurprisalCUSUM
from detectors.cusum_merge import fold, standardise, summarise


def event_level(det: CUSUM, parts: list[np.ndarray]) -> tuple[list[np.ndarray], list[int]]:
    """Feed ``parts`` to ``det`` in turn: its state after each, and its alarms' counts."""
    states, alarms = [], []
    for p in parts:
        alarms.append(det.update(p).size)
        states.append(det._f[:2].copy())
    return states, alarms


def path_peaks(z: np.ndarray, bounds: np.ndarray, k: float, h: float) -> list[float]:
    """The largest of the two sums (capped at 2h) in each segment, one value at a time."""
    sp = sn = 0.0
    out = []
    for s in range(bounds.size - 1):
        top = max(sp, sn) if bounds[s] == bounds[s + 1] else 0.0
        for i in range(bounds[s], bounds[s + 1]):
            sp = min(max((sp + z[i]) - k, 0.0), 2 * h)
            sn = min(max((sn - z[i]) - k, 0.0), 2 * h)
            top = max(top, sp, sn)
        out.append(top)
    return out


dyadic = st.integers(-256, 256).map(lambda i: i / 64.0)  # exact in binary: sums are exact


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(dyadic, min_size=0, max_size=300),
       cuts=st.lists(st.integers(0, 300), max_size=12),
       h=st.sampled_from([0.5, 2.0, 3.25, 8.0]),
       shift=st.sampled_from([0.0, 0.5, -0.75]),
       perm_seed=st.integers(0, 2**16))
def test_fold_equals_the_event_level_cusum_bit_for_bit(values, cuts, h, shift, perm_seed):
    """Segments cut anywhere (empty ones too), folded in a random order: after each one the
    fold's two sums equal those of a CUSUM fed the same segments in that order, bit for bit
    (values exact in binary); its peaks are the sums' largest values in the segment; its
    first alarm is in the CUSUM's first alarming segment; it never raises more alarms."""
    x = np.array(values, dtype=np.float64) + shift
    bounds = np.array(sorted({0, x.size, *[c for c in cuts if c <= x.size]}), dtype=np.int64)
    segs = [x[bounds[i]:bounds[i + 1]] for i in range(bounds.size - 1)]
    order = np.random.default_rng(perm_seed).permutation(len(segs))
    summ = summarise(standardise(x, 0.0, 1.0), bounds, 0.25, h)
    state = np.array([0.0, 0.0, 1.0, 1.0])
    peaks, alarms = fold(summ, state, h, order=order)

    det = CUSUM(mean=0.0, scale=1.0, threshold=h, k=0.25)
    ref_states, ref_alarms = event_level(det, [segs[s] for s in order])
    # the whole fold at once, and segment by segment, reach the CUSUM's state exactly
    assert state[:2].tolist() == (ref_states[-1].tolist() if segs else [0.0, 0.0])
    replay = np.array([0.0, 0.0, 1.0, 1.0])
    for i, s in enumerate(order):
        fold(summ[s:s + 1], replay, h)
        assert replay[:2].tolist() == ref_states[i].tolist()
    cat = np.concatenate([segs[s] for s in order]) if segs else np.empty(0)
    cat_bounds = np.concatenate([[0], np.cumsum([segs[s].size for s in order])]).astype(np.int64)
    assert peaks.tolist() == path_peaks(cat, cat_bounds, 0.25, h)
    first_ref = next((i for i, a in enumerate(ref_alarms) if a), None)
    first_fold = next((i for i, a in enumerate(alarms) if a), None)
    assert first_fold == first_ref
    assert alarms.sum() <= sum(ref_alarms)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(1, 3000), cuts=st.integers(1, 30))
def test_fold_agrees_to_rounding_on_real_data(seed, n, cuts):
    """Values in general (a baseline mean and scale, a clip, missing values): the fold's
    end state equals the detector's to rounding, and so do its alarms' segments here."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1.3, n)
    x[rng.random(n) < 0.02] = np.nan
    kw = dict(mean=0.1, scale=1.1, threshold=6.0, clip=(-3.3, 3.7))
    det = CUSUM(**kw)  # type: ignore[arg-type]
    bounds = np.unique(np.concatenate([[0, n], rng.integers(0, n + 1, cuts)]))
    parts = [x[bounds[i]:bounds[i + 1]] for i in range(bounds.size - 1)]
    states, alarms = event_level(det, parts)
    z_parts = [standardise(p, 0.1, 1.1, (-3.3, 3.7)) for p in parts]
    zb = np.concatenate([[0], np.cumsum([p.size for p in z_parts])]).astype(np.int64)
    summ = summarise(np.concatenate(z_parts), zb, det.allowance, 6.0)
    state = np.array([0.0, 0.0, 1.0, 1.0])
    _, fold_alarms = fold(summ, state, 6.0)
    np.testing.assert_allclose(state[:2], states[-1], rtol=1e-9, atol=1e-9)
    first = next((i for i, a in enumerate(alarms) if a), None)
    assert next((i for i, a in enumerate(fold_alarms) if a), None) == first


@settings(max_examples=60, deadline=None)
@given(values=st.lists(dyadic, min_size=1, max_size=400),
       h=st.sampled_from([0.5, 1.0, 2.0]), shift=st.sampled_from([0.0, 0.5, -0.5]))
def test_one_value_segments_give_every_alarm(values, h, shift):
    """Segments of one value cannot hold a crossing and a return to 0 together, so the fold
    re-arms exactly as the detector does: the same alarms, value by value."""
    x = np.array(values, dtype=np.float64) + shift
    hits = CUSUM(mean=0.0, scale=1.0, threshold=h, k=0.25).update(x)
    state = np.array([0.0, 0.0, 1.0, 1.0])
    _, alarms = fold(summarise(x, np.arange(x.size + 1), 0.25, h), state, h)
    assert np.flatnonzero(alarms).tolist() == hits.tolist()


def test_surprisal_cusum_folds_the_same_way():
    """The categorical CUSUM is the CUSUM of the categories' surprisal: summaries of the
    scores give its state."""
    rng = np.random.default_rng(5)
    cats, p = ["a", "b", "c", "d"], np.array([0.6, 0.2, 0.15, 0.05])
    det = SurprisalCUSUM(cats, [*p, 0.0], threshold=12.0, ref_count=10_000)
    values = np.concatenate([rng.choice(cats, 3000, p=p),
                             rng.choice(cats, 1000, p=[0.4, 0.3, 0.2, 0.1])])
    hits = det.update(values)
    codes = np.array([det._codes[v] for v in values])
    z = standardise(det.table[codes], det.mean, det.scale, det.clip)
    bounds = np.arange(0, values.size + 1, 250)
    state = np.array([0.0, 0.0, 1.0, 1.0])
    _, alarms = fold(summarise(z, bounds, det.allowance, 12.0), state, 12.0)
    np.testing.assert_allclose(state[:2], det._f[:2], rtol=1e-9, atol=1e-9)
    assert hits.size and alarms.any()
    assert np.flatnonzero(alarms)[0] == hits[0] // 250


def test_summaries_reject_bad_bounds():
    with pytest.raises(ValueError):
        summarise(np.zeros(5), np.array([0, 6]), 0.25, 4.0)
    with pytest.raises(ValueError):
        summarise(np.zeros(5), np.array([0, 3, 2, 5]), 0.25, 4.0)


def test_pooled_arl0_in_total_events_matches_one_cusum():
    """Under no drift, the fold over 2 and 4 monitors' chunks has the run length to its first
    false alarm, in events folded, of one CUSUM over every event (h 8: ARL0 about 370; 3
    seeds × 120 runs, within 15 %: the standard error is about 5 %)."""
    for monitors in (2, 4):
        r = null_cell([0, 1, 2], monitors, 100, 10, 120, 6000, 8.0)
        assert r["censored"] == 0
        assert abs(r["arl_pool"] / r["arl_one"] - 1.0) < 0.15, r
        # the fold merges re-alarms inside a chunk: never more, and nearly as many here
        assert 0.9 * r["rate_one"] <= r["rate_pool"] <= r["rate_one"] * 1.05, r


def test_pooled_delay_in_total_events_with_fine_chunks():
    """A 0.5 σ shift (h of bench_scaleout's x1): with 2 monitors publishing chunks of 10 of
    their events, merged in event time, the fold's alarm (its chunk's last event) comes
    within 1.2× the events of one CUSUM over every event, where the first of two monitors'
    own CUSUMs needs about 1.5×; one summary per batch of 100 does not help (40 seeds)."""
    seeds = list(range(40))
    fine = delay_cell(seeds, 2, 100, 10, 3000, 1500, 0.5, 32.91123310888909)
    coarse = delay_cell(seeds, 2, 100, 100, 3000, 1500, 0.5, 32.91123310888909)

    def med(xs):
        return statistics.median([math.inf if x is None else x for x in xs])
    single, per = med(fine["single"]), med(fine["per monitor"])
    assert per > 1.25 * single
    assert med(fine["stamp"]) <= 1.2 * single
    assert med(coarse["stamp"]) > 1.2 * single
    assert sum(fine["before"]) == 0
