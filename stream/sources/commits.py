"""Offset commits that overlap the work that follows them.

A synchronous commit per batch waits a broker round trip each time.  Profiled in the
scale-out benchmark (issue 14: two stages in one process, 3 M events), the monitors spent
18–19 % of their thread's wall time waiting on it and the first stage 14–15 %; with the GIL
shared by both stages a wait of one is CPU time of the other only when that one has work.
:func:`begin_commit` sends the commit and returns; :func:`settle_commit` waits for its
answer later (the caller settles before it needs the offsets acknowledged: before its next
commit, before writing the next batch, before closing).  A consumer that cannot commit
asynchronously (a test's stand-in; kafka-python while its group coordinator is unknown,
where ``commit_async`` returns the lookup's future, not the commit's) commits synchronously
in :func:`begin_commit`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("streamdrift.run")


class CommitFlight:
    """One offset commit sent and not settled yet: ``todo`` (partition -> next offset)."""

    def __init__(self, todo: dict[Any, int], what: str) -> None:
        self.todo, self.what = todo, what
        self.answered = threading.Event()
        self.error: BaseException | None = None

    def ok(self, _result: Any = None) -> None:
        self.answered.set()

    def failed(self, exc: BaseException) -> None:
        self.error = exc
        self.answered.set()


def _kafka_python_ready(consumer: Any) -> bool:
    """Whether ``consumer`` is kafka-python's with a known coordinator (its
    ``commit_async`` future is then the commit's own)."""
    coordinator = getattr(consumer, "_coordinator", None)
    unknown = getattr(coordinator, "coordinator_unknown", None)
    return unknown is not None and not unknown()


def begin_commit(consumer: Any, done: dict[Any, int], committed: dict[Any, int],
                 timeout_ms: int, what: str = "offset commit",
                 metadata: str = "") -> CommitFlight | None:
    """Send the commit of the offsets in ``done`` that differ from ``committed`` (the next
    offset to read per partition) with ``metadata``; None when there is nothing to commit.
    Never raises: a failure to send is the flight's error (:func:`settle_commit`)."""
    from kafka.structs import OffsetAndMetadata

    todo = {tp: off for tp, off in done.items() if committed.get(tp) != off}
    if not todo:
        return None
    flight = CommitFlight(todo, what)
    offsets = {tp: OffsetAndMetadata(off, metadata, -1) for tp, off in todo.items()}
    try:
        send = getattr(consumer, "commit_async", None)
        confluent = getattr(consumer, "asynchronous_commits", False)
        if send is not None and (confluent or _kafka_python_ready(consumer)):
            future = send(offsets)
            if hasattr(future, "add_errback"):  # kafka-python's Future
                future.add_callback(flight.ok)
                future.add_errback(flight.failed)
            else:  # concurrent.futures.Future (stream.sources.confluent)
                future.add_done_callback(
                    lambda f: flight.ok() if f.exception() is None
                    else flight.failed(f.exception()))
        else:
            consumer.commit(offsets, timeout_ms=timeout_ms)
            flight.ok()
    except Exception as exc:  # noqa: BLE001 - the caller retries with its next commit
        flight.failed(exc)
    return flight


def settle_commit(flight: CommitFlight | None, committed: dict[Any, int], timeout_ms: int,
                  owned: Iterable[Any] | None = None,
                  logger: logging.Logger = log) -> BaseException | None:
    """Wait up to ``timeout_ms`` for ``flight``'s answer; on success record its offsets in
    ``committed`` (only those of the partitions in ``owned``, when given: a partition
    revoked meanwhile is not ours to record) and return None, else the error, logged as a
    warning (a time-out is ``KafkaTimeoutError``: the commit may still land)."""
    from kafka.errors import KafkaTimeoutError

    if flight is None:
        return None
    if not flight.answered.wait(timeout_ms / 1000):
        exc: BaseException = KafkaTimeoutError(
            f"offset commit not acknowledged within {timeout_ms} ms")
    elif flight.error is not None:
        exc = flight.error
    else:
        keep = None if owned is None else set(owned)
        committed.update({tp: off for tp, off in flight.todo.items()
                          if keep is None or tp in keep})
        return None
    logger.warning("%s failed: %s: %s", flight.what, type(exc).__name__, exc)
    return exc
