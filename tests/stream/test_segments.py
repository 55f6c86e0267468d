"""Segments (stream.config.segments, stream.engine.segments): configuration, per-value
baselines and their fallback rule, the vectorised grouping, checkpoints, the budget split,
and, as statistics over several seeds, the false-alarm rate of a model with segments and
the issue's goal (a +1 sd shift in a 5 % segment caught, and named, within 3,000 of its
events; no episode on another segment)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import yaml

from detectors.model import ModelBaseline, ModelMonitor
from stream.config import load_config, parse_config
from stream.config.segments import segment_budget
from stream.engine.baselines import (
    column_specs,
    detection_settings,
    read_reference,
    resolve_baselines,
)
from stream.engine.pipeline import LOCAL_PARTITION, Pipeline
from stream.engine.segments import (
    ModelSegments,
    decode_config,
    decode_model,
    segment_settings,
    series_bound,
    slice_plan,
)
from stream.sinks.metrics import make_registry
from tests.support.configs import config_errors
from tests.support.promql import load_contract
from tests.support.segments import segment_events, segment_model, write_reference


def _model(**seg: Any) -> dict[str, Any]:
    return {"name": "m", "baseline": {"reference": "r.jsonl"},
            "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                         {"name": "c", "path": "f.c", "type": "categorical"}],
            "segments": [seg]}


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(("segment", "expected"), [
    ({"top_k": 3}, "segments[0].path: required"),
    ({"path": "f.x"}, "f.x is the numeric column 'x'; a segment field must be categorical"),
    ({"path": "region", "top_k": 0}, "segments[0].top_k: must be an integer in 1..100"),
    ({"path": "region", "columns": ["y"]}, "segments[0].columns[0]: 'y' is not a column"),
    ({"path": "region", "min_reference_events": 10},
     "segments[0].min_reference_events: must be an integer in 100..100000000"),
    ({"path": "meta.tenant-id"}, "'tenant-id' is not a valid segment name"),
    ({"path": "region", "topk": 3}, "segments[0].topk: unknown key (did you mean 'top_k'?)"),
])
def test_bad_segments_name_the_key_and_the_fix(segment: dict[str, Any], expected: str) -> None:
    errors = config_errors({"models": [_model(**segment)]})
    assert any(expected in e for e in errors), errors


def test_segments_need_reference_data_and_unique_names() -> None:
    model = _model(path="region")
    model["baseline"] = {"file": "b.json"}
    model["segments"].append({"path": "other.region"})
    errors = config_errors({"models": [model]})
    assert any("models[0].segments: segments need baseline.reference" in e for e in errors)
    assert any("segments[1].name: duplicate segment name 'region'" in e for e in errors)


def test_a_segment_field_may_be_a_column_or_any_event_field() -> None:
    cfg = parse_config({"models": [_model(path="f.c", columns=["x"]) | {
        "segments": [{"path": "f.c", "columns": ["x"]}, "tenant"]}]}, "/cfg")
    model = cfg.models[0]
    assert [(s.name, s.path, s.columns) for s in model.segments] == [
        ("c", ("f", "c"), ("x",)), ("tenant", ("tenant",), ())]
    # the decoder extracts the event field as a hidden column, the column only once
    decoded = decode_model(model)
    assert [c.name for c in decoded.columns] == ["x", "c", "__segment__tenant"]
    # the bound of check-config: (top_k + 1) values x (1 + 2 x columns)
    assert series_bound(model) == 11 * 3 + 11 * 5


def test_without_segments_nothing_changes() -> None:
    cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "b.json"},
                                    "features": [{"name": "x", "path": "f.x",
                                                  "type": "numeric"}]}]}, "/cfg")
    assert decode_config(cfg) is cfg
    assert detection_settings(cfg.detection, cfg.models[0]) == detection_settings(cfg.detection)
    assert segment_budget(0) == (1.0, 1.0)


def test_the_budget_split_keeps_the_model_rate() -> None:
    """Per model event: the model-wide monitor's rate plus, per field, the values' rates
    weighted by their traffic shares, whatever the shares, is 1 / T."""
    rng = np.random.default_rng(0)
    for fields in (1, 2, 5):
        g, s = segment_budget(fields)
        for _ in range(5):
            shares = rng.dirichlet(np.ones(6))
            rate = 1 / g + fields * float(np.sum(shares / s))
            assert rate == pytest.approx(1.0)


# --------------------------------------------------------------------------- plans
QUICK = {"false_alarm_events": 20000, "window": 200, "cadence": 20}


def _quick(settings: Any) -> Any:
    # the calibration key leaves out calibration_values: a quick calibration is used as is
    return dataclasses.replace(settings, calibration_values=100_000)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, dict[str, ModelBaseline]]:
    """(config, segments, baselines) of model m1 with the segment region (top 4 values,
    columns x1 and c1), calibrated quickly."""
    folder = tmp_path_factory.mktemp("segments")
    ref = write_reference(folder / "reference.jsonl", n=30_000)
    cfg = parse_config({"models": [segment_model(columns=["x1", "c1"], min_reference_events=500)],
                        "detection": QUICK}, folder)
    model = cfg.models[0]
    data = read_reference(ref, decode_model(model))
    plan = slice_plan(model, model.segments[0], data, _quick(segment_settings(cfg, model)), None)
    base = ModelBaseline.build("m1", {k: v for k, v in data.items() if not k.startswith("__")},
                               column_specs(model),
                               _quick(detection_settings(cfg.detection, model)))
    return cfg, {"m1": ModelSegments(model, [plan])}, {"m1": base}


def test_values_keep_the_top_k_and_pool_the_rest(quick: Any) -> None:
    _, segments, _ = quick
    plan = segments["m1"].plans[0]
    assert plan.values == ["a", "b", "c", "d"]
    assert plan.labels == ["a", "b", "c", "d", "other"]  # e and f: 2 % = ~600 >= 500
    assert plan.shares["d"] == pytest.approx(0.05, abs=0.01)
    assert plan.shares["other"] == pytest.approx(0.02, abs=0.005)
    assert [s.name for s in plan.specs] == ["x1", "c1"]


def test_too_little_reference_data_falls_back_to_other_then_to_the_model(tmp_path: Path) -> None:
    ref = write_reference(tmp_path / "reference.jsonl", n=12_000)
    cfg = parse_config({"models": [segment_model(top_k=5, columns=["x1"],
                                                 min_reference_events=1000)],
                        "detection": QUICK}, tmp_path)
    model = cfg.models[0]
    data = read_reference(ref, decode_model(model))
    plan = slice_plan(model, model.segments[0], data, _quick(segment_settings(cfg, model)), None)
    # d has ~600 reference events: pooled into other with e, f (~840 together: < 1000), so
    # other has no monitor and its events are watched by the model-wide monitor only
    assert plan.labels == ["a", "b", "c"]
    assert "pooled into other" in plan.skipped["d"]
    assert "model-wide monitor only" in plan.skipped["other"]
    order, starts = plan.group(np.array(["a", "d", None, "c", "zz", "a"], dtype=object))
    rows = {label: order[starts[i]:starts[i + 1]].tolist() for i, label in
            enumerate([*plan.labels, "unmonitored"])}
    assert rows == {"a": [0, 5], "b": [], "c": [3], "unmonitored": [1, 2, 4]}


def test_each_value_s_monitors_see_exactly_its_rows(quick: Any) -> None:
    """Grouping by argsort gives each value's monitors the same alarms as feeding its slice
    of the stream to a monitor of its own, event by event in order."""
    cfg, segments, baselines = quick
    ms = segments["m1"]
    p = Pipeline(cfg, baselines, segments=segments)
    events = segment_events(20_000, 7, shift_region="b", shift=0.5)
    found = []
    for i in range(0, len(events), 700):
        dets, _ = p.process(events[i:i + 700], base_index=i)
        found += [(d.segment, d.feature, d.detector, d.index) for d in dets if d.segment]
    assert found, "a 0.5 sd shift of region b over 6,000 of its events is caught"
    plan = ms.plans[0]
    regions = np.array([orjson.loads(e)["region"] for e in events], dtype=object)
    x1 = np.array([orjson.loads(e)["f"]["x1"] for e in events])
    c1 = np.array([orjson.loads(e)["f"]["c1"] for e in events], dtype=object)
    expected = []
    for label in plan.labels:
        rows = np.flatnonzero(np.isin(regions, ["e", "f"]) if label == "other"
                              else regions == label)
        mon = plan.baselines[label].monitor(plan.specs, plan.settings)
        for a in mon.update({"x1": x1[rows], "c1": c1[rows]}):
            expected.append((f"region={label}", a.column, a.detector, int(rows[a.position])))
    assert sorted(found) == sorted(expected)


def test_segment_state_is_checkpointed_and_restored(quick: Any) -> None:
    cfg, segments, baselines = quick
    events = segment_events(24_000, 9, shift_region="d", shift=1.0)
    whole = Pipeline(cfg, baselines, segments=segments)
    first = Pipeline(cfg, baselines, segments=segments)
    cut = 11_000

    def feed(p: Pipeline, msgs: list[bytes], start: int) -> list[tuple[Any, ...]]:
        out = []
        for i in range(0, len(msgs), 500):
            dets, _ = p.process(msgs[i:i + 500], base_index=start + i)
            out += [(d.segment, d.feature, d.detector, d.index) for d in dets]
        return out

    expected = feed(whole, events, 0)
    before = feed(first, events[:cut], 0)
    state = first.export_partition(LOCAL_PARTITION)
    state = orjson.loads(orjson.dumps(state, option=orjson.OPT_SERIALIZE_NUMPY))  # as stored
    assert set(state["m1"]["segments"]["region"]) == {"a", "b", "c", "d", "other"}
    second = Pipeline(cfg, baselines, segments=segments)
    mons = {"m1": ModelMonitor.from_dict(state["m1"], baselines["m1"])}
    second.restore_partition(LOCAL_PARTITION, mons, {"m1": state["m1"].get("episodes")},
                             states=state)
    after = feed(second, events[cut:], cut)
    assert before + after == expected
    assert any(s == "region=d" for s, *_ in expected)
    # a checkpoint of another baseline is not restored: fresh segment monitors
    state["m1"]["segments"]["region"]["d"]["baseline_id"] = "another"
    restored, n = segments["m1"].restore(state["m1"]["segments"])
    assert n == 4 and restored[("region", "d")].n_events == 0


def test_segment_metrics_and_report(quick: Any) -> None:
    cfg, segments, baselines = quick
    p = Pipeline(cfg, baselines, segments=segments)
    events = segment_events(15_000, 11, shift_region="d", shift=1.5)
    for i in range(0, len(events), 1000):
        p.process(events[i:i + 1000], base_index=i)
    reg = make_registry(p)
    n_d = reg.get_sample_value("streamdrift_segment_events_total",
                               {"model": "m1", "segment": "region=d"})
    assert n_d == pytest.approx(0.05 * 15_000, rel=0.2)
    assert reg.get_sample_value("streamdrift_segment_drift_active", {
        "model": "m1", "segment": "region=d", "feature": "x1", "role": "feature"}) == 1.0
    assert reg.get_sample_value("streamdrift_segment_drift_active", {
        "model": "m1", "segment": "region=a", "feature": "x1", "role": "feature"}) == 0.0
    series = [s for fam in reg.collect() if fam.name.startswith("streamdrift_segment")
              for s in fam.samples]
    assert len(series) == 5 * (1 + 2 * 2)  # 5 values x (events + 2 x 2 columns)
    # the contract: every segment series is documented in docs/metrics.md with its labels
    contract = load_contract().series_names()
    for s in series:
        assert s.name in contract, s.name
        assert set(s.labels) == set(contract[s.name].labels), s
    report = p.report_models()["m1"]["segments"]
    assert report["region=d"]["columns"]["x1"]["active"] is True
    eps = [ep.to_dict() for ep in p.open_episodes()]
    assert {"model": "m1", "feature": "x1", "segment": "region=d"}.items() <= \
        next(e for e in eps if e.get("segment")).items()


# --------------------------------------------------------------------------- statistics
def _config(folder: Path, false_alarm_events: float, columns: list[str] | None) -> Any:
    if not (folder / "reference.jsonl").exists():
        write_reference(folder / "reference.jsonl")
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "models": [segment_model(columns=columns)],
        "detection": {"false_alarm_events": false_alarm_events}}))
    return load_config(folder / "c.yaml")


@pytest.mark.slow
def test_false_alarm_rate_of_a_model_with_segments(tmp_path: Path) -> None:
    """Clean data, knob 20,000 events, default detectors on all columns of the model and of
    each of the 5 segment values: over 3 seeds x 400,000 events the spacing between alarms
    (detector episodes, model-wide and segments together) is within 35 % of the knob, and
    each half of the budget within a factor 2 of its share (measured: 23.5k overall)."""
    target = 20_000
    cfg = _config(tmp_path, target, None)
    baselines = resolve_baselines(cfg)
    counts: Counter[str] = Counter()
    n = 400_000
    for seed in (1, 2, 3):
        p = Pipeline(cfg, baselines)
        events = segment_events(n, 100 + seed)
        for i in range(0, n, 1000):
            dets, _ = p.process(events[i:i + 1000], base_index=i)
            counts.update("segments" if d.segment else "model" for d in dets)
    total = 3 * n
    spacing = total / max(sum(counts.values()), 1)
    assert target / 1.35 <= spacing <= target * 1.35, (spacing, counts)
    for part in ("model", "segments"):  # each part has half the rate: 2 x target
        part_spacing = total / max(counts[part], 1)
        assert 2 * target / 2 <= part_spacing <= 2 * target * 2, (part, counts)


@pytest.mark.slow
def test_a_shift_in_a_5_percent_segment_is_caught_and_named(tmp_path: Path) -> None:
    """The issue's goal, at the default knob (10^7 events): x1 + 1 sd in region d (5 % of
    the traffic) is caught by region d's monitors within 3,000 of its events, in every one
    of 5 seeds; no other segment alarms, nothing alarms before the shift.  (Measured: 27-40
    events of region d; the model-wide monitor took 11,600-33,900 events in total.)"""
    cfg = _config(tmp_path, 10_000_000, ["x1"])
    baselines = resolve_baselines(cfg)
    pre, post = 40_000, 70_000
    for seed in range(1, 6):
        p = Pipeline(cfg, baselines)
        events = segment_events(pre, 200 + seed) + segment_events(
            post, 300 + seed, shift_region="d", shift=1.0, start_ts=1.8e9)
        in_d = np.cumsum([orjson.loads(e)["region"] == "d" for e in events])
        found = []
        for i in range(0, len(events), 500):
            dets, _ = p.process(events[i:i + 500], base_index=i)
            found += dets
        assert not [d for d in found if d.index < pre], seed
        assert not [d for d in found if d.segment not in ("", "region=d")], seed
        caught = [d for d in found if d.segment == "region=d" and d.feature == "x1"]
        assert caught, f"seed {seed}: region d's shift not caught in {post} events"
        delay = int(in_d[caught[0].index] - in_d[pre - 1])
        assert delay <= 3000, (seed, delay)
        episodes = [ep for ep in p.open_episodes() if ep.segment]
        assert {ep.segment for ep in episodes} == {"region=d"}, seed


def test_segment_fields_are_decoded_with_the_columns() -> None:
    """A field that is not a column is extracted as a hidden categorical column: an object
    value counts as missing (pooled as other), an absent one too, and a non-object where
    its path descends rejects the event as wrong_structure, as for a column path."""
    from stream.formats.json import BatchDecoder

    cfg = parse_config({"models": [{
        "name": "m", "baseline": {"reference": "r.jsonl"},
        "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
        "segments": ["meta.tenant", "region"]}]}, "/cfg")
    batch = BatchDecoder(decode_config(cfg)).decode([
        b'{"f": {"x": 1}, "meta": {"tenant": "t1"}, "region": {"a": 1}}',
        b'{"f": {"x": 2}, "meta": 5, "region": "eu"}',
        b'{"f": {"x": 3}}'])
    assert batch.invalid == {"wrong_structure": 1}
    mb = batch.models["m"]
    assert mb.columns["__segment__tenant"].tolist() == ["t1", None]
    assert mb.columns["__segment__region"].tolist() == [None, None]
    # the model-wide monitor never sees the hidden columns
    ms = ModelSegments(cfg.models[0], [])
    assert set(ms.strip(mb).columns) == {"x"} and set(ms.strip(mb).missing_mask) == {"x"}
