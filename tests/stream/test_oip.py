"""``source.format: open-inference``: decoding, the join, bad payloads, and the same
report as JSON events on the same rows."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from stream.config import ConfigError, load_config, parse_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.formats.oip import OipDecoder
from stream.runtime.replay import replay
from stream.sinks.metrics import make_registry
from tests.support.oip import (
    JSON_MODEL,
    OIP_MODEL,
    json_events,
    make_rows,
    oip_messages,
    row_lines,
)

DETECTION = {"false_alarm_events": 1_000_000, "window": 500, "cadence": 50}


@dataclass
class Rec:
    """A consumed Kafka record as the decoder reads it (kafka-python's attribute names)."""

    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] | None = None
    topic: str = "t"


def _config(source: dict[str, Any] | None = None, model: dict[str, Any] | None = None) -> Any:
    m = copy.deepcopy(model or OIP_MODEL)
    m["baseline"] = {"file": "b.json"}
    return parse_config({"source": {"format": "open-inference", **(source or {})},
                         "models": [m], "detection": DETECTION}, "/")


def _req(ident: str | None, x: list[list[float]], **extra: Any) -> bytes:
    body: dict[str, Any] = {"inputs": [
        {"name": "x", "shape": [len(x), 2], "datatype": "FP64", "data": x},
        {"name": "amount", "shape": [len(x)], "datatype": "FP64", "data": [1.0] * len(x)},
        {"name": "country", "shape": [len(x)], "datatype": "BYTES", "data": ["de"] * len(x)}],
        **extra}
    if ident is not None:
        body["id"] = ident
    return orjson.dumps(body)


def _resp(ident: str | None, scores: list[float], model: str | None = "credit") -> bytes:
    body: dict[str, Any] = {"outputs": [{"name": "score", "shape": [len(scores)],
                                         "datatype": "FP32", "data": scores}]}
    if ident is not None:
        body["id"] = ident
    if model is not None:
        body["model_name"] = model
    return orjson.dumps(body)


# -- the join ---------------------------------------------------------------------------
def test_rows_join_across_batches_at_the_completing_message() -> None:
    dec = OipDecoder(_config())
    first = dec.decode([_req("a", [[1, 2], [3, 4]]), _req("b", [[5, 6]])])
    assert first.n_events == 0 and first.invalid == {} and len(dec.pending) == 2
    second = dec.decode([b"{}", _resp("b", [0.9]), _resp("a", [0.1, 0.2])])
    mb = second.models["credit"]
    assert second.n_events == 3
    assert mb.positions.tolist() == [1, 2, 2]
    assert mb.columns["x1"].tolist() == [5.0, 1.0, 3.0]
    assert mb.columns["x2"].tolist() == [6.0, 2.0, 4.0]
    assert mb.columns["score"].tolist() == pytest.approx([0.9, 0.1, 0.2])
    assert mb.columns["country"].tolist() == ["de", "de", "de"]
    assert second.invalid == {"not_inference": 1}
    assert second.invalid_positions.tolist() == [0]
    assert not dec.pending


def test_cloudevents_headers_give_kind_id_and_time() -> None:
    """KServe's logger: ce-id joins (the bodies carry no id), ce-type tells the kind even
    of a body that looks like the other kind, ce-time is the event time; ce_ (the Kafka
    binding's spelling) is read too."""
    cfg = _config({"timestamp": {"path": "ce-time", "unit": "iso8601"}},
                  {**OIP_MODEL, "select": {"field": "ce-inferenceservicename",
                                           "equals": "credit"}})
    dec = OipDecoder(cfg)

    def headers(kind: str, ident: str, sep: str = "-") -> list[tuple[str, bytes]]:
        return [(f"ce{sep}id", ident.encode()),
                (f"ce{sep}type", f"org.kubeflow.serving.inference.{kind}".encode()),
                (f"ce{sep}time", b"2026-12-03T15:00:00Z"),
                (f"ce{sep}inferenceservicename", b"credit")]

    batch = dec.decode([
        Rec(_req(None, [[1, 2]]), headers=headers("request", "u1")),
        Rec(_resp(None, [0.5], model=None), headers=headers("response", "u1", "_")),
        Rec(_req(None, [[3, 4]]), headers=headers("request", "u2")),
    ])
    mb = batch.models["credit"]
    assert mb.columns["x1"].tolist() == [1.0]
    when = datetime(2026, 12, 3, 15, tzinfo=UTC).timestamp()
    assert mb.timestamps is not None and mb.timestamps.tolist() == [when]
    assert list(dec.pending) == ["u2"]


def test_two_topics_seldon_style_keys_and_model_from_the_topic() -> None:
    """Seldon Core 2: requests on <model>.inputs, responses on <model>.outputs, the request
    id as the message key; model_name from the topic when the body has none."""
    dec = OipDecoder(_config())
    ins, outs = "seldon.default.model.credit.inputs", "seldon.default.model.credit.outputs"
    batch = dec.decode([
        Rec(_resp(None, [0.3], model=None), key=b"k1", topic=outs),
        Rec(_req(None, [[1, 2]]), key=b"k1", topic=ins),
        Rec(_req(None, [[3, 4]]), key=b"k2", topic=ins),
    ])
    assert batch.models["credit"].columns["score"].tolist() == pytest.approx([0.3])
    assert batch.models["credit"].positions.tolist() == [1]
    assert list(dec.pending) == ["k2"]
    # topics named in the configuration, whatever their names
    dec = OipDecoder(_config({"open_inference": {"request_topics": ["a"],
                                                 "response_topics": ["b"]}}))
    batch = dec.decode([Rec(_req("1", [[1, 2]]), topic="a"), Rec(_resp("1", [0.1]), topic="b")])
    assert batch.n_events == 1


def test_bad_payloads_are_counted_by_reason_and_spare_the_rest() -> None:
    dec = OipDecoder(_config())
    good_req = [_req(f"g{i}", [[i, i]]) for i in range(3)]
    messages = [
        b"{not json", b"[1]", b'{"hello": 1}',                                 # 0-2
        orjson.dumps({"id": "s", "inputs": [{"name": "x", "shape": [2, 2],
                                            "datatype": "FP64", "data": [1, 2, 3]}]}),  # 3
        orjson.dumps({"id": "t", "inputs": "oops"}),                            # 4
        _req(None, [[1, 2]]),                                                   # 5
        *good_req,                                                              # 6-8
        _req("m", [[1, 2], [3, 4]]), _resp("m", [0.1]),                         # 9-10
        *[_resp(f"g{i}", [0.5]) for i in range(3)],                             # 11-13
        _req("o", [[1, 2]]), _resp("o", [0.1], model="other"),                  # 14-15
    ]
    batch = dec.decode(messages)
    assert batch.invalid == {"invalid_json": 1, "not_an_object": 1, "not_inference": 1,
                             "invalid_tensor": 3, "missing_id": 1, "unknown_model": 1}
    assert batch.invalid_positions.tolist() == [0, 1, 2, 3, 4, 5, 10, 15]
    assert batch.invalid_reasons[6] == "invalid_tensor"  # 2 request rows, 1 response row
    mb = batch.models["credit"]
    assert mb.columns["x1"].tolist() == [0.0, 1.0, 2.0]
    assert mb.positions.tolist() == [11, 12, 13]


def test_nulls_and_wrong_types_follow_the_json_value_rules() -> None:
    dec = OipDecoder(_config())
    req = orjson.dumps({"id": "a", "inputs": [
        {"name": "x", "shape": [3, 2], "datatype": "FP64",
         "data": [1, None, True, 2, "x", 3]},
        {"name": "country", "shape": [3], "datatype": "BYTES", "data": ["de", None, 7]}]})
    mb = dec.decode([req, _resp("a", [0.1, 0.2, 0.3])]).models["credit"]
    assert np.isnan(mb.columns["x1"][1:]).all() and mb.columns["x1"][0] == 1.0
    assert mb.invalid_mask["x1"].tolist() == [False, True, True]
    assert mb.missing_mask["x2"].tolist() == [True, False, False]
    assert mb.columns["country"].tolist() == ["de", None, "7"]
    assert mb.missing_values["amount"] == 3  # a configured tensor that is absent


def test_the_buffer_is_bounded_and_counts_what_expires() -> None:
    now = [0.0]
    cfg = _config({"open_inference": {"max_pending": 2, "timeout_s": 10}})
    dec = OipDecoder(cfg, clock=lambda: now[0])
    batch = dec.decode([_req(str(i), [[i, i]]) for i in range(4)])
    assert batch.invalid == {"unjoined_request": 2} and list(dec.pending) == ["2", "3"]
    now[0] = 5.0
    batch = dec.decode([_resp("2", [0.1]), _resp("9", [0.1])])
    assert batch.n_events == 1 and batch.invalid == {}
    now[0] = 16.0  # "3" was held since t=0, "9" since t=5: both are past the timeout
    batch = dec.decode([_resp("3", [0.1]), _req("x", [[1, 1]])])
    assert batch.invalid == {"unjoined_response": 1}
    assert batch.n_events == 1  # "3" joined before the clock expired it
    # the same id again: the older half can no longer join
    assert dec.decode([_req("x", [[2, 2]])]).invalid == {"unjoined_request": 1}
    assert dec.flush() == {"unjoined_request": 1} and not dec.pending


def test_a_side_no_column_reads_is_not_waited_for() -> None:
    model = {**OIP_MODEL, "select": None, "predictions": []}
    model.pop("select")
    dec = OipDecoder(_config(model=model))
    batch = dec.decode([_req(None, [[1, 2], [3, 4]]), _resp("z", [0.4])])
    assert batch.n_events == 2 and batch.invalid == {} and not dec.pending


def test_metrics_export_the_formats_reasons() -> None:
    cfg = _config()
    pipe = Pipeline(cfg, _baseline())
    pipe.process([b"[1]", _req("a", [[1, 2]]), _resp("b", [0.1])])
    pipe.flush_decoder()
    registry = make_registry(pipe)
    for reason, value in (("not_an_object", 1), ("unjoined_request", 1),
                          ("unjoined_response", 1), ("invalid_json", 0)):
        assert registry.get_sample_value("streamdrift_events_invalid_total",
                                         {"reason": reason}) == value


@functools.cache
def _baseline() -> Any:
    cfg = _config()
    return _tiny_baselines(cfg)


def _tiny_baselines(cfg: Any) -> dict[str, Any]:
    from detectors.model import ModelBaseline
    from stream.engine.baselines import column_specs, detection_settings

    rows = make_rows(1, 2000)
    data = {"x1": np.array(rows["x1"]), "x2": np.array(rows["x2"]),
            "amount": np.array([np.nan if v is None else v for v in rows["amount"]]),
            "country": np.array(rows["country"], dtype=object),
            "score": np.array(rows["score"])}
    m = cfg.models[0]
    return {m.name: ModelBaseline.build(m.name, data, column_specs(m),
                                        detection_settings(cfg.detection))}


# -- configuration ----------------------------------------------------------------------
@pytest.mark.parametrize(("source", "model", "key"), [
    ({}, {**OIP_MODEL, "features": [{"name": "x", "path": "f.x", "type": "numeric"}]},
     "models[0].features[0].path"),
    ({}, {**OIP_MODEL, "features": [{"name": "x", "path": "inputs.x.one", "type": "numeric"}]},
     "models[0].features[0].path"),
    ({}, {**OIP_MODEL, "select": {"field": "a.b", "equals": "x"}}, "models[0].select.field"),
    ({"timestamp": {"path": "meta.ts"}}, OIP_MODEL, "source.timestamp.path"),
    ({"open_inference": {"max_pending": 0}}, OIP_MODEL, "source.open_inference.max_pending"),
    ({"open_inference": {"request_topics": ["a"], "response_topics": ["a"]}}, OIP_MODEL,
     "source.open_inference.response_topics"),
    ({"open_inference": {"buffer": 3}}, OIP_MODEL, "source.open_inference.buffer"),
    ({"format": "json", "open_inference": {}}, JSON_MODEL, "source.open_inference"),
    # the label join reads the ids of JSON events only (issue #15)
    ({"timestamp": {"path": "ce-time"}},
     {**OIP_MODEL, "labels": {"topic": "labels", "id_path": "id", "label_path": "label",
                              "task": "binary", "positive_class": 1, "score_column": "score",
                              "horizon_s": 60}},
     "models[0].labels"),
])
def test_bad_configuration_names_the_key(source: dict[str, Any], model: dict[str, Any],
                                         key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(source, model)
    assert f"{key}:" in str(err.value)


# -- the same report as JSON ------------------------------------------------------------
N_ROWS, DRIFT_AT = 9_000, 6_000


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Replay reports of the same rows as JSON events and as OIP batches; baselines built
    from the same reference rows in each format."""
    d = tmp_path_factory.mktemp("oip")
    ref = make_rows(7, 5_000)
    rows = make_rows(8, N_ROWS, drift_at=DRIFT_AT)
    (d / "ref.jsonl").write_bytes(b"\n".join(json_events(ref)) + b"\n")
    (d / "ref-oip.jsonl").write_bytes(b"\n".join(m.body for m in oip_messages(ref, 3)) + b"\n")
    (d / "events.jsonl").write_bytes(b"\n".join(json_events(rows)) + b"\n")
    messages = oip_messages(rows, 4)
    (d / "events-oip.jsonl").write_bytes(b"\n".join(m.body for m in messages) + b"\n")
    out: dict[str, Any] = {"lines": row_lines(messages, N_ROWS)}
    for name, fmt, model, reference, events in (
            ("json", "json", JSON_MODEL, "ref.jsonl", "events.jsonl"),
            ("oip", "open-inference", OIP_MODEL, "ref-oip.jsonl", "events-oip.jsonl")):
        data = {"source": {"format": fmt},
                "models": [{**model, "baseline": {"reference": reference}}],
                "detection": DETECTION}
        (d / f"{name}.yaml").write_text(yaml.safe_dump(data))
        cfg = load_config(d / f"{name}.yaml")
        pipe = Pipeline(cfg, resolve_baselines(cfg))
        out[name] = replay(cfg, pipe, d / events, batch_lines=2_000)
    return out


def test_json_and_oip_give_the_same_report(reports: dict[str, Any]) -> None:
    js, oip, lines = reports["json"], reports["oip"], reports["lines"]
    assert js["input_lines"] == N_ROWS and oip["input_lines"] == 2 * len(set(lines.tolist()))
    assert oip["events_processed"] == js["events_processed"] == N_ROWS
    assert oip["events_invalid"] == js["events_invalid"] == {}
    # the detections: a drift of x1 is found, at the same rows
    assert any(d["feature"] == "x1" for d in js["detections"])
    assert all(d["index"] >= DRIFT_AT for d in js["detections"] if d["feature"] == "x1")
    mapped = [{**d, "index": int(lines[d["index"]])} for d in js["detections"]]
    assert oip["detections"] == mapped
    mapped_episodes = [{**e, "open_index": None if e["open_index"] is None
                        else int(lines[e["open_index"]]),
                        "close_index": None if e["close_index"] is None
                        else int(lines[e["close_index"]])} for e in js["episodes"]]
    mapped_episodes.sort(key=lambda e: (-1 if e["open_index"] is None else e["open_index"],
                                        e["model"], e["feature"]))
    # a prediction episode's root cause reads the drift scores at the end of the batch in
    # which it opened (docs/attribution.md), and OIP batches hold other rows than JSON
    # batches of as many lines: the same features named first, not the same figures
    def first_cause(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**e, "root_cause": [c["feature"] for c in e["root_cause"]][:1]}
                if "root_cause" in e else e for e in episodes]

    assert first_cause(oip["episodes"]) == first_cause(mapped_episodes)
    # every per-model and per-column summary, the baseline's id included
    assert oip["models"] == js["models"]


def test_an_unjoined_half_at_the_end_of_a_replay_is_counted(tmp_path: Path) -> None:
    cfg = _config()
    pipe = Pipeline(cfg, _baseline())
    src = tmp_path / "e.jsonl"
    src.write_bytes(b"\n".join([_req("a", [[1, 2]]), _resp("a", [0.2]), _req("b", [[1, 2]])]))
    report = replay(cfg, pipe, src)
    assert report["events_processed"] == 1
    assert report["events_invalid"] == {"unjoined_request": 1}
