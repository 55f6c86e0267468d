"""Columnar JSON parsers against the columnar decoder, on bench_replay's stream.

Issue #17 asks for a decode path that never builds a Python object per event.  This
measures the candidates reachable here on the data of ``bench/bench_replay.py``
(22-column events of two models, ~633 bytes each), in one process, one thread,
interleaved, CPU time, best of ``--repeat`` passes:

* ``columnar``: ``ColumnarDecoder.decode`` (today's default: typed msgspec Structs, one
  ``np.fromiter`` per column), the whole ``DecodedBatch``;
* ``scan`` / ``scan_0.5%``: ``ScanDecoder.decode`` (the default since 2026-12-04: the
  numba scanner of :mod:`stream.formats.scan`, the careful decoder for the rows it
  flags), the whole ``DecodedBatch``, on the clean and the 0.5 % malformed stream;
* ``msgspec_parse``: its msgspec decode alone (one Struct per event, no columns);
* ``arrow``: ``pyarrow.json.read_json`` of the batch joined by newlines, with an explicit
  schema and unexpected fields ignored, then numpy columns and dictionary-encoded
  categories (category codes with a per-batch dictionary), without routing; and
  ``arrow_parse``, the ``read_json`` call alone;
* ``arrow_<k>``: the same ``read_json`` in calls of ``k`` messages (its cost per call);
* ``arrow_0.5%``: ``read_json`` on a stream with 0.5 % malformed lines, with the least
  any fast path must do: messages that are not one object on one line, or hold a
  ``NaN``/``Infinity`` literal, set aside first (one Python check per message, which
  favours Arrow); then one call per chunk of 256, and when Arrow refuses a chunk
  (``... in row K``: a type mismatch, a truncated line, a number beyond the double
  range), message K is set aside and the rows before and after it are read again;
* ``polars_parse``: ``polars.read_ndjson`` with the same schema (parse only);
* ``simdjson``: ``pysimdjson``'s parser per message, the 15 numbers read per event (it
  gives Python objects per value: a floor, not a decoder).

    pip install pyarrow polars pysimdjson   # only for this benchmark
    PYTHONPATH=$PWD .venv/bin/python bench/bench_decode_candidates.py [--seed 17]
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_replay as replay  # noqa: E402

BATCH = 5_000
_ROW = re.compile(r"in row (\d+)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=17)
    args = parser.parse_args()

    import pyarrow as pa
    import pyarrow.json as pj

    from stream.config.load import load_config
    from stream.engine.segments import decode_config
    from stream.formats.columnar import ColumnarDecoder
    from stream.formats.scan import ScanDecoder

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    config = decode_config(load_config(replay.write_config(Path(tempfile.mkdtemp()))))
    clean = replay.make_lines(args.events, 0.0, args.seed)
    dirty = replay.make_lines(args.events, 0.005, args.seed)
    n = len(clean)
    batches = [clean[i:i + BATCH] for i in range(0, n, BATCH)]
    dirty_batches = [dirty[i:i + BATCH] for i in range(0, n, BATCH)]
    numeric = [f"num_{i}" for i in range(replay.N_NUMERIC)]
    categorical = [f"cat_{i}" for i in range(replay.N_CATEGORICAL)]
    schema = pa.schema([
        ("model", pa.string()), ("ts", pa.float64()),
        ("features", pa.struct([(c, pa.float64()) for c in numeric]
                               + [(c, pa.string()) for c in categorical])),
        ("prediction", pa.struct([("score", pa.float64()), ("label", pa.string())])),
    ])
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore",
                              newlines_in_values=False)

    def read(lines: list[bytes]) -> Any:
        data = b"\n".join(lines)
        return pj.read_json(pa.py_buffer(data), parse_options=options,
                            read_options=pj.ReadOptions(use_threads=False,
                                                        block_size=len(data) + 64))

    def columns(table: Any) -> None:
        for name, keys in (("features", (*numeric, *categorical)),
                           ("prediction", ("score", "label"))):
            struct = table.column(name).combine_chunks()
            for _key, child in zip(keys, struct.flatten(), strict=True):
                if pa.types.is_string(child.type):
                    codes = child.dictionary_encode()
                    codes.indices.to_numpy(zero_copy_only=False)
                    codes.dictionary.to_pylist()
                else:
                    child.to_numpy(zero_copy_only=False)
        table.column("model").combine_chunks().dictionary_encode()
        table.column("ts").to_numpy()

    def arrow(bs: list[list[bytes]]) -> None:
        for b in bs:
            columns(read(b))

    def shaped(m: bytes) -> bool:
        return (m[:1] == b"{" and m[-1:] == b"}" and b"\n" not in m and b"\r" not in m
                and b"NaN" not in m and b"Infinity" not in m)

    def arrow_recovering(bs: list[list[bytes]]) -> int:
        aside = 0
        for b in bs:
            good = [m for m in b if type(m) is bytes and shaped(m)]
            aside += len(b) - len(good)
            todo = [good[i:i + 256] for i in range(0, len(good), 256)]
            while todo:
                chunk = todo.pop()
                if not chunk:
                    continue
                try:
                    columns(read(chunk))
                except pa.ArrowInvalid as exc:
                    found = _ROW.search(str(exc))
                    k = int(found.group(1)) if found else len(chunk) // 2
                    aside += 1
                    todo += [chunk[:k], chunk[k + 1:]]
        return aside

    columnar = ColumnarDecoder(config)
    decode_one = columnar._decode_one
    scanner = ScanDecoder(config)
    scanner.decode(batches[0])  # the kernel: compiled or loaded from numba's cache
    assert decode_one is not None
    cases: dict[str, Callable[[], Any]] = {
        "columnar": lambda: [columnar.decode(b) for b in batches],
        "columnar_0.5%": lambda: [columnar.decode(b) for b in dirty_batches],
        "scan": lambda: [scanner.decode(b) for b in batches],
        "scan_0.5%": lambda: [scanner.decode(b) for b in dirty_batches],
        "msgspec_parse": lambda: [list(map(decode_one, b)) for b in batches],
        "arrow": lambda: arrow(batches),
        "arrow_0.5%": lambda: arrow_recovering(dirty_batches),
        "arrow_parse": lambda: [read(b) for b in batches],
    }
    for k in (64, 256, 1024):
        cases[f"arrow_parse_{k}"] = lambda k=k: [read(b[i:i + k]) for b in batches
                                                 for i in range(0, len(b), k)]
    try:
        import polars as pl

        pl_schema = {"model": pl.String, "ts": pl.Float64,
                     "features": pl.Struct({**{c: pl.Float64 for c in numeric},
                                            **{c: pl.String for c in categorical}}),
                     "prediction": pl.Struct({"score": pl.Float64, "label": pl.String})}
        cases["polars_parse"] = lambda: [
            pl.read_ndjson(io.BytesIO(b"\n".join(b)), schema=pl_schema) for b in batches]
    except ImportError:
        print("polars not installed: skipped")
    try:
        import simdjson

        def simd() -> None:
            parser = simdjson.Parser()
            for b in batches:
                for line in b:
                    doc = parser.parse(line)
                    features = doc["features"]
                    [features[c] for c in numeric]
                    del features, doc

        cases["simdjson"] = simd
    except ImportError:
        print("pysimdjson not installed: skipped")

    best: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, fn in cases.items():
            t0 = time.process_time()
            fn()
            best[name] = min(best.get(name, math.inf), time.process_time() - t0)
    print(f"{n:,} lines of {sum(map(len, clean)) / n:.0f} bytes, seed {args.seed}, "
          f"batches of {BATCH:,}; CPU s, best of {args.repeat}; load {os.getloadavg()}")
    for name, s in best.items():
        print(f"{name:<18}{s:8.3f} s {s / n * 1e6:7.2f} µs/line  "
              f"{best['columnar'] / s:5.2f}x columnar")
    bad = sum(sum(columnar.decode(b).invalid.values()) for b in dirty_batches)
    print(f"0.5% stream: {bad:,} messages rejected by the decoder; set aside by the Arrow "
          f"path: {arrow_recovering(dirty_batches):,} (each read again by the careful path)")
    for who in ("columnar", "scan", "arrow"):
        print(f"{who}, 0.5% malformed vs clean: {best[f'{who}_0.5%'] / best[who]:.2f} "
              "(time per line, ratio)")


if __name__ == "__main__":
    main()
