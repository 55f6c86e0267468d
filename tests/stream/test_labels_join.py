"""The label join (stream.engine.labels): outcomes, bounds, state, and replay --labels."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from scipy.stats import mannwhitneyu

from detectors.model import ModelBaseline, ModelMonitor
from stream.config import LabelsConfig, parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.labelbook import QUALITY_FEATURE
from stream.engine.labels import LabelDecoder, LabelJoin
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay
from tests.support.labels import T0, labelled_stream, lm_model, reference_lines

CFG = LabelsConfig(("id",), ("label",), "binary", topic="t", positive_class=1,
                   score_column="score",
                   horizon_s=100.0, label_wait_s=10.0, max_pending=1000, window=50)


def _preds(j: LabelJoin, ids: list[str], ts: list[float], s: list[float],
           others: tuple[LabelJoin, ...] = ()) -> None:
    j.add_predictions(ids, np.array(ts), np.array(s), others)


def test_each_outcome_is_counted() -> None:
    j = LabelJoin(CFG)
    _preds(j, ["a", "b", "c"], [0.0, 1.0, 2.0], [0.9, 0.1, 0.7])
    j.add_labels(["a", "a", "z"], [5.0, 6.0, 6.0], [1.0, 1.0, 0.0])  # joined, duplicate, early
    assert j.counts["joined"] == 1 and j.counts["duplicate"] == 1 and list(j.early) == ["z"]
    _preds(j, ["z"], [3.0], [0.2])  # the early label meets its prediction
    assert j.counts["joined"] == 2 and not j.early
    j.add_labels(["q"], [7.0], [1.0])  # no prediction ever: ages out by the predictions' time
    _preds(j, ["d"], [20.0], [0.5])
    assert j.counts["no_prediction"] == 1
    j.add_labels(["d"], [150.0], [0.0])  # label time 150 > 1 + 100: b and c expire first
    assert j.counts["joined"] == 3
    assert j.counts["expired"] == 2 and set(j.expired_ids) == {"b", "c"}
    j.add_labels(["b"], [151.0], [1.0])
    assert j.counts["late"] == 1
    _preds(j, ["e", None, "g", "h"], [21.0, 22.0, float("nan"), 23.0],  # type: ignore[list-item]
           [0.3, 0.3, 0.3, 1.5])  # no id, no time, a score outside [0, 1]
    assert j.counts["unjoinable_prediction"] == 3
    assert j.quality.n == 3 and j.quality.metrics()["accuracy"] == pytest.approx(2 / 3)


def test_memory_is_bounded_by_max_pending() -> None:
    cfg = dataclasses.replace(CFG, max_pending=100)
    j = LabelJoin(cfg)
    for k in range(50):
        ids = [f"p{k}-{i}" for i in range(40)]
        _preds(j, ids, [float(k)] * 40, [0.5] * 40)
        j.add_labels([f"l{k}-{i}" for i in range(40)], [float(k)] * 40, [1.0] * 40)
    assert len(j.pending) <= 100 and len(j.early) <= 100
    assert len(j.joined_ids) <= 100 and len(j.expired_ids) <= 100
    assert j.counts["evicted"] == 50 * 40 - len(j.pending)


def test_a_label_finds_its_prediction_on_another_partition() -> None:
    a, b = LabelJoin(CFG), LabelJoin(CFG)
    _preds(b, ["x"], [0.0], [0.8])
    a.add_labels(["x", "y"], [1.0, 1.0], [1.0, 0.0], (b,))
    assert b.counts["joined"] == 1 and b.quality.n == 1 and list(a.early) == ["y"]
    _preds(b, ["y"], [2.0], [0.4], (a,))  # an early label on a, its prediction on b
    assert b.counts["joined"] == 2 and not a.early


def test_a_join_aged_by_another_partitions_batch_is_checkpointed_again() -> None:
    """An early label that ages out during another partition's batch changes this join:
    its checkpoint must be written again though its own offsets did not move."""
    a, b = LabelJoin(CFG), LabelJoin(CFG)
    _preds(a, ["p1"], [100.0], [0.5], (b,))
    a.add_labels(["ghost"], [50.0], [1.0], (b,))  # no prediction will ever come
    a.to_dict()  # checkpointed: clean
    assert not a.dirty and list(a.early) == ["ghost"]
    _preds(b, ["p2"], [100.0], [0.5], (a,))  # b's time passes 50 + label_wait_s too
    assert a.counts["no_prediction"] == 1 and not a.early
    assert a.dirty
    a.to_dict()
    _preds(b, ["p3"], [101.0], [0.5], (a,))  # nothing of a's changes: a stays clean
    assert not a.dirty


def test_state_round_trip_mid_stream_gives_identical_outcomes() -> None:
    s = labelled_stream(3, 3000, max_delay=60.0)
    dec = LabelDecoder(parse_config({"source": {"timestamp": {"path": "ts"}},
                                     "models": [lm_model(horizon_s=30)]}, "/"))
    cfg = dec.models[0].labels
    assert cfg is not None
    ids = [f"r{i}" for i in range(3000)]

    def feed(j: LabelJoin, lo: int, hi: int) -> None:
        for k in range(lo, hi, 250):
            _preds(j, ids[k:k + 250], s.ts[k:k + 250].tolist(), s.score[k:k + 250].tolist())
            got, _ = dec.decode([m for m in s.labels if orjson.loads(m)["ts"] <= s.ts[k + 249]
                                 and orjson.loads(m)["ts"] > (s.ts[k - 1] if k else 0)])
            j.add_labels(*got["lm"][:3])

    whole = LabelJoin(cfg)
    feed(whole, 0, 3000)
    first = LabelJoin(cfg)
    feed(first, 0, 1500)
    second = LabelJoin.from_dict(cfg, orjson.loads(orjson.dumps(first.to_dict())))
    feed(second, 1500, 3000)
    assert second.counts == whole.counts
    assert second.quality.metrics() == pytest.approx(whole.quality.metrics())
    # the horizon cut: every label within 30 s joins, a few beyond it too (expiry runs once per
    # batch: a label up to one batch of event time late may still find its prediction)
    delay = s.label_ts - s.ts
    labelled = ~np.isnan(s.y)
    assert np.sum(labelled & (delay <= 30)) <= whole.counts["joined"] \
        <= np.sum(labelled & (delay <= 30 + 250 * 0.1))


def test_bad_labels_are_counted_by_reason() -> None:
    data = {"source": {"timestamp": {"path": "ts"}},
            "models": [lm_model(), {**lm_model(), "name": "other",
                                    "select": {"field": "model", "equals": "other"}}]}
    dec = LabelDecoder(parse_config(data, "/"))
    msgs = [b"{not json", b"[1]", b'{"model": "nobody", "id": "a", "ts": 1, "label": 1}',
            b'{"model": "lm", "ts": 1, "label": 1}', b'{"model": "lm", "id": true, "ts": 1}',
            b'{"model": "lm", "id": "a", "ts": 1, "label": "yes"}',
            b'{"model": "lm", "id": "a", "ts": "soon", "label": 1}',
            b'{"model": "lm", "id": 7, "ts": 1, "label": 0}',
            b'{"model": "other", "id": "b", "ts": 2, "label": 1}']
    got, bad = dec.decode(msgs, "lm-labels")
    assert dict(bad) == {"invalid_json": 1, "not_an_object": 1, "unknown_model": 1,
                         "missing_id": 2, "wrong_type": 1, "invalid_timestamp": 1}
    assert got["lm"][:3] == (["7"], [1.0], [0.0]) and got["other"][0] == ["b"]


# --------------------------------------------------------------------------- replay --labels
@pytest.fixture(scope="module")
def labelled_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    folder = tmp_path_factory.mktemp("labels")
    (folder / "reference.jsonl").write_bytes(b"\n".join(reference_lines(11, 4000)) + b"\n")
    data = {"source": {"timestamp": {"path": "ts", "unit": "s"}},
            "detection": {"false_alarm_events": 100_000, "window": 500, "cadence": 50},
            "models": [lm_model()]}
    cfg = parse_config(data, folder)
    rng = np.random.default_rng(1)
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=50_000)
    base = ModelBaseline.build("lm", {"x": rng.normal(size=4000),
                                      "score": 1 / (1 + np.exp(-2 * rng.normal(size=4000)))},
                               column_specs(cfg.models[0]), settings)
    return folder, cfg, base


def test_replay_with_labels_joins_by_event_time(labelled_setup: Any, tmp_path: Path) -> None:
    folder, cfg, base = labelled_setup
    s = labelled_stream(7, 6000, max_delay=60.0)
    bad = [b'{"id": "r5", "ts": %f, "label": 1}' % (T0 + 100),  # a second label for r5
           b'{"id": "nobody", "ts": %f, "label": 1}' % (T0 + 200),
           b'{"id": "r9", "ts": %f, "label": "x"}' % (T0 + 300), b"oops"]
    events, labels = tmp_path / "events.jsonl", tmp_path / "labels.jsonl"
    events.write_bytes(b"\n".join(s.events) + b"\n")
    merged = sorted([*s.labels, *bad[:3]], key=lambda m: orjson.loads(m)["ts"]) + bad[3:]
    labels.write_bytes(b"\n".join(merged) + b"\n")
    report = replay(cfg, Pipeline(cfg, {"lm": base}), events, 500, labels_path=labels)
    lab = report["models"]["lm"]["labels"]
    n_labels = int(np.sum(~np.isnan(s.y)))
    assert report["label_lines"] == n_labels + 4
    assert not np.isnan(s.y[5])  # the stream's r5 has a label: the second one is a duplicate
    assert lab["outcomes"]["joined"] == n_labels
    assert lab["outcomes"]["duplicate"] == 1
    assert lab["outcomes"]["no_prediction"] == 1  # "nobody", once the predictions pass it
    assert lab["outcomes"]["late"] == 0
    assert lab["invalid"] == {"wrong_type": 1, "invalid_json": 1}
    assert lab["pending"] == int(np.sum(np.isnan(s.y))) - lab["outcomes"]["expired"]
    # the quality figures are those of the labelled events, computed by hand
    y, p = s.y[~np.isnan(s.y)], s.score[~np.isnan(s.y)]
    q = lab["quality"]
    assert q["accuracy"] == pytest.approx(np.mean((p >= 0.5) == (y == 1)), abs=1e-6)
    assert q["brier"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-6)
    u = mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert q["roc_auc"] == pytest.approx(u / (np.sum(y == 1) * np.sum(y == 0)), abs=2e-3)
    # the baseline values come from the reference's inline labels
    ref = lab["quality_baseline"]
    assert ref is not None and abs(ref["accuracy"] - q["accuracy"]) < 0.04
    assert abs(ref["roc_auc"] - q["roc_auc"]) < 0.04
    # the input-drift report is that of a replay without labels
    plain = replay(cfg, Pipeline(cfg, {"lm": base}), events, 500)
    assert plain["detections"] == report["detections"]


def test_the_label_metrics_are_exported_and_promtool_clean(labelled_setup: Any,
                                                           tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from stream.sinks.metrics import make_registry
    from tests.support.metrics import promtool_check_metrics

    _, cfg, base = labelled_setup
    s = labelled_stream(8, 3000)
    p = Pipeline(cfg, {"lm": base})
    registry = make_registry(p)
    assert registry.get_sample_value("streamdrift_labels_total",
                                     {"model": "lm", "outcome": "joined"}) == 0
    assert registry.get_sample_value("streamdrift_model_quality", {
        "model": "lm", "metric": "accuracy", "scope": "since_start"}) is None  # undefined yet
    events, labels = tmp_path / "e.jsonl", tmp_path / "l.jsonl"
    events.write_bytes(b"\n".join(s.events) + b"\n")
    labels.write_bytes(b"\n".join([*s.labels, b"{bad"]) + b"\n")
    replay(cfg, p, events, 1000, labels_path=labels)
    joined = registry.get_sample_value("streamdrift_labels_total",
                                       {"model": "lm", "outcome": "joined"})
    assert joined == len(s.labels)
    assert registry.get_sample_value("streamdrift_labels_invalid_total",
                                     {"reason": "invalid_json"}) == 1
    y, sc = s.y[~np.isnan(s.y)], s.score[~np.isnan(s.y)]
    assert registry.get_sample_value("streamdrift_model_quality", {
        "model": "lm", "metric": "brier", "scope": "since_start"}) == pytest.approx(
        np.mean((sc - y) ** 2))
    for scope in ("recent", "baseline"):
        v = registry.get_sample_value("streamdrift_model_quality",
                                      {"model": "lm", "metric": "roc_auc", "scope": scope})
        assert v is not None and 0.6 < v < 0.95
    text = generate_latest(registry).decode()
    result = promtool_check_metrics(text)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_stray_time_or_a_slow_partition_does_not_make_labels_late() -> None:
    j = LabelJoin(CFG)
    _preds(j, [f"p{i}" for i in range(10)], [float(i) for i in range(10)], [0.5] * 10)
    # one label dated far ahead among ordinary ones: the median moves, not the stray time
    j.add_labels(["x1", "x2", "x3"], [1.0, 2.0, 1e9], [1.0, 1.0, 1.0])
    assert j.counts["expired"] == 0
    j.add_labels([f"p{i}" for i in range(10)], [50.0] * 10, [1.0] * 10)
    assert j.counts["joined"] == 10 and j.counts["late"] == 0
    # a partition whose labels have not come yet holds the expiry of the others back
    a, b = LabelJoin(CFG), LabelJoin(CFG)
    _preds(b, ["q"], [0.0], [0.5])
    a.add_labels(["z"], [500.0], [1.0], (b,))
    assert b.counts["expired"] == 0 and "q" in b.pending
    b.add_labels(["q"], [60.0], [0.0], (a,))
    assert b.counts["joined"] == 1


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_joins_through_the_pipeline(task: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    n = 3000
    x = rng.normal(size=n)
    classes = np.array(["a", "b", "c"])
    if task == "multiclass":
        pred = classes[(x > -0.5).astype(int) + (x > 0.5).astype(int)]
        truth = np.where(rng.random(n) < 0.8, pred, classes[rng.integers(0, 3, n)])
        column = {"name": "klass", "path": "p.klass", "type": "categorical"}
        labels = {"task": "multiclass", "prediction_column": "klass"}
    else:
        pred = 2 * x
        truth = pred + rng.normal(0.5, 1.0, n)
        column = {"name": "value", "path": "p.value", "type": "numeric"}
        labels = {"task": "regression", "prediction_column": "value"}
    model = {"name": "m", "baseline": {"file": "unused.json"},
             "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
             "predictions": [column],
             "labels": {"topic": "l", "id_path": "id", "label_path": "y", "horizon_s": 100,
                        **labels}}
    cfg = parse_config({"source": {"timestamp": {"path": "ts"}}, "models": [model]}, tmp_path)
    settings = dataclasses.replace(detection_settings(cfg.detection), calibration_values=20_000)
    ref = {"x": rng.normal(size=2000),
           column["name"]: pred[:2000].astype(object) if task == "multiclass" else pred[:2000]}
    base = ModelBaseline.build("m", ref, column_specs(cfg.models[0]), settings)
    p = Pipeline(cfg, {"m": base})
    key = column["path"].split(".")[1]
    events = [orjson.dumps({"id": i, "ts": T0 + i, "f": {"x": float(x[i])},
                            "p": {key: pred[i].item() if hasattr(pred[i], "item") else pred[i]}})
              for i in range(n)]
    labels_msgs = [orjson.dumps({"id": i, "ts": T0 + i + 5, "y": truth[i].item()})
                   for i in range(n)]
    for i in range(0, n, 500):
        p.process(events[i:i + 500])
        p.process_labels(labels_msgs[max(0, i - 5):i + 495])
    p.process_labels(labels_msgs[n - 5:])
    report = p.report_models()["m"]["labels"]
    assert report["outcomes"]["joined"] == n and report["pending"] == 0
    q = report["quality"]
    if task == "multiclass":
        assert q["accuracy"] == pytest.approx(np.mean(pred == truth), abs=1e-6)
        f1 = [2 * np.sum((pred == c) & (truth == c)) / (np.sum(pred == c) + np.sum(truth == c))
              for c in classes]
        assert q["macro_f1"] == pytest.approx(np.mean(f1), abs=1e-6)
    else:
        assert q["mae"] == pytest.approx(np.mean(np.abs(pred - truth)), abs=1e-6)
        assert q["mean_error"] == pytest.approx(np.mean(pred - truth), abs=1e-6)


def test_labels_in_the_inference_stream_are_taken_out_and_joined(labelled_setup: Any,
                                                                tmp_path: Path) -> None:
    folder, cfg, base = labelled_setup
    data = {"source": {"timestamp": {"path": "ts", "unit": "s"}},
            "detection": {"false_alarm_events": 100_000, "window": 500, "cadence": 50},
            "models": [lm_model(topic=None, select={"field": "kind", "equals": "label"})]}
    data["models"][0]["labels"].pop("topic")
    inline_cfg = parse_config(data, folder)
    s = labelled_stream(12, 4000)
    tagged = [m[:-1] + b',"kind":"label"}' for m in s.labels]
    mixed = sorted([(orjson.loads(m)["ts"], 1, m) for m in tagged]
                   + [(t, 0, m) for t, m in zip(s.ts.tolist(), s.events, strict=True)])
    events = tmp_path / "mixed.jsonl"
    events.write_bytes(b"\n".join(m for _, _, m in mixed) + b"\n")
    report = replay(inline_cfg, Pipeline(inline_cfg, {"lm": base}), events, 500)
    assert report["events_processed"] == len(mixed) and report["events_invalid"] == {}
    assert report["models"]["lm"]["events"] == len(s.events)  # label events are not events
    assert report["models"]["lm"]["labels"]["outcomes"]["joined"] == len(s.labels)
    # detections point at the lines of the mixed file: the same events as without labels
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(b"\n".join(s.events) + b"\n")
    alone = replay(cfg, Pipeline(cfg, {"lm": base}), plain, 500)
    line_of = [i for i, (_, kind, _) in enumerate(mixed) if kind == 0]
    assert [line_of[d["index"]] for d in alone["detections"]] == \
        [d["index"] for d in report["detections"]]


def test_a_concept_drift_is_caught_through_the_labels_and_not_by_the_inputs(
        labelled_setup: Any, tmp_path: Path) -> None:
    from stream.sinks.metrics import make_registry

    _, cfg, base = labelled_setup
    clean = labelled_stream(21, 5000)
    drift = labelled_stream(22, 5000, flip=0.15, start=5000)  # P(y|x) changes, x does not
    events, labels = tmp_path / "e.jsonl", tmp_path / "l.jsonl"
    events.write_bytes(b"\n".join(clean.events + drift.events) + b"\n")
    merged = sorted(clean.labels + drift.labels, key=lambda m: orjson.loads(m)["ts"])
    labels.write_bytes(b"\n".join(merged) + b"\n")
    p = Pipeline(cfg, {"lm": base})
    report = replay(cfg, p, events, 500, labels_path=labels)
    # the inputs never change: the only detection is the concept alarm, and the only
    # episode a model-quality episode of lm, opened in the drifted half
    assert [(d["model"], d["feature"], d["detector"]) for d in report["detections"]] == \
        [("lm", QUALITY_FEATURE, "concept")]
    assert report["detections"][0]["index"] >= 5000
    [ep] = report["episodes"]
    assert (ep["model"], ep["feature"], ep["detectors"]) == ("lm", QUALITY_FEATURE, ["concept"])
    assert ep["open_index"] == report["detections"][0]["index"] and ep["peak_score"] >= 1.0
    concept = report["models"]["lm"]["labels"]["concept_drift"]
    assert concept["alarms"] == 1 and concept["active"]
    assert [e.key for e in p.open_episodes()] == [("lm", QUALITY_FEATURE, "")]
    registry = make_registry(p)
    assert registry.get_sample_value("streamdrift_concept_drift_active", {"model": "lm"}) == 1
    assert registry.get_sample_value("streamdrift_concept_drift_alarms_total",
                                     {"model": "lm"}) == 1
    # the open episode rides in the checkpoint: a restored partition has it open, located
    key = ("", 0)
    state = orjson.loads(orjson.dumps(p.export_partition(key), option=orjson.OPT_SERIALIZE_NUMPY))
    assert state["lm"]["episodes"][QUALITY_FEATURE]["detectors"] == ["concept"]
    later = Pipeline(cfg, {"lm": base})
    later.restore_partition(key, {"lm": ModelMonitor.from_dict(state["lm"], base)},
                            {"lm": state["lm"]["episodes"]}, {"lm": state["lm"]["labels"]})
    [back] = later.open_episodes()
    assert back.key == ("lm", QUALITY_FEATURE, "") and round(back.peak_score, 6) == ep["peak_score"]
    # the clean half alone raises none
    q = Pipeline(cfg, {"lm": base})
    half_e, half_l = tmp_path / "he.jsonl", tmp_path / "hl.jsonl"
    half_e.write_bytes(b"\n".join(clean.events) + b"\n")
    half_l.write_bytes(b"\n".join(clean.labels) + b"\n")
    quiet = replay(cfg, q, half_e, 500, labels_path=half_l)
    assert quiet["models"]["lm"]["labels"]["concept_drift"] == {"alarms": 0, "active": False}
    assert quiet["detections"] == [] and quiet["episodes"] == []


def test_model_quality_episodes_give_drift_event_records(labelled_setup: Any,
                                                         tmp_path: Path) -> None:
    """As the runner does after each poll: a concept drift's model-quality episode gives an
    open record (column ``(labels)``, detector ``concept``, role ``quality``) located by
    the labels' event time, and its close a close record.  The CUSUM releases its episode
    only after a long quiet stretch, so the close is the join's own close step, given to
    it here rather than waited for."""
    import json

    from stream.runtime.labelfeed import LabelFeed
    from stream.runtime.replay import iter_batches
    from stream.sinks.driftevents import quality_records

    _, cfg, base = labelled_setup
    parts = [labelled_stream(31, 4000), labelled_stream(32, 3000, flip=0.2, start=4000)]
    events, labels = tmp_path / "e.jsonl", tmp_path / "l.jsonl"
    events.write_bytes(b"\n".join(m for s in parts for m in s.events) + b"\n")
    labels.write_bytes(b"\n".join(sorted((m for s in parts for m in s.labels),
                                         key=lambda m: orjson.loads(m)["ts"])) + b"\n")
    p = Pipeline(cfg, {"lm": base})
    feed = LabelFeed(p, labels)
    records, lines = [], 0
    for batch in iter_batches(events, 500):
        p.process(batch, base_index=lines)
        lines += len(batch)
        feed.until(max(p.last_event_ts.values()))
        records += quality_records(p, "g")
    feed.until(float("inf"))
    records += quality_records(p, "g")
    assert [r.value["type"] for r in records] == ["open"], [r.value for r in records]
    assert quality_records(p, "g") == []  # taken once
    [join] = [js["lm"] for js in p.labels.joins.values()]  # type: ignore[union-attr]
    join.concept_steps.append(("close", 130.0, join.concept.threshold,
                               join.counts["joined"] - 1))
    p.process_labels([])
    records += quality_records(p, "g")
    opened, closed = (json.loads(r.encode()) for r in records)  # strict JSON
    assert [r.value["type"] for r in records] == ["open", "close"]
    for r, v in zip(records, (opened, closed), strict=True):
        assert (v["model"], v["column"], v["role"], v["group_id"], v["baseline_id"],
                v["open_offset"]) == ("lm", QUALITY_FEATURE, "quality", "g", base.id, None)
        assert r.key == f"g/lm//0/{QUALITY_FEATURE}".encode()
    assert opened["detectors"] == ["concept"] and opened["scores"]["concept"]["score"] >= 1.0
    assert T0 + 400 <= opened["open_event_time"] < T0 + 700 + 60  # labels of the drift
    assert closed["close_event_time"] >= opened["open_event_time"]
    assert closed["duration_s"] == pytest.approx(closed["close_event_time"]
                                                 - opened["open_event_time"])
    assert closed["detectors"] == ["concept"] and closed["close_offset"] is None
    assert closed["peak_score"] >= opened["scores"]["concept"]["score"]
    assert p.open_episodes() == []
    assert (opened["open_pair"], closed["open_pair"], closed["close_pair"]) == (
        records[0].value["open_pair"], opened["open_pair"], join.counts["joined"] - 1)


def test_model_quality_records_found_again_after_a_restore_are_not_written_twice(
        labelled_setup: Any, tmp_path: Path) -> None:
    """A model-quality record has no offset: the ordinal of the joined pair that opened it is
    its identity.  The same labels joined again from the same state (here the empty one, as
    a restore re-reads them from its checkpoint) find the episode at the same pair, and the
    writer skips the record it recalled from the topic."""
    from stream.engine.figures import RunnerHealth
    from stream.runtime.labelfeed import LabelFeed
    from stream.runtime.replay import iter_batches
    from stream.sinks.driftevents import DriftEventWriter, quality_records

    _, cfg, base = labelled_setup
    parts = [labelled_stream(41, 4000), labelled_stream(42, 3000, flip=0.2, start=4000)]
    events, labels = tmp_path / "e.jsonl", tmp_path / "l.jsonl"
    events.write_bytes(b"\n".join(m for s in parts for m in s.events) + b"\n")
    labels.write_bytes(b"\n".join(sorted((m for s in parts for m in s.labels),
                                         key=lambda m: orjson.loads(m)["ts"])) + b"\n")

    def run(batch_size: int) -> tuple[Pipeline, list[Any]]:
        p = Pipeline(cfg, {"lm": base})
        feed, records, lines = LabelFeed(p, labels), [], 0
        for batch in iter_batches(events, batch_size):
            p.process(batch, base_index=lines)
            lines += len(batch)
            feed.until(max(p.last_event_ts.values()))
            records += quality_records(p, "g")
        feed.until(float("inf"))
        return p, records + quality_records(p, "g")

    p, first = run(500)
    assert [r.value["type"] for r in first] == ["open"]
    pair = first[0].value["open_pair"]
    [join] = [js["lm"] for js in p.labels.joins.values()]  # type: ignore[union-attr]
    assert isinstance(pair, int) and 0 <= pair < join.counts["joined"]
    # the ordinal goes on from a checkpoint: the join's counts are part of its state
    back = LabelJoin.from_dict(join.cfg, orjson.loads(orjson.dumps(join.to_dict())),
                               join.concept)
    assert back.counts["joined"] == join.counts["joined"]
    _, again = run(250)  # other batches, the same pairs in the same order
    assert [(r.value["type"], r.value["open_pair"]) for r in again] == [("open", pair)]
    assert again[0].ident == first[0].ident == (
        "open", "g", "lm", QUALITY_FEATURE, "", 0, pair)
    health = RunnerHealth()

    def no_producer() -> Any:
        raise AssertionError("the record is on the topic already: nothing to write")

    w = DriftEventWriter("drift", {}, health.count_drift_events, make_producer=no_producer)
    w.written[again[0].partition] = {r.ident for r in first}  # type: ignore[misc]  # recall
    assert w.write(again) == []
    assert health.snapshot().drift_events == {"duplicate": 1}


def test_the_concept_detector_state_round_trips_and_an_old_single_cusum_starts_afresh() -> None:
    from detectors.concept import ConceptCUSUM, concept_detector, error_cusum

    rng = np.random.default_rng(5)
    ref = (rng.random(20_000) < 0.10).astype(float)
    fresh = concept_detector(ref, 2_000, n_values=500_000)
    fresh.configure_episodes(0.5, 1_000)
    before = (rng.random(3_000) < 0.10).astype(float)
    after = (rng.random(3_000) < 0.20).astype(float)  # a 10-point rise
    # mid-stream (an episode open) through the checkpoint: the same later steps as unbroken
    j = LabelJoin(CFG)
    j.concept = ConceptCUSUM.from_dict(fresh.to_dict())
    j.concept.update(before)
    j.concept.update(after[:1_000])
    assert j.concept.drift_detected
    saved = j.to_dict()
    saved["concept"] = orjson.loads(orjson.dumps(saved["concept"]))  # as JSON holds it
    back = LabelJoin.from_dict(CFG, saved, fresh)
    assert back.concept is not None and back.concept is not fresh
    assert back.concept.to_dict() == j.concept.to_dict()
    for det in (j.concept, back.concept):
        det.update(after[1_000:])
    assert back.concept.to_dict() == j.concept.to_dict()
    assert back.concept.statistic == j.concept.statistic > 0
    # the single CUSUM saved before there were two (here in an alarm), or a broken state:
    # the join restores and its detector starts afresh, with the calibration of now
    old = error_cusum(ref, 2_000, n_values=500_000)
    old.configure_episodes(0.5, 1_000)
    old.update(after)
    assert old.drift_detected
    for bad in (old.to_dict(), {"kind": "concept", "state": {"detectors": [{"kind": 1}]}},
                {"kind": "concept"}, "junk"):
        j2 = LabelJoin.from_dict(CFG, {**saved, "concept": bad}, fresh)
        assert j2.concept is not None and fresh.same_calibration(j2.concept)
        assert (j2.concept.statistic, j2.concept.drift_detected) == (0.0, False)
        assert j2.concept.hold == 1_000
    # another calibration (a new reference or knob): afresh too
    other = concept_detector(ref[:10_000], 2_000, n_values=500_000)
    assert not other.same_calibration(fresh)
    j3 = LabelJoin.from_dict(CFG, saved, other)
    assert j3.concept is not None and j3.concept.statistic == 0.0


def test_a_join_without_event_times_yet_restores_through_json() -> None:
    # a join that has seen no prediction and no label holds -inf times, which JSON
    # checkpoints (orjson) write as null: the restore takes them back as -inf
    j = LabelJoin(CFG)
    saved = orjson.loads(orjson.dumps(j.to_dict()))
    assert saved["pred_time"] is None and saved["label_time"] is None
    back = LabelJoin.from_dict(CFG, saved)
    assert back.pred_time == back.label_time == -math.inf
