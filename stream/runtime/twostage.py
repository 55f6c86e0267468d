"""``streamdrift run`` with ``source.repartition``: both stages in one process.

The first stage (repartition.py; with ``source.kafka.client: confluent-kafka`` its records
are fetched by librdkafka, rdfetch.py) runs on a thread of its own, the monitors
(monitors.py) on the calling thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from stream.config import Config
from stream.engine.pipeline import Pipeline
from stream.runtime.monitors import FramedRunner, monitor_config
from stream.runtime.rdfetch import LibrdkafkaRepartitioner
from stream.runtime.repartition import Repartitioner
from stream.runtime.writers import ALIGN_SHARE, Alignment
from stream.sources.groupjoin import rejoining
from stream.sources.kafka import connection_error

log = logging.getLogger("streamdrift.repartition")


def first_stage(config: Config, pipeline: Pipeline,
                stop: threading.Event | None = None) -> Repartitioner:
    """The first stage for ``config``: records fetched by librdkafka when
    ``source.kafka.client`` is confluent-kafka, by kafka-python otherwise."""
    k = config.source.kafka
    if k is not None and k.client == "confluent-kafka":
        return LibrdkafkaRepartitioner(config, pipeline, stop)
    return Repartitioner(config, pipeline, stop)


class TwoStageRunner(FramedRunner):
    """``streamdrift run`` with ``source.repartition``: the monitors (a
    :class:`FramedRunner` on the repartition topic, :func:`monitor_config`) on the calling
    thread, :class:`Repartitioner` on a thread of its own; either stopping stops both, and
    ``health`` includes the first stage's figures."""

    def __init__(self, config: Config, pipeline: Pipeline,
                 stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        super().__init__(monitor_config(config), pipeline, stop)
        self.repartitioner = first_stage(config, pipeline, stop)
        self.health.upstream = self.repartitioner.health
        stage = self.repartitioner
        if stage.writer is not None:
            wid = stage.writer.writer_id
            stage.align = Alignment(stage.writer, self.writer_ahead,
                                    in_flight=lambda: self.in_flight(wid, stage.unread),
                                    rejoining=lambda: rejoining(stage.consumer))
            self._pm().alignment = stage.align  # (its series: merge_metrics.py)
            stage.view = self.has_view
            stage.writer.load = self.load
        #: the internal partitions these monitors hold (None: not assigned yet)
        self.monitors_held: set[Any] | None = None

    def in_flight(self, writer_id: bytes, unread: Callable[[int | None], int]) -> int | None:
        """The messages this process's writer forwarded that its monitors have not read
        yet (``unread(position)``: those forwarded after the largest position read there),
        as far as their partitions show: all of them until the monitors' first
        assignment (a process starting on a backlog would otherwise forward ahead of any
        view), None once assigned if they hold no partition with a frame of it."""
        seen = [s.get(writer_id) for s in list(self._pm().seen.values())]
        last = max((x for x in seen if x is not None), default=None)
        if last is None:
            return None if self.__dict__.get("monitors_held") is not None else unread(None)
        return unread(last)

    def load(self) -> tuple[int, bool]:
        """What this process does besides forwarding (balance.Load): whether it holds the
        pool.  Its monitors' internal partitions are left out (0): the monitors' group
        spreads them evenly once it settles, and while processes start they move within
        seconds (an assignment made on them gave one writer 2 source partitions of 8 for
        the 8 s until the next one)."""
        pool = self.__dict__.get("pool")
        return 0, pool is not None and pool.merge is not None

    def has_view(self) -> bool | None:
        """Whether these monitors hold an internal partition, so that the first stage's
        writer sees the merges (writers.Writer.check_view); None before their first
        assignment."""
        held = self.monitors_held
        return None if held is None else bool(held)

    def _on_assigned(self, assigned: set[Any]) -> None:
        self.monitors_held = set(self.monitors_held or ()) | set(assigned)
        super()._on_assigned(assigned)

    def _on_revoked(self, revoked: set[Any]) -> None:
        self.monitors_held = set(self.monitors_held or ()) - set(revoked)
        super()._on_revoked(revoked)

    def _on_lost(self, lost: set[Any]) -> None:
        self.monitors_held = set(self.monitors_held or ()) - set(lost)
        super()._on_lost(lost)

    def writer_ahead(self, generation: int, index: int) -> bool:
        """Whether a merge of these monitors, of ``generation``, holds at least
        ``ALIGN_SHARE`` of its bound while writer ``index`` leads there
        (:meth:`WriterMerge.leads`; writers.Alignment).  Called on the first stage's
        thread: a merge changing while it is read counts as not ahead."""
        for merge in list(self._pm().merges.values()):
            if merge.generation != generation or \
                    merge.buffered < ALIGN_SHARE * merge.max_buffered:
                continue
            try:
                if merge.leads(index):
                    return True
            except RuntimeError:  # (a dict or set changed size while copied)
                continue
        return False

    def run(self, max_events: int | None = None, idle_timeout: float | None = None) -> int:
        from kafka.errors import KafkaError

        first = self.repartitioner
        try:
            # before the monitors subscribe: a broker that creates topics on a metadata
            # request would otherwise create it with its default partition count
            first.ensure_topic()
        except KafkaError as exc:
            raise connection_error(first.kafka, exc) from None
        error: list[BaseException] = []

        def stage1() -> None:
            try:
                first.run()
            except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
                error.append(exc)
                log.error("the repartition stage failed: %s: %s", type(exc).__name__, exc)
                self.stop_event.set()

        thread = threading.Thread(target=stage1, name="repartition", daemon=True)
        thread.start()
        try:
            return super().run(max_events=max_events, idle_timeout=idle_timeout)
        finally:
            first.stop()
            thread.join(timeout=60)
            if error:
                raise error[0]
