"""Compression codecs: kafka-python's behaviour with a codec it cannot decompress, and the
runner's answer to it (no broker: the kafka-python internals and a fake consumer).

The real broker cases (every codec with both clients, a codec missing at run time) are in
tests/integration/test_codecs.py.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.exposition import generate_latest

from detectors.model import ModelBaseline
from stream.config import parse_config
from stream.engine.baselines import column_specs, detection_settings
from stream.engine.figures import RunnerHealth
from stream.engine.pipeline import Pipeline
from stream.runtime.runner import KafkaRunner
from stream.sinks.metrics import make_registry
from stream.sources.kafka import (
    CODEC_PACKAGES,
    codec_fix,
    discard_undecodable_fetch,
    missing_codecs,
    unsupported_codec,
)


def _value(i: int) -> bytes:
    return b'{"i": %d, "pad": "%s"}' % (i, b"a" * 200)  # compressible: kafka-python only
    # compresses a batch that gets smaller


def _lz4_batch(n: int = 5) -> bytes:
    """One lz4-compressed record batch (message format v2) of ``n`` records."""
    from kafka.record.default_records import DefaultRecordBatchBuilder

    builder = DefaultRecordBatchBuilder(magic=2,
                                        compression_type=DefaultRecordBatchBuilder.CODEC_LZ4,
                                        is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i in range(n):
        builder.append(i, timestamp=None, key=None, value=_value(i), headers=[])
    data = bytes(builder.build())
    assert len(data) < n * 200, "not compressed"
    return data


def test_every_codec_is_installed_for_kafka_python() -> None:
    # pyproject.toml declares python-snappy, lz4 and zstandard: a fresh install reads them all
    assert missing_codecs() == []
    assert set(CODEC_PACKAGES) == {"gzip", "snappy", "lz4", "zstd"}


def test_missing_codec_is_reported_with_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka.codec

    monkeypatch.setattr(kafka.codec, "has_zstd", lambda: False)
    assert missing_codecs() == ["zstd"]
    assert "pip install zstandard" in codec_fix("zstd")
    assert "pip install python-snappy" in codec_fix("snappy")
    assert "confluent-kafka" in codec_fix("type 7")


def test_kafka_python_spins_on_an_undecodable_batch_unless_it_is_drained(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Pins the kafka-python internals :func:`discard_undecodable_fetch` relies on: after
    UnsupportedCodecError the in-line records stay truthy and hand out nothing (the spin
    of Fetcher.fetched_records); draining them ends it."""
    import kafka.codec
    from kafka import TopicPartition
    from kafka.consumer.fetcher import Fetcher
    from kafka.errors import UnsupportedCodecError
    from kafka.record import MemoryRecords

    data = _lz4_batch()
    monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)
    tp = TopicPartition("t", 3)
    part = Fetcher.PartitionRecords(0, tp, MemoryRecords(data))
    with pytest.raises(UnsupportedCodecError) as info:
        part.take(10)
    assert unsupported_codec(info.value) == "lz4"
    # the spin: still "in line", but nothing to take, for ever
    assert part and part.take(10) == [] and part

    class _Consumer:
        _fetcher = type("F", (), {"_next_partition_records": part})()

    assert discard_undecodable_fetch(_Consumer()) == tp
    assert not part
    assert discard_undecodable_fetch(object()) is None


def test_with_the_codec_the_same_batch_decodes() -> None:
    from kafka import TopicPartition
    from kafka.consumer.fetcher import Fetcher
    from kafka.record import MemoryRecords

    part = Fetcher.PartitionRecords(0, TopicPartition("t", 0), MemoryRecords(_lz4_batch(5)))
    assert [r.value for r in part.take(10)] == [_value(i) for i in range(5)]


# -- the runner, with a fake kafka-python consumer --------------------------------------------
CONFIG = {
    "source": {"kafka": {"bootstrap_servers": ["127.0.0.1:1"], "topics": ["t"],
                         "group_id": "g", "poll_timeout_ms": 50}},
    "models": [{"name": "m", "baseline": {"reference": "ref.jsonl"},
                "features": [{"name": "x", "path": "x", "type": "numeric"}]}],
    "detection": {"false_alarm_events": 100_000, "window": 200, "cadence": 20},
    "state": {"enabled": False},
}


@pytest.fixture(scope="module")
def pipeline_factory(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = parse_config(CONFIG, Path(tmp_path_factory.mktemp("codecs")))
    settings = detection_settings(cfg.detection)
    settings = type(settings)(**{**settings.__dict__, "calibration_values": 50_000})
    base = ModelBaseline.build("m", {"x": np.random.default_rng(0).normal(size=2000)},
                               column_specs(cfg.models[0]), settings)
    return cfg, lambda: Pipeline(cfg, {"m": base})


class _FakeConsumer:
    """kafka-python's consumer as the runner sees it; poll raises UnsupportedCodecError the
    way kafka-python 3.0 does (once, leaving the undecodable records in line)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import kafka.codec
        from kafka import TopicPartition
        from kafka.consumer.fetcher import Fetcher
        from kafka.record import MemoryRecords

        self.tp = TopicPartition("t", 0)
        part = Fetcher.PartitionRecords(0, self.tp, MemoryRecords(_lz4_batch()))
        monkeypatch.setattr(kafka.codec, "has_lz4", lambda: False)
        self._fetcher = type("F", (), {"_next_partition_records": part})()
        self._paused: set[Any] = set()
        self.polls = 0

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        self.polls += 1
        part = self._fetcher._next_partition_records
        if part and self.tp not in self._paused:
            recs = part.take(max_records)  # raises once, then [] for ever: kafka-python spins
            assert recs, "kafka-python would spin here"
        threading.Event().wait(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[Any]:
        return {self.tp}

    def paused(self) -> set[Any]:
        return set(self._paused)

    def pause(self, *tps: Any) -> None:
        self._paused |= set(tps)

    def resume(self, *tps: Any) -> None:
        self._paused -= set(tps)

    def position(self, tp: Any, timeout_ms: int | None = None) -> int:
        return 0

    def end_offsets(self, tps: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        return dict.fromkeys(tps, 5)

    def commit(self, offsets: Any = None, timeout_ms: int | None = None) -> None:
        pass

    def close(self, autocommit: bool = False, timeout_ms: int | None = None) -> None:
        pass


def test_runner_pauses_an_undecodable_partition_and_says_so(
        pipeline_factory: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg, make_pipeline = pipeline_factory
    pipeline = make_pipeline()
    fake = _FakeConsumer(monkeypatch)

    class Runner(KafkaRunner):
        def _consumer(self) -> Any:
            return fake

    stop = threading.Event()
    runner = Runner(cfg, pipeline, stop)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (runner.run(), done.set()), daemon=True)
    with caplog.at_level(logging.WARNING, logger="streamdrift.run"):
        thread.start()
        for _ in range(100):
            if runner.health.blocked:
                break
            threading.Event().wait(0.05)
        threading.Event().wait(0.5)  # more polls: the runner must keep polling, not spin
        try:
            assert runner.health.blocked == {("t", 0): "lz4"}
            assert fake.paused() == {fake.tp} and fake.polls >= 3
            health = runner.health.snapshot()
            assert health.source_up == 0
            assert health.source_errors == {"unsupported_codec": 1}
            text = generate_latest(make_registry(pipeline, runner.health)).decode()
            assert 'streamdrift_source_errors_total{reason="unsupported_codec"} 1.0' in text
            assert "streamdrift_source_up 0.0" in text
        finally:
            stop.set()
            thread.join(5)
    assert done.is_set(), "the runner did not stop within 5 s"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "t/0" in errors[0] and "lz4" in errors[0] and "pip install lz4" in errors[0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot decompress lz4" in w for w in warnings), warnings  # at start-up


def test_a_revoked_partition_is_no_longer_blocked() -> None:
    health = RunnerHealth()
    health.block({("t", 0): "zstd", ("t", 1): "zstd"}, "unsupported_codec")
    health.block({("t", 0): "zstd"}, "unsupported_codec")  # counted once
    assert health.snapshot().source_errors == {"unsupported_codec": 2}
    assert health.source_up == 0
    health.unblock([("t", 0), ("t", 1)])
    assert health.source_up == 1 and health.snapshot().blocked == {}
