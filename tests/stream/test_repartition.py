"""``source.repartition`` without a broker: its configuration, the timestamp merge of the
first stage, the monitors' configuration and the merged health figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from stream.config import parse_config
from stream.engine.figures import HealthFigures, merge_health
from stream.runtime.monitors import monitor_config
from stream.runtime.repartition import merge_plan
from tests.support.configs import config_errors, minimal_config

KAFKA = {"bootstrap_servers": "k:9092", "topics": ["events"], "group_id": "g"}


def _config(repartition: Any, **source: Any) -> dict[str, Any]:
    return minimal_config(source={"kafka": dict(KAFKA), "repartition": repartition, **source})


def test_defaults_are_named_after_the_group() -> None:
    rp = parse_config(_config({}), "/cfg").source.repartition
    assert rp is not None
    assert (rp.topic, rp.group_id, rp.partitions, rp.compression) == (
        "g-repartition", "g-monitor", 1, "lz4")
    assert (rp.writers, rp.heartbeat_ms, rp.lateness_ms) == ("one", 1000, 2000)
    several = parse_config(_config({"writers": "several", "heartbeat_ms": 250,
                                    "lateness_ms": 0}), "/cfg").source.repartition
    assert several is not None
    assert (several.writers, several.heartbeat_ms, several.lateness_ms) == ("several", 250, 0)
    pooled = parse_config(_config({"writers": "several", "pooled": True}), "/cfg")
    rp = pooled.source.repartition
    assert rp is not None and rp.pooled and rp.writers == "several"  # (issue 14: keyed pool)


def test_no_section_means_no_repartition() -> None:
    assert parse_config(minimal_config(source={"kafka": KAFKA}), "/cfg").source.repartition \
        is None


@pytest.mark.parametrize(("repartition", "source", "message"), [
    ({"partitions": 0}, {}, "source.repartition.partitions: must be an integer in 1..10000"),
    ({"compression": "brotli"}, {}, "source.repartition.compression: must be one of"),
    ({"topic": "events"}, {}, "is also in source.kafka.topics"),
    ({"topic": "dlq"}, {"dead_letter": {"topic": "dlq"}}, "is also source.dead_letter.topic"),
    ({"group_id": "g"}, {}, "the monitors need a consumer group of their own"),
    ({"retention_ms": 5}, {}, "source.repartition.retention_ms"),
    ({"bogus": 1}, {}, "source.repartition.bogus"),
    ({"writers": "many"}, {}, "source.repartition.writers: must be one of"),
    ({"heartbeat_ms": 0}, {}, "source.repartition.heartbeat_ms: must be an integer"),
    ({"lateness_ms": -1}, {}, "source.repartition.lateness_ms: must be an integer"),
])
def test_bad_settings_name_the_key(repartition: Any, source: dict[str, Any],
                                   message: str) -> None:
    errors = config_errors(_config(repartition, **source))
    assert any(message in e for e in errors), errors


def test_the_state_topic_cannot_be_the_repartition_topic() -> None:
    data = _config({"topic": "same"})
    data["state"] = {"topic": "same"}
    assert any("is also source.repartition.topic" in e for e in config_errors(data))


def test_monitors_read_the_internal_topic_from_the_start_in_their_group() -> None:
    config = parse_config(_config({"partitions": 4}), "/cfg")
    k = monitor_config(config).source.kafka
    assert k is not None
    assert (k.topics, k.group_id, k.auto_offset_reset) == (
        ("g-repartition",), "g-monitor", "earliest")
    assert config.source.kafka is not None and config.source.kafka.topics == ("events",)


# -- the merge --------------------------------------------------------------------------
def test_merge_forwards_up_to_the_slowest_partition_in_time_order() -> None:
    a = np.array([10, 20, 30, 40], dtype=np.int64)
    b = np.array([15, 25], dtype=np.int64)
    counts, order = merge_plan([a, b])
    assert counts == [2, 2]  # nothing of a after 25: b may still have records before it
    merged = np.concatenate([a[:2], b[:2]])[order]
    assert merged.tolist() == [10, 15, 20, 25]


def test_merge_waits_for_a_partition_that_is_behind() -> None:
    counts, order = merge_plan([np.array([1, 2]), np.array([], dtype=np.int64)],
                               waiting=True)
    assert counts == [0, 0] and order.size == 0


def test_merge_ignores_empty_partitions_that_are_caught_up() -> None:
    counts, order = merge_plan([np.array([1, 2]), np.array([], dtype=np.int64)])
    assert counts == [2, 0] and order.tolist() == [0, 1]


def test_merge_takes_a_prefix_when_timestamps_go_back() -> None:
    # a producer's clock stepped back: the record after the step stays behind its
    # predecessor, so offsets stay in order within the partition
    counts, _ = merge_plan([np.array([10, 30, 12]), np.array([20, 25])])
    assert counts == [1, 2]


def test_merge_interleaves_partitions_within_one_millisecond() -> None:
    # a producer sends hundreds of events per millisecond: the partitions of one
    # millisecond must interleave, not follow each other in blocks
    rng = np.random.default_rng(3)
    sizes = (300, 200, 100)
    stamps = [np.sort(rng.integers(0, 5, n)) for n in sizes]
    stamps = [np.append(s, 5) for s in stamps]  # the same newest time everywhere
    counts, order = merge_plan(stamps)
    assert counts == [n + 1 for n in sizes]
    source = np.concatenate([np.full(n, i) for i, n in enumerate(counts)])[order]
    # in every run of 60 merged records each partition has about its share
    for start in range(0, len(source) - 60, 60):
        share = np.bincount(source[start:start + 60], minlength=3) / 60
        assert np.all(np.abs(share - np.array(sizes) / sum(sizes)) < 0.2), share


def test_merge_of_nothing() -> None:
    counts, order = merge_plan([np.array([], dtype=np.int64)] * 2)
    assert counts == [0, 0] and order.size == 0


# -- health ---------------------------------------------------------------------------
def test_health_of_two_stages_adds_counters_and_keeps_both_lags() -> None:
    first = HealthFigures(source_up=1, consumer_lag={("events", 0): 5},
                          dead_letter={"ok": 2, "failed": 0}, repartition={"ok": 10})
    second = HealthFigures(source_up=0, consumer_lag={("g-repartition", 0): 7},
                           dead_letter={"ok": 1}, checkpoints={"ok": 3},
                           last_checkpoint_ts=12.0)
    merged = merge_health(first, second)
    assert merged.source_up == 0
    assert merged.consumer_lag == {("events", 0): 5, ("g-repartition", 0): 7}
    assert merged.dead_letter == {"ok": 3, "failed": 0}
    assert merged.repartition == {"ok": 10}
    assert merged.checkpoints == {"ok": 3} and merged.last_checkpoint_ts == 12.0


def test_run_stage_needs_the_option(tmp_path, capsys) -> None:
    import yaml

    from stream.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(minimal_config(source={"kafka": KAFKA})))
    assert main(["run", "-c", str(path), "--stage", "monitor"]) == 2
    assert "--stage monitor needs source.repartition" in capsys.readouterr().err


def test_frames_carry_dense_merge_positions_from_the_committed_one_on() -> None:
    from collections import namedtuple

    from stream.runtime.frames import unpack
    from stream.runtime.repartition import Repartitioner, parse_seq

    Rec = namedtuple("Rec", "topic partition offset timestamp key value")
    config = parse_config(_config({"partitions": 3}), "/cfg")
    stage = Repartitioner(config, pipeline=None)  # type: ignore[arg-type]
    stage.frame_events = 7  # several frames per internal partition
    stage.seq = 1000  # as after a commit with metadata "streamdrift-seq=1000"
    recs = [Rec("events", p, o, o, None, b"{}") for o in range(40) for p in range(4)]
    out = stage._frames(recs)
    got: dict[tuple[int, int], int] = {}
    for _q, raw, _ts in out:
        f = unpack(raw)
        assert f.positions is not None and (np.diff(f.positions) > 0).all()
        for p, o, pos in zip(f.partitions, f.offsets, f.positions, strict=True):
            got[(int(p), int(o))] = int(pos)
    # every message once, numbered densely in the merged order given
    assert [got[(r.partition, r.offset)] for r in recs] == list(range(1000, 1000 + len(recs)))
    assert len({q for q, _, _ in out}) == 3
    assert parse_seq(f"streamdrift-seq={stage.seq}") == 1000



@pytest.mark.parametrize(("client", "cls"), [("kafka-python", "Repartitioner"),
                                             ("confluent-kafka", "LibrdkafkaRepartitioner")])
def test_the_first_stage_fetches_with_the_configured_client(client: str, cls: str) -> None:
    """kafka-python keeps the first stage's group either way; librdkafka fetches its
    records with confluent-kafka (rdfetch.py)."""
    from stream.runtime.twostage import first_stage

    config = parse_config(minimal_config(source={
        "kafka": {**KAFKA, "client": client}, "repartition": {}}), "/cfg")
    stage = first_stage(config, pipeline=None)  # type: ignore[arg-type]
    assert type(stage).__name__ == cls
    assert stage.consumer is None and getattr(stage, "rd", None) is None  # made by run()


def _frames_record_by_record(records: list[Any], partitions: int, seq: int,
                             frame_events: int) -> list[tuple[int, bytes, int]]:
    """The first stage's frames as built before 2026-12-05, record by record (spread,
    frames, pack): the reference of the columnar ``Repartitioner._frames``."""
    from stream.runtime.frames import frames, pack
    from stream.runtime.repartition import spread

    parts: list[list[tuple[int, Any]]] = [[] for _ in range(max(1, partitions))]
    for i, (r, q) in enumerate(zip(records, spread(records, partitions), strict=True)):
        parts[q].append((seq + i, r))
    out = []
    for q, part in enumerate(parts):
        at = 0
        for run in frames([r for _, r in part], frame_events):
            pos = [p for p, _ in part[at:at + len(run)]]
            at += len(run)
            out.append((q, pack(run, pos), max(r.timestamp for r in run)))
    return out


@pytest.mark.parametrize("seed", range(12))
def test_columnar_frames_are_the_record_by_record_frames_byte_for_byte(seed: int) -> None:
    from collections import namedtuple

    from stream.runtime.frames import FRAME_BYTES
    from stream.runtime.repartition import Repartitioner

    rng = np.random.default_rng(seed)
    Rec = namedtuple("Rec", "topic partition offset timestamp key value")
    topics = ["events", "clicks", "other-topic"][: 1 + seed % 3]
    n = int(rng.integers(1, 3000))
    big = FRAME_BYTES // 3

    def blob(p_none: float, large: bool) -> bytes | None:
        if rng.random() < p_none:
            return None
        size = big + int(rng.integers(0, big)) if large and rng.random() < 0.01 else \
            int(rng.integers(0, 900))
        return bytes(rng.integers(0, 256, size, dtype=np.uint8))

    recs = [Rec(topics[int(rng.integers(len(topics)))], int(rng.integers(0, 12)),
                int(rng.integers(0, 2**40)), int(1.7e12) + int(rng.integers(0, 10**6)),
                blob(0.5, False), blob(0.02, True)) for _ in range(n)]
    partitions = [1, 2, 3, 8][seed % 4]
    config = parse_config(_config({"partitions": partitions}), "/cfg")
    stage = Repartitioner(config, pipeline=None)  # type: ignore[arg-type]
    stage.frame_events = int(rng.integers(1, 400))
    stage.seq = int(rng.integers(0, 10**9))
    want = _frames_record_by_record(recs, partitions, stage.seq, stage.frame_events)
    assert stage._frames(recs) == want
