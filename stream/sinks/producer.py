"""The producer lifecycle shared by the sinks that write to Kafka (dead letters, drift events).

A sink makes its producer lazily, drops it after a failed write (so the next
attempt connects anew) and flushes and closes it at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("streamdrift.run")


class ProducerSink:
    """Owns the producer of a sink writing to ``topic``; ``what`` names it in log lines."""

    what = "producer"

    def __init__(self, topic: str, make_producer: Callable[[], Any]) -> None:
        self.topic = topic
        self.make_producer = make_producer
        self.producer: Any = None

    def connect(self) -> Any:
        """The producer, made on first use (or after a failure dropped it)."""
        if self.producer is None:
            self.producer = self.make_producer()
        return self.producer

    def drop_producer(self) -> None:
        """Close the producer without waiting (after a failure)."""
        if self.producer is not None:
            try:
                self.producer.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass
            self.producer = None

    def close(self) -> None:
        """Flush and close the producer (at shutdown)."""
        if self.producer is not None:
            try:
                self.producer.flush(timeout=10)
                self.producer.close(timeout=10)
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the %s producer: %s", self.what, exc)
            self.producer = None
