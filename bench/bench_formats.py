"""Benchmark of the ``open-inference`` decoder against JSON events and a naive loop.

The same rows (model ``credit``: a 2-column tensor ``x``, ``amount`` with 3 % nulls, a
BYTES tensor ``country``, an unconfigured 3-column tensor, the prediction ``score``) are
decoded, in the same run and interleaved, as:

* JSON events, one per row, by ``stream.formats.json.BatchDecoder`` (msgspec path);
* OIP requests and responses of 1, 8 and 64 rows each (each response one batch behind
  its request) by ``stream.formats.oip.OipDecoder``;
* the same OIP messages by a naive loop a user would write: ``orjson.loads`` per
  message, a dict per message joining request and response by ``id``, and a Python loop
  over rows x columns appending floats and strings to lists, then ``np.array``;
* the same rows as Avro records in the Confluent wire format by
  ``stream.formats.avro.AvroDecoder`` and by a naive loop (``fastavro.schemaless_reader``
  per message, a Python loop over the columns).

Poll batches of 2,000 messages; CPU time (``time.process_time``), best of the passes.
Prints microseconds per row and per message and the ratios.

    .venv/bin/python bench/bench_formats.py [--rows 40000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from stream.config import Config, parse_config
from stream.formats.avro import AvroDecoder
from stream.formats.json import BatchDecoder
from stream.formats.oip import OipDecoder

BATCH = 2_000
COUNTRIES = ("de", "fr", "it", "es", "nl")
JSON_COLUMNS = [("x1", "f.x1", "numeric"), ("x2", "f.x2", "numeric"),
                ("amount", "f.amount", "numeric"), ("country", "f.country", "categorical")]
OIP_COLUMNS = [("x1", "inputs.x.0", "numeric"), ("x2", "inputs.x.1", "numeric"),
               ("amount", "inputs.amount", "numeric"),
               ("country", "inputs.country", "categorical")]


AVRO_SCHEMA = {"type": "record", "name": "Event", "fields": [
    {"name": "model", "type": "string"},
    {"name": "f", "type": {"type": "record", "name": "F", "fields": [
        {"name": "x1", "type": "double"}, {"name": "x2", "type": "double"},
        {"name": "amount", "type": ["null", "double"]}, {"name": "country", "type": "string"}]}},
    {"name": "p", "type": {"type": "record", "name": "P", "fields": [
        {"name": "score", "type": "double"}]}}]}


def config(fmt: str) -> Config:
    cols = OIP_COLUMNS if fmt == "open-inference" else JSON_COLUMNS
    score = "outputs.score" if fmt == "open-inference" else "p.score"
    select = {"field": "model_name", "equals": "credit"} if fmt == "open-inference" else \
        {"field": "model", "equals": "credit"}
    extra: dict[str, Any] = {"avro": {"registry_url": "http://unused"}} if fmt == "avro" else {}
    return parse_config({"source": {"format": fmt, **extra}, "models": [{
        "name": "credit", "select": select, "baseline": {"file": "b.json"},
        "features": [{"name": n, "path": p, "type": t} for n, p, t in cols],
        "predictions": [{"name": "score", "path": score, "type": "numeric"}]}]}, "/")


def rows(n: int, seed: int = 1) -> dict[str, list[Any]]:
    rng = np.random.default_rng(seed)
    amount: list[Any] = np.round(rng.lognormal(3.0, 1.0, n), 2).tolist()
    for i in np.flatnonzero(rng.random(n) < 0.03).tolist():
        amount[i] = None
    return {"x1": rng.normal(0, 1, n).tolist(), "x2": rng.normal(5, 2, n).tolist(),
            "amount": amount,
            "country": [COUNTRIES[i] for i in rng.integers(0, 5, n).tolist()],
            "score": rng.random(n).tolist()}


def json_events(r: dict[str, list[Any]]) -> list[bytes]:
    return [orjson.dumps({"model": "credit", "f": {"x1": r["x1"][i], "x2": r["x2"][i],
                                                   "amount": r["amount"][i],
                                                   "country": r["country"][i]},
                          "p": {"score": r["score"][i]}}) for i in range(len(r["x1"]))]


def oip_messages(r: dict[str, list[Any]], per: int) -> list[bytes]:
    n = len(r["x1"])
    reqs, resps = [], []
    for k, a in enumerate(range(0, n, per)):
        b = min(n, a + per)
        x = [v for i in range(a, b) for v in (r["x1"][i], r["x2"][i])]
        reqs.append(orjson.dumps({"id": f"r{k}", "inputs": [
            {"name": "x", "shape": [b - a, 2], "datatype": "FP64", "data": x},
            {"name": "amount", "shape": [b - a], "datatype": "FP64", "data": r["amount"][a:b]},
            {"name": "country", "shape": [b - a], "datatype": "BYTES",
             "data": r["country"][a:b]},
            {"name": "unused", "shape": [b - a, 3], "datatype": "INT32",
             "data": [7] * (3 * (b - a))}]}))
        resps.append(orjson.dumps({"id": f"r{k}", "model_name": "credit", "outputs": [
            {"name": "score", "shape": [b - a, 1], "datatype": "FP32",
             "data": r["score"][a:b]}]}))
    out = []
    for k, req in enumerate(reqs):
        out.append(req)
        if k:
            out.append(resps[k - 1])
    out.append(resps[-1])
    return out


def avro_messages(events: list[bytes]) -> list[bytes]:
    import io

    import fastavro

    schema = fastavro.parse_schema(AVRO_SCHEMA)
    out = []
    for e in events:
        body = io.BytesIO()
        fastavro.schemaless_writer(body, schema, orjson.loads(e))
        out.append(b"\x00" + (1).to_bytes(4, "big") + body.getvalue())
    return out


class NaiveAvro:
    """fastavro per message, a Python loop over the columns."""

    def __init__(self) -> None:
        import fastavro

        self.schema = fastavro.parse_schema(AVRO_SCHEMA)
        self.read = fastavro.schemaless_reader

    def decode(self, messages: list[bytes]) -> int:
        import io

        cols: dict[str, list[Any]] = {"x1": [], "x2": [], "amount": [], "country": [],
                                      "score": []}
        for m in messages:
            rec = self.read(io.BytesIO(m[5:]), self.schema, None)
            f = rec["f"]
            cols["x1"].append(f["x1"])
            cols["x2"].append(f["x2"])
            a = f["amount"]
            cols["amount"].append(float("nan") if a is None else a)
            cols["country"].append(f["country"])
            cols["score"].append(rec["p"]["score"])
        arrays = {k: np.array(v, dtype=object if k == "country" else float)
                  for k, v in cols.items()}
        return len(arrays["x1"])


class Naive:
    """The loop a user would write: a dict per message, Python over rows x columns."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, Any]] = {}

    def decode(self, messages: list[bytes]) -> int:
        cols: dict[str, list[Any]] = {"x1": [], "x2": [], "amount": [], "country": [],
                                      "score": []}
        for m in messages:
            try:
                ev = orjson.loads(m)
            except orjson.JSONDecodeError:
                continue
            other = self.pending.pop(ev.get("id"), None)
            if other is None:
                self.pending[ev.get("id")] = ev
                continue
            req, resp = (other, ev) if "outputs" in ev else (ev, other)
            ins = {t["name"]: t for t in req["inputs"]}
            outs = {t["name"]: t for t in resp["outputs"]}
            x, amount = ins["x"]["data"], ins["amount"]["data"]
            country, score = ins["country"]["data"], outs["score"]["data"]
            for i in range(ins["x"]["shape"][0]):
                row = x[i] if isinstance(x[i], list) else x[2 * i:2 * i + 2]
                cols["x1"].append(float(row[0]))
                cols["x2"].append(float(row[1]))
                a = amount[i]
                cols["amount"].append(float("nan") if a is None else float(a))
                cols["country"].append(country[i])
                cols["score"].append(float(score[i]))
        arrays = {k: np.array(v, dtype=object if k == "country" else float)
                  for k, v in cols.items()}
        return len(arrays["x1"])


def counting(decoder: Any) -> Callable[[list[bytes]], int]:
    """A decode function that returns the rows decoded."""
    return lambda batch: decoder.decode(batch).n_events


def timed(decode: Callable[[list[bytes]], int], messages: list[bytes]) -> tuple[float, int]:
    t0 = time.process_time()
    n = 0
    for i in range(0, len(messages), BATCH):
        n += decode(messages[i:i + BATCH])
    return time.process_time() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    r = rows(args.rows)
    cases: dict[str, tuple[Callable[[], Callable[[list[bytes]], int]], list[bytes]]] = {
        "json events, BatchDecoder": (lambda: counting(BatchDecoder(config("json"))),
                                      json_events(r))}
    for per in (1, 8, 64):
        msgs = oip_messages(r, per)
        cases[f"oip {per} rows/message, OipDecoder"] = (
            lambda: counting(OipDecoder(config("open-inference"))), msgs)
        cases[f"oip {per} rows/message, naive loop"] = (lambda: Naive().decode, msgs)
    avro = avro_messages(cases["json events, BatchDecoder"][1])
    cases["avro records, AvroDecoder"] = (
        lambda: counting(AvroDecoder(config("avro"), schemas={1: AVRO_SCHEMA})), avro)
    cases["avro records, naive loop"] = (lambda: NaiveAvro().decode, avro)
    best: dict[str, tuple[float, int, int]] = {}
    for _ in range(args.repeat):
        for name, (make, msgs) in cases.items():
            took, n = timed(make(), msgs)
            if name not in best or took < best[name][0]:
                best[name] = (took, n, len(msgs))
    base = best["json events, BatchDecoder"]
    print("| case | µs/row | µs/message | rows | vs JSON events | naive / decoder |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, (took, n, m) in best.items():
        naive = ""
        if name.endswith(("OipDecoder", "AvroDecoder")):
            other = best[name.replace("OipDecoder", "naive loop")
                         .replace("AvroDecoder", "naive loop")]
            naive = f"{(other[0] / other[1]) / (took / n):.2f}×"
        print(f"| {name} | {took / n * 1e6:.2f} | {took / m * 1e6:.2f} | {n} | "
              f"{(took / n) / (base[0] / base[1]):.2f}× | {naive} |")


if __name__ == "__main__":
    main()
