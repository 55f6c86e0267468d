"""Bias drift in the pipeline (stream.config.bias, stream.engine.bias): configuration
errors, the default path untouched, the facets' plans from the reference, metrics against
the contract, the replay report and episodes, and the model's false-alarm budget."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from stream.config import load_config, parse_config
from stream.config.bias import bias_budget
from stream.engine import bias as bias_engine
from stream.engine.baselines import detection_settings, resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.engine.segments import segment_settings
from stream.sinks.metrics import make_registry
from tests.support.bias import bias_events, bias_model, write_reference
from tests.support.configs import config_errors
from tests.support.promql import load_contract


def _model(**bias: Any) -> dict[str, Any]:
    return {"name": "m", "baseline": {"reference": "r.jsonl"},
            "features": [{"name": "x", "path": "f.x", "type": "numeric"},
                         {"name": "c", "path": "f.c", "type": "categorical"}],
            "predictions": [{"name": "score", "path": "p.score", "type": "numeric"},
                            {"name": "decision", "path": "p.d", "type": "categorical"}],
            "bias": bias}


POS = {"column": "score", "threshold": 0.5}


# --------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(("bias", "expected"), [
    ({"positive": POS}, "bias.facets: required: a non-empty list"),
    ({"facets": ["sex"]}, "bias.positive: required (the model has no binary labels"),
    ({"positive": {"column": "x", "threshold": 0.5}, "facets": ["sex"]},
     "bias.positive.column: must name one of the model's prediction columns (score, decision)"),
    ({"positive": {"column": "score", "equals": "1"}, "facets": ["sex"]},
     "score is numeric: give threshold:"),
    ({"positive": {"column": "decision", "threshold": 0.5}, "facets": ["sex"]},
     "decision is categorical: give equals:"),
    ({"positive": POS, "facets": ["f.x"]}, "f.x is the numeric column 'x'; a facet must be "
                                           "categorical"),
    ({"positive": POS, "facets": [{"path": "sex", "top_k": 0}]},
     "bias.facets[0].top_k: must be an integer in 1..50"),
    ({"positive": POS, "facets": ["a.sex", "b.sex"]},
     "bias.facets[1].name: duplicate facet name 'sex'"),
    ({"positive": POS, "facets": ["meta.age-band"]}, "'age-band' is not a valid facet name"),
    ({"positive": POS, "facets": ["sex"], "window": 1100},
     "bias.window: must be a multiple of cadence (500)"),
    ({"positive": POS, "facet": ["sex"]}, "bias.facet: unknown key (did you mean 'facets'?)"),
])
def test_bad_bias_config_names_the_key_and_the_fix(bias: dict[str, Any], expected: str) -> None:
    errors = config_errors({"models": [_model(**bias)]})
    assert any(expected in e for e in errors), errors


def test_bias_needs_reference_data() -> None:
    model = _model(positive=POS, facets=["sex"])
    model["baseline"] = {"file": "b.json"}
    errors = config_errors({"models": [model]})
    assert any("models[0].bias: bias drift needs baseline.reference" in e for e in errors)


def test_the_positive_prediction_defaults_to_the_binary_labels() -> None:
    model = _model(facets=["sex"])
    model["labels"] = {"topic": "l", "id_path": "id", "label_path": "y", "task": "binary",
                       "positive_class": 1, "score_column": "score", "threshold": 0.7}
    cfg = parse_config({"models": [model], "source": {"timestamp": {"path": "ts"}}}, "/cfg")
    pos = cfg.models[0].bias.positive
    assert (pos.column, pos.threshold, pos.equals) == ("score", 0.7, None)
    cat = parse_config({"models": [_model(positive={"column": "decision", "equals": "approve"},
                                          facets=["f.c"])]}, "/cfg").models[0]
    assert (cat.bias.positive.equals, cat.bias.facets[0].name) == ("approve", "c")
    # a facet that is a model column is decoded once; another field as a hidden column
    both = parse_config({"models": [_model(positive=POS, facets=["f.c", "sex"])]}, "/c")
    decoded = bias_engine.decode_model(both.models[0])
    assert [c.name for c in decoded.features] == ["x", "c", "__facet__sex"]
    assert bias_engine.series_bound(both.models[0]) == 1 + 2 * 11 * 9


def test_without_facets_nothing_changes() -> None:
    cfg = parse_config({"models": [{"name": "m", "baseline": {"file": "b.json"},
                                    "features": [{"name": "x", "path": "f.x",
                                                  "type": "numeric"}]}]}, "/cfg")
    assert cfg.models[0].bias is None
    assert bias_engine.with_facets(cfg) is cfg
    assert detection_settings(cfg.detection, cfg.models[0]) == detection_settings(cfg.detection)
    assert bias_budget(cfg.models[0]) == (1.0, 1.0)


def test_the_budget_split_keeps_the_model_rate() -> None:
    """The model's other monitors at 1 / (0.9 T) plus F facets at 1 / (F T / 0.1) each:
    1 / T per model event; with segments, they split the 0.9 as before."""
    for facets in (1, 2, 5):
        other, each = bias_budget(facets)
        assert 1 / other + facets / each == pytest.approx(1.0)
    cfg = parse_config({"models": [_model(positive=POS, facets=["sex"]) | {
        "segments": ["region"]}]}, "/cfg")
    m = cfg.models[0]
    base = detection_settings(cfg.detection).false_alarm_events
    assert detection_settings(cfg.detection, m).false_alarm_events == pytest.approx(
        base * 2 / 0.9)
    assert segment_settings(cfg, m).false_alarm_events == pytest.approx(base * 2 / 0.9)


# --------------------------------------------------------------------------- pipeline
def _config(folder: Path, false_alarm_events: float = 1_000_000, **bias: Any) -> Any:
    if not (folder / "reference.jsonl").exists():
        write_reference(folder / "reference.jsonl")
    (folder / "c.yaml").write_text(yaml.safe_dump({
        "models": [bias_model(**bias)],
        "detection": {"false_alarm_events": false_alarm_events}}))
    return load_config(folder / "c.yaml")


@pytest.fixture(scope="module")
def ready(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    folder = tmp_path_factory.mktemp("bias")
    cfg = _config(folder, window=10_000)
    return cfg, resolve_baselines(cfg)


def test_plans_keep_the_top_k_from_the_reference(ready: Any) -> None:
    cfg, baselines = ready
    p = Pipeline(cfg, baselines)
    sex, age = p.bias["m1"].plans
    # sex: every event has one of three values (x: 5 %, 2,000 reference events): the pool
    # is empty, not tested (an empty bucket of the rest)
    assert sex.labels == ["m", "f", "x"] and sex.base.n.tolist()[3:] == [0]
    assert "other" in sex.skipped
    assert age.labels == ["18-30", "30-45", "45-60", "60+"]
    # the reference's DPPL of f: rest (m, x) - f = about 0.40 x 0.5/0.55 + 0.35 x 0.05/0.55 - 0.30
    want = (0.40 * 0.50 + 0.35 * 0.05) / 0.55 - 0.30
    assert sex.base.ref_dppl[1] == pytest.approx(want, abs=0.02)
    assert sex.base.ref_di[1] == pytest.approx(0.30 / (want + 0.30), abs=0.05)
    # the ages have the same rates: their DPPL is about 0
    assert np.abs(age.base.ref_dppl).max() < 0.03


def test_a_moving_facet_value_is_caught_named_and_reported(ready: Any) -> None:
    cfg, baselines = ready
    p = Pipeline(cfg, baselines)
    events = bias_events(20_000, 11) + bias_events(30_000, 12, shift_value="f", shift=0.1)
    found = []
    for i in range(0, len(events), 1000):
        dets, _ = p.process(events[i:i + 1000], base_index=i)
        found += dets
    bias_dets = [d for d in found if d.feature == "bias"]
    assert bias_dets and all(d.index >= 20_000 for d in bias_dets), bias_dets
    # f (45 % of the traffic) moving moves the rest of m and x too (their DPPL is against
    # a rest that holds f): f is named first; the other facet (age) stays silent
    assert bias_dets[0].segment == "sex=f", bias_dets
    assert all(d.segment.startswith("sex=") for d in bias_dets), bias_dets
    assert all(d.detector == "dppl" for d in bias_dets)
    reg = make_registry(p)
    lab = {"model": "m1", "facet": "sex", "value": "f"}
    assert reg.get_sample_value("streamdrift_bias_drift_active", lab) == 1.0
    assert reg.get_sample_value("streamdrift_bias_alarms_total", lab) >= 1
    assert reg.get_sample_value("streamdrift_bias_drift_active",
                                {"model": "m1", "facet": "age", "value": "60+"}) == 0.0
    assert reg.get_sample_value("streamdrift_bias_events_total",
                                {"model": "m1", "facet": "sex"}) == 50_000
    # the live positive rate of f: 0.40 after the shift (the window is all shifted)
    assert reg.get_sample_value("streamdrift_bias_positive_rate", lab) == pytest.approx(
        0.40, abs=0.03)
    series = [s for fam in reg.collect() if fam.name.startswith("streamdrift_bias")
              for s in fam.samples]
    assert len(series) == 7 * 8 + 2 + 1  # 7 values x (7 gauges + alarms), 2 facets, unscored
    contract = load_contract().series_names()
    for s in series:
        assert s.name in contract, s.name
        assert set(s.labels) == set(contract[s.name].labels), s
    report = p.report_models()["m1"]["bias"]
    assert report["values"]["sex=f"]["active"] is True
    assert report["values"]["sex=f"]["baseline_dppl"] == pytest.approx(0.1, abs=0.03)
    eps = [ep.to_dict() for ep in p.open_episodes()]
    assert any(e["feature"] == "bias" and e.get("segment") == "sex=f" for e in eps), eps


def test_bias_state_is_checkpointed_and_restored(ready: Any) -> None:
    """A partition exported mid-drift and restored into a new pipeline carries on exactly
    as the uninterrupted one (same later detections), its bias episode restored open."""
    import orjson

    cfg, baselines = ready
    events = bias_events(20_000, 13) + bias_events(30_000, 14, shift_value="f", shift=0.1)
    whole, first = Pipeline(cfg, baselines), Pipeline(cfg, baselines)
    key = ("t", 0)
    cut = 35_000
    for i in range(0, cut, 1000):
        first.process(events[i:i + 1000], base_index=i, partition=key)
    assert any(ep.feature == "bias" for ep in first.open_episodes())
    saved = orjson.loads(orjson.dumps(first.export_partition(key)))
    assert set(saved["m1"]["bias"]) == {"sex", "age"}
    again = Pipeline(cfg, baselines)
    again.restore_partition(key, {}, states=saved)
    assert {(ep.feature, ep.segment) for ep in again.open_episodes()} >= {("bias", "sex=f")}
    later_whole, later_again = [], []
    for i in range(0, len(events), 1000):
        dets, _ = whole.process(events[i:i + 1000], base_index=i, partition=key)
        if i >= cut:
            later_whole += [d for d in dets if d.feature == "bias"]
            dets2, _ = again.process(events[i:i + 1000], base_index=i, partition=key)
            later_again += [d for d in dets2 if d.feature == "bias"]
    assert later_again == later_whole
    # and the same window figures at the end; the counters are this process's own
    fin, fin_whole = (p.report_models()["m1"]["bias"]["values"] for p in (again, whole))
    for key_, fig in fin.items():
        counted = ("events", "alarms")
        assert {k: v for k, v in fig.items() if k not in counted} == \
            {k: v for k, v in fin_whole[key_].items() if k not in counted}
        assert fig["events"] == len(events) - cut
    # a checkpoint of another baseline (a changed reference) gives fresh monitors
    saved["m1"]["bias"]["sex"]["baseline_id"] = "0" * 16
    other = Pipeline(cfg, baselines)
    other.restore_partition(key, {}, states=saved)
    assert other.bias_states[key]["m1"]["sex"].n_events == 0
    assert other.bias_states[key]["m1"]["age"].n_events == cut


def test_unscored_events_are_counted_not_fatal(ready: Any) -> None:
    cfg, baselines = ready
    p = Pipeline(cfg, baselines)
    events = bias_events(100, 3)
    events += [b'{"model": "m1", "applicant": {"sex": "f"}, "f": {"x": 1}, "p": {}}',
               b'{"model": "m1", "applicant": {"sex": "f"}, "f": {"x": 1}, "p": {"score": "hi"}}',
               b'{"model": "m1", "f": {"x": 1}, "p": {"score": 0.9}}']
    p.process(events)
    reg = make_registry(p)
    assert reg.get_sample_value("streamdrift_bias_unscored_events_total", {"model": "m1"}) == 2
    # the event without facets is scored, pooled into the rest of every value
    assert reg.get_sample_value("streamdrift_bias_events_total",
                                {"model": "m1", "facet": "sex"}) == 101


# --------------------------------------------------------------------------- statistics
@pytest.mark.slow
def test_false_alarm_rate_of_a_model_with_facets(tmp_path: Path) -> None:
    """Clean data, knob 20,000 events, default detectors on x and score, two facets (with
    their 10 % of the rate): over 3 seeds x 300,000 events the spacing between alarms
    (detector episodes, model-wide and bias together) is within a factor 1.5 of the knob
    (the column detectors' own calibration is tested elsewhere), and the bias part is at
    most its budget (10 x the knob, with a Poisson allowance)."""
    target = 20_000
    cfg = _config(tmp_path, target)
    baselines = resolve_baselines(cfg)
    counts = {"model": 0, "bias": 0}
    n = 300_000
    for seed in (1, 2, 3):
        p = Pipeline(cfg, baselines)
        events = bias_events(n, 100 + seed)
        for i in range(0, n, 1000):
            dets, _ = p.process(events[i:i + 1000], base_index=i)
            for d in dets:
                counts["bias" if d.feature == "bias" else "model"] += 1
    total = 3 * n
    spacing = total / max(sum(counts.values()), 1)
    print(f"spacing {spacing:.0f} events (knob {target}); {counts}")
    assert target / 1.5 <= spacing <= target * 1.5, (spacing, counts)
    expected_bias = total / (10 * target)
    assert counts["bias"] <= expected_bias + 3 * np.sqrt(expected_bias), counts
