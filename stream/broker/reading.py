"""Reading a whole topic back from any Kafka broker (kafka-python, imported lazily), as
tests and benchmarks check what a run wrote."""

from __future__ import annotations

import time
from typing import Any

from stream.broker.errors import BrokerError

#: large enough for one repartition frame of thousands of messages per fetch
_FETCH_BYTES = 16 * 1024 * 1024
_POLL_MS = 200


def read_to_end(bootstrap_servers: str, topic: str, *, values_only: bool = False,
                timeout: float = 60.0) -> dict[int, list[Any]]:
    """Every record of ``topic`` up to the end offsets it has once read from its beginning.

    Assigns every partition (no consumer group, nothing committed), seeks to the beginning,
    takes the end offsets, and polls until each partition's position reaches its end;
    records written after the end offsets were taken are left out.  A topic the broker
    does not know (yet) has no partitions: ``{}``.

    Parameters
    ----------
    bootstrap_servers
        ``host:port`` of any broker of the cluster.
    topic
        The topic to read.
    values_only
        Return the records' values (bytes) rather than the kafka-python
        ``ConsumerRecord`` objects (with key, offset, timestamp, headers).
    timeout
        Seconds from the call until every partition must have reached its end offset.

    Returns
    -------
    dict
        partition -> its records (or values), in offset order.

    Raises
    ------
    BrokerError
        When a partition has not reached its end offset within ``timeout``: it names the
        topic and each partition behind, with its position and end (never partial data).
    ValueError
        For a timeout that is not a positive number of seconds.

    Examples
    --------
    >>> read_to_end("127.0.0.1:9092", "features", timeout=0)
    Traceback (most recent call last):
    ...
    ValueError: read_to_end: timeout must be a positive number of seconds, got 0
    """
    if not (isinstance(timeout, int | float) and timeout > 0):
        raise ValueError(
            f"read_to_end: timeout must be a positive number of seconds, got {timeout!r}")
    from kafka import KafkaConsumer, TopicPartition

    deadline = time.monotonic() + timeout

    def left_ms() -> int:
        return max(0, int((deadline - time.monotonic()) * 1000))

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None,
                             enable_auto_commit=False, max_partition_fetch_bytes=_FETCH_BYTES)
    try:
        tps = [TopicPartition(topic, p)
               for p in sorted(consumer.partitions_for_topic(topic) or ())]
        out: dict[int, list[Any]] = {tp.partition: [] for tp in tps}
        if not tps:
            return out
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = {tp: int(n) for tp, n in consumer.end_offsets(tps).items()}
        while True:
            positions = {tp: consumer.position(tp, timeout_ms=left_ms()) for tp in tps}
            behind = [tp for tp in tps if positions[tp] is None or positions[tp] < ends[tp]]
            if not behind:
                return out
            if time.monotonic() >= deadline:
                where = ", ".join(f"partition {tp.partition} at position "
                                  f"{'unknown' if positions[tp] is None else positions[tp]} "
                                  f"of end {ends[tp]}" for tp in behind)
                raise BrokerError(
                    f"reading topic {topic!r} to its end offsets: {where} after {timeout:g} s "
                    f"(a slow or unreachable broker? give a longer timeout)")
            for tp, recs in consumer.poll(timeout_ms=min(_POLL_MS, left_ms())).items():
                out[tp.partition] += [r.value if values_only else r for r in recs
                                      if r.offset < ends[tp]]
    finally:
        consumer.close()
