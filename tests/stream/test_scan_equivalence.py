"""The scanner (stream.formats.scan) gives exactly the columnar decoder's DecodedBatch.

Every test decodes with :class:`ScanDecoder` and :class:`ColumnarDecoder` (itself proved
equal to both paths of BatchDecoder in tests/stream/test_columnar_equivalence.py) and
compares everything (columns with dtypes, NaN-aware, ``-0.0`` kept; masks, counts,
reasons, positions, timestamps).  The batches are the random ones of the msgspec and
columnar tests, plus adversarial ones for what the scanner decides itself: numbers of
every shape in every kind of field, escapes, duplicate keys, nesting, whitespace and
garbage spliced anywhere.  Then it checks what the scanner left to the columnar decoder.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.config import Config
from stream.formats._scan_kernel import _number, pow10_tables
from stream.formats.batch import DecodedBatch
from stream.formats.columnar import ColumnarDecoder
from stream.formats.decoders import decoder_for
from stream.formats.scan import ScanDecoder, scan_plan
from tests.stream.test_columnar_equivalence import (
    PREDICTIONS,
    REFUSED,
    TYPED_CATCH_ALL,
    TYPED_LABELS,
    TYPED_PLAIN,
    TYPED_ROUTED,
    event,
    make_config,
)
from tests.stream.test_decode_msgspec import (
    CONFIGS,
    assert_same_batch,
    batches,
    clean_messages,
    dirty_messages,
)

#: served by the scanner: no iso8601 timestamps (TYPED_CATCH_ALL has them)
SCANNED = (TYPED_PLAIN, TYPED_ROUTED,
           make_config([{"name": "all", "predictions": [
               {"name": "score", "path": "p.score", "type": "numeric"},
               {"name": "label", "path": "p.label", "type": "categorical"}]},
               {"name": "m", "select": {"field": "model", "equals": "m"}},
               {"name": "k", "select": {"field": "meta.kind", "equals": "k"}}],
               timestamp={"path": "ts", "unit": "us"}))
ALL = (*SCANNED, TYPED_CATCH_ALL, TYPED_LABELS, *CONFIGS)
_HI, _LO, _EXACT = pow10_tables()


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def decode_all(config: Config, messages: list[Any]) -> tuple[DecodedBatch, ScanDecoder]:
    decoder = ScanDecoder(config)
    got = decoder.decode(list(messages))
    assert_same_batch(got, ColumnarDecoder(config).decode(list(messages)))
    # the scanner decoded the batch: it did not raise (and leave it to the columnar decoder)
    assert decoder.scanned_batches == (1 if decoder.scanning and messages else 0)
    if decoder.scanned_batches:
        assert_coded(config, got)
    return got, decoder


def flagged_alone(config: Config, batch: list[bytes]) -> int:
    """How many of ``batch``'s messages the scanner flags when each is decoded alone."""
    alone = 0
    for message in batch:
        single = ScanDecoder(config)
        single.decode([message])
        alone += single.flagged_messages
    return alone


def assert_coded(config: Config, batch: DecodedBatch) -> None:
    """Every categorical column of a scanned batch comes with its codes, bound to it, and
    the table's entries at the codes are its values (the flagged rows' included)."""
    for model in config.models:
        mb = batch.models[model.name]
        for column in model.columns:
            coded = mb.coded.get(column.name)
            if column.type == "numeric" or not mb.n_events:
                continue
            assert coded is not None and coded.values is mb.columns[column.name]
            assert coded.codes.shape == (mb.n_events,)
            assert coded.table[-1] is None
            assert [(type(v), v) for v in coded.table[coded.codes].tolist()] == \
                [(type(v), v) for v in mb.columns[column.name].tolist()]


def test_which_configurations_are_scanned() -> None:
    for config in SCANNED:
        assert scan_plan(config) is not None
    for config in (TYPED_CATCH_ALL, TYPED_LABELS, *CONFIGS):  # iso8601, labels, two types
        assert scan_plan(config) is None


def test_the_json_format_decodes_with_the_scanner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMDRIFT_JSON_DECODER", raising=False)
    assert isinstance(decoder_for(TYPED_PLAIN), ScanDecoder)
    monkeypatch.setenv("STREAMDRIFT_JSON_DECODER", "columnar")
    assert isinstance(decoder_for(TYPED_PLAIN), ColumnarDecoder)


def test_clean_batch_is_scanned_whole() -> None:
    messages = [enc(event(i)) for i in range(200)]
    for config in SCANNED:
        _, decoder = decode_all(config, messages)
        assert decoder.flagged_messages == 0 and decoder.scanned_batches == 1


# --------------------------------------------------------------------------
# numbers
# --------------------------------------------------------------------------
def _scan_number(text: bytes) -> tuple[int, int, float]:
    buf = np.frombuffer(text + b",", dtype=np.uint8)
    pos, kind, value, _ = _number(buf, 0, len(text), _HI, _LO, _EXACT)
    return pos, kind, value


JSON_NUMBER = r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z"
HARD = [b"0", b"-0", b"-0.0", b"0e400", b"1e22", b"1e23", b"9007199254740993",
        b"9007199254740993.0", b"2.2250738585072014e-308", b"2.2250738585072011e-308",
        b"1.7976931348623157e308", b"1.7976931348623159e308", b"4.9e-324", b"1e400",
        b"0.000000000000000000000000001", b"123456789012345678", b"1234567890123456789",
        b"1.00000000000000011102230246251565404236316680908203125", b"7.2057594037927933e16",
        b"0.8444218515250481", b"0.12345678901234567", b"179769313486231570000000000e282"]


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.from_regex(JSON_NUMBER).map(str.encode),
                 st.floats(allow_nan=False, allow_infinity=False).map(lambda x: repr(x).encode()),
                 st.integers(0, 2**64 - 1).map(
                     lambda b: repr(struct.unpack("d", struct.pack("Q", b))[0]).encode()),
                 st.sampled_from(HARD)))
def test_numbers_are_exact_or_refused(text: bytes) -> None:
    pos, kind, value = _scan_number(text)
    if text.lstrip(b"-").startswith((b"n", b"i")):  # repr of a NaN or an infinity
        assert kind == -1
        return
    assert pos == len(text)
    if kind == 1:  # an integer: as Python's float(int)
        assert value == float(int(text)) and not np.signbit(value) or int(text) < 0
    elif kind == 0:
        want = float(text)
        assert struct.pack("d", value) == struct.pack("d", want), (text, value, want)
    else:
        assert kind == 2


# --------------------------------------------------------------------------
# property: random batches, the same result as the columnar decoder
# --------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches)
def test_property_scan_same_as_columnar(batch: list[bytes]) -> None:
    for config in ALL:
        decode_all(config, batch)


def _number_texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.from_regex(JSON_NUMBER),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.integers(-(2**70), 2**70).map(str),
        st.sampled_from([h.decode() for h in HARD] + ["NaN", "-Infinity", "01", "1.", ".5",
                                                       "1e", "-", "+1", "1e+", "0x10", "1_0"]))


SCALAR_TEXTS = st.one_of(
    _number_texts(),
    st.sampled_from(['"DE"', '"m"', '"k"', '"é"', '"\\u0044E"', '"D\\"E"', '"x\\u00e9"',
                     '"\\ud83d\\ude00"', '"\\udc00"', '"a\\/b"', '"\\q"', '"\t"', '"' + "y" * 201
                     + '"', '"' + "é" * 200 + '"', "true", "false", "null", "nul", "[]", "{}",
                     "[1, [2, {\"a\": [null]}]]", '{"x": 1, "x": 2}', "[" * 70 + "]" * 70,
                     '"\\u004D"', "1", "-0", "1.0"]))


@st.composite
def adversarial_messages(draw: st.DrawFn) -> bytes:
    """An event whose fields (configured or not, at every depth) hold adversarial texts,
    possibly a key twice or escaped, with odd whitespace, then maybe garbage spliced in."""
    fields = {"x": "f", "y": "f", "c": "f", "d": "f", "é k": "f", "junk": "f",
              "score": "p", "label": "p", "kind": "meta", "ts": "meta"}
    top: dict[str, list[str]] = {"f": [], "p": [], "meta": []}
    pairs: list[str] = []
    for key, parent in fields.items():
        for _ in range(draw(st.integers(0, 2))):  # absent, once or twice
            name = json.dumps(key) if not draw(st.booleans()) else draw(
                st.sampled_from(['"\\u0078"', '"\\u0063"', json.dumps(key)]))
            top[parent].append(f"{name}:{draw(SCALAR_TEXTS)}")
    space = draw(st.sampled_from(["", " ", "\n", "\r\n\t", "\x0c"]))
    for parent, items in top.items():
        body = "{" + space + ("," + space).join(items) + space + "}"
        pairs.append(f'"{parent}":' + draw(st.sampled_from([body, body, "null", "3", "[]"])))
    pairs.append('"model":' + draw(st.sampled_from(['"m"', "1", "true", '"n"', "1.0", "-0",
                                                    '"\\u006d"', "null", "[1]"])))
    pairs.append('"ts":' + draw(SCALAR_TEXTS))
    pairs.append('"top":' + draw(SCALAR_TEXTS))
    pairs = draw(st.permutations(pairs))
    text = (space + "{" + ",".join(pairs) + "}" + draw(st.sampled_from(["", " ", "\n", "{}",
                                                                          "x", "\x00"])))
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 4)) == 0:  # garbage spliced in
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"}", b'"', b",",
                                     b"\x00", b"\\"]))
        data = data[:at] + junk + data[at + draw(st.integers(0, 1)):]
    return data


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(adversarial_messages(), clean_messages), max_size=12))
def test_property_adversarial_batches(batch: list[bytes]) -> None:
    for config in SCANNED:
        decode_all(config, batch)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(clean_messages, min_size=1, max_size=20),
       st.lists(st.tuples(st.integers(0, 40), adversarial_messages()), max_size=3))
def test_property_bad_rows_spliced_into_clean_batches(
        clean: list[bytes], bad: list[tuple[int, bytes]]) -> None:
    batch = list(clean)
    for at, message in bad:
        batch.insert(at % (len(batch) + 1), message)
    for config in SCANNED:
        _, decoder = decode_all(config, batch)
        # a row is flagged in a batch exactly when it is flagged alone
        assert decoder.flagged_messages == flagged_alone(config, batch)


@pytest.mark.parametrize("config", SCANNED, ids=["plain", "routed", "catch_all_us"])
def test_only_bad_rows_are_flagged(config: Config) -> None:
    messages: list[Any] = [enc(event(i)) for i in range(300)]
    bad = [enc(event(1, x=True)), b"{", None, bytearray(enc(event(2))),
           enc(event(3)).replace(b'"x": 1.5', b'"x": NaN'), b'{"model": "m"}{}',
           enc(event(4, c="a" * 201)), enc(event(5, y=2**64))]
    for k, message in enumerate(bad):
        messages[10 + 30 * k] = message
    _, decoder = decode_all(config, messages)
    assert decoder.flagged_messages == len(bad)


def test_a_batch_mostly_flagged_goes_to_the_columnar_decoder_whole() -> None:
    # integers in a categorical column on every row: the kernel flags each row
    messages = [enc(event(i, c=i)) for i in range(100)]
    decoder = ScanDecoder(TYPED_PLAIN)
    assert_same_batch(decoder.decode(messages), ColumnarDecoder(TYPED_PLAIN).decode(messages))
    assert decoder.flagged_messages == 100 and decoder.scanned_batches == 0


# --------------------------------------------------------------------------
# the flagged rows' decoder (stream.formats._scan_careful), among many clean rows
# --------------------------------------------------------------------------
#: two models routed alike whose paths descend through different objects (``f``, ``p``):
#: an event holding no object at one of them is still the other's
SPLIT = make_config([
    {"name": "f", "select": {"field": "model", "equals": "m"}},
    {"name": "p", "select": {"field": "model", "equals": "m"},
     "features": [{"name": "ps", "path": "p.score", "type": "numeric"}],
     "predictions": PREDICTIONS[1:]}],
    timestamp={"path": "ts", "unit": "ms"})
SPLIT_BAD = [enc({**event(1), "f": 3}), enc({**event(2), "p": [1]}),
             enc({**event(3), "f": "oops", "p": None}), enc({**event(4), "f": 3, "p": 3}),
             enc({**event(5, x="1.5", c=["a"]), "p": {"score": True, "label": 7}}),
             enc({**event(6, y=None), "ts": "1717243200000"}), enc({**event(7), "ts": [1]}),
             enc({**event(8), "model": "n", "f": 3})]


def test_flagged_rows_of_every_kind_among_clean_rows() -> None:
    assert scan_plan(SPLIT) is not None
    messages: list[Any] = [enc(event(i)) for i in range(300)]
    for k, message in enumerate(REFUSED + SPLIT_BAD):
        messages[7 + 13 * k] = message
    for config in (*SCANNED, SPLIT):
        got, decoder = decode_all(config, messages)
        assert decoder.flagged_messages >= len(REFUSED)
        assert got.invalid_reasons  # rejected rows among them
    got, _ = decode_all(SPLIT, messages)
    assert "wrong_structure" in got.invalid_reasons
    # "f": 3 is no event of model f, still one of model p
    at = 7 + 13 * len(REFUSED)
    assert at not in got.models["f"].positions and at in got.models["p"].positions


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 60),
       st.lists(st.tuples(st.integers(0, 70), st.one_of(
           st.sampled_from(REFUSED + SPLIT_BAD), adversarial_messages(), dirty_messages)),
           min_size=1, max_size=9))
def test_property_flagged_rows_among_clean_rows(n: int, bad: list[tuple[int, Any]]) -> None:
    batch: list[Any] = [enc(event(i)) for i in range(n)]
    for at, message in bad:
        batch.insert(at % (len(batch) + 1), message)
    for config in (*SCANNED, SPLIT):
        decode_all(config, batch)


# The kernel remembers, per configured object, the key it read at each place, and per
# categorical or select column the strings it read: a later row's key or string is
# compared with those bytes instead of being hashed and looked up.  Near misses of every
# kind (a prefix, an extension, the same text escaped, an empty string, a key beyond the
# places remembered, a key given twice) must read exactly as the columnar decoder reads
# them, whatever the rows before them held.
_F_KEYS = ["x", "y", "c", "d", "xy", "yx", "\\u0078", "x\\u0079", "c ", "", "\u00e9 k",
           "\\u00e9 k", "\u00e9", "cc"]
_STRINGS = ['"DE"', '"D"', '"DEU"', '""', '"D\\u0045"', '"DF"', '"ED"', '"\u00e9"',
            '"\\u00e9"', '"ok"', '"o"', '"okk"', "null", "1", "2.5", "-0.0"]


@st.composite
def memo_rows(draw: Any) -> list[bytes]:
    layout = draw(st.lists(st.sampled_from(_F_KEYS), min_size=1, max_size=6))
    rows = []
    for _ in range(draw(st.integers(1, 8))):
        keys = list(layout)
        if draw(st.booleans()):  # a near miss of the layout at one place
            keys[draw(st.integers(0, len(keys) - 1))] = draw(st.sampled_from(_F_KEYS))
        if draw(st.integers(0, 9)) == 0:  # keys beyond the remembered places
            keys = [f"z{k}" for k in range(70)] + keys
        values = [draw(st.sampled_from(_STRINGS)) for _ in keys]
        f = ", ".join(f'"{k}": {v}' for k, v in zip(keys, values, strict=True))
        label = draw(st.sampled_from(_STRINGS))
        model = draw(st.sampled_from(['"m"', '"mm"', '""', '"\\u006d"', "1", "true"]))
        rows.append(f'{{"model": {model}, "f": {{{f}}}, "p": {{"score": 0.5, "label": '
                    f'{label}}}, "ts": 1}}'.encode())
    return rows


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(memo_rows())
def test_property_remembered_keys_and_strings(batch: list[bytes]) -> None:
    for config in SCANNED:
        _, decoder = decode_all(config, batch)
        # what the rows before it held never flags a row: flagged in a batch exactly
        # when flagged alone
        assert decoder.flagged_messages == flagged_alone(config, batch)


def test_remembered_keys_and_strings_near_misses() -> None:
    first = b'{"model": "m", "f": {"x": 1, "c": "DE", "y": 2}, "p": {"label": "ok"}}'
    near = [
        b'{"model": "m", "f": {"xy": 1, "c": "D", "y": 2}, "p": {"label": "o"}}',
        b'{"model": "m", "f": {"\\u0078": 3, "c": "DEU", "y": 2}, "p": {"label": "okk"}}',
        b'{"model": "m", "f": {"x": 4, "c": "D\\u0045", "yy": 2}, "p": {"label": ""}}',
        b'{"model": "mm", "f": {"x": 5, "c": "", "y": 2}, "p": {"label": "ok"}}',
        b'{"model": "m", "f": {"x": 6, "c": "DE", "x": 2}, "p": {"label": "ok"}}',  # twice
        b'{"model": "m", "f": {"x": 7, "c": "DE", "y": 2}, "p": {"label": "ok"}}',
    ]
    for config in SCANNED:
        got, decoder = decode_all(config, [first, *near, first])
        assert decoder.flagged_messages == 1  # only the row with a key given twice
    batch, _ = decode_all(TYPED_PLAIN, [first, *near])
    m = batch.models["m"]
    # the key given twice sends its row to the careful decoder, which keeps the last value
    assert m.positions.tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert np.array_equal(m.columns["x"], [1.0, np.nan, 3.0, 4.0, 5.0, 2.0, 7.0],
                          equal_nan=True)
    assert m.columns["c"].tolist() == ["DE", "D", "DEU", "DE", "", "DE", "DE"]
    assert m.columns["label"].tolist() == ["ok", "o", "okk", "", "ok", "ok", "ok"]


# One decoder reads batch after batch into the same buffer: a batch shorter than the one
# before must not read the bytes left behind it, and the strings the kernel unescaped (in
# its arena, addressed after the batch's bytes) must be those of the batch.
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.one_of(adversarial_messages(), clean_messages, memo_rows().map(
    lambda rows: rows[0])), max_size=10), min_size=2, max_size=6))
def test_property_one_decoder_batch_after_batch(batches_: list[list[bytes]]) -> None:
    for config in SCANNED:
        decoder = ScanDecoder(config)
        for batch in batches_:
            assert_same_batch(decoder.decode(list(batch)), ColumnarDecoder(config).decode(
                list(batch)))


def test_batch_buffer_kept_and_released(monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.formats.scan as scan_module

    long = [enc(event(i, c="x" * 40)) for i in range(50)]
    short = [enc(event(i, c="D\\u0045")).replace(b"D\\\\u0045", b"D\\u0045")
             for i in range(3)]
    decoder = ScanDecoder(TYPED_PLAIN)
    for batch in (long, short, [b""], short, long):
        assert_same_batch(decoder.decode(list(batch)),
                          ColumnarDecoder(TYPED_PLAIN).decode(list(batch)))
    assert decoder.decode(short).models["m"].columns["c"].tolist() == ["DE"] * 3
    kept = decoder._joined
    assert_same_batch(decoder.decode(long), ColumnarDecoder(TYPED_PLAIN).decode(long))
    assert decoder._joined is kept  # the same buffer, batch after batch
    # a batch beyond the kept size leaves a new buffer behind it
    monkeypatch.setattr(scan_module, "_KEEP_JOINED", 100)
    decoder.decode(long)
    assert decoder._joined is not kept
    # the kernel failing midway (the columnar decoder then decodes the batch) leaves
    # the buffer free for the next batch
    real = scan_module._POW_HI
    monkeypatch.setattr(scan_module, "_POW_HI", None)
    assert_same_batch(decoder.decode(long), ColumnarDecoder(TYPED_PLAIN).decode(long))
    monkeypatch.setattr(scan_module, "_POW_HI", real)
    before = decoder.scanned_batches
    assert_same_batch(decoder.decode(long), ColumnarDecoder(TYPED_PLAIN).decode(long))
    assert decoder.scanned_batches == before + 1
