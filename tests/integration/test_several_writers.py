"""Two first stages writing at once on a real broker: ``source.repartition.writers: several``
(stream/runtime/writers.py, issue 14).

Two first stages (Repartitioner threads of this process) in one group on a 4-partition
keyed topic: each forwards its own source partitions, every source message reaches the
internal topic exactly once when nothing fails, every frame is version 3 with its writer's
count, index and generation, each writer's watermark never goes back on an internal
partition and no message of a writer is older than its previous frame's watermark there,
and an idle writer heartbeats.  With ``writers: one`` (the default) the frames stay
version 2.  Both fetch paths: kafka-python's and librdkafka's (rdfetch.py).
"""

from __future__ import annotations

import functools
import threading
from collections import Counter, defaultdict
from typing import Any

import orjson
import pytest

from stream.broker import read_to_end
from stream.config import parse_config
from stream.runtime.frames import VERSION, WRITER_VERSION, is_frame, unpack
from stream.runtime.repartition import Repartitioner
from stream.runtime.twostage import first_stage
from tests.support.configs import minimal_config
from tests.support.kafka import produce
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_wait = functools.partial(wait_for, interval=0.2, retry=())
PARTITIONS = 4
#: the internal topic's partitions
INTERNAL = 2
#: a writer's tolerance of the producers' clock (generous: the machine is loaded)
LATENESS_MS = 5000


def _stage(bootstrap: str, topic: str, group: str, client: str, stop: threading.Event,
           **rp: Any) -> Repartitioner:
    config = parse_config(minimal_config(source={
        "kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                  "auto_offset_reset": "earliest", "max_poll_records": 200,
                  "poll_timeout_ms": 200, "client": client},
        "repartition": {"topic": f"{group}-rp", "partitions": INTERNAL, **rp}}), "/cfg")
    return first_stage(config, None, stop)  # type: ignore[arg-type]


def _produce(bootstrap: str, topic: str, start: int, per_partition: int) -> int:
    """``per_partition`` messages to each partition, keyed by a region (one per
    partition, as a region-keyed producer's would be)."""
    for p in range(PARTITIONS):
        msgs = [orjson.dumps({"p": p, "i": i}) for i in range(start, start + per_partition)]
        produce(bootstrap, topic, msgs, partition=p, keys=[b"region-%d" % p] * len(msgs),
                linger_ms=5, acks="all")
    return PARTITIONS * per_partition


def _messages(frames: dict[int, list[bytes]]) -> int:
    return sum(len(unpack(v)) for vs in frames.values() for v in vs if is_frame(v))


def _run(stages: list[Repartitioner]) -> list[threading.Thread]:
    threads = []
    for s in stages:
        t = threading.Thread(target=s.run, name=f"writer-{len(threads)}", daemon=True)
        t.start()
        threads.append(t)
    return threads


def _roles(stages: list[Repartitioner]) -> list[Any]:
    return [s.writer.roles.current for s in stages]  # type: ignore[union-attr]


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_two_writers_forward_their_own_partitions_once_with_watermarks(
        kafka_bootstrap: str, make_topic: Any, client: str) -> None:
    bootstrap = kafka_bootstrap
    topic = make_topic(partitions=PARTITIONS)
    stop = threading.Event()
    group = f"{topic}-several"
    stages = [_stage(bootstrap, topic, group, client, stop, writers="several",
                     heartbeat_ms=300, lateness_ms=LATENESS_MS) for _ in range(2)]
    stages[0].ensure_topic()
    stages[1].topic_ready = True
    threads = _run(stages[:1])
    try:
        _wait(lambda: _roles(stages)[0] is not None, 60, "the first writer's assignment")
        threads += _run(stages[1:])

        def settled() -> bool:
            roles = _roles(stages)
            return all(r is not None and r.writers == 2 for r in roles) and \
                roles[0].generation == roles[1].generation and \
                {r.index for r in roles} == {0, 1}

        _wait(settled, 90, "both writers in one generation")
        generation = _roles(stages)[0].generation
        total = _produce(bootstrap, topic, 0, 300)
        _wait(lambda: sum(s.forwarded for s in stages) >= total, 90, "the first batch")
        beats = [s.writer.heartbeats for s in stages]  # type: ignore[union-attr]
        # caught up and idle: both heartbeat (every 300 ms)
        _wait(lambda: all(s.writer.heartbeats >= b + 3  # type: ignore[union-attr]
                          for s, b in zip(stages, beats, strict=True)), 30,
              "heartbeats of idle writers")
        total += _produce(bootstrap, topic, 300, 100)
        _wait(lambda: sum(s.forwarded for s in stages) >= total, 90, "the second batch")
        beats = [s.writer.heartbeats for s in stages]  # type: ignore[union-attr]
        _wait(lambda: all(s.writer.heartbeats > b  # type: ignore[union-attr]
                          for s, b in zip(stages, beats, strict=True)), 30,
              "heartbeats after the second batch")
        assert _roles(stages)[0].generation == generation, "a rebalance meanwhile"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)

    ids = {s.writer.writer_id: s for s in stages}  # type: ignore[union-attr]
    assert len(ids) == 2
    frames = read_to_end(bootstrap, f"{group}-rp", values_only=True)
    seen: Counter[tuple[int, int]] = Counter()
    sources: dict[bytes, set[int]] = defaultdict(set)
    heartbeats: Counter[tuple[bytes, int]] = Counter()
    for q, values in frames.items():
        last: dict[tuple[bytes, int], int] = {}  # (writer, generation) -> watermark
        for raw in values:
            assert is_frame(raw) and raw[4] == WRITER_VERSION
            f = unpack(raw)
            w = f.writer
            assert w is not None and w.writer_id in ids
            mine = ids[w.writer_id].writer
            assert mine is not None
            role = (w.generation, w.writers, w.index)
            assert role in {(r.generation, r.writers, r.index) for r in mine.roles.history
                            if r.several}, role
            key = (w.writer_id, w.generation)
            if key in last:
                assert w.watermark >= last[key], "a watermark went back"
                if len(f):
                    assert int(f.timestamps.min()) >= last[key], \
                        "a message older than its writer's previous watermark"
            last[key] = w.watermark
            if not len(f):
                heartbeats[(w.writer_id, q)] += 1
                continue
            assert w.generation == generation and w.writers == 2
            for p, o in zip(f.partitions.tolist(), f.offsets.tolist(), strict=True):
                seen[(p, o)] += 1
                sources[w.writer_id].add(p)
    # every source message once
    assert len(seen) == total and set(seen.values()) == {1}
    assert {p for p, _ in seen} == set(range(PARTITIONS))
    # each writer forwarded some source partitions, none both
    assert all(sources[i] for i in ids) and not set.intersection(*sources.values())
    # each writer heartbeat on every internal partition
    assert all(heartbeats[(i, q)] >= 3 for i in ids for q in range(INTERNAL)), heartbeats
    if client == "confluent-kafka":
        assert all(getattr(s, "rd_records", 0) for s in stages)  # librdkafka fetched

    # the default, one writer: version 2 as before
    one = _stage(bootstrap, topic, f"{topic}-one", client, threading.Event())
    assert one.writer is None
    thread = _run([one])[0]
    try:
        _wait(lambda: one.forwarded >= total, 90, "the one writer")
    finally:
        one.stop()
        thread.join(timeout=60)
    values = [v for vs in read_to_end(bootstrap, f"{topic}-one-rp", values_only=True).values()
              for v in vs]
    assert values and {v[4] for v in values} == {VERSION}
    assert _messages({0: values}) == total
