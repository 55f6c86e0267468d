"""The columnar decoder (stream.formats.columnar) gives exactly today's DecodedBatch.

Every test decodes with :class:`ColumnarDecoder` and with both paths of
:class:`BatchDecoder` (msgspec, and orjson alone) and compares everything: columns with
their dtypes (NaN-aware, ``-0.0`` kept), masks, counts, reasons, positions, timestamps,
label ids.  Then it checks how the batch was decoded: which messages went to
BatchDecoder (``fallback_messages``), so that a few bad messages are shown to leave the
rest of the batch on the columnar path.

The random batches are those of tests/stream/test_decode_msgspec.py (clean and dirty
values, invalid UTF-8, truncated messages, non-object parents, duplicate keys, lone
surrogates, huge numbers...), over configurations the typed Structs can express and some
they cannot.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stream.formats.columnar as columnar_module
from stream.config import Config, parse_config
from stream.formats.batch import DecodedBatch
from stream.formats.columnar import ColumnarDecoder, typed_schema
from stream.formats.decoders import decoder_for
from stream.formats.json import BatchDecoder
from tests.stream.test_decode_msgspec import (  # the strategies of the msgspec path's tests
    CONFIGS,
    FEATURES,
    PREDICTIONS,
    assert_same_array,
    assert_same_batch,
    batches,
    clean_messages,
    dirty_messages,
)

needs_msgspec = pytest.mark.skipif(columnar_module.msgspec is None,
                                   reason="msgspec is not installed")

#: FEATURES without ``x_cat`` (``f.x`` read as a category too: two types on one path)
TYPED_FEATURES = [f for f in FEATURES if f["name"] != "x_cat"]


def make_config(models: list[dict[str, Any]], **source: Any) -> Config:
    for model in models:
        model.setdefault("baseline", {"file": "b.json"})
        model.setdefault("features", TYPED_FEATURES)
    return parse_config({"source": source, "models": models}, "/")


TYPED_PLAIN = make_config([{"name": "m", "predictions": PREDICTIONS}])
TYPED_ROUTED = make_config(
    [
        {"name": "m", "select": {"field": "model", "equals": "m"}, "predictions": PREDICTIONS},
        {"name": "one", "select": {"field": "model", "equals": 1},
         "features": TYPED_FEATURES[:3]},
        {"name": "flag", "select": {"field": "model", "equals": True},
         "features": TYPED_FEATURES[2:]},
        {"name": "kind", "select": {"field": "meta.kind", "equals": "k"},
         "features": TYPED_FEATURES[:2]},
    ],
    max_message_bytes=600,
    timestamp={"path": "ts", "unit": "ms"},
)
TYPED_CATCH_ALL = make_config(
    [
        {"name": "all", "predictions": PREDICTIONS},
        {"name": "m", "select": {"field": "model", "equals": "m"},
         "features": TYPED_FEATURES[:1]},
    ],
    timestamp={"path": "meta.ts", "unit": "iso8601"},
)
TYPED_LABELS = make_config(
    [{"name": "m", "select": {"field": "model", "equals": "m"}, "predictions": PREDICTIONS,
      "labels": {"topic": "l", "id_path": "meta.kind", "label_path": "y",
                 "task": "multiclass", "prediction_column": "label"}}],
    timestamp={"path": "ts", "unit": "ms"},
)
TYPED_CONFIGS = (TYPED_PLAIN, TYPED_ROUTED, TYPED_CATCH_ALL)


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode_all(config: Config, messages: list[Any]) -> tuple[DecodedBatch, ColumnarDecoder]:
    """The columnar batch, after checking it against both paths of BatchDecoder."""
    decoder = ColumnarDecoder(config)
    got = decoder.decode(list(messages))
    assert_same_batch(got, BatchDecoder(config, use_msgspec=False).decode(list(messages)))
    assert_same_batch(got, BatchDecoder(config).decode(list(messages)))
    return got, decoder


def assert_same_ids(got: DecodedBatch, want: DecodedBatch) -> None:
    for name, w in want.models.items():
        g = got.models[name]
        assert (g.ids is None) == (w.ids is None)
        if w.ids is not None:
            assert g.ids is not None
            assert [(type(v), v) for v in g.ids] == [(type(v), v) for v in w.ids]


# --------------------------------------------------------------------------
# which configurations take the columnar path
# --------------------------------------------------------------------------
@needs_msgspec
def test_typed_configurations_take_the_columnar_path() -> None:
    for config in (*TYPED_CONFIGS, TYPED_LABELS):
        assert ColumnarDecoder(config).columnar


@needs_msgspec
def test_configurations_the_typed_structs_cannot_express() -> None:
    # one path read as a number and as a category; a leaf that is another path's parent
    two_types = CONFIGS[0]
    leaf_and_parent = make_config([{"name": "m", "features": [
        {"name": "a", "path": "a", "type": "numeric"},
        {"name": "ab", "path": "a.b", "type": "numeric"}]}])
    messages = [enc({"f": {"x": 1.5}, "a": {"b": 2}}), enc({"a": 3}), b"[1]"]
    for config in (two_types, leaf_and_parent):
        assert typed_schema(config) is None
        batch, decoder = decode_all(config, messages)
        assert not decoder.columnar and decoder.columnar_batches == 0
        assert batch.n_messages == 3


def test_the_json_format_decodes_columnar_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    # the default is the scanner, which leaves to this decoder what it does not decode
    monkeypatch.setenv("STREAMDRIFT_JSON_DECODER", "columnar")
    assert isinstance(decoder_for(TYPED_PLAIN), ColumnarDecoder)


# --------------------------------------------------------------------------
# a few bad messages leave the rest of the batch on the columnar path
# --------------------------------------------------------------------------
def event(i: int, **features: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"x": i * 0.5, "y": i, "c": "DE" if i % 2 else "FR", "d": None,
                            "é k": "é"}
    base.update(features)
    return {"model": "m", "ts": 1_717_243_200_000 + i, "f": base,
            "p": {"score": i / 7, "label": "ok"}, "meta": {"kind": "k", "ts": "2024-06-01"}}


#: messages the typed decode refuses, each for another reason
REFUSED = [
    enc(event(1, x=True)),  # a boolean in a numeric column: one invalid value
    enc(event(2, c=3)),  # a number in a categorical column: the category "3"
    enc(event(3, c="x" * 250)),  # a long category: cut
    enc(event(4, y=2**64)),  # beyond int64: a float on the orjson path
    enc(event(5)).replace(b'"x": 2.5', b'"x": NaN'),  # a NaN literal
    enc(event(6)).replace(b'"x": 3.0', b'"x": 1e400'),  # beyond the double range
    enc({**event(7), "f": 3}),  # a non-object parent: wrong_structure
    enc(event(8))[:-5],  # truncated: invalid_json
    enc(event(9, c="FR")).replace(b'"FR"', b'"F\xffR"'),  # invalid UTF-8
    b"[1, 2]",  # not_an_object
    None,  # a tombstone
    b'{"model": "m", "pad": "' + b"x" * 700 + b'"}',  # oversized (600 bytes)
]


@needs_msgspec
@pytest.mark.parametrize("config", TYPED_CONFIGS, ids=["plain", "routed", "catch_all"])
def test_only_the_refused_messages_go_to_batch_decoder(config: Config) -> None:
    messages: list[Any] = [enc(event(i)) for i in range(300)]
    where = list(range(7, 300, 25))[: len(REFUSED)]
    for at, bad in zip(where, REFUSED, strict=True):
        messages[at] = bad
    got, decoder = decode_all(config, messages)
    # the padded message is oversized only within 600 bytes (else a clean event of no values)
    refused = len(REFUSED) - (0 if config.source.max_message_bytes < 800 else 1)
    assert decoder.fallback_messages == refused
    assert decoder.columnar_batches == 1


@needs_msgspec
def test_failing_chunks_are_halved_down_to_the_messages_that_fail_alone() -> None:
    # invalid UTF-8 and a long digit run, alone and side by side, at chunk boundaries
    messages: list[Any] = [enc(event(i)) for i in range(1_100)]
    utf8 = enc(event(0, c="FR")).replace(b'"FR"', b'"F\xffR"')
    digits = b'{"pad": 1' + b"0" * 5_000 + b"}"  # more digits than the stdlib reads
    where = [0, 7, 8, 255, 256, 257, 511, 600, 601, 602, 1_099]
    for k, at in enumerate(where):
        messages[at] = digits if k % 3 == 2 else utf8
    _, decoder = decode_all(TYPED_PLAIN, messages)
    assert decoder.fallback_messages == len(where)


@needs_msgspec
def test_clean_batch_never_reaches_batch_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = [enc(event(i)) for i in range(100)]
    want = BatchDecoder(TYPED_ROUTED).decode(messages)
    decoder = ColumnarDecoder(TYPED_ROUTED)

    def fail(*_: Any) -> Any:
        raise AssertionError("BatchDecoder.decode called")

    monkeypatch.setattr(BatchDecoder, "decode", fail)
    got = decoder.decode(messages)
    assert_same_batch(got, want)
    assert decoder.fallback_messages == 0 and decoder.columnar_batches == 1


@needs_msgspec
def test_refused_messages_keep_their_positions_and_values() -> None:
    messages = [enc(event(0)), enc(event(1, x=True)), enc(event(2)), b"{", enc(event(4, x=None))]
    got, decoder = decode_all(TYPED_ROUTED, messages)
    m = got.models["m"]
    assert m.positions.tolist() == [0, 1, 2, 4]
    assert_same_array(m.columns["x"], np.array([0.0, math.nan, 1.0, math.nan]))
    assert m.invalid_values["x"] == 1 and m.missing_values["x"] == 1
    assert got.invalid == {"invalid_json": 1} and got.invalid_positions.tolist() == [3]
    assert decoder.fallback_messages == 2


@needs_msgspec
def test_label_ids() -> None:
    messages = [enc(event(0)), enc({**event(1), "meta": {"kind": 7}}), enc(event(2, x=True)),
                enc({**event(3), "meta": None})]
    got, decoder = decode_all(TYPED_LABELS, messages)
    assert_same_ids(got, BatchDecoder(TYPED_LABELS, use_msgspec=False).decode(messages))
    assert got.models["m"].ids == ["k", 7, "k", None]
    assert decoder.fallback_messages == 1


@needs_msgspec
def test_empty_batch_and_other_sequences() -> None:
    decode_all(TYPED_ROUTED, [])
    messages = [enc(event(0)), bytearray(enc(event(1))), memoryview(enc(event(2))), "{}"]
    got, _ = decode_all(TYPED_ROUTED, messages)
    assert got.models["m"].n_events == 3


# --------------------------------------------------------------------------
# property: random batches, the same result as today
# --------------------------------------------------------------------------
@needs_msgspec
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_property_columnar_same_as_batch_decoder(batch: list[bytes]) -> None:
    for config in (*TYPED_CONFIGS, *CONFIGS):
        decode_all(config, batch)
    got, _ = decode_all(TYPED_LABELS, batch)
    assert_same_ids(got, BatchDecoder(TYPED_LABELS, use_msgspec=False).decode(batch))


@needs_msgspec
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(clean_messages, min_size=1, max_size=20),
       st.lists(st.tuples(st.integers(0, 40), dirty_messages), max_size=3))
def test_property_bad_messages_spliced_into_clean_batches(
        clean: list[bytes], bad: list[tuple[int, bytes]]) -> None:
    batch = list(clean)
    for at, message in bad:
        batch.insert(at % (len(batch) + 1), message)
    # a message goes to BatchDecoder in a batch exactly when it would alone: the others
    # stay on the columnar path, whatever their neighbours
    _assert_fallbacks_as_alone(batch)


def _assert_fallbacks_as_alone(batch: list[bytes]) -> None:
    for config in TYPED_CONFIGS:
        _, decoder = decode_all(config, batch)
        alone = 0
        for message in batch:
            single = ColumnarDecoder(config)
            single.decode([message])
            alone += single.fallback_messages
        assert decoder.fallback_messages == alone


@needs_msgspec
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(clean_messages, min_size=1, max_size=20),
       st.lists(st.tuples(st.integers(0, 40), st.sampled_from([b"\n", b"\r\n", b"\t", b" "]),
                          st.integers(0, 3)), max_size=4))
def test_property_whitespace_and_newlines_inside_messages(
        clean: list[bytes], pretty: list[tuple[int, bytes, int]]) -> None:
    # messages pretty-printed or holding CR/LF between tokens (a batch of them joined by
    # newlines no longer has one message per line): each is decoded alone, exactly as
    # BatchDecoder decodes it, whatever the messages beside it
    batch = list(clean)
    for at, space, indent in pretty:
        k = at % len(batch)
        try:
            value = json.loads(batch[k])
        except ValueError:  # not JSON as the stdlib reads it: spaced out by hand
            batch[k] = batch[k].replace(b",", b"," + space * (indent + 1))
            continue
        data = json.dumps(value, indent=indent or None).encode()  # indented: one key a line
        batch[k] = data.replace(b"\n", space) if indent else data.replace(b", ", b"," + space)
    _assert_fallbacks_as_alone(batch)


@needs_msgspec
def test_pretty_printed_messages_stay_on_the_columnar_path() -> None:
    messages = [enc(event(i)) for i in range(10)]
    messages[3] = json.dumps(event(3), indent=2).encode()
    messages[6] = json.dumps(event(6), indent=1).encode().replace(b"\n", b"\r\n")
    got, decoder = decode_all(TYPED_PLAIN, messages)
    assert decoder.fallback_messages == 0
    assert got.models["m"].n_events == 10 and not got.invalid
