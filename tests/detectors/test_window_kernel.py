"""The compiled window-test engine against the numpy engine it replaced.

``RefEngine`` below is the previous ``WindowTest.scan`` / ``update_bins`` (one
``bincount`` per batch, a cumulative sum over the chunk ring, a vectorised
statistic per test point), kept verbatim as the reference; ``RefColumnMonitor``
keeps the previous ``ColumnMonitor`` hot path.  The engine must give the same
test points, the same statistics (bit for bit: KS and rates are exact rational
arithmetic, and the G statistic is summed in numpy's order), the same alarms and
the same serialised state, for any batch split, and must restore from states
written by the reference (the old format: the ring as a chronological list of
chunk histograms).  The reference gained one thing since: the multi-scale chi2
test (the largest G over the newest ``scales`` values), computed here from the
same cumulative sums.
"""

from __future__ import annotations

import json
import math
from itertools import repeat
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import EMPTY_POSITIONS, Detector, as_float_batch, registered_detectors
from detectors.calibration import calibrate_window_test
from detectors.catalogue import make_detector, reference_counts
from detectors.column import Alarm, ColumnMonitor
from detectors.errors import DetectorError
from detectors.profile import CategoricalProfile, NumericProfile
from detectors.window import (
    ChiSquareWindow,
    KSWindow,
    MissingRate,
    OutOfRangeRate,
    RateWindow,
    UnseenRate,
    WindowTest,
)


def _numpy_log_is_libm_log() -> bool:
    """Whether numpy's float64 ``log`` is the C library's here (no SIMD variant of its own)."""
    x = np.random.default_rng(0).uniform(1e-4, 1.0, 20_000)
    return bool(np.array_equal(np.log(x), np.array([math.log(v) for v in x])))


#: the kernel's G statistic is bit-identical to numpy's where both use the C library's log
EXACT_LOG = _numpy_log_is_libm_log()
RATE_KINDS = ("missing", "out_of_range", "unseen", "invalid_rate")
ALL_KINDS = ("ks", "chi2", *RATE_KINDS)
CATS = np.array(list("abcdefghij"), dtype=object)


# -- the reference: the numpy engine, as it was -------------------------------------
def _significant(k: int, n: int, p0: float) -> bool:
    """Chernoff's bound on P(Bin(n, p0) >= k) is below 0.1 (the kernel's rate hold)."""
    q = k / n
    if q <= p0:
        return False
    kl = q * math.log(q / p0) + ((1 - q) * math.log((1 - q) / (1 - p0)) if q < 1 else 0.0)
    return n * kl > math.log(10.0)


def _ks_significant(hist: np.ndarray, n: int, ref_cdf: np.ndarray, m: int) -> bool:
    """The DKW bound on the KS distance of ``n`` values (``hist``) to a reference of ``m``
    values is below 0.1 (the kernel's KS hold)."""
    d = float(np.abs(np.cumsum(hist[:-1]) / n - ref_cdf).max()) if ref_cdf.size else 0.0
    return 2.0 * (n * m / (n + m)) * d * d > math.log(20.0)


class RefEngine:
    """Previous engine of :class:`WindowTest`, driven from an (old-format) state dict."""

    def __init__(self, kind: str, state: dict[str, Any], restored: bool = True) -> None:
        self.kind = kind
        self.settings = {k: v for k, v in state.items()
                         if k not in ("ring", "partial", "partial_n", "stat", "effect",
                                      "active", "n_alarms", "quiet", "peak", "hold", "hold_ring",
                                      "ks_hold")}
        # episodes (states older than them: one alarm per up-crossing)
        self.release = float(state.get("release", 1.0))
        self.release_values = int(state.get("release_values", state["cadence"]))
        self.settings.update(release=self.release, release_values=self.release_values)
        self._quiet = int(state.get("quiet", 0))
        # the flags of the newest chunks since the episode opened (rate tests), oldest first,
        # at most 4 windows of them, and the number of chunks since it opened
        self._fresh: list[int] = []
        self._since = 0
        if "hold" in state:
            n, _, pos = state["hold"]
            ring = state["hold_ring"]
            self._fresh = [ring[(pos - n + i) % len(ring)] for i in range(n)]
            self._since = n if n < len(ring) else len(ring) + pos
        # the histograms of the newest chunks since the episode opened (KS tests with a known
        # reference size), oldest first, at most 2 windows of them
        self._fresh_h = [np.asarray(h, dtype=np.int64) for h in state.get("ks_hold", [])]
        self._peak = float(state.get("peak", state["stat"]))
        if kind in ("ks", "chi2"):
            p = np.asarray(state["probs"], dtype=np.float64)
        else:
            b = float(state["base_rate"])
            p = np.asarray([1.0 - b, b] if b < 1 else [0, 1], dtype=np.float64)
        # restoring normalises the probabilities again, as __init__ does; a live detector's
        # are used as they are
        self.probs = p / p.sum() if restored or "probs" not in state else p
        if "probs" in self.settings:
            self.settings["probs"] = self.probs.tolist()
        self.window, self.cadence = int(state["window"]), int(state["cadence"])
        thr = state["threshold"]
        self.threshold = math.inf if thr is None else float(thr)
        self.min_effect = float(state["min_effect"])
        self.ref_count = int(state["ref_count"])
        self.base_rate = float(state.get("base_rate", 0.0))
        self.n_bins = self.probs.size
        self._chunks = self.window // self.cadence
        self.scales = [int(v) // self.cadence for v in state.get("scales", [self.window])]
        # _prepare_reference
        self._ref_cdf = np.cumsum(self.probs)[:-1]
        m = max(self.ref_count, 1)
        counts = self.probs * m + 0.5
        self._log_p = np.log(counts / counts.sum())
        # running state
        self._ring = np.asarray(state["ring"], dtype=np.int64).reshape(-1, self.n_bins)
        self._partial = np.asarray(state["partial"], dtype=np.int64)
        self._partial_n = int(state["partial_n"])
        self._stat = float(state["stat"])
        self._effect = float(state["effect"])
        self._active = bool(state["active"])
        self._n_alarms = int(state["n_alarms"])
        self.alarm_statistics = np.empty(0)

    def _statistics(self, hists: np.ndarray, w: float | None = None,
                    ) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "ks":
            if self._ref_cdf.size == 0:
                z = np.zeros(hists.shape[0])
                return z, z
            cdf = np.cumsum(hists[:, :-1], axis=1) / self.window
            d = np.abs(cdf - self._ref_cdf).max(axis=1)
            return d, d
        if self.kind == "chi2":
            w = float(self.window) if w is None else w
            obs = hists.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                terms = np.where(obs > 0, obs * (np.log(obs / w) - self._log_p), 0.0)
            g = np.maximum(2.0 * terms.sum(axis=1), 0.0)
            tv = 0.5 * np.abs(obs / w - self.probs).sum(axis=1)
            return g, tv
        rate = hists[:, 1] / float(self.window)
        return rate, rate - self.base_rate

    def update_bins(self, bins: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        stats_, effects, test_idx = self.scan(bins)
        if stats_.size == 0:
            self.alarm_statistics = np.empty(0)
            return EMPTY_POSITIONS
        raised = np.zeros(stats_.size, dtype=bool)
        rate = self.kind not in ("ks", "chi2")
        ks_hold = self.kind == "ks" and self.ref_count > 0
        p0 = min(max(self.base_rate, 0.5 / max(self.ref_count, 1)), 1.0)
        for j, (val, eff) in enumerate(zip(stats_.tolist(), effects.tolist(), strict=True)):
            if not self._active:  # an episode opens
                if val > self.threshold and eff >= self.min_effect:
                    raised[j], self._active, self._quiet, self._peak = True, True, 0, val
                    self._fresh, self._since, self._fresh_h = [], 0, []
                continue
            if rate:  # fresh chunks since the episode opened, at most 4 windows of them
                self._fresh = [*self._fresh, int(self._chunk_flags[j])][-4 * self._chunks:]
                self._since += 1
            if ks_hold:  # fresh chunks since the episode opened, at most 2 windows of them
                self._fresh_h = [*self._fresh_h, self._chunk_hists[j]][-2 * self._chunks:]
            if (val > self.release * self.threshold
                    and eff >= self.min_effect * (self.release * self.threshold / self.threshold
                                                  if self.threshold > 0 else 0.0)):
                self._quiet, self._peak = 0, max(self._peak, val)  # the evidence persists
            elif rate and _significant(sum(self._fresh), len(self._fresh) * self.cadence, p0):
                self._quiet = 0  # the flags since it opened are still above the baseline's
            elif ks_hold and _ks_significant(np.sum(self._fresh_h, axis=0),
                                             len(self._fresh_h) * self.cadence, self._ref_cdf,
                                             self.ref_count):
                self._quiet = 0  # the values since it opened still differ from the reference
            else:
                self._quiet += self.cadence
                if self._quiet >= self.release_values:  # quiet long enough: closed
                    self._active, self._quiet = False, 0
        self._stat = float(stats_[-1])
        self._effect = float(effects[-1])
        hits = test_idx[raised]
        self._n_alarms += int(hits.size)
        self.alarm_statistics = stats_[raised]
        if positions is not None:
            hits = positions[hits]
        return hits.astype(np.int64, copy=False)

    def scan(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        k, c, nch = self.n_bins, self.cadence, self._chunks
        n = int(bins.size)
        off = self._partial_n
        total = off + n
        m = total // c
        if m == 0:
            if n:
                self._partial += np.bincount(bins, minlength=k)
            self._partial_n = total
            empty = np.empty(0)
            return empty, empty, EMPTY_POSITIONS
        ids = (np.arange(n, dtype=np.int64) + off) // c
        hist = np.bincount(ids * k + bins, minlength=(m + 1) * k).reshape(m + 1, k)
        hist[0] += self._partial
        self._partial = hist[m].copy()
        self._partial_n = total - m * c
        ring_n = self._ring.shape[0]
        allc = np.concatenate([self._ring, hist[:m]]) if ring_n else hist[:m]
        csum = np.zeros((ring_n + m + 1, k), dtype=np.int64)
        np.cumsum(allc, axis=0, out=csum[1:])
        ends = np.arange(ring_n + 1, ring_n + m + 1)
        full = ends >= nch
        self._ring = allc[-nch:].copy()
        ends = ends[full]
        test_idx = (np.flatnonzero(full) + 1) * c - off - 1
        self._chunk_flags = hist[:m][full, 1] if k == 2 else np.zeros(int(full.sum()), np.int64)
        self._chunk_hists = hist[:m][full]
        if ends.size == 0:
            empty = np.empty(0)
            return empty, empty, EMPTY_POSITIONS
        if self.kind == "chi2" and len(self.scales) > 1:
            # the largest G over the scales (ties keep the shorter window), and its TV
            st_ = np.full(ends.size, -1.0)
            eff = np.zeros(ends.size)
            for s in self.scales:
                g, tv = self._statistics(csum[ends] - csum[ends - s], float(s * c))
                better = g > st_
                st_ = np.where(better, g, st_)
                eff = np.where(better, tv, eff)
            return st_, eff, test_idx
        windows = csum[ends] - csum[ends - nch]
        st_, eff = self._statistics(windows)
        return st_, eff, test_idx

    def window_histogram(self) -> np.ndarray:
        return self._ring.sum(axis=0) if self._ring.shape[0] else np.zeros(self.n_bins, np.int64)

    def _hold_state(self) -> dict[str, Any]:
        """The kernel's layout of the fresh chunks: a ring written from slot 0 at the open."""
        if self.kind == "ks":
            return {"ks_hold": [h.tolist() for h in self._fresh_h]}
        if self.kind == "chi2":
            return {}
        size = 4 * self._chunks
        ring = [0] * size
        for i, flags in enumerate(self._fresh, start=self._since - len(self._fresh)):
            ring[i % size] = flags
        return {"hold": [len(self._fresh), sum(self._fresh), self._since % size],
                "hold_ring": ring}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "state": {
            **self.settings,
            "ring": self._ring.tolist(),
            "partial": self._partial.tolist(),
            "partial_n": self._partial_n,
            "stat": self._stat,
            "effect": self._effect,
            "active": self._active,
            "quiet": self._quiet,
            **self._hold_state(),
            "peak": self._peak,
            "n_alarms": self._n_alarms,
        }}


class RefColumnMonitor(ColumnMonitor):
    """:class:`ColumnMonitor` with its previous hot path."""

    def _split(self, n: int, missing: np.ndarray,  # type: ignore[override]
               invalid: np.ndarray | None, out: list[Alarm]) -> np.ndarray:
        if invalid is None or not invalid.any():
            n_inv = 0
            self._invalid.update_bins(np.zeros(n, dtype=np.int64))
            hits = self._missing.update_bins(missing.view(np.int8).astype(np.int64))
            valid_pos = np.flatnonzero(~missing)
        else:
            n_inv = int(invalid.sum())
            self._invalid.update_bins(invalid.view(np.int8).astype(np.int64))
            keep = np.flatnonzero(~invalid)
            hits = self._missing.update_bins(missing[keep].view(np.int8).astype(np.int64), keep)
            valid_pos = np.flatnonzero(~missing & ~invalid)
        if self._missing is self.detectors.get("missing"):
            self._collect(self._missing, hits, out)
        self.n_invalid += n_inv
        self.n_missing += int(n - n_inv - valid_pos.size)
        self.n_values += int(valid_pos.size)
        return valid_pos

    def _update_numeric(self, values: Any, invalid_mask: np.ndarray | None) -> list[Alarm]:
        x = as_float_batch(values, self.name)
        out: list[Alarm] = []
        if x.size == 0:
            return out
        finite = np.isfinite(x)
        if finite.all() and (invalid_mask is None or not invalid_mask.any()):
            missing = np.zeros(x.size, dtype=bool)
            invalid = None
        else:
            missing = np.isnan(x)
            invalid = ~finite & ~missing
            if invalid_mask is not None:
                invalid |= np.asarray(invalid_mask, dtype=bool)
            missing &= ~invalid
        pos = self._split(x.size, missing, invalid, out)
        v = x if pos.size == x.size else x[pos]
        bins = self.profile.bin_index(v)  # type: ignore[union-attr]
        hits = self._hist.update_bins(bins, pos)
        if "ks" in self.detectors:
            self._collect(self._hist, hits, out)
        flags = ((v < self._lo) | (v > self._hi)).view(np.int8).astype(np.int64)
        hits = self._flag.update_bins(flags, pos)
        if "out_of_range" in self.detectors:
            self._collect(self._flag, hits, out)
        for det in self._sequential:  # ADWIN, CUSUM (added after this path was replaced)
            hits = det.update(v)
            self._collect(det, pos[hits], out)
        out.sort(key=lambda a: a.position)
        return out

    def _update_categorical(self, values: Any, invalid_mask: np.ndarray | None) -> list[Alarm]:
        arr = np.asarray(values)
        if arr.dtype.kind == "f" and arr.size:
            raise TypeError(f"{self.name}: categorical columns take strings (None for missing), "
                            f"got dtype {arr.dtype}")
        obj = arr.astype(object).reshape(-1)
        out: list[Alarm] = []
        if obj.size == 0:
            return out
        missing = np.equal(obj, None).astype(bool)  # type: ignore[call-overload]
        invalid = None if invalid_mask is None else np.asarray(invalid_mask, dtype=bool)
        if invalid is not None:
            missing &= ~invalid
        pos = self._split(obj.size, missing, invalid, out)
        vals = obj[pos]
        other = len(self._codes)
        codes = np.fromiter(map(self._codes.get, vals, repeat(other)), dtype=np.int64,
                            count=vals.size)
        hits = self._hist.update_bins(codes, pos)
        if "chi2" in self.detectors:
            self._collect(self._hist, hits, out)
        seen = np.fromiter(map(self._known.__contains__, vals), dtype=bool, count=vals.size)
        hits = self._flag.update_bins((~seen).view(np.int8).astype(np.int64), pos)
        if "unseen" in self.detectors:
            self._collect(self._flag, hits, out)
        out.sort(key=lambda a: a.position)
        return out


# -- random detectors and streams -------------------------------------------------
def random_detector(kind: str, rng: np.random.Generator) -> WindowTest:
    """A fresh detector of ``kind`` with random settings (threshold set later), half of them
    with episode hysteresis."""
    det = _random_detector(kind, rng)
    if rng.random() < 0.5:
        det.configure_episodes(float(rng.choice([1.0, 0.8, 0.5, 0.1])),
                               int(rng.integers(1, 5 * det.window + 2)))
    return det


def _random_detector(kind: str, rng: np.random.Generator) -> WindowTest:
    cadence = int(rng.choice([1, 2, 3, 5, 7, 10, 25, 50]))
    window = cadence * int(rng.integers(1, 25))
    ref = int(rng.choice([0, 1, 37, 1000, 10_000]))
    if kind in ("ks", "chi2"):
        k = int(rng.choice([1, 2, 3, 7, 8, 9, 16, 33, 51, 130, 300]))
        probs = rng.dirichlet(np.full(k, 0.7))
        probs[rng.random(k) < 0.1] = 0.0  # empty reference bins
        if probs.sum() == 0:
            probs[0] = 1.0
        if kind == "ks":
            return KSWindow(np.arange(k - 1, dtype=np.float64), probs, window, cadence,
                            ref_count=ref, name="x")
        return ChiSquareWindow([f"c{i}" for i in range(k - 1)], probs, window, cadence,
                               ref_count=ref, name="x")
    base = float(rng.choice([0.0, 0.001, 0.05, 0.5, 1.0]))
    cls = {"missing": MissingRate, "out_of_range": OutOfRangeRate, "unseen": UnseenRate,
           "invalid_rate": registered_detectors()["invalid_rate"]}[kind]
    det = cls(base, window, cadence, ref_count=ref, name="x")  # type: ignore[call-arg]
    assert isinstance(det, RateWindow)
    return det


def random_stream(det: WindowTest, rng: np.random.Generator, n: int) -> np.ndarray:
    """Bins of ``n`` values whose distribution changes a few times (so alarms come and go)."""
    k = det.n_bins
    out = np.empty(n, dtype=np.int64)
    cuts = [0, *np.sort(rng.integers(0, n + 1, int(rng.integers(0, 6)))).tolist(), n]
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        if rng.random() < 0.5:
            p = det.probs
        else:
            p = rng.dirichlet(np.full(k, 0.5))
        cdf = np.cumsum(p)
        out[lo:hi] = np.minimum(np.searchsorted(cdf / cdf[-1], rng.random(hi - lo), "right"),
                                k - 1)
    return out


def random_bounds(rng: np.random.Generator, n: int, max_cuts: int = 30) -> list[tuple[int, int]]:
    cuts = np.sort(rng.integers(0, n + 1, size=int(rng.integers(0, max_cuts + 1))))
    bounds = [0, *cuts.tolist(), n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def set_threshold(det: WindowTest, bins: np.ndarray, rng: np.random.Generator) -> None:
    """A threshold (and min_effect) that the stream's statistic crosses now and then."""
    ref = RefEngine(det.kind, det.to_dict()["state"], restored=False)
    s, e, _ = ref.scan(bins)
    if s.size:
        det.threshold = float(np.quantile(s, rng.uniform(0.3, 0.95)))
        if rng.random() < 0.3:
            det.min_effect = float(max(np.quantile(e, rng.uniform(0.0, 0.5)), 0.0))
    if rng.random() < 0.1:
        det.threshold = math.inf


def assert_same_stats(kind: str, got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    if kind == "chi2":  # float rounding of the log terms is allowed, not expected
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    else:
        assert np.array_equal(got, want)


def assert_same_state(det: WindowTest, ref: RefEngine) -> None:
    got, want = det.to_dict(), ref.to_dict()
    gs, ws = got["state"], want["state"]
    for key in ("stat", "effect"):
        if det.kind == "chi2" and key == "stat":
            assert math.isclose(gs[key], ws[key], rel_tol=1e-12, abs_tol=0)
        else:
            assert gs[key] == ws[key], key
    gs = {k: v for k, v in gs.items() if k not in ("stat", "effect")}
    ws = {k: v for k, v in ws.items() if k not in ("stat", "effect")}
    assert gs == ws
    assert got["kind"] == want["kind"]
    assert np.array_equal(det.window_histogram(), ref.window_histogram())
    assert det.window_histogram().dtype == np.int64
    assert det.window_values == ref._ring.shape[0] * ref.cadence
    assert det.drift_detected == ref._active
    assert det.n_alarms == ref._n_alarms


# -- the engine ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("seed", range(12))
def test_update_bins_matches_reference(kind: str, seed: int) -> None:
    rng = np.random.default_rng([seed, ALL_KINDS.index(kind)])
    det = random_detector(kind, rng)
    bins = random_stream(det, rng, int(rng.integers(0, 6_000)))
    set_threshold(det, bins, rng)
    ref = RefEngine(det.kind, det.to_dict()["state"], restored=False)
    for lo, hi in random_bounds(rng, bins.size):
        batch = bins[lo:hi]
        pos = None
        if rng.random() < 0.3:  # positions in a longer batch
            pos = np.sort(rng.choice(3 * batch.size + 1, batch.size, replace=False))
        got = det.update_bins(batch, pos)
        want = ref.update_bins(batch, pos)
        assert got.dtype == np.int64
        assert got.tolist() == want.tolist()
        assert_same_stats(kind, det.alarm_statistics, ref.alarm_statistics)
        assert_same_state(det, ref)
        if rng.random() < 0.15:  # restore both from the reference's (old-format) state
            state = json.loads(json.dumps(ref.to_dict()))
            det = Detector.from_dict(state)  # type: ignore[assignment]
            ref = RefEngine(kind, state["state"])
            assert_same_state(det, ref)


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("seed", range(8))
def test_scan_matches_reference(kind: str, seed: int) -> None:
    rng = np.random.default_rng([100 + seed, ALL_KINDS.index(kind)])
    det = random_detector(kind, rng)
    bins = random_stream(det, rng, int(rng.integers(0, 8_000)))
    ref = RefEngine(det.kind, det.to_dict()["state"], restored=False)
    for lo, hi in random_bounds(rng, bins.size, 10):
        s, e, idx = det.scan(bins[lo:hi])
        rs, re_, ridx = ref.scan(bins[lo:hi])
        assert_same_stats(kind, s, rs)
        assert_same_stats(kind, e, re_)
        assert idx.dtype == ridx.dtype == np.int64
        assert idx.tolist() == ridx.tolist()
        # scan moves the window but leaves the alarm state alone
        assert det.statistic == 0.0 and not det.drift_detected
        ref_state = {k: v for k, v in ref.to_dict()["state"].items() if k not in ("stat",)}
        det_state = {k: v for k, v in det.to_dict()["state"].items() if k not in ("stat",)}
        assert det_state == ref_state


@pytest.mark.parametrize("kind", ["ks", "chi2", "missing"])
def test_long_scan_in_one_call(kind: str) -> None:
    """Calibration scans millions of values in one call."""
    rng = np.random.default_rng(5)
    det = random_detector(kind, rng)
    bins = random_stream(det, rng, 2_000_000)
    ref = RefEngine(det.kind, det.to_dict()["state"], restored=False)
    s, e, idx = det.scan(bins)
    rs, re_, ridx = ref.scan(bins)
    assert_same_stats(kind, s, rs)
    assert_same_stats(kind, e, re_)
    assert np.array_equal(idx, ridx)
    assert det.to_dict()["state"]["ring"] == ref.to_dict()["state"]["ring"]


def test_chi2_statistic_is_bit_identical() -> None:
    """The G statistic and total variation are summed in numpy's (pairwise) order.

    The kernel's ``log`` is the C library's; where numpy uses a SIMD ``log`` of its
    own (AVX-512 builds), the G statistic may differ in the last bit, which the other
    tests allow (1e-12 relative).
    """
    if not EXACT_LOG:  # pragma: no cover - depends on the CPU
        pytest.skip("numpy's log is not the C library's on this CPU")
    rng = np.random.default_rng(9)
    for k in (1, 2, 5, 8, 9, 15, 16, 17, 63, 64, 128, 129, 200, 257, 300):
        probs = rng.dirichlet(np.ones(k))
        det = ChiSquareWindow([f"c{i}" for i in range(k - 1)], probs, 600, 20, ref_count=500)
        ref = RefEngine("chi2", det.to_dict()["state"], restored=False)
        bins = random_stream(det, rng, 20_000)
        s, e, _ = det.scan(bins)
        rs, re_, _ = ref.scan(bins)
        assert np.array_equal(s, rs), k
        assert np.array_equal(e, re_), k


def test_calibration_unchanged() -> None:
    """Calibration only reads ``scan``: the reference engine gives the same threshold."""
    rng = np.random.default_rng(3)
    prof = NumericProfile.from_values(rng.lognormal(size=3_000), bins=20)
    det = make_detector("ks", prof, 400, 20)
    assert isinstance(det, KSWindow)
    cal = calibrate_window_test(det, 5e4, reference_counts("ks", prof), seed=2,
                                n_values=200_000)

    class Ref(KSWindow):
        kind = ""

        def scan(self, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if not hasattr(self, "_ref_engine"):
                self._ref_engine = RefEngine("ks", self.to_dict()["state"], restored=False)
            return self._ref_engine.scan(bins)

    ref_det = Ref(det.edges, det.probs, det.window, det.cadence, ref_count=det.ref_count)
    ref_cal = calibrate_window_test(ref_det, 5e4, reference_counts("ks", prof), seed=2,
                                    n_values=200_000)
    assert cal == ref_cal


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_update_constant_matches_materialised_bins(kind: str) -> None:
    rng = np.random.default_rng(ALL_KINDS.index(kind))
    for _ in range(20):
        det = random_detector(kind, rng)
        det.threshold = float(rng.uniform(0, 1)) if kind not in ("chi2",) else 5.0
        state = det.to_dict()
        det, twin = Detector.from_dict(state), Detector.from_dict(state)  # type: ignore[assignment]
        assert isinstance(det, WindowTest) and isinstance(twin, WindowTest)
        for lo, hi in random_bounds(rng, int(rng.integers(0, 3_000))):
            b = int(rng.integers(0, det.n_bins))
            if rng.random() < 0.5:
                got = det.update_constant(hi - lo, b)
                want = twin.update_bins(np.full(hi - lo, b, dtype=np.int64))
            else:  # interleave ordinary batches
                bins = rng.integers(0, det.n_bins, hi - lo)
                got = det.update_bins(bins)
                want = twin.update_bins(bins)
            assert got.tolist() == want.tolist()
            assert det.to_dict() == twin.to_dict()
            assert np.array_equal(det.alarm_statistics, twin.alarm_statistics)


def test_bad_bins_raise_and_leave_the_state_alone() -> None:
    det = KSWindow([0.0, 1.0], [0.3, 0.4, 0.3], window=20, cadence=5, threshold=0.2)
    det.update_bins(np.array([0, 1, 2, 1, 0, 2, 2]))
    before = det.to_dict()
    for bad in (np.array([0, 1, 3]), np.array([0, -1]), np.array([7] * 30)):
        with pytest.raises(ValueError):
            det.update_bins(bad)
        with pytest.raises(ValueError):
            det.scan(bad)
        assert det.to_dict() == before
    with pytest.raises(TypeError):
        det.update_bins(np.array([0.0, 1.0]))
    with pytest.raises(ValueError):
        det.update_constant(10, 3)
    assert det.to_dict() == before
    # other integer dtypes and booleans are fine
    twin = Detector.from_dict(before)
    assert isinstance(twin, WindowTest)
    for dtype in (np.int8, np.uint8, np.int32, np.uint32, np.int64):
        b = np.array([0, 1, 2, 2, 1, 0, 1], dtype=dtype)
        assert det.update_bins(b).tolist() == twin.update_bins(b.astype(np.int64)).tolist()
        assert det.to_dict() == twin.to_dict()
    flags = MissingRate(0.1, 10, 5)
    flags.update_bins(np.array([True, False, True]))
    assert flags.to_dict()["state"]["partial"] == [1, 2]
    strided = np.arange(40, dtype=np.int64)[::2] % 3
    assert det.update_bins(strided).tolist() == twin.update_bins(strided.copy()).tolist()
    assert det.to_dict() == twin.to_dict()


def test_restores_old_format_states() -> None:
    """States written by the previous engine (partly filled rings included) load and continue."""
    rng = np.random.default_rng(11)
    for kind in ALL_KINDS:
        for _ in range(10):
            det = random_detector(kind, rng)
            bins = random_stream(det, rng, int(rng.integers(0, 3_000)))
            set_threshold(det, bins, rng)
            ref = RefEngine(kind, det.to_dict()["state"], restored=False)
            cut = int(rng.integers(0, bins.size + 1))
            ref.update_bins(bins[:cut])
            state = json.loads(json.dumps(ref.to_dict()))
            back = Detector.from_dict(state)
            assert isinstance(back, WindowTest)
            assert {k: v for k, v in back.to_dict()["state"].items() if k != "probs"} == {
                k: v for k, v in state["state"].items() if k != "probs"}
            ref = RefEngine(kind, state["state"])  # the old engine restored from it
            assert back.update_bins(bins[cut:]).tolist() == ref.update_bins(bins[cut:]).tolist()
            assert_same_state(back, ref)
            back.reset()
            ref2 = RefEngine(kind, back.to_dict()["state"])
            assert ref2._ring.shape[0] == 0 and back.window_values == 0
            assert back.window_histogram().tolist() == [0] * back.n_bins


def test_rate_and_p_value_follow_the_window() -> None:
    det = MissingRate(0.1, window=10, cadence=5, threshold=0.5)
    assert det.rate == 0.0 and det.p_value == 1.0
    det.update(np.array([1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1], dtype=bool))
    assert det.window_values == 10 and det.rate == 0.3
    assert det.p_value is not None and det.p_value < 1.0
    det.update(np.zeros(15, dtype=bool))
    assert det.rate == 0.0


class _Custom(KSWindow):
    """A subclass with its own statistic: served by the generic path (not registered)."""

    kind = ""

    def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = hists[:, 0] / float(self.window)
        return s, s


def test_subclass_statistic_uses_the_generic_path() -> None:
    rng = np.random.default_rng(4)
    det = _Custom(np.arange(3.0), [0.25] * 4, window=40, cadence=8, threshold=0.3)
    ref_det = KSWindow(np.arange(3.0), [0.25] * 4, window=40, cadence=8)
    bins = rng.integers(0, 4, 2_000)
    bins[1000:1400] = 0

    class RefCustom(RefEngine):
        def _statistics(self, hists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            s = hists[:, 0] / float(self.window)
            return s, s

    ref = RefCustom("ks", {**ref_det.to_dict()["state"], "threshold": 0.3})
    for lo, hi in random_bounds(rng, bins.size):
        assert det.update_bins(bins[lo:hi]).tolist() == ref.update_bins(bins[lo:hi]).tolist()
        assert np.array_equal(det.alarm_statistics, ref.alarm_statistics)
        assert det.to_dict()["state"]["ring"] == ref.to_dict()["state"]["ring"]
        assert (det.statistic, det.drift_detected) == (ref._stat, ref._active)
    assert det.n_alarms == ref._n_alarms >= 1
    det2 = _Custom(np.arange(3.0), [0.25] * 4, window=40, cadence=8)
    ref2 = RefCustom("ks", ref_det.to_dict()["state"])
    for lo, hi in random_bounds(rng, bins.size):
        s, e, idx = det2.scan(bins[lo:hi])
        rs, re_, ridx = ref2.scan(bins[lo:hi])
        assert np.array_equal(s, rs) and np.array_equal(e, re_) and np.array_equal(idx, ridx)


# -- the column monitor's hot path ---------------------------------------------------
def _column(seed: int) -> tuple[NumericProfile | CategoricalProfile, dict, int, int]:
    rng = np.random.default_rng(seed)
    numeric = seed % 2 == 0
    n_ref = int(rng.integers(50, 3_000))
    if numeric:
        ref = rng.normal(size=n_ref)
        if seed % 4 == 0:
            ref = np.round(ref * 2) / 2  # ties and a tied maximum
        ref[rng.random(n_ref) < 0.03] = np.nan
        prof: NumericProfile | CategoricalProfile = NumericProfile.from_values(
            ref, bins=int(rng.integers(2, 40)))
        kinds: tuple[str, ...] = ("ks", "adwin", "missing", "out_of_range")
    else:
        ref = CATS[rng.choice(8, n_ref, p=rng.dirichlet(np.ones(8)))]
        ref[rng.random(n_ref) < 0.03] = None
        prof = CategoricalProfile.from_values(ref)
        kinds = ("chi2", "missing", "unseen")
    cadence = int(rng.integers(1, 30))
    window = cadence * int(rng.integers(1, 25))
    dets = {}
    for k in kinds:
        if rng.random() < 0.7:
            d = make_detector(k, prof, window, cadence, name="col")
            if k != "adwin":
                d.threshold = {"ks": 0.15, "chi2": 15.0}.get(k, 0.05) * float(
                    rng.uniform(0.5, 2))
            dets[k] = d
    return prof, dets, window, cadence


def _values(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    if seed % 2 == 0:
        x = rng.normal(size=n)
        x[n // 2:] += rng.uniform(0, 2)
        if seed % 3:
            x[rng.random(n) < rng.uniform(0, 0.1)] = np.nan
            x[rng.random(n) < rng.uniform(0, 0.05)] = np.inf
            x[rng.random(n) < rng.uniform(0, 0.02)] = -np.inf
    else:
        x = CATS[rng.choice(10, n, p=rng.dirichlet(np.ones(10)))]
        if seed % 3:
            x[rng.random(n) < rng.uniform(0, 0.1)] = None
    mask = rng.random(n) < (rng.uniform(0, 0.05) if seed % 5 == 0 else 0.0)
    return x, mask


def _close(a: Any, b: Any) -> bool:
    """Equal, floats within 1e-12 (relative) where numpy's log is not the C library's."""
    if isinstance(a, float) and isinstance(b, float) and not EXACT_LOG:
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(
            _close(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _same_alarms(got: list[Alarm], want: list[Alarm]) -> None:
    assert _close([tuple(a) for a in got], [tuple(a) for a in want]), (got, want)


def _same_monitors(a: ColumnMonitor, b: ColumnMonitor) -> None:
    assert _close(json.loads(json.dumps(a.to_dict())), json.loads(json.dumps(b.to_dict())))
    assert _close(a.summary(), b.summary())


@pytest.mark.parametrize("seed", range(40))
def test_column_monitor_matches_previous_hot_path(seed: int) -> None:
    prof, dets, window, cadence = _column(seed)
    # both restored from one state (restoring normalises the probabilities once more)
    state = ColumnMonitor("col", prof, dets, window, cadence).to_dict()
    mon = ColumnMonitor.from_dict(state, prof)
    ref = RefColumnMonitor.from_dict(state, prof)
    rng = np.random.default_rng(seed + 2)
    x, mask = _values(seed, int(rng.integers(0, 12_000)))
    for lo, hi in random_bounds(rng, x.size, 40):
        use = None if rng.random() < 0.4 else mask[lo:hi]
        batch = x[lo:hi]
        if seed % 2 == 0 and rng.random() < 0.2:  # integer, strided or list batches
            batch = [np.round(batch * 3), np.repeat(batch, 2)[::2], batch.tolist()][
                int(rng.integers(0, 3))]
            batch = np.asarray(batch) if rng.random() < 0.5 else batch
        got = mon.update(batch, use)
        want = ref.update(batch, use)
        _same_alarms(got, want)
        assert (mon.n_values, mon.n_missing, mon.n_invalid) == (
            ref.n_values, ref.n_missing, ref.n_invalid)
        if rng.random() < 0.1:
            state = json.loads(json.dumps(mon.to_dict()))
            mon = ColumnMonitor.from_dict(state, prof)
            ref = RefColumnMonitor.from_dict(state, prof)
    _same_monitors(mon, ref)


def test_column_monitor_odd_inputs() -> None:
    """Strings and ints in a categorical column, non-contiguous and read-only batches."""
    rng = np.random.default_rng(8)
    cprof = CategoricalProfile.from_values(CATS[rng.choice(6, 2_000)])
    dets = {k: make_detector(k, cprof, 40, 10, threshold=0.05 if k != "chi2" else 5.0)
            for k in ("chi2", "missing", "unseen")}
    mon = ColumnMonitor("c", cprof, dets, 40, 10)
    ref = RefColumnMonitor.from_dict(mon.to_dict(), cprof)
    batches: list[Any] = [
        np.array(["a", "b", None, "zz", 3, 2.5, "a"], dtype=object),
        np.array(["a", "b", "c", "q"]),  # a numpy string array
        np.array([1, 2, 3]),
        ["a", None, "b"] * 20,
        np.array([], dtype=np.float64),
        np.array([["a", "b"], ["c", None]], dtype=object),
    ]
    for b in batches:
        _same_alarms(mon.update(b), ref.update(b))
    with pytest.raises(TypeError):
        mon.update(np.array([1.0, 2.0]))
    with pytest.raises(TypeError):  # unhashable values: raised where it was, same state
        mon.update(np.array(["a", ["x"], "b"], dtype=object))
    with pytest.raises(TypeError):
        ref.update(np.array(["a", ["x"], "b"], dtype=object))
    _same_monitors(mon, ref)

    nprof = NumericProfile.from_values(rng.normal(size=2_000), bins=16)
    dets = {k: make_detector(k, nprof, 40, 10, threshold=0.05 if k != "ks" else 0.2)
            for k in ("ks", "missing", "out_of_range", "adwin")}
    mon = ColumnMonitor("x", nprof, dets, 40, 10)
    ref = RefColumnMonitor.from_dict(mon.to_dict(), nprof)
    wide = rng.normal(size=(500, 3))
    wide[::7, 1] = np.nan
    ro = rng.normal(size=300)
    ro.flags.writeable = False
    for b, m in [(wide[:, 1], None), (ro, None), (np.array(5.0), None),
                 (np.array([1, 2, 3], dtype=np.int32), np.array([True, False, False])),
                 (np.array([True, False]), None), (np.array([np.nan, 1.0]), np.array(True)),
                 (np.array([1e308, -1e308, 5e-324, -0.0, 0.0]), None)]:
        _same_alarms(mon.update(b, m), ref.update(b, m))
    with pytest.raises(TypeError):
        mon.update(np.array(["a"]))
    with pytest.raises(ValueError):
        mon.update(np.ones(5), np.array([True, False]))
    with pytest.raises(ValueError):
        ref.update(np.ones(5), np.array([True, False]))
    _same_monitors(mon, ref)


# -- property: any split of any stream -------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(kind=st.sampled_from(ALL_KINDS), seed=st.integers(0, 2**32 - 1),
       cuts=st.lists(st.integers(0, 3_000), max_size=15))
def test_any_split_matches_reference(kind: str, seed: int, cuts: list[int]) -> None:
    rng = np.random.default_rng(seed)
    det = random_detector(kind, rng)
    bins = random_stream(det, rng, 3_000)
    set_threshold(det, bins, rng)
    ref = RefEngine(kind, det.to_dict()["state"], restored=False)
    bounds = [0, *sorted(cuts), bins.size]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        assert det.update_bins(bins[lo:hi]).tolist() == ref.update_bins(bins[lo:hi]).tolist()
    assert_same_state(det, ref)


def test_inconsistent_partial_chunk_is_rejected() -> None:
    """The kernel trusts the state's shapes, so restoring checks them."""
    state = KSWindow([0.0], [0.5, 0.5], 10, 5).to_dict()["state"]
    for bad in ({"partial": [1, 2, 3]}, {"partial_n": 5}, {"partial_n": -1}):
        with pytest.raises(DetectorError):
            Detector.from_dict({"kind": "ks", "state": {**state, **bad}})
    # a ring longer than the window keeps its newest chunks
    det = Detector.from_dict({"kind": "ks", "state": {**state, "ring": [[1, 4], [2, 3], [5, 0]]}})
    assert isinstance(det, WindowTest)
    assert det.to_dict()["state"]["ring"] == [[2, 3], [5, 0]]
    assert det.window_histogram().tolist() == [7, 3]
