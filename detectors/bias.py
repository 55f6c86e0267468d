"""Bias drift: calibrated watch of each facet value's positive-prediction gap to the rest.

A facet (a sensitive attribute: sex, age band, country) splits a model's events by
value.  For a facet value ``d`` against the rest ``a`` (every other event), with
``q_x`` the share of events of ``x`` predicted positive, SageMaker Clarify defines

* **DPPL** (difference in positive proportions in predicted labels): ``q_a - q_d``;
* **DI** (disparate impact): ``q_d / q_a``.

The baseline values come from the reference.  The live values are measured over a
sliding window of the model's last ``window`` scored events, in ``cadence``-event
chunks; at the end of each chunk every monitored value is tested with

    z = |DPPL_window - DPPL_ref| / sqrt(q_d (1 - q_d) / n_d + q_a (1 - q_a) / n_a)

(``q`` the window's rates, smoothed, ``n`` its event counts; a value with fewer than
:data:`MIN_WINDOW_EVENTS` events on either side is not tested).  A value's episode opens
when ``z`` exceeds the calibrated threshold ``h`` and closes when it falls below
``release x h``.

**Calibration.** ``h`` is set by simulation under the null, like the column detectors
(:mod:`detectors.calibration`): each path draws its "true" value shares from
``Dirichlet(n + 1/2)`` and each value's positive rate from ``Beta(k + 1/2, n - k + 1/2)``
around the reference's counts (the reference is a finite sample), then draws whole
chunks (multinomial value counts, binomial positives) and runs the very statistic
above.  The up-crossings of ``h`` by any value, per simulated event, are the false
episodes per event (an upper bound: hysteresis merges some); ``h`` is the level where
they are ``1 / target_events``.  When the target is beyond the simulation, the tail is
extrapolated along ``log rate = a + b h^2`` (the Gaussian tail of ``z``).  Nothing is
simulated per event: a path is a few arrays of chunk counts.

**Hot path.** Per batch: the value codes and positive flags come in as arrays; one
``bincount`` over ``chunk x value`` gives every chunk's counts; a short loop runs per
*chunk* (one per ``cadence`` events, default 500), never per event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from detectors.errors import DetectorError

#: a value (or the rest) needs this many events in the window to be tested
MIN_WINDOW_EVENTS = 30
#: fewest simulated up-crossings for a level to be read directly
MIN_CROSSINGS = 25
#: chunks simulated by a calibration (over all paths)
SIMULATED_CHUNKS = 320_000
#: the detector name in detections and metrics
DETECTOR = "dppl"


class BiasAlarm(NamedTuple):
    """A facet value's episode opened (an alarm) or closed at ``position`` of the batch
    (for a close, ``statistic`` is the episode's peak)."""

    value: str
    position: int
    statistic: float
    threshold: float


def _rates(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Jeffreys-smoothed rates ``(k + 1/2) / (n + 1)`` (never 0 or 1)."""
    return (k + 0.5) / (n + 1.0)


def gaps(pos: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                  np.ndarray]:
    """Per value (last axis), of counts ``pos`` / ``n`` over all buckets: (q_d, q_a, DPPL,
    DI); NaN where a side has no event.  The rest ``a`` is every other bucket."""
    n = np.asarray(n, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    n_all = n.sum(axis=-1, keepdims=True)
    p_all = pos.sum(axis=-1, keepdims=True)
    n_a = n_all - n
    with np.errstate(divide="ignore", invalid="ignore"):
        q_d = np.where(n > 0, pos / np.where(n > 0, n, 1.0), np.nan)
        q_a = np.where(n_a > 0, (p_all - pos) / np.where(n_a > 0, n_a, 1.0), np.nan)
        di = np.where(q_a > 0, q_d / np.where(q_a > 0, q_a, 1.0), np.nan)
    return q_d, q_a, q_a - q_d, di


def z_scores(pos: np.ndarray, n: np.ndarray, ref_dppl: np.ndarray, n_test: int,
             ) -> np.ndarray:
    """The test statistic of every value (last axis) for window counts ``pos`` / ``n`` of
    each bucket (the first ``n_test`` buckets are tested; 0 where untested).  The standard
    error is the window's own (smoothed rates), so a change of every value's rate alike,
    which leaves the gaps as they were, does not move the statistic's null distribution."""
    n = np.asarray(n, dtype=np.float64)
    pos = np.asarray(pos, dtype=np.float64)
    n_all = n.sum(axis=-1, keepdims=True)
    p_all = pos.sum(axis=-1, keepdims=True)
    nd, kd = n[..., :n_test], pos[..., :n_test]
    na, ka = n_all - nd, p_all - kd
    ok = (nd >= MIN_WINDOW_EVENTS) & (na >= MIN_WINDOW_EVENTS)
    nd1, na1 = np.maximum(nd, 1.0), np.maximum(na, 1.0)
    sd, sa = (kd + 0.5) / (nd1 + 1.0), (ka + 0.5) / (na1 + 1.0)
    var = sd * (1 - sd) / nd1 + sa * (1 - sa) / na1
    z = np.abs(ka / na1 - kd / nd1 - ref_dppl) / np.sqrt(var)
    return np.where(ok, z, 0.0)


@dataclass
class BiasBaseline:
    """The reference of one facet: its monitored values, their counts, and the threshold.

    Buckets: ``values`` (tested), then possibly one untested bucket of the events of no
    monitored value (when the pool has too little reference data to be tested), which
    still counts in every value's rest.
    """

    facet: str
    values: list[str]
    #: reference events and positives per bucket (len(values) or len(values) + 1)
    n: np.ndarray
    pos: np.ndarray
    window: int
    cadence: int
    threshold: float = math.inf
    release: float = 0.5
    target_events: float = math.inf
    method: str = ""
    simulated_events: int = 0
    simulated_crossings: int = 0

    def __post_init__(self) -> None:
        self.n = np.asarray(self.n, dtype=np.int64)
        self.pos = np.asarray(self.pos, dtype=np.int64)
        if self.window % self.cadence or self.window < 2 * self.cadence:
            raise DetectorError(f"window {self.window} must be a multiple of cadence "
                                f"{self.cadence}, at least twice it")
        k = len(self.values)
        if self.n.shape != self.pos.shape or self.n.size not in (k, k + 1) or k < 1:
            raise DetectorError("bias baseline: counts do not match the values")
        q_d, q_a, dppl, di = gaps(self.pos, self.n)
        #: reference figures per value
        self.ref_rate = q_d[:k]
        self.ref_rest_rate = q_a[:k]
        self.ref_dppl = dppl[:k]
        self.ref_di = di[:k]

    @property
    def n_buckets(self) -> int:
        return int(self.n.size)

    # -- calibration ------------------------------------------------------------------
    def simulate(self, n_events: int, seed: int, n_paths: int = 32) -> list[np.ndarray]:
        """Null paths of the statistic: one (tests x values) array per path."""
        rng = np.random.default_rng(seed)
        chunks = max(n_events // (self.cadence * n_paths), 4 * (self.window // self.cadence))
        c = self.window // self.cadence
        k = len(self.values)
        out = []
        for _ in range(n_paths):
            share = rng.dirichlet(self.n + 0.5)
            p = rng.beta(self.pos + 0.5, self.n - self.pos + 0.5)
            counts = rng.multinomial(self.cadence, share, size=chunks)
            positives = rng.binomial(counts, p)
            cn = np.zeros((chunks + 1, self.n_buckets), dtype=np.int64)
            cp = np.zeros_like(cn)
            np.cumsum(counts, axis=0, out=cn[1:])
            np.cumsum(positives, axis=0, out=cp[1:])
            wn, wp = cn[c:] - cn[:-c], cp[c:] - cp[:-c]
            out.append(z_scores(wp, wn, self.ref_dppl, k))
        return out

    def calibrate(self, target_events: float, seed: int = 0, n_events: int | None = None,
                  ) -> BiasBaseline:
        """Set ``threshold`` so that false episodes (any value) are ``target_events`` model
        events apart; returns ``self``."""
        if not target_events > 1:
            raise DetectorError(f"target_events must be > 1, got {target_events!r}")
        if n_events is None:  # 320,000 simulated chunks: direct up to ~10^7 / 25 events
            n_events = SIMULATED_CHUNKS * self.cadence
        paths = self.simulate(n_events, seed)
        exposure = sum(p.shape[0] for p in paths) * self.cadence
        # every up-crossing of every value's series: sorted lows and highs of rising steps
        lows, highs = [], []
        for z in paths:
            a, b = z[:-1], z[1:]
            up = a < b
            lows.append(a[up])
            highs.append(b[up])
        lo, hi = np.sort(np.concatenate(lows)), np.sort(np.concatenate(highs))
        cands = np.unique(hi[-20_000:]) if hi.size else np.array([1.0])
        counts = np.searchsorted(lo, cands, side="right") - np.searchsorted(hi, cands,
                                                                            side="right")
        peak = int(np.argmax(counts))  # only the upper branch of the crossing curve
        cands, counts = cands[peak:], counts[peak:]
        need = exposure / target_events
        self.target_events = float(target_events)
        self.simulated_events = int(exposure)
        self.simulated_crossings = 0
        if need >= MIN_CROSSINGS:
            ok = (counts > 0) & (counts <= need)
            i = int(np.flatnonzero(ok)[0]) if ok.any() else int(cands.size - 1)
            self.threshold, self.method = float(cands[i]), "direct"
            self.simulated_crossings = int(counts[i])
            return self
        tail = (counts >= MIN_CROSSINGS) & (counts <= 40 * MIN_CROSSINGS)
        if tail.sum() < 2:
            self.threshold, self.method = float(cands.max()) * 1.5, "floor"
            return self
        slope, icpt = np.polyfit(cands[tail] ** 2, np.log(counts[tail] / exposure), 1)
        slope = min(slope, -1e-3)
        h2 = (math.log(1.0 / target_events) - icpt) / slope
        self.threshold = float(max(math.sqrt(max(h2, 0.0)), cands[tail].max()))
        self.method = "extrapolated"
        return self

    # -- serialisation ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"facet": self.facet, "values": list(self.values), "n": self.n.tolist(),
                "pos": self.pos.tolist(), "window": self.window, "cadence": self.cadence,
                "threshold": self.threshold, "release": self.release,
                "target_events": self.target_events, "method": self.method,
                "simulated_events": self.simulated_events,
                "simulated_crossings": self.simulated_crossings}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BiasBaseline:
        return cls(**d)

    def monitor(self) -> BiasMonitor:
        return BiasMonitor(self)


class BiasMonitor:
    """The live state of one facet on one partition."""

    def __init__(self, base: BiasBaseline) -> None:
        self.base = base
        c, b = base.window // base.cadence, base.n_buckets
        self._ring_n = np.zeros((c, b), dtype=np.int64)
        self._ring_p = np.zeros((c, b), dtype=np.int64)
        #: the window's counts (the sum of the ring), kept as chunks enter and leave
        self._win_n = np.zeros(b, dtype=np.int64)
        self._win_p = np.zeros(b, dtype=np.int64)
        self._slot = 0
        self._chunks = 0  # chunks completed
        self._part_n = np.zeros(b, dtype=np.int64)
        self._part_p = np.zeros(b, dtype=np.int64)
        self._fill = 0  # events in the partial chunk
        k = len(base.values)
        self.stat = np.zeros(k)
        self.active = np.zeros(k, dtype=bool)
        self.peak = np.zeros(k)
        self.n_alarms = np.zeros(k, dtype=np.int64)
        self.n_events = 0
        #: the window counts of the last test (None: no test yet)
        self._tested: tuple[np.ndarray, np.ndarray] | None = None
        self.closes: list[BiasAlarm] = []

    # -- the window's figures per value (NaN until the window has filled) -----------------
    def figures(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(positive rate, rest's positive rate, DPPL, DI) per value in the last tested
        window."""
        k = len(self.base.values)
        if self._tested is None:
            nan = np.full(k, np.nan)
            return nan, nan, nan, nan
        q_d, q_a, dppl, di = gaps(self._tested[1], self._tested[0])
        return q_d[:k], q_a[:k], dppl[:k], di[:k]

    @property
    def rate(self) -> np.ndarray:
        return self.figures()[0]

    @property
    def rest_rate(self) -> np.ndarray:
        return self.figures()[1]

    @property
    def dppl(self) -> np.ndarray:
        return self.figures()[2]

    @property
    def di(self) -> np.ndarray:
        return self.figures()[3]

    def update(self, codes: np.ndarray, positive: np.ndarray,
               positions: np.ndarray | None = None) -> list[BiasAlarm]:
        """Feed scored events: ``codes`` (bucket per event, int), ``positive`` (bool);
        ``positions`` (their positions in the batch; default 0..n-1).  Returns the alarms;
        the closes are in :attr:`closes`."""
        self.closes = []
        n = int(codes.size)
        if n == 0:
            return []
        base = self.base
        b, cad = base.n_buckets, base.cadence
        self.n_events += n
        fill = self._fill
        # chunk of each event relative to the partial chunk: one bincount for all of them
        n_chunks = (fill + n - 1) // cad + 1
        idx = (np.arange(fill, fill + n) // cad) * b + codes
        cn = np.bincount(idx, minlength=n_chunks * b).reshape(n_chunks, b)
        cp = np.bincount(idx, weights=positive, minlength=n_chunks * b).reshape(
            n_chunks, b).astype(np.int64)
        done = (fill + n) // cad  # chunks completed by this batch
        alarms: list[BiasAlarm] = []
        c = base.window // base.cadence
        for j in range(done):
            part_n = self._part_n + cn[j]
            part_p = self._part_p + cp[j]
            slot = self._slot
            self._win_n += part_n - self._ring_n[slot]
            self._win_p += part_p - self._ring_p[slot]
            self._ring_n[slot] = part_n
            self._ring_p[slot] = part_p
            self._slot = (slot + 1) % c
            self._chunks += 1
            self._part_n = np.zeros(b, dtype=np.int64)
            self._part_p = np.zeros(b, dtype=np.int64)
            if self._chunks >= c:
                end = (j + 1) * cad - fill - 1  # the chunk's last event in the batch
                self._test(end if positions is None else int(positions[end]), alarms)
        if done < n_chunks:
            self._part_n = self._part_n + cn[done]
            self._part_p = self._part_p + cp[done]
        self._fill = (fill + n) % cad
        return alarms

    def _test(self, position: int, alarms: list[BiasAlarm]) -> None:
        base = self.base
        wn, wp = self._win_n.copy(), self._win_p.copy()
        self._tested = (wn, wp)
        z = z_scores(wp, wn, base.ref_dppl, len(base.values))
        self.stat = z
        h = base.threshold
        above = z > h
        if not above.any() and not self.active.any():
            return
        opened = (~self.active) & above
        closed = self.active & (z < base.release * h)
        self.peak = np.where(self.active, np.maximum(self.peak, z), self.peak)
        for i in np.flatnonzero(closed).tolist():
            self.closes.append(BiasAlarm(base.values[i], position, float(self.peak[i]), h))
        for i in np.flatnonzero(opened).tolist():
            alarms.append(BiasAlarm(base.values[i], position, float(z[i]), h))
            self.peak[i] = z[i]
        self.active = (self.active | opened) & ~closed
        self.n_alarms += opened

    # -- checkpoint -------------------------------------------------------------------
    _ARRAYS = ("_ring_n", "_ring_p", "_win_n", "_win_p", "_part_n", "_part_p", "stat",
               "active", "peak", "n_alarms")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k).tolist() for k in self._ARRAYS}
        out.update(slot=self._slot, chunks=self._chunks, fill=self._fill,
                   n_events=self.n_events,
                   tested=None if self._tested is None else [a.tolist() for a in self._tested])
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: BiasBaseline) -> BiasMonitor:
        """A monitor of ``base`` from :meth:`to_dict`'s output (DetectorError if it does
        not fit the baseline)."""
        mon = cls(base)
        try:
            for k in cls._ARRAYS:
                was = getattr(mon, k)
                arr = np.asarray(d[k], dtype=was.dtype)
                if arr.shape != was.shape:
                    raise DetectorError(f"bias state: {k} has shape {arr.shape}, not {was.shape}")
                setattr(mon, k, arr)
            mon._slot, mon._chunks = int(d["slot"]), int(d["chunks"])
            mon._fill, mon.n_events = int(d["fill"]), int(d["n_events"])
            t = d["tested"]
            mon._tested = None if t is None else (np.asarray(t[0], dtype=np.int64),
                                                  np.asarray(t[1], dtype=np.int64))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DetectorError(f"bias state does not restore: {exc}") from None
        return mon

    def score(self) -> np.ndarray:
        """Per value: statistic / threshold (>= 1: alarming)."""
        h = self.base.threshold
        return self.stat / h if h > 0 and math.isfinite(h) else np.zeros_like(self.stat)


def build_baseline(facet: str, values: Sequence[str], codes: np.ndarray, positive: np.ndarray,
                   window: int, cadence: int, untested_bucket: bool) -> BiasBaseline:
    """A :class:`BiasBaseline` from reference events (``codes``: bucket per event, the
    untested bucket ``len(values)`` when ``untested_bucket``)."""
    b = len(values) + (1 if untested_bucket else 0)
    n = np.bincount(codes, minlength=b)[:b]
    pos = np.bincount(codes, weights=positive.astype(np.float64), minlength=b)[:b]
    return BiasBaseline(facet, list(values), n, pos.astype(np.int64), window, cadence)
