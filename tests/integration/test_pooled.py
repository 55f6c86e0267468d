"""The pooled CUSUM (``source.repartition.pooled``, issue 14) on a real broker.

A topic of 4 partitions keyed by ``c1``, re-mixed over 2 internal partitions: each monitor
sees half of the events, and the pool member merges their standardised values by merge
position into one CUSUM per numeric column.  Checked here: the pooled CUSUM is bit for bit
the column CUSUM of one monitor over the repartition topic's messages in position order;
it raises the episode of a global drift of x1 and none before it, while the monitors' own
CUSUMs of the pooled columns stay quiet; and a kill -9 of the process (monitors, first
stage and pool member at once) loses no position, and the records published again are
dropped by position (the pooled state equals one CUSUM over each position's first copy).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.broker import read_to_end
from stream.config import Config, load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime.frames import unpack as unpack_frame
from stream.runtime.pool import POOL_MODEL, pool_columns
from stream.runtime.pooltap import unpack as unpack_pool
from stream.runtime.repartition import BUFFER_POLLS
from stream.runtime.twostage import TwoStageRunner
from stream.sinks.checkpoints import StateStore
from stream.sources.kafka import kafka_client_kwargs
from tests.integration.test_keyed_topics import _produce_keyed
from tests.support.configs import m1_config, write_config
from tests.support.events import CLEAN, COLUMNS, Regime, m1_events
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.runs import InProcess, cached_baselines
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

_wait = functools.partial(wait_for, interval=0.2, retry=())
POOLED = ("x1", "x2", "score")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pooled")
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    return d


@pytest.fixture(scope="module")
def baselines(workdir: Path) -> Callable[[Config], dict[str, Any]]:
    return cached_baselines()


def _config(workdir: Path, bootstrap: str, topic: str, group: str, interval: float = 1.0,
            client: str = "kafka-python", **repartition: Any) -> Path:
    config = m1_config(bootstrap=bootstrap, topic=topic, group=group, port=free_port(),
                       columns=COLUMNS,
                       kafka={"max_poll_records": 500, "poll_timeout_ms": 200,
                              "client": client},
                       state={"checkpoint_interval_s": interval})
    config["source"]["repartition"] = {"topic": f"{topic}-rp", "partitions": 2,
                                       "pooled": True, "pool_topic": f"{topic}-pool",
                                       **repartition}
    return write_config(workdir / f"{group}.yaml", config)


def _positions(bootstrap: str, rp_topic: str) -> dict[int, bytes]:
    """merge position -> message, over the repartition topic (the first copy)."""
    out: dict[int, bytes] = {}
    for recs in read_to_end(bootstrap, rp_topic).values():
        for r in recs:
            f = unpack_frame(r.value)
            assert f.positions is not None  # frames version 2
            for p, v in zip(f.positions.tolist(), f.values, strict=True):
                out.setdefault(p, v or b"")
    return out


def _conflicts(bootstrap: str, rp_topic: str) -> list[int]:
    """The positions written more than once over the repartition topic with another
    message."""
    seen: dict[int, bytes] = {}
    out = set()
    for recs in read_to_end(bootstrap, rp_topic).values():
        for r in recs:
            f = unpack_frame(r.value)
            assert f.positions is not None
            for p, v in zip(f.positions.tolist(), f.values, strict=True):
                if seen.setdefault(p, v or b"") != (v or b""):
                    out.add(p)
    return sorted(out)


def _one_monitor(config: Config, messages: list[bytes]) -> dict[str, Any]:
    """The column CUSUMs of one monitor fed ``messages`` in order."""
    pipe = Pipeline(config, resolve_baselines(config))
    for i in range(0, len(messages), 1000):
        pipe.process(messages[i:i + 1000], base_index=i)
    mon = pipe.monitor("m1")
    assert mon is not None
    return {c: mon.columns[c].detectors["cusum"] for c in POOLED}


def _first_copies(bootstrap: str, pool_topic: str, config: Config) -> dict[str, Any]:
    """One CUSUM per pooled column over the pool topic's values, each position's first
    copy in the topic's order, in position order; and the positions covered."""
    first: dict[int, dict[str, np.ndarray]] = {}
    copies = 0
    for r in read_to_end(bootstrap, pool_topic)[0]:
        cov, cols = unpack_pool(r.value)
        copies += cov.size
        for p in cov.tolist():
            if p not in first:
                first[p] = {c: cols[("m1", c)].values[cols[("m1", c)].positions == p]
                            if ("m1", c) in cols else np.empty(0) for c in POOLED}
    ref = pool_columns(Pipeline(config, resolve_baselines(config)))
    for c in POOLED:
        ref[("m1", c)].update(np.concatenate([first[p][c] for p in sorted(first)]))
    return {"cusums": ref, "positions": sorted(first), "copies": copies}


def _same(a: Any, b: Any) -> bool:
    return a._f.tobytes() == b._f.tobytes() and a._i.tobytes() == b._i.tobytes()


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_pooled_cusum_catches_a_global_drift_as_one_monitor_over_every_event(
        kafka_bootstrap, make_topic, workdir, baselines, client):
    topic = make_topic(partitions=4)
    clean, drift = 6_000, 3_000
    events = m1_events(21, [(clean, CLEAN), (drift, Regime(x1_mean=0.5))], COLUMNS)
    _produce_keyed(kafka_bootstrap, topic, events)
    cfg = _config(workdir, kafka_bootstrap, topic, f"pool-{topic}", client=client)
    run = InProcess(cfg, baselines, "pooled", TwoStageRunner).start()
    member = run.runner.pool
    assert member is not None
    try:
        _wait(lambda: run.alive() and run.pipeline.processed["m1"] >= len(events), 180,
              "the monitors", details=run.describe)
        _wait(lambda: run.alive() and member.merge is not None
              and member.merge.frontier >= len(events), 60, "the pool's frontier",
              details=lambda: str(member.figures()))
        fig = member.figures()
        merge = member.merge
        assert merge is not None
        pooled = {c: merge.columns[("m1", c)] for c in POOLED}
        alarms = list(member.alarms)
        snap = run.pipeline.snapshot()
    finally:
        run.stop()
    config = load_config(cfg)
    messages = _positions(kafka_bootstrap, f"{topic}-rp")
    assert sorted(messages) == list(range(len(events)))  # dense, from 0
    # a position the first stage wrote twice with other messages (a write retried after
    # its buffers grew): the pool keeps the copy published first, not the topic's first
    conflicts = _conflicts(kafka_bootstrap, f"{topic}-rp")
    ref = _first_copies(kafka_bootstrap, f"{topic}-pool", config)
    opened = [a for a in alarms if a.kind == "open" and a.column == "x1"]
    delay = [round(a.event_time - 1.7e9) - clean for a in opened if a.event_time]
    own = {c: snap.models["m1"].columns[c].detectors["cusum"].alarms for c in POOLED}
    print(f"\n[pooled, 4 keyed partitions, 2 internal, {client}] pool {fig}; positions published "
          f"more than once {ref['copies'] - len(ref['positions'])}, written twice with other "
          f"messages {len(conflicts)}; x1 pooled alarms at {delay} events after the drift's "
          f"start; monitors' own CUSUM alarms {own}")
    assert ref["positions"] == list(range(len(events)))  # every position published
    for c in POOLED:  # each position's first copy on the pool topic, once, in order
        assert _same(pooled[c], ref["cusums"][("m1", c)]), c
    if not conflicts:  # then bit for bit one monitor's CUSUM over the merged stream
        single = _one_monitor(config, [messages[p] for p in range(len(events))])
        for c in POOLED:
            assert _same(pooled[c], single[c]), (c, pooled[c]._f, single[c]._f)
    # at-least-once: positions are dropped as copies when a monitor publishes again (a
    # retried publish, frames processed again after a rebalance), when the first stage
    # writes a batch again, and when the member reads again from its checkpoint after it
    # took the pool over (docs/reliability.md, keyed topics: the bound of one merged batch)
    assert fig is not None and fig["skipped"] == 0
    assert fig["duplicates"] <= 4 * BUFFER_POLLS * 500
    assert fig["bad_records"] == 0 and fig["pending"] == 0
    assert opened and all(d >= 0 for d in delay) and delay[0] < drift
    assert not [a for a in alarms if a.kind == "open" and a.column != "x1"]
    assert own == dict.fromkeys(POOLED, 0)  # the monitors' CUSUMs of pooled columns: muted


def _pool_checkpoint(config: Config) -> Any:
    rp = config.source.repartition
    k = config.source.kafka
    assert rp is not None and k is not None
    store = StateStore(kafka_client_kwargs(k), config.state.topic, rp.pool_topic)
    try:
        return store.read(timeout_s=20).get((POOL_MODEL, rp.pool_topic, 0))
    finally:
        store.close()


# both clients: with confluent-kafka the pool member's consumer is librdkafka's too, and
# takes the pool over in its assignment callback (its restore's seek sets where it starts)
@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_kill9_loses_no_position_and_drops_what_is_published_again(
        kafka_bootstrap, make_topic, workdir, client):
    from detectors.cusum_pool import PoolMerge

    topic = make_topic(partitions=4)
    cfg = _config(workdir, kafka_bootstrap, topic, f"pk9-{topic}", interval=2, client=client)
    config = load_config(cfg)
    resolve_baselines(config)  # cached before the subprocess starts
    events = m1_events(19, [(16_000, CLEAN)], COLUMNS)
    _produce_keyed(kafka_bootstrap, topic, events[:6_000])
    b1 = StreamdriftRun(cfg, port=config.metrics.port, name="p1")
    try:
        b1.wait_consumed(6_000, timeout=120)
        _wait(lambda: len(b1.logs("checkpoint written")) >= 1, 30, "a checkpoint")
        # the restore from the pool's checkpoint is what is tested (a member without one
        # reads the pool topic from its start: tests/stream/test_pool.py)
        _wait(lambda: len(b1.logs("pool checkpoint written")) >= 1, 60, "a pool checkpoint")
        _produce_keyed(kafka_bootstrap, topic, events[6_000:12_000])
        b1.wait_consumed(9_000, timeout=120)
        killed_at = int(b1.consumed())
    finally:
        b1.kill9()
    _produce_keyed(kafka_bootstrap, topic, events[12_000:])
    b2 = StreamdriftRun(cfg, port=config.metrics.port, name="p2")
    rp_topic = f"{topic}-rp"
    try:
        def covered() -> bool:
            cp = _pool_checkpoint(config)
            # every event forwarded, in any copy: the first copy of a position can be
            # another message (the successor numbers on from the last commit, and its
            # merge order need not be the dead first stage's)
            return (cp is not None and _forwarded(kafka_bootstrap, rp_topic) >= len(events)
                    and cp.state["frontier"] == max(_positions(kafka_bootstrap, rp_topic)) + 1)

        _wait(lambda: b2.check_alive() is None and covered(), 240,
              "the pool to fold every position", interval=2.0,
              details=lambda: _stuck(b2, config, kafka_bootstrap, rp_topic, len(events)))
    finally:
        b2.stop(check=True)
    cp = _pool_checkpoint(config)
    positions = _positions(kafka_bootstrap, rp_topic)
    unplaced = len(events) - len({_ts(m) for m in positions.values()} - {None})
    ref = _first_copies(kafka_bootstrap, f"{topic}-pool", config)
    state = PoolMerge.from_state(dict(cp.state), pool_columns(
        Pipeline(config, resolve_baselines(config))))
    elected = b2.logs("pool member elected")
    print(f"\n[pooled kill -9, {client}] {len(events)} events, killed after {killed_at} consumed; "
          f"{len(positions)} positions on the repartition topic (dense: "
          f"{sorted(positions) == list(range(len(positions)))}); pool frontier "
          f"{cp.state['frontier']}, skipped {cp.state['skipped']}; restarted at offset "
          f"{[e.get('offset') for e in elected]}; positions published "
          f"{ref['copies'] - len(ref['positions'])} times more than once; events without "
          f"a first copy of their own {unplaced}")
    assert sorted(positions) == list(range(len(positions)))  # no position lost
    # a position taken again by the successor's first stage with another message: its first
    # copy stands for it (the pool folds what the repartition topic's first copies hold);
    # at most one merged batch of the dead first stage (docs/reliability.md)
    assert unplaced <= 4 * BUFFER_POLLS * 500
    assert ref["positions"] == sorted(positions)  # every position published
    assert ref["copies"] > len(positions)  # some published again: the dedup is tested
    assert cp.state["frontier"] == len(positions) and cp.state["skipped"] == 0
    assert elected and elected[0].get("offset") is not None  # restored from its checkpoint
    assert {e.get("client") for e in elected} == {client}  # the pool topic's consumer
    for c in POOLED:  # each position once: the copies published again were dropped
        assert _same(state.columns[("m1", c)], ref["cusums"][("m1", c)]), c


def _stuck(run: StreamdriftRun, config: Config, bootstrap: str, rp_topic: str, n: int) -> str:
    """Where the kill -9 test waits: the pool's checkpoint and series, what the first stage
    forwarded, and the pool member's log."""
    cp = _pool_checkpoint(config)
    positions = _positions(bootstrap, rp_topic)
    forwarded = _forwarded(bootstrap, rp_topic)
    try:
        series = [line for line in run.scrape().splitlines()
                  if line.startswith(("streamdrift_pool_", "streamdrift_events_consumed"))]
    except OSError as exc:
        series = [repr(exc)]
    pool_logs = [line for line in run.stderr.read_text(errors="replace").splitlines()
                 if "pool" in line or "Traceback" in line or "rror" in line][-40:]
    saved = None if cp is None else (cp.offset, cp.state.get("frontier"), cp.state.get("skipped"))
    return (f"pool checkpoint (offset, frontier, skipped): {saved}; positions on {rp_topic}: "
            f"{len(positions)} (max {max(positions, default=None)}), distinct events "
            f"forwarded {forwarded} of {n}; series {series}\n" + "\n".join(pool_logs))


def _forwarded(bootstrap: str, rp_topic: str) -> int:
    """The distinct events over every copy of every message of the repartition topic."""
    return len({_ts(v or b"") for recs in read_to_end(bootstrap, rp_topic).values()
                for r in recs for v in unpack_frame(r.value).values} - {None})


def _ts(value: bytes) -> float | None:
    import orjson

    try:
        return float(orjson.loads(value)["ts"])
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None


def _pool_topic_limit(bootstrap: str, topic: str, max_bytes: int, create: bool = False) -> None:
    """Create the pool topic, or alter it, with ``max.message.bytes``: below a pool
    record's size the broker refuses every publish (MESSAGE_TOO_LARGE)."""
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        conf = {"max.message.bytes": str(max_bytes)}
        if create:
            admin.create_topics([NewTopic(topic, 1, 1, topic_configs=conf)])
        else:
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=conf)])
    finally:
        admin.close()


def _refused(bootstrap: str, make_topic: Callable[..., str], workdir: Path, seed: int,
             group: str, bound: int, **kw: Any) -> tuple[list[bytes], str, Path]:
    """4,000 clean events on a topic of 4 partitions keyed by ``c1``, a pool topic that
    refuses every record, and a pooled config with outbox bound ``bound``: the events,
    the pool topic and the config."""
    topic = make_topic(partitions=4)
    events = m1_events(seed, [(4_000, CLEAN)], COLUMNS)
    _produce_keyed(bootstrap, topic, events)
    pool_topic = f"{topic}-pool"
    _pool_topic_limit(bootstrap, pool_topic, 64, create=True)
    cfg = _config(workdir, bootstrap, topic, f"{group}-{topic}", pool_outbox_max_bytes=bound,
                  **kw)
    return events, pool_topic, cfg


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_the_outbox_stays_bounded_while_the_pool_topic_refuses_records_then_catches_up(
        kafka_bootstrap, make_topic, workdir, baselines, client):
    bound = 64 * 1024
    events, pool_topic, cfg = _refused(kafka_bootstrap, make_topic, workdir, 29, "pob",
                                       bound, client=client)
    run = InProcess(cfg, baselines, f"outbox-{client}", TwoStageRunner).start()
    assert run.runner.kafka.client == client
    box, member = run.runner.pool_out, run.runner.pool
    assert box is not None and member is not None
    try:
        _wait(lambda: run.alive() and run.runner.holding is not None, 120, "the monitors to hold",
              details=run.describe)
        held_at = run.pipeline.processed["m1"]
        peak, biggest = 0, 0
        for _ in range(30):  # 3 s held: nothing new processed, the outbox bounded
            peak = max(peak, box.bytes)
            biggest = max([biggest, *(len(r) for r in list(box.records))])
            time.sleep(0.1)
        still = run.pipeline.processed["m1"]
        paused = set(run.runner.consumer.paused())
        assigned = set(run.runner.consumer.assignment())
        _pool_topic_limit(kafka_bootstrap, pool_topic, 8 * 1024 * 1024)
        _wait(lambda: run.alive() and run.pipeline.processed["m1"] >= len(events)
              and member.merge is not None and member.merge.frontier >= len(events), 120,
              "the monitors and the pool to catch up", details=lambda: f"{run.describe()}; "
              f"outbox {box.bytes} bytes, pool {member.figures()}")
        fig = member.figures()
        merge = member.merge
        assert merge is not None
        pooled = {c: merge.columns[("m1", c)] for c in POOLED}
        after = (box.bytes, run.runner.holding)
    finally:
        run.stop()
    config = load_config(cfg)
    ref = _first_copies(kafka_bootstrap, pool_topic, config)
    print(f"\n[pool outbox, {client}] held after {held_at} of {len(events)} events; peak "
          f"{peak} bytes (bound {bound}, largest record {biggest}); pool {fig}")
    assert held_at < len(events) and still == held_at  # no new batch while held
    assert bound <= peak <= bound + 2 * biggest  # FRAMES_PER_POLL records over, at most
    assert assigned and paused == assigned
    assert after == (0, None)  # published, taking batches again
    assert ref["positions"] == list(range(len(events)))  # every position published
    assert fig is not None and fig["skipped"] == 0 and fig["pending"] == 0
    for c in POOLED:
        assert _same(pooled[c], ref["cusums"][("m1", c)]), c


def test_a_rebalance_during_a_hold_loses_no_position(
        kafka_bootstrap, make_topic, workdir, baselines):
    """A second process joins while the first holds (the pool topic refuses every record):
    the monitors' group moves one internal partition to it while the first's are paused
    and its outbox is full.  Once the pool topic takes records again, every position is
    published and folded, each once, by whichever process is the pool member."""
    bound = 64 * 1024
    events, pool_topic, cfg = _refused(kafka_bootstrap, make_topic, workdir, 31, "porb", bound)
    a = InProcess(cfg, baselines, "hold-a", TwoStageRunner).start()
    b: InProcess | None = None
    try:
        _wait(lambda: a.alive() and a.runner.holding is not None, 120, "the first to hold",
              details=a.describe)
        held_at = a.pipeline.processed["m1"]
        before = set(a.runner.consumer.assignment())
        b = InProcess(cfg, baselines, "hold-b", TwoStageRunner).start()
        second = b

        def moved() -> bool:
            mine = set(a.runner.consumer.assignment())
            return (a.alive() and second.alive() and 0 < len(mine) < len(before)
                    and bool(second.runner.consumer.assignment()))

        _wait(moved, 120, "an internal partition to move to the second process",
              details=lambda: f"{a.describe()}; {second.describe()}")
        time.sleep(2)  # both held or processing what the second was given
        paused = set(a.runner.consumer.paused())
        mine = set(a.runner.consumer.assignment())
        still_holding = a.runner.holding is not None
        _pool_topic_limit(kafka_bootstrap, pool_topic, 8 * 1024 * 1024)

        def member() -> Any:
            got = [r.runner.pool for r in (a, second)
                   if r.runner.pool is not None and r.runner.pool.merge is not None]
            return got[0] if got else None

        _wait(lambda: a.alive() and second.alive() and member() is not None
              and member().merge.frontier >= len(events), 180,
              "the pool to fold every position after the rebalance",
              details=lambda: f"{a.describe()}; {second.describe()}; pool "
                              f"{[r.runner.pool.figures() for r in (a, second) if r.runner.pool]}")
        pool = member()
        fig = pool.figures()
        pooled = {c: pool.merge.columns[("m1", c)] for c in POOLED}
    finally:
        a.stop()
        if b is not None:
            b.stop()
    config = load_config(cfg)
    ref = _first_copies(kafka_bootstrap, pool_topic, config)
    print(f"\n[pool outbox, rebalance] first held after {held_at} of {len(events)} events; "
          f"its internal partitions {len(before)} -> {len(mine)}, paused {len(paused)}, "
          f"holding {still_holding}; pool {fig}; copies {ref['copies']}")
    assert held_at < len(events)
    assert mine and paused >= mine  # what it kept is still paused while held
    assert ref["positions"] == list(range(len(events)))  # every position published
    assert fig is not None and fig["skipped"] == 0 and fig["pending"] == 0
    for c in POOLED:  # each position once, whichever process published it
        assert _same(pooled[c], ref["cusums"][("m1", c)]), c
