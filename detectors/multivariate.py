"""Multivariate drift of a group of numeric columns: changes that no single column shows.

A correlation that flips from +0.8 to -0.8 leaves every marginal distribution
alone, so no per-column test can see it.  :class:`JointTest` compares the *joint*
distribution of a group of columns with the reference's.

Method
------
Each complete row ``x`` of the group (one event) is standardised with the
reference's mean and standard deviation (after winsorising each value to the
reference's central 99.8 %, as ADWIN's input is) and mapped to a feature vector
``f(x)`` whose mean characterises the distribution:

``moments`` (groups of up to :data:`MOMENTS_MAX_COLUMNS` columns)
    the values and all their pairwise products, ``z_i`` and ``z_i z_j`` (i <= j):
    means, variances and every covariance, ``d + d(d+1)/2`` features;
``rff`` (larger groups)
    the values and :data:`RFF_FEATURES` random Fourier features
    ``cos(w·z), sin(w·z)`` of a Gaussian kernel whose bandwidth is the median
    distance between reference rows: the mean of these is the kernel mean
    embedding, so the test is a linear-time, mergeable MMD.

The reference's mean ``m`` and covariance ``S`` of ``f`` are kept; the live
statistic is Hotelling's ``T = n · |P'(mean of f over the window) - P'm|²``
with ``P`` the whitening of ``S`` (its eigenvectors of non-negligible
eigenvalue, each scaled by ``1/√λ``), on the newest 10 %, 25 %, 50 % and 100 %
of the window at once (the largest; short windows see large changes sooner),
every ``cadence`` complete rows once the window is full.  Its nominal p-value is
that of a chi-square with ``rank(S)`` degrees of freedom.  That is the ``hotelling``
statistic of baselines profiled before the ``split`` statistic, which new profiles
use (:mod:`detectors.joint_blocks`): one Hotelling statistic per block of features
(the values; the products or RFF), each put on a normal scale, the largest taken, so
that a mean shift does not pay for the products' degrees of freedom.

Measured on the issue's scenarios (20 columns, a correlation of two of them
flipping from +0.8 to -0.8, or a 0.3 σ mean shift in 10 of them; the single
Hotelling statistic, before ``split``; thresholds at
the same nominal p-value, 20 seeds): median delay 50 events for ``moments`` and
200 for values + 64 RFF on the flip, 150 for both on the shift.  ``moments``
is therefore used up to :data:`MOMENTS_MAX_COLUMNS` columns, where its feature
count (``d(d+3)/2``, 324 at 24 columns) stays cheap.

Missing values
--------------
A row with a missing or invalid value (NaN, ±inf) in any column of the group is
left out of the group's window: it neither counts towards the window nor
towards the cadence.  The reference is profiled on its complete rows too.  A
change in how often a column is missing is the per-column ``missing`` test's
business; imputing would make it the joint test's as well (a mean-imputed
column loses variance and covariance).  A column that is often missing starves
its group: leave it out of the group.

Calibration
-----------
As for the window tests (:mod:`detectors.calibration`): paths of rows are drawn
from the reference's row sample, each compared with a reference resampled from
those rows and profiled afresh (the reference's own uncertainty), and the rate of episodes of the statistic
(up-crossings merged by the episode hysteresis) is read directly when the
simulation sees enough of them and extrapolated on the nominal p-value scale
otherwise (:func:`calibrate_joint`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sstats

from detectors.base import EMPTY_POSITIONS, check_release
from detectors.calibration import (
    MIN_EVENTS,
    RELEASE_FLOOR_QUANTILE,
    STEP_TOLERANCE,
    Calibration,
    _episode_curve,
    _upcrossing_counts,
)
from detectors.errors import DetectorError
from detectors.joint_blocks import DEFAULT_STATISTIC, STATISTICS, blocks_of, split_scores
from detectors.window import episode_steps

METHODS = ("auto", "moments", "rff")
#: ``auto`` uses ``moments`` up to this many columns, ``rff`` above
MOMENTS_MAX_COLUMNS = 24
#: random Fourier features of ``rff`` (cosines and sines)
RFF_FEATURES = 64
#: complete reference rows a group needs
MIN_ROWS = 200
#: eigenvalues of the feature covariance below this share of the largest are dropped
EIG_FLOOR = 1e-9
#: the shares of the window the statistic looks at (newest first)
SCALES = (0.1, 0.25, 0.5, 1.0)
#: winsorising quantiles of each column (as ADWIN's input)
CLIP_Q = (0.001, 0.999)


@dataclass(frozen=True)
class GroupSpec:
    """A group of numeric columns watched jointly."""

    name: str
    columns: tuple[str, ...]
    method: str = "auto"

    def __post_init__(self) -> None:
        if len(self.columns) < 2:
            raise DetectorError(f"group {self.name}: needs at least 2 columns")
        if len(set(self.columns)) != len(self.columns):
            raise DetectorError(f"group {self.name}: a column is named twice")
        if self.method not in METHODS:
            raise DetectorError(f"group {self.name}: method must be one of {', '.join(METHODS)}")

    @property
    def resolved_method(self) -> str:
        if self.method != "auto":
            return self.method
        return "moments" if len(self.columns) <= MOMENTS_MAX_COLUMNS else "rff"


def complete_rows(columns: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the events whose values are all finite, their positions).

    ``columns``: one 1-D array per column of the group, all of one length."""
    x = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
    ok = np.isfinite(x).all(axis=1)
    pos = np.flatnonzero(ok)
    return x[pos], pos


class JointProfile:
    """The reference of a group: scaling, feature map, feature mean and whitening, and a
    sample of its complete rows (for recalibration).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2_000, 3))
    >>> prof = JointProfile.from_rows(GroupSpec("g", ("a", "b", "c")), x)
    >>> prof.method, prof.dim
    ('moments', 9)
    >>> JointProfile.from_dict(prof.to_dict()).dim
    9
    """

    def __init__(self, columns: Sequence[str], method: str, lo: np.ndarray, hi: np.ndarray,
                 center: np.ndarray, scale: np.ndarray, rff: np.ndarray | None,
                 rows: np.ndarray, n_ref: int, statistic: str = "hotelling") -> None:
        self.columns = tuple(columns)
        self.method = method
        #: the test's statistic (:mod:`detectors.joint_blocks`); older baselines: hotelling
        self.statistic = statistic
        self.lo, self.hi = np.asarray(lo, float), np.asarray(hi, float)
        self.center, self.scale = np.asarray(center, float), np.asarray(scale, float)
        self.rff = None if rff is None else np.asarray(rff, float)
        self.rows = np.asarray(rows, float).reshape(-1, len(self.columns))
        self.n_ref = int(n_ref)
        d = len(self.columns)
        self._iu = np.triu_indices(d)
        f = self.features(self.rows)
        self.mean = f.mean(axis=0)
        cov = np.atleast_2d(np.cov(f, rowvar=False))
        w, v = np.linalg.eigh(cov)
        keep = w > max(float(w.max()), 1e-300) * EIG_FLOOR
        #: whitening: features (centred) @ proj has identity covariance on the reference
        self.proj = v[:, keep] / np.sqrt(w[keep])
        self.dim = int(keep.sum())
        #: the blocks of the ``split`` statistic (empty for ``hotelling``)
        self.blocks = (blocks_of(f, d, EIG_FLOOR) if statistic == "split" else [])

    @classmethod
    def from_rows(cls, spec: GroupSpec, rows: np.ndarray, sample: int = 10_000,
                  seed: int = 0) -> JointProfile:
        """Profile the complete reference ``rows`` (events x columns) of group ``spec``."""
        rows = np.asarray(rows, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(spec.columns):
            raise DetectorError(f"group {spec.name}: rows must be events x "
                                f"{len(spec.columns)} columns")
        rows = rows[np.isfinite(rows).all(axis=1)]
        n_ref = rows.shape[0]
        if n_ref < MIN_ROWS:
            raise DetectorError(f"group {spec.name}: the reference has {n_ref} events "
                                f"with all of the group's columns; at least {MIN_ROWS} are "
                                f"needed (leave often-missing columns out of the group)")
        rng = np.random.default_rng(seed)
        lo, hi = np.quantile(rows, CLIP_Q, axis=0)
        clipped = np.clip(rows, lo, hi)
        center = clipped.mean(axis=0)
        scale = clipped.std(axis=0)
        scale[~(scale > 0)] = 1.0
        if rows.shape[0] > sample:
            rows = rows[np.sort(rng.choice(rows.shape[0], sample, replace=False))]
        method = spec.resolved_method
        rff = None
        if method == "rff":
            z = (np.clip(rows[:1000], lo, hi) - center) / scale
            dist = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
            bw = float(np.median(dist[dist > 0])) if (dist > 0).any() else 1.0
            rff = rng.normal(size=(len(spec.columns), RFF_FEATURES // 2)) / bw
        return cls(spec.columns, method, lo, hi, center, scale, rff, rows, n_ref,
                   DEFAULT_STATISTIC)

    def refit(self, rows: np.ndarray) -> JointProfile:
        """The same scaling and feature map, with mean and whitening from ``rows``."""
        return JointProfile(self.columns, self.method, self.lo, self.hi, self.center,
                            self.scale, self.rff, rows, rows.shape[0], self.statistic)

    def standardise(self, rows: np.ndarray) -> np.ndarray:
        return (np.clip(rows, self.lo, self.hi) - self.center) / self.scale

    def features(self, rows: np.ndarray) -> np.ndarray:
        """The feature vector of each row (raw values, events x columns)."""
        z = self.standardise(rows)
        if self.method == "moments":
            prod = z[:, self._iu[0]] * z[:, self._iu[1]]
            return np.hstack([z, prod])
        assert self.rff is not None
        a = z @ self.rff
        return np.hstack([z, np.cos(a), np.sin(a)])

    def chunk_sums(self, rows: np.ndarray, size: int) -> np.ndarray:
        """Sums of the centred features over consecutive chunks of ``size`` rows (their
        number a multiple of ``size``): the same as summing :meth:`features` minus the
        mean, without materialising the pairwise products (one small matrix product per
        chunk), and each chunk's sum independent of the others."""
        k = rows.shape[0] // size
        z = self.standardise(rows)
        zc = z.reshape(k, size, -1)
        lin = zc.sum(axis=1)
        if self.method == "moments":
            gram = np.matmul(zc.transpose(0, 2, 1), zc)
            extra = gram[:, self._iu[0], self._iu[1]]
        else:
            assert self.rff is not None
            a = (z @ self.rff).reshape(k, size, -1)
            extra = np.hstack([np.cos(a).sum(axis=1), np.sin(a).sum(axis=1)])
        return np.hstack([lin, extra]) - size * self.mean

    @property
    def n_features(self) -> int:
        d = len(self.columns)
        return d + (d * (d + 1) // 2 if self.method == "moments" else RFF_FEATURES)

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "method": self.method,
                "lo": self.lo.tolist(), "hi": self.hi.tolist(),
                "center": self.center.tolist(), "scale": self.scale.tolist(),
                "rff": None if self.rff is None else self.rff.tolist(),
                "rows": np.round(self.rows, 9).tolist(), "n_ref": self.n_ref,
                "statistic": self.statistic}

    @classmethod
    def from_dict(cls, data: Any) -> JointProfile:
        try:
            cols = [str(c) for c in data["columns"]]
            d = len(cols)
            arrs = {k: np.asarray(data[k], dtype=np.float64) for k in
                    ("lo", "hi", "center", "scale")}
            rows = np.asarray(data["rows"], dtype=np.float64)
            rff = None if data.get("rff") is None else np.asarray(data["rff"], dtype=np.float64)
            method = str(data["method"])
            n_ref = int(data["n_ref"])
            statistic = str(data.get("statistic", "hotelling"))
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"not a joint profile: {exc}") from None
        if d < 2 or any(a.shape != (d,) or not np.isfinite(a).all() for a in arrs.values()):
            raise DetectorError("joint profile: lo, hi, center, scale need one finite number "
                                "per column")
        if (method not in ("moments", "rff") or (method == "rff") != (rff is not None)
                or (rff is not None and (rff.ndim != 2 or rff.shape[0] != d))):
            raise DetectorError("joint profile: method and rff do not agree")
        if statistic not in STATISTICS:
            raise DetectorError(f"joint profile: statistic must be one of "
                                f"{', '.join(STATISTICS)}")
        if rows.ndim != 2 or rows.shape[1] != d or rows.shape[0] < MIN_ROWS \
                or not np.isfinite(rows).all() or not (arrs["scale"] > 0).all():
            raise DetectorError(f"joint profile: rows must be at least {MIN_ROWS} finite rows "
                                f"of {d} values, scales > 0")
        return cls(cols, method, arrs["lo"], arrs["hi"], arrs["center"], arrs["scale"], rff,
                   rows, n_ref, statistic)


class JointTest:
    """Sliding-window Hotelling test of a group's feature mean against the reference's.

    Not a per-column :class:`~detectors.base.Detector` (it reads rows of several
    columns), but the same protocol otherwise: :meth:`update` returns the positions
    at which an episode opened, ``close_positions`` those at which one closed,
    read-only ``statistic``, ``threshold``, ``p_value``, ``drift_detected``,
    ``n_alarms``, and a ``to_dict``/``from_dict`` round trip.  Its output does not
    depend on how a stream is split into batches: each chunk of ``cadence`` rows is
    summed on its own, and a window is the sum of its chunks.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = rng.multivariate_normal([0, 0], [[1, .8], [.8, 1]], 5_000)
    >>> prof = JointProfile.from_rows(GroupSpec("g", ("a", "b")), ref)
    >>> test = JointTest(prof, window=500, cadence=50, threshold=8.0, name="g")
    >>> flip = rng.multivariate_normal([0, 0], [[1, -.8], [-.8, 1]], 1_000)
    >>> test.update(ref[:1_000]).size, test.update(flip).size
    (0, 1)
    """

    kind = "joint"

    def __init__(self, profile: JointProfile, window: int = 1000, cadence: int = 50,
                 threshold: float = math.inf, name: str = "") -> None:
        if cadence < 1 or window < cadence or window % cadence:
            raise DetectorError(f"{name}: window ({window}) must be a multiple of cadence "
                                f"({cadence})")
        self.profile = profile
        self.window, self.cadence = int(window), int(cadence)
        self._threshold = float(threshold)
        self.name = name
        self._chunks = self.window // self.cadence
        self._scales = np.unique([max(1, round(self._chunks * s)) for s in SCALES])
        f = profile.n_features
        self._ring = np.zeros((0, f))  # the newest chunk sums, at most _chunks of them
        self._pending = np.zeros((0, len(profile.columns)))  # rows of the unfinished chunk
        self.release = 1.0
        self.release_values = self.cadence
        self._ist = np.zeros(4, dtype=np.int64)
        self._fst = np.zeros(1)
        self._active = False
        self._stat = 0.0
        self._n_alarms = 0
        self.n_rows = 0
        self.close_positions = EMPTY_POSITIONS

    def configure_episodes(self, release: float, release_values: int) -> None:
        """As :meth:`detectors.window.WindowTest.configure_episodes`."""
        release, release_values = check_release(release, release_values, self.name)
        self.release = release
        self.release_values = max(-(-release_values // self.cadence), 1) * self.cadence

    # -- the statistic -------------------------------------------------------------
    def _advance(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Feed complete rows; (index in ``rows`` of the row ending each test, statistics)."""
        p = self._pending.shape[0]
        allrows = np.vstack([self._pending, rows]) if p else rows
        k = allrows.shape[0] // self.cadence
        self._pending = allrows[k * self.cadence:].copy()
        self.n_rows += rows.shape[0]
        if k == 0:
            return EMPTY_POSITIONS, np.empty(0)
        sums = self.profile.chunk_sums(allrows[:k * self.cadence], self.cadence)
        chunks = np.vstack([self._ring, sums])
        self._ring = chunks[-self._chunks:].copy()
        held = chunks.shape[0] - k  # chunks before this batch's first
        ends = held + np.arange(1, k + 1)  # chunks held after each new chunk
        tested = ends >= self._chunks
        if not tested.any():
            return EMPTY_POSITIONS, np.empty(0)
        ends = ends[tested]
        split = self.profile.statistic == "split"
        out = np.zeros(ends.size)
        means, sizes = [], []
        for s in self._scales:
            # each window summed from its own chunks: the same sum whatever the batches
            view = np.lib.stride_tricks.sliding_window_view(chunks, int(s), axis=0)
            mean = view[ends - s].sum(axis=-1) / (s * self.cadence)
            if split:  # all scales in one call (the cost of a test of a few rows)
                means.append(mean)
                sizes.append(np.full(ends.size, float(s * self.cadence)))
                continue
            y = mean @ self.profile.proj
            out = np.maximum(out, (s * self.cadence) * np.einsum("ij,ij->i", y, y))
        if split:
            z = split_scores(np.vstack(means), np.concatenate(sizes), self.profile.blocks)
            out = z.reshape(len(means), ends.size).max(axis=0)
        last_row = (np.flatnonzero(tested) + 1) * self.cadence - p - 1
        return last_row.astype(np.int64), out

    def statistics(self, rows: np.ndarray) -> np.ndarray:
        """The statistics of the tests that ``rows`` complete (state advances; calibration)."""
        return self._advance(rows)[1]

    def update(self, values: Any) -> np.ndarray:
        """Feed a batch (events x group columns, NaN/±inf: missing or invalid); return the
        positions in it at which an episode opened."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.profile.columns):
            raise DetectorError(f"{self.name}: expected a batch of shape (events, "
                                f"{len(self.profile.columns)}), got {x.shape}")
        ok = np.isfinite(x).all(axis=1)
        pos = np.flatnonzero(ok)
        self.close_positions = EMPTY_POSITIONS
        at, st = self._advance(x[pos])
        if st.size == 0:
            return EMPTY_POSITIONS
        self._stat = float(st[-1])
        rl = max(self.release * self._threshold, 0.0)
        opened, closed, self._active = episode_steps(
            st, np.ones(st.size), self._threshold, 0.0, rl, self.release_values,
            self.cadence, self._active, self._ist, self._fst)
        self._n_alarms += int(opened.sum())
        self.close_positions = pos[at[closed]]
        return pos[at[opened]]

    # -- read-only figures -------------------------------------------------------
    @property
    def statistic(self) -> float:
        return self._stat

    @property
    def threshold(self) -> float:
        return self._threshold

    @property
    def score(self) -> float:
        t = self._threshold
        return self._stat / t if 0 < t < math.inf else 0.0

    @property
    def p_value(self) -> float:
        return float(np.exp(self.log_p_values(np.array([self._stat]))[0]))

    def log_p_values(self, statistics: np.ndarray) -> np.ndarray:
        """Nominal log p-values: chi-square with ``dim`` degrees of freedom
        (``hotelling``), the normal tail of the largest block score (``split``)."""
        if self.profile.statistic == "split":
            return np.asarray(sstats.norm.logsf(statistics))
        return np.asarray(sstats.chi2.logsf(statistics, self.profile.dim))

    @property
    def drift_detected(self) -> bool:
        return self._active

    @property
    def n_alarms(self) -> int:
        return self._n_alarms

    @property
    def episode_peak(self) -> float:
        return float(self._fst[0])

    @property
    def window_rows(self) -> int:
        """Complete rows in the current window (at most ``window``)."""
        return min(self._ring.shape[0] * self.cadence + self._pending.shape[0], self.window)

    def summary(self) -> dict[str, Any]:
        return {"statistic": self._stat, "threshold": self._threshold,
                "p_value": self.p_value, "score": self.score, "drift": self._active,
                "alarms": self._n_alarms, "rows": self.n_rows, "window_rows": self.window_rows,
                "dim": self.profile.dim}

    # -- state -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Running state (the profile is the baseline's, not repeated here)."""
        return {"window": self.window, "cadence": self.cadence, "threshold": self._threshold,
                "name": self.name, "release": self.release,
                "release_values": self.release_values, "ring": self._ring.tolist(),
                "pending": self._pending.tolist(), "ist": self._ist.tolist(),
                "peak": float(self._fst[0]), "active": self._active, "stat": self._stat,
                "alarms": self._n_alarms, "rows": self.n_rows,
                "statistic": self.profile.statistic}

    @classmethod
    def from_dict(cls, data: Any, profile: JointProfile,
                  fresh: JointTest | None = None) -> JointTest:
        """Restore a test over ``profile``.  A state saved under another statistic than
        the profile's (a checkpoint of an embedding test from before the ``split``
        statistic, whose profile is learned afresh at start) keeps its window and
        counters but takes the threshold and episode settings of ``fresh`` (a new test of
        the current calibration), its statistic and peak starting from 0; without
        ``fresh`` it is refused."""
        try:
            saved = str(data.get("statistic", "hotelling")) if isinstance(data, dict) \
                else "hotelling"
            same = saved == profile.statistic
            if not same and fresh is None:
                raise DetectorError(f"joint test state of the {saved} statistic, the "
                                    f"profile's is {profile.statistic}")
            t = cls(profile, int(data["window"]), int(data["cadence"]),
                    float(data["threshold"]) if same or fresh is None else fresh.threshold,
                    str(data["name"]))
            if same or fresh is None:
                t.configure_episodes(float(data["release"]), int(data["release_values"]))
            else:
                t.release, t.release_values = fresh.release, fresh.release_values
            f, d = profile.n_features, len(profile.columns)
            t._ring = np.asarray(data["ring"], dtype=np.float64).reshape(-1, f)
            t._pending = np.asarray(data["pending"], dtype=np.float64).reshape(-1, d)
            t._ist = np.asarray(data["ist"], dtype=np.int64).reshape(4)
            t._fst = np.array([float(data["peak"]) if same else 0.0])
            t._active = bool(data["active"])
            t._stat = float(data["stat"]) if same else 0.0
            t._n_alarms = int(data["alarms"])
            t.n_rows = int(data["rows"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"not a serialised joint test: {exc}") from None
        if t._ring.shape[0] > t._chunks or t._pending.shape[0] >= t.cadence:
            raise DetectorError("joint test state: ring or pending rows too long")
        return t

    def __repr__(self) -> str:
        return (f"JointTest({self.name!r}, statistic={self._stat:.4g}, "
                f"threshold={self._threshold:.4g}, drift={self._active})")


def calibrate_joint(profile: JointProfile, window: int, cadence: int, target_events: float,
                    release: float = 0.5, release_values: int = 1000, seed: int = 0,
                    n_values: int = 2_000_000, n_paths: int = 32) -> Calibration:
    """The threshold of a :class:`JointTest` whose episodes under the null are
    ``target_events`` complete rows apart.

    Each path draws its rows from the profile's row sample and compares them with a
    reference resampled from the same rows (the bootstrap principle: the estimation
    error of the reference's feature mean and covariance, which inflates a Hotelling
    statistic, is part of the simulation), and their statistics are counted as in :func:`detectors.calibration.calibrate_window_test`:
    episodes read directly when the simulation sees :data:`MIN_EVENTS` of them at the
    target, else extrapolated on the nominal chi-square p-value scale from the tail.

    Examples
    --------
    >>> rng = np.random.default_rng(2)
    >>> prof = JointProfile.from_rows(GroupSpec("g", ("a", "b")), rng.normal(size=(4_000, 2)))
    >>> cal = calibrate_joint(prof, 200, 20, 5_000, n_values=200_000, n_paths=8)
    >>> cal.method, 2 < cal.threshold < 8
    ('direct', True)
    """
    if not target_events > 0:
        raise DetectorError(f"target_events must be > 0, got {target_events!r}")
    rng = np.random.default_rng(seed)
    per_path = max(n_values // n_paths, window * 4)
    m = profile.rows.shape[0]
    sim = JointTest(profile, window, cadence)
    sim.configure_episodes(release, release_values)
    paths = []
    step = 8 * window
    for _ in range(n_paths):
        # the bootstrap principle: the reference's rows play the truth, and each path's
        # reference is a resample of them, profiled afresh (its mean and whitening carry
        # the estimation error of a real reference's), while its stream is drawn from them
        t = JointTest(profile.refit(profile.rows[rng.integers(m, size=m)]), window, cadence)
        parts = []
        for start in range(0, per_path, step):
            idx = rng.integers(m, size=min(step, per_path - start))
            parts.append(t.statistics(profile.rows[idx]))
        paths.append(np.concatenate(parts))
    total = per_path * n_paths
    exposure = cadence * sum(max(s.size - 1, 0) for s in paths)
    allstats = np.concatenate(paths)
    floor = float(np.quantile(allstats, RELEASE_FLOOR_QUANTILE))
    cands = np.unique(allstats)
    counts = _upcrossing_counts(paths, cands)
    peak = int(np.argmax(counts))
    cands, counts = cands[peak:], counts[peak:]
    cands, counts = _episode_curve(sim, paths, allstats, cands, floor)  # type: ignore[arg-type]
    target_rate = 1.0 / target_events
    need = target_rate * exposure
    if need >= MIN_EVENTS:
        ok = (counts > 0) & (counts <= need * STEP_TOLERANCE)
        c, t_ = cands[ok], counts[ok]
        i = int(np.argmin(np.abs(np.log(t_ / exposure) - math.log(target_rate))))
        return Calibration(float(c[i]), float(target_events), "direct", total, int(t_[i]),
                           float(exposure / t_[i]), floor)
    tail = (counts >= MIN_EVENTS) & (counts <= max(40 * MIN_EVENTS, counts.max() // 20))
    if tail.sum() < 2:
        tail = counts >= MIN_EVENTS
    if tail.sum() < 2:
        return Calibration(float(allstats.max()) * 1.5, float(target_events), "floor", total,
                           0, math.inf, floor)
    lp = sim.log_p_values(cands[tail])
    lr = np.log(counts[tail] / exposure)
    slope, icpt = np.polyfit(lp, lr, 1)
    slope = max(float(slope), 0.25)
    want_lp = (math.log(target_rate) - icpt) / slope
    lo = float(cands[tail].max())
    hi = lo * 2 + 1.0
    while float(sim.log_p_values(np.array([hi]))[0]) > want_lp and hi < 1e12:
        hi *= 2
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if float(sim.log_p_values(np.array([mid]))[0]) > want_lp:
            lo = mid
        else:
            hi = mid
    return Calibration(hi, float(target_events), "extrapolated", total, 0,
                       float(target_events), floor)
