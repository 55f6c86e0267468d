"""Everything streamdrift computes for one column (a feature or a prediction).

:class:`ColumnMonitor` takes a whole batch of one column, classifies each value
once (valid, missing, invalid), bins the valid values once, and feeds every
detector of the column from that single pass.  It also keeps non-alarming
trackers for the ratios and distances that are exported for humans.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from detectors._window_kernel import CODE_INVALID, CODE_MISSING, classify_numeric
from detectors.base import Detector, as_float_batch
from detectors.catalogue import KINDS, detectors_for, is_sequential
from detectors.distances import jensen_shannon, psi, wasserstein_binned
from detectors.errors import DetectorError
from detectors.profile import CategoricalProfile, NumericProfile, Profile
from detectors.window import (
    ChiSquareWindow,
    KSWindow,
    MissingRate,
    OutOfRangeRate,
    RateWindow,
    UnseenRate,
    WindowTest,
)

#: the sequential kinds, in catalogue order: read only by stream/cli.py, which is moving to
#: :func:`detectors.catalogue.is_sequential`; do not use in new code
SEQUENTIAL_DETECTORS: tuple[str, ...] = tuple(k for k in KINDS if is_sequential(k))


_NO_CODES = np.empty(0, dtype=np.int64)
_NO_CODES.flags.writeable = False


class CodedColumn(NamedTuple):
    """A categorical column as codes into a table of values, as a decoder that interns
    strings has it (:mod:`stream.formats.scan`: the batch's distinct strings).

    ``values`` is the object column it describes (a monitor uses the codes only for that
    very array, checked by identity); ``codes`` holds one integer per value, an index into
    ``table`` (-1: its last entry); ``table`` is an object array and ``table[codes]``
    equals ``values``.  A monitor then looks each entry of the table up once instead of
    each value.
    """

    values: np.ndarray
    codes: np.ndarray
    table: np.ndarray


class Alarm(NamedTuple):
    """An episode of one detector opened (an alarm) or closed at one position of a batch.

    For a close, ``statistic`` is the episode's peak statistic.
    """

    column: str
    detector: str
    position: int
    statistic: float
    threshold: float


class _InvalidRate(RateWindow):
    """Rate of invalid values (wrong type, ±inf): a non-alarming tracker of every column.

    It declares no ``column_types``, so it is not in :mod:`detectors.catalogue`.
    """

    kind = "invalid_rate"
    input_kind = "flags"


def _window(det: Detector | None) -> Any:
    """A window-test detector (or None), typed for the trackers that reuse it."""
    assert det is None or isinstance(det, WindowTest)
    return det


class ColumnMonitor:
    """Drives all detectors of one column from one pass over each batch.

    Parameters
    ----------
    name : str
        Column name (used in error messages and alarms).
    profile : NumericProfile or CategoricalProfile
        The column's baseline.
    detectors : dict
        Detector kind → configured detector (alarming).
    window, cadence : int
        Window of the non-alarming trackers (ratios and distances).
    role : str
        ``"feature"`` or ``"prediction"``.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.profile import NumericProfile
    >>> rng = np.random.default_rng(0)
    >>> prof = NumericProfile.from_values(rng.normal(size=5000), bins=16)
    >>> from detectors.catalogue import make_detector
    >>> ks = make_detector("ks", prof, 200, 20, threshold=0.15)
    >>> mon = ColumnMonitor("income", prof, {"ks": ks}, window=200, cadence=20)
    >>> mon.update(np.array([0.1, np.nan, np.inf, 0.3]))
    []
    >>> mon.n_values, mon.n_missing, mon.n_invalid
    (2, 1, 1)
    >>> alarms = mon.update(rng.normal(2.0, 1.0, 1000))
    >>> [a.detector for a in alarms]
    ['ks']
    """

    def __init__(self, name: str, profile: Profile, detectors: dict[str, Detector],
                 window: int = 1000, cadence: int = 50, role: str = "feature") -> None:
        self.name = name
        self.role = role
        self.profile = profile
        self.numeric = isinstance(profile, NumericProfile)
        valid = detectors_for(profile.kind)
        for kind in detectors:
            if kind not in valid:
                raise DetectorError(f"{name}: detector {kind!r} does not apply to a "
                                    f"{profile.kind} column; use one of {', '.join(valid)}")
        self.detectors = dict(detectors)
        #: the episodes closed by the last :meth:`update` (peak statistic as ``statistic``)
        self.closes: list[Alarm] = []
        self.window, self.cadence = window, cadence
        self.n_values = self.n_missing = self.n_invalid = 0
        #: the bins of the last batch's valid values (numbers: the profile's quantile bins;
        #: categories: top categories, then *other*), as ``codes >> last_shift``; read
        #: without a copy by the partition check (stream.engine.skew), until the next update
        self.last_codes: np.ndarray = _NO_CODES
        self.last_shift = 1
        self._invalid = _InvalidRate(0.0, window, cadence, name=name)
        # non-alarming trackers where the matching detector is not enabled
        self._missing: RateWindow = _window(self.detectors.get("missing")) or MissingRate(
            profile.missing_rate, window, cadence, name=name)
        if self.numeric:
            assert isinstance(profile, NumericProfile)
            self._flag: RateWindow = _window(self.detectors.get("out_of_range")) or OutOfRangeRate(
                0.0, window, cadence, name=name)
            self._hist: WindowTest = _window(self.detectors.get("ks")) or KSWindow(
                profile.bin_edges, profile.bin_probabilities, window, cadence, name=name)
            self._lo, self._hi = profile.min, profile.max
        else:
            assert isinstance(profile, CategoricalProfile)
            self._flag = _window(self.detectors.get("unseen")) or UnseenRate(0.0, window, cadence,
                                                                     name=name)
            self._hist = _window(self.detectors.get("chi2")) or ChiSquareWindow(
                profile.categories, profile.bin_probabilities, window, cadence, name=name)
            self._codes = {c: i for i, c in enumerate(profile.categories)}
            self._known = frozenset(profile.counts)
        self._sequential = [d for k, d in self.detectors.items() if is_sequential(k)]
        shared = (self._hist, self._flag, self._missing)
        for kind, det in self.detectors.items():  # a window test shares the single pass
            if not is_sequential(kind) and all(det is not t for t in shared):
                raise DetectorError(f"{name}: the column monitor cannot feed detector "
                                    f"{kind!r}: it is neither sequential nor one of its "
                                    f"shared windows")

    # -- hot path -----------------------------------------------------------
    def update(self, values: Any, invalid_mask: np.ndarray | None = None,
               coded: CodedColumn | None = None) -> list[Alarm]:
        """Feed one batch of this column; return the alarms (episodes opened) raised in it.

        ``coded``: the same categorical values as codes into a table (see
        :class:`CodedColumn`); the result is the same with it or without, only faster.
        The episodes it closed are in :attr:`closes` until the next call.
        """
        self.closes = []
        self.last_codes = _NO_CODES
        if self.numeric:
            out = self._update_numeric(values, invalid_mask)
        else:
            if coded is not None and coded.values is values:
                out = self._update_categorical(values, invalid_mask, coded)
            else:  # no codes, or not the codes of these values
                out = self._update_categorical(values, invalid_mask)
        if len(self.closes) > 1:
            self.closes.sort(key=lambda a: a.position)
        return out

    def _collect(self, det: Detector, positions: np.ndarray, out: list[Alarm],
                 where: np.ndarray | None = None) -> None:
        """Record ``det``'s alarms at ``positions`` (and its closes); ``where`` maps the
        positions the detector saw to batch positions, if they are not batch positions."""
        closes = det.close_positions
        if closes.size:
            at = closes if where is None else where[closes]
            peak, thr = float(det.episode_peak), float(det.threshold)
            self.closes.extend(Alarm(self.name, det.kind, int(p), peak, thr)
                               for p in at.tolist())
        if where is not None and positions.size:
            positions = where[positions]
        if positions.size:
            stats = getattr(det, "alarm_statistics", None)
            if stats is None or len(stats) != positions.size:
                stats = np.full(positions.size, det.statistic)
            thr = det.threshold
            out.extend(Alarm(self.name, det.kind, int(p), float(s), float(thr))
                       for p, s in zip(positions.tolist(), stats, strict=True))

    def _split(self, n: int, codes: np.ndarray, n_missing: int, n_invalid: int,
               out: list[Alarm]) -> np.ndarray | None:
        """Count missing/invalid, feed the ratio trackers, return positions of valid values.

        ``codes`` holds one code per value: ``CODE_INVALID``, ``CODE_MISSING`` or a
        (non-negative) packed bin.  Returns ``None`` when every value is valid.
        """
        if n_invalid == 0:
            self._invalid.update_constant(n, 0)
            if n_missing == 0:
                hits = self._missing.update_constant(n, 0)
                valid_pos = None
            else:  # the sign bit of a code: missing (there is no invalid code)
                hits = self._missing._update_codes(codes, None, 63, 1)
                valid_pos = np.flatnonzero(codes >= 0)
        else:
            invalid = codes == CODE_INVALID
            self._invalid._update_codes(invalid.view(np.int8).astype(np.int64), None, 0, -1)
            keep = np.flatnonzero(~invalid)
            hits = self._missing._update_codes(codes[keep], keep, 63, 1)
            valid_pos = np.flatnonzero(codes >= 0)
        if self._missing is self.detectors.get("missing"):
            self._collect(self._missing, hits, out)
        n_valid = n if valid_pos is None else int(valid_pos.size)
        self.n_invalid += n_invalid
        self.n_missing += n - n_invalid - n_valid
        self.n_values += n_valid
        return valid_pos

    def _update_numeric(self, values: Any, invalid_mask: np.ndarray | None) -> list[Alarm]:
        x = as_float_batch(values, self.name)
        out: list[Alarm] = []
        if x.size == 0:
            return out
        if not (x.flags.c_contiguous and x.flags.writeable):
            x = np.array(x)
        # one pass: NaN -> missing, ±inf -> invalid, else bin << 1 | out of range
        codes, n_missing, n_invalid, n_oor = classify_numeric(
            x, self.profile.bin_edges, float(self._lo), float(self._hi))  # type: ignore[union-attr]
        if not (n_missing == 0 and n_invalid == 0
                and (invalid_mask is None or not np.count_nonzero(invalid_mask))):
            if invalid_mask is not None:
                invalid = codes == CODE_INVALID
                invalid |= np.asarray(invalid_mask, dtype=bool)
                codes[invalid] = CODE_INVALID
                n_invalid = int(np.count_nonzero(invalid))
                n_missing = int(np.count_nonzero(codes == CODE_MISSING))
        pos = self._split(x.size, codes, n_missing, n_invalid, out)
        if pos is None:
            v, c = x, codes
        else:
            v, c = x[pos], codes[pos]
        self.last_codes, self.last_shift = c, 1
        hits = self._hist._update_codes(c, pos, 1, -1)
        if "ks" in self.detectors:
            self._collect(self._hist, hits, out)
        where = None
        if n_oor:
            hits = self._flag._update_codes(c, pos, 0, 1)
        else:  # no value out of range: a run of zero flags
            hits = self._flag.update_constant(v.size, 0)
            where = pos
        if "out_of_range" in self.detectors:
            self._collect(self._flag, hits, out, where)
        for det in self._sequential:
            self._collect(det, det.update(v), out, pos)
        if len(out) > 1:
            out.sort(key=lambda a: a.position)
        return out

    def _category_codes(self) -> dict[Any, int]:
        """Value → packed code (``code << 1 | unseen``; None → missing), built once."""
        cache = self.__dict__.get("_lookup")
        if cache is not None and cache[0] is self._codes and cache[1] is self._known:
            return cache[2]  # type: ignore[no-any-return]
        other = len(self._codes)
        lookup: dict[Any, int] = {}
        for key in self._known:
            lookup[key] = other << 1
        for key, code in self._codes.items():
            lookup[key] = (code << 1) | (0 if key in self._known else 1)
        lookup[None] = CODE_MISSING
        self._lookup = (self._codes, self._known, lookup)
        return lookup

    def _packed_codes(self, obj: np.ndarray) -> np.ndarray | None:
        """The packed code of each value of ``obj`` (object, 1-d): one dict lookup per
        value gives missing, the category code and the unseen flag; None when a value
        cannot be looked up (unhashable)."""
        unknown = -3
        try:
            codes = np.fromiter(map(self._category_codes().get, obj, repeat(unknown)),
                                dtype=np.int64, count=obj.size)
        except Exception:  # noqa: BLE001 - unhashable values: the general path decides
            return None
        if (codes == unknown).any():  # not a tracked category: missing only if it equals None
            idx = np.flatnonzero(codes == unknown)
            missing = np.equal(obj[idx], None).astype(bool)  # type: ignore[call-overload]
            codes[idx] = np.where(missing, CODE_MISSING, (len(self._codes) << 1) | 1)
        return codes

    def _update_categorical(self, values: Any, invalid_mask: np.ndarray | None,
                            coded: CodedColumn | None = None) -> list[Alarm]:
        arr = np.asarray(values)
        if arr.dtype.kind == "f" and arr.size:  # an empty batch of any dtype is fine
            raise TypeError(f"{self.name}: categorical columns take strings (None for missing), "
                            f"got dtype {arr.dtype}")
        obj = arr.reshape(-1) if arr.dtype == object else arr.astype(object).reshape(-1)
        out: list[Alarm] = []
        n = obj.size
        if n == 0:
            return out
        codes = None
        if coded is not None and coded.codes.shape == (n,):
            # one lookup per entry of the table, then the rows' codes by index: the same
            # codes as one lookup per value, since table[coded.codes] is the column
            table = np.asarray(coded.table, dtype=object).reshape(-1)
            per_entry = self._packed_codes(table) if table.size else None
            if per_entry is not None:
                codes = per_entry[coded.codes]
        if codes is None:
            codes = self._packed_codes(obj)
            if codes is None:
                return self._update_categorical_masks(obj, invalid_mask)
        invalid = None if invalid_mask is None else np.asarray(invalid_mask, dtype=bool)
        if invalid is not None and invalid.shape != (n,):
            return self._update_categorical_masks(obj, invalid_mask)
        n_invalid = 0
        if invalid is not None and invalid.any():
            codes[invalid] = CODE_INVALID
            n_invalid = int(np.count_nonzero(invalid))
        n_missing = int(np.count_nonzero(codes == CODE_MISSING))
        pos = self._split(n, codes, n_missing, n_invalid, out)
        c = codes if pos is None else codes[pos]
        self.last_codes, self.last_shift = c, 1
        hits = self._hist._update_codes(c, pos, 1, -1)
        if "chi2" in self.detectors:
            self._collect(self._hist, hits, out)
        hits = self._flag._update_codes(c, pos, 0, 1)
        if "unseen" in self.detectors:
            self._collect(self._flag, hits, out)
        if self._sequential:
            self._update_sequential_codes(c >> 1, pos, out)
        if len(out) > 1:
            out.sort(key=lambda a: a.position)
        return out

    def _update_categorical_masks(self, obj: np.ndarray, invalid_mask: np.ndarray | None,
                                  ) -> list[Alarm]:
        """The categorical path with boolean masks, for inputs the fast path declines.

        An invalid mask that is not one flag per value, or values that cannot be
        looked up in a dict: behaves (and fails) exactly as before.
        """
        out: list[Alarm] = []
        missing = np.equal(obj, None).astype(bool)  # type: ignore[call-overload]
        invalid = None if invalid_mask is None else np.asarray(invalid_mask, dtype=bool)
        if invalid is not None:
            missing &= ~invalid
        n = obj.size
        if invalid is None or not invalid.any():
            n_inv = 0
            self._invalid.update_constant(n, 0)
            hits = self._missing.update_bins(missing.view(np.int8).astype(np.int64))
            pos = np.flatnonzero(~missing)
        else:
            n_inv = int(invalid.sum())
            self._invalid.update_bins(invalid.view(np.int8).astype(np.int64))
            keep = np.flatnonzero(~invalid)
            hits = self._missing.update_bins(missing[keep].view(np.int8).astype(np.int64), keep)
            pos = np.flatnonzero(~missing & ~invalid)
        if self._missing is self.detectors.get("missing"):
            self._collect(self._missing, hits, out)
        self.n_invalid += n_inv
        self.n_missing += int(n - n_inv - pos.size)
        self.n_values += int(pos.size)
        vals = obj[pos]
        other = len(self._codes)
        codes = np.fromiter(map(self._codes.get, vals, repeat(other)), dtype=np.int64,
                            count=vals.size)
        self.last_codes, self.last_shift = codes, 0
        hits = self._hist.update_bins(codes, pos)
        if "chi2" in self.detectors:
            self._collect(self._hist, hits, out)
        seen = np.fromiter(map(self._known.__contains__, vals), dtype=bool, count=vals.size)
        hits = self._flag.update_bins((~seen).view(np.int8).astype(np.int64), pos)
        if "unseen" in self.detectors:
            self._collect(self._flag, hits, out)
        if self._sequential:
            self._update_sequential_codes(codes, pos, out)
        out.sort(key=lambda a: a.position)
        return out

    def _update_sequential_codes(self, codes: np.ndarray, pos: np.ndarray | None,
                                 out: list[Alarm]) -> None:
        """Feed the category codes of the valid values to the sequential detectors."""
        for det in self._sequential:
            self._collect(det, det.update_codes(codes), out,  # type: ignore[attr-defined]
                          pos)

    # -- read-only figures ------------------------------------------------
    @property
    def drift_detected(self) -> bool:
        return any(d.drift_detected for d in self.detectors.values())

    def distances(self) -> dict[str, float]:
        hist = self._hist.window_histogram()
        if hist.sum() == 0:
            out = {"psi": 0.0, "jensen_shannon": 0.0}
            if self.numeric:
                out["wasserstein"] = 0.0
            return out
        probs = self._hist.probs
        out = {"psi": psi(hist, probs), "jensen_shannon": jensen_shannon(hist, probs)}
        if self.numeric:
            prof = self.profile
            assert isinstance(prof, NumericProfile)
            out["wasserstein"] = wasserstein_binned(hist, probs, prof.bin_edges, prof.std)
        return out

    def window_comparison(self) -> tuple[np.ndarray, np.ndarray]:
        """The recent window against the reference, bin by bin.

        Returns (counts of the window's values per bin, reference probability of each
        bin).  The bins are those of the KS / chi-square window: numbers, the profile's
        quantile bins (:attr:`NumericProfile.bin_edges`); categories, the profile's top
        categories, then *other*.  Both arrays are copies.
        """
        return self._hist.window_histogram(), np.array(self._hist.probs, dtype=np.float64)

    def ratios(self) -> dict[str, float]:
        flag = "out_of_range_ratio" if self.numeric else "unseen_ratio"
        return {
            "missing_ratio": self._missing.rate,
            "invalid_ratio": self._invalid.rate,
            flag: self._flag.rate,
        }

    def summary(self) -> dict[str, Any]:
        dets = {}
        for kind, det in self.detectors.items():
            s = det.summary()
            s["window_values"] = int(getattr(det, "window_values", getattr(det, "width", 0)))
            dets[kind] = s
        return {
            "role": self.role,
            "type": self.profile.kind,
            "values": self.n_values,
            "missing": self.n_missing,
            "invalid": self.n_invalid,
            **self.ratios(),
            "distances": self.distances(),
            "drift": self.drift_detected,
            "detectors": dets,
        }

    # -- state ----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        trackers = {"invalid": self._invalid.to_dict()}
        if "missing" not in self.detectors:
            trackers["missing"] = self._missing.to_dict()
        flag = "out_of_range" if self.numeric else "unseen"
        if flag not in self.detectors:
            trackers["flag"] = self._flag.to_dict()
        hist = "ks" if self.numeric else "chi2"
        if hist not in self.detectors:
            trackers["hist"] = self._hist.to_dict()
        return {
            "name": self.name,
            "role": self.role,
            "window": self.window,
            "cadence": self.cadence,
            "counts": [self.n_values, self.n_missing, self.n_invalid],
            "detectors": {k: d.to_dict() for k, d in self.detectors.items()},
            "trackers": trackers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], profile: Profile) -> ColumnMonitor:
        dets = {k: Detector.from_dict(v) for k, v in data["detectors"].items()}
        mon = cls(data["name"], profile, dets, data["window"], data["cadence"], data["role"])
        mon.n_values, mon.n_missing, mon.n_invalid = (int(v) for v in data["counts"])
        tr = data["trackers"]
        mon._invalid = Detector.from_dict(tr["invalid"])  # type: ignore[assignment]
        if "missing" in tr:
            mon._missing = Detector.from_dict(tr["missing"])  # type: ignore[assignment]
        if "flag" in tr:
            mon._flag = Detector.from_dict(tr["flag"])  # type: ignore[assignment]
        if "hist" in tr:
            mon._hist = Detector.from_dict(tr["hist"])  # type: ignore[assignment]
        return mon
