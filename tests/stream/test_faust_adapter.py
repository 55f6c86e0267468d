"""The Faust adapter without a broker: Faust's events are duck-typed, so plain objects with
``value`` and ``message.topic/partition/offset`` stand in for them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.model import ModelBaseline
from stream.adapters.faust import StreamdriftSink, raw_value
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.pipeline import LOCAL_PARTITION, Pipeline
from tests.support.metrics import sample, samples, scrape

CONFIG = {
    "models": [{"name": "m", "baseline": {"reference": "ref.jsonl"},
                "features": [{"name": "x", "path": "x", "type": "numeric"}]}],
    "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20},
    "metrics": {"host": "127.0.0.1", "port": 0},
}


@pytest.fixture(scope="module")
def make_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = parse_config(CONFIG, Path(tmp_path_factory.mktemp("faust")))
    settings = detection_settings(cfg.detection)
    settings = type(settings)(**{**settings.__dict__, "calibration_values": 50_000})
    base = ModelBaseline.build("m", {"x": np.random.default_rng(0).normal(size=2000)},
                               column_specs(cfg.models[0]), settings)
    return lambda: Pipeline(cfg, {"m": base})


def _events(topic: str, partition: int, xs: np.ndarray, first_offset: int = 0) -> list[NS]:
    return [NS(value=orjson.dumps({"x": float(x)}),
               message=NS(topic=topic, partition=partition, offset=first_offset + i))
            for i, x in enumerate(xs)]


def test_state_is_kept_per_source_partition_and_alarms_carry_their_offset(make_pipeline):
    sink = StreamdriftSink(None, serve_metrics=False, pipeline=make_pipeline())
    rng = np.random.default_rng(1)
    clean = _events("t", 0, rng.normal(size=1500))
    shifted = _events("t", 1, rng.normal(size=1500) + np.r_[np.zeros(500), np.full(1000, 2.0)])
    found = []
    for i in range(0, 1500, 250):  # interleaved batches, as take_events yields them
        found += sink.process_events(clean[i:i + 250] + shifted[i:i + 250])

    assert set(sink.pipeline.partitions) == {("t", 0), ("t", 1)}
    assert found, "the shift on partition 1 was not caught"
    assert {d.feature for d in found} == {"x"}
    assert all(d.offset is not None and d.offset >= 500 for d in found), found
    quiet = sink.pipeline.monitor("m", ("t", 0))
    assert quiet is not None
    assert all(d.n_alarms == 0 for d in quiet.columns["x"].detectors.values())
    assert sink.pipeline.processed["m"] == 3000


def test_values_of_any_faust_serializer_give_the_same_results(make_pipeline):
    xs = np.random.default_rng(2).normal(size=600) + 3.0
    as_bytes = StreamdriftSink(None, serve_metrics=False, pipeline=make_pipeline())
    as_dicts = StreamdriftSink(None, serve_metrics=False, pipeline=make_pipeline())

    class Record:  # faust.Record's asdict()
        def __init__(self, x: float) -> None:
            self.x = x

        def asdict(self) -> dict[str, float]:
            return {"x": self.x}

    a = as_bytes.process([orjson.dumps({"x": float(x)}) for x in xs])
    b = as_dicts.process([{"x": float(x)} if i % 2 else Record(float(x))
                          for i, x in enumerate(xs)])
    assert a and a == b
    assert set(as_dicts.pipeline.partitions) == {LOCAL_PARTITION}
    assert raw_value(bytearray(b"{}")) == b"{}" and raw_value("{}") == b"{}"


def test_revoked_partitions_are_dropped_and_metrics_are_served(make_pipeline):
    sink = StreamdriftSink(None, port=0, pipeline=make_pipeline())
    try:
        sink.process_events(_events("t", 3, np.zeros(10)))
        connected = []
        app = NS(on_partitions_revoked=NS(connect=connected.append))
        sink.attach(app)
        asyncio.run(connected[0](app, revoked=[NS(topic="t", partition=3)]))
        assert ("t", 3) not in sink.pipeline.partitions
        assert sink.metrics_port
        s = samples(scrape(sink.metrics_port))
        # counters survive the drop: they count what this process processed
        assert sample(s, "streamdrift_events_processed_total", model="m") == 10
    finally:
        sink.close()


def test_a_sink_needs_a_configuration_or_a_pipeline():
    with pytest.raises(ValueError, match="needs a configuration"):
        StreamdriftSink(None)
