"""The start-up log says where consumption starts and how many messages lie before it
(issue 17, item 4): a newcomer's ``run`` with the default ``auto_offset_reset: latest`` on a
topic that already holds events is told that they are not read, and how to read them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, COLUMNS, m1_events
from tests.support.kafka import produce
from tests.support.runs import InProcess, cached_baselines

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class Starts(logging.Handler):
    """The runner's "consumption starts" log records."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("consumption starts"):
            self.records.append(record)


@pytest.fixture
def starts() -> Iterator[Starts]:
    handler = Starts()
    logger = logging.getLogger("streamdrift.run")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("start")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(5, [(5_000, CLEAN)], COLUMNS)))
    return d


@pytest.fixture(scope="module")
def baselines() -> Callable[[Any], dict[str, Any]]:
    return cached_baselines()


def _run(workdir: Path, bootstrap: str, topic: str, group: str, reset: str | None,
         baselines: Callable[[Any], dict[str, Any]], starts: Starts, client: str,
         then: Callable[[InProcess], bool] = lambda run: True) -> logging.LogRecord:
    kafka: dict[str, Any] = {"poll_timeout_ms": 200, "client": client}
    if reset is not None:
        kafka["auto_offset_reset"] = reset
    cfg = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=0, kafka=kafka,
                    state={"enabled": False})
    if reset is None:  # the default, as a newcomer leaves it
        del cfg["source"]["kafka"]["auto_offset_reset"]
    path = write_config(workdir / f"{group}.yaml", cfg)
    before = len(starts.records)
    run = InProcess(path, baselines, group).start()
    try:
        deadline = time.monotonic() + 90
        while (len(starts.records) == before or not then(run)) and time.monotonic() < deadline:
            assert run.alive()
            time.sleep(0.1)
    finally:
        run.stop()
    assert len(starts.records) > before, f"{group}: no start line logged"
    return starts.records[before]


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_start_up_log_says_where_consumption_starts(kafka_bootstrap, kafka_topic, workdir,
                                                        baselines, starts, client) -> None:
    topic = kafka_topic
    events = m1_events(6, [(60, CLEAN)], COLUMNS)
    produce(kafka_bootstrap, topic, events[:40])
    name = f"{topic}/0"

    # a newcomer: the default (latest) starts at the end, and the line says what is skipped
    sent = []

    def read_new(run: InProcess) -> bool:
        if not sent:
            # librdkafka resolves "latest" once it fetches, after the line is logged: give
            # it time, so that these messages come after its start
            time.sleep(1.0)
            produce(kafka_bootstrap, topic, events[40:])
            sent.append(True)
        return run.pipeline.consumed >= 20

    rec = _run(workdir, kafka_bootstrap, topic, f"{topic}-g1", None, baselines, starts,
               client, read_new)
    part: Any = rec.partitions[name]  # type: ignore[attr-defined]
    assert part == {"offset": 40, "from": "auto_offset_reset latest", "before": 40,
                    "backlog": 0}
    message = rec.getMessage()
    assert "40 messages already in the topic are not read" in message
    assert "auto_offset_reset: earliest" in message

    # the same group again: from its committed offset, 60 messages before, nothing new
    rec = _run(workdir, kafka_bootstrap, topic, f"{topic}-g1", None, baselines, starts, client)
    assert rec.partitions[name] == {  # type: ignore[attr-defined]
        "offset": 60, "from": "committed", "before": 60, "backlog": 0}
    assert "not read" not in rec.getMessage()

    # earliest: everything is read
    rec = _run(workdir, kafka_bootstrap, topic, f"{topic}-g2", "earliest", baselines, starts,
               client, lambda run: run.pipeline.consumed >= 60)
    assert rec.partitions[name] == {  # type: ignore[attr-defined]
        "offset": 0, "from": "auto_offset_reset earliest", "before": 0, "backlog": 60}
    assert rec.messages_before == 0 and rec.backlog == 60  # type: ignore[attr-defined]
