"""Labels on a real broker: a predictions topic and a labels topic (2 partitions each, keyed
by the id), label delays of 0-60 s of event time, bad labels counted by reason, and kill -9
mid-stream: the restarted run resumes the join from the checkpoint and loses no joined pair.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from tests.support.configs import write_config
from tests.support.kafka import produce
from tests.support.labels import T0, labelled_stream, lm_model, reference_lines
from tests.support.ports import free_port
from tests.support.processes import StreamdriftRun
from tests.support.runs import checkpoints
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_produce = functools.partial(produce, linger_ms=5, acks="all")
_wait = functools.partial(wait_for, interval=0.1, retry=())
N = 6000


def _keyed(bootstrap: str, topic: str, messages: list[bytes]) -> None:
    """Send keyed by the id, as a producer of predictions and labels would."""
    _produce(bootstrap, topic, messages, keys=[orjson.loads(m)["id"].encode() for m in messages])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("labels-run")
    (d / "reference.jsonl").write_bytes(b"\n".join(reference_lines(77, 4000)) + b"\n")
    other = [m.replace(b'"model":"lm"', b'"model":"other"') for m in reference_lines(78, 2000)]
    (d / "reference-other.jsonl").write_bytes(b"\n".join(other) + b"\n")
    return d


def _config(workdir: Path, bootstrap: str, topic: str, labels: str, group: str,
            drift_events: str | None = None) -> tuple[Path, int]:
    port = free_port()
    lm = lm_model(topic=labels, horizon_s=120, label_wait_s=200)
    other = {**lm_model(topic=labels), "name": "other",
             "select": {"field": "model", "equals": "other"},
             "baseline": {"reference": "reference-other.jsonl"}}
    config = {
        "source": {"kafka": {"bootstrap_servers": bootstrap, "topics": [topic], "group_id": group,
                             "auto_offset_reset": "earliest", "max_poll_records": 500,
                             "poll_timeout_ms": 200},
                   "timestamp": {"path": "ts", "unit": "s"}},
        "models": [lm, other],
        # 1e7: the concept-drift test asserts no input alarm and no model-quality alarm on
        # "other" over 12,000 clean events of each model (~0.1 % at 1e7, ~1 % at 1e6)
        "detection": {"false_alarm_events": 10_000_000, "window": 500, "cadence": 50},
        "metrics": {"port": port, "host": "127.0.0.1"},
        "state": {"topic": f"{group}-state", "checkpoint_interval_s": 2},
    }
    if drift_events is not None:
        config["source"]["drift_events"] = {"topic": drift_events}
    return write_config(workdir / f"{group}.yaml", config), port


def _label_series(run: StreamdriftRun) -> str:
    return "\n".join(x for x in run.scrape().splitlines() if "labels_" in x and 'lm"' in x)


def _joined(cfg: Path, topic: str) -> int:
    """Labels joined in model lm's newest checkpoints (since the first start)."""
    return sum(cp.state["labels"]["counts"].get("joined", 0)
               for (m, t, _), cp in checkpoints(load_config(cfg)).items()
               if m == "lm" and t == topic and "labels" in cp.state)


def test_labels_join_on_a_real_broker_and_survive_kill9(kafka_bootstrap, make_topic, workdir):
    topic, labels = make_topic(partitions=2), make_topic(partitions=2)
    s = labelled_stream(31, N, dt=0.1, max_delay=60.0)
    n_labels = len(s.labels)
    label_ts = np.array([orjson.loads(m)["ts"] for m in s.labels])
    # bad labels, in the part produced after the kill (counted once, by the restarted run)
    bad = [b"{oops", b"{oops", b"[1]",
           b'{"model": "nobody", "id": "r1", "ts": %f, "label": 1}' % (T0 + 500),
           b'{"model": "lm", "id": "r2", "ts": %f, "label": "yes"}' % (T0 + 500),
           b'{"model": "lm", "ts": %f, "label": 1}' % (T0 + 500)]
    ghosts = [b'{"model": "lm", "id": "ghost%d", "ts": %f, "label": 0}' % (i, T0 + 200 + i)
              for i in range(5)]
    first_labelled = next(i for i in range(N) if not np.isnan(s.y[i]))
    dup = [b'{"model": "lm", "id": "r%d", "ts": %f, "label": 1}' % (first_labelled, T0 + 500)]

    cfg, port = _config(workdir, kafka_bootstrap, topic, labels, f"g-{topic}")
    resolve_baselines(load_config(cfg))  # build the baseline cache before timing anything

    def labels_until(i: int) -> list[bytes]:
        """The labels whose time is at most that of prediction i (as they would exist)."""
        return [m for m, t in zip(s.labels, label_ts.tolist(), strict=True)
                if t <= s.ts[i - 1]]

    b1 = StreamdriftRun(cfg, port=port, name="b1")
    try:
        _keyed(kafka_bootstrap, topic, s.events[:2000])
        sent_labels = labels_until(2000)
        _keyed(kafka_bootstrap, labels, sent_labels)
        b1.wait_consumed(2000)
        _wait(lambda: b1.value("streamdrift_labels_total", model="lm", outcome="joined")
              >= len(sent_labels), 60, "the first labels joined",
              details=lambda: f"{len(sent_labels)} labels sent\n" + _label_series(b1))
        # one more stretch after a checkpoint that covers the first, then kill -9
        _wait(lambda: _joined(cfg, topic) == len(sent_labels), 30,
              "a checkpoint of the first labels")
        _keyed(kafka_bootstrap, topic, s.events[2000:4000])
        more = labels_until(4000)[len(sent_labels):]
        _keyed(kafka_bootstrap, labels, more)
        b1.wait_consumed(4000)
        _wait(lambda: b1.value("streamdrift_labels_total", model="lm", outcome="joined")
              >= len(sent_labels) + len(more) - 50, 60, "more labels joined")
        b1.kill9()
    finally:
        if b1.proc.poll() is None:
            b1.kill9()
    joined_at_checkpoint = _joined(cfg, topic)
    assert len(sent_labels) <= joined_at_checkpoint <= len(sent_labels) + len(more)

    # the rest, with the bad labels, then the restart
    rest = s.labels[len(sent_labels) + len(more):]  # every label left, the latest included
    _keyed(kafka_bootstrap, topic, s.events[4000:])
    _keyed(kafka_bootstrap, labels, rest[:100])
    _produce(kafka_bootstrap, labels, [*bad, *ghosts, *dup])  # unkeyed: any partition
    _keyed(kafka_bootstrap, labels, rest[100:])
    b2 = StreamdriftRun(cfg, port=port, name="b2")
    try:
        _wait(lambda: len(b2.logs("state restored")) == 2, 120, "the restore",
              details=b2.log_tail)
        resumed = sum(r["offset"] for r in b2.logs("state restored"))
        b2.wait_consumed(N - resumed, timeout=60)
        _wait(lambda: b2.value("streamdrift_labels_total", model="lm", outcome="joined")
              >= n_labels - joined_at_checkpoint, 20, "every label joined after the restart",
              details=lambda: f"{n_labels} labels, {joined_at_checkpoint} joined at the "
              f"checkpoint, unlabelled {int(np.isnan(s.y).sum())}\n" + _label_series(b2))
        invalid = {r: b2.value("streamdrift_labels_invalid_total", reason=r)
                   for r in ("invalid_json", "not_an_object", "unknown_model", "missing_id",
                             "wrong_type")}
        b2.check_alive()
    finally:
        b2.stop(check=True)
    assert invalid == {"invalid_json": 2, "not_an_object": 1, "unknown_model": 1,
                       "missing_id": 1, "wrong_type": 1}
    restored = b2.logs("label partition restored")
    assert len(restored) == 2 and all(r["offset"] is not None for r in restored), restored

    # the final checkpoints hold the join's counts since the first start: every label joined
    # exactly once (none lost by the kill, none twice from the replay), the bad ones counted
    after = checkpoints(load_config(cfg))
    joins: list[dict[str, Any]] = [cp.state["labels"] for (m, t, _), cp in after.items()
                                   if m == "lm" and t == topic]
    counts: dict[str, int] = {}
    for j in joins:
        for k, v in j["counts"].items():
            counts[k] = counts.get(k, 0) + v
    assert counts.get("joined") == n_labels, counts
    assert counts.get("duplicate") == 1 and counts.get("no_prediction") == 5, counts
    assert counts.get("late", 0) == 0 and counts.get("evicted", 0) == 0, counts
    assert sum(j["quality"]["n"] for j in joins) == n_labels
    y = s.y[~np.isnan(s.y)]
    p = s.score[~np.isnan(s.y)]
    acc = np.mean((p >= 0.5) == (y == 1))
    print(f"\n[labels kill -9] {N} predictions, {n_labels} labels (delays 0-60 s event time); "
          f"joined at the checkpoint before the kill {joined_at_checkpoint}; final joined "
          f"{counts['joined']}, duplicate {counts['duplicate']}, no_prediction "
          f"{counts['no_prediction']}, expired {counts.get('expired', 0)}; accuracy {acc:.4f}")


def test_labels_follow_their_partitions_across_a_rebalance(kafka_bootstrap, make_topic,
                                                           workdir):
    from tests.support.runs import InProcess

    topic, labels = make_topic(partitions=2), make_topic(partitions=2)
    s = labelled_stream(41, 6000, dt=0.1, max_delay=60.0)
    label_ts = np.array([orjson.loads(m)["ts"] for m in s.labels])
    cut = [int(np.searchsorted(label_ts, s.ts[i - 1], side="right")) for i in (2000, 4000)]
    cfg, _ = _config(workdir, kafka_bootstrap, topic, labels, f"r-{topic}")

    def bases(config: Any) -> dict[str, Any]:
        return resolve_baselines(config)

    _keyed(kafka_bootstrap, topic, s.events[:2000])
    _keyed(kafka_bootstrap, labels, s.labels[:cut[0]])
    r1 = InProcess(cfg, bases, "labels-rebalance-1").start()
    r2 = InProcess(cfg, bases, "labels-rebalance-2")
    try:
        _wait(lambda: r1.alive() and r1.pipeline.consumed >= 2000, 90, "consumer 1")
        r2.start()
        _wait(lambda: r2.alive() and len([k for k, f in r2.partitions().items() if f["live"]])
              == 1 and len([k for k, f in r1.partitions().items() if f["live"]]) == 1, 90,
              "the partitions to be shared", details=r2.describe)
        # each member holds partition p of both topics (the range assignor pairs them)
        for r in (r1, r2):
            held = {(tp.topic, tp.partition) for tp in r.runner.consumer.assignment()}
            assert {p for t, p in held if t == labels} == {p for t, p in held if t == topic}
        _keyed(kafka_bootstrap, topic, s.events[2000:4000])
        _keyed(kafka_bootstrap, labels, s.labels[cut[0]:cut[1]])
        _wait(lambda: r1.pipeline.consumed + r2.pipeline.consumed >= 4000, 60, "both")
        r2.stop()  # leaves after its final checkpoint: consumer 1 takes its partitions back
        _wait(lambda: r1.alive() and len([k for k, f in r1.partitions().items() if f["live"]])
              == 2, 90, "consumer 1 to take the partitions back", details=r1.describe)
        _keyed(kafka_bootstrap, topic, s.events[4000:])
        _keyed(kafka_bootstrap, labels, s.labels[cut[1]:])
        _wait(lambda: _joined(cfg, topic) == len(s.labels), 60, "every label joined",
              details=lambda: f"{_joined(cfg, topic)} of {len(s.labels)}")
    finally:
        r1.stop()
        if r2.thread.is_alive():
            r2.stop()
    counts: dict[str, int] = {}
    for (m, t, _), cp in checkpoints(load_config(cfg)).items():
        if m == "lm" and t == topic:
            for k, v in cp.state["labels"]["counts"].items():
                counts[k] = counts.get(k, 0) + v
    assert counts.get("joined") == len(s.labels), counts
    assert not counts.get("duplicate") and not counts.get("late") and not counts.get("evicted")
    print(f"\n[labels rebalance] {len(s.labels)} labels joined once across a join and a leave; "
          f"{counts}")


def test_a_concept_drift_opens_a_model_quality_episode_on_that_model_only(
        kafka_bootstrap, make_topic, workdir):
    """A change of P(y|x) of model lm with unchanged inputs, on a real broker (2 + 2
    partitions, label delays of 0-60 s): model-quality episodes open on lm and on no other
    model, and no input-drift episode opens anywhere; each gives an open record on the
    drift-events topic."""
    from stream.sinks.driftevents import DriftEventWriter

    topic, labels, drift_topic = (make_topic(partitions=2), make_topic(partitions=2),
                                  make_topic(partitions=1))
    half = 3000
    clean = labelled_stream(51, half, dt=0.1, max_delay=60.0)
    drift = labelled_stream(52, half, dt=0.1, max_delay=60.0, flip=0.3, start=half)
    lm_labels = sorted(clean.labels + drift.labels, key=lambda m: orjson.loads(m)["ts"])

    def other(m: bytes) -> bytes:  # model "other": the same clean traffic, its own ids
        return m.replace(b'"model":"lm"', b'"model":"other"').replace(b'"id":"r', b'"id":"o')

    quiet = labelled_stream(53, 2 * half, dt=0.1, max_delay=60.0)
    cfg, port = _config(workdir, kafka_bootstrap, topic, labels, f"c-{topic}", drift_topic)
    resolve_baselines(load_config(cfg))
    run = StreamdriftRun(cfg, port=port, name="concept")
    try:
        events = [e for pair in zip(clean.events + drift.events,
                                    [other(m) for m in quiet.events], strict=True)
                  for e in pair]
        _keyed(kafka_bootstrap, topic, events)
        _keyed(kafka_bootstrap, labels,
               sorted(lm_labels + [other(m) for m in quiet.labels],
                      key=lambda m: orjson.loads(m)["ts"]))
        run.wait_consumed(len(events))
        for model, n in (("lm", len(lm_labels)), ("other", len(quiet.labels))):
            _wait(lambda model=model, n=n: run.value("streamdrift_labels_total", model=model,
                                                     outcome="joined") >= n, 60,
                  f"the labels of {model} joined", details=lambda: _label_series(run))
        _wait(lambda: run.logs("model quality episode opened"), 30,
              "a model-quality episode", details=run.log_tail)
        opened = run.logs("model quality episode opened")
        active = {m: run.value("streamdrift_concept_drift_active", model=m)
                  for m in ("lm", "other")}
        alarms = {m: run.value("streamdrift_concept_drift_alarms_total", model=m)
                  for m in ("lm", "other")}
        input_alarms = run.logs("drift alarm")
        reader = DriftEventWriter(drift_topic, {"bootstrap_servers": kafka_bootstrap},
                                  lambda result, n: None)

        def written() -> list[dict[str, Any]]:  # read back as a restore would
            got = list(reader._read_since(0, 20))
            return got if len(got) >= len(opened) else []

        records = _wait(written, 30, "the model-quality records", details=run.log_tail)
        run.check_alive()
    finally:
        run.stop(check=True)
    # the records of the model-quality episodes: one open per episode, on lm only
    assert sorted((r["type"], r["model"], r["column"], r["role"], r["detectors"][0],
                   r["partition"]) for r in records) == sorted(
        ("open", "lm", "(labels)", "quality", "concept", r["partition"][1]) for r in opened), \
        records
    assert {r["model"] for r in opened} == {"lm"}, opened
    # one episode per inference partition at most (each partition's join has its detector)
    assert 1 <= len(opened) <= 2 and alarms == {"lm": len(opened), "other": 0}, (opened, alarms)
    assert active == {"lm": 1, "other": 0}
    assert input_alarms == [], input_alarms  # the inputs never changed
    # opened by labels of the drifted predictions (event time from T0 + half * dt on)
    first = min(r["label_event_time"] for r in opened) - T0
    assert first >= half * 0.1, f"opened at label time T0 + {first:.1f} s, before the drift"
    print(f"\n[concept drift on the broker] model-quality episodes {len(opened)} on lm "
          f"(partitions {sorted(tuple(r['partition']) for r in opened)}), none on other; "
          f"input alarms 0; first opened by labels at T0 + {first:.1f} s (drift from "
          f"T0 + {half * 0.1:.0f} s)")
