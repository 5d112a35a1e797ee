"""Reading a SQLite table's b-tree straight from the database file, compiled with numba.

SQLite's own library steps through a table one row at a time, building each value through its
virtual machine and API: ADBC's reader fills Arrow at about 2.2 M rows/s per core on
``trainSearchStream``, and the ``sqlite3`` shell exports it as CSV at 1.7-1.9 M rows/s. The
file format itself is simple and stable (https://www.sqlite.org/fileformat2.html): a table is a
b-tree of fixed-size pages whose leaves hold each row as a record (a header of varint serial
types, then the values, big-endian). This module walks the b-tree of one rowid range and decodes the
records of the requested columns into NumPy arrays in a numba-compiled loop, from the file
mapped into memory; :func:`page_batches` turns them into Arrow batches without copying.

It reads only what it understands exactly, and hands everything else back to the SQL reader of
:mod:`segmentation.io.sqlite.reader`:

- the file: a rollback-journal database (not WAL, whose latest commits may live in the
  ``-wal`` file) in UTF-8, checked by :func:`page_format`; otherwise it is not used at all;
- the values: those whose storage class is the target's (INTEGER for integer targets, within
  a narrow type's range; INTEGER or REAL for double targets; TEXT for text targets) and NULLs;
  a column a record lacks (added by ``ALTER TABLE ... ADD COLUMN``) when its default is NULL;
  the rowid for an ``INTEGER PRIMARY KEY`` column. Anything else (a REAL in an INTEGER column,
  a BLOB, a number in a TEXT target) stops the read *before* that row, and the caller reads the
  rest of the range with the converting query, whose rules are the definition;
- the pages: every page number, cell offset, payload length and overflow chain is checked
  against the file before it is followed; a page that does not look right stops the read the
  same way (SQLite then reports the corruption itself, as ``database disk image is malformed``).

While a range is read, the task holds a read transaction on the database through SQLite
(``BEGIN`` and a first ``SELECT``: a shared lock), so no writer can change the file under it,
and takes the table's root page from the catalogue inside that transaction. The file is mapped
before the transaction starts and unmapped after it ends: closing any descriptor of the file
would drop the process's POSIX locks, SQLite's included.

The numba functions (:mod:`segmentation.io.sqlite.kernels`) are compiled once per machine and
user, a few seconds, and cached (:func:`load_kernels`: ``~/.cache/segmentation/numba``); loading
them costs a Python worker about 0.3 s. Only the tasks that read SQLite import numba, never the
driver or ``import segmentation``.
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import sqlite3
import tempfile
from contextlib import closing, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import Generator, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

#: The 16 bytes every SQLite 3 database file starts with.
MAGIC = b"SQLite format 3\x00"

#: How a read ended (:class:`PageRead`), as :mod:`segmentation.io.sqlite.kernels` says it.
NOT_STARTED, DONE, MISMATCH, CORRUPT = -1, 0, 3, 4

#: Target kinds of the columns read (as :mod:`segmentation.io.sqlite.kernels` numbers them).
KIND_INTEGER, KIND_REAL, KIND_TEXT = 0, 1, 2


@dataclass(frozen=True)
class PageFormat:
    """What the reader needs of a database file's header.

    Attributes
    ----------
    page_size : int
        Bytes per page.
    usable_size : int
        Bytes of each page the b-tree may use (the page size less the reserved bytes).
    """

    page_size: int
    usable_size: int


@dataclass(frozen=True)
class TableColumns:
    """Where the columns to read sit in a table's records.

    Attributes
    ----------
    positions : tuple of int
        Each output column's position in the records (declaration order).
    kinds : tuple of int
        Each output column's target kind: :data:`KIND_INTEGER`, :data:`KIND_REAL` or
        :data:`KIND_TEXT`.
    int_bounds : tuple of (int, int)
        Each column's inclusive range of integers (the narrow types'; int64's for the others).
    default_null : tuple of bool
        Whether each column's default is NULL (a record without the column then holds NULL).
    rowid_position : int
        The position of the table's ``INTEGER PRIMARY KEY`` (the rowid's alias), or -1.
    """

    positions: Tuple[int, ...]
    kinds: Tuple[int, ...]
    int_bounds: Tuple[Tuple[int, int], ...]
    default_null: Tuple[bool, ...]
    rowid_position: int


def page_format(path: str) -> Optional[PageFormat]:
    """The page layout of a database file, or ``None`` when this reader must not read it.

    ``None`` for a file that is not a SQLite 3 database, is in WAL mode (file format versions
    2), is not UTF-8, or has an invalid page size.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError:
        return None
    return _header_format(header)


def _header_format(header: bytes) -> Optional[PageFormat]:
    """:func:`page_format` of the file's first 100 bytes."""
    if len(header) < 100 or header[:16] != MAGIC:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    if page_size == 1:
        page_size = 65536
    if page_size < 512 or page_size & (page_size - 1):
        return None
    if header[18] != 1 or header[19] != 1:  # 2: WAL
        return None
    if int.from_bytes(header[56:60], "big") not in (0, 1):  # 1: UTF-8 (0: not yet set)
        return None
    usable = page_size - header[20]
    if usable < 480:
        return None
    return PageFormat(page_size=page_size, usable_size=usable)


def table_columns(
    con: sqlite3.Connection,
    table: str,
    columns: Sequence[str],
    kinds: Sequence[int],
    int_bounds: Sequence[Tuple[int, int]],
) -> Optional[TableColumns]:
    """Locate ``columns`` of ``table`` in its records, or ``None`` if this reader must not.

    ``None`` when the table has generated columns (virtual ones are not stored, so positions
    would shift) or its catalogue cannot be read that way.
    """
    try:
        rows = con.execute(
            "SELECT name, type, dflt_value, pk, hidden FROM pragma_table_xinfo(?) ORDER BY cid",
            (table,),
        ).fetchall()
        auto_pk = con.execute(
            "SELECT count(*) FROM pragma_index_list(?) WHERE origin = 'pk'", (table,)
        ).fetchone()[0]
    except sqlite3.Error:
        return None
    if not rows or any(int(row[4]) != 0 for row in rows):
        return None
    position = {str(row[0]).lower(): i for i, row in enumerate(rows)}
    pks = [i for i, row in enumerate(rows) if int(row[3]) > 0]
    rowid_position = -1
    # The rowid's alias: a single-column INTEGER PRIMARY KEY without an index of its own (the
    # "INTEGER PRIMARY KEY DESC" quirk makes an ordinary column, with an automatic index).
    if len(pks) == 1 and str(rows[pks[0]][1]).upper() == "INTEGER" and auto_pk == 0:
        rowid_position = pks[0]
    places = [position[c.lower()] for c in columns]
    return TableColumns(
        positions=tuple(places),
        kinds=tuple(kinds),
        int_bounds=tuple(int_bounds),
        default_null=tuple(rows[p][2] is None for p in places),
        rowid_position=rowid_position,
    )


# --- Python side ----------------------------------------------------------------------------


@functools.cache
def load_kernels() -> Union[ModuleType, str]:
    """The compiled loops (:mod:`segmentation.io.sqlite.kernels`), or why they cannot be had.

    numba compiles them once (a few seconds) and caches the machine code in a folder it must
    be able to write. Its own choices (beside the source, or ``~/.cache/numba`` for a package
    in a zip, as ``--py-files`` ships it) fail where neither is writable, e.g. a read-only
    ``site-packages`` run by a user without a writable home. Unless ``NUMBA_CACHE_DIR`` says
    otherwise, the cache is therefore ``$XDG_CACHE_HOME/segmentation/numba``
    (``~/.cache/...``) when writable, else ``<temp dir>/segmentation-cache-<uid>/numba``. The
    loops are loaded (or compiled) here, once per process; any failure leaves every read to
    SQL (the reason is returned, and logged once as a warning).
    """
    try:
        import numba.core.config

        base = _writable_cache_base()
        if not os.environ.get("NUMBA_CACHE_DIR"):
            numba.core.config.CACHE_DIR = os.path.join(base, "numba")  # type: ignore[attr-defined]
        # A package in a zip is cached where appdirs puts numba's user cache.
        saved = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = base
        try:
            from segmentation.io.sqlite import kernels
        finally:
            if saved is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = saved
        _warm(kernels)
        return kernels
    except Exception as err:  # ImportError, numba's errors, OSError of the cache
        reason = f"numba is not usable here ({type(err).__name__}: {err})"
        log.warning("SQLite pages are not decoded: %s; SQL reads everything", reason)
        return reason


def _writable_cache_base() -> str:
    """``$XDG_CACHE_HOME/segmentation`` if it can be written, else one in the temp dir."""
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (
        os.path.join(home, "segmentation"),
        os.path.join(tempfile.gettempdir(), f"segmentation-cache-{os.getuid()}"),
    ):
        try:
            os.makedirs(os.path.join(folder, "numba"), exist_ok=True)
        except OSError:
            continue
        if os.access(os.path.join(folder, "numba"), os.W_OK | os.X_OK):
            return folder
    return tempfile.gettempdir()


def _warm(kernels: ModuleType) -> None:
    """Load or compile the loops for the argument types :func:`_decode` passes (no data read)."""
    empty = np.zeros(1024, np.uint8)  # two 512-byte pages of zeros: no b-tree page at all
    assert kernels.leaf_pages(empty, 512, 512, 2, 1, 1, np.zeros(1, np.int64)) == -2
    one = np.zeros(1, np.int64)
    kernels.read_rows(
        empty, 512, 512, np.zeros(0, np.int64), 1, 1, one, one, one, one, one,
        np.zeros(1, np.bool_), -1, np.zeros((1, 1), np.int64), np.zeros((0, 1), np.float64),
        np.zeros((1, 1), np.uint8), np.zeros((0, 2), np.int32), np.zeros((0, 1), np.uint8),
        np.zeros(7, np.int64),
    )


@dataclass(frozen=True)
class PageRead:
    """How a range read by :func:`page_batches` ended.

    Attributes
    ----------
    status : int
        :data:`DONE` (every row of the range passed on), :data:`MISMATCH` or :data:`CORRUPT`
        (the rows after ``last_rowid`` are left to the SQL reader), or -1 when the reader could
        not start (nothing passed on).
    last_rowid : int or None
        The rowid of the last row passed on, ``None`` if none was.
    reason : str
        Why the SQL reader must take over, for the log ("" when done).
    """

    status: int
    last_rowid: Optional[int]
    reason: str = ""


def page_batches(
    path: str,
    table: str,
    columns: TableColumns,
    names: Sequence[str],
    lo: int,
    hi: int,
    batch_rows: int,
) -> Generator[pa.RecordBatch, None, PageRead]:
    """Yield the rows of rowid range ``lo..hi`` of ``table`` as Arrow batches, in rowid order.

    Returns (as the generator's value) how the read ended: where it stopped, and why, when the
    SQL reader must read the rest. The batches' columns are int64 (integer kinds), float64
    (real kinds) or string; nothing is passed on of a row at which the read stopped.
    """
    kernels = load_kernels()
    if isinstance(kernels, str):
        return PageRead(NOT_STARTED, None, kernels)
    layout = page_format(path)
    if layout is None:
        return PageRead(NOT_STARTED, None, "the file is not a rollback-journal UTF-8 database")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < layout.page_size:
            return PageRead(NOT_STARTED, None, "the file is shorter than a page")
        # Private and writable (never written): one array type for the file and the scratch
        # space of records spilling into overflow pages.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    # From here on no descriptor of the file may be closed until SQLite's transaction ends.
    try:
        with closing(
            sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, isolation_level=None)
        ) as con:
            try:
                con.execute("BEGIN")
                found = con.execute(
                    "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (table,),
                ).fetchone()
            except (sqlite3.Error, ValueError) as err:  # ValueError: undecodable catalogue
                return PageRead(NOT_STARTED, None, f"SQLite: {err}")
            # Under the read transaction: the file cannot change until it ends.
            if found is None or not found[0]:
                return PageRead(NOT_STARTED, None, "the table has no root page")
            if os.stat(path).st_size != size or _header_format(mapped[:100]) != layout:
                return PageRead(NOT_STARTED, None, "the file changed")
            buf = np.frombuffer(mapped, dtype=np.uint8)
            try:
                result = yield from _decode(
                    kernels, buf, layout, int(found[0]), columns, names, lo, hi, batch_rows
                )
            finally:
                del buf
            return result
    finally:
        with suppress(BufferError):  # an exception's traceback may still hold the array
            mapped.close()


def _decode(
    kernels: ModuleType,
    buf: np.ndarray,
    layout: PageFormat,
    root: int,
    columns: TableColumns,
    names: Sequence[str],
    lo: int,
    hi: int,
    batch_rows: int,
) -> Generator[pa.RecordBatch, None, PageRead]:
    """The batches of :func:`page_batches` from the mapped file ``buf``."""
    capacity = max(16, min((hi - lo + 1) // 32 + 16, buf.shape[0] // layout.page_size + 1))
    while True:
        leaves = np.empty(capacity, np.int64)
        count = kernels.leaf_pages(buf, layout.page_size, layout.usable_size, root, lo, hi, leaves)
        if count == -1:
            capacity *= 4
            continue
        break
    if count < 0:
        return PageRead(CORRUPT, None, "a b-tree page is not as expected")
    leaves = leaves[:count]
    kinds = np.array(columns.kinds, np.int64)
    fields = len(kinds)
    slots = np.zeros(fields, np.int64)
    counters = [0, 0, 0]
    for f, kind in enumerate(columns.kinds):
        slots[f] = counters[kind]
        counters[kind] += 1
    positions = np.array(columns.positions, np.int64)
    int_lo = np.array([b[0] for b in columns.int_bounds], np.int64)
    int_hi = np.array([b[1] for b in columns.int_bounds], np.int64)
    default_null = np.array(columns.default_null, np.bool_)
    rows_cap = max(1, batch_rows)
    text_cap = 1 << 20
    state = np.zeros(7, np.int64)
    last: Optional[int] = None
    while True:
        ints = np.empty((counters[KIND_INTEGER], rows_cap), np.int64)
        reals = np.empty((counters[KIND_REAL], rows_cap), np.float64)
        valid = np.empty((fields, rows_cap), np.uint8)
        offsets = np.zeros((counters[KIND_TEXT], rows_cap + 1), np.int32)
        text = np.empty((counters[KIND_TEXT], text_cap), np.uint8)
        kernels.read_rows(
            buf, layout.page_size, layout.usable_size, leaves, lo, hi, positions, kinds, slots,
            int_lo, int_hi, default_null, columns.rowid_position, ints, reals, valid, offsets,
            text, state,
        )
        rows, status = int(state[2]), int(state[3])
        if rows:
            last = int(state[4])
            yield _batch(rows, columns.kinds, slots, ints, reals, valid, offsets, text, names)
        if status == DONE:
            return PageRead(DONE, last)
        if status == MISMATCH:
            return PageRead(
                MISMATCH, last,
                f"column {names[int(state[5])]!r} of rowid {int(state[6])} is not stored as its "
                "target type (or out of its range)",
            )
        if status == CORRUPT:
            return PageRead(CORRUPT, last, "a b-tree page is not as expected")
        if status == kernels.TEXT_FULL and rows < rows_cap // 2:
            text_cap *= 2  # long texts: fewer, shorter batches otherwise
            if text_cap >= 2**31:
                return PageRead(MISMATCH, last, "a text column beyond Arrow's 2 GiB per batch")


def _batch(
    rows: int,
    kinds: Sequence[int],
    slots: np.ndarray,
    ints: np.ndarray,
    reals: np.ndarray,
    valid: np.ndarray,
    offsets: np.ndarray,
    text: np.ndarray,
    names: Sequence[str],
) -> pa.RecordBatch:
    """One Arrow batch of the first ``rows`` rows of the output arrays (no copies but masks)."""
    arrays: List[pa.Array] = []
    for f, kind in enumerate(kinds):
        slot = int(slots[f])
        present = valid[f, :rows]
        nulls = int(rows - np.count_nonzero(present))
        mask = None
        if nulls:
            mask = pa.py_buffer(np.packbits(present, bitorder="little"))
        if kind == KIND_TEXT:
            ends = offsets[slot, : rows + 1]
            used = int(ends[rows])
            array = pa.Array.from_buffers(
                pa.string(), rows,
                [mask, pa.py_buffer(ends), pa.py_buffer(text[slot, :used])], null_count=nulls,
            )
        elif kind == KIND_INTEGER:
            array = pa.Array.from_buffers(
                pa.int64(), rows, [mask, pa.py_buffer(ints[slot, :rows])], null_count=nulls
            )
        else:
            array = pa.Array.from_buffers(
                pa.float64(), rows, [mask, pa.py_buffer(reals[slot, :rows])], null_count=nulls
            )
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=list(names))
