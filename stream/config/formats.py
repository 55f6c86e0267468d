"""``source.format`` and its sections: ``source.open_inference`` and ``source.avro``.

``json`` (the default) is one JSON object per message, columns at key paths.
``open-inference`` reads Open Inference Protocol (KServe / Seldon Core 2, "v2") requests
and responses: column paths name tensors (``inputs.<tensor>`` or
``inputs.<tensor>.<column>``; ``outputs.`` for the response), and ``select.field`` and
``source.timestamp.path`` name a field of the joined request/response (one segment:
``model_name``, ``id``, a CloudEvents header such as ``ce-time``, ...).
``avro`` reads the Confluent wire format (magic byte 0, 4-byte schema id, Avro body)
into records whose fields the column paths name, as in JSON.

>>> from stream.config import parse_config
>>> cfg = parse_config({"source": {"format": "open-inference"},
...     "models": [{"name": "m", "baseline": {"file": "b.json"},
...                 "features": [{"name": "x", "path": "inputs.x", "type": "numeric"}]}]}, "/")
>>> cfg.source.format, cfg.source.open_inference.max_pending
('open-inference', 100000)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from stream.config.keys import ABSENT, BAD, Bad, Ctx, KeyPath, format_key_path, get_key, type_name

__all__ = ["FORMATS", "AvroConfig", "OpenInferenceConfig", "check_format", "parse_format"]

#: the message formats ``source.format`` takes
FORMATS: Final = ("json", "open-inference", "avro")
#: the keys of ``source`` this module reads
FORMAT_KEYS: Final = ("format", "open_inference", "avro")
_OIP_KEYS: Final = ("max_pending", "timeout_s", "request_topics", "response_topics")
_AVRO_KEYS: Final = ("registry_url", "schemas", "timeout_s")
#: the two sides of an inference: the request's ``inputs`` and the response's ``outputs``
OIP_SIDES: Final = ("inputs", "outputs")
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True, slots=True)
class OpenInferenceConfig:
    """How Open Inference Protocol requests and responses are joined into rows."""

    #: request/response halves held while waiting for the other half (the oldest expires
    #: first, counted as ``unjoined_request`` / ``unjoined_response``)
    max_pending: int = 100_000
    #: a half held longer than this (seconds, processing time) expires unjoined
    timeout_s: float = 300.0
    #: topics whose messages are requests / responses (two-topic deployments); topics
    #: ending in ``.inputs`` / ``.outputs`` (Seldon Core 2) need not be listed
    request_topics: tuple[str, ...] = ()
    response_topics: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AvroConfig:
    """Where the writer schemas of Confluent wire-format messages come from."""

    #: a Confluent-compatible schema registry (``GET /schemas/ids/{id}``), e.g.
    #: ``http://registry:8081`` or Apicurio's ``http://registry:8080/apis/ccompat/v7``
    registry_url: str | None = None
    #: schema id -> ``.avsc`` file, used before (or instead of) the registry
    schemas: Mapping[int, Path] = field(default_factory=lambda: MappingProxyType({}))
    #: timeout of one registry request, seconds
    timeout_s: float = 5.0


def parse_format(ctx: Ctx, sec: Mapping[str, Any]) -> dict[str, Any]:
    """The ``format``, ``open_inference`` and ``avro`` keys of the ``source`` section, as
    keyword arguments of :class:`~stream.config.tree.SourceConfig`."""
    path: KeyPath = ("source",)
    out: dict[str, Any] = {}
    fmt: Any = "json"
    if get_key(sec, "format") is not ABSENT:
        fmt = ctx.string(sec["format"], path + ("format",), choices=FORMATS)
        if isinstance(fmt, str):
            out["format"] = fmt
    if get_key(sec, "open_inference") is not ABSENT:
        where = path + ("open_inference",)
        if fmt != "open-inference" and isinstance(fmt, str):
            ctx.error(where, f"applies to source.format open-inference only (format is {fmt}); "
                      "set source.format: open-inference or remove this section")
        else:
            oip = _open_inference(ctx, sec["open_inference"], where)
            if oip is not None:
                out["open_inference"] = oip
    elif fmt == "open-inference":
        out["open_inference"] = OpenInferenceConfig()
    if get_key(sec, "avro") is not ABSENT:
        where = path + ("avro",)
        if fmt != "avro" and isinstance(fmt, str):
            ctx.error(where, f"applies to source.format avro only (format is {fmt}); "
                      "set source.format: avro or remove this section")
        else:
            avro = _avro(ctx, sec["avro"], where)
            if avro is not None:
                out["avro"] = avro
    elif fmt == "avro":
        ctx.error(path + ("avro",), "required with source.format avro: where the writer "
                  "schemas come from, e.g. {registry_url: \"http://registry:8081\"} or "
                  "{schemas: {1: events-v1.avsc}}")
    return out


def _open_inference(ctx: Ctx, value: Any, path: KeyPath) -> OpenInferenceConfig | None:
    sec = ctx.section(value, path, _OIP_KEYS, "{max_pending: 100000, timeout_s: 300}")
    if sec is None:
        return None
    kw: dict[str, Any] = {}
    if get_key(sec, "max_pending") is not ABSENT:
        kw["max_pending"] = ctx.integer(sec["max_pending"], path + ("max_pending",), 1,
                                        10_000_000)
    if get_key(sec, "timeout_s") is not ABSENT:
        kw["timeout_s"] = ctx.real(sec["timeout_s"], path + ("timeout_s",), minimum=0.0,
                                   strict=True)
    for key in ("request_topics", "response_topics"):
        if get_key(sec, key) is not ABSENT:
            kw[key] = _topics(ctx, sec[key], path + (key,))
    if any(isinstance(v, Bad) for v in kw.values()):
        return None
    both = set(kw.get("request_topics", ())) & set(kw.get("response_topics", ()))
    if both:
        ctx.error(path + ("response_topics",), f"{sorted(both)} also in request_topics; a "
                  "topic carries requests, responses, or both (then list it in neither)")
        return None
    return OpenInferenceConfig(**kw)


def _topics(ctx: Ctx, value: Any, path: KeyPath) -> tuple[str, ...] | Bad:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        return ctx.error(path, f"must be a list of topic names, got {type_name(value)}")
    bad = [t for t in value if not _TOPIC_RE.match(t)]
    if bad:
        return ctx.error(path, f"{bad} are not valid Kafka topic names")
    return tuple(value)


def _avro(ctx: Ctx, value: Any, path: KeyPath) -> AvroConfig | None:
    example = '{registry_url: "http://registry:8081"} or {schemas: {1: events-v1.avsc}}'
    sec = ctx.section(value, path, _AVRO_KEYS, example)
    if sec is None:
        return None
    kw: dict[str, Any] = {}
    if get_key(sec, "registry_url") is not ABSENT:
        url = ctx.string(sec["registry_url"], path + ("registry_url",))
        if isinstance(url, str) and not re.match(r"^https?://[^\s/]+", url):
            url = ctx.error(path + ("registry_url",), f"must be an http:// or https:// URL, "
                            f"got {url!r}")
        kw["registry_url"] = url.rstrip("/") if isinstance(url, str) else url
    if get_key(sec, "schemas") is not ABSENT:
        kw["schemas"] = _schema_files(ctx, sec["schemas"], path + ("schemas",))
    if get_key(sec, "timeout_s") is not ABSENT:
        kw["timeout_s"] = ctx.real(sec["timeout_s"], path + ("timeout_s",), minimum=0.0,
                                   strict=True)
    if any(isinstance(v, Bad) for v in kw.values()):
        return None
    if kw.get("registry_url") is None and not kw.get("schemas"):
        ctx.error(path, f"needs registry_url or schemas (or both), e.g. {example}")
        return None
    return AvroConfig(**kw)


def _schema_files(ctx: Ctx, value: Any, path: KeyPath) -> Mapping[int, Path] | Bad:
    if not isinstance(value, Mapping) or not value:
        return ctx.error(path, f"must be a mapping of schema id to .avsc file, e.g. "
                         f"{{1: events-v1.avsc}}; got {type_name(value)}")
    out: dict[int, Path] = {}
    ok = True
    for key, file in value.items():
        where = path + (key,)
        number = ctx.integer(key, where, 0, 2**31 - 1)
        resolved = ctx.file_path(file, where, must_exist=True)
        if isinstance(number, Bad) or isinstance(resolved, Bad):
            ok = False
            continue
        out[number] = resolved
    return MappingProxyType(out) if ok else BAD


def check_format(ctx: Ctx, source: Any, models: Any) -> None:
    """Errors for settings the format cannot serve (column paths, select rules, timestamps,
    the repartition stage), named by key path."""
    fmt = getattr(source, "format", "json")
    if fmt == "json" or not isinstance(models, tuple):
        return
    if getattr(source, "repartition", None) is not None:
        ctx.error(("source", "repartition"), f"is not supported with source.format {fmt} "
                  "yet; remove it (or produce JSON events)")
    for i, model in enumerate(models):
        if getattr(model, "labels", None) is not None:  # the join reads ids of JSON events
            ctx.error(("models", i, "labels"), f"is not supported with source.format {fmt} "
                      "yet; remove it (or produce JSON events)")
    if fmt != "open-inference":
        return
    ts = getattr(source, "timestamp", None)
    if ts is not None and len(ts.path) != 1:
        ctx.error(("source", "timestamp", "path"), _field_hint(ts.path))
    for i, model in enumerate(models):
        select = getattr(model.select, "field", None)
        if isinstance(select, tuple) and len(select) != 1:
            ctx.error(("models", i, "select", "field"), _field_hint(model.select.field))
        for role, columns in (("features", model.features), ("predictions", model.predictions)):
            for j, column in enumerate(columns):
                problem = tensor_path_problem(column.path) \
                    if isinstance(column.path, tuple) else None
                if problem:
                    ctx.error(("models", i, role, j, "path"), problem)
        for vector in getattr(model, "vectors", ()):  # embedding columns (#19)
            vpath = vector.path
            if isinstance(vpath, tuple) and not (len(vpath) == 2 and vpath[0] == "inputs"):
                ctx.error(("models", i, "features"),
                          f"vector column {vector.name!r}: with source.format open-inference "
                          f"its path names a request tensor of shape [n, dim], "
                          f"inputs.<tensor> (each row's dim values are one vector); got "
                          f"{format_key_path(vpath)!r}")


def _field_hint(path: tuple[str, ...]) -> str:
    return (f"with source.format open-inference this names one field of the request or "
            f"response (model_name, model_version, id, or a CloudEvents header such as "
            f"ce-time, ce-source, ce-inferenceservicename), got {format_key_path(path)!r}")


def tensor_path_problem(path: tuple[str, ...]) -> str | None:
    """Why ``path`` names no tensor column (None when it does).

    >>> tensor_path_problem(("inputs", "features", "3")) is None
    True
    >>> tensor_path_problem(("features", "x"))[:39]
    'with source.format open-inference a col'
    """
    ok = (len(path) in (2, 3) and path[0] in OIP_SIDES
          and (len(path) == 2 or (path[2].isascii() and path[2].isdigit())))
    if ok:
        return None
    return ("with source.format open-inference a column path names a tensor of the request "
            "(inputs.<tensor>) or of the response (outputs.<tensor>), and for a tensor of "
            "several columns the column's 0-based index (inputs.<tensor>.3); a dot inside a "
            f"tensor name is written \\. ; got {format_key_path(path)!r}")
