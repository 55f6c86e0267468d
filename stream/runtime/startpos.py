"""Where consumption starts on each newly assigned partition, and what lies before it.

A newcomer who points ``run`` at a topic that already holds events, with the default
``auto_offset_reset: latest``, reads nothing of them: the start-up log says so, per
partition and summed, with the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("streamdrift.run")

#: how a partition's start offset was chosen
ORIGINS = ("checkpoint", "committed", "auto_offset_reset")


def start_report(consumer: Any, starts: Mapping[Any, tuple[str, int | None]],
                 auto_offset_reset: str, timeout_ms: int) -> dict[str, Any]:
    """Per partition ``topic/partition``: the start offset, how it was chosen, the messages
    the partition holds before it (``before``) and from it on (``backlog``); and the sums.

    ``starts``: partition -> (origin, offset; None where ``auto_offset_reset`` decides).
    """
    tps = list(starts)
    low = consumer.beginning_offsets(tps, timeout_ms=timeout_ms)
    high = consumer.end_offsets(tps, timeout_ms=timeout_ms)
    parts: dict[str, dict[str, Any]] = {}
    for tp in sorted(tps, key=lambda t: (t.topic, t.partition)):
        origin, offset = starts[tp]
        first, end = int(low[tp]), int(high[tp])
        if offset is None:
            # kafka-python resolves the reset now (so the line says where it really
            # starts); librdkafka only once fetching, then the watermark it will take
            offset = consumer.position(tp, timeout_ms=timeout_ms)
            if offset is None:
                offset = first if auto_offset_reset == "earliest" else end
        offset = min(max(int(offset), first), end)
        parts[f"{tp.topic}/{tp.partition}"] = {
            "offset": offset, "from": origin if origin != "auto_offset_reset"
            else f"auto_offset_reset {auto_offset_reset}",
            "before": offset - first, "backlog": end - offset}
    return {"partitions": parts,
            "messages_before": sum(p["before"] for p in parts.values()),
            "backlog": sum(p["backlog"] for p in parts.values())}


def log_start(consumer: Any, starts: Mapping[Any, tuple[str, int | None]],
              auto_offset_reset: str, timeout_ms: int) -> dict[str, Any] | None:
    """Log where consumption starts (one line for the partitions assigned together);
    returns the report (None when the broker did not answer: the line says so)."""
    if not starts:
        return None
    try:
        report = start_report(consumer, starts, auto_offset_reset, timeout_ms)
    except Exception as exc:  # noqa: BLE001 - only for the log line
        log.info("consumption starts (the partitions' offsets are unknown: %s)", exc,
                 extra={"partitions": sorted(f"{t.topic}/{t.partition}" for t in starts)})
        return None
    parts = report["partitions"]
    where = ", ".join(f"{name} at offset {p['offset']} ({p['from']})"
                      for name, p in parts.items())
    skipped = sum(p["before"] for p in parts.values()
                  if p["from"] == "auto_offset_reset latest")
    hint = ""
    if skipped:
        hint = (f"; {skipped} messages already in the topic are not read (auto_offset_reset "
                f"latest, the default, starts at the end); set source.kafka.auto_offset_reset: "
                f"earliest to read them")
    log.info("consumption starts: %s; %d messages lie before the start, %d after it%s",
             where, report["messages_before"], report["backlog"], hint, extra=report)
    return report
