"""Checkpoint records (stream.sinks.checkpoints), aggregation (stream.engine.figures) and the Pipeline's per-partition state."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.model import ModelBaseline, ModelMonitor
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.figures import aggregate_column
from stream.engine.pipeline import LOCAL_PARTITION, Pipeline
from stream.sinks.checkpoints import (
    STATE_VERSION,
    Checkpoint,
    StateError,
    checkpoint_key,
    group_checkpoints,
    parse_checkpoint_key,
)

CONFIG = {
    "models": [{
        "name": "m1",
        "select": {"field": "model", "equals": "m1"},
        "baseline": {"file": "m1.json"},
        "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                     {"name": "c", "path": "f.c", "type": "categorical"}],
    }],
    "detection": {"false_alarm_events": 20000, "window": 200, "cadence": 20},
}


def _event(rng: np.random.Generator, drift: bool) -> bytes:
    return orjson.dumps({"model": "m1", "f": {
        "x": float(rng.normal(1.0 if drift else 0.0, 1.0)),
        "c": str(rng.choice(["a", "b", "c"], p=[0.2, 0.3, 0.5] if drift else [0.5, 0.3, 0.2]))}})


def _stream(seed: int, n_clean: int, n_drift: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = [_event(rng, i >= n_clean) for i in range(n_clean + n_drift)]
    out[100:100] = [b"{not json", b"[1]"]  # poison counts as consumed, never as an event
    return out


@pytest.fixture(scope="module")
def setup() -> tuple[Any, dict[str, ModelBaseline]]:
    cfg = parse_config(CONFIG, "/cfg")
    model = cfg.models[0]
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=5000),
            "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 5000, p=[0.5, 0.3, 0.2])}
    # the calibration key leaves out calibration_values: a quick calibration is used as is
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=100_000)
    base = ModelBaseline.build("m1", data, column_specs(model), settings)
    return cfg, {"m1": base}


def _pipeline(setup: tuple[Any, dict[str, ModelBaseline]]) -> Pipeline:
    cfg, baselines = setup
    return Pipeline(cfg, baselines)


def _feed(p: Pipeline, messages: list[bytes], partition: Any = LOCAL_PARTITION,
          batch: int = 333, start: int = 0) -> list[tuple[str, str, int]]:
    found = []
    for i in range(0, len(messages), batch):
        dets, _ = p.process(messages[i:i + batch], base_index=start + i, partition=partition)
        found += [(d.feature, d.detector, d.index) for d in dets]
    return found


# --------------------------------------------------------------------------
# checkpoint keys and records
# --------------------------------------------------------------------------
def test_key_round_trip_with_slashes_in_the_group() -> None:
    key = checkpoint_key("team/a", "m1", "events.v2", 12)
    assert key == "team/a/m1/events.v2/12"
    assert parse_checkpoint_key(key) == ("team/a", "m1", "events.v2", 12)
    assert parse_checkpoint_key(key.encode()) == ("team/a", "m1", "events.v2", 12)


@pytest.mark.parametrize("bad", [b"", b"a/b/c", b"g/m/t/x", b"g/m/t/-1", b"g/m/t/01",
                                 b"/m/t/0", b"g//t/0", b"\xff/m/t/0"])
def test_malformed_keys(bad: bytes) -> None:
    with pytest.raises(StateError, match="malformed checkpoint key"):
        parse_checkpoint_key(bad)


def _cp(**kw: Any) -> Checkpoint:
    base = dict(group_id="g", model="m1", topic="events", partition=1, offset=42,
                baseline_id="b", calibration_key="k", state={"name": "m1"}, written_at=1.5)
    base.update(kw)
    return Checkpoint(**base)


def test_record_layout() -> None:
    cp = _cp()
    body = json.loads(cp.encode())
    assert body == {"version": STATE_VERSION, "group_id": "g", "model": "m1", "topic": "events",
                    "partition": 1, "offset": 42, "baseline_id": "b", "calibration_key": "k",
                    "written_at": 1.5, "state": {"name": "m1"}}
    assert Checkpoint.decode(cp.key, cp.encode()) == cp


def test_a_group_reads_its_own_checkpoints_not_those_of_a_group_named_after_it() -> None:
    # "a/b/m1/events/1" starts with "a/": read by prefix, group a took group a/b's m1
    mine, other = _cp(group_id="a", offset=10), _cp(group_id="a/b", offset=99)
    also = _cp(group_id="a", model="m2", partition=2, offset=7)
    latest = {c.key.encode(): c.encode() for c in (mine, other, also)}
    for order in (latest, dict(reversed(list(latest.items())))):
        got = group_checkpoints(order, "a")
        assert got == {("m1", "events", 1): mine, ("m2", "events", 2): also}
        assert group_checkpoints(order, "a/b") == {("m1", "events", 1): other}
    assert group_checkpoints(latest, "a", wanted=[("events", 2)]) == {("m2", "events", 2): also}
    latest[b"a/m3/events/1"] = b""  # a tombstone's place
    latest[b"a/m4/events/x"] = b"{}"  # a key that does not parse: skipped
    assert set(group_checkpoints(latest, "a")) == {("m1", "events", 1), ("m2", "events", 2)}


def test_non_finite_floats_and_numpy_values_survive() -> None:
    state = {"a": math.nan, "b": math.inf, "c": -math.inf, "d": np.float64(0.25),
             "e": np.arange(3), "f": np.int64(7)}
    back = Checkpoint.decode(b"g/m1/events/1", _cp(state=state).encode()).state
    assert math.isnan(back["a"]) and back["b"] == math.inf and back["c"] == -math.inf
    assert (back["d"], back["e"], back["f"]) == (0.25, [0, 1, 2], 7)


def _body(**change: Any) -> bytes:
    body = json.loads(_cp().encode())
    for k, v in change.items():
        if v is dataclasses.MISSING:
            del body[k]
        else:
            body[k] = v
    return json.dumps(body).encode()


@pytest.mark.parametrize(("value", "message"), [
    (b"not json", "value is not JSON"),
    (b"[1, 2]", "value is not a JSON object"),
    (_body(version=99), "unknown version 99"),
    (_body(offset="42"), "offset must be int"),
    (_body(offset=True), "offset must be int"),
    (_body(offset=-1), "negative offset"),
    (_body(state=dataclasses.MISSING), "state must be dict"),
    (_body(baseline_id=None), "baseline_id must be str"),
    (_body(written_at="now"), "written_at must be a number"),
    (_body(partition=2), "the value names another key"),
    (_body(group_id="other"), "the value names another key"),
])
def test_bad_records(value: bytes, message: str) -> None:
    with pytest.raises(StateError, match=message):
        Checkpoint.decode(b"g/m1/events/1", value)


def test_monitor_state_round_trip_through_a_record(setup: Any) -> None:
    """What run writes and restores: the monitor goes on exactly as if never stopped."""
    events = _stream(1, 1500, 1500)
    straight, restored = _pipeline(setup), _pipeline(setup)
    key = ("events", 0)
    first = _feed(straight, events[:1400], key) + _feed(straight, events[1400:], key, start=1400)

    got = _feed(restored, events[:1400], key)
    base = setup[1]["m1"]
    cps = [Checkpoint("g", name, "events", 0, 1400, base.id, base.key, state, 0.0)
           for name, state in restored.export_partition(key).items()]
    records = [(cp.key.encode(), cp.encode()) for cp in cps]
    later = _pipeline(setup)  # a new process
    back = {Checkpoint.decode(k, v).model: Checkpoint.decode(k, v) for k, v in records}
    later.restore_partition(key, {n: ModelMonitor.from_dict(cp.state, base)
                                  for n, cp in back.items()})
    assert later.export_partition(key) == restored.export_partition(key)
    got += _feed(later, events[1400:], key, start=1400)
    assert got == first
    assert any(d[2] >= 1400 for d in first), "the test needs alarms after the checkpoint"
    assert later.monitor("m1", key).n_events == straight.monitor("m1", key).n_events == 3000


# --------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------
def _summary(values: int, score: float, *, drift: bool = False, alarms: int = 0,
             psi: float = 0.0, missing_ratio: float = 0.0, p: float | None = 0.5,
             window: int = 10) -> dict[str, Any]:
    return {"role": "feature", "type": "numeric", "values": values, "missing": 1, "invalid": 2,
            "missing_ratio": missing_ratio, "invalid_ratio": 0.0, "out_of_range_ratio": 0.0,
            "distances": {"psi": psi, "jensen_shannon": psi / 2}, "drift": drift,
            "detectors": {"ks": {"statistic": score * 2, "threshold": 2.0, "p_value": p,
                                 "score": score, "drift": drift, "alarms": alarms,
                                 "window_values": window},
                          "adwin": {"statistic": score, "threshold": 1.0, "p_value": None,
                                    "score": score, "drift": False, "alarms": 0,
                                    "window_values": window}}}


def test_aggregate_rules() -> None:
    a = _summary(100, 0.5, alarms=1, psi=0.3, missing_ratio=0.1, p=0.2)
    b = _summary(300, 1.2, drift=True, alarms=2, psi=0.05, missing_ratio=0.0, p=0.001)
    c = _summary(50, 0.1, alarms=0, psi=0.9, missing_ratio=0.5, p=0.9)
    agg = aggregate_column([a, b, c])
    assert (agg["values"], agg["missing"], agg["invalid"]) == (450, 3, 6)
    # ratios and distances: the partition with the most values (b)
    assert agg["missing_ratio"] == 0.0 and agg["distances"] == b["distances"]
    assert agg["drift"] is True and agg["role"] == "feature" and agg["type"] == "numeric"
    ks = agg["detectors"]["ks"]
    assert ks == {"statistic": 2.4, "threshold": 2.0, "p_value": 0.001, "score": 1.2,
                  "drift": True, "alarms": 3, "window_values": 30}
    assert agg["detectors"]["adwin"]["p_value"] is None


def test_aggregate_ties_and_non_finite_scores() -> None:
    a = _summary(100, float("nan"), psi=0.3)
    b = _summary(100, 0.4, psi=0.7)
    agg = aggregate_column([a, b])
    assert agg["distances"]["psi"] == 0.3  # tie on values: the first partition
    assert agg["detectors"]["ks"]["score"] == 0.4  # NaN never wins
    assert agg["drift"] is False


def test_aggregate_single_is_an_independent_copy() -> None:
    a = _summary(10, 0.5)
    agg = aggregate_column([a])
    assert agg == a
    agg["detectors"]["ks"]["alarms"] = 99
    agg["distances"]["psi"] = 99
    assert a["detectors"]["ks"]["alarms"] == 0 and a["distances"]["psi"] == 0.0
    with pytest.raises(ValueError):
        aggregate_column([])


# --------------------------------------------------------------------------
# the pipeline's partitions
# --------------------------------------------------------------------------
def _cols(p: Pipeline) -> dict[str, Any]:
    """The model's column figures, as the replay report writes them."""
    return {c: f.to_dict() for c, f in p.snapshot().models["m1"].columns.items()}


def _parts(p: Pipeline) -> dict[Any, Any]:
    return {k: dataclasses.asdict(f) for k, f in p.snapshot().partitions.items()}


def test_one_partition_shows_exactly_its_monitor(setup: Any) -> None:
    """Replay (LOCAL_PARTITION) and a one-partition run give the same figures and alarms."""
    events = _stream(2, 1000, 1000)
    local, run = _pipeline(setup), _pipeline(setup)
    found_local = _feed(local, events, batch=777)
    found_run = _feed(run, events, partition=("events", 0), batch=1500)
    assert found_local == found_run and found_local
    assert _cols(local) == _cols(run)
    mon = local.monitor("m1")
    assert mon is not None
    cols = _cols(local)
    assert cols == {c: mc.summary() for c, mc in mon.columns.items()}
    assert local.report_models()["m1"]["features"] == cols


def test_before_any_event_the_metrics_show_fresh_monitors(setup: Any) -> None:
    p = _pipeline(setup)
    snap = p.snapshot()
    assert snap.partitions == {}
    cols = _cols(p)
    assert set(cols) == {"x", "c"}
    assert cols["x"]["values"] == 0 and cols["x"]["detectors"]["ks"]["alarms"] == 0


def test_partitions_keep_their_own_state_and_aggregate(setup: Any) -> None:
    clean, drifted = _stream(3, 2000, 0), _stream(4, 500, 1500)
    p = _pipeline(setup)
    _feed(p, clean, ("events", 0))
    found = _feed(p, drifted, ("events", 1))
    assert found and all(f[0] in ("x", "c") for f in found)
    m0, m1 = p.monitor("m1", ("events", 0)), p.monitor("m1", ("events", 1))
    assert m0 is not None and m1 is not None
    assert (m0.n_events, m1.n_events) == (2000, 2000)
    snap = p.snapshot()
    assert _parts(p)[("events", 0)] == {"consumed": 2002, "processed": {"m1": 2000},
                                        "live": True, "events": {"m1": 2000}}
    assert snap.partitions[("events", 1)].processed == {"m1": 2000}
    x = _cols(p)["x"]
    s0, s1 = m0.columns["x"].summary(), m1.columns["x"].summary()
    assert x["values"] == s0["values"] + s1["values"] == 4000
    ks = x["detectors"]["ks"]
    assert ks["statistic"] == max(s0["detectors"]["ks"]["statistic"],
                                  s1["detectors"]["ks"]["statistic"])
    assert ks["alarms"] == s0["detectors"]["ks"]["alarms"] + s1["detectors"]["ks"]["alarms"] > 0
    assert x["drift"] == (s0["drift"] or s1["drift"])
    assert snap.models["m1"].processed == 4000 and snap.consumed == 4004


def test_counters_never_go_down_across_drop_and_restore(setup: Any) -> None:
    p = _pipeline(setup)
    key = ("events", 1)
    _feed(p, _stream(5, 500, 1500), key)
    before = _cols(p)["x"]
    alarms = before["detectors"]["ks"]["alarms"]
    assert alarms > 0
    state = p.export_partition(key)
    assert p.drop_partition(key) and not p.drop_partition(key)
    assert _parts(p)[key] == {"consumed": 2002, "processed": {"m1": 2000},
                                               "live": False, "events": {}}
    after_drop = _cols(p)["x"]
    assert after_drop["values"] == before["values"] == 2000
    assert after_drop["detectors"]["ks"]["alarms"] == alarms
    assert after_drop["detectors"]["ks"]["statistic"] == 0.0  # no live state left
    # the partition comes back from its checkpoint: its counts are not exported twice
    base = setup[1]["m1"]
    p.restore_partition(key, {"m1": ModelMonitor.from_dict(state["m1"], base)})
    restored = _cols(p)["x"]
    assert restored["values"] == 2000 and restored["detectors"]["ks"]["alarms"] == alarms
    assert restored["detectors"]["ks"]["statistic"] == before["detectors"]["ks"]["statistic"]
    _feed(p, _stream(6, 0, 400), key, start=2002)
    more = _cols(p)["x"]
    assert more["values"] == 2400
    assert p.monitor("m1", key).n_events == 2400  # the state's count continues
    # this process's figures add up over both times it had the partition
    assert p.snapshot().partitions[key].processed == {"m1": 2400}
    assert p.snapshot().partitions[key].consumed == 2002 + 402


def test_a_new_process_exports_only_what_it_counted(setup: Any) -> None:
    first = _pipeline(setup)
    key = ("events", 0)
    _feed(first, _stream(7, 300, 0), key)
    state = first.export_partition(key)
    second = _pipeline(setup)
    second.restore_partition(key, {"m1": ModelMonitor.from_dict(state["m1"], setup[1]["m1"])})
    x = _cols(second)["x"]
    assert x["values"] == 0 and second.monitor("m1", key).n_events == 300


def test_skip_feeds_a_model_only_the_messages_past_its_checkpoint(setup: Any) -> None:
    events = _stream(8, 1000, 0)
    whole, skipped = _pipeline(setup), _pipeline(setup)
    _feed(whole, events[502:], ("t", 0), batch=5000)
    skipped.process(events, partition=("t", 0), skip={"m1": 502})
    assert skipped.export_partition(("t", 0)) == whole.export_partition(("t", 0))
    assert skipped.snapshot().consumed == len(events)
    assert skipped.processed["m1"] == whole.processed["m1"] == 1000 - 500


def test_restore_of_some_models_gives_fresh_ones_to_the_others(setup: Any) -> None:
    p = _pipeline(setup)
    p.restore_partition(("t", 3), {})
    mon = p.monitor("m1", ("t", 3))
    assert mon is not None and mon.n_events == 0
    assert p.has_partition(("t", 3)) and not p.has_partition(("t", 4))
    assert p.monitor("m1", ("t", 4)) is None


def test_invalid_timestamps_are_counted_per_model(setup: Any) -> None:
    from prometheus_client.exposition import generate_latest

    from stream.sinks.metrics import make_registry

    cfg, baselines = setup
    timed = parse_config({**CONFIG, "source": {"timestamp": {"path": "ts", "unit": "s"}}}, "/cfg")
    stamps: list[Any] = [1.7e9, "garbage", None, True, "1700000000", [1]]
    events = [orjson.dumps({"model": "m1", "ts": ts, "f": {"x": 0.5, "c": "a"}})
              for ts in stamps]
    # a timestamp and a value too large: the event counts, with its time unknown
    events.append(b'{"model": "m1", "ts": 1e400, "f": {"x": 1' + b"0" * 5000 + b', "c": "a"}}')
    events.append(b'{"model": "m2", "ts": "garbage"}')  # no model's event: not counted
    p = Pipeline(timed, baselines)
    p.process(events)
    m1 = p.snapshot().models["m1"]
    assert m1.processed == 7 and m1.invalid_timestamps == 4
    assert m1.columns["x"].invalid == 1 and m1.columns["c"].values == 7
    assert m1.last_event_ts == 1.7e9
    assert p.report_models()["m1"]["invalid_timestamps"] == 4
    text = generate_latest(make_registry(p)).decode()
    assert 'streamdrift_invalid_timestamps_total{model="m1"} 4.0' in text
    # the events a restored state already holds are not counted again
    q = Pipeline(timed, baselines)
    q.process(events, partition=("t", 0), skip={"m1": 2})
    assert q.snapshot().models["m1"].invalid_timestamps == 3
    # without source.timestamp nothing is a timestamp: the series is there, at 0
    r = Pipeline(cfg, baselines)
    r.process(events)
    assert r.snapshot().models["m1"].invalid_timestamps == 0
    text = generate_latest(make_registry(r)).decode()
    assert 'streamdrift_invalid_timestamps_total{model="m1"} 0.0' in text
