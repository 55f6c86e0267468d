"""Baseline profiles: what a column looked like in the reference data.

A profile is a mergeable sketch: two profiles built on two halves of the data
merge into (within the documented error) the profile of the whole.

* :class:`NumericProfile` keeps exact count, missing/invalid counts, mean and
  variance (Chan's parallel update), min and max, and a uniform reservoir
  sample of at most ``reservoir_size`` values.  Quantiles, quantile bin edges
  and bin probabilities are derived from the reservoir; while the reference has
  no more values than the reservoir holds they are exact, otherwise each bin
  probability has a standard error of about ``sqrt(p (1 - p) / reservoir_size)``.
* :class:`CategoricalProfile` keeps exact counts of up to ``max_tracked``
  categories (beyond that the rarest are folded into an *other* bucket and
  ``truncated`` is set), plus missing and invalid counts.  The drift tests use
  the ``top_k`` most frequent categories and one *other* bucket.

Profiles serialise to plain JSON data with a schema version.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from detectors.base import as_float_batch
from detectors.errors import DetectorError

SCHEMA_VERSION = 1
QUANTILE_LEVELS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
#: ADWIN's and the CUSUM's input is winsorised to these quantiles of the baseline
#: (see :func:`adwin_clip`)
ADWIN_CLIP_QUANTILE = 0.001


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DetectorError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise DetectorError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)


class NumericProfile:
    """Mergeable profile of a numeric column.

    Parameters
    ----------
    bins : int
        Number of quantile bins used by the window tests and distances.
    reservoir_size : int
        Capacity of the uniform reservoir sample of reference values.
    seed : int
        Seed of the reservoir sampling, for reproducible baselines.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(10.0, 2.0, 20_000)
    >>> whole = NumericProfile.from_values(x, bins=8)
    >>> a = NumericProfile.from_values(x[:10_000], bins=8)
    >>> merged = a.merge(NumericProfile.from_values(x[10_000:], bins=8))
    >>> merged.count, round(merged.mean, 6) == round(whole.mean, 6)
    (20000, True)
    >>> len(merged.bin_probabilities)
    8
    """

    kind = "numeric"

    def __init__(self, bins: int = 32, reservoir_size: int = 10_000, seed: int = 0) -> None:
        self.bins = _check_int("bins", bins, 2, 4096)
        self.reservoir_size = _check_int("reservoir_size", reservoir_size, 10, 10_000_000)
        self.seed = int(seed)
        self.count = 0
        self.n_missing = 0
        self.n_invalid = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self._reservoir = np.empty(0, dtype=np.float64)
        self._derived: dict[str, Any] | None = None

    # -- building -----------------------------------------------------------
    @classmethod
    def from_values(
        cls, values: Any, bins: int = 32, reservoir_size: int = 10_000, seed: int = 0
    ) -> NumericProfile:
        """Build a profile from an array, or an iterable of arrays (chunks)."""
        prof = cls(bins=bins, reservoir_size=reservoir_size, seed=seed)
        if isinstance(values, np.ndarray) or not isinstance(values, Iterable):
            prof.update(values)
        else:
            chunks = list(values)
            if chunks and np.ndim(chunks[0]) == 0:
                prof.update(np.asarray(chunks, dtype=np.float64))
            else:
                for chunk in chunks:
                    prof.update(chunk)
        return prof

    def update(self, values: Any) -> NumericProfile:
        """Add a batch of values (NaN missing, ±inf invalid)."""
        x = as_float_batch(values, "reference values")
        nan = np.isnan(x)
        finite = np.isfinite(x)
        part = NumericProfile(self.bins, self.reservoir_size, self.seed + self.count + 1)
        part.n_missing = int(nan.sum())
        part.n_invalid = int(x.size - part.n_missing - finite.sum())
        v = x[finite]
        if v.size:
            part.count = int(v.size)
            part.mean = float(v.mean())
            part._m2 = float(((v - part.mean) ** 2).sum())
            part.min = float(v.min())
            part.max = float(v.max())
            if v.size > self.reservoir_size:
                rng = np.random.default_rng(part.seed)
                v = rng.choice(v, self.reservoir_size, replace=False)
            part._reservoir = np.array(v, dtype=np.float64)
        merged = self.merge(part)
        self.__dict__.update(merged.__dict__)
        return self

    def merge(self, other: NumericProfile) -> NumericProfile:
        """Return the profile of the union of both profiles' data."""
        if not isinstance(other, NumericProfile):
            raise DetectorError("can only merge a NumericProfile with a NumericProfile")
        out = NumericProfile(self.bins, self.reservoir_size, self.seed)
        out.n_missing = self.n_missing + other.n_missing
        out.n_invalid = self.n_invalid + other.n_invalid
        n = self.count + other.count
        out.count = n
        if n:
            delta = other.mean - self.mean
            out.mean = self.mean + delta * other.count / n
            out._m2 = self._m2 + other._m2 + delta * delta * self.count * other.count / n
            out.min = min(self.min, other.min)
            out.max = max(self.max, other.max)
        out._reservoir = _merge_reservoirs(
            self._reservoir, self.count, other._reservoir, other.count,
            self.reservoir_size, seed=self.seed * 1_000_003 + n,
        )
        return out

    # -- derived figures ----------------------------------------------------
    @property
    def missing_rate(self) -> float:
        total = self.count + self.n_missing
        return self.n_missing / total if total else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / (self.count - 1)) if self.count > 1 else 0.0

    @property
    def reservoir(self) -> np.ndarray:
        """Read-only view of the reservoir sample."""
        view = self._reservoir.view()
        view.flags.writeable = False
        return view

    def _derive(self) -> dict[str, Any]:
        if self._derived is None:
            r = np.sort(self._reservoir)
            if r.size == 0:
                self._derived = {"quantiles": {}, "edges": np.empty(0), "probs": np.ones(1)}
            else:
                qs = {f"{q:g}": float(np.quantile(r, q)) for q in QUANTILE_LEVELS}
                levels = np.arange(1, self.bins) / self.bins
                edges = np.unique(np.quantile(r, levels, method="inverted_cdf"))
                # a bin edge equal to the maximum would leave an empty last bin
                edges = edges[edges < r[-1]]
                idx = np.searchsorted(edges, r, side="left")
                probs = np.bincount(idx, minlength=edges.size + 1) / r.size
                self._derived = {"quantiles": qs, "edges": edges, "probs": probs}
        return self._derived

    @property
    def quantiles(self) -> dict[str, float]:
        return dict(self._derive()["quantiles"])

    @property
    def bin_edges(self) -> np.ndarray:
        """Upper edges of the bins; bin ``k`` holds ``edges[k-1] < x <= edges[k]``."""
        return np.array(self._derive()["edges"])

    @property
    def bin_probabilities(self) -> np.ndarray:
        """Reference probability of each bin (``len(bin_edges) + 1`` entries)."""
        return np.array(self._derive()["probs"])

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of each (finite) value."""
        return np.searchsorted(self._derive()["edges"], values, side="left")

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Bootstrap draw from the reservoir (used for calibration)."""
        if self._reservoir.size == 0:
            raise DetectorError("cannot sample from an empty numeric profile")
        return rng.choice(self._reservoir, size, replace=True)

    # -- state ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = self._derive()
        return {
            "schema_version": SCHEMA_VERSION,
            "type": "numeric",
            "bins": self.bins,
            "reservoir_size": self.reservoir_size,
            "seed": self.seed,
            "count": self.count,
            "missing": self.n_missing,
            "invalid": self.n_invalid,
            "missing_rate": self.missing_rate,
            "mean": self.mean,
            "std": self.std,
            "m2": self._m2,
            "min": self.min if self.count else None,
            "max": self.max if self.count else None,
            "quantiles": d["quantiles"],
            "bin_edges": [float(e) for e in d["edges"]],
            "bin_probabilities": [float(p) for p in d["probs"]],
            "reservoir": [float(v) for v in self._reservoir],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericProfile:
        """Restore a profile; DetectorError naming the field for anything
        :meth:`to_dict` would not have written (wrong types, non-finite or negative
        figures, derived figures that disagree with the ones they derive from)."""
        _check_schema(data, "numeric")
        p = cls(_field(data, "bins"), _field(data, "reservoir_size"), data.get("seed", 0))
        p.count = _count(data, "count")
        p.n_missing = _count(data, "missing")
        p.n_invalid = _count(data, "invalid", 0)
        p.mean = _finite(data, "mean")
        p._m2 = _finite(data, "m2", low=0.0)
        if "std" in data and not _close(_finite(data, "std", low=0.0), p.std):
            raise DetectorError(f"numeric profile: std {data['std']!r} does not match m2 and "
                                f"count (they give {p.std!r})")
        if "missing_rate" in data and not _close(_finite(data, "missing_rate", 0.0),
                                                 p.missing_rate):
            raise DetectorError(f"numeric profile: missing_rate {data['missing_rate']!r} does "
                                f"not match missing and count (they give {p.missing_rate!r})")
        if p.count == 0:
            if _field(data, "min") is not None or _field(data, "max") is not None:
                raise DetectorError("numeric profile: min and max must be null when count is 0")
        else:
            p.min, p.max = _finite(data, "min"), _finite(data, "max")
            if p.min > p.max:
                raise DetectorError(f"numeric profile: min {p.min!r} > max {p.max!r}")
        p._reservoir = _floats(data, "reservoir")
        if p._reservoir.size > min(p.count, p.reservoir_size) or (p.count and
                                                                   not p._reservoir.size):
            raise DetectorError(f"numeric profile: reservoir has {p._reservoir.size} values "
                                f"for count {p.count} and reservoir_size {p.reservoir_size}")
        quantiles = _field(data, "quantiles")
        if not isinstance(quantiles, Mapping) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in quantiles.values()):
            raise DetectorError("numeric profile: quantiles must map levels to finite numbers")
        edges = _floats(data, "bin_edges")
        probs = _floats(data, "bin_probabilities")
        if edges.size >= p.bins or np.any(np.diff(edges) <= 0):
            raise DetectorError(f"numeric profile: bin_edges must be fewer than bins "
                                f"({p.bins}) increasing numbers")
        if probs.size != edges.size + 1 or np.any(probs < 0) or abs(probs.sum() - 1.0) > 1e-6:
            raise DetectorError("numeric profile: bin_probabilities must be len(bin_edges) + 1 "
                                "non-negative numbers summing to 1")
        p._derived = {"quantiles": dict(quantiles), "edges": edges, "probs": probs}
        return p

    def __repr__(self) -> str:
        return (
            f"NumericProfile(count={self.count}, mean={self.mean:.4g}, std={self.std:.4g}, "
            f"missing_rate={self.missing_rate:.3g}, bins={len(self.bin_probabilities)})"
        )


class CategoricalProfile:
    """Mergeable profile of a categorical column.

    Parameters
    ----------
    top_k : int
        Number of most frequent categories the drift test keeps apart; the rest
        share one *other* bucket.
    max_tracked : int
        Number of distinct categories counted exactly; beyond it the rarest are
        folded into ``other_count`` and ``truncated`` becomes true.

    Examples
    --------
    >>> import numpy as np
    >>> p = CategoricalProfile.from_values(np.array(["a", "b", "a", None, "c"], dtype=object), top_k=2)
    >>> p.count, p.n_missing, p.categories
    (4, 1, ['a', 'b'])
    >>> [round(float(x), 3) for x in p.bin_probabilities]
    [0.5, 0.25, 0.25]
    """

    kind = "categorical"

    def __init__(self, top_k: int = 50, max_tracked: int = 10_000) -> None:
        self.top_k = _check_int("top_k", top_k, 1, 100_000)
        self.max_tracked = _check_int("max_tracked", max_tracked, self.top_k, 10_000_000)
        self.counts: dict[str, int] = {}
        self.other_count = 0
        self.truncated = False
        self.count = 0
        self.n_missing = 0
        self.n_invalid = 0

    @classmethod
    def from_values(cls, values: Any, top_k: int = 50, max_tracked: int = 10_000) -> CategoricalProfile:
        prof = cls(top_k=top_k, max_tracked=max_tracked)
        prof.update(values)
        return prof

    def update(self, values: Any) -> CategoricalProfile:
        """Add a batch of category values (``None`` or NaN is missing)."""
        arr = np.asarray(values, dtype=object).reshape(-1)
        present = np.array([v is not None and not (isinstance(v, float) and v != v) for v in arr],
                           dtype=bool) if arr.size else np.zeros(0, dtype=bool)
        self.n_missing += int(arr.size - present.sum())
        vals = arr[present]
        if vals.size:
            cats, cnt = np.unique(vals.astype(str), return_counts=True)
            for c, n in zip(cats.tolist(), cnt.tolist(), strict=True):
                self.counts[c] = self.counts.get(c, 0) + n
            self.count += int(vals.size)
            self._prune()
        return self

    def _prune(self) -> None:
        if len(self.counts) > self.max_tracked:
            keep = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            dropped = keep[self.max_tracked:]
            self.other_count += sum(n for _, n in dropped)
            self.counts = dict(keep[: self.max_tracked])
            self.truncated = True

    def merge(self, other: CategoricalProfile) -> CategoricalProfile:
        if not isinstance(other, CategoricalProfile):
            raise DetectorError("can only merge a CategoricalProfile with a CategoricalProfile")
        out = CategoricalProfile(self.top_k, self.max_tracked)
        out.counts = dict(self.counts)
        for c, n in other.counts.items():
            out.counts[c] = out.counts.get(c, 0) + n
        out.other_count = self.other_count + other.other_count
        out.truncated = self.truncated or other.truncated
        out.count = self.count + other.count
        out.n_missing = self.n_missing + other.n_missing
        out.n_invalid = self.n_invalid + other.n_invalid
        out._prune()
        return out

    @property
    def missing_rate(self) -> float:
        total = self.count + self.n_missing
        return self.n_missing / total if total else 0.0

    @property
    def categories(self) -> list[str]:
        """The ``top_k`` most frequent categories, most frequent first (ties by name)."""
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [c for c, _ in ranked[: self.top_k]]

    @property
    def bin_probabilities(self) -> np.ndarray:
        """Probabilities of the top categories, then of *other* (last entry)."""
        cats = self.categories
        top = np.array([self.counts[c] for c in cats], dtype=np.float64)
        other = self.count - top.sum()
        arr = np.append(top, other)
        return arr / self.count if self.count else np.append(np.zeros(len(cats)), 1.0)

    @property
    def singletons(self) -> int:
        """Categories seen exactly once (Good–Turing estimate of unseen mass)."""
        return sum(1 for n in self.counts.values() if n == 1)

    @property
    def unseen_rate(self) -> float:
        """Good–Turing estimate of the share of future values from unseen categories."""
        return self.singletons / self.count if self.count else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "type": "categorical",
            "top_k": self.top_k,
            "max_tracked": self.max_tracked,
            "count": self.count,
            "missing": self.n_missing,
            "invalid": self.n_invalid,
            "missing_rate": self.missing_rate,
            "other_count": self.other_count,
            "truncated": self.truncated,
            "categories": self.categories,
            "bin_probabilities": [float(p) for p in self.bin_probabilities],
            "counts": dict(sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalProfile:
        """Restore a profile; DetectorError naming the field for anything
        :meth:`to_dict` would not have written."""
        _check_schema(data, "categorical")
        p = cls(_field(data, "top_k"), _field(data, "max_tracked"))
        counts = _field(data, "counts")
        if not isinstance(counts, Mapping) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0
                for k, v in counts.items()):
            raise DetectorError("categorical profile: counts must map categories to positive "
                                "integers")
        if len(counts) > p.max_tracked:
            raise DetectorError(f"categorical profile: {len(counts)} counts for max_tracked "
                                f"{p.max_tracked}")
        p.counts = dict(counts)
        p.other_count = _count(data, "other_count")
        truncated = _field(data, "truncated")
        if not isinstance(truncated, bool):
            raise DetectorError(f"categorical profile: truncated must be true or false, got "
                                f"{truncated!r}")
        p.truncated = truncated
        p.count = _count(data, "count")
        p.n_missing = _count(data, "missing")
        p.n_invalid = _count(data, "invalid", 0)
        if p.count != sum(p.counts.values()) + p.other_count:
            raise DetectorError(f"categorical profile: count {p.count} is not the sum of the "
                                f"counts and other_count")
        return p

    def __repr__(self) -> str:
        return (
            f"CategoricalProfile(count={self.count}, categories={len(self.counts)}, "
            f"missing_rate={self.missing_rate:.3g})"
        )


Profile = NumericProfile | CategoricalProfile


def profile_from_dict(data: Mapping[str, Any]) -> Profile:
    """Restore a profile of either type."""
    kind = data.get("type") if isinstance(data, Mapping) else None
    if kind == "numeric":
        return NumericProfile.from_dict(data)
    if kind == "categorical":
        return CategoricalProfile.from_dict(data)
    raise DetectorError(f"profile type must be 'numeric' or 'categorical', got {kind!r}")


# -- what the detectors take from a baseline (see detectors.catalogue) ---------------------
def adwin_clip(profile: NumericProfile) -> tuple[float, float] | None:
    """The range ADWIN's input is winsorised to: the baseline's central 99.8 %.

    ADWIN's ``delta`` is calibrated on bootstrap draws from the reservoir, and
    has to be extrapolated far below the simulated alarm rates at production
    targets.  On a heavy-tailed column single extreme values move the window
    mean by more than any bootstrap path shows, and an unclipped ADWIN alarms
    50-140 times more often than budgeted (t3, lognormal, 95 % zeros at a
    10-million-event target).  Clipping both the live values and the bootstrap
    draws to the reservoir's [0.1 %, 99.9 %] quantiles removes that: the
    achieved spacing between false alarms is then 0.6-1.25 of the target on all
    those families, and ``delta`` stays large enough to catch mean shifts fast.
    Changes in the extreme tails are the KS and out-of-range tests' business.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> adwin_clip(NumericProfile.from_values(np.arange(1_001.0)))
    (1.0, 999.0)
    """
    r = profile.reservoir
    if r.size == 0:
        return None
    lo, hi = np.quantile(r, [ADWIN_CLIP_QUANTILE, 1.0 - ADWIN_CLIP_QUANTILE])
    return float(lo), float(hi)


def cusum_reference(profile: NumericProfile) -> tuple[float, float, tuple[float, float] | None]:
    """Mean, scale and winsorising range of the CUSUM of a numeric column.

    The input is winsorised like ADWIN's (:func:`adwin_clip`); the mean and
    standard deviation are those of the winsorised reservoir, so that bootstrap
    draws standardised with them have mean 0 and variance 1 exactly.  A constant
    column gets scale 1 (its standardised values are all 0).

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> mean, scale, clip = cusum_reference(NumericProfile.from_values(np.arange(1_001.0)))
    >>> round(mean, 1), round(scale, 1), clip
    (500.0, 289.0, (1.0, 999.0))
    """
    clip = adwin_clip(profile)
    r = profile.reservoir
    if clip is None or r.size == 0:
        return 0.0, 1.0, clip
    w = np.clip(r, clip[0], clip[1])
    mean, sd = float(w.mean()), float(w.std())
    return mean, (sd if sd > 0 and math.isfinite(sd) else 1.0), clip


def range_breakers(profile: NumericProfile) -> int:
    """Reference values outside the range of all the other reference values (0, 1 or 2).

    The leave-one-out estimate of the share of new values falling outside the
    baseline's [min, max] is this number over the reference count: 2 for
    continuous data (``2 / (n + 1)`` exactly), but fewer when an extreme value is
    tied (discrete, clipped or zero-inflated columns), where new values rarely or
    never leave the range.  Ties are read from the reservoir (exact while it holds
    the whole reference; an extreme missing from a subsampled reservoir counts as
    untied).
    """
    if profile.count == 0:
        return 0
    r = profile.reservoir
    return sum(int(np.count_nonzero(r == v) < 2) for v in (profile.min, profile.max))


def unseen_count(profile: CategoricalProfile) -> int:
    """Reference values the unseen-rate test counts as flagged.

    The monitor flags a value whose category the profile does not track: a new
    category (Good–Turing: as often as the singletons) or one of the rare categories
    folded into ``other_count`` when the profile was truncated at ``max_tracked``.
    """
    return profile.singletons + profile.other_count


_REQUIRED = object()


def _field(data: Mapping[str, Any], key: str, default: Any = _REQUIRED) -> Any:
    if key not in data:
        if default is _REQUIRED:
            raise DetectorError(f"{data.get('type', '')} profile: {key} is missing")
        return default
    return data[key]


def _count(data: Mapping[str, Any], key: str, default: Any = _REQUIRED) -> int:
    value = _field(data, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DetectorError(f"{data.get('type', '')} profile: {key} must be an integer >= 0, "
                            f"got {value!r}")
    return value


def _finite(data: Mapping[str, Any], key: str, low: float | None = None) -> float:
    value = _field(data, key)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or (low is not None and value < low)):
        bound = "" if low is None else f" >= {low:g}"
        raise DetectorError(f"{data.get('type', '')} profile: {key} must be a finite "
                            f"number{bound}, got {value!r}")
    return float(value)


def _floats(data: Mapping[str, Any], key: str) -> np.ndarray:
    value = _field(data, key)
    if not isinstance(value, list) or not all(
            type(v) is float or (type(v) is int) for v in value):
        raise DetectorError(f"{data.get('type', '')} profile: {key} must be a list of numbers")
    out = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise DetectorError(f"{data.get('type', '')} profile: {key} must hold finite numbers")
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _check_schema(data: Mapping[str, Any], kind: str) -> None:
    if not isinstance(data, Mapping):
        raise DetectorError(f"{kind} profile must be a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DetectorError(
            f"{kind} profile has schema_version {version!r}; this streamdrift reads "
            f"version {SCHEMA_VERSION}: rebuild the baseline with `streamdrift baseline`"
        )


def _merge_reservoirs(
    a: np.ndarray, na: int, b: np.ndarray, nb: int, capacity: int, seed: int
) -> np.ndarray:
    """Uniform sample of size <= capacity of the union of two uniformly sampled sets."""
    if a.size + b.size <= capacity and a.size == na and b.size == nb:
        return np.concatenate([a, b])
    take = min(capacity, na + nb)
    rng = np.random.default_rng(abs(seed) % (2**63))
    # how many of the merged sample come from each side: hypergeometric on the true sizes
    from_a = int(rng.hypergeometric(na, nb, take)) if na and nb else (take if na else 0)
    from_a = min(from_a, a.size)
    from_b = min(take - from_a, b.size)
    parts = []
    if from_a:
        parts.append(rng.choice(a, from_a, replace=False))
    if from_b:
        parts.append(rng.choice(b, from_b, replace=False))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
