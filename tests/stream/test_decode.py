"""Tests of stream.formats (decoding): invalid events, routing, value rules, equivalence with a naive decoder."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import ColumnConfig, Config, ModelConfig, parse_config
from stream.formats.batch import INVALID_REASONS, MAX_CATEGORY_CHARS, DecodedBatch
from stream.formats.columns import extract_columns, select_events
from stream.formats.json import BatchDecoder

FEATURES = [
    {"name": "x", "path": "f.x", "type": "numeric"},
    {"name": "y", "path": "f.y", "type": "numeric"},
    {"name": "c", "path": "f.c", "type": "categorical"},
    {"name": "d", "path": "f.d", "type": "categorical"},
    {"name": "top", "path": "top", "type": "numeric"},
    {"name": "deep", "path": r"a.b\.c.d", "type": "categorical"},
]
PREDICTIONS = [{"name": "score", "path": "p.score", "type": "numeric"}]


def make_config(models: list[dict[str, Any]] | None = None, **source: Any) -> Config:
    if models is None:
        models = [{"name": "m", "features": FEATURES, "predictions": PREDICTIONS}]
    for model in models:
        model.setdefault("baseline", {"file": "b.json"})
        model.setdefault("features", [{"name": "x", "path": "f.x", "type": "numeric"}])
    return parse_config({"source": source, "models": models}, "/")


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode(messages: list[Any], config: Config | None = None) -> DecodedBatch:
    batch = BatchDecoder(config or make_config()).decode(messages)
    check_invariants(batch, len(messages))
    return batch


def check_invariants(batch: DecodedBatch, n: int) -> None:
    assert batch.n_messages == n
    assert set(batch.invalid) <= set(INVALID_REASONS)
    assert all(v > 0 for v in batch.invalid.values())
    assert (
        sum(batch.invalid.values())
        == len(batch.invalid_reasons)
        == batch.invalid_positions.shape[0]
    )
    assert batch.invalid_positions.dtype == np.int64
    assert np.all(np.diff(batch.invalid_positions) > 0)
    routed: set[int] = set()
    for model in batch.models.values():
        m = model.positions.shape[0]
        assert model.positions.dtype == np.int64 and np.all(np.diff(model.positions) > 0)
        routed.update(model.positions.tolist())
        for name, column in model.columns.items():
            assert column.shape == (m,)
            assert model.invalid_mask[name].shape == (m,) and model.invalid_mask[name].dtype == bool
            assert model.missing_mask[name].shape == (m,)
            assert not np.any(model.invalid_mask[name] & model.missing_mask[name])
            assert model.invalid_values[name] == int(model.invalid_mask[name].sum())
            assert model.missing_values[name] == int(model.missing_mask[name].sum())
            if column.dtype == np.float64:
                bad = model.invalid_mask[name] | model.missing_mask[name]
                assert np.array_equal(np.isnan(column), bad)
            else:
                assert column.dtype == object
                nones = np.array([v is None for v in column], dtype=bool)
                assert np.array_equal(nones, model.invalid_mask[name] | model.missing_mask[name])
                assert all(
                    v is None or (type(v) is str and len(v) <= MAX_CATEGORY_CHARS) for v in column
                )
        if model.timestamps is not None:
            assert model.timestamps.shape == (m,) and model.timestamps.dtype == np.float64
    assert not routed & set(batch.invalid_positions.tolist())
    assert (
        len(routed) + len(batch.invalid_reasons) == n == batch.n_valid + len(batch.invalid_reasons)
    )


# --------------------------------------------------------------------------
# event-level reasons
# --------------------------------------------------------------------------
def test_invalid_reasons_constant() -> None:
    assert INVALID_REASONS == ("invalid_json", "not_an_object", "oversized", "unknown_model",
                               "wrong_structure")


def test_each_invalid_reason() -> None:
    cfg = make_config(
        [{"name": "m", "select": {"field": "model", "equals": "m"}}], max_message_bytes=64
    )
    messages = [
        enc({"model": "m", "f": {"x": 1}}),  # 0 ok
        b'{"model": "m", "f": {"x": 1}',  # 1 invalid_json (truncated)
        b"[1, 2]",  # 2 not_an_object
        b'"m"',  # 3 not_an_object
        b"null",  # 4 not_an_object
        enc({"model": "m", "pad": "x" * 100}),  # 5 oversized
        enc({"model": "other"}),  # 6 unknown_model
        b"",  # 7 invalid_json
        b"\xff\xfe\x00garbage",  # 8 invalid_json
        None,  # 9 tombstone: invalid_json
        enc({"f": {"x": 2}}),  # 10 unknown_model (no field)
        enc({"model": "m", "f": {"x": 3}}),  # 11 ok
    ]
    batch = decode(messages, cfg)
    assert batch.invalid == {
        "invalid_json": 4,
        "not_an_object": 3,
        "oversized": 1,
        "unknown_model": 2,
    }
    assert batch.invalid_positions.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert batch.invalid_reasons == [
        "invalid_json",
        "not_an_object",
        "not_an_object",
        "not_an_object",
        "oversized",
        "unknown_model",
        "invalid_json",
        "invalid_json",
        "invalid_json",
        "unknown_model",
    ]
    m = batch.models["m"]
    assert m.positions.tolist() == [0, 11]
    assert m.columns["x"].tolist() == [1.0, 3.0]
    assert batch.n_valid == 2


def test_oversized_limit_is_inclusive() -> None:
    message = enc({"f": {"x": 1}})
    cfg = make_config(max_message_bytes=len(message))
    assert decode([message], cfg).invalid == {}
    cfg = make_config(max_message_bytes=len(message) - 1)
    assert decode([message], cfg).invalid == {"oversized": 1}


def test_mixed_batch_valid_events_still_count() -> None:
    messages = [enc({"f": {"x": i, "c": str(i)}}) if i % 3 else b"not json" for i in range(30)]
    batch = decode(messages)
    assert batch.invalid == {"invalid_json": 10}
    m = batch.models["m"]
    assert m.positions.tolist() == [i for i in range(30) if i % 3]
    assert m.columns["x"].tolist() == [float(i) for i in range(30) if i % 3]
    assert m.columns["c"].tolist() == [str(i) for i in range(30) if i % 3]
    assert m.missing_values["y"] == 20 and m.invalid_values["x"] == 0


def test_empty_batch_and_other_inputs() -> None:
    batch = decode([])
    assert (
        batch.n_messages == 0 and batch.invalid == {} and batch.models["m"].positions.shape == (0,)
    )
    assert batch.models["m"].columns["x"].dtype == np.float64
    assert batch.models["m"].columns["c"].dtype == object
    # bytearray, memoryview, str and a generator are accepted
    raw = enc({"f": {"x": 1.5}})
    batch = BatchDecoder(make_config()).decode(
        iter([raw, bytearray(raw), memoryview(raw), raw.decode()])
    )
    assert batch.models["m"].columns["x"].tolist() == [1.5] * 4
    batch = decode([memoryview(b'{"f": {"x": NaN}}'), 12345])
    assert batch.invalid == {"invalid_json": 1} and batch.models["m"].invalid_values["x"] == 1


# --------------------------------------------------------------------------
# routing
# --------------------------------------------------------------------------
def test_routing_with_select() -> None:
    cfg = make_config(
        [
            {"name": "credit", "select": {"field": "meta.model", "equals": "credit"}},
            {"name": "fraud", "select": {"field": "meta.model", "equals": "fraud"}},
            {"name": "v2", "select": {"field": "meta.version", "equals": 2}},
            {"name": "flagged", "select": {"field": "flag", "equals": True}},
        ]
    )
    messages = [
        enc({"meta": {"model": "credit"}, "f": {"x": 0}}),  # credit
        enc({"meta": {"model": "fraud", "version": 2}, "f": {"x": 1}}),  # fraud, v2
        enc({"meta": {"model": "credit", "version": 2.0}, "f": {"x": 2}}),  # credit (2.0 is not 2)
        enc(
            {"meta": {"model": "other", "version": True}, "f": {"x": 3}}
        ),  # unknown (true is not 2)
        enc({"meta": "credit", "f": {"x": 4}}),  # unknown (meta is no object)
        enc({"flag": 1, "f": {"x": 5}}),  # unknown (1 is not true)
        enc({"flag": True, "meta": {"version": 2}, "f": {"x": 6}}),  # flagged, v2
        enc({"meta": {"model": ["credit"]}, "f": {"x": 7}}),  # unknown
    ]
    batch = decode(messages, cfg)
    assert batch.models["credit"].positions.tolist() == [0, 2]
    assert batch.models["fraud"].positions.tolist() == [1]
    assert batch.models["v2"].positions.tolist() == [1, 6]
    assert batch.models["flagged"].positions.tolist() == [6]
    assert batch.models["v2"].columns["x"].tolist() == [1.0, 6.0]
    assert batch.invalid == {"unknown_model": 4}
    assert batch.invalid_positions.tolist() == [3, 4, 5, 7]


def test_model_without_select_takes_every_event() -> None:
    cfg = make_config(
        [{"name": "all"}, {"name": "credit", "select": {"field": "model", "equals": "credit"}}]
    )
    messages = [
        enc({"model": "credit", "f": {"x": 1}}),
        enc({"model": "x", "f": {"x": 2}}),
        enc({}),
    ]
    batch = decode(messages, cfg)
    assert batch.invalid == {}
    assert batch.models["all"].positions.tolist() == [0, 1, 2]
    assert batch.models["credit"].positions.tolist() == [0]
    assert batch.models["all"].columns["x"].tolist()[:2] == [1.0, 2.0]


def test_models_with_the_same_select_share_events() -> None:
    cfg = make_config(
        [
            {"name": "a", "select": {"field": "model", "equals": "credit"}},
            {
                "name": "b",
                "select": {"field": "model", "equals": "credit"},
                "features": [{"name": "c", "path": "f.c", "type": "categorical"}],
            },
        ]
    )
    batch = decode([enc({"model": "credit", "f": {"x": 1, "c": "z"}}), enc({"model": "no"})], cfg)
    assert batch.models["a"].positions.tolist() == batch.models["b"].positions.tolist() == [0]
    assert batch.models["b"].columns["c"].tolist() == ["z"]


# --------------------------------------------------------------------------
# value rules
# --------------------------------------------------------------------------
def test_nan_and_infinity_literals() -> None:
    messages = [
        b'{"f": {"x": NaN, "y": 1.0, "c": NaN}}',
        b'{"f": {"x": Infinity, "y": -Infinity}}',
        b'{"f": {"x": 1e400, "y": 2}}',
        b'{"f": {"x": 3.5, "y": 4}}',
    ]
    batch = decode(messages)
    assert batch.invalid == {}
    m = batch.models["m"]
    assert np.isnan(m.columns["x"][:3]).all() and m.columns["x"][3] == 3.5
    assert m.invalid_mask["x"].tolist() == [True, True, True, False]
    assert m.invalid_mask["y"].tolist() == [False, True, False, False]
    assert m.invalid_values == {"x": 3, "y": 1, "c": 1, "d": 0, "top": 0, "deep": 0, "score": 0}
    assert m.missing_values["x"] == 0 and m.missing_values["c"] == 3


def test_nested_path_and_escaped_dot() -> None:
    messages = [
        enc({"a": {"b.c": {"d": "deep"}}, "top": 7}),
        enc({"a": {"b": {"c": {"d": "wrong"}}}}),
        enc({"a": {"b.c": None}}),
        enc({"a": {"b.c": ["d"]}}),
        enc({"a": 5}),
    ]
    batch = decode(messages)
    m = batch.models["m"]
    # a list or a number where the path descends: the event has the wrong structure
    assert batch.invalid == {"wrong_structure": 2}
    assert batch.invalid_positions.tolist() == [3, 4]
    assert batch.invalid_reasons == ["wrong_structure"] * 2
    assert m.positions.tolist() == [0, 1, 2]
    assert m.columns["deep"].tolist() == ["deep", None, None]
    assert m.missing_values["deep"] == 2 and m.invalid_values["deep"] == 0
    assert m.columns["top"].tolist()[0] == 7.0


def test_numeric_wrong_types_and_missing() -> None:
    values: list[Any] = [1, 2.5, True, False, "3", [1], {"a": 1}, None, -0.0, 2**63, 2**64 - 1]
    messages = [enc({"f": {"x": v}}) for v in values] + [
        enc({"f": {}}),
        enc({"f": None}),
        enc({"f": [1]}),
        enc({}),
    ]
    batch = decode(messages)
    m = batch.models["m"]
    # {"f": [1]} is an invalid event (wrong_structure), not a missing value
    assert batch.invalid_positions.tolist() == [13] and batch.invalid == {"wrong_structure": 1}
    expected = [1.0, 2.5, *[math.nan] * 6, -0.0, float(2**63), float(2**64 - 1)] + [math.nan] * 3
    np.testing.assert_array_equal(m.columns["x"], np.array(expected))
    assert m.invalid_mask["x"].tolist() == [False, False] + [True] * 5 + [False] * 7
    assert m.missing_mask["x"].tolist() == [False] * 7 + [True] + [False] * 3 + [True] * 3
    assert m.invalid_values["x"] == 5 and m.missing_values["x"] == 4


def test_big_integers_from_the_stdlib_fallback() -> None:
    # beyond the double range: the stdlib parses an int that float() cannot hold
    messages = [b'{"f": {"x": 1' + b"0" * 400 + b', "c": 1' + b"0" * 300 + b'}, "top": NaN}']
    m = decode(messages).models["m"]
    assert m.invalid_values["x"] == 1 and np.isnan(m.columns["x"][0])
    assert m.columns["c"][0] == "1" + "0" * (MAX_CATEGORY_CHARS - 1)


#: valid JSON numbers that neither a double nor (beyond the digit limit) an int holds
HUGE_INT = b"9" * 5000


@pytest.mark.parametrize(
    "number", [HUGE_INT, b"-" + HUGE_INT, b"1e400", b"-1e400", HUGE_INT + b".5", HUGE_INT + b"e2"]
)
def test_a_huge_number_is_one_invalid_value(number: bytes) -> None:
    # in a configured field: an invalid value of that column, the event's other values count
    messages = [
        b'{"f": {"x": ' + number + b', "y": 2, "c": ' + number + b', "d": "k"}, "top": 3}',
        b'{"f": {"x": 1.5, "y": 3}, "junk": ' + number + b"}",  # an unconfigured field
        b'{"f": {"x": 2.5, "y": 4}, "junk": [' + number + b", {\"k\": " + number + b"}]}",
        enc({"f": {"x": 3.5}}),
    ]
    batch = decode(messages)
    assert batch.invalid == {}
    m = batch.models["m"]
    assert m.positions.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(m.columns["x"], [math.nan, 1.5, 2.5, 3.5])
    np.testing.assert_array_equal(m.columns["y"], [2.0, 3.0, 4.0, math.nan])
    assert m.columns["c"].tolist() == [None] * 4 and m.columns["d"].tolist()[0] == "k"
    assert m.columns["top"].tolist()[0] == 3.0
    assert m.invalid_values == {"x": 1, "y": 0, "c": 1, "d": 0, "top": 0, "deep": 0, "score": 0}
    assert m.missing_values["x"] == 0 and m.missing_values["c"] == 3
    # alone, it is a JSON value but not an object
    assert decode([number]).invalid == {"not_an_object": 1}


def test_a_huge_number_in_select_and_timestamp() -> None:
    cfg = make_config(
        [{"name": "m", "select": {"field": "model", "equals": 1}}],
        timestamp={"path": "ts", "unit": "s"},
    )
    messages = [
        b'{"model": ' + HUGE_INT + b', "f": {"x": 1}}',  # matches no model
        b'{"model": 1, "ts": ' + HUGE_INT + b', "f": {"x": 2}}',  # an invalid timestamp
        b'{"model": 1, "ts": 1700000000, "f": {"x": 3}}',
    ]
    batch = decode(messages, cfg)
    assert batch.invalid == {"unknown_model": 1}
    m = batch.models["m"]
    assert m.columns["x"].tolist() == [2.0, 3.0]
    np.testing.assert_array_equal(m.timestamps, [math.nan, 1.7e9])
    assert m.invalid_timestamp_mask is not None
    assert m.invalid_timestamp_mask.tolist() == [True, False] and m.invalid_timestamps == 1


def test_a_huge_integer_under_a_lower_digit_limit() -> None:
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(640)
    try:
        number = b"1" + b"0" * 640
        batch = decode([b'{"f": {"x": 1, "c": ' + number + b'}, "top": ' + number + b"}"])
        m = batch.models["m"]
        assert batch.invalid == {} and m.columns["x"].tolist() == [1.0]
        assert m.invalid_values["c"] == 1 and m.invalid_values["top"] == 1
    finally:
        sys.set_int_max_str_digits(limit)
    # within the limit: the stdlib reads the int (a category of its first 200 digits)
    m = decode([b'{"f": {"c": ' + number + b"}}"]).models["m"]
    assert m.columns["c"].tolist() == ["1" + "0" * (MAX_CATEGORY_CHARS - 1)]


def test_categorical_conversions() -> None:
    values: list[Any] = ["DE", 3, -7, True, False, 1.5, 1e16, [1], {"a": "b"}, None, "", "é" * 300]
    messages = [enc({"f": {"c": v}}) for v in values] + [enc({"f": None})]
    m = decode(messages).models["m"]
    assert m.columns["c"].tolist() == [
        "DE",
        "3",
        "-7",
        "true",
        "false",
        "1.5",
        "1e+16",
        None,
        None,
        None,
        "",
        "é" * MAX_CATEGORY_CHARS,
        None,
    ]
    assert m.invalid_mask["c"].tolist() == [False] * 7 + [True, True] + [False] * 4
    assert m.missing_mask["c"].tolist() == [False] * 9 + [True, False, False, True]


def test_clean_group_fast_path_and_fallbacks_agree() -> None:
    clean = [enc({"f": {"x": i, "y": i / 2, "c": f"c{i % 3}", "d": "k"}}) for i in range(50)]
    fast = decode(clean).models["m"]
    # one absent key, one wrong type, one long string: each forces a slower path
    for bad in (
        enc({"f": {"x": 1, "c": "c1", "d": "k"}}),
        enc({"f": {"x": 1, "y": "oops", "c": "c1", "d": "k"}}),
        enc({"f": {"x": 1, "y": 2, "c": "z" * 500, "d": "k"}}),
        enc({"f": {"x": 1, "y": 2, "c": 5, "d": "k"}}),
    ):
        slow = decode([*clean, bad]).models["m"]
        for name in ("x", "y", "c", "d"):
            np.testing.assert_array_equal(slow.columns[name][:50], fast.columns[name])
            assert not slow.invalid_mask[name][:50].any() and not slow.missing_mask[name][:50].any()
    assert fast.columns["y"].flags.c_contiguous and fast.columns["c"].flags.c_contiguous


@pytest.mark.parametrize(
    ("unit", "values", "expected"),
    [
        (
            "s",
            [1700000000, 1700000000.5, "1700000001", None, True, "x"],
            [1.7e9, 1.7e9 + 0.5, 1.7e9 + 1, None, None, None],
        ),
        ("ms", [1700000000123, "1700000000123"], [1700000000.123, 1700000000.123]),
        ("us", [1700000000123456], [1700000000.123456]),
        (
            "iso8601",
            [
                "2024-06-01T12:00:00Z",
                "2024-06-01T14:00:00+02:00",
                "2024-06-01T12:00:00.5",
                "2024-06-01",
                "nope",
                5,
                None,
            ],
            [
                datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp(),
                datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp(),
                datetime(2024, 6, 1, 12, tzinfo=UTC).timestamp() + 0.5,
                datetime(2024, 6, 1, tzinfo=UTC).timestamp(),
                None,
                None,
                None,
            ],
        ),
    ],
)
def test_timestamps(unit: str, values: list[Any], expected: list[float | None]) -> None:
    cfg = make_config(timestamp={"path": "meta.ts", "unit": unit})
    batch = decode(
        [enc({"meta": {"ts": v}, "f": {"x": 1}}) for v in values]
        + [enc({"f": {}}), enc({"meta": 3})],
        cfg,
    )
    m = batch.models["m"]
    ts = m.timestamps
    assert ts is not None
    want = np.array([math.nan if e is None else e for e in [*expected, None, None]])
    np.testing.assert_allclose(ts, want, rtol=0, atol=1e-6)
    # unparseable: invalid; absent, null or under a non-object parent: missing, not counted
    invalid = [e is None and v is not None for v, e in zip(values, expected, strict=True)]
    assert m.invalid_timestamp_mask is not None
    assert m.invalid_timestamp_mask.tolist() == [*invalid, False, False]
    assert m.invalid_timestamps == sum(invalid)


@pytest.mark.parametrize("unit", ["s", "ms", "iso8601"])
def test_invalid_timestamps(unit: str) -> None:
    cfg = make_config(timestamp={"path": "ts", "unit": unit})
    good: Any = "2024-06-01T12:00:00Z" if unit == "iso8601" else 1_700_000_000
    bad: list[Any] = ["garbage", "", True, [1], {"s": 1}, math.nan, math.inf, "2024-13-45"]
    messages = [enc({"ts": good, "f": {"x": 1}})] + [enc({"ts": b, "f": {"x": 2}}) for b in bad]
    messages += [b'{"ts": 1e400, "f": {"x": 3}}', enc({"ts": None}), enc({"f": {"x": 4}})]
    m = decode(messages, cfg).models["m"]
    assert m.invalid_timestamps == len(bad) + 1
    assert m.invalid_timestamp_mask is not None
    assert m.invalid_timestamp_mask.tolist() == [False] + [True] * (len(bad) + 1) + [False] * 2
    assert m.timestamps is not None and np.isfinite(m.timestamps).tolist() == [True] + [False] * (
        len(bad) + 3
    )
    # the event's values count all the same
    assert m.columns["x"].tolist()[:1] == [1.0] and m.invalid_values["x"] == 0


def test_no_timestamps_without_config() -> None:
    m = decode([enc({"timestamp": 1})]).models["m"]
    assert m.timestamps is None and m.invalid_timestamp_mask is None
    assert m.invalid_timestamps == 0


def test_extract_columns_and_select_events() -> None:
    cfg = make_config()
    events: list[Any] = [
        {"f": {"x": 1, "c": "a"}},
        {"f": {"x": "bad"}},
        [1, 2],
        {"p": {"score": 0.5}},
    ]
    m = extract_columns(events, cfg.models[0])
    assert m.positions.tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(m.columns["x"], [1.0, np.nan, np.nan, np.nan])
    assert m.invalid_values["x"] == 1 and m.missing_values["x"] == 2
    assert m.columns["score"].tolist()[3] == 0.5 and m.timestamps is None
    # values from other readers (numpy scalars) are numbers, not wrong types
    m = extract_columns([{"f": {"x": np.float32(1.5), "c": np.int64(3)}}], cfg.models[0])
    assert m.columns["x"].tolist() == [1.5] and m.columns["c"].tolist() == ["3"]
    sel = make_config([{"name": "s", "select": {"field": "model", "equals": "s"}}]).models[0]
    assert select_events([{"model": "s"}, {"model": "t"}, 3, {"model": "s"}], sel).tolist() == [
        0,
        3,
    ]
    assert select_events([{}, {}], cfg.models[0]).tolist() == [0, 1]


# --------------------------------------------------------------------------
# properties: never raises, counts add up, same result as a naive decoder
# --------------------------------------------------------------------------
_MISSING = object()


def _lookup(event: Any, path: tuple[str, ...]) -> Any:
    node = event
    for key in path:
        if type(node) is not dict or key not in node:
            return _MISSING
        node = node[key]
    return _MISSING if node is None else node


def _wrong_structure(event: dict[str, Any], model: Any) -> bool:
    """Whether a path of ``model`` descends through a value that is neither an object nor
    null (and is no column's own path)."""
    leaves = {c.path for c in model.columns}
    for column in model.columns:
        node: Any = event
        for k, key in enumerate(column.path[:-1]):
            node = node.get(key)
            if node is None:
                break
            if type(node) is not dict:
                if column.path[: k + 1] not in leaves:
                    return True
                break
    return False


class _TooManyDigits:
    """What the naive decoder reads for an integer of more digits than int() reads."""


_TOO_MANY_DIGITS = _TooManyDigits()


def _naive_int(digits: str) -> Any:
    try:
        return int(digits)
    except ValueError:
        return _TOO_MANY_DIGITS


def naive_value(event: Any, column: ColumnConfig) -> tuple[Any, str]:
    """(value, "ok" | "missing" | "invalid") by the documented rules."""
    v = _lookup(event, column.path)
    if v is _MISSING:
        return (math.nan if column.type == "numeric" else None), "missing"
    if v is _TOO_MANY_DIGITS:
        return (math.nan if column.type == "numeric" else None), "invalid"
    if column.type == "numeric":
        if type(v) in (int, float):
            try:
                x = float(v)
            except OverflowError:
                return math.nan, "invalid"
            return (x, "ok") if math.isfinite(x) else (math.nan, "invalid")
        return math.nan, "invalid"
    if type(v) is str:
        return v[:MAX_CATEGORY_CHARS], "ok"
    if type(v) is bool:
        return ("true" if v else "false"), "ok"
    if type(v) is int:
        return str(v)[:MAX_CATEGORY_CHARS], "ok"
    if type(v) is float and math.isfinite(v):
        return repr(v), "ok"
    return None, "invalid"


_SCALE = {"s": 1.0, "ms": 1e3, "us": 1e6}


def naive_timestamp(event: Any, path: tuple[str, ...], unit: str) -> tuple[float, bool]:
    """(seconds or NaN, whether the timestamp is invalid: present but not a time)."""
    v = _lookup(event, path)
    if v is _MISSING:
        return math.nan, False
    if unit == "iso8601":
        if type(v) is str and len(v) <= 64:
            try:
                moment = datetime.fromisoformat(v)
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return moment.timestamp(), False
            except (ValueError, OverflowError, OSError):
                pass
        return math.nan, True
    x = math.nan
    try:
        if type(v) in (int, float) or (type(v) is str and len(v) <= 40):
            x = float(v)
    except (ValueError, OverflowError):
        pass
    if not math.isfinite(x):
        return math.nan, True
    return x / _SCALE[unit], False


def naive_decode(config: Config, messages: list[bytes]) -> tuple[dict[str, int], dict[str, Any]]:
    invalid: dict[str, int] = {}
    per_model: dict[str, Any] = {
        m.name: {"positions": [], "rows": [], "times": []} for m in config.models
    }
    ts = config.source.timestamp
    limit = config.source.max_message_bytes
    for i, message in enumerate(messages):
        if len(message) > limit:
            invalid["oversized"] = invalid.get("oversized", 0) + 1
            continue
        try:
            event = json.loads(message, parse_int=_naive_int)
        except (ValueError, RecursionError):
            invalid["invalid_json"] = invalid.get("invalid_json", 0) + 1
            continue
        if type(event) is not dict:
            invalid["not_an_object"] = invalid.get("not_an_object", 0) + 1
            continue
        taken = routed = False
        for model in config.models:
            if model.select is not None:
                v = _lookup(event, model.select.field)
                if not (type(v) is type(model.select.equals) and v == model.select.equals):
                    continue
            routed = True
            if _wrong_structure(event, model):
                continue
            taken = True
            per_model[model.name]["positions"].append(i)
            per_model[model.name]["rows"].append([naive_value(event, c) for c in model.columns])
            if ts is not None:
                per_model[model.name]["times"].append(naive_timestamp(event, ts.path, ts.unit))
        if not taken:
            reason = "wrong_structure" if routed else "unknown_model"
            invalid[reason] = invalid.get(reason, 0) + 1
    return invalid, per_model


def assert_same_as_naive(config: Config, messages: list[bytes]) -> None:
    batch = BatchDecoder(config).decode(messages)
    check_invariants(batch, len(messages))
    invalid, per_model = naive_decode(config, messages)
    assert batch.invalid == invalid
    for model in config.models:
        got = batch.models[model.name]
        want = per_model[model.name]
        assert got.positions.tolist() == want["positions"]
        for j, column in enumerate(model.columns):
            values = [row[j][0] for row in want["rows"]]
            states = [row[j][1] for row in want["rows"]]
            if column.type == "numeric":
                np.testing.assert_array_equal(
                    got.columns[column.name], np.array(values, dtype=np.float64)
                )
            else:
                assert got.columns[column.name].tolist() == values
            assert got.invalid_mask[column.name].tolist() == [s == "invalid" for s in states]
            assert got.missing_mask[column.name].tolist() == [s == "missing" for s in states]
        if config.source.timestamp is None:
            assert got.timestamps is None and got.invalid_timestamps == 0
        else:
            assert got.timestamps is not None and got.invalid_timestamp_mask is not None
            times = np.array([t for t, _ in want["times"]], dtype=np.float64)
            np.testing.assert_array_equal(got.timestamps, times)
            assert got.invalid_timestamp_mask.tolist() == [bad for _, bad in want["times"]]


#: JSON numbers no double holds (5,000 digits: no int the stdlib reads either); a message
#: carries the number where the value is its stand-in string
HUGE_NUMBERS = {
    "<9x5000>": b"9" * 5000,
    "<-9x5000>": b"-" + b"9" * 5000,
    "<1e400>": b"1e400",
    "<-1e400>": b"-1e400",
    "<9x5000.5>": b"9" * 5000 + b".5",
    "<1e4999>": b"1" + b"0" * 4999,
}


def with_huge_numbers(message: bytes) -> bytes:
    for stand_in, number in HUGE_NUMBERS.items():
        message = message.replace(b'"%s"' % stand_in.encode(), number)
    return message


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["DE", "FR", "x" * 250])
    | st.sampled_from(list(HUGE_NUMBERS))
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)
leaf_or_clean = st.one_of(
    st.floats(-1e6, 1e6), st.integers(-5, 5), st.sampled_from(["DE", "FR"]), json_values
)
events = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "n", 1, True, None]),
        "f": st.one_of(
            st.fixed_dictionaries({}, optional={k: leaf_or_clean for k in ("x", "y", "c", "d")}),
            json_values,
        ),
        "top": leaf_or_clean,
        "a": st.one_of(
            st.fixed_dictionaries({"b.c": st.fixed_dictionaries({"d": leaf_or_clean})}), json_values
        ),
        "p": st.fixed_dictionaries({}, optional={"score": leaf_or_clean}),
        "ts": leaf_or_clean,
    },
)
messages = st.one_of(
    events.map(lambda e: json.dumps(e).encode()),  # NaN / Infinity literals, big ints
    events.map(
        lambda e: (
            orjson.dumps(e, option=orjson.OPT_NON_STR_KEYS)
            if _orjson_ok(e)
            else json.dumps(e).encode()
        )
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
).map(with_huge_numbers)


def _orjson_ok(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


ROUTED = make_config(
    [
        {
            "name": "m",
            "select": {"field": "model", "equals": "m"},
            "features": FEATURES,
            "predictions": PREDICTIONS,
        },
        {"name": "one", "select": {"field": "model", "equals": 1}, "features": FEATURES[:3]},
        {"name": "flag", "select": {"field": "model", "equals": True}, "features": FEATURES[2:]},
    ],
    max_message_bytes=400,
    timestamp={"path": "ts", "unit": "ms"},
)
CATCH_ALL = make_config(timestamp={"path": "ts", "unit": "iso8601"})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, max_size=30))
def test_property_same_as_naive_decoder(batch: list[bytes]) -> None:
    assert_same_as_naive(ROUTED, batch)
    assert_same_as_naive(CATCH_ALL, batch)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64) | st.text(max_size=20).map(str.encode), max_size=20))
def test_property_arbitrary_bytes_never_raise(batch: list[bytes]) -> None:
    for config in (ROUTED, CATCH_ALL):
        result = BatchDecoder(config).decode(batch)
        check_invariants(result, len(batch))


@settings(max_examples=100, deadline=None)
@given(st.lists(events, min_size=1, max_size=40))
def test_property_extract_columns_matches_rules(evs: list[dict[str, Any]]) -> None:
    model: ModelConfig = CATCH_ALL.models[0]
    got = extract_columns(evs, model)
    for column in model.columns:
        want = [naive_value(e, column) for e in evs]
        if column.type == "numeric":
            np.testing.assert_array_equal(
                got.columns[column.name], np.array([w[0] for w in want], dtype=float)
            )
        else:
            assert got.columns[column.name].tolist() == [w[0] for w in want]
        assert got.invalid_values[column.name] == sum(w[1] == "invalid" for w in want)
        assert got.missing_values[column.name] == sum(w[1] == "missing" for w in want)


# --------------------------------------------------------------------------- wrong structure
CREDIT = {"name": "credit", "select": {"field": "model", "equals": "credit"},
          "features": [{"name": "x", "path": "features.x", "type": "numeric"},
                       {"name": "c", "path": "features.c", "type": "categorical"}],
          "predictions": [{"name": "s", "path": "prediction.score", "type": "numeric"}]}
FRAUD = {"name": "fraud", "select": {"field": "model", "equals": "fraud"},
         "features": [{"name": "amount", "path": "features.amount", "type": "numeric"}]}


@pytest.mark.parametrize("use_msgspec", [True, False])
def test_wrong_structure_is_an_event_error(use_msgspec: bool) -> None:
    config = make_config([dict(CREDIT), dict(FRAUD)])
    messages = [
        b'{"model": "credit", "features": {"x": 1, "c": "a"}, "prediction": {"score": 0.5}}',
        b'{"model": "credit", "features": "oops"}',
        b'{"model": "fraud", "features": {"amount": 12.5}}',
        b'{"model": "credit", "features": [1, 2], "prediction": {"score": 0.5}}',
        b'{"model": "credit", "features": {"x": 2, "c": "b"}, "prediction": [1]}',
        b'{"model": "fraud", "features": "oops"}',
        b'{"model": "credit", "features": null, "prediction": {"score": 0.1}}',  # null: missing
        b'{"model": "fraud", "features": {"amount": 3.0}, "prediction": 5}',  # not fraud's path
        b'{"model": "credit", "features": {"x": 4, "c": "a"}, "prediction": {"score": 0.7}}',
    ]
    batch = BatchDecoder(config, use_msgspec=use_msgspec).decode(messages)
    check_invariants(batch, len(messages))
    assert batch.invalid == {"wrong_structure": 4}
    assert batch.invalid_positions.tolist() == [1, 3, 4, 5]
    assert batch.invalid_reasons == ["wrong_structure"] * 4
    credit = batch.models["credit"]
    assert credit.positions.tolist() == [0, 6, 8]
    np.testing.assert_array_equal(credit.columns["x"], [1.0, math.nan, 4.0])
    assert credit.missing_values == {"x": 1, "c": 1, "s": 0}
    assert credit.invalid_values == {"x": 0, "c": 0, "s": 0}
    fraud = batch.models["fraud"]
    assert fraud.positions.tolist() == [2, 7] and fraud.columns["amount"].tolist() == [12.5, 3.0]
    assert batch.n_valid == 5


@pytest.mark.parametrize("use_msgspec", [True, False])
def test_wrong_structure_is_decided_per_model(use_msgspec: bool) -> None:
    # a catch-all model reading other paths takes the events credit cannot walk, so they
    # are not invalid: only credit leaves them out
    audit = {"name": "audit", "features": [{"name": "a", "path": "audit.a", "type": "numeric"}]}
    config = make_config([dict(CREDIT), audit])
    messages = [
        b'{"model": "credit", "features": {"x": 1, "c": "a"}, "prediction": {"score": 0.5}}',
        b'{"model": "credit", "features": "oops", "audit": {"a": 1}}',
        b'{"model": "credit", "features": {"x": 3, "c": "b"}, "audit": 7}',
        b'{"model": "other", "audit": [1]}',
    ]
    batch = BatchDecoder(config, use_msgspec=use_msgspec).decode(messages)
    check_invariants(batch, len(messages))
    assert batch.invalid == {"wrong_structure": 1} and batch.invalid_positions.tolist() == [3]
    assert batch.models["credit"].positions.tolist() == [0, 2]
    assert batch.models["audit"].positions.tolist() == [0, 1]
    assert batch.models["audit"].missing_values == {"a": 1}
