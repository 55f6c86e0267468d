"""Property: the same rows decode to the same columns as JSON events and as Open Inference
Protocol batches, whatever the values (numbers, nulls, booleans, strings), the batch sizes,
the data layout (flat or nested), the tensor order and where the poll batches are cut."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream.config import parse_config
from stream.formats.batch import DecodedBatch
from stream.formats.json import BatchDecoder
from stream.formats.oip import OipDecoder
from tests.support.oip import JSON_MODEL, OIP_MODEL

NUMERIC = ("x1", "x2", "amount", "score")
numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=64),
                    st.integers(-10**12, 10**12), st.none(), st.booleans(),
                    st.text(max_size=4))
categories = st.one_of(st.text(max_size=6), st.none(), st.integers(-999, 999),
                       st.booleans(), st.sampled_from(["de", "fr", "it"]))
row = st.fixed_dictionaries({**{c: numbers for c in NUMERIC}, "country": categories})


def _config(fmt: str, model: dict[str, Any]) -> Any:
    m = copy.deepcopy(model)
    m["baseline"] = {"file": "b.json"}
    return parse_config({"source": {"format": fmt}, "models": [m]}, "/")


JSON_CFG = _config("json", JSON_MODEL)
OIP_CFG = _config("open-inference", OIP_MODEL)


def _messages(rows: list[dict[str, Any]], sizes: list[int], nested: list[bool],
              orders: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pending: bytes | None = None
    start, k = 0, 0
    while start < len(rows):
        size = sizes[k % len(sizes)]
        part = rows[start:start + size]
        b = len(part)
        x = [[r["x1"], r["x2"]] for r in part]
        inputs = [{"name": "x", "shape": [b, 2], "datatype": "FP64",
                   "data": x if nested[k % len(nested)] else [v for p in x for v in p]},
                  {"name": "amount", "shape": [b], "datatype": "FP64",
                   "data": [r["amount"] for r in part]},
                  {"name": "country", "shape": [b, 1], "datatype": "BYTES",
                   "data": [[r["country"]] for r in part]}]
        if orders[k % len(orders)]:
            inputs.reverse()
        out.append(orjson.dumps({"id": str(k), "inputs": inputs}))
        if pending is not None:
            out.append(pending)
        pending = orjson.dumps({"id": str(k), "model_name": "credit", "outputs": [
            {"name": "score", "shape": [b], "datatype": "FP32",
             "data": [r["score"] for r in part]}]})
        start += b
        k += 1
    if pending is not None:
        out.append(pending)
    return out


def _columns(batches: list[DecodedBatch]) -> dict[str, Any]:
    parts = [b.models["credit"] for b in batches]
    out: dict[str, Any] = {}
    for name in (*NUMERIC, "country"):
        out[name] = (np.concatenate([p.columns[name] for p in parts]),
                     np.concatenate([p.invalid_mask[name] for p in parts]),
                     np.concatenate([p.missing_mask[name] for p in parts]))
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row, min_size=1, max_size=40),
       sizes=st.lists(st.integers(1, 9), min_size=1, max_size=5),
       nested=st.lists(st.booleans(), min_size=1, max_size=4),
       orders=st.lists(st.booleans(), min_size=1, max_size=4),
       cut=st.floats(0, 1))
def test_oip_batches_decode_like_json_events(rows, sizes, nested, orders, cut) -> None:
    events = [orjson.dumps({"model": "credit",
                            "f": {c: r[c] for c in ("x1", "x2", "amount", "country")},
                            "p": {"score": r["score"]}}) for r in rows]
    want = BatchDecoder(JSON_CFG).decode(events)
    messages = _messages(rows, sizes, nested, orders)
    at = int(cut * len(messages))
    dec = OipDecoder(OIP_CFG)
    got = [dec.decode(messages[:at]), dec.decode(messages[at:])]
    assert not dec.pending
    assert [g.invalid for g in got] == [{}, {}] and want.invalid == {}
    assert sum(g.n_events for g in got) == want.n_events == len(rows)
    a, b = _columns(got), _columns([want])
    for name in (*NUMERIC, "country"):
        values, invalid, missing = a[name]
        values_b, invalid_b, missing_b = b[name]
        assert invalid.tolist() == invalid_b.tolist(), name
        assert missing.tolist() == missing_b.tolist(), name
        if name == "country":
            assert values.tolist() == values_b.tolist()
        else:
            np.testing.assert_array_equal(values, values_b)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
              st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=12)
shapes = st.one_of(st.lists(st.integers(-1, 3), max_size=3), json_values)
tensor = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["x", "amount", "country", "score", "other"]),
                       json_values),
     "shape": shapes, "datatype": st.just("FP64"),
     "data": st.one_of(st.lists(st.one_of(st.lists(json_values, max_size=3), json_values),
                                max_size=6), json_values)})
message = st.fixed_dictionaries(
    {}, optional={"id": st.one_of(st.sampled_from(["a", "b", "c"]), json_values),
                  "model_name": st.one_of(st.just("credit"), json_values),
                  "inputs": st.one_of(st.lists(tensor, max_size=4), json_values),
                  "outputs": st.one_of(st.lists(tensor, max_size=3), json_values)})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# found in CI: a pair whose one row has no model_name was rejected (unknown_model) and still
# counted as an event
@example(batches=[[b'{"id":"c","inputs":[]}',
                   b'{"id":"c","outputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[]}]}']],
         max_pending=1)
@given(batches=st.lists(st.lists(st.one_of(message.map(orjson.dumps),
                                           st.binary(max_size=8)), max_size=8),
                        min_size=1, max_size=3),
       max_pending=st.integers(1, 4))
def test_hostile_payloads_never_raise_and_every_message_is_accounted(batches,
                                                                    max_pending) -> None:
    cfg = parse_config({"source": {"format": "open-inference",
                                   "open_inference": {"max_pending": max_pending}},
                        "models": [{**copy.deepcopy(OIP_MODEL),
                                    "baseline": {"file": "b.json"}}]}, "/")
    dec = OipDecoder(cfg)
    for batch in batches:
        got = dec.decode(batch)
        assert len(got.invalid_reasons) == got.invalid_positions.shape[0]
        assert sorted(set(got.invalid_positions.tolist())) == got.invalid_positions.tolist()
        mb = got.models["credit"]
        assert mb.n_events == got.n_events
        assert all(0 <= p < len(batch) for p in mb.positions.tolist())
        assert set(mb.positions.tolist()).isdisjoint(got.invalid_positions.tolist())
        assert len(dec.pending) <= max_pending
