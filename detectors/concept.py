"""Concept drift on the joined stream: CUSUMs of the per-prediction error against the
labelled reference's error rate, calibrated with the model's false-alarm knob.

When labels arrive, each joined pair gives an error: 1.0 for a wrong class (binary,
multiclass), or the absolute error (regression).  A change of P(y|x) with unchanged inputs
moves the error rate, which no input detector sees.  :func:`error_cusum` builds a
two-sided :class:`~detectors.cusum.CUSUM` of that error stream, standardised with the mean
and standard deviation of the reference's errors (a reference that carries its labels
inline), with the allowance ``k`` tuned to a change of ``shift`` (in error units: 0.02 =
two points of accuracy), and its threshold calibrated by simulation exactly as the input
CUSUMs are (:func:`~detectors.calibration.calibrate_cusum`): bootstrap paths from the
reference's errors, with the uncertainty of the reference's rate as an offset per path.

One allowance is optimal for one shift only: tuned to 2 points, a CUSUM is slow on a
10-point drop; tuned to 5, it is slow on 2.  :func:`concept_detector` builds a
:class:`ConceptCUSUM`: one CUSUM per shift (2 and 8 points by default), each calibrated to
its share of the false-alarm budget (``target_events / share``, half each by default: the
rates of their alarms add up to the target's, and the alarms they raise together count
once), alarming when either crosses its threshold.

Within each CUSUM the two sums have thresholds of their own (``down_share``,
:data:`CONCEPT_DOWN_SHARE`): the upper sum (the error rate rising: an accuracy drop) is
calibrated on its own excursions to 90 % of the CUSUM's alarm rate, the lower sum (the
error rate falling) to 10 %.  With one threshold for both, half of the budget went to falls,
which no peer watches and few users page on; the upper thresholds of the 2-point CUSUMs
are now 15-25 % lower (2-point drops caught ~10-20 % sooner), falls are still caught, later.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = (rng.random(20_000) < 0.10).astype(float)   # 10 % errors in the reference
>>> det = error_cusum(ref, target_events=2_000, shift=0.05, n_values=1_000_000)
>>> round(det.mean, 3), det.threshold > 0
(0.102, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from detectors.calibration import calibrate_cusum
from detectors.concept_sr import SR_KIND, SR_SHIFTS, ConceptSR, concept_sr
from detectors.cusum import CUSUM
from detectors.errors import DetectorError

__all__ = ["CONCEPT_DEFAULT", "CONCEPT_DOWN_SHARE", "CONCEPT_SHARES", "CONCEPT_SHIFTS",
           "ConceptCUSUM", "ConceptDetector", "concept_detector", "concept_from_dict",
           "error_cusum", "model_concept_detector"]

#: the changes of the error rate the concept detector's CUSUMs are tuned for: 2 points of
#: accuracy (small drops) and 8 points (large ones; 10-point drops are caught sooner)
CONCEPT_SHIFTS = (0.02, 0.08)
#: their shares of the false-alarm budget.  Equal: 3/4 for the 2-point CUSUM with a 12-point
#: one (bench_concept.py --shift 0.02 0.12 --shares 0.75 0.25) caught 2-point drops sooner
#: but 10-point drops at 10 % errors 5-10 % later, where ADWIN is close (docs/benchmarks.md)
CONCEPT_SHARES = (0.5, 0.5)
#: the share of each CUSUM's budget its lower sum (a falling error rate) spends; None: one
#: threshold for both sums (before: about half each)
CONCEPT_DOWN_SHARE: float | None = 0.1
#: the ``kind`` of a serialised :class:`ConceptCUSUM` (a saved single CUSUM has ``cusum``)
CONCEPT_KIND = "concept"
#: the label join's concept detector: ``"sr"``, the Shiryaev-Roberts mixture over a grid of
#: shifts (:mod:`detectors.concept_sr`), or ``"cusum"``, the CUSUMs of this module
CONCEPT_DEFAULT = "sr"


def model_concept_detector(ref_errors: np.ndarray, target_events: float, unit: float = 1.0,
                           kind: str = CONCEPT_DEFAULT, **kw: Any) -> ConceptDetector:
    """The concept detector the label join builds (:data:`CONCEPT_DEFAULT`), its shifts in
    ``unit`` (1: accuracy points of a classifier; a regression's scale of its errors)."""
    if kind == "sr":
        return concept_sr(ref_errors, target_events, [v * unit for v in SR_SHIFTS], **kw)
    if kind == "cusum":
        return concept_detector(ref_errors, target_events, [v * unit for v in CONCEPT_SHIFTS],
                                **kw)
    raise DetectorError(f"unknown concept detector {kind!r}")


def concept_from_dict(data: Any) -> ConceptDetector:
    """A saved concept detector of either kind (:class:`DetectorError` if it is neither)."""
    if isinstance(data, dict) and data.get("kind") == SR_KIND:
        return ConceptSR.from_dict(data)
    return ConceptCUSUM.from_dict(data)


def error_cusum(ref_errors: np.ndarray, target_events: float, shift: float = 0.02,
                n_values: int = 4_000_000, seed: int = 0,
                down_share: float | None = None) -> CUSUM:
    """A calibrated CUSUM of the error stream (see the module docstring).

    Parameters
    ----------
    ref_errors : array of float
        The errors of the labelled reference (at least 100).
    target_events : float
        Expected joined pairs between false alarms (the detector's share of the model's
        ``false_alarm_events``).
    shift : float
        The change of the mean error the allowance is tuned for (``k = shift / 2``
        standard deviations of the reference's errors).
    down_share : float, optional
        The share of ``target_events``'s alarm rate the lower sum (a falling error rate)
        may spend: each sum gets a threshold of its own, the upper one calibrated to
        ``target_events / (1 - down_share)`` on its excursions alone, the lower one to
        ``target_events / down_share``.  None: one threshold for both sums, calibrated on
        their excursions together (about ``down_share`` 0.5).
    """
    x = np.asarray(ref_errors, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 100:
        raise DetectorError(f"error_cusum: needs at least 100 reference errors, got {x.size}")
    if not shift > 0:
        raise DetectorError(f"error_cusum: shift must be > 0, got {shift}")
    mean = float(x.mean())
    scale = float(x.std())
    if scale <= 0:  # a reference without a single error (or all wrong): a posterior rate
        p = (x.sum() + 0.5) / (x.size + 1.0)
        scale = math.sqrt(p * (1 - p))
    z = (x - mean) / scale
    k = shift / (2 * scale)

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(z, n)

    def cal(target: float, side: int = 0) -> float:
        return calibrate_cusum(sample, target, k, n_values=n_values, side=side,
                               offset_sd=1 / math.sqrt(x.size), seed=seed).threshold

    if down_share is None:
        return CUSUM(mean=mean, scale=scale, threshold=cal(target_events), k=k, name="error")
    if not 0 < down_share < 1:
        raise DetectorError(f"error_cusum: down_share must be in (0, 1), got {down_share}")
    return CUSUM(mean=mean, scale=scale, threshold=cal(target_events / (1 - down_share), 1),
                 k=k, name="error", threshold_down=cal(target_events / down_share, -1))


def concept_detector(ref_errors: np.ndarray, target_events: float,
                     shifts: Sequence[float] = CONCEPT_SHIFTS,
                     shares: Sequence[float] | None = None, n_values: int = 4_000_000,
                     seed: int = 0, down_share: float | None = CONCEPT_DOWN_SHARE,
                     ) -> ConceptCUSUM:
    """A :class:`ConceptCUSUM` of one :func:`error_cusum` per shift, each calibrated to
    ``target_events / share`` (its share of the budget), on the same bootstrap null
    (``seed``) as the others.  ``shares`` (one per shift, summing to 1): by default
    :data:`CONCEPT_SHARES` for two shifts (the production pair, also when scaled to a
    regression's units), equal shares otherwise.

    >>> import numpy as np
    >>> ref = (np.random.default_rng(0).random(20_000) < 0.10).astype(float)
    >>> det = concept_detector(ref, 2_000, n_values=1_000_000)
    >>> [round(d.k, 3) for d in det.detectors], det.threshold == det.detectors[0].h
    ([0.033, 0.132], True)
    """
    sh = [float(v) for v in shifts]
    if not sh:
        raise DetectorError("concept_detector: needs at least one shift")
    if shares is None:  # the production shares for two shifts, else equal ones
        shares = CONCEPT_SHARES if len(sh) == len(CONCEPT_SHARES) else [1.0 / len(sh)] * len(sh)
    w = [float(v) for v in shares]
    if len(w) != len(sh) or not all(v > 0 for v in w) or abs(sum(w) - 1.0) > 1e-9:
        raise DetectorError(f"concept_detector: shares must be one per shift, > 0, summing "
                            f"to 1, got {shares!r}")
    return ConceptCUSUM([error_cusum(ref_errors, target_events / v, shift=s, n_values=n_values,
                                     seed=seed, down_share=down_share)
                         for s, v in zip(sh, w, strict=True)])


class ConceptCUSUM:
    """CUSUMs of the same error stream with different allowances, alarming when either
    crosses its threshold: the concept-drift detector of a label join.

    Parameters
    ----------
    detectors : sequence of CUSUM
        The CUSUMs (the first one's threshold is the combined one's: see
        :attr:`statistic`), each calibrated to its share of the false-alarm budget.

    Without episodes every crossing of any CUSUM is an alarm (crossings of two at the same
    value count once), so the alarm rates add up: with each CUSUM at ``len(detectors)``
    times the target, the combined ARL0 is the target.  With episodes
    (:meth:`configure_episodes`, as the label join runs it) the combined episode is open
    while any CUSUM's is: it opens when one opens while none is open, and closes when the
    last one closes, so overlapping episodes count once (the ARL0 of episodes is at least
    the target's).

    Attributes
    ----------
    statistic : float
        ``max_i statistic_i / threshold_i`` times :attr:`threshold`: the score
        ``statistic / threshold`` is the highest of the CUSUMs'.
    threshold : float
        The first CUSUM's threshold.

    Examples
    --------
    >>> import numpy as np
    >>> from detectors.cusum import CUSUM
    >>> rng = np.random.default_rng(0)
    >>> det = ConceptCUSUM([CUSUM(0.1, 0.3, threshold=65.0, k=0.033),   # 2 points
    ...                     CUSUM(0.1, 0.3, threshold=28.0, k=0.133)])  # 8 points
    >>> det.update((rng.random(2000) < 0.1).astype(float))
    array([], dtype=int64)
    >>> det.update((rng.random(2000) < 0.2).astype(float))  # a 10-point rise
    array([45])
    >>> det.drift_detected, round(det.statistic / det.threshold, 2)  # the sums capped at 2h
    (True, 2.0)
    """

    def __init__(self, detectors: Sequence[CUSUM]) -> None:
        dets = list(detectors)
        if not dets or not all(isinstance(d, CUSUM) for d in dets):
            raise DetectorError("ConceptCUSUM: needs one CUSUM or more")
        if not all(math.isfinite(d.h) for d in dets):
            raise DetectorError("ConceptCUSUM: every CUSUM needs a finite threshold")
        for d in dets:
            # a 2-point allowance is below the noise of the moving average that releases an
            # episode: capped at k, the release level is crossed by the null's own noise and
            # an episode never closes (CUSUM.release_level)
            d.release_above_allowance = True
            # the error rate's episodes close on the moving average (the hold since the
            # opening is the input CUSUMs')
            d.mean_hold = False
        self.detectors = dets
        self._peak = 0.0
        self.close_positions = np.empty(0, dtype=np.int64)
        self.alarm_statistics = np.empty(0)

    # -- what the label join reads ------------------------------------------------------
    @property
    def h(self) -> float:
        return self.detectors[0].h

    threshold = h

    @property
    def mean(self) -> float:
        return self.detectors[0].mean

    @property
    def scale(self) -> float:
        return self.detectors[0].scale

    @property
    def hold(self) -> int:
        return self.detectors[0].hold

    @property
    def release(self) -> float:
        return self.detectors[0].release

    def _score(self, d: CUSUM, stat: float) -> float:
        """``stat`` of ``d`` in the combined units (the first CUSUM's threshold)."""
        return stat / d.h * self.h

    @property
    def statistic(self) -> float:
        return max(self._score(d, d.statistic) for d in self.detectors)

    @property
    def drift_detected(self) -> bool:
        return any(d.drift_detected for d in self.detectors)

    @property
    def episode_peak(self) -> float:
        return self._peak

    def configure_episodes(self, release: float, release_values: int) -> None:
        for d in self.detectors:
            d.configure_episodes(release, release_values)

    def same_calibration(self, other: Any) -> bool:
        """Whether ``other`` is a ConceptCUSUM of the same CUSUMs (thresholds, allowances,
        reference mean and scale): its sums can go on."""
        return (isinstance(other, ConceptCUSUM)
                and len(other.detectors) == len(self.detectors)
                and all((a.h, a.h_down, a.k, a.mean, a.scale)
                        == (b.h, b.h_down, b.k, b.mean, b.scale)
                        for a, b in zip(other.detectors, self.detectors, strict=True)))

    # -- input ----------------------------------------------------------------------------
    def update(self, values: np.ndarray) -> np.ndarray:
        """Feed a batch of errors; return the int64 positions where an alarm was raised (with
        episodes: where the combined episode opened; :attr:`close_positions`: closed)."""
        was_open = [d.drift_detected for d in self.detectors] if self.hold else []
        events: list[tuple[int, int, float]] = []  # (position, 0 open | 1 close, score)
        for d in self.detectors:
            opens = d.update(values)
            events += [(int(p), 0, self._score(d, float(s)))
                       for p, s in zip(opens.tolist(), d.alarm_statistics.tolist(), strict=True)]
            if self.hold:
                peak = self._score(d, d.episode_peak)
                events += [(int(p), 1, peak) for p in d.close_positions.tolist()]
        events.sort()
        out: list[int] = []
        stats: list[float] = []
        closes: list[int] = []
        if not self.hold:  # every crossing is an alarm; two at the same value count once
            for pos, _, score in events:
                if out and out[-1] == pos:
                    stats[-1] = max(stats[-1], score)
                else:
                    out.append(pos)
                    stats.append(score)
        else:  # one episode while any is open (an open before a close at the same value)
            n_open = sum(was_open)
            for pos, kind, score in events:
                if kind == 0:
                    if n_open == 0:
                        out.append(pos)
                        stats.append(score)
                        self._peak = score
                    n_open += 1
                else:
                    n_open = max(n_open - 1, 0)
                    self._peak = max(self._peak, score)
                    if n_open == 0:
                        closes.append(pos)
            if n_open:
                self._peak = max(self._peak, self.statistic)
        self.close_positions = np.array(closes, dtype=np.int64)
        self.alarm_statistics = np.array(stats, dtype=np.float64)
        return np.array(out, dtype=np.int64)

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": CONCEPT_KIND, "state": {
            "detectors": [d.to_dict() for d in self.detectors], "peak": self._peak}}

    @classmethod
    def from_dict(cls, data: Any) -> ConceptCUSUM:
        """Restore :meth:`to_dict` output; anything else (such as the single CUSUM saved
        before) raises :class:`DetectorError`."""
        try:
            if data["kind"] != CONCEPT_KIND:
                raise DetectorError(f"not a concept detector: kind {data['kind']!r}")
            state = data["state"]
            dets = [CUSUM.from_dict(d) for d in state["detectors"]]
            if not all(type(d) is CUSUM for d in dets):
                raise DetectorError("concept detector state: not CUSUMs")
            det = cls(dets)  # type: ignore[arg-type]
            det._peak = float(state.get("peak", 0.0))
        except DetectorError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise DetectorError(f"concept detector state: malformed ({exc!r})") from None
        return det

    def __repr__(self) -> str:
        return (f"ConceptCUSUM(k={[round(d.k, 4) for d in self.detectors]}, "
                f"score={self.statistic / self.h:.3g}, drift={self.drift_detected})")


#: either concept detector (the join reads the same interface of both)
ConceptDetector = ConceptCUSUM | ConceptSR
