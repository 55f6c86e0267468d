"""Poison messages to the dead-letter topic: original bytes, headers naming where they came from.

The runner commits past a poison message only after its dead-letter write is
acknowledged; while writes fail, :class:`PendingDeadLetters` keeps what is still to
write and the offsets to commit once it is written, and the runner retries with
back-off (:meth:`PendingDeadLetters.backoff`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream.sinks.producer import ProducerSink

#: bound of one dead-letter write attempt
DEAD_LETTER_TIMEOUT_S = 10.0
#: back-off between failed dead-letter writes (doubles up to the maximum)
DEAD_LETTER_BACKOFF_S = (0.5, 30.0)


@dataclass
class PendingDeadLetters:
    """Poison messages (and drift records, see :mod:`stream.sinks.driftevents`) of processed
    records whose write is not acknowledged."""

    #: (record, reason) still to write
    entries: list[tuple[Any, str]]
    #: partition -> next offset, committed once every entry is written
    done: dict[Any, int]
    #: drift records still to write
    drift: list[Any] = field(default_factory=list)
    attempts: int = 0
    next_try: float = 0.0
    first_failure: float = field(default_factory=time.monotonic)

    def backoff(self) -> None:
        """Count a failed attempt and schedule the next one."""
        self.attempts += 1
        lo, hi = DEAD_LETTER_BACKOFF_S
        self.next_try = time.monotonic() + min(hi, lo * 2 ** min(self.attempts, 16))


class DeadLetterWriter(ProducerSink):
    """Writes poison messages to ``topic`` with a producer made by ``make_producer``.

    Results are counted through ``count(result, n)`` (``ok``, ``failed``: one per message).  A failed
    write closes the producer, so the next attempt connects anew.
    """

    what = "dead-letter"

    def __init__(self, topic: str, make_producer: Callable[[], Any],
                 count: Callable[[str, int], None]) -> None:
        super().__init__(topic, make_producer, count)

    def write(self, entries: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
        """Write ``(record, reason)`` entries; returns the entries that failed."""
        def send(producer: Any, entry: tuple[Any, str]) -> Any:
            r, reason = entry
            headers = [("source_topic", r.topic.encode()),
                       ("source_partition", str(r.partition).encode()),
                       ("source_offset", str(r.offset).encode()),
                       ("error", reason.encode())]
            return producer.send(self.topic, value=r.value, key=r.key, headers=headers)

        return self.send_all(entries, send, DEAD_LETTER_TIMEOUT_S)

