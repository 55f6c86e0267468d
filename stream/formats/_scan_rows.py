"""numba kernel of :mod:`stream.formats.scan`, the rows: see :mod:`._scan_kernel`."""

from __future__ import annotations

import numpy as np
from numba import njit

from stream.formats._scan_kernel import (
    _FNV_OFFSET,
    _FNV_PRIME,
    _KEY_MIX,
    MAX_CHARS,
    MAX_CONFIG_DEPTH,
    MAX_SKIP_DEPTH,
    NODE_CAT,
    NODE_NUM,
    NODE_OBJ,
    SEL_FALSE,
    SEL_INT,
    SEL_STR,
    SEL_TRUE,
    _hex,
    _literal,
    _number,
    _skip,
    _string,
    _ws,
)

__all__ = ["scan"]

#: keys remembered per configured object, by their place in it (see ``_row``)
MEMO_KEYS = 64
#: strings remembered per categorical or select column, by their first two bytes
VALUE_WAYS = 64


@njit(cache=True, nogil=True)
def _same(buf, arena, a, b, n):  # type: ignore[no-untyped-def]
    """Whether the n bytes at a and b are equal, in the strings' address space: the
    batch's bytes, then the arena of unescaped strings."""
    m = buf.shape[0]
    if a + n <= m and b + n <= m:
        for k in range(n):
            if buf[a + k] != buf[b + k]:
                return False
        return True
    for k in range(n):
        x = buf[a + k] if a + k < m else arena[a + k - m]
        y = buf[b + k] if b + k < m else arena[b + k - m]
        if x != y:
            return False
    return True


@njit(cache=True, nogil=True)
def _intern(buf, arena, s, e, h, slots, dstart, dend, dhash, counter):  # type: ignore[no-untyped-def]
    """Code of the string of bytes buf[s:e] (hash h) in the batch's dictionary."""
    mask = np.uint64(slots.shape[0] - 1)
    i = (h ^ (h >> np.uint64(32))) & mask  # FNV's high bits: its low ones mix poorly
    n = e - s
    while True:
        k = slots[i]
        if k < 0:
            k = counter[0]
            counter[0] = k + 1
            dstart[k] = s
            dend[k] = e
            dhash[k] = h
            slots[i] = k
            return k
        if dhash[k] == h and dend[k] - dstart[k] == n and _same(buf, arena, dstart[k], s, n):
            return k
        i = (i + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _unescape(buf, s, e, out):  # type: ignore[no-untyped-def]
    """Length of the string content buf[s:e] (valid, no surrogate escapes) written into
    ``out`` unescaped as UTF-8, or -1 when it does not fit."""
    n = 0
    while s < e:
        c = buf[s]
        if n + 3 >= out.shape[0]:
            return -1
        if c != 0x5C:
            out[n] = c
            n += 1
            s += 1
            continue
        c = buf[s + 1]
        s += 2
        if c == 0x75:
            v = 0
            for k in range(4):
                v = v * 16 + _hex(buf[s + k])
            s += 4
            if v < 0x80:
                out[n] = v
                n += 1
            elif v < 0x800:
                out[n] = 0xC0 | (v >> 6)
                out[n + 1] = 0x80 | (v & 0x3F)
                n += 2
            else:
                out[n] = 0xE0 | (v >> 12)
                out[n + 1] = 0x80 | ((v >> 6) & 0x3F)
                out[n + 2] = 0x80 | (v & 0x3F)
                n += 3
            continue
        if c == 0x62:
            c = 0x08
        elif c == 0x66:
            c = 0x0C
        elif c == 0x6E:
            c = 0x0A
        elif c == 0x72:
            c = 0x0D
        elif c == 0x74:
            c = 0x09
        out[n] = c  # " \\ /
        n += 1
    return n


@njit(cache=True, nogil=True)
def _rehash(dhash, count, cap):  # type: ignore[no-untyped-def]
    slots = np.full(cap, -1, dtype=np.int32)
    mask = np.uint64(cap - 1)
    for k in range(count):
        h = dhash[k]
        i = (h ^ (h >> np.uint64(32))) & mask
        while slots[i] >= 0:
            i = (i + np.uint64(1)) & mask
        slots[i] = k
    return slots


@njit(cache=True, nogil=True)
def _child(buf, s, e, h, node, key_bytes, key_off, ktab_node, ktab_hash, ktab_child):  # type: ignore[no-untyped-def]
    """The configured child of ``node`` named by the key buf[s:e] (hash h), or -1."""
    mask = np.uint64(ktab_node.shape[0] - 1)
    x = h ^ (np.uint64(node) * _KEY_MIX)
    i = (x ^ (x >> np.uint64(32))) & mask
    n = e - s
    while True:
        got = ktab_node[i]
        if got < 0:
            return -1
        if got == node and ktab_hash[i] == h:
            child = ktab_child[i]
            ks = key_off[child]
            if key_off[child + 1] - ks == n:
                same = True
                for k in range(n):
                    if key_bytes[ks + k] != buf[s + k]:
                        same = False
                        break
                if same:
                    return child
        i = (i + np.uint64(1)) & mask


@njit(cache=True, nogil=True)
def _row(buf, pos, end, r, tree, stamp, visit, cstack, vstack, sstack, keys, num_out, cat_code,
         sel_kind, sel_val, strings, counter, pow_hi, pow_lo, exact, memo, ostack):  # type: ignore[no-untyped-def]
    """Whether the message buf[pos:end] was decoded (False: the row is flagged)."""
    node_kind, node_slot, key_bytes, key_off, ktab_node, ktab_hash, ktab_child = tree
    slots, dstart, dend, dhash, arena = strings
    memo_start, memo_len, memo_child, value_start, value_len, value_code = memo
    pos = _ws(buf, pos, end)
    if pos >= end or buf[pos] != 0x7B:
        return False
    pos += 1
    depth = 1
    cstack[0] = 0
    ostack[0] = 0
    visit[0] += 1
    vstack[0] = visit[0]
    first = True  # right after '{'
    while True:
        pos = _ws(buf, pos, end)
        if pos >= end:
            return False
        c = buf[pos]
        if not (first and c == 0x7D):
            if c != 0x22:
                return False
            # a key
            ks = pos + 1
            node = cstack[depth - 1]
            ordinal = ostack[depth - 1]
            ostack[depth - 1] = ordinal + 1
            # the same key at the same place as in an earlier row of the batch (events
            # of a topic share their layout): its bytes are compared with that key's,
            # which was read and matched before, instead of hashed and looked up
            at = node * MEMO_KEYS + ordinal
            known = -2
            if ordinal < MEMO_KEYS:
                n = memo_len[at]
                # (compared here, not by _same: its bounds test per call cost 0.13-0.27 us
                # per line in bench_replay's kernel)
                if n > 0 and ks + n < end and buf[ks + n] == 0x22:
                    ms = memo_start[at]
                    known = memo_child[at]
                    for k in range(n):
                        if buf[ms + k] != buf[ks + k]:
                            known = -2
                            break
            if known != -2:
                child = known
                pos = ks + memo_len[at] + 1
            else:
                pos, escaped, _, h = _string(buf, pos, end)
                if pos < 0:
                    return False
                ke = pos - 1
                if escaped:  # matched unescaped
                    n = _unescape(buf, ks, ke, keys)
                    if n < 0:
                        return False
                    h = _FNV_OFFSET
                    for k in range(n):
                        h = (h ^ np.uint64(keys[k])) * _FNV_PRIME
                    child = _child(keys, 0, n, h, node, key_bytes, key_off, ktab_node,
                                   ktab_hash, ktab_child)
                else:
                    child = _child(buf, ks, ke, h, node, key_bytes, key_off, ktab_node,
                                   ktab_hash, ktab_child)
                    if ordinal < MEMO_KEYS and ke > ks:
                        memo_start[at] = ks
                        memo_len[at] = ke - ks
                        memo_child[at] = child
            pos = _ws(buf, pos, end)
            if pos >= end or buf[pos] != 0x3A:
                return False
            pos = _ws(buf, pos + 1, end)
            if pos >= end:
                return False
            c = buf[pos]
            if child < 0:
                pos = _skip(buf, pos, end, sstack)
                if pos < 0:
                    return False
            else:
                if stamp[child] == vstack[depth - 1]:
                    return False  # a configured key given twice
                stamp[child] = vstack[depth - 1]
                kind = node_kind[child]
                slot = node_slot[child]
                if c == 0x6E:  # null: missing (a null parent: all below it missing)
                    pos = _literal(buf, pos, end, 0x6E, 0x75, 0x6C, 0x6C)
                    if pos < 0:
                        return False
                elif kind == NODE_OBJ:
                    if c != 0x7B or depth >= cstack.shape[0]:
                        return False  # a non-object parent: the careful decoder's verdict
                    cstack[depth] = child
                    ostack[depth] = 0
                    visit[0] += 1
                    vstack[depth] = visit[0]
                    depth += 1
                    pos += 1
                    first = True
                    continue
                elif kind == NODE_NUM:
                    if c != 0x2D and (c < 0x30 or c > 0x39):
                        return False
                    pos, nkind, value, _ = _number(buf, pos, end, pow_hi, pow_lo, exact)
                    if nkind != 0 and nkind != 1:
                        return False
                    num_out[slot, r] = value
                elif c == 0x22:  # a string, categorical or select
                    ss = pos + 1
                    # a value this column had before in the batch, found by its first two
                    # bytes and compared whole: its code without hashing and interning
                    # (only strings read without escapes are remembered: equal bytes and
                    # a closing quote make the same valid string)
                    vat = child * VALUE_WAYS
                    if ss + 1 < end:
                        vat += (np.int64(buf[ss]) * 31 + np.int64(buf[ss + 1])) & (VALUE_WAYS - 1)
                    code = -1
                    n = value_len[vat]
                    if n >= 0 and ss + n < end and buf[ss + n] == 0x22:
                        vs = value_start[vat]
                        code = value_code[vat]
                        for k in range(n):
                            if buf[vs + k] != buf[ss + k]:
                                code = -1
                                break
                    if code >= 0:
                        pos = ss + n + 1
                    else:
                        pos, escaped, chars, h = _string(buf, pos, end)
                        if pos < 0 or chars > MAX_CHARS:
                            return False
                        se = pos - 1
                        if escaped:  # unescaped into the arena, after the batch's bytes
                            used = counter[1]
                            n = _unescape(buf, ss, se, arena[used:])
                            if n < 0:
                                return False
                            h = _FNV_OFFSET
                            for k in range(used, used + n):
                                h = (h ^ np.uint64(arena[k])) * _FNV_PRIME
                            counter[1] = used + n
                            ss = buf.shape[0] + used
                            se = ss + n
                        code = _intern(buf, arena, ss, se, h, slots, dstart, dend, dhash,
                                       counter)
                        if not escaped:
                            value_start[vat] = ss
                            value_len[vat] = se - ss
                            value_code[vat] = code
                    if kind == NODE_CAT:
                        cat_code[slot, r] = code
                    else:
                        sel_kind[slot, r] = SEL_STR
                        sel_val[slot, r] = code
                elif kind == NODE_CAT:
                    return False  # a number or boolean as a category: the careful decoder's
                # a select field's other values
                elif c == 0x74:
                    pos = _literal(buf, pos, end, 0x74, 0x72, 0x75, 0x65)
                    sel_kind[slot, r] = SEL_TRUE
                elif c == 0x66:
                    pos = _literal(buf, pos + 1, end, 0x61, 0x6C, 0x73, 0x65)
                    sel_kind[slot, r] = SEL_FALSE
                elif c == 0x2D or 0x30 <= c <= 0x39:
                    pos, nkind, _, ival = _number(buf, pos, end, pow_hi, pow_lo, exact)
                    if nkind == 1:
                        sel_kind[slot, r] = SEL_INT
                        sel_val[slot, r] = ival
                    elif nkind != 0:
                        return False
                else:  # a list or an object: matches no select value
                    pos = _skip(buf, pos, end, sstack)
                if pos < 0:
                    return False
        # after a value (or '{' right before '}'): continue or close
        first = False
        while True:
            pos = _ws(buf, pos, end)
            if pos >= end:
                return False
            c = buf[pos]
            pos += 1
            if c == 0x2C:
                break
            if c != 0x7D:
                return False
            depth -= 1
            if depth == 0:
                return _ws(buf, pos, end) == end  # nothing after the object
    return False  # pragma: no cover - unreachable


@njit(cache=True, nogil=True)
def scan(buf, starts, ends, flag, tree, num_out, cat_code, sel_kind, sel_val, pow_hi, pow_lo,
         exact):  # type: ignore[no-untyped-def]
    """Decode every row not flagged yet; flag the rows it cannot decode.

    Returns (starts, ends) of the distinct strings, by code, in the address space of
    the batch's bytes followed by the arena of unescaped strings; and that arena."""
    n = starts.shape[0]
    node_kind = tree[0]
    stamp = np.zeros(node_kind.shape[0], dtype=np.int64)
    visit = np.zeros(1, dtype=np.int64)
    cstack = np.empty(MAX_CONFIG_DEPTH, dtype=np.int32)
    vstack = np.empty(MAX_CONFIG_DEPTH, dtype=np.int64)
    sstack = np.empty(MAX_SKIP_DEPTH, dtype=np.uint8)
    keys = np.empty(256, dtype=np.uint8)  # an escaped key, unescaped
    ostack = np.empty(MAX_CONFIG_DEPTH, dtype=np.int32)  # keys read so far per level
    memo_start = np.empty(node_kind.shape[0] * MEMO_KEYS, dtype=np.int64)
    memo_len = np.zeros(node_kind.shape[0] * MEMO_KEYS, dtype=np.int32)
    memo_child = np.empty(node_kind.shape[0] * MEMO_KEYS, dtype=np.int32)
    value_start = np.empty(node_kind.shape[0] * VALUE_WAYS, dtype=np.int64)
    value_len = np.full(node_kind.shape[0] * VALUE_WAYS, -1, dtype=np.int32)
    value_code = np.empty(node_kind.shape[0] * VALUE_WAYS, dtype=np.int32)
    memo = (memo_start, memo_len, memo_child, value_start, value_len, value_code)
    per_row = cat_code.shape[0] + sel_kind.shape[0]
    cells = n * per_row + 1
    dstart = np.empty(cells, dtype=np.int64)
    dend = np.empty(cells, dtype=np.int64)
    dhash = np.empty(cells, dtype=np.uint64)
    counter = np.zeros(2, dtype=np.int64)  # distinct strings, bytes of the arena used
    arena = np.empty(buf.shape[0] + 8, dtype=np.uint8)
    cap = 64
    slots = np.full(cap, -1, dtype=np.int32)
    for r in range(n):
        if flag[r]:
            continue
        need = 2 * (counter[0] + per_row)
        if need > cap:
            while cap < need:
                cap *= 2
            slots = _rehash(dhash, counter[0], cap)
        if not _row(buf, starts[r], ends[r], r, tree, stamp, visit, cstack, vstack, sstack, keys,
                    num_out, cat_code, sel_kind, sel_val, (slots, dstart, dend, dhash, arena),
                    counter, pow_hi, pow_lo, exact, memo, ostack):
            flag[r] = True
    k = counter[0]
    return dstart[:k].copy(), dend[:k].copy(), arena[:counter[1]].copy()
