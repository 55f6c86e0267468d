"""Drift of an embedding column: a fixed-dimension vector per event (``type: vector``).

An embedding of 64 to 1,024 numbers per event is too wide to test jointly at a
bounded cost per event, and its single coordinates mean nothing on their own.
:class:`VectorProfile` therefore learns, once, on the reference:

* the reference's mean vector and its top ``components`` principal directions
  (eigenvectors of the covariance of a sample of the reference vectors);

and maps every live vector ``x`` to ``components + 1`` numbers: its coordinates on
those directions, ``(x - mean) @ basis``, and its squared reconstruction residual
``|x - mean|² - |coordinates|²`` (what the directions do not explain; the
statistic of NannyML's PCA reconstruction-error monitor).  These rows are then
watched by the multivariate detector (:mod:`detectors.multivariate`): a
:class:`DiagonalProfile` (a :class:`~detectors.multivariate.JointProfile` whose
features are each projected column and its square: means and spreads of the
projection, ``2 (components + 1)`` features, 18 at the default 8) and its
sliding-window Hotelling test, calibrated by :func:`calibrate_vector` with the
same bootstrap and the same false-alarm knob as a multivariate group.

Why not all pairwise products (the groups' ``moments``)?  The principal
coordinates are uncorrelated on the reference, and on the issue's scenario (one
of 8 clusters in 64-d going from 12.5 % to 25 %, window 500, 1e6 budget, 10
seeds) the median delay was 874 events with all products (54 features), 449 with
values and squares, 374 with values alone; values and squares keep most of the
power and still see a change of spread along a direction.

A third block watches the shares of the reference's clusters: :func:`kmeans`
finds :data:`SHARE_CLUSTERS` centres of the reference's principal coordinates,
each live vector counts for its nearest centre, and the block's score is the
largest binomial ``|z|`` of one centre's share in the window, Bonferroni-corrected
over the centres and put on the normal scale
(:func:`detectors.joint_blocks.share_block`).  A Hotelling statistic over the
means pays for a change of one cluster's share with the ``k - 1`` directions the
shares span; one share at a time pays for one.  On the issue's scenario (matched
ARL0 450, window 200, cadence 10, 300 change streams on each of 3 seeds) the median
delay went from 64, 89 and 69 events to 59, 59 and 49.  Profiles saved before it
have no centres and keep the two blocks.

The same nearest centres also feed a sequential test (:mod:`detectors.share_cusum`):
one Bernoulli CUSUM per cluster on the indicator "nearest to this centre", the
log-likelihood ratio of the share doubling, the largest of the ``k`` sums tested at every
vector (not every ``cadence`` vectors).  An episode of the :class:`VectorTest` is open
while the joint test's or the CUSUM's is; :func:`calibrate_vector` gives the CUSUM
:data:`SHARE_BUDGET` of the false-alarm budget and the joint test the rest, as a rule, and
calibrates the union of the two as one test (:mod:`detectors.vector_calibration`).  On the
issue's scenario against Alibi Detect (window 100, cadence 10, ARL0 444 for the peers'
441, 60 change streams on each of 3 seeds) the pooled median delay went from 59 events
(68 % of the streams lost to a false alarm before the change) to 53 (62 % lost), which is
what a CUSUM told each vector's true cluster reaches at that ARL0 (53, simulated);
with half the budget it was 60.

Cost per event: one ``dim x components`` product, the distances to the centres
and the joint test of ``2 (components + 1)`` features, independent of the window, and
the ``k`` CUSUM steps (the share block costs 1.16x the two blocks alone in batches of
1,000; the CUSUM 1.05x more: 0.90 against 0.87 µs per vector, CPU time, best of 5;
1.4x fed one vector per call, 68 against 49 µs).  Measured figures are in ``docs/embeddings.md``
and ``docs/benchmarks.md``.

A change that lives only outside the top directions and leaves the residual's
distribution alone is not seen; a change in the share of a cluster of the
reference moves the mean along the directions that separate the clusters, which
the top components span when the clusters dominate the variance.

A vector that is missing, of the wrong dimension or holds a non-number is never
fed (the decoder counts it by reason, :mod:`stream.formats.vectors`); in
:meth:`VectorTest.update` a row with a non-finite value is skipped like an
incomplete row of a group.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from detectors.base import EMPTY_POSITIONS
from detectors.calibration import Calibration
from detectors.errors import DetectorError
from detectors.joint_blocks import blocks_of, share_block
from detectors.multivariate import (
    EIG_FLOOR,
    MIN_ROWS,
    GroupSpec,
    JointProfile,
    JointTest,
    calibrate_joint,
)
from detectors.share_cusum import ShareCusum, nearest_labels
from detectors.vector_calibration import (
    calibrate_joint_run_length,
    calibrate_union_episodes,
    calibrate_union_run_length,
)

#: default number of principal directions kept
DEFAULT_COMPONENTS = 8
#: largest number of principal directions (the joint test's features grow as its square)
MAX_COMPONENTS = 32
#: reference vectors the principal directions are learned from (a uniform sample)
PCA_SAMPLE = 20_000
#: clusters of the reference's principal coordinates whose shares are tested one by one
SHARE_CLUSTERS = 8
#: share of a vector column's false-alarm budget given to its share CUSUM
#: (:mod:`detectors.share_cusum`); the joint test of the window has the rest (the split of
#: the parts' own rates; the union is calibrated as one test)
SHARE_BUDGET = 0.8


class DiagonalProfile(JointProfile):
    """A joint profile whose features are the standardised columns and their squares (no
    cross products): the means and spreads of each column, jointly whitened; with
    ``centres`` (clusters of the reference's principal coordinates, the last column, the
    residual, left out), also the one-hot of each row's nearest centre, whose window
    shares are tested one cluster at a time (:func:`detectors.joint_blocks.share_block`)."""

    def __init__(self, *args: Any, centres: np.ndarray | None = None, **kw: Any) -> None:
        self.centres = None if centres is None else np.asarray(centres, dtype=np.float64)
        super().__init__(*args, **kw)
        if self.centres is not None and self.statistic == "split":
            d = len(self.columns)
            f = self.features(self.rows)
            self.blocks = [*blocks_of(f[:, :2 * d], d, EIG_FLOOR),
                           share_block(f[:, 2 * d:], 2 * d)]

    def _nearest(self, rows: np.ndarray) -> np.ndarray:
        assert self.centres is not None
        return np.asarray(sq_distances(rows[:, :-1], self.centres).argmin(axis=1))

    def labels(self, rows: np.ndarray) -> np.ndarray:
        """The nearest centre of each projected row (the share CUSUM's input)."""
        return self._nearest(rows)

    def shares(self) -> np.ndarray:
        """The reference sample's share of each centre (floored at 1 / (4 rows))."""
        if getattr(self, "_shares", None) is None:
            assert self.centres is not None
            lab = self.labels(self.rows)
            m = max(lab.size, 1)
            self._shares = np.maximum(np.bincount(lab, minlength=self.centres.shape[0]) / m,
                                      1.0 / (4.0 * m))
        return np.asarray(self._shares)

    def features(self, rows: np.ndarray) -> np.ndarray:
        z = self.standardise(rows)
        if self.centres is None:
            return np.hstack([z, z * z])
        onehot = np.eye(self.centres.shape[0])[self._nearest(rows)]
        return np.hstack([z, z * z, onehot])

    def chunk_sums(self, rows: np.ndarray, size: int) -> np.ndarray:
        k = rows.shape[0] // size
        zc = self.standardise(rows).reshape(k, size, -1)
        parts = [zc.sum(axis=1), (zc * zc).sum(axis=1)]
        if self.centres is not None:
            m = self.centres.shape[0]
            near = self._nearest(rows).reshape(k, size) + m * np.arange(k)[:, None]
            parts.append(np.bincount(near.ravel(), minlength=k * m).reshape(k, m))
        return np.hstack(parts) - size * self.mean

    @property
    def n_features(self) -> int:
        return 2 * len(self.columns) + (0 if self.centres is None else self.centres.shape[0])

    def refit(self, rows: np.ndarray) -> DiagonalProfile:
        return DiagonalProfile(self.columns, self.method, self.lo, self.hi, self.center,
                               self.scale, None, rows, rows.shape[0], self.statistic,
                               centres=self.centres)

    def with_centres(self, centres: np.ndarray | None) -> DiagonalProfile:
        """The same profile with the share block of ``centres``."""
        return DiagonalProfile(self.columns, self.method, self.lo, self.hi, self.center,
                               self.scale, None, self.rows, self.n_ref, self.statistic,
                               centres=centres)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "method": "diagonal",
                "centres": None if self.centres is None else self.centres.tolist()}

    @classmethod
    def from_dict(cls, data: Any) -> DiagonalProfile:
        if not isinstance(data, dict) or data.get("method") != "diagonal":
            raise DetectorError("not a diagonal joint profile")
        prof = super().from_dict({**data, "method": "moments"})
        assert isinstance(prof, DiagonalProfile)
        if data.get("centres") is None:  # profiles saved before the share block
            return prof
        try:
            centres = np.asarray(data["centres"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DetectorError(f"not a diagonal joint profile: {exc}") from None
        if centres.ndim != 2 or centres.shape[1] != len(prof.columns) - 1 \
                or centres.shape[0] < 2 or not np.isfinite(centres).all():
            raise DetectorError("diagonal joint profile: centres must be at least 2 finite "
                                f"rows of {len(prof.columns) - 1} values")
        return prof.with_centres(centres)


def sq_distances(y: np.ndarray, c: np.ndarray, yy: np.ndarray | None = None) -> np.ndarray:
    """Squared Euclidean distances of the rows ``y`` to the rows ``c`` (``yy``: the rows'
    squared norms, when already known)."""
    if yy is None:
        yy = np.einsum("ij,ij->i", y, y)
    return np.asarray(yy[:, None] - 2.0 * (y @ c.T) + np.einsum("ij,ij->i", c, c)[None, :])


def kmeans(y: np.ndarray, k: int, seed: int = 0, restarts: int = 5,
           iterations: int = 30) -> np.ndarray:
    """``k`` centres of the rows ``y`` (k-means++ starts, Lloyd's iterations, the lowest
    within-cluster sum of squares of ``restarts``)."""
    rng = np.random.default_rng(seed)
    yy = np.einsum("ij,ij->i", y, y)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(restarts):
        c = y[[int(rng.integers(y.shape[0]))]]
        while c.shape[0] < k:
            d2 = np.maximum(sq_distances(y, c, yy).min(axis=1), 0.0)
            pick = int(rng.choice(y.shape[0], p=d2 / d2.sum())) if d2.sum() > 0 \
                else int(rng.integers(y.shape[0]))
            c = np.vstack([c, y[pick]])
        for _ in range(iterations):
            d2 = sq_distances(y, c, yy)
            near = d2.argmin(axis=1)
            sums = np.zeros_like(c)
            np.add.at(sums, near, y)
            counts = np.bincount(near, minlength=k)
            c = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        inertia = float(np.maximum(d2.min(axis=1), 0.0).sum())
        if best is None or inertia < best[0]:
            best = (inertia, c)
    assert best is not None
    return best[1]


@dataclass(frozen=True)
class VectorSpec:
    """An embedding column: its name, dimension and the directions kept."""

    name: str
    dim: int
    components: int = DEFAULT_COMPONENTS

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise DetectorError(f"vector {self.name}: dim must be at least 2, got {self.dim}")
        if not 1 <= self.components <= min(MAX_COMPONENTS, self.dim):
            raise DetectorError(f"vector {self.name}: components must be between 1 and "
                                f"{min(MAX_COMPONENTS, self.dim)}, got {self.components}")

    @property
    def projected_columns(self) -> tuple[str, ...]:
        """Names of the projected columns (principal coordinates, then the residual)."""
        return (*(f"{self.name}.pc{i}" for i in range(self.components)),
                f"{self.name}.residual")


class VectorProfile:
    """The reference of an embedding column: mean, principal directions and the joint
    profile of its projected rows.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(2_000, 16)) * np.linspace(3, 1, 16)
    >>> prof = VectorProfile.from_matrix(VectorSpec("emb", 16, 4), x)
    >>> prof.project(x[:5]).shape, prof.joint.method
    ((5, 5), 'moments')
    >>> VectorProfile.from_dict(prof.to_dict()).basis.shape
    (16, 4)
    """

    def __init__(self, spec: VectorSpec, mean: np.ndarray, basis: np.ndarray,
                 joint: DiagonalProfile, explained: float) -> None:
        self.spec = spec
        self.mean = np.asarray(mean, dtype=np.float64)
        self.basis = np.ascontiguousarray(basis, dtype=np.float64)
        self.joint = joint
        #: share of the reference's total variance the kept directions explain
        self.explained = float(explained)

    @classmethod
    def from_matrix(cls, spec: VectorSpec, x: np.ndarray, sample: int = 10_000,
                    seed: int = 0) -> VectorProfile:
        """Profile the reference vectors ``x`` (events x dim; rows with a non-finite
        value are left out)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != spec.dim:
            raise DetectorError(f"vector {spec.name}: the reference must be events x "
                                f"{spec.dim} values, got shape {x.shape}")
        x = x[np.isfinite(x).all(axis=1)]
        if x.shape[0] < MIN_ROWS:
            raise DetectorError(f"vector {spec.name}: the reference has {x.shape[0]} valid "
                                f"vectors; at least {MIN_ROWS} are needed")
        rng = np.random.default_rng(seed)
        fit = x if x.shape[0] <= PCA_SAMPLE else x[rng.choice(x.shape[0], PCA_SAMPLE,
                                                              replace=False)]
        mean = fit.mean(axis=0)
        cov = np.cov(fit - mean, rowvar=False)
        w, v = np.linalg.eigh(cov)
        order = np.argsort(w)[::-1][:spec.components]
        basis = v[:, order]
        # a deterministic sign per direction (its largest loading positive)
        signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
        basis = basis * np.where(signs == 0, 1.0, signs)
        total = float(w.clip(min=0).sum())
        explained = float(w[order].clip(min=0).sum() / total) if total > 0 else 1.0
        proj = _project(x, mean, basis)
        joint = DiagonalProfile.from_rows(
            GroupSpec(spec.name, spec.projected_columns, "moments"), proj, sample, seed)
        assert isinstance(joint, DiagonalProfile)
        if SHARE_CLUSTERS >= 2:
            joint = joint.with_centres(kmeans(joint.rows[:, :-1], SHARE_CLUSTERS, seed))
        return cls(spec, mean, basis, joint, explained)

    def project(self, x: np.ndarray) -> np.ndarray:
        """The projected rows (events x components + 1) of vectors ``x`` (events x dim);
        a row with a non-finite value stays non-finite."""
        return _project(np.asarray(x, dtype=np.float64), self.mean, self.basis)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.spec.name, "dim": self.spec.dim,
                "components": self.spec.components, "mean": self.mean.tolist(),
                "basis": self.basis.tolist(), "explained": self.explained,
                "joint": self.joint.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> VectorProfile:
        try:
            spec = VectorSpec(str(data["name"]), int(data["dim"]), int(data["components"]))
            mean = np.asarray(data["mean"], dtype=np.float64)
            basis = np.asarray(data["basis"], dtype=np.float64)
            explained = float(data["explained"])
            joint = DiagonalProfile.from_dict(data["joint"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"not a vector profile: {exc}") from None
        if mean.shape != (spec.dim,) or basis.shape != (spec.dim, spec.components) \
                or not (np.isfinite(mean).all() and np.isfinite(basis).all()) \
                or joint.columns != spec.projected_columns:
            raise DetectorError(f"vector profile {spec.name}: mean, basis and projected "
                                f"columns do not agree with dim {spec.dim} and "
                                f"{spec.components} components")
        return cls(spec, mean, basis, joint, explained)


def _project(x: np.ndarray, mean: np.ndarray, basis: np.ndarray) -> np.ndarray:
    c = x - mean
    coords = c @ basis
    resid = np.einsum("ij,ij->i", c, c) - np.einsum("ij,ij->i", coords, coords)
    return np.column_stack([coords, np.maximum(resid, 0.0, where=np.isfinite(resid),
                                               out=resid)])


@dataclass(frozen=True)
class VectorCalibration(Calibration):
    """The joint test's calibration (its fields) and the share CUSUM's (``share``; None
    for a profile without centres)."""

    share: Calibration | None = None

    @property
    def share_threshold(self) -> float:
        return math.inf if self.share is None else self.share.threshold

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(),
                "share": None if self.share is None else self.share.to_dict()}


def calibrate_vector(profile: VectorProfile, window: int, cadence: int, target_events: float,
                     release: float = 0.5, release_values: int = 1000, seed: int = 0,
                     n_values: int = 2_000_000, n_paths: int = 32,
                     run_length: bool = False) -> VectorCalibration:
    """The thresholds of a :class:`VectorTest` whose episodes under the null are
    ``target_events`` valid vectors apart (``run_length``: whose mean run length from a
    fresh test to its first alarm is, a test restarted after each alarm).  For a profile
    with centres the joint test and the share CUSUM are calibrated together
    (:mod:`detectors.vector_calibration`: their union simulated on the same null paths,
    the budget split :data:`SHARE_BUDGET` to the CUSUM as a rule, a common factor solved
    so that the union meets the target); without, the joint test's
    (:func:`detectors.multivariate.calibrate_joint` on the projected reference rows; the
    directions are a fixed map)."""
    joint = profile.joint
    share = SHARE_BUDGET if joint.centres is not None and SHARE_BUDGET > 0 else 0.0
    if not share:
        cal = calibrate_joint_run_length(joint, window, cadence, target_events, seed,
                                         n_values, n_paths) if run_length else None
        if cal is None:
            cal = calibrate_joint(joint, window, cadence, target_events, release,
                                  release_values, seed, n_values, n_paths)
        return VectorCalibration(**asdict(cal))
    if not target_events > 0:
        raise DetectorError(f"target_events must be > 0, got {target_events!r}")
    parts = None
    if run_length:
        parts = calibrate_union_run_length(joint, window, cadence, target_events, share, seed,
                                           n_values, n_paths)
    if parts is None:
        parts = calibrate_union_episodes(joint, window, cadence, target_events, share,
                                         release, release_values, seed, n_values, n_paths)
    return VectorCalibration(**asdict(parts[0]), share=parts[1])


def union_episodes(was: tuple[bool, bool], parts: list[tuple[np.ndarray, np.ndarray]],
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(positions opened, positions closed) of the union of two episode processes, active
    ``was`` before the batch, each opening and closing at the positions of ``parts``
    (at one position an opening counts before a closing)."""
    events = sorted((int(p), kind, who) for who, (o, c) in enumerate(parts)
                    for kind, ps in enumerate((o, c)) for p in ps.tolist())
    state = list(was)
    opened, closed = [], []
    for p, kind, who in events:
        before = state[0] or state[1]
        state[who] = kind == 0
        after = state[0] or state[1]
        if after and not before:
            opened.append(p)
        elif before and not after:
            closed.append(p)
    return np.asarray(opened, dtype=np.int64), np.asarray(closed, dtype=np.int64)


class VectorTest:
    """The joint test of an embedding column's projection and, with ``share_threshold``
    (a profile with centres), the share CUSUM of its clusters; an episode is open while
    either is.

    ``update`` takes a batch of vectors (events x dim; a row with a non-finite value is
    skipped) and returns the positions at which an episode opened, as
    :class:`~detectors.multivariate.JointTest` does; ``statistic``, ``threshold`` and
    ``score`` are those of the part with the higher score.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> centres = rng.normal(size=(4, 16)) * 3
    >>> def draw(n, p): return centres[rng.choice(4, n, p=p)] + rng.normal(size=(n, 16))
    >>> prof = VectorProfile.from_matrix(VectorSpec("emb", 16, 4), draw(4_000, [.25] * 4))
    >>> t = VectorTest(prof, window=500, cadence=50, threshold=8.0, share_threshold=12.0)
    >>> t.configure_episodes(0.5, 500)
    >>> t.update(draw(1_000, [.25] * 4)).size, t.update(draw(1_000, [.55, .15, .15, .15])).size
    (0, 1)
    """

    kind = "joint"

    def __init__(self, profile: VectorProfile, window: int = 1000, cadence: int = 50,
                 threshold: float = math.inf, name: str = "",
                 share_threshold: float = math.inf) -> None:
        self.profile = profile
        self.test = JointTest(profile.joint, window, cadence, threshold,
                              name or profile.spec.name)
        self.close_positions = EMPTY_POSITIONS
        self.cusum: ShareCusum | None = None
        if profile.joint.centres is not None and math.isfinite(share_threshold):
            self.cusum = ShareCusum(profile.joint.shares(), share_threshold,
                                    self.test.release_values)
        self._active = False
        self._n_alarms = 0

    def configure_episodes(self, release: float, release_values: int) -> None:
        self.test.configure_episodes(release, release_values)
        if self.cusum is not None:
            self.cusum.release_values = max(int(release_values), 1)

    def update(self, vectors: Any) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.profile.spec.dim:
            raise DetectorError(f"{self.test.name}: expected a batch of shape (events, "
                                f"{self.profile.spec.dim}), got {x.shape}")
        rows = self.profile.project(x)
        if self.cusum is None:
            opened = self.test.update(rows)
            self.close_positions = self.test.close_positions
            return opened
        was = (self.test.drift_detected, self.cusum.active)
        wo = self.test.update(rows)
        wc = self.test.close_positions
        assert self.profile.joint.centres is not None
        co, cc = self.cusum.update(nearest_labels(rows, self.profile.joint.centres))
        if wo.size + wc.size + co.size + cc.size == 0:
            self._active = was[0] or was[1]
            self.close_positions = EMPTY_POSITIONS
            return EMPTY_POSITIONS
        opened, closed = union_episodes(was, [(wo, wc), (co, cc)])
        self._active = self.test.drift_detected or self.cusum.active
        self._n_alarms += opened.size
        self.close_positions = closed
        return opened

    def _lead(self) -> Any:
        c = self.cusum
        return c if c is not None and c.score > self.test.score else self.test

    @property
    def statistic(self) -> float:
        return float(self._lead().statistic)

    @property
    def threshold(self) -> float:
        return float(self._lead().threshold)

    @property
    def score(self) -> float:
        return float(self._lead().score)

    @property
    def drift_detected(self) -> bool:
        return self._active if self.cusum is not None else self.test.drift_detected

    @property
    def n_alarms(self) -> int:
        return self._n_alarms if self.cusum is not None else self.test.n_alarms

    @property
    def episode_peak(self) -> float:
        """The joint test's peak, or the CUSUM's on the joint test's scale if higher
        relative to its threshold."""
        t, c = self.test, self.cusum
        if c is None or not 0 < c.threshold < math.inf or not 0 < t.threshold < math.inf:
            return t.episode_peak
        return max(t.episode_peak, float(c.peak[0]) / c.threshold * t.threshold)

    def summary(self) -> dict[str, Any]:
        out = {**self.test.summary(), "dim": self.profile.spec.dim,
               "components": self.profile.spec.components,
               "explained": self.profile.explained}
        if self.cusum is not None:
            out.update(drift=self._active, alarms=self._n_alarms,
                       share_statistic=self.cusum.statistic,
                       share_threshold=self.cusum.threshold, share_alarms=self.cusum.n_alarms)
        return out

    def to_dict(self) -> dict[str, Any]:
        out = self.test.to_dict()
        if self.cusum is not None:
            out["share_cusum"] = {**self.cusum.to_dict(), "active": self._active,
                                  "alarms": self._n_alarms}
        return out

    @classmethod
    def from_dict(cls, data: Any, profile: VectorProfile,
                  fresh: VectorTest | None = None) -> VectorTest:
        """As :meth:`JointTest.from_dict` (``fresh``: a new test of the current
        calibration, for a state saved under another statistic, or without the share
        CUSUM's state: then it starts from 0; its threshold and release are ``fresh``'s,
        else the saved ones)."""
        saved = data.get("share_cusum") if isinstance(data, dict) else None
        if fresh is not None and fresh.cusum is not None:
            share = fresh.cusum.threshold
        elif fresh is None and isinstance(saved, dict):
            share = math.inf if saved.get("threshold") is None else float(saved["threshold"])
        else:
            share = math.inf
        t = cls(profile, share_threshold=share)
        t.test = JointTest.from_dict(data, profile.joint,
                                     None if fresh is None else fresh.test)
        if t.cusum is not None:
            t.cusum.release_values = (fresh.cusum.release_values
                                      if fresh is not None and fresh.cusum is not None
                                      else t.test.release_values)
            t._active, t._n_alarms = t.test.drift_detected, t.test.n_alarms
            if isinstance(saved, dict):
                t.cusum.restore(saved)
                try:
                    t._active, t._n_alarms = bool(saved["active"]), int(saved["alarms"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise DetectorError(f"not a serialised vector test: {exc}") from None
        return t
