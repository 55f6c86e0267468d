"""Feed streamdrift monitors from a Faust (faust-streaming) agent.

streamdrift's own runtime (``streamdrift run``) stays on kafka-python; this adapter is for
teams whose inference events already flow through a Faust app.  Inside an agent::

    monitor = StreamdriftSink("streamdrift.yaml")        # serves /metrics as `run` does

    @app.agent(events_topic)
    async def watch(stream):
        async for events in stream.take_events(500, within=1.0):
            monitor.process_events(events)

:meth:`StreamdriftSink.process_events` keeps detector state per source partition
(``event.message.topic``/``partition``), as ``streamdrift run`` does, which is right when
the topic's partitions are statistically alike (null keys, or keys hashed from ids).  For
a topic keyed by a feature (tenant, region, country...) re-key it first
(``stream.group_by(lambda v: <event id>, name=...)``) so that every partition is
representative.  :meth:`StreamdriftSink.process` takes plain values (one logical monitor
per model in this process, or a partition you name).

Guarantees, with Faust's own commit model (see docs/faust.md): ``take``/``take_events``
acknowledge a batch's events after the loop body returns, and Faust commits acknowledged
offsets every ``broker_commit_interval`` (2.8 s) or ``broker_commit_every`` events, so a
crash replays at most that much (at-least-once, bounded duplicates).  Detector state lives
in memory: a restarted worker, or one that is given a partition in a rebalance, starts that
partition's monitors fresh (no checkpoints; :meth:`StreamdriftSink.attach` drops the state
of revoked partitions).  faust is never imported here: events are duck-typed, so this
module loads without it (``pip install 'streamdrift[faust]'`` for the tested version).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from stream.config import Config, load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.episodes import Detection
from stream.engine.figures import PartitionKey
from stream.engine.pipeline import LOCAL_PARTITION, Pipeline

log = logging.getLogger("streamdrift.faust")


def raw_value(value: Any) -> bytes:
    """The JSON bytes of one event value as a Faust stream yields it.

    ``bytes`` (``value_serializer="raw"``, the fast path) pass through; ``str`` is
    encoded; a mapping (``value_serializer="json"``) or a ``faust.Record`` (its
    ``asdict()``) is serialised again with orjson.

    Examples
    --------
    >>> raw_value(b'{"x": 1}')
    b'{"x": 1}'
    >>> raw_value({"model": "m1", "f": {"x1": 0.5}})
    b'{"model":"m1","f":{"x1":0.5}}'
    """
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    asdict = getattr(value, "asdict", None)
    if callable(asdict):
        value = asdict()
    return orjson.dumps(value, default=str)


def by_partition(events: Iterable[Any]) -> dict[PartitionKey, list[Any]]:
    """Group Faust events by ``(message.topic, message.partition)``, in arrival order.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> evs = [NS(value=b"a", message=NS(topic="t", partition=1, offset=7)),
    ...        NS(value=b"b", message=NS(topic="t", partition=0, offset=3)),
    ...        NS(value=b"c", message=NS(topic="t", partition=1, offset=8))]
    >>> {k: [e.value for e in v] for k, v in by_partition(evs).items()}
    {('t', 1): [b'a', b'c'], ('t', 0): [b'b']}
    """
    out: dict[PartitionKey, list[Any]] = {}
    for ev in events:
        msg = ev.message
        out.setdefault((str(msg.topic), int(msg.partition)), []).append(ev)
    return out


class StreamdriftSink:
    """streamdrift monitors fed from Faust agents, with metrics on the usual exporter.

    Parameters
    ----------
    config
        A streamdrift configuration file (``models``, ``detection``, ``metrics``; the
        ``source`` section is not used: Faust is the source), or a loaded :class:`Config`.
    serve_metrics
        Serve ``/metrics`` on ``metrics.host``:``metrics.port`` of the configuration (``port``
        overrides the port; 0 picks a free one, :attr:`metrics_port` tells which).
    pipeline
        An already built :class:`Pipeline` (tests); default: one built from ``config`` with
        its baselines (loaded from file, or built from reference data and cached).

    Examples
    --------
    The events of a ``take_events`` batch, grouped into per-partition calls:

    >>> from types import SimpleNamespace as NS
    >>> class Recorder:  # stands in for a Pipeline
    ...     calls = []
    ...     def process(self, values, base_index, partition, offset_of):
    ...         self.calls.append((partition, values, offset_of(0)))
    ...         return [], None
    >>> sink = StreamdriftSink(None, serve_metrics=False, pipeline=Recorder())
    >>> evs = [NS(value=b"{}", message=NS(topic="t", partition=p, offset=o))
    ...        for p, o in [(0, 5), (1, 9), (0, 6)]]
    >>> sink.process_events(evs)
    []
    >>> sink.pipeline.calls
    [(('t', 0), [b'{}', b'{}'], 5), (('t', 1), [b'{}'], 9)]
    """

    def __init__(self, config: str | os.PathLike[str] | Config | None, *,
                 serve_metrics: bool = True, port: int | None = None,
                 pipeline: Pipeline | Any | None = None) -> None:
        if pipeline is None:
            if config is None:
                raise ValueError("StreamdriftSink needs a configuration (file or Config) "
                                 "unless a pipeline is given")
            cfg = config if isinstance(config, Config) else load_config(Path(config))
            pipeline = Pipeline(cfg, resolve_baselines(cfg))
        self.pipeline = pipeline
        self.server: Any = None
        self.metrics_port: int | None = None
        if serve_metrics:
            from stream.sinks.metrics import serve

            metrics = pipeline.config.metrics
            self.server, _thread, self.metrics_port = serve(
                pipeline, metrics.host, metrics.port if port is None else port)
            log.info("metrics served", extra={
                "url": f"{getattr(self.server, 'scheme', 'http')}://{metrics.host}:"
                       f"{self.metrics_port}/metrics"})
        #: input index of the next event (detections carry it, as in ``run``)
        self.consumed = 0

    # -- feeding -------------------------------------------------------------------------
    def process(self, values: Sequence[Any], partition: PartitionKey = LOCAL_PARTITION,
                offsets: Sequence[int] | None = None) -> list[Detection]:
        """Process one batch of event values (``take`` yields them) of one partition.

        Without ``partition`` all calls feed one logical monitor per model: right for a
        stream re-keyed uniformly (``group_by`` on an event id) or a single-partition topic.
        Returns the drift alarms (detector episodes opened) in the batch.
        """
        if not values:
            return []
        raw = [raw_value(v) for v in values]
        offset_of: Callable[[int], int] | None = None
        if offsets is not None:
            offs = list(offsets)
            offset_of = offs.__getitem__
        found, _batch = self.pipeline.process(raw, base_index=self.consumed,
                                              partition=partition, offset_of=offset_of)
        self.consumed += len(raw)
        for d in found:
            log.info("drift alarm", extra={**d.to_dict(), "topic": partition[0],
                                           "partition": partition[1], "offset": d.offset})
        return list(found)

    def process_events(self, events: Sequence[Any]) -> list[Detection]:
        """Process Faust events (``take_events`` yields them), partition by partition.

        Detector state is kept per ``(topic, partition)`` of the events, so it follows the
        partition as ``streamdrift run``'s does.  Returns the drift alarms of the batch.
        """
        found: list[Detection] = []
        for key, evs in by_partition(events).items():
            found += self.process([ev.value for ev in evs], key,
                                  [int(ev.message.offset) for ev in evs])
        return found

    # -- rebalances and shutdown ------------------------------------------------------------
    def drop(self, topic: str, partition: int) -> bool:
        """Forget the monitors of ``(topic, partition)`` (their counts stay exported)."""
        return bool(self.pipeline.drop_partition((str(topic), int(partition))))

    def attach(self, app: Any) -> None:
        """Drop the state of partitions ``app`` revokes (Faust's ``on_partitions_revoked``
        signal), so that the exported figures are those of the partitions it holds."""
        sink = self

        async def on_revoked(sender: Any, revoked: Iterable[Any], **_: Any) -> None:
            for tp in revoked:
                sink.drop(tp.topic, tp.partition)

        app.on_partitions_revoked.connect(on_revoked)
        self._on_revoked = on_revoked  # the signal may keep weak references

    def close(self) -> None:
        """Stop serving ``/metrics``."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None
