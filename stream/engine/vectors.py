"""Embedding columns (``type: vector``) of the configured models, seen from the engine.

At start-up each vector column is profiled from the model's JSONL reference
(:class:`~detectors.embedding.VectorProfile`: mean, top principal directions, the joint
profile of the projection) and its test calibrated (:func:`calibrate_vector`).  Live,
:meth:`ModelVectors.update` feeds each partition's :class:`~detectors.embedding.VectorTest`
from the batch's decoded matrix (:mod:`stream.formats.vectors`) and counts the malformed
vectors by reason.  Alarms and closes carry the vector column's name as their column and
:data:`DETECTOR` as their detector, so its drift is an episode named after the column.

**Budget.** A model with ``V`` vector columns splits its false-alarm rate in ``V + 1``
equal unit shares: the model-wide monitor (with its groups and segments) keeps one, each
vector column takes one (:func:`vector_budget`), so the model keeps its one knob.

Each partition's tests are written to its checkpoint (``vectors`` in the model's state)
and restored with it.  With ``source.format: open-inference`` a vector column is a request
tensor of shape ``[n, dim]`` (:mod:`stream.formats.oip`) and the reference a JSONL file of
OIP messages, decoded as the stream is.  **Not (yet) here:** ``avro`` is refused at
start-up for vector columns, and CSV or Parquet references.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from detectors.calibration import Calibration
from detectors.column import Alarm
from detectors.embedding import VectorProfile, VectorSpec, VectorTest, calibrate_vector
from detectors.errors import DetectorError
from detectors.model import DetectionSettings
from stream.config import Config, ConfigError, ModelConfig
from stream.config.bias import bias_budget
from stream.config.estimate import estimate_budget
from stream.config.labels import concept_budget
from stream.config.vectors import vector_budget
from stream.engine.references import read_stream_reference_vectors, reads_reference_as_stream
from stream.formats.batch import ModelBatch
from stream.formats.columns import extract_columns, select_events
from stream.formats.vectors import VECTOR_REASONS

log = logging.getLogger("streamdrift.vectors")

#: the detector label of a vector column's test (metrics, reports, episodes)
DETECTOR = "embedding"
#: reference lines read per chunk
CHUNK_LINES = 10_000
#: a longer reference line is skipped (as the model's reference reader does)
MAX_LINE_BYTES = 16 * 1024 * 1024


def read_reference_vectors(path: Path, model: ModelConfig) -> dict[str, np.ndarray]:
    """vector column -> the (events, dim) matrix of the model's reference events (NaN rows
    where a vector is malformed); JSONL only."""
    key = f"models[{model.name}].baseline.reference"
    if path.suffix.lower() not in (".jsonl", ".ndjson", ".json"):
        raise ConfigError(f"{key}: vector columns ({', '.join(v.name for v in model.vectors)}) "
                          f"need a JSONL reference of events; {path.name} is not one (write "
                          f"the reference as .jsonl, one event per line)")
    parts: dict[str, list[np.ndarray]] = {v.name: [] for v in model.vectors}
    malformed = dict.fromkeys(VECTOR_REASONS, 0)

    def flush(events: list[Any]) -> None:
        chosen = [events[i] for i in select_events(events, model).tolist()]
        batch = extract_columns(chosen, model)
        for name, col in batch.vectors.items():
            parts[name].append(col.values)
            for r, c in col.counts().items():
                malformed[r] += c

    try:
        events: list[Any] = []
        with path.open("rb") as fh:
            for line in fh:
                if len(line) > MAX_LINE_BYTES or not line.strip():
                    continue
                try:
                    ev = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(ev, dict):
                    events.append(ev)
                if len(events) >= CHUNK_LINES:
                    flush(events)
                    events = []
        if events:
            flush(events)
    except OSError as exc:
        raise ConfigError(f"{key}: {path} is not a readable file ({exc.strerror})") from None
    if any(malformed.values()):
        log.warning("reference %s: malformed vectors left out: %s", path, malformed)
    return {v.name: (np.vstack(parts[v.name]) if parts[v.name] else np.empty((0, v.dim)))
            for v in model.vectors}


@dataclass
class VectorFigures:
    """What the metrics export of one vector column (over this process's partitions)."""

    dim: int
    components: int
    explained: float
    statistic: float = 0.0
    threshold: float = 0.0
    score: float = 0.0
    active: bool = False
    alarms: int = 0
    rows: int = 0
    malformed: Mapping[str, int] | None = None


class ModelVectors:
    """A model's vector columns: their profiles and calibrations, and per partition their
    live tests."""

    def __init__(self, model: ModelConfig, profiles: dict[str, VectorProfile],
                 calibrations: Mapping[str, Calibration], settings: DetectionSettings) -> None:
        self.model = model
        self.profiles = profiles
        self.calibrations = calibrations
        self.settings = settings
        #: partition -> vector column -> its test
        self.tests: dict[Any, dict[str, VectorTest]] = {}
        #: vector column -> reason -> malformed values counted
        self.malformed = {v.name: dict.fromkeys(VECTOR_REASONS, 0) for v in model.vectors}
        #: vector column -> [valid vectors fed, episodes opened] (this process)
        self.counted = {v.name: [0, 0] for v in model.vectors}

    def new_tests(self) -> dict[str, VectorTest]:
        out = {}
        for name, prof in self.profiles.items():
            cal = self.calibrations[name]
            t = VectorTest(prof, self.settings.window, self.settings.cadence, cal.threshold, name,
                           share_threshold=getattr(cal, "share_threshold", math.inf))
            release = self.settings.release
            if cal.release_floor > 0:
                release = min(1.0, max(release, cal.release_floor / cal.threshold))
            t.configure_episodes(release, self.settings.release_values)
            out[name] = t
        return out

    def drop(self, partition: Any) -> None:
        self.tests.pop(partition, None)

    def export(self, partition: Any) -> dict[str, Any]:
        """vector column -> the running state of ``partition``'s test (checkpoints)."""
        return {k: t.to_dict() for k, t in self.tests.get(partition, {}).items()}

    def restore(self, partition: Any, state: Any, book: Any = None, episodes: Any = None,
                now: float = 0.0) -> None:
        """Restore ``partition``'s tests from the model's exported ``state`` (its
        ``vectors`` entry, :meth:`export`'s output; fresh tests for the columns it lacks, or
        for all when there is none: a checkpoint from before vector columns); a test state
        that does not fit is logged and started afresh rather than stopping the stream.
        With ``book`` (the partition's EpisodeBook), each column's open episode is
        restored into it (``episodes``: column -> its saved Episode state)."""
        tests = self.new_tests()
        saved = state.get("vectors") if isinstance(state, Mapping) else None
        if isinstance(saved, Mapping):
            for k, state in saved.items():
                if k in tests:
                    try:
                        tests[k] = VectorTest.from_dict(state, self.profiles[k], tests[k])
                    except DetectorError as exc:
                        log.warning("vector column %s.%s: checkpointed test state not "
                                    "restored (%s); it starts afresh", self.model.name, k, exc)
        self.tests[partition] = tests
        if book is not None:
            for k, t in tests.items():
                book.restore(self.model.name, k, [DETECTOR] if t.drift_detected else [], now,
                             episodes.get(k) if isinstance(episodes, Mapping) else None)

    def update(self, partition: Any, mb: ModelBatch) -> tuple[list[Alarm], list[Alarm]]:
        """Feed one batch of one partition; (episodes opened, episodes closed), positions
        indices into ``mb``."""
        tests = self.tests.get(partition)
        if tests is None:
            tests = self.tests[partition] = self.new_tests()
        opened: list[Alarm] = []
        closed: list[Alarm] = []
        for name, t in tests.items():
            col = mb.vectors.get(name)
            if col is None:
                continue
            for r, c in col.counts().items():
                self.malformed[name][r] += c
            before = (t.test.n_rows, t.n_alarms)
            for p in t.update(col.values).tolist():
                opened.append(Alarm(name, DETECTOR, int(p), t.statistic, t.threshold))
            for p in t.close_positions.tolist():
                closed.append(Alarm(name, DETECTOR, int(p), t.episode_peak, t.threshold))
            self.counted[name][0] += t.test.n_rows - before[0]
            self.counted[name][1] += t.n_alarms - before[1]
        return opened, closed

    def figures(self) -> dict[str, VectorFigures]:
        out = {}
        for name, prof in self.profiles.items():
            tests = [ts[name] for ts in self.tests.values() if name in ts]
            top = max(tests, key=lambda t: t.score) if tests else None
            out[name] = VectorFigures(
                dim=prof.spec.dim, components=prof.spec.components, explained=prof.explained,
                statistic=max((t.statistic for t in tests), default=0.0),
                threshold=top.threshold if top else self.calibrations[name].threshold,
                score=top.score if top else 0.0,
                active=any(t.drift_detected for t in tests),
                alarms=self.counted[name][1], rows=self.counted[name][0],
                malformed=dict(self.malformed[name]))
        return out


def build_vectors(config: Config, model: ModelConfig, settings: DetectionSettings,
                  ) -> ModelVectors:
    """Profile and calibrate the vector columns of ``model`` from its reference.

    ``settings``: the ``detection`` section's settings (no budget share applied); each
    vector column is calibrated to its unit share (:func:`vector_budget`)."""
    where = f"models[{model.name}]"
    fmt = config.source.format
    if fmt not in ("json", "open-inference"):
        raise ConfigError(f"{where}.features: vector columns are read from JSON events or "
                          f"Open Inference tensors; source.format {fmt!r} is not supported "
                          f"for them yet (remove the type: vector features or use "
                          f"source.format: json or open-inference)")
    ref = model.baseline.reference
    if ref is None:
        raise ConfigError(f"{where}.baseline: vector columns are profiled from the reference "
                          f"events; set baseline.reference (a JSONL file) for this model")
    if fmt == "open-inference":
        # the reference holds OIP requests (and responses), one per line, decoded and
        # joined as the stream's are: its [n, dim] tensors give the reference vectors
        if not reads_reference_as_stream(config, Path(ref)):
            raise ConfigError(f"{where}.baseline.reference: vector columns need a JSONL "
                              f"reference of Open Inference messages (one request or "
                              f"response per line); {Path(ref).name} is not one (write the "
                              f"reference as .jsonl)")
        try:
            data = read_stream_reference_vectors(config, model, Path(ref), MAX_LINE_BYTES)
        except OSError as exc:
            raise ConfigError(f"{where}.baseline.reference: {ref} is not a readable file "
                              f"({exc.strerror})") from None
    else:
        data = read_reference_vectors(Path(ref), model)
    # the unit shares split what the facets' bias detectors leave of the model's rate
    target = settings.false_alarm_events * vector_budget(len(model.vectors)) \
        * bias_budget(model)[0] * concept_budget(model)[0] * estimate_budget(model)[0]
    profiles, cals = {}, {}
    for i, v in enumerate(model.vectors):
        spec = VectorSpec(v.name, v.dim, v.components)
        try:
            prof = VectorProfile.from_matrix(spec, data[v.name], settings.reservoir_size,
                                             seed=i)
        except DetectorError as exc:
            raise ConfigError(f"{where}.baseline.reference: {exc}") from None
        profiles[v.name] = prof
        cals[v.name] = calibrate_vector(prof, settings.window, settings.cadence, target,
                                        settings.release, settings.release_values, seed=i,
                                        n_values=settings.calibration_values)
        log.info("vector column %s.%s: %d reference vectors, %d components explain %.0f %% "
                 "of the variance, threshold %.4g (%s), share CUSUM threshold %.4g", model.name,
                 v.name, prof.joint.n_ref, v.components, 100 * prof.explained,
                 cals[v.name].threshold, cals[v.name].method, cals[v.name].share_threshold)
    return ModelVectors(model, profiles, cals, settings)


def resolve_vectors(config: Config, settings: DetectionSettings) -> dict[str, ModelVectors]:
    """model name -> its vector columns, for the models that have some."""
    return {m.name: build_vectors(config, m, settings)
            for m in config.models if m.vectors}


def vectors_summary(vectors: Mapping[str, ModelVectors]) -> dict[str, Any]:
    """model -> vector column -> figures (reports)."""
    return {m: {k: {"dim": f.dim, "components": f.components,
                    "explained": round(f.explained, 4), "statistic": f.statistic,
                    "threshold": f.threshold, "score": f.score, "drift": f.active,
                    "alarms": f.alarms, "rows": f.rows, "malformed": f.malformed}
                for k, f in mv.figures().items()}
            for m, mv in vectors.items()}
