"""The join of delayed labels with the predictions they belong to (a model's ``labels:``).

One :class:`LabelJoin` per model and inference partition holds, in bounded memory:

* ``pending``: predictions waiting for their label, id -> (event time, prediction), in
  arrival order; a prediction leaves when its label comes (``joined``), when the *label*
  stream's event time passes its own time + ``horizon_s`` (``expired``: its label, were
  there one, would have come by now), or when more than ``max_pending`` wait (the oldest,
  ``evicted``);
* ``early``: labels that came before their prediction, id -> (event time, label); one
  leaves when its prediction comes (``joined``) or when the *prediction* stream's event
  time passes its own time + ``label_wait_s`` (``no_prediction``);
* the ids recently joined and recently expired (``max_pending`` each), so that a second
  label for a joined id counts as ``duplicate`` and one for an expired id as ``late``;
* the quality metrics of the joined pairs (:class:`detectors.quality_metrics.QualityMetrics`)
  and, per label partition, the next label offset its state covers.

Each buffer is aged by the *other* stream's event time, so a consumer that reads one topic
behind the other never expires what the other will still bring.  A stream's time is the
largest median event time of its batches so far, so that a stray event time (a label dated
next year) does not expire everything at once; expiry runs once per batch.  The state round-trips
through :meth:`LabelJoin.to_dict` (it is part of the partition's checkpoint), and
:class:`LabelDecoder` turns label messages into (model, id, time, label) columns, counting
bad ones by reason.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice, repeat
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson

from detectors.concept import ConceptDetector, concept_from_dict
from detectors.quality_metrics import QualityMetrics
from stream.config import Config, LabelsConfig, ModelConfig
from stream.formats.columns import timestamps_column

#: what became of each prediction and label (the ``outcome`` metric label)
OUTCOMES: Final = ("joined", "expired", "evicted", "no_prediction", "duplicate", "late",
                   "unjoinable_prediction")
#: why a label message was rejected (the ``reason`` metric label)
INVALID_LABEL_REASONS: Final = ("invalid_json", "not_an_object", "unknown_model", "missing_id",
                                "wrong_type", "invalid_timestamp")
_MISSING: Final = object()


def _walk(event: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(event, dict):
            return _MISSING
        event = event.get(key, _MISSING)
        if event is _MISSING:
            return _MISSING
    return event


def _id(value: Any) -> str | None:
    """An id as the join compares it: strings and integers (not booleans), as text."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def label_value(cfg: LabelsConfig, value: Any) -> float | str | None:
    """A label as the join keeps it (binary 0/1, a number, a class), None if of a wrong type.

    >>> from stream.config import LabelsConfig
    >>> cfg = LabelsConfig(("id",), ("y",), "binary", topic="t", positive_class="fraud")
    >>> label_value(cfg, "fraud"), label_value(cfg, "ok"), label_value(cfg, 1)
    (1.0, 0.0, None)
    """
    if cfg.task == "binary":
        pos = cfg.positive_class
        if isinstance(pos, str):
            return None if not isinstance(value, str) else float(value == pos)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not value.is_integer():
            return None
        return float(value == pos)
    if cfg.task == "multiclass":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _front(buf: dict[str, Any], limit: float, bound: int,
           ) -> tuple[list[str], list[str]]:
    """Remove from the front of ``buf`` the entries older than ``limit`` (first list), then
    the oldest beyond ``bound`` entries (second list)."""
    old = []
    for k, v in buf.items():
        if v[0] >= limit:
            break
        old.append(k)
    for k in old:
        del buf[k]
    over = list(islice(buf, max(0, len(buf) - bound)))
    for k in over:
        del buf[k]
    return old, over


def concept_state(fresh: ConceptDetector | None, saved: Any) -> ConceptDetector | None:
    """The join's concept detector: the ``saved`` one when it has the calibration of
    ``fresh`` (the model's detector now), else a copy of ``fresh`` with its sums at 0 (a bad
    state, another calibration, or the single CUSUM saved before there were two)."""
    if fresh is None:
        return None
    if isinstance(saved, Mapping):
        try:
            old: ConceptDetector | None = concept_from_dict(dict(saved))
        except Exception:  # noqa: BLE001 - a bad saved detector, or the single CUSUM: afresh
            old = None
        if old is not None and fresh.same_calibration(old):
            if fresh.hold and (old.hold, old.release) != (fresh.hold, fresh.release):
                old.configure_episodes(fresh.release, fresh.hold)
            return old
    return concept_from_dict(fresh.to_dict())


def _earliest(times: list[float]) -> float:
    return min(times)


class LabelJoin:
    """Predictions and labels of one model on one inference partition, joined by id."""

    def __init__(self, cfg: LabelsConfig) -> None:
        self.cfg = cfg
        #: id -> (event time, prediction, what the facets' bias monitors need: see
        #: :meth:`stream.engine.biaslabels.LabelBias.carry`; None without facets)
        self.pending: dict[str, tuple[float, Any, Any]] = {}
        self.early: dict[str, tuple[float, Any]] = {}
        self.joined_ids: dict[str, None] = {}
        self.expired_ids: dict[str, None] = {}
        #: newest event time of the predictions and of the labels seen
        self.pred_time = -math.inf
        self.label_time = -math.inf
        self.counts: Counter[str] = Counter()
        self.quality = QualityMetrics(cfg.task, cfg.window, cfg.threshold)
        #: label partition -> next label offset this state covers (``run`` only)
        self.label_next: dict[int, int] = {}
        #: whether the state changed since the last :meth:`to_dict`
        self.dirty = False
        #: the concept-drift detector of the joined errors (None: no labelled reference)
        self.concept: ConceptDetector | None = None
        #: the concept CUSUM's episode steps since the pipeline last took them: ("open" |
        #: "close", statistic (a close: the episode's peak), threshold, ordinal of the joined
        #: pair: 0 for the join's first, counted on across restores)
        self.concept_steps: list[tuple[str, float, float, int]] = []
        #: the facets' monitors of the joined pairs (stream.engine.biaslabels.FacetPairs;
        #: None: the model has no facets or no labelled reference) and their episode steps
        #: since the pipeline last took them: ("open" | "close", facet=value, detector,
        #: statistic, threshold)
        self.bias: Any = None
        self.bias_steps: list[tuple[str, str, str, float, float]] = []
        self._ys: list[Any] = []
        self._ps: list[Any] = []
        self._xs: list[Any] = []

    # -- input ---------------------------------------------------------------------------
    def add_predictions(self, ids: Sequence[Any], times: np.ndarray, preds: np.ndarray,
                        others: Sequence[LabelJoin] = (), extras: Sequence[Any] | None = None,
                        ) -> None:
        """Predictions of a batch (``preds``: scores or values; None/NaN where unusable;
        ``extras``: per prediction, what waits with it for the facets' monitors).

        ``others``: the joins of the model's other partitions held by this process, whose
        early labels a prediction here may meet (a single consumer joins across partitions)."""
        ok_time = np.isfinite(times)
        if preds.dtype.kind == "f":
            ok = ok_time & np.isfinite(preds)
            if self.cfg.task == "binary":
                ok &= (preds >= 0.0) & (preds <= 1.0)
        else:
            ok = ok_time & np.array([isinstance(p, str) for p in preds], dtype=bool)
        keys = [_id(v) for v in ids]
        xs = repeat(None) if extras is None else extras
        rows = [(k, float(t), p, x) for k, t, p, good, x in zip(
            keys, times.tolist(), preds.tolist(), ok.tolist(), xs, strict=False)
            if good and k is not None]
        bad = len(keys) - len(rows)
        if bad:
            self.counts["unjoinable_prediction"] += bad
        if not rows:
            return
        self.dirty = True
        # the median, not the newest: one stray event time must not expire the early labels
        self.pred_time = max(self.pred_time, float(np.median([r[1] for r in rows])))
        waiting = [j for j in (self, *others) if j.early]
        if waiting:
            for k, t, p, x in rows:
                for j in waiting:
                    lab = j.early.pop(k, None)
                    if lab is not None:
                        j.dirty = True
                        self._join(k, lab[1], p, x)
                        break
                else:
                    self.pending[k] = (t, p, x)
        else:
            self.pending.update((k, (t, p, x)) for k, t, p, x in rows)
        for j in (self, *others):
            j._age([o for o in (self, *others) if o is not j])

    def add_labels(self, ids: Sequence[str], times: Sequence[float],
                   values: Sequence[Any], others: Sequence[LabelJoin] = ()) -> None:
        """Labels (valid ids, finite times, values from :func:`label_value`).

        A label whose prediction waits on one of ``others`` (the model's other partitions
        held by this process) is joined there."""
        if not ids:
            return
        self.dirty = True
        # the median, not the newest: one stray label time must not expire the predictions
        self.label_time = max(self.label_time, float(np.median(times)))
        pending, early = self.pending, self.early
        for k, t, y in zip(ids, times, values, strict=True):
            pred = pending.pop(k, None)
            if pred is not None:
                self._join(k, y, pred[1], pred[2])
                continue
            owner = next((o for o in others if k in o.pending), None)
            if owner is not None:
                _, p, x = owner.pending.pop(k)
                owner._join(k, y, p, x)
                owner.dirty = True
            elif k in early or any(k in j.joined_ids for j in (self, *others)):
                self.counts["duplicate"] += 1
            elif any(k in j.expired_ids for j in (self, *others)):
                self.counts["late"] += 1
            else:
                early[k] = (t, y)
        for j in (self, *others):
            j._age([o for o in (self, *others) if o is not j])

    def _join(self, key: str, y: Any, p: Any, x: Any = None) -> None:
        self._ys.append(y)
        self._ps.append(p)
        self._xs.append(x)
        self._remember(self.joined_ids, key)

    def _remember(self, ids: dict[str, None], key: str) -> None:
        ids[key] = None
        if len(ids) > self.cfg.max_pending:
            del ids[next(iter(ids))]

    def _age(self, others: Sequence[LabelJoin] = ()) -> None:
        """Expire and evict; feed the pairs joined since the last call to the metrics.

        The time that ages a buffer is the earliest of the model's partitions held here:
        with labels not co-partitioned (one consumer), a label may come on any partition,
        and expiring by the fastest would make it late.  So a partition that has seen no
        label (no prediction) yet holds the expiry of predictions (early labels) back; the
        memory bound still holds (the oldest are evicted beyond ``max_pending``).  The
        buffers are scanned from their oldest entry up to the first one still in time (so
        an entry behind a newer one waits a little longer: amortised O(1) per entry)."""
        cfg = self.cfg
        group = (self, *others)
        gone = _front(self.pending, _earliest([j.label_time for j in group]) - cfg.horizon_s,
                      cfg.max_pending)
        for k in gone[0]:
            self._remember(self.expired_ids, k)
        for k in gone[1]:
            self._remember(self.expired_ids, k)
        self.counts["expired"] += len(gone[0])
        self.counts["evicted"] += len(gone[1])
        stale = _front(self.early, _earliest([j.pred_time for j in group]) - cfg.label_wait_s,
                       cfg.max_pending)
        self.counts["no_prediction"] += len(stale[0]) + len(stale[1])
        if gone[0] or gone[1] or stale[0] or stale[1]:
            # aged by another partition's batch, this join changed too: its next checkpoint
            # must be written even if its own offsets did not move
            self.dirty = True
        if self._ys:
            ys, ps, xs = self._ys, self._ps, self._xs
            self._ys, self._ps, self._xs = [], [], []
            self.counts["joined"] += len(ys)
            q = self.quality
            if cfg.task == "multiclass":
                y, p = q.class_index(ys), q.class_index(ps)
            else:
                y, p = np.asarray(ys, dtype=np.float64), np.asarray(ps, dtype=np.float64)
            q.update(y, p)
            if self.concept is not None:
                self._concept(q.errors(y, p))
            if self.bias is not None:
                self.bias_steps.extend(self.bias.update(ys, xs))

    def _concept(self, errors: np.ndarray) -> None:
        """Feed the concept CUSUM; record its episode steps in input order (a close before
        an open at the same pair)."""
        det = self.concept
        assert det is not None
        opens = det.update(errors)
        self.counts["concept_alarms"] += len(opens)
        thr = float(det.threshold)
        first = self.counts["joined"] - len(errors)  # the ordinal of errors[0]
        steps = [(int(pos), 0, "close", float(det.episode_peak))
                 for pos in det.close_positions.tolist()]
        steps += [(int(pos), 1, "open", float(st)) for pos, st in
                  zip(opens.tolist(), det.alarm_statistics.tolist(), strict=True)]
        self.concept_steps.extend((kind, st, thr, first + pos)
                                  for pos, _, kind, st in sorted(steps))

    # -- state ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        self.dirty = False
        pending = [list(self.pending), [v[0] for v in self.pending.values()],
                   [v[1] for v in self.pending.values()]]
        extras = [v[2] for v in self.pending.values()]
        if any(x is not None for x in extras):  # the facet values waiting with them
            pending.append(extras)
        return {
            "pending": pending,
            "early": [list(self.early), [v[0] for v in self.early.values()],
                      [v[1] for v in self.early.values()]],
            "joined_ids": list(self.joined_ids), "expired_ids": list(self.expired_ids),
            "pred_time": self.pred_time, "label_time": self.label_time,
            "counts": dict(self.counts), "quality": self.quality.to_dict(),
            "label_next": {str(k): v for k, v in self.label_next.items()},
            "concept": None if self.concept is None else self.concept.to_dict(),
            **({} if self.bias is None else {"bias": self.bias.to_dict()}),
        }

    @classmethod
    def from_dict(cls, cfg: LabelsConfig, d: Mapping[str, Any],
                  concept: ConceptDetector | None = None, bias: Any = None) -> LabelJoin:
        """The saved state ``d``; ``concept``: the model's calibrated detector now (the saved
        one's sums go on when it has the same threshold, else it starts afresh); ``bias``:
        the model's :class:`stream.engine.biaslabels.LabelBias` (its monitors restored
        from ``d`` when saved with the same baselines, else fresh).  A checkpoint written
        before predictions carried facet values restores with none (those pairs are not
        fed to the facets' monitors)."""
        j = cls(cfg)
        j.concept = concept_state(concept, d.get("concept"))
        j.bias = None if bias is None else bias.restored(d.get("bias"))
        saved = d["pending"]
        ids, ts, vs = saved[:3]
        xs = saved[3] if len(saved) > 3 else repeat(None)
        j.pending = dict(zip(ids, zip(ts, vs, xs, strict=False), strict=True))
        ids, ts, vs = d["early"]
        j.early = dict(zip(ids, zip(ts, vs, strict=True), strict=True))
        j.joined_ids = dict.fromkeys(d["joined_ids"])
        j.expired_ids = dict.fromkeys(d["expired_ids"])
        # -inf (no event time yet) is saved as JSON null
        j.pred_time, j.label_time = (-math.inf if d[k] is None else float(d[k])
                                     for k in ("pred_time", "label_time"))
        j.counts = Counter({str(k): int(v) for k, v in d["counts"].items()})
        q = QualityMetrics.from_dict(d["quality"])
        if (q.task, q.window) == (cfg.task, cfg.window):
            j.quality = q
        j.label_next = {int(k): int(v) for k, v in d.get("label_next", {}).items()}
        return j


class LabelDecoder:
    """Label messages -> per model: ids, event times, label values (bad ones counted)."""

    def __init__(self, config: Config) -> None:
        ts = config.source.timestamp
        self.unit = ts.unit if ts is not None else "s"
        default_path = ts.path if ts is not None else ("timestamp",)
        self.models = [m for m in config.models if m.labels is not None]
        #: label topic -> the models reading it (None: the models whose label events come in
        #: the inference stream, ``labels.select``)
        self.by_topic: dict[str | None, list[ModelConfig]] = {}
        for m in self.models:
            assert m.labels is not None
            self.by_topic.setdefault(m.labels.topic, []).append(m)
        self.time_path = {m.name: (m.labels.timestamp_path or default_path)
                          for m in self.models if m.labels is not None}

    def decode(self, messages: Sequence[bytes], topic: str | None = None, inline: bool = False,
               ) -> tuple[dict[str, tuple[list[str], list[float], list[Any], list[int]]],
                          Counter[str]]:
        """model -> (ids, times, values, positions in ``messages``) and the bad ones by reason.

        ``topic``: the label topic the messages came from; ``inline``: label events taken
        from the inference stream; neither: every model's labels, as ``replay --labels``
        reads them."""
        models = self.by_topic.get(None, []) if inline else \
            self.models if topic is None else self.by_topic.get(topic, [])
        bad: Counter[str] = Counter()
        out: dict[str, tuple[list[str], list[float], list[Any], list[int]]] = {
            m.name: ([], [], [], []) for m in models}
        raw: dict[str, list[Any]] = {m.name: [] for m in models}
        for pos, msg in enumerate(messages):
            try:
                event = orjson.loads(msg)
            except orjson.JSONDecodeError:
                bad["invalid_json"] += 1
                continue
            if not isinstance(event, dict):
                bad["not_an_object"] += 1
                continue
            model = _route(models, event)
            if model is None:
                bad["unknown_model"] += 1
                continue
            lab = model.labels
            assert lab is not None
            key = _id(_walk(event, lab.label_id))
            if key is None:
                bad["missing_id"] += 1
                continue
            value = label_value(lab, _walk(event, lab.label_path))
            if value is None:
                bad["wrong_type"] += 1
                continue
            ids, _, values, positions = out[model.name]
            ids.append(key)
            values.append(value)
            positions.append(pos)
            t = _walk(event, self.time_path[model.name])
            raw[model.name].append(None if t is _MISSING else t)
        for name, (ids, times, values, positions) in out.items():
            if not ids:
                continue
            ts, _ = timestamps_column(raw[name], len(ids), self.unit)
            ok = np.isfinite(ts)
            if not ok.all():
                bad["invalid_timestamp"] += int((~ok).sum())
                keep = np.flatnonzero(ok).tolist()
                out[name] = ([ids[i] for i in keep], ts[ok].tolist(),
                             [values[i] for i in keep], [positions[i] for i in keep])
            else:
                times.extend(ts.tolist())
        return out, bad


def split_inline(messages: Sequence[bytes], selects: Sequence[Any],
                 ) -> tuple[np.ndarray, list[bytes]] | None:
    """The positions of the messages that are not label events (``selects``: the
    ``labels.select`` of the models whose labels come in the inference stream) and the label
    events; None when there is none.  A message that does not parse stays with the events
    (the decoder counts it)."""
    keep: list[int] = []
    found: list[bytes] = []
    for i, msg in enumerate(messages):
        try:
            event = orjson.loads(msg)
        except (orjson.JSONDecodeError, TypeError):
            keep.append(i)
            continue
        if isinstance(event, dict) and any(
                type(v := _walk(event, s.field)) is type(s.equals) and v == s.equals
                for s in selects):
            found.append(msg)
        else:
            keep.append(i)
    if not found:
        return None
    return np.asarray(keep, dtype=np.int64), found


def _route(models: Sequence[ModelConfig], event: dict[str, Any]) -> ModelConfig | None:
    """The model a label event belongs to: the only one reading its topic, else by select."""
    if len(models) == 1:
        return models[0]
    for m in models:
        if m.select is not None:
            v = _walk(event, m.select.field)
            if v is not _MISSING and type(v) is type(m.select.equals) and v == m.select.equals:
                return m
    return None


def reference_events(model: ModelConfig, max_lines: int) -> Iterator[dict[str, Any]]:
    """The JSON objects among the first ``max_lines`` lines of the model's JSONL reference
    that the model's ``select`` takes (lines that are not JSON objects are skipped)."""
    ref = model.baseline.reference
    assert ref is not None
    with Path(ref).open("rb") as fh:
        for i, line in enumerate(fh):
            if i >= max_lines:
                break
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(event, dict):
                continue
            if model.select is not None and \
                    _walk(event, model.select.field) != model.select.equals:
                continue
            yield event


def reference_quality(model: ModelConfig, max_lines: int = 1_000_000,
                      ) -> tuple[dict[str, float], np.ndarray] | None:
    """The quality metrics of a JSONL reference whose events carry labels inline (at
    ``labels.label_path``, next to the predictions), the baseline values, and the errors of
    its predictions (see :meth:`QualityMetrics.errors`); None when the reference is not
    JSONL or holds no labelled event."""
    lab = model.labels
    ref = model.baseline.reference
    if lab is None or ref is None or model.baseline.reference_format != "jsonl":
        return None
    col = next(c for c in model.predictions if c.name == lab.prediction)
    ys: list[Any] = []
    ps: list[Any] = []
    for event in reference_events(model, max_lines):
        y = label_value(lab, _walk(event, lab.label_path))
        p = _walk(event, col.path)
        if y is None or p is _MISSING or p is None:
            continue
        if lab.task == "multiclass":
            if not isinstance(p, str):
                continue
        elif isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p):
            continue
        ys.append(y)
        ps.append(p)
    if not ys:
        return None
    q = QualityMetrics(lab.task, lab.window, lab.threshold)
    if lab.task == "multiclass":
        ya, pa = q.class_index(ys), q.class_index(ps)
    else:
        ya, pa = np.asarray(ys, dtype=np.float64), np.asarray(ps, dtype=np.float64)
    q.update(ya, pa)
    return q.metrics(), q.errors(ya, pa)
