"""The test broker itself: a real produce / consume-in-a-group round trip, and clean stops."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream.broker import BrokerError, read_to_end
from tests.support.kafka import produce
from tests.support.processes import pid_alive

pytestmark = pytest.mark.integration

N_MESSAGES = 1_000


def _pids_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _consumer(bootstrap: str, topic: str, group: str) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=250,
        request_timeout_ms=30_000,
    )


def test_produce_consume_commit_in_a_group(kafka_bootstrap: str, kafka_topic: str) -> None:
    expected = [f"msg-{i}".encode() for i in range(N_MESSAGES)]

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(kafka_topic, key=str(i).encode(), value=v) for i, v in enumerate(expected)
        ]
        producer.flush(timeout=30)
        offsets = [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)
    assert offsets == list(range(N_MESSAGES))

    group = f"sd-test-{uuid.uuid4().hex[:12]}"
    tp = TopicPartition(kafka_topic, 0)

    first = _consumer(kafka_bootstrap, kafka_topic, group)
    seen: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(seen) < N_MESSAGES and time.monotonic() < deadline:
            for records in first.poll(timeout_ms=500).values():
                seen.extend(r.value for r in records)
        assert len(seen) == N_MESSAGES, f"consumed {len(seen)} of {N_MESSAGES} within 60 s"
        first.commit()  # synchronous, manual: the consumed positions
        assert first.committed(tp) == N_MESSAGES
    finally:
        first.close(autocommit=False)
    assert seen == expected  # one partition: all of them, in order, once

    # A second member of the same group resumes at the committed offset: nothing new.
    second = _consumer(kafka_bootstrap, kafka_topic, group)
    extra: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while not second.assignment() and time.monotonic() < deadline:
            for records in second.poll(timeout_ms=500).values():
                extra.extend(r.value for r in records)
        assert second.assignment() == {tp}, "the second consumer got no partition within 30 s"
        assert second.position(tp, timeout_ms=10_000) == N_MESSAGES
        quiet_until = time.monotonic() + 2
        while time.monotonic() < quiet_until:
            for records in second.poll(timeout_ms=250).values():
                extra.extend(r.value for r in records)
    finally:
        second.close(autocommit=False)
    assert extra == []


def test_read_to_end_reads_every_partition_or_names_the_ones_behind(
        kafka_bootstrap: str, make_topic) -> None:
    topic = make_topic(partitions=2)
    sent = {p: [f"{p}-{i}".encode() for i in range(100 * (p + 1))] for p in (0, 1)}
    for p, values in sent.items():
        produce(kafka_bootstrap, topic, values, partition=p, acks="all")

    assert read_to_end(kafka_bootstrap, topic, values_only=True) == sent
    records = read_to_end(kafka_bootstrap, topic)
    assert {p: [r.offset for r in recs] for p, recs in records.items()} == {
        0: list(range(100)), 1: list(range(200))}
    # a deadline that passes before the first poll: an error, not the partial data
    with pytest.raises(BrokerError, match=rf"topic '{topic}' .*partition 0 at position "
                       r"(0|unknown) of end 100, partition 1 at position (0|unknown) of end 200"):
        read_to_end(kafka_bootstrap, topic, timeout=1e-6)


def test_local_broker_stop_leaves_no_java_behind(broker_module) -> None:
    broker = broker_module.LocalBroker()  # workdir=None: a temp dir that stop() deletes
    try:
        broker.start()
        pid = broker.pid
        workdir = broker.workdir
        assert pid is not None and workdir is not None
        assert pid_alive(pid)
        assert "kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        # idempotent topic creation
        assert broker.create_topic("sd-stop-test", partitions=2) == "sd-stop-test"
        assert broker.create_topic("sd-stop-test", partitions=2) == "sd-stop-test"
    finally:
        broker.stop()

    assert not pid_alive(pid), f"java pid {pid} still running after stop()"
    assert _pids_mentioning(str(workdir)) == [], "a process still refers to the broker's workdir"
    assert not workdir.exists(), "the temporary workdir was not deleted"
    assert not broker.running
    broker.stop()  # idempotent
