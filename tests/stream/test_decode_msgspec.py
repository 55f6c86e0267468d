"""Tests of the msgspec path of stream.formats.json.BatchDecoder.

The msgspec path must give exactly the DecodedBatch of the orjson path
(``BatchDecoder(config, use_msgspec=False)``), for every batch: each test
decodes with both and compares everything (columns with their dtypes, NaN-aware,
masks, counts, reasons, positions, timestamps), then checks which path the
batch took: msgspec for the whole batch at once, message by message (where
some message is not for msgspec: it is parsed as the orjson path parses it),
or the orjson path.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import stream.formats.json as decode_module
from stream.config import Config, parse_config
from stream.formats.batch import DecodedBatch
from stream.formats.json import BatchDecoder

needs_msgspec = pytest.mark.skipif(decode_module.msgspec is None, reason="msgspec is not installed")

FEATURES = [
    {"name": "x", "path": "f.x", "type": "numeric"},
    {"name": "y", "path": "f.y", "type": "numeric"},
    {"name": "c", "path": "f.c", "type": "categorical"},
    {"name": "d", "path": "f.d", "type": "categorical"},
    {"name": "x_cat", "path": "f.x", "type": "categorical"},  # the same leaf read twice
    {"name": "top", "path": "top", "type": "numeric"},
    {"name": "deep", "path": r"a.b\.c.d", "type": "categorical"},
    {"name": "uni", "path": "f.é k", "type": "categorical"},
]
PREDICTIONS = [
    {"name": "score", "path": "p.score", "type": "numeric"},
    {"name": "label", "path": "p.label", "type": "categorical"},
]


def make_config(models: list[dict[str, Any]] | None = None, **source: Any) -> Config:
    if models is None:
        models = [{"name": "m", "features": FEATURES, "predictions": PREDICTIONS}]
    for model in models:
        model.setdefault("baseline", {"file": "b.json"})
        model.setdefault("features", FEATURES)
    return parse_config({"source": source, "models": models}, "/")


PLAIN = make_config()
ROUTED = make_config(
    [
        {
            "name": "m",
            "select": {"field": "model", "equals": "m"},
            "predictions": PREDICTIONS,
        },
        {"name": "one", "select": {"field": "model", "equals": 1}, "features": FEATURES[:3]},
        {"name": "flag", "select": {"field": "model", "equals": True}, "features": FEATURES[2:]},
        {"name": "m2", "select": {"field": "model", "equals": "m"}, "features": FEATURES[4:]},
        {"name": "kind", "select": {"field": "meta.kind", "equals": "k"}, "features": FEATURES[:2]},
    ],
    max_message_bytes=600,
    timestamp={"path": "ts", "unit": "ms"},
)
CATCH_ALL = make_config(
    [
        {"name": "all", "predictions": PREDICTIONS},
        {"name": "m", "select": {"field": "model", "equals": "m"}, "features": FEATURES[:1]},
    ],
    timestamp={"path": "meta.ts", "unit": "iso8601"},
)
CONFIGS = (PLAIN, ROUTED, CATCH_ALL)


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------
def assert_same_array(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == object:
        assert [(type(v), v) for v in got.tolist()] == [(type(v), v) for v in want.tolist()]
    elif want.dtype.kind == "f":
        assert np.array_equal(got, want, equal_nan=True)
        assert np.array_equal(np.signbit(got), np.signbit(want))  # -0.0 stays -0.0
    else:
        assert np.array_equal(got, want)


def assert_same_batch(got: DecodedBatch, want: DecodedBatch) -> None:
    assert got.n_messages == want.n_messages
    assert list(got.invalid.items()) == list(want.invalid.items())
    assert_same_array(got.invalid_positions, want.invalid_positions)
    assert got.invalid_reasons == want.invalid_reasons
    assert list(got.models) == list(want.models)
    for name, w in want.models.items():
        g = got.models[name]
        assert_same_array(g.positions, w.positions)
        assert list(g.columns) == list(w.columns)
        for column in w.columns:
            assert_same_array(g.columns[column], w.columns[column])
            assert_same_array(g.invalid_mask[column], w.invalid_mask[column])
            assert_same_array(g.missing_mask[column], w.missing_mask[column])
        assert list(g.invalid_values.items()) == list(w.invalid_values.items())
        assert list(g.missing_values.items()) == list(w.missing_values.items())
        if w.timestamps is None:
            assert g.timestamps is None and g.invalid_timestamp_mask is None
        else:
            assert g.timestamps is not None
            assert_same_array(g.timestamps, w.timestamps)
            assert g.invalid_timestamp_mask is not None and w.invalid_timestamp_mask is not None
            assert_same_array(g.invalid_timestamp_mask, w.invalid_timestamp_mask)
        assert g.invalid_timestamps == w.invalid_timestamps


BATCH = "batch"  # msgspec, the batch at once
MESSAGES = "messages"  # message by message: msgspec, or orjson/the stdlib where it cannot
ORJSON = "orjson"  # the orjson path (an empty batch)


def decode_both(config: Config, messages: list[Any]) -> tuple[DecodedBatch, str]:
    """(the batch, the path it took), after checking that both paths agree."""
    decoder = BatchDecoder(config)
    assert decoder.uses_msgspec
    careful = decoder._decode_structs_carefully
    calls: list[int] = []

    def spy(*args: Any) -> Any:
        calls.append(1)
        return careful(*args)

    decoder._decode_structs_carefully = spy  # type: ignore[method-assign,assignment]
    got = decoder.decode(messages)
    want = BatchDecoder(config, use_msgspec=False).decode(messages)
    assert_same_batch(got, want)
    if decoder.msgspec_batches == 0:
        return want, ORJSON
    assert decoder.msgspec_batches == 1
    return want, MESSAGES if calls else BATCH


def path_taken(messages: list[Any]) -> str:
    """The path under every configuration (the same: no size limits), both paths agreeing."""
    paths = {decode_both(config, messages)[1] for config in (PLAIN, CATCH_ALL)}
    assert len(paths) == 1
    return paths.pop()


CLEAN = [
    enc(
        {
            "model": "m",
            "meta": {"kind": "k", "ts": "2024-06-01T12:00:00Z"},
            "ts": 1_717_243_200_000 + i,
            "f": {"x": i, "y": i / 7, "c": f"c{i % 3}", "d": "k", "é k": "ü", "skip": [1, {}]},
            "top": -0.0 if i == 3 else 1e300,
            "a": {"b.c": {"d": "deep"}},
            "p": {"score": 0.5, "label": "yes"},
            "other": {"nested": [1, 2, {"z": None}]},
        }
    )
    for i in range(20)
]


@pytest.fixture
def orjson_path_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any batch that reaches the orjson path fails the test."""

    def fail(*args: Any) -> Any:
        raise AssertionError("the orjson path was taken")

    monkeypatch.setattr(BatchDecoder, "_parse", fail)


# --------------------------------------------------------------------------
# which path, and the same result
# --------------------------------------------------------------------------
@needs_msgspec
def test_clean_batch_takes_the_msgspec_path() -> None:
    for config in CONFIGS:
        assert decode_both(config, CLEAN)[1] == BATCH


@needs_msgspec
def test_clean_batch_never_reaches_the_orjson_path(
    orjson_path_fails: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BatchDecoder, "_decode_structs_carefully", lambda *a: 1 / 0)
    decoder = BatchDecoder(ROUTED)
    batch = decoder.decode(CLEAN)
    assert decoder.msgspec_batches == 1 and batch.invalid == {}
    m = batch.models["m"]
    assert m.positions.tolist() == list(range(20))
    assert m.columns["x"].tolist() == [float(i) for i in range(20)]
    assert m.columns["x_cat"].tolist() == [str(i) for i in range(20)]
    assert m.columns["uni"].tolist() == ["ü"] * 20
    assert m.columns["deep"].tolist() == ["deep"] * 20
    assert m.timestamps is not None and m.timestamps[1] == 1_717_243_200.001
    assert batch.models["kind"].positions.tolist() == list(range(20))
    assert batch.models["one"].positions.tolist() == []


@needs_msgspec
def test_rejected_messages_stay_on_the_msgspec_path(orjson_path_fails: None) -> None:
    messages = [*CLEAN[:3], b"not json", b"[1]", b"\xff", b'{"f": {"x": 1}', *CLEAN[3:5]]
    decoder = BatchDecoder(PLAIN)
    batch = decoder.decode(messages)
    assert decoder.msgspec_batches == 1
    assert batch.invalid == {"invalid_json": 3, "not_an_object": 1}
    assert batch.invalid_positions.tolist() == [3, 4, 5, 6]
    assert batch.invalid_reasons == [
        "invalid_json",
        "not_an_object",
        "invalid_json",
        "invalid_json",
    ]
    assert batch.models["m"].positions.tolist() == [0, 1, 2, 7, 8]
    assert batch.models["m"].columns["x"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@needs_msgspec
def test_events_only_orjson_reads_stay_on_the_msgspec_path(orjson_path_fails: None) -> None:
    messages = [
        *CLEAN[:2],
        b"not json",
        b'{"f": {"x": NaN, "c": 18446744073709551616}, "model": "m"}',  # read by the stdlib
        b"[]",
        b'{"f": 3, "a": {"b.c": [1]}, "p": {"score": 1e400}, "model": "m"}',
        b'{"f": {"c": 18446744073709551616}, "model": "m"}',  # read by orjson
        CLEAN[2],
    ]
    decoder = BatchDecoder(ROUTED)
    batch = decoder.decode(messages)
    assert decoder.msgspec_batches == 1
    # "f": 3 where the paths descend: an invalid event, not missing values
    assert batch.invalid == {"invalid_json": 1, "not_an_object": 1, "wrong_structure": 1}
    assert batch.invalid_positions.tolist() == [2, 4, 5]
    m = batch.models["m"]
    assert m.positions.tolist() == [0, 1, 3, 6, 7]
    assert m.invalid_mask["x"].tolist() == [False, False, True, False, False]
    assert m.missing_mask["x"].tolist() == [False, False, False, True, False]
    assert m.columns["c"].tolist()[2:4] == ["18446744073709551616", "1.8446744073709552e+19"]
    assert m.invalid_mask["score"].tolist() == [False] * 5


@needs_msgspec
def test_events_only_orjson_reads() -> None:
    for where in range(3):
        messages = [*CLEAN[:3]]
        messages.insert(where, b'{"f": {"x": NaN}, "model": "m"}')
        messages.insert(where, b"not json")
        for config in CONFIGS:
            batch, path = decode_both(config, messages)
            assert path == MESSAGES and batch.invalid.get("invalid_json") == 1


@needs_msgspec
def test_absent_null_and_wrong_types() -> None:
    messages = [
        b'{"f": {"x": 1, "c": "a"}}',
        b'{"f": {"c": null}}',  # x absent, c null: both missing
        b'{"f": {"x": null}}',
        b'{"f": {"x": "1.5", "c": [1]}}',  # wrong types: invalid
        b'{"f": {"x": true, "c": {"k": 1}}}',
        b'{"f": {"x": [1], "c": true}}',
        b'{"f": {"x": {}, "c": 3}}',
        b'{"f": {}}',
        b'{"f": null}',  # a null parent: missing below it
        b"{}",  # an absent parent
        b'{"top": 2.5, "f": {"x": -0.0, "c": 1.5}}',
    ]
    batch, path = decode_both(PLAIN, messages)
    assert path == BATCH and path_taken(messages) == BATCH
    m = batch.models["m"]
    assert m.missing_mask["x"].tolist() == [0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0]
    assert m.invalid_mask["x"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert m.columns["c"].tolist() == ["a", None, None, None, None, "true", "3"] + [None] * 3 + [
        "1.5"
    ]
    assert m.invalid_values["c"] == 2 and m.missing_values["c"] == 5


@needs_msgspec
@pytest.mark.parametrize("parent", [b"3", b"[1]", b'"x"', b"true", b"1.5", b"[]"])
def test_non_object_parent(parent: bytes) -> None:
    messages = [*CLEAN[:3], b'{"f": ' + parent + b', "top": 1}', b'{"a": {"b.c": ' + parent + b"}}"]
    batch, path = decode_both(PLAIN, messages)
    assert path == MESSAGES and path_taken(messages) == MESSAGES
    # a non-object where a path descends: an invalid event, on both paths (decode_both)
    assert batch.invalid == {"wrong_structure": 2}
    assert batch.invalid_positions.tolist() == [3, 4]
    m = batch.models["m"]
    assert m.positions.tolist() == [0, 1, 2]
    assert m.missing_mask["x"].tolist() == [False] * 3
    # null and absent parents are fine (missing below them)
    assert path_taken([*CLEAN[:3], b'{"f": null, "a": {"b.c": null}}', b'{"a": {}}']) == BATCH


@needs_msgspec
@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("where", ["parsed", "skipped", "nested"])
def test_nan_and_infinity_literals(literal: bytes, where: str) -> None:
    message = {
        "parsed": b'{"f": {"x": ' + literal + b', "c": ' + literal + b"}}",
        "skipped": b'{"f": {"x": 1}, "junk": ' + literal + b"}",
        "nested": b'{"f": {"x": [1, ' + literal + b"]}}",
    }[where]
    batch, path = decode_both(PLAIN, [*CLEAN[:2], message])
    assert path == MESSAGES and path_taken([*CLEAN[:2], message]) == MESSAGES
    assert batch.invalid == {}  # the stdlib fallback reads them
    if where != "skipped":
        assert batch.models["m"].invalid_values["x"] == 1


@needs_msgspec
@pytest.mark.parametrize(
    ("number", "path"),
    [
        (2**63 - 1, BATCH),
        (-(2**63), BATCH),
        (2**63, MESSAGES),  # orjson: an int; msgspec (bound to int64): fails
        (2**64 - 1, MESSAGES),
        (2**64, MESSAGES),  # orjson: a float
        (-(2**63) - 1, MESSAGES),
        (10**30, MESSAGES),
        (10**400, MESSAGES),  # orjson fails, the stdlib reads an int
    ],
)
def test_big_integers(number: int, path: str) -> None:
    messages = [*CLEAN[:2], enc({"f": {"x": number, "c": number}, "model": number})]
    batch, taken = decode_both(PLAIN, messages)
    assert taken == path and path_taken(messages) == path
    if number == 2**64:
        assert batch.models["m"].columns["c"][2] == "1.8446744073709552e+19"
    # in a skipped field any integer is fine: msgspec skips it, orjson or the stdlib reads it
    assert path_taken([*CLEAN[:2], enc({"f": {"x": 1}, "junk": [number, {"k": number}]})]) == BATCH


#: valid JSON numbers that no double holds (5,000 digits: no int the stdlib reads either)
HUGE_NUMBERS = [
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"1" + b"0" * 4300,  # one digit more than the stdlib's default limit
    b"1e400",
    b"-1e400",
    b"9" * 5000 + b".5",
    b"9" * 5000 + b"e-10",
]


@needs_msgspec
@pytest.mark.parametrize("number", HUGE_NUMBERS)
def test_huge_numbers_are_invalid_values(number: bytes) -> None:
    # a configured field (numeric, categorical, select, timestamp): an invalid value there,
    # an unconfigured one: nothing; either way the event and its other values count
    messages = [
        CLEAN[0],
        b'{"model": "m", "f": {"x": ' + number + b', "y": 2, "c": ' + number + b', "d": "k"}}',
        b'{"model": "m", "f": {"x": 1, "junk": ' + number + b'}, "junk": [' + number + b"]}",
        b'{"model": ' + number + b', "f": {"x": 3}, "ts": ' + number + b"}",
        b'{"model": "m", "meta": {"ts": ' + number + b'}, "ts": ' + number + b"}",
        number,  # a JSON value, but not an object
    ]
    for config in (PLAIN, CATCH_ALL):
        batch, path = decode_both(config, messages)
        assert path == MESSAGES and batch.invalid == {"not_an_object": 1}
    m = decode_both(PLAIN, messages)[0].models["m"]
    assert m.positions.tolist() == [0, 1, 2, 3, 4]
    x = m.columns["x"].tolist()
    assert math.isnan(x[1]) and x[2:4] == [1.0, 3.0]
    assert m.columns["y"].tolist()[1] == 2.0 and m.columns["d"].tolist()[1] == "k"
    assert m.invalid_mask["x"].tolist() == [False, True, False, False, False]
    assert m.invalid_mask["c"].tolist() == [False, True, False, False, False]
    batch, _ = decode_both(CATCH_ALL, messages[:5])  # timestamps at "meta.ts"
    assert batch.models["all"].invalid_timestamps == 1
    # routing by "model", timestamps at "ts", messages of at most 600 bytes
    batch, _ = decode_both(ROUTED, messages[:5])
    if len(number) < 500:
        assert batch.invalid == {"unknown_model": 1}
        assert batch.models["m"].positions.tolist() == [0, 1, 2, 4]
        assert batch.models["m"].invalid_timestamps == 1
    else:
        assert batch.invalid == {"oversized": 4}


@needs_msgspec
def test_floats_out_of_range() -> None:
    for literal in (b"1e400", b"-1e400", b"1.7976931348623159e308"):
        message = b'{"f": {"x": ' + literal + b"}}"
        batch, path = decode_both(PLAIN, [message])
        assert path == MESSAGES and batch.models["m"].invalid_values["x"] == 1
        # skipped: orjson fails, the stdlib reads inf; msgspec skips it: the same event
        assert path_taken([b'{"f": {"x": 1}, "junk": ' + literal + b"}"]) == BATCH
    for literal in (
        b"1e-400",
        b"5e-324",
        b"-0.0",
        b"-0",
        b"1E5",
        b"0.1e1",
        b"123456789012345678901.5",
    ):
        assert path_taken([b'{"f": {"x": ' + literal + b", " + b'"c": ' + literal + b"}}"]) == BATCH


@needs_msgspec
@pytest.mark.parametrize(
    ("message", "path"),
    [
        (b'{"f": {"x": 1}, "f": {"y": 2}}', BATCH),  # the last wins: x missing
        (b'{"f": {"x": 1, "x": "a"}}', BATCH),
        (b'{"f": {"x": 1}, "f": null}', BATCH),
        (b'{"f": null, "f": {"x": 1}}', BATCH),
        (b'{"model": "n", "model": "m", "f": {"x": 1}}', BATCH),
        (b'{"f": {"x": 1}, "\\u0066": {"x": 2}}', BATCH),  # the same key, escaped
        (b'{"f": {"x": {"a": 1, "a": [2]}}}', BATCH),
        (b'{"f": {"x": 1}, "f": 3}', MESSAGES),  # a non-object parent after all
        (b'{"f": 3, "f": {"x": 1}}', MESSAGES),
    ],
)
def test_duplicate_keys(message: bytes, path: str) -> None:
    for config in CONFIGS:
        assert decode_both(config, [*CLEAN[:2], message])[1] == path
    batch, _ = decode_both(PLAIN, [message])
    parent = json.loads(message)["f"]  # the last "f" wins
    if parent is not None and not isinstance(parent, dict):
        assert batch.invalid == {"wrong_structure": 1}
        assert batch.models["m"].missing_mask["x"].tolist() == []
        return
    x = parent.get("x") if isinstance(parent, dict) else None
    assert batch.models["m"].missing_mask["x"].tolist() == [x is None]


@needs_msgspec
@pytest.mark.parametrize(
    "bad",
    [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc3", b"\x80", b"\xe2\x82"],
)
@pytest.mark.parametrize(
    "template",
    [
        b'{"f": {"x": 1, "c": "a%sb"}}',  # a parsed string
        b'{"f": {"x": 1}, "junk": "a%sb"}',  # a skipped string: msgspec does not check it
        b'{"f": {"x": 1, "skip": ["%s"]}}',
        b'{"f": {"x": 1}, "ju%snk": 1}',  # a skipped key
        b'{"f": {"x": 1}} %s',
    ],
)
def test_invalid_utf8(bad: bytes, template: bytes) -> None:
    messages = [*CLEAN[:2], template % bad]
    batch, path = decode_both(PLAIN, messages)
    assert path_taken(messages) == path
    assert path == MESSAGES
    # orjson rejects them all; the stdlib accepts UTF-8 encoded surrogates (surrogatepass)
    if bad == b"\xed\xa0\x80" and b"} %s" not in template:
        assert batch.invalid == {}
    else:
        assert batch.invalid == {"invalid_json": 1}


@needs_msgspec
def test_unicode_takes_the_msgspec_path() -> None:
    messages = [
        '{"f": {"c": "é😀ü", "d": "\\u00e9\\ud83d\\ude00", "é k": "\\u0000"}}'.encode(),
        b'{"f": {"\\u00e9 k": "escaped key", "c": "\\"\\\\\\/\\b\\f\\n\\r\\t"}}',
        b'{"\\u0066": {"\\u0078": 5}, "\\u0074op": 1, "a": {"b\\u002ec": {"d": "x"}}}',
        '{"junk": "日本語", "日本": {"k": ["ü"]}, "f": {"c": "%s"}}'.encode() % (b"z" * 300),
        json.dumps({"f": {"c": "é" * 300}}, ensure_ascii=False).encode(),
    ]
    batch, path = decode_both(PLAIN, messages)
    assert path == BATCH and path_taken(messages) == BATCH
    m = batch.models["m"]
    assert m.columns["c"].tolist()[:2] == ["é😀ü", '"\\/\b\f\n\r\t']
    assert m.columns["d"].tolist()[0] == "é😀"
    assert m.columns["uni"].tolist()[:2] == ["\x00", "escaped key"]
    assert m.columns["x"].tolist()[2] == 5.0 and m.columns["deep"].tolist()[2] == "x"
    assert m.columns["c"].tolist()[3] == "z" * 200 and m.columns["c"].tolist()[4] == "é" * 200


@needs_msgspec
@pytest.mark.parametrize(
    "escape", [b"\\ud800", b"\\udc00", b"\\ud800\\u0041", b"\\ud800x", b"\\udfff\\ud800"]
)
def test_lone_surrogate_escapes(escape: bytes) -> None:
    for message in (b'{"f": {"c": "%s"}}' % escape, b'{"junk": "%s", "f": {"x": 1}}' % escape):
        batch, path = decode_both(PLAIN, [CLEAN[0], message])
        assert path == MESSAGES and batch.invalid == {}  # the stdlib reads them


@needs_msgspec
def test_oversized_messages() -> None:
    message = enc({"f": {"x": 1, "c": "a"}})
    exact = make_config(max_message_bytes=len(message))
    batch, path = decode_both(exact, [message, message])
    assert path == BATCH and batch.invalid == {}
    small = make_config(max_message_bytes=len(message) - 1)
    batch, path = decode_both(small, [message, b"{}"])
    assert path == MESSAGES and batch.invalid == {"oversized": 1}
    # oversized and not JSON: oversized, as on the orjson path
    batch, path = decode_both(small, [b"x" * len(message), b"{}"])
    assert path == MESSAGES and batch.invalid_reasons == ["oversized"]


@needs_msgspec
@pytest.mark.parametrize(
    ("messages", "valid"),
    [
        ([b"[1]"], 0),
        ([b"null"], 0),
        ([b'"m"'], 0),
        ([b"3"], 0),
        ([b""], 0),
        ([b"   "], 0),
        ([b"not json"], 0),
        ([b'{"f": {"x": 1}'], 0),
        ([b'{"f": {"x": 1}}}'], 0),
        ([b'{"f": {"x": 1}} {}'], 0),
        ([b'{"f": {"x": 1},}'], 0),
        ([b'{"f": {"x": 1}},{"f": {"x": "', b'"}}'], 0),  # joined: two objects
        ([b'{"f": {"x": 1}},{"f": {"x": "}', b'{"}'], 0),
        ([b"\xef\xbb\xbf{}"], 1),  # a UTF-8 BOM: the stdlib reads it
        (['{"f": {"x": 1}}'.encode("utf-16")], 1),  # and UTF-16
        ([b"\xef\xbb\xbf[]"], 0),
    ],
)
def test_not_json_or_not_an_object(messages: list[bytes], valid: int) -> None:
    batch, path = decode_both(PLAIN, [*CLEAN[:2], *messages])
    assert path == MESSAGES and batch.n_valid == 2 + valid
    for config in CONFIGS:
        decode_both(config, [*messages, *CLEAN[:2]])


@needs_msgspec
def test_empty_batch() -> None:
    for config in CONFIGS:
        batch, path = decode_both(config, [])
        assert path == ORJSON
        assert batch.n_messages == 0 and batch.models[config.models[0].name].positions.shape == (0,)


@needs_msgspec
def test_messages_other_than_bytes() -> None:
    raw = enc({"f": {"x": 1.5}})
    for other in (raw.decode(), bytearray(raw), memoryview(raw), None, 12345):
        batch, path = decode_both(PLAIN, [raw, other])
        assert path == MESSAGES  # parsed as on the orjson path
        assert batch.n_valid == (1 if other is None or other == 12345 else 2)
        _, path = decode_both(PLAIN, [b"{", raw, other])
        assert path == MESSAGES
    decoder = BatchDecoder(PLAIN)
    batch = decoder.decode(iter([raw, raw]))  # type: ignore[arg-type]  # any iterable
    assert decoder.msgspec_batches == 1 and batch.models["m"].columns["x"].tolist() == [1.5, 1.5]


@needs_msgspec
def test_long_digit_runs() -> None:
    limit = sys.get_int_max_str_digits()
    assert limit  # the default, 4300
    # an integer the stdlib cannot read: msgspec skips it, the orjson path reads it as inf
    # (a value of no column here): the event counts
    too_long = b'{"f": {"x": 1}, "junk": 1' + b"0" * limit + b"}"
    batch, path = decode_both(PLAIN, [CLEAN[0], too_long])
    assert path == MESSAGES and batch.invalid == {}
    assert batch.models["m"].columns["x"].tolist() == [0.0, 1.0]
    # in a configured field: one invalid value
    batch, path = decode_both(PLAIN, [CLEAN[0], b'{"f": {"x": 1' + b"0" * limit + b', "y": 2}}'])
    assert path == MESSAGES and batch.invalid == {}
    assert batch.models["m"].invalid_values["x"] == 1
    assert batch.models["m"].columns["y"].tolist()[1] == 2.0
    # as long as the stdlib allows: read as an int
    longest = b'{"f": {"x": 1}, "junk": 1' + b"0" * (limit - 1) + b"}"
    batch, path = decode_both(PLAIN, [CLEAN[0], longest])
    assert path == BATCH and batch.invalid == {}
    # a digit run in a string: not for msgspec either (the check looks at bytes, not values)
    batch, path = decode_both(PLAIN, [CLEAN[0], b'{"junk": "1' + b"0" * limit + b'"}'])
    assert path == MESSAGES and batch.invalid == {}
    # a long message without long digit runs
    pad = b"p" * limit + b"1" * (limit // 2)
    batch, path = decode_both(PLAIN, [CLEAN[0], b'{"f": {"x": 2}, "junk": "' + pad + b'"}'])
    assert path == BATCH and batch.models["m"].columns["x"].tolist() == [0.0, 2.0]
    # a lower limit is honoured
    sys.set_int_max_str_digits(640)
    try:
        message = b'{"f": {"x": 1}, "junk": 1' + b"0" * 640 + b', "top": -1' + b"0" * 640 + b"}"
        batch, path = decode_both(PLAIN, [message])
        assert path == MESSAGES and batch.invalid == {}
        assert batch.models["m"].columns["x"].tolist() == [1.0]
        assert batch.models["m"].invalid_values["top"] == 1
    finally:
        sys.set_int_max_str_digits(limit)


@needs_msgspec
@pytest.mark.parametrize("depth", [10, 500, 900, 990, 998, 1000, 1010, 1021, 1023, 1030, 3000])
@pytest.mark.parametrize("where", ["parsed", "skipped"])
def test_deep_nesting(depth: int, where: str) -> None:
    nested = b"[" * depth + b"]" * depth
    message = b'{"f": {"x": %s}}' % nested if where == "parsed" else b'{"junk": %s}' % nested
    batch, path = decode_both(PLAIN, [CLEAN[0], message])
    if depth <= 500:
        assert path == BATCH
    elif depth < 1030:
        # msgspec's limit: the recursion limit, less the stack in use; orjson's: 1024
        assert path in (BATCH, MESSAGES)
    else:
        assert path == MESSAGES and batch.invalid == {"invalid_json": 1}


@needs_msgspec
def test_deep_nesting_with_a_raised_recursion_limit() -> None:
    nested = b'{"junk": ' + b"[" * 1500 + b"]" * 1500 + b"}"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        # orjson rejects it, the stdlib reads it, msgspec could: left to them
        batch, path = decode_both(PLAIN, [CLEAN[0], nested])
        assert path == MESSAGES and batch.invalid == {}
        assert decode_both(PLAIN, CLEAN)[1] == BATCH
        # long, but with few brackets: taken; with brackets in strings: not (bytes are counted)
        long = b'{"f": {"x": 1}, "junk": [' + b'"ab",' * 2000 + b"[[[[1]]]]]}"
        assert decode_both(PLAIN, [CLEAN[0], long])[1] == BATCH
        long = b'{"f": {"x": 1}, "junk": [' + b'"[{",' * 2000 + b"[[[[1]]]]]}"
        assert decode_both(PLAIN, [CLEAN[0], long])[1] == MESSAGES
    finally:
        sys.setrecursionlimit(limit)
    batch, path = decode_both(PLAIN, [CLEAN[0], nested])
    assert path == MESSAGES and batch.invalid == {"invalid_json": 1}


@needs_msgspec
def test_routing_and_timestamps() -> None:
    def event(i: int) -> bytes:
        kinds: list[Any] = ["m", 1, True, "n", 1.0, None, False, "M", [1]]
        return enc(
            {
                "model": kinds[i % len(kinds)],
                "meta": {
                    "kind": "k" if i % 4 == 0 else "j",
                    "ts": f"2024-06-01T12:00:{i % 60:02d}Z",
                },
                "ts": [1_717_243_200_000 + i, "1717243200123", 1.7e12, "x", None, True][i % 6],
                "f": {"x": i, "y": str(i), "c": i, "d": None},
                "p": {"score": i / 3, "label": ["yes", "no", 3, True][i % 4]},
            }
        )

    messages = [event(i) for i in range(60)]
    for config in (ROUTED, CATCH_ALL):
        assert decode_both(config, messages)[1] == BATCH
        assert decode_both(config, [*messages[:30], b"{", *messages[30:]])[1] == MESSAGES
    batch, _ = decode_both(ROUTED, messages)
    assert batch.models["m"].positions.tolist() == list(range(0, 60, 9))
    assert batch.models["one"].positions.tolist() == list(range(1, 60, 9))
    assert batch.models["flag"].positions.tolist() == list(range(2, 60, 9))
    assert batch.models["kind"].positions.tolist() == list(range(0, 60, 4))
    assert batch.invalid["unknown_model"] > 0
    ts = batch.models["m"].timestamps
    assert ts is not None and ts[0] == 1_717_243_200.0
    batch, _ = decode_both(CATCH_ALL, messages)
    ts = batch.models["all"].timestamps
    assert ts is not None and ts[5] == datetime(2024, 6, 1, 12, 0, 5, tzinfo=UTC).timestamp()


def test_configurations_the_msgspec_path_cannot_express() -> None:
    leaf_and_parent = make_config(
        [
            {
                "name": "m",
                "features": [
                    {"name": "f", "path": "f", "type": "categorical"},
                    {"name": "x", "path": "f.x", "type": "numeric"},
                ],
            }
        ]
    )
    select_and_parent = make_config(
        [
            {
                "name": "m",
                "select": {"field": "model", "equals": "m"},
                "features": [{"name": "v", "path": "model.v", "type": "numeric"}],
            }
        ]
    )
    timestamp_and_parent = make_config(timestamp={"path": "f", "unit": "s"})
    for config in (leaf_and_parent, select_and_parent, timestamp_and_parent):
        decoder = BatchDecoder(config)
        assert not decoder.uses_msgspec
        batch = decoder.decode([b'{"f": {"x": 1}, "model": "m"}', b'{"f": "a", "model": {"v": 2}}'])
        assert decoder.msgspec_batches == 0 and batch.n_messages == 2
    batch = BatchDecoder(leaf_and_parent).decode([b'{"f": {"x": 1}}', b'{"f": "a"}'])
    assert batch.models["m"].columns["x"].tolist()[0] == 1.0
    assert batch.models["m"].columns["f"].tolist() == [None, "a"]


def test_without_msgspec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_module, "msgspec", None)
    decoder = BatchDecoder(ROUTED)
    assert not decoder.uses_msgspec
    batch = decoder.decode(CLEAN)
    assert decoder.msgspec_batches == 0 and batch.models["m"].columns["x"].tolist()[:2] == [
        0.0,
        1.0,
    ]
    assert not BatchDecoder(PLAIN, use_msgspec=False).uses_msgspec


# --------------------------------------------------------------------------
# property: random batches, both paths agree
# --------------------------------------------------------------------------
class Raw(str):
    """JSON text written as it is (literals json.dumps does not write, escaped keys)."""


@dataclass(frozen=True)
class Obj:
    """A JSON object as written: its (key, value) pairs, duplicate keys allowed."""

    pairs: tuple[tuple[Any, Any], ...]


def dump(value: Any, ascii: bool, comma: str) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        value = Obj(tuple(value.items()))
    if isinstance(value, Obj):
        items = (f"{dump(k, ascii, comma)}:{dump(v, ascii, comma)}" for k, v in value.pairs)
        return "{" + comma.join(items) + "}"
    if isinstance(value, list):
        return "[" + comma.join(dump(v, ascii, comma) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii)  # NaN/Infinity for non-finite floats


def encode(value: Any, ascii: bool, comma: str) -> bytes:
    # lone surrogates become UTF-8 encoded surrogates (or \\udxxx escapes with ascii)
    return dump(value, ascii, comma).encode("utf-8", "surrogatepass")


def obj(*fields: tuple[Any, st.SearchStrategy[Any]], max_size: int = 6) -> st.SearchStrategy[Obj]:
    """Objects of these keys in any order, a key possibly twice."""
    pair = st.one_of(*(st.tuples(st.just(key), values) for key, values in fields))
    return st.lists(pair, max_size=max_size).map(lambda pairs: Obj(tuple(pairs)))


clean_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=8)
clean_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text
    | st.sampled_from(["DE", "FR", "x" * 250, "é" * 201, "😀", "", "3", "1e5"])
)
clean_values = st.recursive(
    clean_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(clean_text, children, max_size=3)
    ),
    max_leaves=6,
)
#: what msgspec skips without failing (the orjson path reads each, maybe via the stdlib)
skippable = clean_values | st.sampled_from(
    [
        Raw("1e400"),
        Raw("-1e400"),
        Raw("1" + "0" * 400),
        Raw("18446744073709551616"),
        Raw("[1e400, -0, 1E5]"),
        Raw('"\\u00e9\\ud83d\\ude00"'),
        Raw("[[[[[[[[[[1]]]]]]]]]]"),
        Raw('{"a": 1, "a": 2}'),
    ]
)
dirty_scalars = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(2**63, 2**70),
    st.integers(-(2**70), -(2**63) - 1),
    st.text(max_size=4),  # lone surrogates
    st.sampled_from(
        [Raw("1" + "0" * 400), Raw("1e400"), Raw('"\\udc00"'), Raw("NaN"), Raw("-Infinity")]
    ),
    # numbers no double holds, of more digits than the stdlib reads as an int, too
    st.sampled_from([Raw(n.decode()) for n in HUGE_NUMBERS]),
)
dirty_values = st.recursive(
    clean_scalars | dirty_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
timestamps = st.one_of(
    st.integers(1_600_000_000_000, 1_800_000_000_000),
    st.floats(1.6e12, 1.8e12),
    st.sampled_from(
        [
            "1717243200123",
            "2024-06-01T12:00:00Z",
            "2024-06-01T14:00:00.5+02:00",
            "2024-06-01",
            "nope",
            "",
            "1e400",
            "2024-13-45T00:00:00Z",
        ]
    ),
)


def event_strategy(
    leaf: st.SearchStrategy[Any], junk: st.SearchStrategy[Any]
) -> st.SearchStrategy[Obj]:
    model = st.sampled_from(["m", "n", "M", 1, True, False, 1.0, None, 0]) | leaf
    features = obj(
        *((key, leaf) for key in ("x", "y", "c", "d", "é k")),
        (Raw('"\\u0078"'), leaf),
        ("junk", junk),
    )
    prediction = obj(("score", leaf), ("label", leaf), ("junk", junk))
    parent = features | st.none()
    return obj(
        ("model", model),
        ("f", parent),
        (Raw('"\\u0066"'), parent),  # "f", escaped
        ("top", leaf),
        ("a", obj(("b.c", obj(("d", leaf)) | st.none())) | st.none()),
        ("p", prediction | st.none()),
        ("ts", timestamps | leaf),
        ("meta", obj(("kind", st.sampled_from(["k", "j"]) | leaf), ("ts", timestamps | leaf))),
        ("junk", junk),
        ("é", junk),
        max_size=9,
    )


clean_events = event_strategy(clean_values, skippable)
dirty_events = event_strategy(dirty_values, dirty_values | skippable)
#: non-object parents, non-object events
odd_events = dirty_events.map(
    lambda e: Obj((*e.pairs, ("f", 3))) if len(e.pairs) % 2 else Obj((*e.pairs, ("p", [1])))
)
styles = st.tuples(st.booleans(), st.sampled_from([",", ", ", ",\n  "]))
clean_messages = st.builds(lambda e, s: encode(e, *s), clean_events, styles)
BAD_BYTES = [
    b"\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc3",
    b"\x00",
    b"}",
    b'"',
]


def splice(message: bytes, at: int, insert: bytes, replace: bool) -> bytes:
    at %= len(message) + 1
    return message[:at] + insert + message[at + replace :]


dirty_messages = st.one_of(
    st.builds(lambda e, s: encode(e, *s), dirty_events, styles),
    st.builds(lambda e, s: encode(e, *s), odd_events, styles),
    st.builds(lambda v, s: encode(v, *s), dirty_values, styles),  # mostly not objects
    st.binary(max_size=40),
    st.builds(
        splice, clean_messages, st.integers(0, 10**4), st.sampled_from(BAD_BYTES), st.booleans()
    ),
    # invalid UTF-8 inside a skipped string
    st.builds(
        lambda e, bad: encode(Obj((*e.pairs, ("junk", Raw('"<>"')))), True, ",").replace(
            b"<>", bad
        ),
        clean_events,
        st.sampled_from(BAD_BYTES[:5]),
    ),
    clean_messages.map(lambda m: m[: len(m) // 2]),
)
batches = st.one_of(
    st.lists(clean_messages, max_size=25),
    st.lists(st.one_of(clean_messages, dirty_messages), max_size=25),
    st.lists(dirty_messages, max_size=10),
)


@needs_msgspec
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_property_msgspec_path_same_as_orjson_path(batch: list[bytes]) -> None:
    for config in CONFIGS:
        _, path = decode_both(config, batch)
        event(path)
        assert path != ORJSON or not batch


@needs_msgspec
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(clean_messages, min_size=1, max_size=25))
def test_property_clean_batches_take_the_msgspec_path(batch: list[bytes]) -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # Hypothesis raises it; it counts for messages over 2 KiB
    try:
        assert path_taken(batch) == BATCH
    finally:
        sys.setrecursionlimit(limit)
