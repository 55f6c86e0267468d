"""The pool member's CPU per event with several writers, without a broker (issue 14).

With ``source.repartition.pooled`` and ``writers: several`` one process folds every
monitor's pool records (stream/runtime/pool.py, detectors/cusum_keyed.py): a serial point
of the scale-out.  This builds the version-2 records the monitors publish
(:func:`stream.runtime.poolkeys.record_of`) for a stream of ``--events`` events over
``--internal`` internal partitions and ``--writers`` first-stage writers (keys
``(Kafka timestamp in ms, generation, writer, writer position)``, ``--rate`` events per
millisecond, each partition's records in key order as its merge releases them,
``--per-record`` messages per record, the partitions' records interleaved by time, or
partition ``p``'s as if ``p * --lag-ms`` later: a monitor behind another, as the process
that also holds the pool is, makes the member hold many messages), three
pooled columns (m1's x1, x2 and score), and feeds them to a :class:`PoolMember`'s
``_take`` as its poll loop does, with a checkpoint state every ``--state-every`` records.

Reported: microseconds of CPU per event of the monitors' packing and of the member's
steps (``--profile``: cProfile's table of the member), and ``--compare REF``: the same
records fed to the member of another checkout (``REF``, a git worktree or directory with
the old code) in alternating repetitions, the median ratio of CPU times, and whether both
folded the same CUSUMs and alarms bit for bit.

Usage::

    PYTHONPATH=$PWD python bench/bench_pool_member.py --events 3000000 --profile
    PYTHONPATH=$PWD python bench/bench_pool_member.py --events 1000000 --compare /tmp/old
    PYTHONPATH=$PWD python bench/bench_pool_member.py --per-record 1500 --lag-ms 5000 \
        --per-poll 3 --compare /tmp/old                     # held past the bound: forced
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if "PYTHONPATH" not in os.environ:  # (--compare: the checkout is the worker's PYTHONPATH)
    sys.path.insert(0, str(REPO))

COLUMNS = (("m1", "x1"), ("m1", "x2"), ("m1", "score"))


def stream_records(events: int, internal: int, writers: int, per_record: int, rate: int,
                   seed: int, shift_at: int | None = None, lag_ms: int = 0,
                   ) -> tuple[list[bytes], float]:
    """The pool records of the stream (see the module) in their order on the pool topic,
    and the CPU seconds their packing took (:func:`poolkeys.record_of`)."""
    from stream.runtime import poolkeys
    from stream.runtime.pooltap import Taken

    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000 + np.arange(events, dtype=np.int64) // rate
    part = rng.integers(0, internal, events)
    writer = rng.integers(0, writers, events)
    wpos = np.empty(events, dtype=np.int64)
    for w in range(writers):
        mine = writer == w
        wpos[mine] = np.arange(int(mine.sum()))
    z = rng.normal(0.0, 1.0, (len(COLUMNS), events))
    if shift_at is not None:
        z[0, shift_at:] += 0.5
    times = ts / 1000.0
    batches: list[tuple[int, int, bytes]] = []  # (last timestamp, partition, record)
    packing = 0.0
    for p in range(internal):
        idx = np.flatnonzero(part == p)
        keys = np.stack([ts[idx], np.ones(idx.size, np.int64), writer[idx], wpos[idx]], 1)
        order = np.lexsort(keys.T[::-1])
        idx, keys = idx[order], keys[order]
        for s in range(0, idx.size, per_record):
            e = min(s + per_record, idx.size)
            taken = Taken()
            at = np.arange(e - s, dtype=np.int64)
            for c, col in enumerate(COLUMNS):
                taken.parts[col] = [(at, z[c, idx[s:e]], times[idx[s:e]])]
            promise = tuple(int(x) for x in keys[e - 1])
            t0 = time.process_time()
            rec = poolkeys.record_of(taken, p, 1, s, keys[s:e], promise)  # type: ignore[arg-type]
            packing += time.process_time() - t0
            batches.append((int(keys[e - 1, 0]) + p * lag_ms, p, rec))
    batches.sort(key=lambda b: (b[0], b[1]))
    return [b[2] for b in batches], packing


class _Record:
    def __init__(self, value: bytes, offset: int) -> None:
        self.value, self.offset = value, offset


def member() -> Any:
    """A pool member holding the pool of m1's configuration (no broker: it is only fed)."""
    from stream.config import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from stream.runtime.pool import PoolMember
    from tests.support.configs import m1_config, write_config
    from tests.support.events import CLEAN, m1_events
    from tests.support.events import COLUMNS as M1

    d = Path(tempfile.mkdtemp(prefix="poolmember-"))
    (d / "reference.jsonl").write_bytes(b"\n".join(m1_events(77, [(5000, CLEAN)], M1)))
    data = m1_config(bootstrap="k:9092", topic="t", group="g", port=0,
                     detection={"false_alarm_events": 10_000_000, "window": 1000,
                                "cadence": 50})
    data["source"]["repartition"] = {"topic": "t-rp", "partitions": 2, "pooled": True,
                                     "pool_topic": "t-pool", "writers": "several"}
    config = load_config(write_config(d / "c.yaml", data))
    pipe = Pipeline(config, resolve_baselines(config))
    m = PoolMember(config, pipe)
    m.merge = m._merge(__import__("stream.runtime.pool", fromlist=["x"]).pool_columns(pipe),
                       None, None)
    return m


def end_of_poll(m: Any) -> None:
    """What the member does after a poll's records (the old code: nothing)."""
    if hasattr(m.merge, "flush"):
        with m.lock:
            m._advance()


def feed(records: list[bytes], state_every: int, prof: Any = None, per_poll: int = 1,
         ) -> tuple[float, str, Any]:
    """CPU seconds of the member over ``records``, a digest of what it folded (the
    CUSUMs' arrays, the alarms, the counters) and the member."""
    m = member()
    warm = member()  # (the kernels compiled or loaded before the clock starts)
    for i, r in enumerate(records[:4]):
        warm._take(_Record(r, i))
    end_of_poll(warm)
    if prof is not None:
        prof.enable()
    t0 = time.process_time()
    for i, r in enumerate(records):
        m._take(_Record(r, i))
        if i % per_poll == per_poll - 1 or i == len(records) - 1:
            end_of_poll(m)
        if state_every and i % state_every == state_every - 1:
            m.merge.state()
            m.merge.resume_offset()
    cpu = time.process_time() - t0
    if prof is not None:
        prof.disable()
    h = hashlib.sha256()
    for k, d in sorted(m.merge.columns.items()):
        h.update(repr(k).encode() + d._f.tobytes() + d._i.tobytes())
    h.update(repr([(a.model, a.column, a.position, a.partition, a.statistic, a.threshold,
                    a.direction, a.kind, a.event_time) for a in m.alarms]).encode())
    g = m.merge
    h.update(repr((g.folded, g.pending, g.late, g.forced, g.duplicates, g.frontier)).encode())
    return cpu, h.hexdigest(), m


def _child(args: argparse.Namespace, path: str) -> None:
    """(--worker) Feed the records in ``path`` and print the CPU seconds and digest."""
    records = _load(path)
    cpu, digest, m = feed(records, args.state_every, per_poll=args.per_poll)
    print(json.dumps({"cpu": cpu, "digest": digest, "folded": m.merge.folded,
                      "alarms": len(m.alarms)}))


def _save(records: list[bytes], path: str) -> None:
    with open(path, "wb") as f:
        for r in records:
            f.write(len(r).to_bytes(4, "little"))
            f.write(r)


def _load(path: str) -> list[bytes]:
    out = []
    data = Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        out.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


def _run(root: Path, args: argparse.Namespace, path: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", path,
                          "--state-every", str(args.state_every),
                          "--per-poll", str(args.per_poll)],
                         env=env, cwd=root, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--internal", type=int, default=2)
    p.add_argument("--writers", type=int, default=2)
    p.add_argument("--per-record", type=int, default=1000,
                   help="messages per pool record (a monitor's poll of one partition)")
    p.add_argument("--rate", type=int, default=100, help="events per millisecond")
    p.add_argument("--state-every", type=int, default=500)
    p.add_argument("--per-poll", type=int, default=20,
                   help="records per poll of the member (at most 500: POLL_RECORDS)")
    p.add_argument("--lag-ms", type=int, default=0,
                   help="partition p's records reach the pool topic as if p * LAG_MS later "
                        "(a monitor behind another: the member holds more)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--compare", help="another checkout: the old code, run in turn")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        _child(args, args.worker)
        return
    records, packing = stream_records(args.events, args.internal, args.writers,
                                      args.per_record, args.rate, args.seed,
                                      shift_at=args.events // 2, lag_ms=args.lag_ms)
    n = args.events
    print(f"{len(records)} records, {sum(map(len, records)) / len(records):,.0f} bytes each; "
          f"packing (poolkeys.record_of) {packing / n * 1e6:.3f} us/event")
    if args.compare:
        with tempfile.NamedTemporaryFile(suffix=".rec", delete=False) as f:
            path = f.name
        _save(records, path)
        new, old = [], []
        try:
            for _ in range(args.repeat):
                old.append(_run(Path(args.compare), args, path))
                new.append(_run(REPO, args, path))
        finally:
            os.unlink(path)
        same = len({r["digest"] for r in old + new}) == 1
        ratios = [o["cpu"] / w["cpu"] for o, w in zip(old, new, strict=True)]
        print(f"old: {[round(r['cpu'], 2) for r in old]} CPU-s, median "
              f"{statistics.median(r['cpu'] for r in old) / n * 1e6:.3f} us/event")
        print(f"new: {[round(r['cpu'], 2) for r in new]} CPU-s, median "
              f"{statistics.median(r['cpu'] for r in new) / n * 1e6:.3f} us/event")
        print(f"old / new: {[round(r, 2) for r in ratios]}, median "
              f"{statistics.median(ratios):.2f}x; folded {new[0]['folded']:,}, alarms "
              f"{new[0]['alarms']}; same CUSUMs, alarms and counters: {same}")
        return
    prof = cProfile.Profile() if args.profile else None
    cpu, digest, m = feed(records, args.state_every, prof, args.per_poll)
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    print(f"member: {cpu / n * 1e6:.3f} us/event ({cpu:.2f} CPU-s), folded "
          f"{m.merge.folded:,}, alarms {len(m.alarms)}, late {m.merge.late}, "
          f"forced {m.merge.forced}; digest {digest[:16]}")


if __name__ == "__main__":
    main()
