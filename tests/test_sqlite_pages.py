"""SQLite pages decoded from the file (segmentation.io.sqlite.pages) against SQLite's own reads.

The reference is always the converting query through SQLite (``_converting_only``): whatever
the page reader passes on must equal it, and whatever it does not understand must be left to
it, row for row.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    ByteType,
    DataType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
)
from test_sqlite import arrow_rows, converting_only

from segmentation.io.sqlite import SqliteRead, plan_sqlite_read
from segmentation.io.sqlite.pages import (
    CORRUPT,
    DONE,
    MISMATCH,
    NOT_STARTED,
    PageRead,
    load_kernels,
    page_batches,
    page_format,
)

REPO = Path(__file__).resolve().parents[1]

TARGETS: Tuple[DataType, ...] = (
    LongType(),
    IntegerType(),
    ShortType(),
    ByteType(),
    DoubleType(),
    FloatType(),
    StringType(),
)


def _pages_only(read: SqliteRead, lo: int, hi: int) -> Tuple[List[Tuple[Any, ...]], PageRead]:
    """What the page reader alone passes on for ``lo..hi``, and how it ended."""
    assert read.columns is not None
    names = [f.name for f in read.schema.fields]
    reader = page_batches(read.local, read.table, read.columns, names, lo, hi, read.batch_rows)
    rows: List[Tuple[Any, ...]] = []
    while True:
        try:
            batch = next(reader)
        except StopIteration as end:
            return rows, end.value
        rows += [tuple(r.values()) for r in batch.to_pylist()]


def _make(
    path: Path,
    ddl: str,
    rows: Sequence[Sequence[Any]],
    page_size: int = 4096,
    delete_every: int = 0,
    wal: bool = False,
) -> str:
    if path.exists():
        path.unlink()
    con = sqlite3.connect(str(path))
    con.execute(f"PRAGMA page_size = {page_size}")
    if wal:
        con.execute("PRAGMA journal_mode = WAL")
    con.execute(ddl)
    if rows:
        marks = ", ".join("?" * len(rows[0]))
        con.executemany(f"INSERT INTO t VALUES ({marks})", rows)
    if delete_every:
        con.execute(f"DELETE FROM t WHERE rowid % {delete_every} = 1")
    con.commit()
    con.close()
    return str(path)


# --- every storage class, every target type ------------------------------------------------

_values = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 127, 128, -129, 2**15, 2**31, -(2**31) - 1, 2**47, 2**53 + 1]),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 3.0, 1e30, 2.5]),
    st.text(max_size=12),
    st.sampled_from(["12", " 12 ", "1e3", "abc", "", "кроссовки", "x" * 3000]),
    st.binary(max_size=8),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    declared=st.lists(st.sampled_from(["INTEGER", "REAL", "TEXT", "", "NUMERIC"]), min_size=3,
                      max_size=3),
    targets=st.lists(st.sampled_from(TARGETS), min_size=3, max_size=3),
    rows=st.lists(st.tuples(_values, _values, _values), max_size=40),
    page_size=st.sampled_from([512, 1024, 65536]),
    partitions=st.integers(min_value=1, max_value=4),
    batch_rows=st.sampled_from([1, 3, 65_536]),
)
def test_any_table_reads_as_sqlite_converts_it(
    spark: SparkSession,
    tmp_path: Path,
    declared: List[str],
    targets: List[DataType],
    rows: List[Tuple[Any, Any, Any]],
    page_size: int,
    partitions: int,
    batch_rows: int,
) -> None:
    ddl = "CREATE TABLE t (" + ", ".join(f"c{i} {d}" for i, d in enumerate(declared)) + ")"
    path = _make(tmp_path / "any.sqlite", ddl, rows, page_size, delete_every=5)
    schema = StructType([StructField(f"c{i}", t) for i, t in enumerate(targets)])
    read = plan_sqlite_read(spark, path, "t", schema, partitions, batch_rows=batch_rows)
    assert read.columns is not None
    assert arrow_rows(read) == arrow_rows(converting_only(read))


# --- what the page reader does alone ---------------------------------------------------------

STREAM = StructType(
    [
        StructField("SearchID", LongType()),
        StructField("Position", IntegerType()),
        StructField("HistCTR", DoubleType()),
        StructField("Query", StringType()),
    ]
)


def _stream_rows(count: int, seed: int = 7) -> List[Tuple[Any, ...]]:
    r = random.Random(seed)
    return [
        (
            r.randint(-(2**62), 2**62),
            r.choice([None, r.randint(1, 7)]),
            r.choice([None, r.random(), -r.random() * 1e9, 0]),
            r.choice([None, "", "iphone", "кроссовки nike", "q" * r.randint(100, 2500)]),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_deep_trees_and_overflow_pages_need_no_sql(
    spark: SparkSession, tmp_path: Path, page_size: int
) -> None:
    """20,000 rows: at 512 bytes a page a b-tree four levels deep, long texts in overflow chains."""
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "deep.sqlite", ddl, _stream_rows(20_000), page_size, delete_every=9)
    read = plan_sqlite_read(spark, path, "t", STREAM, 7, batch_rows=1000)
    expected = arrow_rows(converting_only(read))
    assert len(expected) == 20_000 - 2223
    got: List[Tuple[Any, ...]] = []
    for lo, hi in read.ranges:
        rows, outcome = _pages_only(read, lo, hi)
        assert outcome.status == DONE
        got += rows
    assert got == expected
    # Ranges beyond the table, inside one leaf, and of a single deleted rowid.
    for lo, hi in [(30_000, 40_000), (101, 103), (10, 10), (19_999, 25_000)]:
        rows, outcome = _pages_only(read, lo, hi)
        assert outcome.status == DONE
        reference = converting_only(dataclasses.replace(read, ranges=((lo, hi),)))
        assert rows == arrow_rows(reference)


def test_a_value_of_another_class_stops_the_pages_before_its_row(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [(i, 2, 0.5, "q") for i in range(1, 11)]
    rows[6] = (7, "7th", 0.5, "q")  # rowid 7: TEXT for an IntegerType target
    ddl = "CREATE TABLE t (SearchID INTEGER, Position, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "late.sqlite", ddl, rows)
    read = plan_sqlite_read(spark, path, "t", STREAM, 1, batch_rows=4)
    got, outcome = _pages_only(read, 1, 10)
    assert outcome == PageRead(
        MISMATCH, 6,
        "column 'Position' of rowid 7 is not stored as its target type (or out of its range)",
    )
    assert [r[0] for r in got] == [1, 2, 3, 4, 5, 6]
    with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
        assert arrow_rows(read) == arrow_rows(converting_only(read))
    [message] = [r.getMessage() for r in caplog.records if "query" in r.getMessage()]
    assert message.endswith("reading rowid 7..10 with the converting query")


def test_rowid_alias_and_added_columns(spark: SparkSession, tmp_path: Path) -> None:
    path = tmp_path / "alias.sqlite"
    con = sqlite3.connect(str(path))
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, Query TEXT)")
    con.execute("CREATE TABLE d (id INTEGER PRIMARY KEY DESC, Query TEXT)")  # not an alias
    con.executemany("INSERT INTO t VALUES (?, ?)", [(5, "a"), (9, None), (2**40, "c")])
    con.executemany("INSERT INTO d VALUES (?, ?)", [(5, "a"), (None, "b")])
    con.commit()
    con.execute("ALTER TABLE t ADD COLUMN added_null INTEGER")
    con.execute("ALTER TABLE t ADD COLUMN added_text TEXT DEFAULT 'none'")
    con.execute("INSERT INTO t VALUES (11, 'd', 4, 'given')")
    con.commit()
    con.close()
    schema = StructType(
        [
            StructField("id", LongType()),
            StructField("Query", StringType()),
            StructField("added_null", IntegerType()),
        ]
    )
    read = plan_sqlite_read(spark, str(path), "t", schema, 1)
    assert read.columns is not None and read.columns.rowid_position == 0
    rows, outcome = _pages_only(read, 1, 2**41)
    assert outcome.status == DONE
    assert rows == [(5, "a", None), (9, None, None), (11, "d", 4), (2**40, "c", None)]
    # A non-NULL default is SQLite's to give: the pages stop at the first record without it.
    with_default = StructType(
        [StructField("id", LongType()), StructField("added_text", StringType())]
    )
    read = plan_sqlite_read(spark, str(path), "t", with_default, 1)
    rows, outcome = _pages_only(read, 1, 2**41)
    assert (rows, outcome.status) == ([], MISMATCH)
    assert arrow_rows(read) == [(5, "none"), (9, "none"), (11, "given"), (2**40, "none")]
    # INTEGER PRIMARY KEY DESC is an ordinary column (with an index): its NULL stays NULL.
    read = plan_sqlite_read(spark, str(path), "d", schema[:2], 1)
    assert read.columns is not None and read.columns.rowid_position == -1
    assert arrow_rows(read) == [(5, "a"), (None, "b")]


def test_wal_databases_are_read_through_sql(
    spark: SparkSession, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "wal.sqlite", ddl, _stream_rows(50), wal=True)
    assert page_format(path) is None
    with caplog.at_level(logging.INFO, logger="segmentation.io.sqlite"):
        read = plan_sqlite_read(spark, path, "t", STREAM, 2)
    assert read.columns is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("read through SQL only (WAL" in m for m in messages)
    assert any(m.endswith("rowid 1..50 in 2 partition(s), through SQL") for m in messages)
    assert len(arrow_rows(read)) == 50
    # The same table in a rollback-journal file: its pages are decoded, and the log says so.
    path = _make(tmp_path / "journal.sqlite", ddl, _stream_rows(50))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segmentation.io.sqlite"):
        assert plan_sqlite_read(spark, path, "t", STREAM, 2).columns is not None
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "rowid 1..50 in 2 partition(s), pages decoded by the tasks"
    ]


def test_the_read_holds_a_shared_lock(spark: SparkSession, tmp_path: Path) -> None:
    """No writer can commit while a range is decoded from the file (SQLite's lock is held)."""
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "locked.sqlite", ddl, _stream_rows(3000), 4096)
    read = plan_sqlite_read(spark, path, "t", STREAM, 1, batch_rows=100)
    assert read.columns is not None
    reader = page_batches(path, "t", read.columns, [f.name for f in STREAM.fields], 1, 3000, 100)
    first = next(reader)
    assert first.num_rows == 100
    writer = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        writer.execute("INSERT INTO t VALUES (1, 1, 1.0, 'x')")
        writer.commit()
    writer.rollback()
    reader.close()  # the transaction ends with the generator
    writer.execute("INSERT INTO t VALUES (1, 1, 1.0, 'x')")
    writer.commit()
    writer.close()


def test_damaged_files_never_crash_the_reader(spark: SparkSession, tmp_path: Path) -> None:
    """Random bytes overwritten: the reader passes on rows SQLite has too, or stops; no crash."""
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    clean = _make(tmp_path / "clean.sqlite", ddl, _stream_rows(1500), 512)
    read = plan_sqlite_read(spark, clean, "t", STREAM, 1)
    assert read.columns is not None
    names = [f.name for f in STREAM.fields]
    size = os.path.getsize(clean)
    r = random.Random(3)
    endings = set()
    for trial in range(150):
        damaged = str(tmp_path / f"damaged-{trial}.sqlite")
        shutil.copy(clean, damaged)
        with open(damaged, "r+b") as f:
            for _ in range(r.randint(1, 12)):
                f.seek(r.randrange(100, size))
                f.write(bytes([r.randrange(256)]))
        outcome: Optional[PageRead] = None
        reader = page_batches(damaged, "t", read.columns, names, 1, 2000, 64)
        while outcome is None:
            try:
                next(reader)
            except StopIteration as end:
                outcome = end.value
        endings.add(outcome.status)
        os.remove(damaged)
    assert endings <= {DONE, MISMATCH, CORRUPT, NOT_STARTED}
    assert CORRUPT in endings and DONE in endings


# --- where the compiled loops come from -------------------------------------------------------


def test_the_loops_compile_once_per_process(spark: SparkSession, tmp_path: Path) -> None:
    """The warm-up's argument types are the reads' own: no second specialisation, ever."""
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "once.sqlite", ddl, _stream_rows(500), 1024)
    kernels = load_kernels()
    assert not isinstance(kernels, str)
    read = plan_sqlite_read(spark, path, "t", STREAM, 3, batch_rows=7)
    assert arrow_rows(read) == arrow_rows(converting_only(read))
    assert len(kernels.leaf_pages.signatures) == 1
    assert len(kernels.read_rows.signatures) == 1


def test_without_numba_sql_reads_everything(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "plain.sqlite", ddl, _stream_rows(300), 1024)
    read = plan_sqlite_read(spark, path, "t", STREAM, 2)
    expected = arrow_rows(converting_only(read))
    load_kernels.cache_clear()
    monkeypatch.setitem(sys.modules, "numba.core.config", None)  # import numba fails
    try:
        with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
            assert arrow_rows(read) == expected
            assert _pages_only(read, 1, 300) == ([], PageRead(NOT_STARTED, None, ANY_REASON))
    finally:
        load_kernels.cache_clear()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "SQLite pages are not decoded: numba is not usable here (ModuleNotFoundError: import of "
        "numba.core.config halted; None in sys.modules); SQL reads everything"
    ]


class _AnyReason(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("numba is not usable here")

    __hash__ = str.__hash__


ANY_REASON = _AnyReason()


def test_a_zipped_package_without_a_writable_home_caches_in_the_temp_dir(
    tmp_path: Path,
) -> None:
    """``--py-files segmentation.zip`` run by a user whose home and cache cannot be written."""
    ddl = "CREATE TABLE t (SearchID INTEGER, Position INTEGER, HistCTR REAL, Query TEXT)"
    path = _make(tmp_path / "zipped.sqlite", ddl, _stream_rows(200), 1024)
    archive = tmp_path / "segmentation.zip"
    package = REPO / "segmentation"
    with zipfile.ZipFile(archive, "w") as zipped:
        for source in package.rglob("*.py"):
            zipped.write(source, source.relative_to(REPO).as_posix())
    script = (
        "import sqlite3\n"
        "from segmentation.io.sqlite import pages\n"
        "assert '.zip' in pages.__file__\n"
        f"con = sqlite3.connect({path!r})\n"
        "columns = pages.table_columns(con, 't', ['SearchID'], [0], [(-2**63, 2**63 - 1)])\n"
        f"reader = pages.page_batches({path!r}, 't', columns, ['SearchID'], 1, 200, 64)\n"
        "rows = 0\n"
        "while True:\n"
        "    try:\n"
        "        rows += next(reader).num_rows\n"
        "    except StopIteration as end:\n"
        "        print(rows, end.value.status)\n"
        "        break\n"
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {
        **os.environ, "PYTHONPATH": str(archive), "HOME": "/proc", "XDG_CACHE_HOME": "/proc/x",
        "TMPDIR": str(temp),
    }
    env.pop("NUMBA_CACHE_DIR", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["200", str(DONE)]
    [cache] = list(temp.glob("segmentation-cache-*"))
    assert any((cache / "numba").rglob("*.nbi"))


def _varint_bytes(value: int) -> bytes:
    """SQLite's varint of a small non-negative integer (up to 2**56)."""
    groups = [value & 0x7F]
    value >>= 7
    while value:
        groups.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(groups))


def test_wide_interior_pages_of_64k_databases() -> None:
    """A 64 KB interior page with 5,000 children: one level's children all on the stack at once.

    Built by hand (5,000 real 64 KB leaves would be a 330 MB database): page 2 is the root,
    child ``i`` (page ``i + 3``) holds rowid ``i + 1``, the right-most child (page 5003) the rest.
    The zeroed buffer is never touched but for the pages' type bytes.
    """
    kernels = load_kernels()
    assert not isinstance(kernels, str)
    size, children = 65536, 5000
    buf = np.zeros((children + 3) * size, np.uint8)
    root = size  # page 2
    cells_at = 12 + 2 * children
    cell = cells_at
    for i in range(children):
        buf[root + 12 + 2 * i : root + 14 + 2 * i] = list(cell.to_bytes(2, "big"))
        body = (i + 3).to_bytes(4, "big") + _varint_bytes(i + 1)
        buf[root + cell : root + cell + len(body)] = list(body)
        cell += len(body)
    assert cell < size
    buf[root] = 5  # interior table page
    buf[root + 3 : root + 5] = list(children.to_bytes(2, "big"))
    buf[root + 8 : root + 12] = list((children + 3).to_bytes(4, "big"))
    for page in range(3, children + 4):
        buf[(page - 1) * size] = 13  # leaf table page

    def leaves(lo: int, hi: int) -> List[int]:
        out = np.zeros(children + 10, np.int64)
        count = kernels.leaf_pages(buf, size, size, 2, lo, hi, out)
        assert count >= 0
        return out[:count].tolist()

    assert leaves(1, 10**9) == list(range(3, children + 4))
    assert leaves(2500, 2600) == list(range(2502, 2603))
    assert leaves(4999, 5001) == [5001, 5002, 5003]
    assert leaves(6000, 7000) == [5003]
