# numba types every integer as int64, mypy sees NumPy scalars mixed with ints: these codes only.
# mypy: disable-error-code="assignment, return-value, arg-type"
"""The compiled loops of :mod:`segmentation.io.sqlite.pages` (numba, ``cache=True``).

Imported only where a SQLite range is read (a task), so that neither the driver nor
``import segmentation`` pays for numba. Indexing is not bounds-checked in compiled code: every
offset taken from the file is checked against the page or payload it must lie in before it is
used, and anything out of place ends the read with :data:`CORRUPT`.
"""

from __future__ import annotations

from typing import Tuple

import numba
import numpy as np

#: Statuses of :func:`read_rows`.
DONE, ROWS_FULL, TEXT_FULL, MISMATCH, CORRUPT = 0, 1, 2, 3, 4

#: Target kinds of the columns read.
KIND_INTEGER, KIND_REAL, KIND_TEXT = 0, 1, 2

_PAGE_INTERIOR_TABLE, _PAGE_LEAF_TABLE = 5, 13


@numba.njit(cache=True, nogil=True)
def _varint(buf: np.ndarray, pos: int) -> Tuple[int, int]:  # pragma: no cover - compiled
    """SQLite's varint at ``pos``: (value, position after it). The caller checks the bounds."""
    value = np.int64(0)
    for i in range(8):
        byte = np.int64(buf[pos + i])
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    value = (value << 8) | np.int64(buf[pos + 8])
    return value, pos + 9


@numba.njit(cache=True, nogil=True)
def _bounded_varint(buf: np.ndarray, pos: int, end: int) -> Tuple[int, int]:  # pragma: no cover
    """:func:`_varint` ending before ``end``, else (0, -1)."""
    value = np.int64(0)
    for i in range(9):
        if pos + i >= end:
            return np.int64(0), -1
        byte = np.int64(buf[pos + i])
        if i == 8:
            return (value << 8) | byte, pos + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, pos + i + 1
    return np.int64(0), -1


@numba.njit(cache=True, nogil=True)
def _be_int(buf: np.ndarray, pos: int, size: int) -> int:  # pragma: no cover - compiled
    """A big-endian two's-complement integer of ``size`` bytes at ``pos``."""
    value = np.int64(np.int8(buf[pos]))  # the sign
    for i in range(1, size):
        value = (value << 8) | np.int64(buf[pos + i])
    return value


@numba.njit(cache=True, nogil=True)
def _page_offset(page: int, page_size: int) -> int:  # pragma: no cover - compiled
    """Where page ``page``'s b-tree header starts (page 1 holds the 100-byte file header)."""
    return (page - 1) * page_size + (100 if page == 1 else 0)


@numba.njit(cache=True, nogil=True)
def leaf_pages(
    buf: np.ndarray, page_size: int, usable: int, root: int, lo: int, hi: int, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Write the leaf pages holding rowids ``lo..hi`` to ``out``, in rowid order.

    Returns their count, -1 when ``out`` is too small, -2 when a page is not as expected.
    """
    pages = buf.shape[0] // page_size
    # Depth-first: at most one level's children per level on the stack (a 64 KB interior page
    # holds up to ~13,000), and b-trees are not deeper than 32 levels.
    stack = np.empty(32 * (usable // 5 + 2), np.int64)
    stack[0] = root
    depth = 1
    count = 0
    visited = 0
    while depth > 0:
        depth -= 1
        page = stack[depth]
        visited += 1
        if page < 1 or page > pages or visited > pages:
            return -2
        start = (page - 1) * page_size
        head = _page_offset(page, page_size)
        kind = buf[head]
        if kind == _PAGE_LEAF_TABLE:
            if count >= out.shape[0]:
                return -1
            out[count] = page
            count += 1
            continue
        if kind != _PAGE_INTERIOR_TABLE:
            return -2
        cells = (np.int64(buf[head + 3]) << 8) | np.int64(buf[head + 4])
        right = _be_int(buf, head + 8, 4) & 0xFFFFFFFF
        pointers = head + 12
        if pointers + 2 * cells > start + usable:
            return -2
        # Children in rowid order; pushed in reverse so that the first is popped first.
        # Child i holds rowids in (key[i-1], key[i]]; the right-most one those above the last key.
        first = 0
        last = -1  # the cells whose children intersect lo..hi
        take_right = False
        previous = np.int64(-(2**63))
        for i in range(cells):
            offset = (np.int64(buf[pointers + 2 * i]) << 8) | np.int64(buf[pointers + 2 * i + 1])
            if offset < 4 or offset + 5 > usable:
                return -2
            key, _ = _varint(buf, start + offset + 4)
            if key < lo:
                first = i + 1
            if previous < hi:
                last = i
            previous = key
        take_right = cells == 0 or previous < hi
        if depth + (last - first + 1) + 1 > stack.shape[0]:
            return -2
        if take_right:
            stack[depth] = right
            depth += 1
        for i in range(last, first - 1, -1):
            offset = (np.int64(buf[pointers + 2 * i]) << 8) | np.int64(buf[pointers + 2 * i + 1])
            stack[depth] = _be_int(buf, start + offset, 4) & 0xFFFFFFFF
            depth += 1
    return count


@numba.njit(cache=True, nogil=True)
def read_rows(
    buf: np.ndarray,
    page_size: int,
    usable: int,
    leaves: np.ndarray,
    lo: int,
    hi: int,
    positions: np.ndarray,
    kinds: np.ndarray,
    slots: np.ndarray,
    int_lo: np.ndarray,
    int_hi: np.ndarray,
    default_null: np.ndarray,
    rowid_position: int,
    ints: np.ndarray,
    reals: np.ndarray,
    valid: np.ndarray,
    offsets: np.ndarray,
    text: np.ndarray,
    state: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """Decode rows of ``leaves`` from ``state`` on into the output arrays.

    ``state`` is ``[leaf index, cell index, rows, status, last rowid, field, rowid]``: the
    position to start from on the way in; on the way out the position to resume from, the rows
    written, the status (:data:`DONE` at the end of the range, :data:`ROWS_FULL` or
    :data:`TEXT_FULL` when an output is full, :data:`MISMATCH` before a value this reader does
    not convert, :data:`CORRUPT`) and the rowid of the last row written; after a
    :data:`MISMATCH` the field and the rowid of the value. Column ``f`` goes to ``ints[slots[f]]``,
    ``reals[slots[f]]`` or ``offsets/text[slots[f]]`` by its kind, its validity to ``valid[f]``.
    """
    pages = buf.shape[0] // page_size
    capacity = valid.shape[1]
    fields = positions.shape[0]
    ncols = 1
    for f in range(fields):
        if positions[f] + 1 > ncols:
            ncols = positions[f] + 1
    types = np.empty(ncols, np.int64)
    places = np.empty(ncols, np.int64)
    bits = np.empty(1, np.uint64)
    real = bits.view(np.float64)
    text_used = np.zeros(text.shape[0], np.int64)
    overflow_limit = ((usable - 12) * 32) // 255 - 23
    max_local = usable - 35
    leaf = state[0]
    cell = state[1]
    rows = 0
    last_rowid = state[4]
    status = DONE
    scratch = np.empty(0, np.uint8)
    while leaf < leaves.shape[0]:
        page = leaves[leaf]
        start = (page - 1) * page_size
        head = _page_offset(page, page_size)
        if page < 1 or page > pages or buf[head] != _PAGE_LEAF_TABLE:
            status = CORRUPT
            break
        cells = (np.int64(buf[head + 3]) << 8) | np.int64(buf[head + 4])
        pointers = head + 8
        if pointers + 2 * cells > start + usable:
            status = CORRUPT
            break
        stop = False
        while cell < cells:
            offset = (np.int64(buf[pointers + 2 * cell]) << 8) | np.int64(
                buf[pointers + 2 * cell + 1]
            )
            if offset < 8 or offset + 2 > usable:
                status = CORRUPT
                stop = True
                break
            pos = start + offset
            end = start + usable
            if pos + 18 <= end:  # both varints surely within the page
                payload, pos = _varint(buf, pos)
                rowid, pos = _varint(buf, pos)
            else:
                payload, pos = _bounded_varint(buf, pos, end)
                if pos < 0:
                    status = CORRUPT
                    stop = True
                    break
                rowid, pos = _bounded_varint(buf, pos, end)
                if pos < 0:
                    status = CORRUPT
                    stop = True
                    break
            if rowid < lo or rowid > hi:
                cell += 1
                continue
            if rows >= capacity:
                status = ROWS_FULL
                stop = True
                break
            if payload < 1 or payload > 2**31:
                status = CORRUPT
                stop = True
                break
            # The record: in the page, or its first part there and the rest in overflow pages.
            if payload <= max_local:
                local = payload
            else:
                local = overflow_limit + (payload - overflow_limit) % (usable - 4)
                if local > max_local:
                    local = overflow_limit
            if pos - start + local + (4 if local < payload else 0) > usable:
                status = CORRUPT
                stop = True
                break
            if local == payload:
                src = buf[pos : pos + payload]
            else:
                if scratch.shape[0] < payload:
                    scratch = np.empty(payload, np.uint8)
                scratch[:local] = buf[pos : pos + local]
                got = local
                nxt = _be_int(buf, pos + local, 4) & 0xFFFFFFFF
                hops = 0
                while got < payload:
                    hops += 1
                    if nxt < 1 or nxt > pages or hops > pages:
                        break
                    o = (nxt - 1) * page_size
                    take = min(payload - got, usable - 4)
                    scratch[got : got + take] = buf[o + 4 : o + 4 + take]
                    got += take
                    nxt = _be_int(buf, o, 4) & 0xFFFFFFFF
                if got < payload:
                    status = CORRUPT
                    stop = True
                    break
                src = scratch[:payload]
            # The record header: serial types of the first ncols columns.
            if src[0] < 0x80:
                header = np.int64(src[0])
                p = 1
            elif payload >= 9:
                header, p = _varint(src, 0)
            else:
                status = CORRUPT
                stop = True
                break
            if header < 1 or header > payload:
                status = CORRUPT
                stop = True
                break
            body = header
            present = 0
            bad = False
            while p < header and present < ncols:
                if src[p] < 0x80:
                    serial = np.int64(src[p])
                    p += 1
                else:
                    if p + 9 > payload:
                        bad = True
                        break
                    serial, p = _varint(src, p)
                if serial < 0 or serial == 10 or serial == 11:
                    bad = True
                    break
                if serial <= 4:
                    size = serial
                elif serial == 5:
                    size = 6
                elif serial <= 7:
                    size = 8
                elif serial <= 9:
                    size = 0
                else:
                    size = (serial - 12) // 2
                types[present] = serial
                places[present] = body
                body += size
                present += 1
            if bad or p > header or body > payload:
                status = CORRUPT
                stop = True
                break
            # Every value must fit its target before any is written.
            mismatch = False
            for f in range(fields):
                col = positions[f]
                kind = kinds[f]
                if col >= present:
                    if not default_null[f]:
                        mismatch = True
                        break
                    continue
                serial = types[col]
                if serial == 0:
                    if col == rowid_position and (
                        kind == KIND_TEXT or rowid < int_lo[f] or rowid > int_hi[f]
                    ):
                        mismatch = True
                        break
                    continue
                if kind == KIND_INTEGER:
                    if serial == 7 or serial >= 12:
                        mismatch = True
                        break
                    if int_lo[f] > -(2**63) or int_hi[f] < 2**63 - 1:
                        if serial >= 8:
                            value = serial - 8
                        else:
                            value = _be_int(src, places[col], 6 if serial == 5 else (
                                8 if serial == 6 else serial))
                        if value < int_lo[f] or value > int_hi[f]:
                            mismatch = True
                            break
                elif kind == KIND_REAL:
                    if serial >= 12:
                        mismatch = True
                        break
                else:
                    if serial < 13 or serial % 2 == 0:
                        mismatch = True
                        break
                    size = (serial - 13) // 2
                    if text_used[slots[f]] + size > text.shape[1]:
                        status = TEXT_FULL
                        stop = True
                        break
            if stop:
                break
            if mismatch:
                status = MISMATCH
                state[5] = f
                state[6] = rowid
                stop = True
                break
            for f in range(fields):
                col = positions[f]
                kind = kinds[f]
                slot = slots[f]
                serial = types[col] if col < present else 0
                if kind == KIND_TEXT:
                    used = text_used[slot]
                    if serial == 0:
                        valid[f, rows] = 0
                    else:
                        size = (serial - 13) // 2
                        at = places[col]
                        text[slot, used : used + size] = src[at : at + size]
                        used += size
                        text_used[slot] = used
                        valid[f, rows] = 1
                    offsets[slot, rows + 1] = used
                    continue
                if serial == 0:
                    if col == rowid_position:
                        value = rowid
                    else:
                        valid[f, rows] = 0
                        if kind == KIND_INTEGER:
                            ints[slot, rows] = 0
                        else:
                            reals[slot, rows] = 0.0
                        continue
                elif serial >= 8:
                    value = serial - 8
                elif serial == 7:
                    bits[0] = np.uint64(_be_int(src, places[col], 8))
                    valid[f, rows] = 1
                    if kind == KIND_REAL:
                        reals[slot, rows] = real[0]
                    continue
                else:
                    value = _be_int(src, places[col], 6 if serial == 5 else (
                        8 if serial == 6 else serial))
                valid[f, rows] = 1
                if kind == KIND_INTEGER:
                    ints[slot, rows] = value
                else:
                    reals[slot, rows] = np.float64(value)
            rows += 1
            last_rowid = rowid
            cell += 1
        if stop:
            break
        leaf += 1
        cell = 0
    state[0] = leaf
    state[1] = cell
    state[2] = rows
    state[3] = status
    state[4] = last_rowid
