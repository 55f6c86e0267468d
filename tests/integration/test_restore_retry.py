"""A partition whose state restore fails is read again once the restore works, with both
clients, while the consumer's other partitions are read meanwhile (real broker).

``_restore_failed`` used to pause the partition and resume it once its restore worked.
kafka-python 3.0.12 parks what it fetched for a paused partition and hands it back only
when no other partition's records are in line; with another partition read meanwhile that
never happens, and a partition with parked records is not fetched again: it was never read
again.  On the code before the fix this test consumed 1,800 of 3,000 events (partition 0's
1,500 and the 300 of partition 1 read before its restore failed) and then nothing for 60 s
with kafka-python; confluent-kafka passed.  The failure is injected while kafka-python
holds partly read records of partition 1 in line (:func:`_in_line`), and partition 0 is
kept live, the two conditions of the stall: without them the test caught the old code in
3 of 5 runs; with them in 7 of 7 (partition 1 at 300 of 1,500 after 60 s).  Now, with kafka-python, the partition is not
paused: what a poll returns for it is given back (sought to) at every iteration until the
restore works.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.config import Config
from stream.engine.baselines import resolve_baselines
from stream.runtime.runner import KafkaRunner
from tests.integration.test_codecs import InProcess, _config
from tests.support.events import CLEAN, m1_events
from tests.support.kafka import EventProducer, produce
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

PER_PARTITION = 1_500
FAILURES = 3


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("restore-retry")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(99, [(5_000, CLEAN)])))
    return d


@pytest.fixture(scope="module")
def baselines(workdir: Path) -> Callable[[Config], dict[str, Any]]:
    cache: dict[str, Any] = {}

    def get(config: Config) -> dict[str, Any]:
        if not cache:
            cache.update(resolve_baselines(config))
        return cache

    return get


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_a_partition_whose_restore_failed_is_read_again(
        kafka_bootstrap: str, make_topic: Callable[..., str], workdir: Path,
        baselines: Callable[[Config], dict[str, Any]], client: str) -> None:
    topic = make_topic(partitions=2)
    state_topic = make_topic(partitions=1)
    for partition, seed in ((0, 1), (1, 2)):
        produce(kafka_bootstrap, topic, m1_events(seed, [(PER_PARTITION, CLEAN)]),
                partition=partition)
    cfg = _config(workdir, kafka_bootstrap, topic, client,
                  state={"topic": state_topic, "checkpoint_interval_s": 0.5})
    # partition 1 is assigned again to this consumer once 300 of its events were read (as a
    # rebalance that gives it back does: kafka-python keeps its fetch position and what it
    # fetched), and that restore fails FAILURES times (a state topic briefly unreadable
    # for it) while partition 0 is read
    failures: list[int] = []
    read_1: list[int] = [0]
    given_back: list[int] = []

    def flaky_restores(runner: KafkaRunner) -> None:
        real_restore, real_process = runner._restore_one, runner._process

        def flaky(tp: Any, latest: Any, polled: Any) -> None:
            if tp.partition == 1 and given_back and len(failures) < FAILURES:
                failures.append(1)
                raise RuntimeError("injected: the state topic cannot be read for it")
            real_restore(tp, latest, polled)

        def process(polled: dict[Any, list[Any]]) -> Any:
            for tp, recs in polled.items():
                if tp.partition == 1 and not given_back:
                    read_1[0] += len(recs)
                    if read_1[0] >= 300 and _in_line(runner, tp):
                        given_back.append(read_1[0])
                        runner.to_restore.add(tp)
            return real_process(polled)

        runner._restore_one = flaky  # type: ignore[method-assign]
        runner._process = process  # type: ignore[method-assign]

    # partition 0 stays live (a steady producer): its records are always next in line, as
    # on a real topic; once it ran dry, kafka-python sometimes handed the parked records
    # back and the old code passed
    live = EventProducer(kafka_bootstrap, topic, rate=500, seed=3, partition=0)
    live.start()
    run = InProcess(cfg, baselines, patch=flaky_restores)

    def read_of_1() -> int:
        return max((off for tp, off in list(run.runner.done.items()) if tp.partition == 1),
                   default=0)

    try:
        wait_for(lambda: read_of_1() >= PER_PARTITION, timeout=60,
                 message=f"every event of partition 1 processed ({client})",
                 alive=run.alive, retry=(),
                 details=lambda: f"partition 1 at {read_of_1()} of {PER_PARTITION}, consumed "
                                 f"{run.runner.consumed}, live events {live.events}, restore "
                                 f"failures injected: {len(failures)}")
    finally:
        run.stop()
        live.halt.set()
        live.join(timeout=30)
    assert given_back, "partition 1 was never given back with records of it in line"
    assert len(failures) == FAILURES


def _in_line(runner: KafkaRunner, tp: Any) -> bool:
    """Whether the restore may fail now: with kafka-python, only while the fetcher holds
    partly read records of ``tp`` in line (what the poll returned was not all it fetched),
    the condition under which pausing parked them.  confluent-kafka has no such state: at
    once."""
    fetcher = getattr(runner.consumer, "_fetcher", None)
    if fetcher is None:
        return True
    part = fetcher._next_partition_records
    return bool(part) and part.topic_partition == tp
