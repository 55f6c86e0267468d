"""numba kernel of :mod:`stream.formats.scan`: one pass over a poll batch's JSON bytes.

:func:`scan` walks every message (``buf[starts[r]:ends[r]]``) as one JSON object, matches
keys against the configured key tree and writes the configured leaves straight into
preallocated arrays: numbers into ``num_out`` (float64, NaN where absent or null),
strings into ``cat_code``/``sel_val`` as codes of a per-batch dictionary of distinct byte
spans (compared byte by byte: a hash collision cannot merge two strings), the kind of a
select field's value into ``sel_kind``.  Every value it skips is still validated as
JSON (grammar, UTF-8, escapes, numbers), so that a message it accepts is one that
msgspec and orjson read the same way.

It decides only what it is sure of.  Anything else sets ``flag[r]``, and the row is
decoded, alone, by the careful decoder (BatchDecoder): not JSON, not one object,
trailing bytes, a configured key given twice (escaped or not; escaped keys and strings
are unescaped, into a scratch buffer or an arena), a category of more than 200
characters, a value of another type than its column's (a boolean or a string
where a number belongs, a number where a category belongs), a non-object parent,
``NaN``/``Infinity`` literals, a ``\\u`` escape of a surrogate, nesting deeper than
:data:`MAX_SKIP_DEPTH`, a skipped number of more than 100 digits or an exponent of more
than 4, and any number in a configured field it cannot convert exactly: more than 19
significant digits, an integer of more than 18 digits, a decimal exponent beyond
±348, a result beyond the double range or subnormal, or a rare case where the
Eisel-Lemire algorithm cannot decide the rounding.

Numbers are exact: an integer token is converted from int64 (rounded to nearest even by
the hardware, as Python's ``float(int)``), a decimal one by Clinger's fast path
(mantissa ≤ 2^53 and |exponent| ≤ 22: one correctly rounded multiplication or
division), else by Eisel-Lemire with 128-bit truncated powers of ten (as Go's
``strconv`` and Lemire's fast_float), which bails out when it cannot decide.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["MAX_SKIP_DEPTH", "NODE_CAT", "NODE_NUM", "NODE_OBJ", "NODE_SEL", "key_hash",
           "key_slot_hash", "pow10_tables"]

NODE_OBJ = 0
NODE_NUM = 1
NODE_CAT = 2
NODE_SEL = 3

SEL_NONE = 0
SEL_STR = 1
SEL_INT = 2
SEL_TRUE = 3
SEL_FALSE = 4

#: configured objects nest at most this deep; skipped values at most this deep
MAX_CONFIG_DEPTH = 32
MAX_SKIP_DEPTH = 64
#: category strings of more characters: the row goes to the careful decoder (cut there)
MAX_CHARS = 200

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_KEY_MIX = np.uint64(0x9E3779B97F4A7C15)
_U0 = np.uint64(0)
_U1 = np.uint64(1)
_U3 = np.uint64(3)
_U9 = np.uint64(9)
_U10 = np.uint64(10)
_U32 = np.uint64(32)
_U53 = np.uint64(53)
_U63 = np.uint64(63)
_M32 = np.uint64(0xFFFFFFFF)
_M9 = np.uint64(0x1FF)
_TOP = np.uint64(1 << 63)
_TWO53 = np.uint64(1 << 53)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)

#: Eisel-Lemire's range of decimal exponents
POW10_MIN = -348
POW10_MAX = 347


def pow10_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(high, low 64 bits of 10^e normalised to 128 bits, rounded down, for e in
    [POW10_MIN, POW10_MAX]; the exact doubles 1e0..1e22)."""
    hi = np.empty(POW10_MAX - POW10_MIN + 1, dtype=np.uint64)
    lo = np.empty_like(hi)
    for i, e in enumerate(range(POW10_MIN, POW10_MAX + 1)):
        if e >= 0:
            v = 10**e
            bl = v.bit_length()
            v = v << (128 - bl) if bl <= 128 else v >> (bl - 128)
        else:
            p = 10**-e
            v = (1 << (127 + p.bit_length())) // p
        assert 1 << 127 <= v < 1 << 128
        hi[i] = v >> 64
        lo[i] = v & ((1 << 64) - 1)
    exact = np.array([10.0**k for k in range(23)], dtype=np.float64)
    return hi, lo, exact


def key_hash(key: bytes) -> int:
    """FNV-1a 64 of ``key``, as the kernel computes it."""
    h = 0xCBF29CE484222325
    for b in key:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def key_slot_hash(h: int, node: int) -> int:
    """Where the key tree's table looks for key hash ``h`` under ``node``."""
    h ^= (node * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    return h ^ (h >> 32)


# --------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _ws(buf, pos, end):  # type: ignore[no-untyped-def]
    while pos < end:
        c = buf[pos]
        if c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            return pos
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def _literal(buf, pos, end, a, b, c, d):  # type: ignore[no-untyped-def]
    """pos after the 4-byte literal abcd at pos, else -1."""
    if pos + 4 > end or buf[pos] != a or buf[pos + 1] != b or buf[pos + 2] != c \
            or buf[pos + 3] != d:
        return -1
    return pos + 4


@njit(cache=True, nogil=True)
def _hex(c):  # type: ignore[no-untyped-def]
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46:
        return c - 0x37
    if 0x61 <= c <= 0x66:
        return c - 0x57
    return -1


@njit(cache=True, nogil=True)
def _string(buf, pos, end):  # type: ignore[no-untyped-def]
    """(pos after the closing quote or -1, escaped, characters, FNV-1a hash of the raw
    bytes) of the string whose opening quote is at ``pos``.

    -1: not valid JSON, or a ``\\u`` escape of a surrogate (read differently by the
    parsers); invalid UTF-8 and control characters are not valid JSON."""
    h = _FNV_OFFSET
    pos += 1
    chars = 0
    escaped = False
    while pos < end:
        c = buf[pos]
        if c == 0x22:
            return pos + 1, escaped, chars, h
        chars += 1
        if c == 0x5C:
            escaped = True
            if pos + 1 >= end:
                return -1, escaped, chars, h
            e = buf[pos + 1]
            if e == 0x75:  # \uXXXX
                if pos + 6 > end:
                    return -1, escaped, chars, h
                v = 0
                for k in range(2, 6):
                    d = _hex(buf[pos + k])
                    if d < 0:
                        return -1, escaped, chars, h
                    v = v * 16 + d
                if 0xD800 <= v <= 0xDFFF:
                    return -1, escaped, chars, h
                pos += 6
                continue
            if e == 0x22 or e == 0x5C or e == 0x2F or e == 0x62 or e == 0x66 or e == 0x6E \
                    or e == 0x72 or e == 0x74:
                pos += 2
                continue
            return -1, escaped, chars, h
        if c < 0x20:
            return -1, escaped, chars, h
        h = (h ^ np.uint64(c)) * _FNV_PRIME
        if c < 0x80:
            pos += 1
            continue
        # UTF-8: the lead byte, then continuation bytes in the allowed ranges
        if 0xC2 <= c <= 0xDF:
            more = 1
            lo, hi = 0x80, 0xBF
        elif 0xE0 <= c <= 0xEF:
            more = 2
            lo = 0xA0 if c == 0xE0 else 0x80
            hi = 0x9F if c == 0xED else 0xBF
        elif 0xF0 <= c <= 0xF4:
            more = 3
            lo = 0x90 if c == 0xF0 else 0x80
            hi = 0x8F if c == 0xF4 else 0xBF
        else:
            return -1, escaped, chars, h
        if pos + more >= end:
            return -1, escaped, chars, h
        b = buf[pos + 1]
        if b < lo or b > hi:
            return -1, escaped, chars, h
        h = (h ^ np.uint64(b)) * _FNV_PRIME
        for k in range(2, more + 1):
            b = buf[pos + k]
            if b < 0x80 or b > 0xBF:
                return -1, escaped, chars, h
            h = (h ^ np.uint64(b)) * _FNV_PRIME
        pos += more + 1
    return -1, escaped, chars, h


@njit(cache=True, nogil=True)
def _mul128(a, b):  # type: ignore[no-untyped-def]
    """(high, low) 64 bits of the 128-bit product of two uint64."""
    a_lo = a & _M32
    a_hi = a >> _U32
    b_lo = b & _M32
    b_hi = b >> _U32
    p0 = a_lo * b_lo
    p1 = a_lo * b_hi
    p2 = a_hi * b_lo
    p3 = a_hi * b_hi
    mid = (p0 >> _U32) + (p1 & _M32) + (p2 & _M32)
    lo = (p0 & _M32) | (mid << _U32)
    hi = p3 + (p1 >> _U32) + (p2 >> _U32) + (mid >> _U32)
    return hi, lo


@njit(cache=True, nogil=True)
def _eisel_lemire(m, e10, pow_hi, pow_lo):  # type: ignore[no-untyped-def]
    """(m * 10^e10 correctly rounded, True), or (0.0, False) when undecided, subnormal
    or beyond the double range.  ``m`` > 0, e10 within [POW10_MIN, POW10_MAX]."""
    clz = 0
    while (m & _TOP) == _U0:
        m = m << _U1
        clz += 1
    exp2 = ((217706 * e10) >> 16) + 64 + 1023 - clz
    idx = e10 - POW10_MIN
    xhi, xlo = _mul128(m, pow_hi[idx])
    if (xhi & _M9) == _M9 and xlo + m < m:
        yhi, ylo = _mul128(m, pow_lo[idx])
        mhi = xhi
        mlo = xlo + yhi
        if mlo < xlo:
            mhi = mhi + _U1
        if (mhi & _M9) == _M9 and mlo == _ALL and ylo + m < m:
            return 0.0, False
        xhi = mhi
        xlo = mlo
    msb = xhi >> _U63
    mant = xhi >> (msb + _U9)
    exp2 -= 1 - int(msb)
    if xlo == _U0 and (xhi & _M9) == _U0 and (mant & _U3) == _U1:
        return 0.0, False
    mant = mant + (mant & _U1)
    mant = mant >> _U1
    if (mant >> _U53) > _U0:
        mant = mant >> _U1
        exp2 += 1
    if exp2 <= 0 or exp2 >= 0x7FF:
        return 0.0, False
    return math.ldexp(float(mant), exp2 - 1075), True


@njit(cache=True, nogil=True)
def _number(buf, pos, end, pow_hi, pow_lo, exact):  # type: ignore[no-untyped-def]
    """(pos after the number, kind, value, integer value) of the number at ``pos``.

    kind -1: not a JSON number; 0: a decimal (fraction or exponent) converted exactly;
    1: an integer of at most 18 digits; 2: valid but not converted here."""
    neg = False
    if buf[pos] == 0x2D:
        neg = True
        pos += 1
        if pos >= end:
            return -1, -1, 0.0, 0
    c = buf[pos]
    m = _U0
    digits = 0  # significant digits in m
    e10 = 0
    many = False
    if c == 0x30:
        pos += 1
    elif 0x31 <= c <= 0x39:
        while pos < end:
            c = buf[pos]
            if c < 0x30 or c > 0x39:
                break
            if digits < 19:
                m = m * _U10 + np.uint64(c - 0x30)
                digits += 1
            else:
                many = True
            pos += 1
    else:
        return -1, -1, 0.0, 0
    integer = True
    if pos < end and buf[pos] == 0x2E:
        integer = False
        pos += 1
        start = pos
        while pos < end:
            c = buf[pos]
            if c < 0x30 or c > 0x39:
                break
            if m == _U0 and c == 0x30:
                e10 -= 1  # a leading zero
            elif digits < 19:
                m = m * _U10 + np.uint64(c - 0x30)
                digits += 1
                e10 -= 1
            else:
                many = True
            pos += 1
        if pos == start:
            return -1, -1, 0.0, 0
    if pos < end and (buf[pos] == 0x65 or buf[pos] == 0x45):
        integer = False
        pos += 1
        sign = 1
        if pos < end and (buf[pos] == 0x2B or buf[pos] == 0x2D):
            if buf[pos] == 0x2D:
                sign = -1
            pos += 1
        start = pos
        x = 0
        while pos < end:
            c = buf[pos]
            if c < 0x30 or c > 0x39:
                break
            if x < 100000:
                x = x * 10 + (c - 0x30)
            pos += 1
        if pos == start:
            return -1, -1, 0.0, 0
        e10 += sign * x
    if many:
        return pos, 2, 0.0, 0
    if integer:
        if digits > 18:
            return pos, 2, 0.0, 0
        ival = np.int64(m)
        if neg:
            ival = -ival
        return pos, 1, float(ival), ival
    if m == _U0:
        return pos, 0, -0.0 if neg else 0.0, 0
    if m <= _TWO53 and -22 <= e10 <= 22:
        value = float(m) * exact[e10] if e10 >= 0 else float(m) / exact[-e10]
    else:
        if e10 < POW10_MIN or e10 > POW10_MAX:
            return pos, 2, 0.0, 0
        value, ok = _eisel_lemire(m, e10, pow_hi, pow_lo)
        if not ok:
            return pos, 2, 0.0, 0
    return pos, 0, -value if neg else value, 0


@njit(cache=True, nogil=True)
def _skip_string(buf, pos, end):  # type: ignore[no-untyped-def]
    """pos after the string whose opening quote is at ``pos`` (validated as
    :func:`_string` validates it, without hashing), or -1."""
    pos += 1
    while pos < end:
        c = buf[pos]
        if c == 0x22:
            return pos + 1
        if 0x20 <= c < 0x80 and c != 0x5C:
            pos += 1
            continue
        if c < 0x20:
            return -1
        # an escape or a multi-byte character: _string validates the rest (it starts
        # one byte after ``pos``, which it takes for the opening quote)
        return _string(buf, pos - 1, end)[0]
    return -1


@njit(cache=True, nogil=True)
def _skip_number(buf, pos, end):  # type: ignore[no-untyped-def]
    """pos after the JSON number at ``pos`` (grammar only; at most 100 digits and an
    exponent of at most 4 digits, else -1), or -1."""
    if buf[pos] == 0x2D:
        pos += 1
        if pos >= end:
            return -1
    start = pos
    c = buf[pos]
    if c == 0x30:
        pos += 1
    elif 0x31 <= c <= 0x39:
        pos += 1
        while pos < end and 0x30 <= buf[pos] <= 0x39:
            pos += 1
    else:
        return -1
    if pos < end and buf[pos] == 0x2E:
        pos += 1
        frac = pos
        while pos < end and 0x30 <= buf[pos] <= 0x39:
            pos += 1
        if pos == frac:
            return -1
    if pos - start > 101:
        return -1
    if pos < end and (buf[pos] == 0x65 or buf[pos] == 0x45):
        pos += 1
        if pos < end and (buf[pos] == 0x2B or buf[pos] == 0x2D):
            pos += 1
        digits = pos
        while pos < end and 0x30 <= buf[pos] <= 0x39:
            pos += 1
        if pos == digits or pos - digits > 4:
            return -1
    return pos


@njit(cache=True, nogil=True)
def _skip(buf, pos, end, stack):  # type: ignore[no-untyped-def]
    """pos after the JSON value at ``pos`` (validated), or -1."""
    depth = 0
    while True:
        pos = _ws(buf, pos, end)
        if pos >= end:
            return -1
        c = buf[pos]
        if c == 0x7B or c == 0x5B:  # { [
            if depth >= stack.shape[0]:
                return -1
            stack[depth] = c
            depth += 1
            pos = _ws(buf, pos + 1, end)
            if pos >= end:
                return -1
            if buf[pos] == c + 2:  # } ]: empty
                depth -= 1
                pos += 1
            elif c == 0x7B:
                if buf[pos] != 0x22:
                    return -1
                pos = _skip_string(buf, pos, end)
                if pos < 0:
                    return -1
                pos = _ws(buf, pos, end)
                if pos >= end or buf[pos] != 0x3A:
                    return -1
                pos += 1
                continue
            else:
                continue
        elif c == 0x22:
            pos = _skip_string(buf, pos, end)
        elif c == 0x2D or 0x30 <= c <= 0x39:
            pos = _skip_number(buf, pos, end)
        elif c == 0x74:
            pos = _literal(buf, pos, end, 0x74, 0x72, 0x75, 0x65)
        elif c == 0x66:
            pos = _literal(buf, pos + 1, end, 0x61, 0x6C, 0x73, 0x65)
        elif c == 0x6E:
            pos = _literal(buf, pos, end, 0x6E, 0x75, 0x6C, 0x6C)
        else:
            return -1
        if pos < 0:
            return -1
        # after a value: the enclosing containers continue or close
        while depth > 0:
            pos = _ws(buf, pos, end)
            if pos >= end:
                return -1
            c = buf[pos]
            top = stack[depth - 1]
            if c == 0x2C:  # ,
                pos += 1
                if top == 0x7B:
                    pos = _ws(buf, pos, end)
                    if pos >= end or buf[pos] != 0x22:
                        return -1
                    pos = _skip_string(buf, pos, end)
                    if pos < 0:
                        return -1
                    pos = _ws(buf, pos, end)
                    if pos >= end or buf[pos] != 0x3A:
                        return -1
                    pos += 1
                break
            if c == top + 2:
                depth -= 1
                pos += 1
                continue
            return -1
        if depth == 0:
            return pos
    return -1  # pragma: no cover - unreachable
