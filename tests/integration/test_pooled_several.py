"""The pooled CUSUM with several first-stage writers (``writers: several`` with ``pooled:
true``, issue 14) on a real broker.

Two two-stage processes on a topic of 4 partitions keyed by ``c1``: each first stage
forwards its own source partitions (version-3 frames), each monitor merges the writers of
the internal partition it holds and publishes version-2 pool records (its partition's
delivered sequence with the writers' keys and its promise), and the elected pool member
folds them in key order over both internal partitions (detectors/cusum_keyed.py).
Checked: the pool folded every message released (keys equal to the repartition topic's),
none late or forced; its CUSUMs equal, bit for bit, one CUSUM over the pool topic's first
copies sorted by key, and, when no message was forwarded twice, one monitor's CUSUM over
the repartition topic's messages sorted by key; no pooled episode on the clean part, the
x1 episode after a 0.5 σ drift, and the monitors' own CUSUMs of pooled columns muted.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detectors.cusum_keyed import KeyedPoolMerge
from stream.broker import read_to_end
from stream.config import load_config
from stream.engine.baselines import resolve_baselines
from stream.engine.pipeline import Pipeline
from stream.runtime import poolkeys
from stream.runtime.frames import unpack as unpack_frame
from stream.runtime.pool import pool_columns
from tests.integration.test_keyed_topics import _two_processes
from tests.integration.test_pooled import POOLED, _config, _one_monitor, _same
from tests.support.events import CLEAN, COLUMNS, Regime, m1_events
from tests.support.runs import cached_baselines
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

_wait = functools.partial(wait_for, interval=0.2, retry=())


def _keyed_messages(bootstrap: str, rp_topic: str) -> dict[tuple[int, ...], bytes]:
    """key -> message, over the repartition topic's version-3 frames (first copy)."""
    out: dict[tuple[int, ...], bytes] = {}
    for recs in read_to_end(bootstrap, rp_topic).values():
        for r in recs:
            f = unpack_frame(r.value)
            if f.writer is None or f.positions is None:
                continue
            w = f.writer
            for t, p, v in zip(f.timestamps.tolist(), f.positions.tolist(), f.values,
                               strict=True):
                out.setdefault((int(t), w.generation, w.index, int(p)), v or b"")
    return out


def _pool_first_copies(bootstrap: str, pool_topic: str, config: Any) -> dict[str, Any]:
    """One CUSUM per pooled column over the pool topic's first copy of each (partition,
    index) sorted by (key, partition, index); the keys; the epochs per partition."""
    keys: dict[tuple[int, int], tuple[int, ...]] = {}
    values: dict[str, dict[tuple[int, int], np.ndarray]] = {c: {} for c in POOLED}
    epochs: dict[int, set[int]] = {}
    for r in read_to_end(bootstrap, pool_topic)[0]:
        rec = poolkeys.unpack(r.value)
        epochs.setdefault(rec.partition, set()).add(rec.epoch)
        for j, k in enumerate(rec.keys.tolist()):
            at = (rec.partition, rec.start + j)
            if at in keys:
                continue
            keys[at] = tuple(k)
            for c in POOLED:
                v = rec.columns.get(("m1", c))
                values[c][at] = np.empty(0) if v is None else v.values[v.positions == at[1]]
    order = sorted(keys, key=lambda at: (keys[at], at))
    ref = pool_columns(Pipeline(config, resolve_baselines(config)))
    for c in POOLED:
        ref[("m1", c)].update(np.concatenate([values[c][at] for at in order] + [np.empty(0)]))
    return {"cusums": ref, "keys": sorted(keys.values()), "epochs": epochs}


@pytest.mark.parametrize("client", ["kafka-python", "confluent-kafka"])
def test_two_processes_several_writers_pooled_fold_in_key_order_and_catch_the_drift(
        kafka_bootstrap, make_topic, tmp_path: Path, client: str) -> None:
    topic = make_topic(partitions=4)
    (tmp_path / "reference.jsonl").write_bytes(
        b"\n".join(m1_events(77, [(10_000, CLEAN)], COLUMNS)))
    clean, drift = 6_000, 3_000
    events = m1_events(25, [(clean, CLEAN), (drift, Regime(x1_mean=0.5))], COLUMNS)
    cfg = _config(tmp_path, kafka_bootstrap, topic, f"psw-{topic}", client=client,
                  writers="several", heartbeat_ms=200, lateness_ms=500)
    with _two_processes(kafka_bootstrap, topic, events, cfg, cached_baselines(),
                        "psw") as runs:
        last_ts = max(int(r.timestamp) for recs in read_to_end(kafka_bootstrap, topic).values()
                      for r in recs)

        def member() -> Any:
            held = [r.runner.pool for r in runs if r.runner.pool is not None
                    and r.runner.pool.merge is not None]
            return held[0] if len(held) == 1 else None

        def folded() -> bool:
            m = member()
            f = None if m is None else m.merge.frontier
            return f is not None and f[1] >= last_ts and m.merge.pending == 0

        _wait(lambda: all(r.alive() for r in runs) and folded(), 60,
              "the pool to fold past the last event", details=lambda: str(
                  [r.runner.pool.figures() for r in runs if r.runner.pool is not None]))
        pool = member()
        merge = pool.merge
        assert isinstance(merge, KeyedPoolMerge)
        pooled = {c: merge.columns[("m1", c)] for c in POOLED}
        alarms = list(pool.alarms)
        counts = {"late": merge.late, "forced": merge.forced, "skipped": merge.skipped,
                  "stale": merge.stale, "duplicates": merge.duplicates}
        own = {c: sum(r.pipeline.snapshot().models["m1"].columns[c].detectors["cusum"].alarms
                      for r in runs) for c in POOLED}
        processed = sum(r.pipeline.processed["m1"] for r in runs)
    config = load_config(cfg)
    messages = _keyed_messages(kafka_bootstrap, f"{topic}-rp")
    ref = _pool_first_copies(kafka_bootstrap, f"{topic}-pool", config)
    opened = [a for a in alarms if a.kind == "open"]
    at = [round(a.event_time - 1.7e9) - clean for a in opened
          if a.column == "x1" and a.event_time]
    print(f"\n[pooled, several writers, two processes, {client}] {len(events)} events, "
          f"processed {processed}, {len(messages)} keyed messages; pool {counts}; epochs "
          f"{ {p: len(e) for p, e in ref['epochs'].items()} }; pooled alarms "
          f"{[(a.column, a.partition, a.position) for a in opened]}, x1 at {at} events after "
          f"the drift's start; monitors' own CUSUM alarms {own}")
    assert counts["late"] == counts["forced"] == counts["skipped"] == 0
    assert ref["keys"] == sorted(messages)  # the pool covered every message released, once
    for c in POOLED:
        assert _same(pooled[c], ref["cusums"][("m1", c)]), c
    if len(messages) == len(events):  # nothing forwarded twice: one monitor, key order
        single = _one_monitor(config, [messages[k] for k in sorted(messages)])
        for c in POOLED:
            assert _same(pooled[c], single[c]), c
    assert not [a for a in opened if a.column != "x1"]
    assert at and all(d >= 0 for d in at) and at[0] < drift
    assert own == dict.fromkeys(POOLED, 0)
