"""The Prometheus collector: bounded series whatever the data, values read from the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from detectors.model import ModelBaseline
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.pipeline import Pipeline
from stream.sinks.metrics import make_registry

CONFIG = {
    "models": [{
        "name": "m",
        "baseline": {"reference": "ref.jsonl"},
        "features": [{"name": "x", "path": "x", "type": "numeric"},
                     {"name": "city", "path": "city", "type": "categorical"}],
    }],
    "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20},
}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    cfg = parse_config(CONFIG, Path(tmp_path_factory.mktemp("m")))
    rng = np.random.default_rng(0)
    model = cfg.models[0]
    data = {"x": rng.normal(size=5000),
            "city": rng.choice(np.array(["a", "b", "c"], dtype=object), 5000)}
    settings = detection_settings(cfg.detection)
    settings = type(settings)(**{**settings.__dict__, "calibration_values": 200_000})
    base = ModelBaseline.build("m", data, column_specs(model), settings)
    return Pipeline(cfg, {"m": base})


def _series(pipeline: Pipeline) -> set[tuple[str, tuple]]:
    text = generate_latest(make_registry(pipeline)).decode()
    return {(s.name, tuple(sorted(s.labels.items())))
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_new_categories_and_hostile_values_never_add_series(pipeline: Pipeline) -> None:
    rng = np.random.default_rng(1)
    pipeline.process([orjson.dumps({"x": float(v), "city": "a"}) for v in rng.normal(size=500)])
    before = _series(pipeline)
    # 20,000 never-seen categories, unicode, huge strings, wrong types, garbage
    msgs = [orjson.dumps({"x": float(rng.normal()), "city": f"city-{i}-\u00e9\U0001f600"})
            for i in range(20_000)]
    msgs += [orjson.dumps({"x": "NaN", "city": "z" * 10_000}), b'{"x": 1e308, "city": [1]}',
             b"\xff\xfe", b"[]", b'{"x": {"deep": [[[[1]]]]}}']
    pipeline.process(msgs)
    after = _series(pipeline)
    assert after == before, sorted(after ^ before)[:10]
    snap = pipeline.snapshot().models["m"].columns["city"]
    assert snap.ratios["unseen_ratio"] > 0.9  # the new categories are seen, as a ratio


def _samples(pipeline: Pipeline) -> dict[tuple[str, tuple], float]:
    text = generate_latest(make_registry(pipeline)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_incomplete_events_are_one_model_level_signal(pipeline: Pipeline) -> None:
    """Events lacking both columns of m: counted per model, tested at the model level
    (data_quality_active on any partition), never a column's missing value; the test's
    state follows a partition through a checkpoint."""
    from detectors.model import ModelMonitor

    p = Pipeline(pipeline.config, pipeline.baselines)
    rng = np.random.default_rng(3)
    clean = [orjson.dumps({"x": float(v), "city": "a"}) for v in rng.normal(size=1_000)]
    broken = [b'{"x": null}' if i % 2 else b"{}" for i in range(1_000)]
    p.process(clean, partition=("t", 0))
    p.process(clean, partition=("t", 1))
    m = (("model", "m"),)
    before = _samples(p)
    assert before[("streamdrift_data_quality_active", m)] == 0
    assert before[("streamdrift_incomplete_events_total", m)] == 0
    found, _ = p.process([*clean[:200], *broken[:400]], partition=("t", 1))
    assert [(d.feature, d.detector) for d in found] == [("", "incomplete")]
    after = _samples(p)
    assert after[("streamdrift_incomplete_events_total", m)] == 400
    assert after[("streamdrift_data_quality_active", m)] == 1
    assert after[("streamdrift_incomplete_ratio", m)] > 0.5
    for column in ("x", "city"):
        labels = (("feature", column), ("model", "m"), ("role", "feature"))
        assert after[("streamdrift_missing_values_total", labels)] == 0
        assert after[("streamdrift_drift_alarms_total", (("detector", "missing"), *labels))] == 0
    assert after[("streamdrift_events_processed_total", m)] == 2_600
    # the partition's state moves to another process: the test stays in alarm there
    state = p.export_partition(("t", 1))
    later = Pipeline(pipeline.config, pipeline.baselines)
    later.restore_partition(("t", 1), {"m": ModelMonitor.from_dict(state["m"],
                                                                   pipeline.baselines["m"])})
    moved = _samples(later)
    assert moved[("streamdrift_data_quality_active", m)] == 1
    assert moved[("streamdrift_incomplete_events_total", m)] == 0  # this process counted none
    # a checkpoint written before the model-level test: a fresh test, not none
    old = {k: v for k, v in state["m"].items() if k != "quality"}
    later.restore_partition(("t", 1), {"m": ModelMonitor.from_dict(old, pipeline.baselines["m"])})
    mon = later.monitor("m", ("t", 1))
    assert mon is not None and mon.quality is not None and not mon.quality.active
