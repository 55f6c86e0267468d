"""Partitions whose messages kafka-python cannot decompress here: found, paused, repeated.

A base of :class:`~stream.runtime.runner.KafkaRunner` (its bookkeeping, ``blocked`` and
``_blocked_reminder``, lives on the runner).  kafka-python decompresses in the consumer;
a codec whose library is missing (lz4, zstd, snappy) raises ``UnsupportedCodecError``
from ``poll()`` on every call.  The runner drops the undecodable fetch, pauses that
partition until it is revoked or the process restarts (nothing of it is read or
committed, so nothing is lost), exports it as blocked, and repeats the error with its fix
every :data:`BLOCKED_REMINDER_S`.  See docs/reliability.md.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from stream.runtime.restore import BROKER_CALL_TIMEOUT_S, Rebalancing
from stream.sources.kafka import (
    codec_fix,
    discard_undecodable_fetch,
    missing_codecs,
    partition_names,
)

log = logging.getLogger("streamdrift.run")

#: interval of the error that repeats which partitions cannot be read
BLOCKED_REMINDER_S = 60.0


class CodecBlocking(Rebalancing):
    """The compression-codec part of :class:`~stream.runtime.runner.KafkaRunner`, on top
    of its assignment part (restore.py)."""

    # set by KafkaRunner.__init__
    stop_event: threading.Event
    _blocked_reminder: float

    def _warn_missing_codecs(self) -> None:
        """Start-up: say which codecs kafka-python (the consumer, or the state store and
        dead-letter producer) cannot decompress here."""
        missing = missing_codecs()
        if missing:
            log.warning("kafka-python cannot decompress %s here: a partition whose messages "
                        "use it is not read (streamdrift_source_up 0); fix: %s",
                        ", ".join(missing),
                        "; ".join(f"{c}: {codec_fix(c)}" for c in missing),
                        extra={"codecs": missing})

    def _block_undecodable(self, exc: BaseException, codec: str) -> None:
        """kafka-python's poll raised UnsupportedCodecError: drop the undecodable records
        (otherwise every later poll spins on them, see :func:`discard_undecodable_fetch`)
        and pause their partition until it is revoked or the process restarts."""
        tp = discard_undecodable_fetch(self.consumer)
        assigned = set(self.consumer.assignment())
        # (a partition revoked meanwhile needs nothing: its records are drained)
        tps = {tp} & assigned if tp is not None else assigned - set(self.blocked)
        if not tps:
            # nothing to pause (an unknown kafka-python, an assignment gone): never spin
            log.error("cannot decompress %s-compressed messages: %s; fix: %s", codec, exc,
                      codec_fix(codec), extra={"codec": codec})
            self.health.set_source_up(False)
            self.stop_event.wait(min(1.0, self.kafka.poll_timeout_ms / 1000))
            return
        self.blocked.update(dict.fromkeys(tps, codec))
        self.consumer.pause(*tps)
        self.health.block({self._key(t): codec for t in tps}, "unsupported_codec")
        log.error("cannot read %s: its messages are compressed with %s, which kafka-python "
                  "cannot decompress here (%s); the partition stays paused, neither read nor "
                  "committed, until a restart; fix: %s",
                  ", ".join(partition_names(tps)), codec, exc, codec_fix(codec),
                  extra={"codec": codec, "partitions": partition_names(tps),
                         "positions": {f"{t.topic}/{t.partition}": self._position(t)
                                       for t in tps}})
        self._blocked_reminder = time.monotonic()

    def _position(self, tp: Any) -> int | None:
        try:
            pos = self.consumer.position(tp, timeout_ms=int(BROKER_CALL_TIMEOUT_S * 1000))
        except Exception:  # noqa: BLE001 - only for the log line
            return None
        return None if pos is None else int(pos)

    def _remind_blocked(self, now: float) -> None:
        if self.blocked and now - self._blocked_reminder >= BLOCKED_REMINDER_S:
            self._blocked_reminder = now
            codecs = sorted(set(self.blocked.values()))
            log.error("partitions still not read: compressed with %s, which kafka-python "
                      "cannot decompress here; fix: %s", ", ".join(codecs),
                      "; ".join(codec_fix(c) for c in codecs),
                      extra={"partitions": partition_names(self.blocked), "codecs": codecs})
