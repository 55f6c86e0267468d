"""Issue #13's acceptance: malformed events never make clean columns alarm.

A 200,000-line clean stream of two models (18 columns) with 0.3 % malformed lines of
every shape of :mod:`tests.support.malformed` (invalid JSON, a non-object, ``features``
a string or a list, ``prediction`` a list, an event carrying a single feature, one
without ``features``, an unknown model, a number beyond the double range) is replayed:

* no drift detection at all, on any column (before wrong_structure and the model-level
  split: 256 missing-rate alarms on 13 of the 18 columns);
* every malformed line is counted exactly by its reason, the incomplete events per
  model, the invalid values in the column that holds them; no column counts a missing
  value;
* the model-level data-quality test stays quiet on these sparse incomplete events
  (0.07 %: counted, not paged).

The same stream with a broken producer at the end (a quarter of the credit events
carrying a single feature of nine) raises exactly ONE model-level alarm, for credit,
and still no column alarm; ``streamdrift_data_quality_active{model="credit"}`` is 1.

The baselines (18 columns, calibrated) are built once for the module: ~30 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.replay import replay
from stream.sinks.metrics import make_registry
from tests.support.malformed import FEATURES, PREDICTIONS, Manifest, write_stream

N_EVENTS = 200_000
BURST = 195_000


def _replay(folder: Path, baselines: Any) -> tuple[dict[str, Any], dict[tuple[str, str], float]]:
    config = load_config(folder / "config.yaml")
    pipeline = Pipeline(config, baselines)
    report = replay(config, pipeline, folder / "events.jsonl")
    samples = {}
    text = generate_latest(make_registry(pipeline)).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, s.labels.get("model", s.labels.get("reason", "")))] = s.value
    return report, samples


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Manifest, Any, Any]]:
    root = tmp_path_factory.mktemp("malformed")
    clean = write_stream(root / "sparse", N_EVENTS)
    # the same references and events, a broken producer over the last 5,000 lines
    broken = write_stream(root / "burst", N_EVENTS, burst=BURST, burst_events=N_EVENTS - BURST)
    baselines = resolve_baselines(load_config(root / "sparse" / "config.yaml"))
    return {"sparse": (clean, *_replay(root / "sparse", baselines)),
            "burst": (broken, *_replay(root / "burst", baselines))}


def test_malformed_lines_open_no_column_detection(streams: dict[str, Any]) -> None:
    manifest, report, _ = streams["sparse"]
    assert report["input_lines"] == N_EVENTS
    columns = [d for d in report["detections"] if d["feature"]]
    assert columns == [], f"{len(columns)} column detections, e.g. {columns[:3]}"
    # nor a model-level one: 0.07 % incomplete events are counted, not paged
    assert report["detections"] == []
    assert report["episodes"] == []  # zero drift episodes, zero model-level ones


def test_malformed_lines_are_counted_by_reason(streams: dict[str, Any]) -> None:
    manifest, report, samples = streams["sparse"]
    assert sum(manifest.invalid.values()) > 0.002 * N_EVENTS
    assert set(manifest.invalid) == {"invalid_json", "not_an_object", "wrong_structure",
                                     "unknown_model"}
    assert report["events_invalid"] == manifest.invalid
    for reason, n in manifest.invalid.items():
        assert samples[("streamdrift_events_invalid_total", reason)] == n
    assert report["events_processed"] == sum(manifest.events.values())
    for model, summary in report["models"].items():
        assert summary["events"] == manifest.events[model]
        quality = summary["data_quality"]
        assert quality["incomplete_events"] == manifest.incomplete[model] > 20
        assert quality["active"] is False
        assert samples[("streamdrift_incomplete_events_total", model)] == \
            manifest.incomplete[model]
        assert samples[("streamdrift_data_quality_active", model)] == 0
        first = FEATURES[model][0]  # the huge numbers sit there
        for column in (*FEATURES[model], *PREDICTIONS[model]):
            figures = summary["features"][column]
            assert figures["missing"] == 0, (model, column)
            assert figures["invalid"] == (manifest.invalid_values[model] if column == first
                                          else 0)
            assert figures["values"] == manifest.events[model] \
                - manifest.incomplete[model] - figures["invalid"]


def test_a_broken_producer_raises_one_model_level_signal(streams: dict[str, Any]) -> None:
    manifest, report, samples = streams["burst"]
    assert manifest.incomplete["credit"] > 500
    assert [d for d in report["detections"] if d["feature"]] == []
    (alarm,) = report["detections"]
    assert (alarm["model"], alarm["feature"], alarm["detector"]) == ("credit", "", "incomplete")
    (episode,) = report["episodes"]  # one model-level episode, no column episode
    assert (episode["model"], episode["feature"], episode["open_index"]) == \
        ("credit", "", alarm["index"])
    assert episode["detectors"] == ["incomplete"]
    # found within the first windows of credit events after the producer broke
    assert BURST < alarm["index"] < BURST + 2_000
    credit = report["models"]["credit"]["data_quality"]
    assert credit["active"] is True and credit["incomplete_events"] == manifest.incomplete["credit"]
    assert credit["incomplete_ratio"] > credit["threshold"]
    assert samples[("streamdrift_data_quality_active", "credit")] == 1
    assert samples[("streamdrift_data_quality_active", "fraud")] == 0
    for column in (*FEATURES["credit"], *PREDICTIONS["credit"]):
        assert report["models"]["credit"]["features"][column]["missing"] == 0


def test_the_baseline_records_the_reference_share_of_incomplete_events(tmp_path: Path) -> None:
    import orjson
    import yaml

    from stream.engine.baselines import build_baseline

    rng = np.random.default_rng(0)
    lines = []
    for i in range(3_000):
        features = {"a": float(rng.normal()), "b": float(rng.normal()), "c": "u", "d": "v"}
        if i % 100 == 7:  # 30 events carry one field of four
            features = {"a": features["a"]}
        lines.append(orjson.dumps({"f": features}))
    (tmp_path / "ref.jsonl").write_bytes(b"\n".join(lines))
    cfg = {"models": [{"name": "m", "baseline": {"reference": "ref.jsonl"},
                       "features": [{"name": n, "path": f"f.{n}",
                                     "type": "numeric" if n in "ab" else "categorical"}
                                    for n in "abcd"]}],
           "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(tmp_path / "c.yaml")
    base = build_baseline(config, config.models[0])
    assert base.meta["reference_events"] == 3_000 and base.meta["incomplete_events"] == 30
    mon = Pipeline(config, {"m": base}).new_monitor("m")
    assert mon.quality is not None and mon.quality.test.base_rate == pytest.approx(0.01)
    # the threshold leaves room above the reference's share (1 %) and its minimum effect
    assert mon.quality.test.threshold > 0.02
