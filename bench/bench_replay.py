"""Steady-state replay against the naive loop a user would write, and decode alone.

The stream is like issue #17's: 22-column events of two models (``credit`` and
``fraud``; per model 15 numeric and 5 categorical features, a numeric score and a
categorical label), about 750 bytes of JSON each with ids and client fields that are not
read, and a share of malformed lines of the kinds a real topic carries (truncated or not
JSON, invalid UTF-8, not an object, unknown model, wrong-typed values, ``NaN`` literals,
numbers beyond the double range).

Everything runs in one process, one thread, interleaved, and every figure is CPU time
(``time.process_time``), best of ``--repeat`` passes, so that the load of a shared
machine disturbs the ratios little.  Reported:

* **replay, steady state**: ``Pipeline.process`` (decode, route, every default detector)
  over batches of 5,000 lines (what ``replay`` feeds it), on a fresh pipeline after one
  warm-up batch (building the pipeline and the warm-up batch are not timed); with the
  columnar decoder, with the scanner (the default ``json`` decoder) and with
  ``BatchDecoder``;
* **naive loop**: what a user would write: batches of lines, ``orjson.loads`` per line,
  skip what is not an object of a known model, one current ``river.drift.ADWIN`` per
  numeric column updated per value, a ``collections.Counter`` per categorical column;
* **replay with the scanner, object columns only** (``replay_scan_objects``): the same,
  with the category codes taken out of the scanner's batches, so that the monitors look up
  every value (as before the codes were handed over; same results);
* **decode alone**: ``ColumnarDecoder.decode`` against ``BatchDecoder.decode``, and
  ``ScanDecoder.decode`` (the numba scanner, :mod:`stream.formats.scan`) against both, on
  a clean stream and with malformed lines.

Ratios are against the naive loop (or today's decoder) measured in the same pass.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_replay.py [--events 100000] [--repeat 3]
"""

from __future__ import annotations

import os

for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import orjson  # noqa: E402

MODELS = ("credit", "fraud")
N_NUMERIC = 15
N_CATEGORICAL = 5
BATCH = 5_000
CHOICES = (["DE", "FR", "US", "GB", "ES", "IT", "NL", "PL", "SE", "BR"],
           ["web", "mobile-app", "branch", "partner-api", "call-center"])
LABELS = ["approve", "review", "decline"]

#: malformed lines by kind (the event is the clean one it replaces)
def _damage(rng: random.Random, line: bytes) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        return line[: rng.randrange(1, len(line) - 1)]  # truncated
    if kind == 1:
        return b"not json at all"
    if kind == 2:
        return line[:40] + b"\xff\xfe" + line[40:]  # invalid UTF-8
    if kind == 3:
        return rng.choice([b"[1, 2, 3]", b"42", b"null", b'"credit"'])
    if kind == 4:
        return line.replace(b'"model":"credit"', b'"model":"mortgage"').replace(
            b'"model":"fraud"', b'"model":"mortgage"')
    if kind == 5:
        return line.replace(b'"num_3":', b'"num_3":"12.5","x":', 1)  # a string for a number
    if kind == 6:
        return line.replace(b'"cat_1":', b'"cat_1":["a"],"x":', 1)  # a list for a category
    if kind == 7:
        return line.replace(b'"num_4":', b'"num_4":NaN,"x":', 1)  # Python's json writes this
    if kind == 8:
        return line.replace(b'"num_5":', b'"num_5":1e400,"x":', 1)
    return line.replace(b'"features":', b'"features":3,"x":', 1)  # wrong structure


def columns() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    features = [{"name": f"num_{i}", "path": f"features.num_{i}", "type": "numeric"}
                for i in range(N_NUMERIC)]
    features += [{"name": f"cat_{i}", "path": f"features.cat_{i}", "type": "categorical"}
                 for i in range(N_CATEGORICAL)]
    predictions = [{"name": "score", "path": "prediction.score", "type": "numeric"},
                   {"name": "label", "path": "prediction.label", "type": "categorical"}]
    return features, predictions


def make_event(rng: random.Random, i: int, shift: float = 0.0) -> dict[str, Any]:
    model = MODELS[i % 3 == 2]
    features: dict[str, Any] = {f"num_{j}": round(rng.gauss(100.0 + 10 * j + shift, 30.0), 4)
                                for j in range(N_NUMERIC)}
    features["num_0"] = rng.randrange(18, 90)
    features["num_1"] = rng.random()
    for j in range(N_CATEGORICAL):
        features[f"cat_{j}"] = rng.choice(CHOICES[j % 2])
    return {
        "model": model, "model_version": "2026-11-01", "request_id": f"req-{i:016d}",
        "trace_id": f"{rng.getrandbits(128):032x}", "tenant": "acme-retail-eu",
        "client": {"ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.1", "locale": "de-DE"},
        "ts": 1_790_000_000.0 + i * 0.01, "features": features,
        "prediction": {"score": rng.random(), "label": rng.choice(LABELS)},
    }


def make_lines(n: int, malformed: float, seed: int) -> list[bytes]:
    """``n`` lines of events drawn from ``seed``, a share ``malformed`` of them damaged.

    The events do not depend on ``malformed``: the damage is drawn from generators of
    its own (one draw per line, then one generator per damaged line), so that the streams
    of one seed are the same events, the malformed ones the clean one with some lines
    damaged (those of 0.3 % among those of 0.5 %, in the same ways)."""
    rng = random.Random(seed)
    damage = random.Random(seed + 1_000_003)
    lines = []
    for i in range(n):
        line = orjson.dumps(make_event(rng, i))
        if damage.random() < malformed:
            line = _damage(random.Random(seed * 1_000_003 + i), line)
        lines.append(line)
    return lines


def write_config(workdir: Path) -> Path:
    import yaml

    features, predictions = columns()
    models = [{"name": m, "select": {"field": "model", "equals": m},
               "baseline": {"reference": f"reference-{m}.jsonl"},
               "features": features, "predictions": predictions} for m in MODELS]
    cfg = {"source": {"timestamp": {"path": "ts", "unit": "s"}}, "models": models}
    rng = random.Random(99)
    for m in MODELS:
        ref = [orjson.dumps(e) for e in (make_event(rng, i) for i in range(30_000))
               if e["model"] == m][:8_000]
        (workdir / f"reference-{m}.jsonl").write_bytes(b"\n".join(ref) + b"\n")
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def naive_loop(batches: list[list[bytes]]) -> int:
    """What a user writes: orjson per line, a River ADWIN per numeric column, counts."""
    from river import drift

    features, predictions = columns()
    numeric = [c["name"] for c in features if c["type"] == "numeric"]
    categorical = [c["name"] for c in features if c["type"] == "categorical"]
    adwins = {m: {c: drift.ADWIN() for c in [*numeric, "score"]} for m in MODELS}
    counts: dict[str, dict[str, Counter[Any]]] = {
        m: {c: Counter() for c in [*categorical, "label"]} for m in MODELS}
    alarms = bad = 0
    for batch in batches:
        for line in batch:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                bad += 1
                continue
            if type(event) is not dict or event.get("model") not in adwins:
                bad += 1
                continue
            feats = event.get("features")
            pred = event.get("prediction")
            if type(feats) is not dict or type(pred) is not dict:
                bad += 1
                continue
            dets = adwins[event["model"]]
            cnt = counts[event["model"]]
            for name in numeric:
                value = feats.get(name)
                if type(value) in (int, float) and math.isfinite(value):
                    dets[name].update(value)
                    alarms += dets[name].drift_detected
            value = pred.get("score")
            if type(value) in (int, float):
                dets["score"].update(value)
            for name in categorical:
                value = feats.get(name)
                if type(value) is str:
                    cnt[name][value] += 1
            value = pred.get("label")
            if type(value) is str:
                cnt["label"][value] += 1
    return alarms


def cpu(fn: Callable[[], Any]) -> float:
    """CPU seconds of ``fn()``, or what it returns if it times itself (a float)."""
    t0 = time.process_time()
    took = fn()
    return took if isinstance(took, float) else time.process_time() - t0


def paired_decode(decoders: list[Any], streams: list[list[list[bytes]]], repeat: int
                  ) -> list[float]:
    """CPU seconds of ``decoders[s]`` over ``streams[s]``: batch ``k`` of every stream timed
    one after the other (the order turned each pass), the best of ``repeat`` passes per
    batch, summed.  Paired batch by batch, the streams see the same load."""
    best = [[math.inf] * len(stream) for stream in streams]
    order = list(range(len(streams)))
    for _ in range(repeat):
        for k in range(len(streams[0])):
            for s in order:
                t0 = time.process_time()
                decoders[s].decode(streams[s][k])
                best[s][k] = min(best[s][k], time.process_time() - t0)
        order.reverse()
    return [sum(b) for b in best]


def paired_replay(make_pipeline: Callable[[], Any], streams: list[list[list[bytes]]],
                  repeat: int) -> list[float]:
    """The same for ``Pipeline.process`` over each stream (a fresh pipeline per stream and
    pass, its first batch a warm-up, not timed; batch ``k`` of each at the same state)."""
    best = [[math.inf] * (len(stream) - 1) for stream in streams]
    order = list(range(len(streams)))
    for _ in range(repeat):
        pipelines = [make_pipeline() for _ in streams]
        for s in order:
            pipelines[s].process(streams[s][0])
        for k in range(1, len(streams[0])):
            for s in order:
                t0 = time.process_time()
                pipelines[s].process(streams[s][k], base_index=k * BATCH)
                best[s][k - 1] = min(best[s][k - 1], time.process_time() - t0)
        order.reverse()
    return [sum(b) for b in best]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--malformed", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pair-repeat", type=int, default=7,
                        help="passes of the paired 0.5 %% / clean measurement")
    parser.add_argument("--pairs-only", action="store_true",
                        help="only the paired 0.5 %% / clean measurement of the scanner")
    args = parser.parse_args()
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    from stream.config.load import load_config
    from stream.engine.baselines import resolve_baselines
    from stream.engine.pipeline import Pipeline
    from stream.engine.segments import decode_config
    from stream.formats.batch import ModelBatch
    from stream.formats.json import BatchDecoder

    try:
        from stream.formats.columnar import ColumnarDecoder
    except ImportError:  # before the columnar path
        ColumnarDecoder = None  # type: ignore[assignment,misc]  # noqa: N806
    try:
        from stream.formats.scan import ScanDecoder
    except ImportError:  # before the scanner
        ScanDecoder = None  # type: ignore[assignment,misc]  # noqa: N806

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-replay-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = load_config(write_config(workdir))
    baselines = resolve_baselines(config)
    lines = make_lines(args.events, args.malformed, args.seed)
    clean = make_lines(args.events, 0.0, args.seed)
    bad05 = make_lines(args.events, 0.005, args.seed)
    batches = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    n = len(lines)
    print(f"{n:,} lines of {sum(map(len, lines)) / n:.0f} bytes, "
          f"{args.malformed:.1%} malformed, batches of {BATCH:,}; CPU s, best of {args.repeat}")

    def replay_with(decoder_cls: Any, batches: list[list[bytes]] = batches
                    ) -> Callable[[], Any]:
        def run() -> float:
            # start-up is not steady state: building the monitors from the baselines and
            # the warm-up batch stay outside the timer
            pipeline = Pipeline(config, baselines)
            pipeline.decoder = decoder_cls(decode_config(config))
            pipeline.process(batches[0])  # warm-up: numba, caches
            t0 = time.process_time()
            for k in range(1, len(batches)):
                pipeline.process(batches[k], base_index=k * BATCH)
            return time.process_time() - t0
        return run

    best: dict[str, float] = {}
    cases: dict[str, Callable[[], Any]] = {
        "naive": lambda: naive_loop(batches[1:]),
        "replay_today": replay_with(BatchDecoder),
    }
    if ColumnarDecoder is not None:
        cases["replay_columnar"] = replay_with(ColumnarDecoder)
    if ScanDecoder is not None:
        cases["replay_scan"] = replay_with(ScanDecoder)
        if hasattr(ModelBatch, "coded"):  # since the category codes go to the monitors
            class Uncoded(ScanDecoder):  # type: ignore[misc,valid-type]
                """The scanner's batches without the category codes (object columns)."""

                def decode(self, messages: Any) -> Any:
                    batch = super().decode(messages)
                    for mb in batch.models.values():
                        mb.coded = {}
                    return batch

            cases["replay_scan_objects"] = replay_with(Uncoded)
    dec_cfg = decode_config(config)
    for name, data in (("clean", clean), ("0.3%", lines), ("0.5%", bad05)):
        bs = [data[i:i + BATCH] for i in range(0, len(data), BATCH)]
        if name != "0.3%":
            cases[f"replay_today_{name}"] = replay_with(BatchDecoder, bs)
            if ColumnarDecoder is not None:
                cases[f"replay_columnar_{name}"] = replay_with(ColumnarDecoder, bs)
            if ScanDecoder is not None:
                cases[f"replay_scan_{name}"] = replay_with(ScanDecoder, bs)
        today = BatchDecoder(dec_cfg)
        cases[f"decode_today_{name}"] = lambda d=today, bs=bs: [d.decode(b) for b in bs]
        if ColumnarDecoder is not None:
            col = ColumnarDecoder(dec_cfg)
            cases[f"decode_columnar_{name}"] = lambda d=col, bs=bs: [d.decode(b) for b in bs]
        if ScanDecoder is not None:
            sc = ScanDecoder(dec_cfg)
            sc.decode(bs[0])  # numba: compiled or loaded from its cache before timing
            cases[f"decode_scan_{name}"] = lambda d=sc, bs=bs: [d.decode(b) for b in bs]
    if ScanDecoder is not None:
        streams = [[d[i:i + BATCH] for i in range(0, len(d), BATCH)] for d in (clean, bad05)]
        scanners = [ScanDecoder(dec_cfg) for _ in streams]
        for scanner, stream in zip(scanners, streams, strict=True):
            scanner.decode(stream[0])  # numba: compiled or loaded from its cache
        dec = paired_decode(scanners, streams, args.pair_repeat)

        def scan_pipeline() -> Any:
            pipeline = Pipeline(config, baselines)
            pipeline.decoder = ScanDecoder(dec_cfg)
            return pipeline

        rep = paired_replay(scan_pipeline, streams, args.pair_repeat)
        counter = ScanDecoder(dec_cfg)
        for batch in streams[1]:
            counter.decode(batch)
        damaged = sum(a != b for a, b in zip(clean, bad05, strict=True))
        print(f"paired, scanner, batch by batch, best of {args.pair_repeat} per batch: "
              f"clean and 0.5% malformed, the same events ({damaged} lines damaged, "
              f"{counter.flagged_messages} flagged by the kernel)")
        print(f"  decode alone: clean {dec[0] / n * 1e6:.3f}, 0.5% {dec[1] / n * 1e6:.3f} "
              f"µs/line; 0.5% malformed vs clean: {dec[1] / dec[0]:.3f}")
        steady = n - BATCH
        print(f"  replay:       clean {rep[0] / steady * 1e6:.3f}, 0.5% "
              f"{rep[1] / steady * 1e6:.3f} µs/line; 0.5% malformed vs clean: "
              f"{rep[1] / rep[0]:.3f}")
        if args.pairs_only:
            print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
            return
    for _ in range(args.repeat):
        for name, fn in cases.items():
            best[name] = min(best.get(name, math.inf), cpu(fn))
    steady = n - len(batches[0])
    for name, s in best.items():
        events = steady if not name.startswith("decode") else n
        print(f"{name:<28}{s:8.3f} s  {events / s:>10,.0f} lines/CPU-s  "
              f"{s / events * 1e6:6.2f} µs/line")
    print(f"replay today / naive: {best['naive'] / best['replay_today']:.2f}x")
    if "replay_columnar" in best:
        print(f"replay columnar / naive: {best['naive'] / best['replay_columnar']:.2f}x")
        for name in ("clean", "0.3%", "0.5%"):
            print(f"decode {name}: columnar {best[f'decode_today_{name}'] / best[f'decode_columnar_{name}']:.2f}x today")
    if "replay_scan" in best:
        print(f"replay scan / naive: {best['naive'] / best['replay_scan']:.2f}x")
        print(f"replay scan / replay columnar: "
              f"{best['replay_columnar'] / best['replay_scan']:.2f}x")
        for name in ("clean", "0.3%", "0.5%"):
            print(f"decode {name}: scan {best[f'decode_columnar_{name}'] / best[f'decode_scan_{name}']:.2f}x columnar")
        for name, stream in (("", "0.3%"), ("_clean", "clean"), ("_0.5%", "0.5%")):
            total = best[f"replay_scan{name}"] / steady * 1e6
            decode = best[f"decode_scan_{stream}"] / n * 1e6
            print(f"replay scan {stream}, µs per line: decode {decode:.2f} + the rest "
                  f"{total - decode:.2f} = {total:.2f}")
        if "replay_scan_objects" in best:
            print(f"replay scan, category codes to the monitors / object columns only: "
                  f"{best['replay_scan_objects'] / best['replay_scan']:.3f}x "
                  f"({(best['replay_scan_objects'] - best['replay_scan']) / steady * 1e6:.2f} "
                  "µs per line saved)")
    for what in ("decode", "replay"):
        for who in ("today", "columnar", "scan"):
            if f"{what}_{who}_clean" in best:
                print(f"{what} {who}, 0.5% malformed vs clean: "
                      f"{best[f'{what}_{who}_0.5%'] / best[f'{what}_{who}_clean']:.3f} "
                      "(time per line, ratio)")
    print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
