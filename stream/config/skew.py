"""The ``detection.partition_check`` section: comparing the partitions with each other."""

from __future__ import annotations

from typing import Any

from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, default_of, get_key, show
from stream.config.tree import PartitionCheckConfig

PARTITION_CHECK_KEYS = ("enabled", "interval_s", "window", "min_events", "false_alarm",
                        "min_effect", "repeat_s")
_EXAMPLE = ("{enabled: true, interval_s: 60, window: 10000, min_events: 1000, "
            "false_alarm: 1.0e-6, min_effect: 0.05, repeat_s: 3600}")


def parse_partition_check(ctx: Ctx, value: Any, path: KeyPath) -> PartitionCheckConfig | Bad:
    """The section, defaults applied; every problem is reported under its key path."""
    sec = ctx.section(value, path, PARTITION_CHECK_KEYS, _EXAMPLE)
    if sec is None:
        return BAD
    kw: dict[str, Any] = {}
    if get_key(sec, "enabled") is not ABSENT:
        if isinstance(sec["enabled"], bool):
            kw["enabled"] = sec["enabled"]
        else:
            ctx.error(path + ("enabled",), f"must be true or false, got {show(sec['enabled'])}")
    for key in ("interval_s", "repeat_s"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = ctx.real(sec[key], path + (key,), minimum=0.0, strict=True)
    if get_key(sec, "window") is not ABSENT:
        kw["window"] = ctx.integer(sec["window"], path + ("window",), 100, 10_000_000)
    if get_key(sec, "min_events") is not ABSENT:
        kw["min_events"] = ctx.integer(sec["min_events"], path + ("min_events",), 20,
                                       10_000_000)
    window = kw.get("window", default_of(PartitionCheckConfig, "window"))
    min_events = kw.get("min_events", default_of(PartitionCheckConfig, "min_events"))
    if isinstance(window, int) and isinstance(min_events, int) \
            and min_events > window * 9 // 10:
        ctx.error(path + ("min_events",),
                  f"must be at most 90 % of window ({window * 9 // 10} for window {window}): "
                  f"a partition's window holds 9 to 10 tenths of window events on average; got "
                  f"{min_events}")
        kw["min_events"] = BAD
    if get_key(sec, "false_alarm") is not ABSENT:
        fa = ctx.real(sec["false_alarm"], path + ("false_alarm",), minimum=0.0, strict=True)
        if not isinstance(fa, Bad) and fa >= 0.1:
            ctx.error(path + ("false_alarm",),
                      f"must be below 0.1 (a probability per check, e.g. 1.0e-6), got {fa:g}")
            fa = BAD
        kw["false_alarm"] = fa
    if get_key(sec, "min_effect") is not ABSENT:
        me = ctx.real(sec["min_effect"], path + ("min_effect",), minimum=0.0, strict=False)
        if not isinstance(me, Bad) and me >= 1:
            ctx.error(path + ("min_effect",),
                      f"must be below 1 (a total-variation distance, e.g. 0.05), got {me:g}")
            me = BAD
        kw["min_effect"] = me
    return PartitionCheckConfig(**{k: v for k, v in kw.items() if not isinstance(v, Bad)})
