"""Drift events out (source.drift_events): configuration, the records of column episodes
(offsets, event times, scores), their survival in checkpoints, and the skip of records
already written before a restore.  The broker side is in
tests/integration/test_drift_events.py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detectors.model import ModelBaseline, ModelMonitor
from stream.config import DriftEventsConfig, parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.figures import RunnerHealth
from stream.engine.pipeline import Pipeline
from stream.sinks.checkpoints import Checkpoint
from stream.sinks.driftevents import (
    DriftEventWriter,
    DriftRecord,
    episode_records,
    ident_of,
)
from stream.sinks.metrics import make_registry
from tests.support.configs import config_errors, minimal_config

KAFKA = {"bootstrap_servers": "127.0.0.1:9092", "topics": ["events"]}
CONFIG = {
    "source": {"timestamp": {"path": "ts", "unit": "s"}},
    "models": [{
        "name": "m1", "version": "4",
        "select": {"field": "model", "equals": "m1"},
        "baseline": {"file": "m1.json"},
        "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
        "predictions": [{"name": "c", "path": "p.c", "type": "categorical"}],
    }],
    "detection": {"false_alarm_events": 20000, "window": 200, "cadence": 20},
}
KEY = ("events", 2)
#: the source offset of input position i: not the position, so a mix-up shows
FIRST_OFFSET = 10_000
T0 = 1_700_000_000.0


# --------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------
def _source(**extra: Any) -> dict[str, Any]:
    return {"kafka": KAFKA, **extra}


def test_config_default_topic_and_absent() -> None:
    cfg = parse_config(minimal_config(source=_source(drift_events={})), "/")
    assert cfg.source.drift_events == DriftEventsConfig("streamdrift-drift-events")
    cfg = parse_config(minimal_config(source=_source(drift_events={"topic": "drift"})), "/")
    assert cfg.source.drift_events == DriftEventsConfig("drift")
    for absent in (minimal_config(source=_source()),
                   minimal_config(source=_source(drift_events=None))):
        assert parse_config(absent, "/").source.drift_events is None


@pytest.mark.parametrize(("source", "state", "error"), [
    (_source(drift_events={"topic": "events"}), None,
     "source.drift_events.topic: 'events' is also in source.kafka.topics; the drift-events "
     "topic must be a topic of its own"),
    (_source(drift_events={"topic": "dlq"}, dead_letter={"topic": "dlq"}), None,
     "source.drift_events.topic: 'dlq' is also source.dead_letter.topic; the drift-events "
     "topic must be a topic of its own"),
    (_source(drift_events={"topic": "streamdrift-state"}), None,
     "source.drift_events.topic: 'streamdrift-state' is also state.topic; the drift-events "
     "topic must be a topic of its own"),
    (_source(drift_events={"topic": "s"}), {"topic": "s"},
     "source.drift_events.topic: 's' is also state.topic; the drift-events topic must be a "
     "topic of its own"),
    (_source(drift_events={}), {"enabled": False},
     "source.drift_events: needs state.enabled: true (open episodes and what was written live "
     "in the checkpoints); enable state or remove source.drift_events"),
    (_source(drift_events={"topic": "a b"}), None,
     "source.drift_events.topic: 'a b' is not a valid Kafka topic name (1-249 characters: "
     "letters, digits, '.', '_', '-')"),
    (_source(drift_events={"topik": "x"}), None,
     "source.drift_events.topik: unknown key (did you mean 'topic'?); known keys here: topic"),
    (_source(drift_events="x"), None,
     "source.drift_events: must be a mapping with keys topic, e.g. "
     "{topic: streamdrift-drift-events}; got a string"),
])
def test_config_errors_are_one_line_naming_the_key(source: Any, state: Any, error: str) -> None:
    sections: dict[str, Any] = {"source": source}
    if state is not None:
        sections["state"] = state
    assert config_errors(minimal_config(**sections)) == [error]


# --------------------------------------------------------------------------
# records of a pipeline's episodes
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup() -> tuple[Any, dict[str, ModelBaseline]]:
    cfg = parse_config(CONFIG, "/cfg")
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=5000),
            "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 5000, p=[0.5, 0.3, 0.2])}
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=100_000)
    return cfg, {"m1": ModelBaseline.build("m1", data, column_specs(cfg.models[0]), settings)}


def _stream(seed: int, regimes: list[tuple[int, bool]]) -> list[bytes]:
    """(count, drifting) in order; event i has ts T0 + i/10 (a bad one at 150)."""
    rng = np.random.default_rng(seed)
    out = []
    for n, drift in regimes:
        for _ in range(n):
            i = len(out)
            out.append(orjson.dumps({
                "model": "m1", "ts": "garbage" if i == 150 else T0 + i / 10,
                "f": {"x": float(rng.normal(1.5 if drift else 0.0, 1.0))},
                "p": {"c": str(rng.choice(["a", "b", "c"],
                                          p=[0.1, 0.2, 0.7] if drift else [0.5, 0.3, 0.2]))}}))
    return out


#: clean, drift, clean long enough for the episodes to close
EVENTS = [(1000, False), (1500, True), (2500, False)]


def _offset_of(base: int) -> Callable[[int], int]:
    return lambda i: FIRST_OFFSET + base + i


def _run(p: Pipeline, messages: list[bytes], start: int = 0, batch: int = 333,
         ) -> list[DriftRecord]:
    """Process ``messages`` (input positions from ``start``); the drift records."""
    out = []
    for i in range(0, len(messages), batch):
        p.process(messages[i:i + batch], base_index=start + i, partition=KEY,
                  offset_of=_offset_of(start + i))
        out += episode_records(p, "g")
    return out


def test_one_open_and_one_close_per_drifted_column_with_offsets_and_event_times(
        setup: Any) -> None:
    cfg, baselines = setup
    p = Pipeline(cfg, baselines)
    messages = _stream(1, EVENTS)
    alarms: dict[str, list[Any]] = {}
    records = []
    for i in range(0, len(messages), 333):
        found, _ = p.process(messages[i:i + 333], base_index=i, partition=KEY,
                             offset_of=_offset_of(i))
        for d in found:
            alarms.setdefault(d.feature, []).append(d)
        records += episode_records(p, "g")
    assert set(alarms) == {"x", "c"}, "the test needs both columns to drift"
    by_column: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        json.loads(r.encode())  # strict JSON
        by_column.setdefault(r.value["column"], []).append(r.value)
    assert {c: [v["type"] for v in vs] for c, vs in by_column.items()} == {
        "x": ["open", "close"], "c": ["open", "close"]}
    for column, (opened, closed) in by_column.items():
        first = alarms[column][0]
        assert opened["open_offset"] == FIRST_OFFSET + first.index == first.offset
        assert opened["open_event_time"] == T0 + first.index / 10
        assert 1000 <= first.index < 2500  # within the drift
        assert opened["detectors"] and set(opened["detectors"]) <= {d.detector for d in
                                                                     alarms[column]}
        for det in opened["detectors"]:
            s = opened["scores"][det]
            assert s["score"] == pytest.approx(s["statistic"] / s["threshold"])
            assert s["score"] >= 1.0
        assert (opened["model"], opened["version"], opened["topic"], opened["partition"],
                opened["group_id"], opened["baseline_id"]) == (
            "m1", "4", "events", 2, "g", baselines["m1"].id)
        assert opened["role"] == ("feature" if column == "x" else "prediction")
        # the close: after the drift ended, the same episode
        assert closed["open_offset"] == opened["open_offset"]
        assert closed["close_offset"] >= FIRST_OFFSET + 2500
        assert closed["close_event_time"] == T0 + (closed["close_offset"] - FIRST_OFFSET) / 10
        assert closed["duration_s"] == pytest.approx(
            closed["close_event_time"] - closed["open_event_time"])
        assert set(opened["detectors"]) <= set(closed["detectors"])
        assert closed["peak_score"] == pytest.approx(max(
            s["score"] for s in closed["scores"].values()))
        assert closed["peak_score"] >= max(s["score"] for s in opened["scores"].values())
    keys = {r.key for r in records}
    assert keys == {b"g/m1/events/2/x", b"g/m1/events/2/c"}


def test_an_episode_opened_and_closed_in_one_batch_gives_both_records(setup: Any) -> None:
    cfg, baselines = setup
    messages = _stream(1, EVENTS)
    whole = _run(Pipeline(cfg, baselines), messages, batch=len(messages))
    batched = _run(Pipeline(cfg, baselines), messages)
    assert [r.ident for r in whole] == [r.ident for r in batched]
    for column in ("x", "c"):
        kinds = [r.value["type"] for r in whole if r.value["column"] == column]
        assert kinds == ["open", "close"]


def test_a_restored_episode_writes_no_open_and_closes_with_its_offsets(setup: Any) -> None:
    """The checkpoint carries the open episodes: after a restore the same events give the
    same records (what makes the skip of already-written records exact), an episode open
    at the checkpoint writes no second open, and its close names where it opened."""
    cfg, baselines = setup
    messages = _stream(2, EVENTS)
    cut = 1999  # mid-drift: both columns' episodes are open
    whole = _run(Pipeline(cfg, baselines), messages)
    first = Pipeline(cfg, baselines)
    before = _run(first, messages[:cut])
    assert {r.value["column"] for r in before if r.value["type"] == "open"} == {"x", "c"}
    states = first.export_partition(KEY)
    assert set(states["m1"]["episodes"]) == {"x", "c"}
    cp = Checkpoint("g", "m1", *KEY, FIRST_OFFSET + cut, baselines["m1"].id,
                    baselines["m1"].key, states["m1"], 1.0)
    state = Checkpoint.decode(cp.key.encode(), cp.encode()).state  # through JSON
    later = Pipeline(cfg, baselines)
    later.restore_partition(KEY, {"m1": ModelMonitor.from_dict(state, baselines["m1"])},
                            {"m1": state["episodes"]})
    assert later.export_partition(KEY) == first.export_partition(KEY)
    restored = {ep.feature: ep for ep in later.open_episodes()}
    assert {c: (ep.opened, ep.open_offset) for c, ep in restored.items()} == {
        r.value["column"]: (None, r.value["open_offset"]) for r in before}
    after = _run(later, messages[cut:], start=cut)
    assert [r.value["type"] for r in after] == ["close", "close"]
    assert [r.ident for r in before + after] == [r.ident for r in whole]
    for a, b in zip(after, [r for r in whole if r.value["type"] == "close"], strict=True):
        assert {k: v for k, v in a.value.items() if k not in ("closed_at", "opened_at")} == \
            {k: v for k, v in b.value.items() if k not in ("closed_at", "opened_at")}


def test_a_checkpoint_without_episodes_restores_them_unlocated(setup: Any) -> None:
    cfg, baselines = setup
    messages = _stream(2, EVENTS)
    first = Pipeline(cfg, baselines)
    _run(first, messages[:1999])
    state = first.export_partition(KEY)["m1"]
    del state["episodes"]  # a checkpoint written before drift events existed
    later = Pipeline(cfg, baselines)
    later.restore_partition(KEY, {"m1": ModelMonitor.from_dict(state, baselines["m1"])},
                            {"m1": {"x": {"open_offset": "junk", "peaks": {"ks": [1]}}}})
    eps = {ep.feature: ep for ep in later.open_episodes()}
    assert eps["x"].open_offset is None and eps["x"].peaks == {}
    closes = _run(later, messages[1999:], start=1999)
    assert [(r.value["type"], r.value["open_offset"]) for r in closes] == [
        ("close", None), ("close", None)]
    assert all(r.ident is not None for r in closes)  # a close is known by its own offset


# --------------------------------------------------------------------------
# the writer's skip of records already written, idents, metrics
# --------------------------------------------------------------------------
def _record(kind: str, offset: int, group: str = "g", partition: int = 2) -> DriftRecord:
    value = {"schema": 1, "type": kind, "group_id": group, "model": "m1", "column": "x",
             "topic": "events", "partition": partition, "open_offset": offset,
             "close_offset": offset + 10 if kind == "close" else None}
    return DriftRecord(b"k", value)


def test_ident_names_type_group_column_partition_and_offset() -> None:
    assert _record("open", 5).ident == ("open", "g", "m1", "x", "events", 2, 5)
    assert _record("close", 5).ident == ("close", "g", "m1", "x", "events", 2, 15)
    assert ident_of({**_record("open", 5).value, "schema": 2}) is None
    assert ident_of({**_record("open", 5).value, "open_offset": None}) is None
    assert ident_of([1]) is None and ident_of(None) is None


def test_records_already_on_the_topic_are_counted_and_not_written() -> None:
    health = RunnerHealth()

    def no_producer() -> Any:
        raise AssertionError("nothing is left to write: no producer is needed")

    w = DriftEventWriter("drift", {}, health.count_drift_events, make_producer=no_producer)
    dup = [_record("open", 5), _record("close", 5)]
    w.written[("events", 2)] = {r.ident for r in dup}  # type: ignore[misc]
    assert w.write(dup) == []
    assert health.snapshot().drift_events == {"duplicate": 2}
    # another partition, offset or group is not a duplicate: the write is attempted
    for other in (_record("open", 6), _record("open", 5, partition=3),
                  _record("open", 5, group="h")):
        assert w.write([other]) == [other]  # the producer cannot be made: failed, kept
    assert health.snapshot().drift_events == {"duplicate": 2, "failed": 3}
    w.forget(("events", 2))
    assert w.write(dup) == dup


def test_drift_events_counter_is_exported_with_every_result(setup: Any) -> None:
    cfg, baselines = setup
    health = RunnerHealth()
    health.count_drift_events("ok", 3)
    text = generate_latest(make_registry(Pipeline(cfg, baselines), health)).decode()
    got = {s.labels["result"]: s.value for fam in text_string_to_metric_families(text)
           for s in fam.samples if s.name == "streamdrift_drift_events_total"}
    assert got == {"ok": 3.0, "failed": 0.0, "duplicate": 0.0}
