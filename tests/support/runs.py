"""``streamdrift run`` in the test process: a runner on a thread, what it logged, and the
broker-side state a test checks (committed offsets, checkpoints)."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from stream.config import Config, load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.runner import KafkaRunner
from stream.sinks.checkpoints import StateStore
from stream.sources.kafka import kafka_client_kwargs

__all__ = ["AlarmLog", "InProcess", "alarm_log_handler", "checkpoints", "committed"]


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset ``group`` committed there."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        got = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in got.items() if om.offset >= 0}


def checkpoints(config: Config) -> dict[tuple[str, str, int], Any]:
    """(model, topic, partition) -> the newest checkpoint of ``config``'s group."""
    k = config.source.kafka
    assert k is not None
    store = StateStore(kafka_client_kwargs(k), config.state.topic, k.group_id)
    try:
        return store.read(timeout_s=20)
    finally:
        store.close()


class AlarmLog(logging.Handler):
    """Collects (model, feature, detector, offset) of every "drift alarm" log line, per
    thread name (an :class:`InProcess` run logs on its thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.alarms: dict[str, set[tuple[str, str, str, int]]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "drift alarm":
            a = record.__dict__
            self.alarms.setdefault(record.threadName or "", set()).add(
                (a["model"], a["feature"], a["detector"], a["offset"]))


def alarm_log_handler() -> Iterator[AlarmLog]:
    """An :class:`AlarmLog` on the runner's logger while the generator runs (a fixture body)."""
    handler = AlarmLog()
    logger = logging.getLogger("streamdrift.run")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


class InProcess:
    """A KafkaRunner on its own thread, with its Pipeline at hand."""

    def __init__(self, config_path: Path, baselines: Callable[[Config], dict[str, Any]],
                 name: str, runner_class: type[KafkaRunner] = KafkaRunner) -> None:
        self.config = load_config(config_path)
        self.pipeline = Pipeline(self.config, baselines(self.config))
        self.stop_event = threading.Event()
        self.runner = runner_class(self.config, self.pipeline, self.stop_event)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self.runner.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def start(self) -> InProcess:
        self.thread.start()
        return self

    def alive(self) -> bool:
        if self.error is not None:
            raise AssertionError(f"runner {self.thread.name} failed: {self.error!r}")
        return self.thread.is_alive()

    def partitions(self) -> dict[tuple[str, int], dict[str, Any]]:
        return {key: dataclasses.asdict(fig)
                for key, fig in self.pipeline.snapshot().partitions.items()}

    def describe(self) -> str:
        snap = self.pipeline.snapshot()
        r = self.runner
        health = r.health.snapshot()
        return (f"{self.thread.name}: consumed {snap.consumed}, partitions "
                f"{snap.partitions}, restores {health.restores}, checkpoints "
                f"{health.checkpoints}, source_up {health.source_up}, done {r.done}, "
                f"committed {r.committed}, to_restore {r.to_restore}, pending "
                f"{r.pending is not None}, alive {self.thread.is_alive()}")

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), f"runner {self.thread.name} did not stop"
        if self.error is not None:
            raise AssertionError(f"runner {self.thread.name} failed: {self.error!r}")


def cached_baselines() -> Callable[[Config], dict[str, Any]]:
    """Baselines for in-process runs of model m1: the first call builds and caches them
    on disk (beside the config, where subprocess runs find them too), later calls reuse
    them."""
    cache: dict[str, Any] = {}

    def get(config: Config) -> dict[str, Any]:
        if "m1" not in cache:
            cache.update(resolve_baselines(config))
        return cache

    return get

