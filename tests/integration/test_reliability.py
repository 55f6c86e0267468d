"""Reliability of `streamdrift run` on a real broker: kill -9, rebalance, broker restart, poison.

Each test prints its measured figures (``pytest -s`` shows them); docs/reliability.md
quotes them.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stream.config import Config, load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.runner import KafkaRunner
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, SHIFTED, Regime, m1_events, with_poison
from tests.support.kafka import produce
from tests.support.ports import free_port, free_ports
from tests.support.processes import StreamdriftRun
from tests.support.runs import (
    InProcess,
    cached_baselines,
    checkpoints,
    committed,
)
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STATE_TOPIC = "streamdrift-state"
COLUMNS = ("x1", "c1", "score")


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
#: regime 0: the baseline; 1: x1 and c1 drift; 2: x1 drifts the other way
REGIMES = (CLEAN, SHIFTED, Regime(x1_mean=-0.8))


def _events(seed: int, regimes: list[tuple[int, int]]) -> list[bytes]:
    """``regimes``: (count, regime) in order."""
    return m1_events(seed, [(n, REGIMES[regime]) for n, regime in regimes], COLUMNS)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reliability")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    return d


def _write_config(workdir: Path, bootstrap: str, topic: str, group: str, *,
                  interval: float = 1.0, dead_letter: str | None = None,
                  state_topic: str = STATE_TOPIC,
                  client: str = "kafka-python",
                  options: dict[str, Any] | None = None) -> tuple[Path, int]:
    port = free_port()
    config = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=port,
                       columns=COLUMNS,
                       kafka={"max_poll_records": 500, "poll_timeout_ms": 200,
                              "client": client, **({"options": options} if options else {})},
                       dead_letter=dead_letter,
                       state={"topic": state_topic, "checkpoint_interval_s": interval})
    return write_config(workdir / f"{group}.yaml", config), port


@pytest.fixture(scope="module")
def baselines(workdir: Path) -> Callable[[Config], dict[str, Any]]:
    """Baselines for in-process runs (after the module's reference file is written)."""
    return cached_baselines()


_produce = functools.partial(produce, linger_ms=5, acks="all")


_committed = committed
_checkpoints = checkpoints


#: every condition below checks its runner itself: its AssertionError fails the wait at once
_wait = functools.partial(wait_for, interval=0.1, retry=())


# --------------------------------------------------------------------------
# runs: a subprocess (for kill -9) and an in-process thread
# --------------------------------------------------------------------------
def _alarms(run: StreamdriftRun) -> set[tuple[str, str, str, int]]:
    """(model, feature, detector, offset) of every drift alarm ``run`` logged."""
    return {(a["model"], a["feature"], a["detector"], a["offset"])
            for a in run.logs("drift alarm")}


# --------------------------------------------------------------------------
# kill -9 mid-stream, restart
# --------------------------------------------------------------------------
#: both consumers of `streamdrift run` (confluent-kafka is in the test extra)
CLIENTS = pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])


@CLIENTS
def test_kill9_mid_stream_then_restart_resumes_from_the_checkpoint(
        kafka_bootstrap, make_topic, workdir, baselines, alarm_log, client):
    topic = make_topic(partitions=1)
    # drift at 5000, 11000 and 14000: alarms fall before the checkpoint, between the
    # checkpoint and the kill (raised again after the restart), and after the restart (the
    # third drift: the data after the kill must make alarms of its own, not rely on a
    # chance one)
    messages = _events(21, [(5000, 0), (6000, 1), (3000, 2), (6000, 1)])
    with_poison(messages, [b"{not json", b"[1, 2]", b'"str"'], 3000, 5000)
    total = len(messages)
    chunks = [messages[i:i + 1000] for i in range(0, total, 1000)]

    # B: a subprocess, checkpoint every 5 s, killed with SIGKILL mid-stream
    cfg_b, port_b = _write_config(workdir, kafka_bootstrap, topic, f"b-{topic}", interval=5,
                                  client=client)
    resolve_baselines(load_config(cfg_b))  # build the baseline cache before timing anything
    b1 = StreamdriftRun(cfg_b, port=port_b, name="b1")
    try:
        _produce(kafka_bootstrap, topic, [m for c in chunks[:11] for m in c])
        produced = sum(len(c) for c in chunks[:11])
        b1.wait_consumed(produced)
        # right after a checkpoint that covers everything so far ...
        _wait(lambda: any(r["offsets"].get(f"{topic}/0") == produced
                          for r in b1.logs("checkpoint written")), 30,
              "a checkpoint of everything consumed")
        seen_checkpoint = produced
        # ... two more chunks, consumed, and kill -9 before the next checkpoint (5 s)
        _produce(kafka_bootstrap, topic, [m for c in chunks[11:13] for m in c])
        produced += sum(len(c) for c in chunks[11:13])
        b1.wait_consumed(produced)
        killed_at = produced  # no more data: B1 had processed exactly this much
        b1.kill9()
    finally:
        if b1.proc.poll() is None:
            b1.kill9()
    b_config = load_config(cfg_b)
    cp = _checkpoints(b_config)[("m1", topic, 0)]
    committed = _committed(kafka_bootstrap, f"b-{topic}").get((topic, 0))
    assert seen_checkpoint <= cp.offset <= killed_at
    assert committed is not None and cp.offset <= committed <= killed_at

    # the rest of the stream, then the restart
    _produce(kafka_bootstrap, topic, [m for c in chunks[13:] for m in c])
    b2 = StreamdriftRun(cfg_b, port=port_b, name="b2")
    try:
        b2.wait_consumed(total - cp.offset, timeout=120)
        time.sleep(1.0)  # give it a chance to (wrongly) read more
        b2_consumed = int(b2.consumed())
    finally:
        b2.stop(check=True)
    restored = b2.logs("state restored")
    assert restored and restored[0]["offset"] == cp.offset, restored
    valid_before = sum(1 for m in messages[:cp.offset] if m.startswith(b'{"model"'))
    assert restored[0]["events"] == {"m1": valid_before}  # the state's count goes on

    # A: the same stream, uninterrupted (in-process, group a)
    cfg_a, _ = _write_config(workdir, kafka_bootstrap, topic, f"a-{topic}")
    a = InProcess(cfg_a, baselines, "run-a").start()
    try:
        _wait(lambda: a.alive() and a.pipeline.consumed >= total, 120, "run A",
              details=a.describe)
    finally:
        a.stop()
    alarms_a = alarm_log.alarms.get("run-a", set())
    alarms_b1, alarms_b2 = _alarms(b1), _alarms(b2)
    assert alarms_a, "no alarm in the uninterrupted run"
    assert any(x[3] >= killed_at for x in alarms_a), "the test needs alarms after the restart"
    assert alarms_b1 | alarms_b2 == alarms_a
    assert all(x[3] >= cp.offset for x in alarms_b2)

    # the bounded effect of the replay
    processed_twice = killed_at + b2_consumed - total
    between = killed_at - cp.offset  # events after the checkpoint, before the kill
    assert b2_consumed == total - cp.offset  # resumed exactly at the checkpoint
    assert 0 <= processed_twice <= between
    twice_alarms = alarms_b1 & alarms_b2
    assert all(cp.offset <= x[3] < killed_at for x in twice_alarms)
    print(f"\n[kill -9] stream {total} msgs; checkpoint offset {cp.offset}, committed "
          f"{committed}, killed after {killed_at}; B2 consumed {b2_consumed}; processed twice "
          f"{processed_twice} (bound: {between} events between checkpoint and kill); alarms: "
          f"A {len(alarms_a)}, B1 {len(alarms_b1)}, B2 {len(alarms_b2)}, raised twice "
          f"{len(twice_alarms)}; alarm offsets {sorted({x[3] for x in alarms_a})}")


# --------------------------------------------------------------------------
# --idle-timeout after a kill -9: the group join is not idle time
# --------------------------------------------------------------------------
class _JoinTimed(KafkaRunner):
    """A runner that notes when it first got partitions."""

    assigned_at: float | None = None

    def _on_assigned(self, assigned: set[Any]) -> None:
        if assigned and self.assigned_at is None:
            self.assigned_at = time.monotonic()
        super()._on_assigned(assigned)


@CLIENTS
def test_idle_timeout_counts_from_the_assignment_after_a_kill9(
        kafka_bootstrap, make_topic, workdir, baselines, client):
    # after a kill -9 the broker keeps the dead member until its session times out: the
    # restart waits that long in the group join, longer than its idle timeout, and must
    # still consume the backlog (it used to stop with "consumed 0"). The session timeout is
    # 10 s with both clients here (kafka-python's default is 45 s)
    topic = make_topic(partitions=1)
    group = f"idle-{topic}"
    options = {"session_timeout_ms": 10_000} if client == "kafka-python" else None
    cfg, port = _write_config(workdir, kafka_bootstrap, topic, group, client=client,
                              options=options)
    config = load_config(cfg)
    baselines(config)  # built and cached before the subprocess starts
    first = _events(41, [(500, 0)])
    _produce(kafka_bootstrap, topic, first)
    killed = StreamdriftRun(cfg, port=port, name="idle")
    try:
        killed.wait_consumed(len(first))
        _wait(lambda: any(r["offsets"].get(f"{topic}/0") == len(first)
                          for r in killed.logs("checkpoint written"))
              and _committed(kafka_bootstrap, group).get((topic, 0)) == len(first),
              30, "a checkpoint and a commit of everything consumed")
    finally:
        killed.kill9()
    backlog = _events(42, [(3000, 0)])
    _produce(kafka_bootstrap, topic, backlog)

    idle = 3.0
    runner = _JoinTimed(config, Pipeline(config, baselines(config)))
    t0 = time.monotonic()
    consumed = runner.run(idle_timeout=idle)
    took = time.monotonic() - t0
    assert runner.assigned_at is not None, "no partition assigned"
    join_s = runner.assigned_at - t0
    print(f"\n[idle timeout, {client}] group join after kill -9 took {join_s:.1f}s, the run "
          f"{took:.1f}s with --idle-timeout {idle:g}; consumed {consumed}")
    assert join_s > idle, "the join was quick: this run does not show the case"
    assert consumed == len(backlog)  # resumed at the checkpoint, read the whole backlog
    assert runner.pipeline.processed["m1"] == len(backlog)
    assert took < join_s + idle + 15  # and it did stop once idle


# --------------------------------------------------------------------------
# rebalance: a second consumer joins, then leaves
# --------------------------------------------------------------------------
@CLIENTS
def test_state_follows_partitions_across_rebalances(kafka_bootstrap, make_topic, workdir,
                                                    baselines, client):
    topic = make_topic(partitions=2)
    group = f"r-{topic}"
    cfg, _ = _write_config(workdir, kafka_bootstrap, topic, group, interval=1, client=client)
    parts = [(topic, 0), (topic, 1)]
    produced = dict.fromkeys(parts, 0)
    seed = iter(range(100, 200))

    def produce(n: int, regime: int) -> None:
        for key in parts:
            _produce(kafka_bootstrap, topic, _events(next(seed), [(n, regime)]), partition=key[1])
            produced[key] += n

    def consumed(*runs: InProcess) -> dict[tuple[str, int], int]:
        out = dict.fromkeys(parts, 0)
        for r in runs:
            for key, fig in r.partitions().items():
                out[key] += fig["consumed"]
        return out

    produce(2000, 0)
    r1 = InProcess(cfg, baselines, "rebalance-1").start()
    r2 = InProcess(cfg, baselines, "rebalance-2")
    try:
        _wait(lambda: r1.alive() and r1.pipeline.consumed >= 4000, 60, "consumer 1")
        t0 = time.monotonic()
        r2.start()
        # consumer 2 joins: each consumer ends up with the state of one partition
        _wait(lambda: r2.alive() and [k for k, f in r2.partitions().items() if f["live"]]
              and len([k for k, f in r1.partitions().items() if f["live"]]) == 1,
              60, "the partitions to be shared")
        join_s = time.monotonic() - t0
        moved = next(k for k, f in r2.partitions().items() if f["live"])
        stayed = next(k for k in parts if k != moved)
        produce(2000, 1)
        _wait(lambda: all(v >= produced[k] for k, v in consumed(r1, r2).items()), 60,
              "both consumers to catch up")
        # consumer 2 got the moved partition's state from consumer 1's checkpoint
        assert r2.runner.health.restores.get("checkpoint", 0) >= 1
        assert r2.partitions()[moved]["events"] == {"m1": produced[moved]}

        t1 = time.monotonic()
        r2.stop()  # leaves the group after its final checkpoint
        restores_before = r1.runner.health.restores.get("checkpoint", 0)
        _wait(lambda: r1.alive() and all(r1.partitions().get(k, {}).get("live") for k in parts)
              and r1.runner.health.restores.get("checkpoint", 0) > restores_before, 60,
              "consumer 1 to take the partition back")
        leave_s = time.monotonic() - t1
        # restored from consumer 2's checkpoint: the event count continues, it does not restart
        # at 0, and is more than consumer 1 ever processed on that partition itself
        restored_events = r1.partitions()[moved]["events"]["m1"]
        assert restored_events == produced[moved] == 4000
        assert r1.partitions()[moved]["processed"]["m1"] < restored_events

        produce(2000, 2)
        _wait(lambda: all(v >= produced[k] for k, v in consumed(r1, r2).items()), 60,
              "consumer 1 to consume the rest")
        time.sleep(1.0)
    finally:
        r1.stop()
        if r2.thread.is_alive():
            r2.stop()
    totals = consumed(r1, r2)
    for key in parts:
        assert totals[key] >= produced[key]  # nothing lost
        assert r1.partitions()[key]["events"] == {"m1": produced[key]}  # one continuous state
    twice = {f"{k[0][-2:]}/{k[1]}": totals[k] - produced[k] for k in parts}
    print(f"\n[rebalance] produced {produced[parts[0]]} per partition; moved partition "
          f"{moved[1]} (stayed {stayed[1]}); join took {join_s:.1f}s, leave {leave_s:.1f}s; "
          f"processed twice per partition {twice}; consumer 1 restores "
          f"{dict(r1.runner.health.restores)}, consumer 2 restores {dict(r2.runner.health.restores)}")


# --------------------------------------------------------------------------
# the broker goes away and comes back
# --------------------------------------------------------------------------
# An outage longer than session.timeout.ms (10 s): librdkafka declares the partitions lost
# (kafka-python keeps them); either way the state goes on in memory when the same partitions
# come back with their committed offset unchanged (no fall-back to the checkpoint), and no
# commit blocks the loop (confluent-kafka's synchronous commit has no timeout of its own).
@CLIENTS
def test_broker_restart_while_consuming(broker_module, tmp_path, workdir, baselines, client):
    port, controller_port = free_ports(2)
    broker = broker_module.LocalBroker(workdir=tmp_path / "kafka", port=port,
                                       controller_port=controller_port)
    broker.start()
    timeline: list[tuple[float, int]] = []
    try:
        bootstrap = broker.bootstrap_servers
        topic = broker.create_topic("restart-events", partitions=1)
        cfg, _ = _write_config(workdir, bootstrap, topic, f"restart-group-{client}",
                               interval=1, client=client)
        messages = _events(31, [(6000, 0), (6000, 1), (6000, 0)])
        run = InProcess(cfg, baselines, "restart-run").start()

        # a producer keeps producing through the outage (its sends wait and retry)
        from kafka import KafkaProducer

        prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                             delivery_timeout_ms=180_000, request_timeout_ms=10_000)
        futures = []
        produced_before_stop = threading.Event()

        def producing() -> None:
            for i in range(0, len(messages), 500):
                futures.extend(prod.send(topic, m) for m in messages[i:i + 500])
                if i >= 6000:
                    produced_before_stop.set()
                time.sleep(0.15)

        sender = threading.Thread(target=producing, name="restart-producer", daemon=True)
        sender.start()
        produced_before_stop.wait(30)
        _wait(lambda: run.alive() and run.pipeline.consumed >= 5000, 60, "consumption")

        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                timeline.append((time.monotonic(), int(run.runner.health.source_up)))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, name="restart-sampler", daemon=True)
        sampler.start()
        consumed_at_stop = run.pipeline.consumed
        t_stop = time.monotonic()
        broker.stop()
        t_down = time.monotonic()
        time.sleep(10)
        t_start = time.monotonic()
        broker.start()
        t_up = time.monotonic()

        sender.join(timeout=60)
        prod.flush(timeout=120)
        for f in futures:
            f.get(timeout=60)
        prod.close()
        _wait(lambda: run.alive() and run.pipeline.consumed >= len(messages), 120,
              "consumption after the restart")
        _wait(lambda: run.runner.health.source_up == 1, 30, "source_up back to 1")
        time.sleep(1.0)
        stop.set()
        sampler.join(timeout=5)
        run.stop()
        snap = run.pipeline.snapshot()
        health = run.runner.health.snapshot()
    finally:
        broker.stop()

    part = dataclasses.asdict(snap.partitions[(topic, 0)])
    assert part["consumed"] >= len(messages)  # nothing lost
    assert part["events"] == {"m1": len(messages)}  # the state went on through the outage
    # ... in memory: not restored from the checkpoint (which would process events twice)
    assert health.restores.get("checkpoint", 0) == 0, health.restores
    assert part["consumed"] == len(messages), "events processed twice"
    zero = [t for t, up in timeline if up == 0]
    assert zero, "source_up never went to 0 during the outage"
    assert all(t >= t_stop for t in zero)
    first_zero = zero[0] - t_stop
    back = next(t for t, up in timeline if up == 1 and t > zero[-1]) - t_up
    assert zero[0] < t_start, "source_up went to 0 only after the broker was back"
    assert timeline[-1][1] == 1
    print(f"\n[broker restart] broker down {t_start - t_down:.1f}s (stop took "
          f"{t_down - t_stop:.1f}s, start {t_up - t_start:.1f}s); consumed {consumed_at_stop} "
          f"before the stop, {part['consumed']} in all for {len(messages)} produced "
          f"(processed twice {part['consumed'] - len(messages)}); source_up 0 "
          f"{first_zero:.1f}s after the stop began, back to 1 {back:.1f}s after the restart, "
          f"0 for {zero[-1] - zero[0]:.1f}s; restores {dict(health.restores)}")


# --------------------------------------------------------------------------
# poison messages and the dead-letter topic
# --------------------------------------------------------------------------
class FlakyDeadLetters(KafkaRunner):
    """Dead-letter writes go to a closed port while ``fail`` is set."""

    fail = threading.Event()
    closed_port = 0

    def _producer(self) -> Any:
        if self.fail.is_set():
            from kafka import KafkaProducer

            return KafkaProducer(bootstrap_servers=f"127.0.0.1:{self.closed_port}",
                                 bootstrap_timeout_ms=500, max_block_ms=500)
        return super()._producer()


def _read_all(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list[Any]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < n and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out.extend(recs)
        time.sleep(0.5)
        for recs in c.poll(timeout_ms=500).values():
            out.extend(recs)
        return out
    finally:
        c.close()


@CLIENTS
def test_dead_letters_are_committed_past_only_once_acknowledged(
        kafka_bootstrap, make_topic, workdir, baselines, client):
    topic, dlq = make_topic(partitions=1), make_topic(partitions=1)
    group = f"dl-{topic}"
    cfg, _ = _write_config(workdir, kafka_bootstrap, topic, group, interval=1, dead_letter=dlq,
                           client=client)
    # the third: an event of m1 whose "f" (where its paths descend) is not an object
    poison = [b"{not json", b"[1, 2]", b'{"model": "m1", "ts": 1700000000, "f": "oops"}',
              b"x" * 5000]
    reasons = ["invalid_json", "not_an_object", "wrong_structure", "invalid_json"]
    messages = _events(41, [(300, 0)])
    positions = [100, 201, 250, 303]
    for pos, bad in zip(positions, poison, strict=True):
        messages.insert(pos, bad)

    _produce(kafka_bootstrap, topic, messages)  # first, so that one poll reads them all
    FlakyDeadLetters.closed_port = free_port()
    FlakyDeadLetters.fail.set()
    run = InProcess(cfg, baselines, "dead-letter", FlakyDeadLetters).start()
    try:
        # the dead-letter write fails: counted, retried, nothing committed past the poison
        _wait(lambda: run.alive() and run.runner.health.dead_letter.get("failed", 0) >= 2 * len(poison), 60,
              "two failed dead-letter attempts")
        time.sleep(1.5)
        assert run.alive()
        failed_attempts = run.runner.health.dead_letter["failed"] // len(poison)
        assert run.runner.health.dead_letter.get("ok", 0) == 0
        committed = _committed(kafka_bootstrap, group).get((topic, 0))
        assert committed is None or committed <= positions[0], committed
        # no checkpoint claims the batch either (its state is ahead of the committed offset)
        cp = _checkpoints(run.config).get(("m1", topic, 0))
        assert cp is None or cp.offset <= positions[0]
        assert run.pipeline.consumed == len(messages)  # processed once, not again per retry
        assert run.pipeline.processed["m1"] == 300

        # the dead-letter topic comes back: the write goes through, then the commit
        t0 = time.monotonic()
        FlakyDeadLetters.fail.clear()
        _wait(lambda: run.alive()
              and _committed(kafka_bootstrap, group).get((topic, 0)) == len(messages),
              60, "the commit past the poison messages", interval=0.5)
        recovered_s = time.monotonic() - t0
        assert run.runner.health.dead_letter.get("ok") == len(poison)
    finally:
        FlakyDeadLetters.fail.clear()
        run.stop()
    assert _checkpoints(run.config)[("m1", topic, 0)].offset == len(messages)
    assert run.pipeline.consumed == len(messages) and run.pipeline.processed["m1"] == 300

    got = _read_all(kafka_bootstrap, dlq, len(poison))
    assert [r.value for r in got] == poison
    for r, pos, reason in zip(got, positions, reasons, strict=True):
        headers = {k: v.decode() for k, v in r.headers}
        assert headers["source_topic"] == topic
        assert headers["source_partition"] == "0"
        assert headers["source_offset"] == str(pos)
        assert headers["error"] == reason
    print(f"\n[dead letter] {len(poison)} poison messages; {failed_attempts} failed attempts "
          f"while the dead-letter producer pointed at a closed port, committed offset held at "
          f"or before {positions[0]}; commit past them {recovered_s:.1f}s after the write "
          f"could succeed")
