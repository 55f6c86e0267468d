"""The ``models[].segments`` section: per-slice monitoring of a model's traffic.

A segment names a categorical field of the events by its dotted path: one of the
model's categorical features, or any other event field (a tenant, a country).  Each
keeps the ``top_k`` most frequent values of the reference (those with at least
``min_reference_events`` reference events); every other value, and a missing one, is
pooled as ``other``.  Per value, the monitors of ``columns`` (default: all the model's
columns) run on that slice of the traffic against a baseline built from the same slice
of the reference (see :mod:`stream.engine.segments`).

>>> from stream.config import parse_config
>>> cfg = parse_config({"models": [{"name": "m", "baseline": {"reference": "r.jsonl"},
...     "features": [{"name": "x", "path": "f.x", "type": "numeric"}],
...     "segments": [{"path": "region", "top_k": 4}]}]}, ".")
>>> seg = cfg.models[0].segments[0]
>>> seg.name, seg.path, seg.top_k, seg.columns, seg.min_reference_events
('region', ('region',), 4, (), 1000)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, get_key, suggest, type_name

__all__ = ["GLOBAL_SHARE", "SEGMENT_KEYS", "SegmentConfig", "parse_segments", "segment_budget"]

SEGMENT_KEYS = ("name", "path", "top_k", "columns", "min_reference_events")
_EXAMPLE = "[{path: region, top_k: 10}]"
_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
#: the most values one segment may monitor (series stay bounded)
MAX_TOP_K = 100
#: at most this many segments per model
MAX_SEGMENTS = 8


@dataclass(frozen=True, slots=True)
class SegmentConfig:
    """One segment field of a model."""

    name: str
    path: tuple[str, ...]
    #: values monitored separately (the most frequent of the reference); the rest: ``other``
    top_k: int = 10
    #: the columns whose monitors run per value (empty: all the model's columns)
    columns: tuple[str, ...] = ()
    #: a value needs this many reference events for a baseline of its own; below it, it is
    #: pooled into ``other`` (and ``other`` below it is not monitored per segment)
    min_reference_events: int = 1000


def parse_segments(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any],
                   reference: bool) -> tuple[SegmentConfig, ...]:
    """The model's ``segments`` list; ``columns``: column name -> its ColumnConfig (the
    model's, already parsed); ``reference``: whether the model's baseline is reference data
    (segments need it: their baselines are built from its slices)."""
    if value is ABSENT or value is None:
        return ()
    if not isinstance(value, list):
        ctx.error(path, f"must be a list of segments, e.g. {_EXAMPLE}; got {type_name(value)}")
        return ()
    if len(value) > MAX_SEGMENTS:
        ctx.error(path, f"at most {MAX_SEGMENTS} segments per model (each multiplies the "
                        f"monitors), got {len(value)}")
        return ()
    if value and not reference:
        ctx.error(path, "segments need baseline.reference (each segment value's baseline is "
                        "built from its slice of the reference data); set baseline.reference "
                        "instead of baseline.file")
    out: list[SegmentConfig] = []
    names: dict[str, int] = {}
    by_path = {c.path: c for c in columns.values() if hasattr(c, "path")}
    for i, raw in enumerate(value):
        seg = _segment(ctx, raw, path + (i,), columns, by_path)
        if seg is None:
            continue
        if seg.name in names:
            ctx.error(path + (i, "name"), f"duplicate segment name {seg.name!r} (also "
                                          f"segments[{names[seg.name]}]); names must be unique")
            continue
        names[seg.name] = i
        out.append(seg)
    return tuple(out)


def _segment(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any],
             by_path: dict[tuple[str, ...], Any]) -> SegmentConfig | None:
    if isinstance(value, str):  # shorthand: the path alone
        value = {"path": value}
    sec = ctx.section(value, path, SEGMENT_KEYS, "{path: region, top_k: 10}")
    if sec is None:
        return None
    field: Any = BAD
    if get_key(sec, "path") is ABSENT:
        ctx.error(path + ("path",), "required: the dotted path of a categorical event field, "
                                    "e.g. region or features.country")
    else:
        field = ctx.key_path(sec["path"], path + ("path",))
    if not isinstance(field, Bad):
        col = by_path.get(field)
        if col is not None and getattr(col, "type", None) != "categorical":
            ctx.error(path + ("path",), f"{'.'.join(field)} is the {col.type} column "
                                        f"{col.name!r}; a segment field must be categorical "
                                        f"(a tenant, a country, ...)")
            field = BAD
    name: Any
    if get_key(sec, "name") is not ABSENT:
        name = ctx.string(sec["name"], path + ("name",))
    elif isinstance(field, tuple):
        name = field[-1]
    else:
        name = BAD
    if isinstance(name, str) and not _NAME_RE.match(name):
        hint = "" if get_key(sec, "name") is not ABSENT else \
            " (the last part of path); set name: explicitly"
        name = ctx.error(path + ("name",), f"{name!r} is not a valid segment name{hint}: use "
                                           f"letters, digits and underscores")
    kw: dict[str, Any] = {}
    if get_key(sec, "top_k") is not ABSENT:
        kw["top_k"] = ctx.integer(sec["top_k"], path + ("top_k",), 1, MAX_TOP_K)
    if get_key(sec, "min_reference_events") is not ABSENT:
        kw["min_reference_events"] = ctx.integer(
            sec["min_reference_events"], path + ("min_reference_events",), 100, 100_000_000)
    if get_key(sec, "columns") is not ABSENT:
        kw["columns"] = _columns(ctx, sec["columns"], path + ("columns",), columns)
    if isinstance(name, Bad) or isinstance(field, Bad) or any(isinstance(v, Bad)
                                                                for v in kw.values()):
        return None
    return SegmentConfig(name=name, path=field, **kw)


def _columns(ctx: Ctx, value: Any, path: KeyPath, columns: dict[str, Any],
             ) -> tuple[str, ...] | Bad:
    if not isinstance(value, list) or not value:
        return ctx.error(path, f"must be a non-empty list of the model's column names "
                               f"({', '.join(columns)}), got {type_name(value)}")
    out: list[str] = []
    for j, name in enumerate(value):
        if not isinstance(name, str) or name not in columns:
            return ctx.error(path + (j,), f"{name!r} is not a column of this model"
                                          f"{suggest(name, list(columns))}; use one of "
                                          f"{', '.join(columns)}")
        if name not in out:
            out.append(name)
    return tuple(out)


#: the share of a model's false-alarm rate its model-wide monitor keeps when it has segments
GLOBAL_SHARE = 0.5


def segment_budget(n_segments: int) -> tuple[float, float]:
    """(factor of ``false_alarm_events`` for the model-wide monitor, factor for each segment
    value's monitor) of a model with ``n_segments`` segment fields: the model-wide monitor
    keeps :data:`GLOBAL_SHARE` of the rate, each field an equal share of the rest, and a
    value's monitor counts in its own events (see :mod:`stream.engine.segments`).

    >>> segment_budget(0), segment_budget(2)
    ((1.0, 1.0), (2.0, 4.0))
    """
    if n_segments <= 0:
        return 1.0, 1.0
    return 1.0 / GLOBAL_SHARE, n_segments / (1.0 - GLOBAL_SHARE)
