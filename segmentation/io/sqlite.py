"""Parallel reads of SQLite tables into Spark DataFrames (the Kaggle Avito ``database.sqlite``).

Spark has no SQLite source, JDBC through one connection is single-threaded, and a Python row
loop feeding Spark moves a few hundred thousand rows a second: hours for the 392 M rows of
``trainSearchStream``. :func:`read_sqlite_table` instead splits a table into ``rowid`` ranges
(the bounds are read on the driver with two b-tree end lookups, not a scan) and reads every range in
its own Spark task with the ADBC SQLite driver (``adbc_driver_sqlite``), which fills Arrow record
batches in C at a few million rows a second per core; the batches go to Spark through
``mapInArrow`` without any per-row Python.

Where the file must be
    Every task opens the database by the same local path, so the file must be readable at that
    path on every executor: local mode (``--master local[*]``), or a copy at the same path on
    every node (e.g. an EMR bootstrap action, or a shared POSIX mount). Object stores and HDFS
    (``s3://``, ``hdfs://``...) are refused with an :class:`~segmentation.errors.InputError`;
    copy the file locally first, or convert the tables to Parquet once and read those.

Types
    SQLite types are per value, not per column, and ADBC infers each result column's Arrow type
    from the values of the *first batch only*: a column whose first batch is all NULL becomes
    ``int64`` and the read then fails (``Type mismatch in column 1: expected INT64 but got
    DOUBLE``) as soon as a REAL arrives; an INTEGER column holding one REAL or TEXT value fails
    the same way. The reader therefore converts every column in SQL to the storage class of its
    target type, and puts a typed sentinel row in front of the results (``SELECT 0, 0.0, ''
    UNION ALL SELECT ...``, dropped again before Spark sees it) so that inference always sees a
    value of the right class.

    The conversion follows the target Spark type of each field; a stored value that does not
    represent a value of that type becomes NULL instead of SQLite's ``CAST`` garbage (``CAST('abc'
    AS INTEGER)`` is 0, ``CAST(3.7 AS INTEGER)`` is 3):

    ========================================  =================================================
    target type                               value read
    ========================================  =================================================
    ``LongType``, ``IntegerType``,            INTEGER as is; REAL and TEXT only when they hold a
    ``ShortType``, ``ByteType``               whole number (``3.0``, ``'12'``, ``' 12 '``,
                                              ``'1e3'``); NULL for ``3.7``, ``'abc'``,
                                              ``'12abc'``, ``''``, BLOBs, and numbers outside the
                                              type's range
    ``DoubleType``, ``FloatType``             REAL as is, INTEGER converted (beyond 2**53
                                              rounded); TEXT only when SQLite reads it as a
                                              well-formed number (``'0.0123'``, ``'1e3'``); NULL
                                              for other TEXT and BLOBs. ``FloatType`` rounds to
                                              single precision (beyond its range: infinity)
    ``StringType``                            TEXT as is; INTEGER and REAL as SQLite prints them
                                              (``3``, ``3.0``, ``1.0e+30``); NULL for BLOBs
    ========================================  =================================================

    Other Spark types are not supported (``ValueError``). Every output field is nullable.
    Nothing counts the values nulled this way; to audit a column, run e.g. ``SELECT count(*) FROM
    t WHERE typeof(c) NOT IN ('integer', 'null')`` with ``sqlite3``.

Only tables with a rowid qualify; ``WITHOUT ROWID`` tables and views are refused.

Names
    Table and column names are never put into SQL as given: the table is looked up in the
    database's own catalogue (``sqlite_master``), its columns in ``pragma_table_info(?)`` (the
    name a bound parameter), and only the names as the catalogue spells them are used, quoted
    as identifiers (``"a""b"``). A name that is not in the catalogue (``x"; DROP TABLE t; --``)
    is an :class:`~segmentation.errors.InputError` naming what the database has; result columns
    get positional aliases. The connection is read-only (``mode=ro``) in any case.
"""

from __future__ import annotations

import logging
import math
import os
import re
import socket
import sqlite3
from contextlib import closing
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import quote, unquote, urlparse

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
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

from segmentation.errors import InputError

log = logging.getLogger(__name__)

#: Rows per Arrow record batch fetched by ADBC (option ``adbc.sqlite.query.batch_rows``; the
#: driver's default is 1024).
BATCH_ROWS = 65_536

#: Default partitioning never makes rowid ranges smaller than this just to reach
#: ``defaultParallelism``: a task per few thousand rows costs more than it saves.
MIN_ROWS_PER_PARTITION = 100_000

_BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

#: Inclusive value range of the narrow integer types.
_INT_RANGES = {
    IntegerType: (-(2**31), 2**31 - 1),
    ShortType: (-(2**15), 2**15 - 1),
    ByteType: (-(2**7), 2**7 - 1),
}

_Range = Tuple[int, int]


def sqlite_table_names(path: str) -> List[str]:
    """Return the names of the tables in a SQLite database file, sorted.

    Parameters
    ----------
    path : str
        A local file path (or ``file://`` URI).

    Returns
    -------
    list of str
        User tables (views and SQLite's internal ``sqlite_*`` tables are left out).

    Raises
    ------
    InputError
        The path is a remote URI, does not exist, is not a readable file, or is not a SQLite
        database.
    """
    local = _local_path(path)
    with closing(_open(local)) as con:
        return _table_names(con)


def read_sqlite_table(
    spark: SparkSession,
    path: str,
    table: str,
    schema: StructType,
    num_partitions: Optional[int] = None,
    rows_per_partition: int = 2_000_000,
    batch_rows: int = BATCH_ROWS,
) -> DataFrame:
    """Read a SQLite table into a DataFrame in parallel rowid ranges, through ADBC and Arrow.

    The file must be readable at the same local path by the driver and by every executor: in
    local mode any local file qualifies; on a cluster, put a copy at that path on every node
    first (or convert the tables to Parquet once). Nothing is read until an action runs; each
    task then reads one rowid range with the ADBC SQLite driver, which must be installed on the
    executors (``adbc-driver-sqlite``). See the module docstring for how SQLite's per-value
    types are converted to ``schema``.

    Parameters
    ----------
    spark : SparkSession
        The session.
    path : str
        Local path of the database file (a ``file://`` URI is accepted too).
    table : str
        Table name; SQLite matches it case-insensitively.
    schema : StructType
        The columns to read, by name (matched case-insensitively, as SQLite does), and their
        types: ``LongType``, ``IntegerType``, ``ShortType``, ``ByteType``, ``DoubleType``,
        ``FloatType`` or ``StringType``. Other columns of the table are not read.
    num_partitions : int, optional
        Number of rowid ranges, one Spark partition each. By default
        ``ceil(rowid span / rows_per_partition)``, raised to ``defaultParallelism`` when the
        table has at least :data:`MIN_ROWS_PER_PARTITION` rowids per partition to give.
        Ranges are equal in rowid span, so gaps left by deleted rows make some smaller.
    rows_per_partition : int, default 2_000_000
        Target rowids per partition when ``num_partitions`` is not given.
    batch_rows : int, default :data:`BATCH_ROWS`
        Rows per Arrow record batch fetched from SQLite.

    Returns
    -------
    DataFrame
        ``schema`` with every field nullable, in rowid order within and across partitions; an
        empty table gives an empty DataFrame.

    Raises
    ------
    InputError
        The path is a remote URI (``s3://``, ``hdfs://``...), does not exist, is not a readable
        file, or is not a SQLite database; the table is missing (the message lists the tables
        present), is a ``WITHOUT ROWID`` table, or lacks columns of ``schema`` (named).
    ValueError
        A field of ``schema`` has an unsupported type, or a count argument is below 1.

    Examples
    --------
    >>> from segmentation.io.schemas import AVITO_SEARCH_STREAM
    >>> stream = read_sqlite_table(
    ...     spark, "/mnt/data/database.sqlite", "trainSearchStream", AVITO_SEARCH_STREAM
    ... )  # doctest: +SKIP
    """
    for name, value in (
        ("num_partitions", num_partitions),
        ("rows_per_partition", rows_per_partition),
        ("batch_rows", batch_rows),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    expressions = [_value_expression(field) for field in schema.fields]
    out_schema = StructType([StructField(f.name, f.dataType, True) for f in schema.fields])

    local = _local_path(path)
    with closing(_open(local)) as con:
        actual = _resolve_table(con, local, table)
        stored = _check_columns(con, local, actual, schema)
        lo, hi = _rowid_bounds(con, local, actual)
    expressions = [
        _value_expression(field, column) for field, column in zip(schema.fields, stored)
    ]
    if lo is None or hi is None:
        log.info("SQLite table %s of %s is empty", actual, local)
        return spark.createDataFrame([], out_schema)

    span = hi - lo + 1
    if num_partitions is None:
        parallelism = spark.sparkContext.defaultParallelism
        num_partitions = max(
            math.ceil(span / rows_per_partition),
            min(parallelism, span // MIN_ROWS_PER_PARTITION),
            1,
        )
    ranges = split_rowid_range(lo, hi, num_partitions)
    log.info(
        "Reading SQLite table %s of %s: rowid %d..%d in %d partitions",
        actual,
        local,
        lo,
        hi,
        len(ranges),
    )
    sql = _select_sql(actual, expressions)
    reader = _range_reader(local, actual, sql, ranges, out_schema, batch_rows)
    ids = spark.range(0, len(ranges), 1, numPartitions=len(ranges))
    return ids.mapInArrow(reader, out_schema)


def split_rowid_range(lo: int, hi: int, parts: int) -> List[_Range]:
    """Split the inclusive rowid range ``lo..hi`` into ``parts`` consecutive ranges.

    Parameters
    ----------
    lo, hi : int
        First and last rowid, ``lo <= hi``.
    parts : int
        Number of ranges, at least 1. With more parts than rowids, some ranges are empty
        (``hi < lo``).

    Returns
    -------
    list of (int, int)
        Inclusive ``(lo, hi)`` bounds that together cover ``lo..hi`` exactly once, spans
        differing by at most one.

    Raises
    ------
    ValueError
        ``parts`` is below 1.
    """
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    span = hi - lo + 1
    bounds = [lo + (span * i) // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(parts)]


# --- driver side: checks and metadata ------------------------------------------------------


def _local_path(path: str) -> str:
    """Validate ``path`` as a readable local file and return it absolute."""
    if path.lower().startswith("file://"):
        path = unquote(urlparse(path).path)
    elif _URI.match(path):
        raise InputError(
            f"SQLite input {path} is not a local file: SQLite is read by path on every "
            "executor, so copy the database to the same local path on every node (or run in "
            "local mode), or convert its tables to Parquet first and read those"
        )
    local = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(local):
        raise InputError(f"SQLite database {local} does not exist")
    if not os.path.isfile(local):
        raise InputError(f"SQLite database {local} is not a file")
    if not os.access(local, os.R_OK):
        raise InputError(f"SQLite database {local} is not readable (permissions)")
    return local


def _uri(local: str) -> str:
    """Return the read-only SQLite URI of a local absolute path."""
    return "file:" + quote(local) + "?mode=ro"


def _open(local: str) -> sqlite3.Connection:
    """Open ``local`` read-only and make sure it is a SQLite database."""
    try:
        con = sqlite3.connect(_uri(local), uri=True)
    except sqlite3.Error as err:
        raise InputError(f"cannot open SQLite database {local}: {err}") from err
    try:
        con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as err:
        con.close()
        raise InputError(f"{local} is not a SQLite database ({err})") from err
    return con


def _quote(identifier: str) -> str:
    """Quote an SQL identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def _table_names(con: sqlite3.Connection) -> List[str]:
    """Names of the user tables of an open database, sorted."""
    rows = con.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'"
    ).fetchall()
    return sorted(str(row[0]) for row in rows)


def _resolve_table(con: sqlite3.Connection, local: str, table: str) -> str:
    """Return the catalogue's spelling of ``table`` or raise an InputError listing the tables.

    The name returned always comes from ``sqlite_master``, never from the caller.
    """
    names = _table_names(con)
    exact = [name for name in names if name == table]
    if exact:
        return exact[0]
    folded = [name for name in names if name.lower() == table.lower()]
    if folded:
        return folded[0]
    present = ", ".join(names) if names else "none"
    raise InputError(f"SQLite database {local} has no table {table!r} (tables present: {present})")


def _table_columns(con: sqlite3.Connection, table: str) -> List[str]:
    """The column names of ``table`` as its catalogue spells them (the name a bound parameter)."""
    rows = con.execute("SELECT name FROM pragma_table_info(?) ORDER BY cid", (table,))
    return [str(row[0]) for row in rows]


def _check_columns(
    con: sqlite3.Connection, local: str, table: str, schema: StructType
) -> List[str]:
    """The catalogue's spelling of each field of ``schema`` (matched case-insensitively).

    Raises an InputError naming the columns of ``schema`` that ``table`` lacks.
    """
    columns = _table_columns(con, table)
    present: Dict[str, str] = {}
    for name in columns:
        present.setdefault(name.lower(), name)
    missing = [f.name for f in schema.fields if f.name.lower() not in present]
    if missing:
        raise InputError(
            f"SQLite table {table!r} in {local} lacks column(s) {', '.join(missing)} "
            f"(it has: {', '.join(columns)})"
        )
    return [present[f.name.lower()] for f in schema.fields]


def _rowid_bounds(
    con: sqlite3.Connection, local: str, table: str
) -> Tuple[Optional[int], Optional[int]]:
    """First and last rowid of ``table`` (``None`` when empty), each an O(log n) b-tree lookup.

    ``min`` and ``max`` sit in separate subqueries: SQLite's min/max optimisation only applies to
    a query with a single such aggregate; ``SELECT min(rowid), max(rowid)`` scans the table.
    """
    quoted = _quote(table)
    try:
        row = con.execute(
            f"SELECT (SELECT min(rowid) FROM {quoted}), (SELECT max(rowid) FROM {quoted})"
        ).fetchone()
    except sqlite3.OperationalError as err:
        if "rowid" in str(err):
            raise InputError(
                f"SQLite table {table!r} in {local} is a WITHOUT ROWID table; only tables with "
                "a rowid can be read in parallel (copy it into an ordinary table first)"
            ) from err
        raise
    lo, hi = row
    return (None if lo is None else int(lo)), (None if hi is None else int(hi))


# --- SQL --------------------------------------------------------------------------------------


def _value_expression(field: StructField, column: Optional[str] = None) -> Tuple[str, str]:
    """SQL converting a column to the storage class of ``field``'s type, and its sentinel.

    ``column`` is the column's name as the catalogue spells it (:func:`_check_columns`);
    without it (a check of the type only) ``field.name``. See the module docstring for the
    rules. Every expression yields only values of one storage class (or NULL), so ADBC's
    per-batch type inference cannot see mixed types.
    """
    col = _quote(field.name if column is None else column)
    dtype: DataType = field.dataType
    if isinstance(dtype, (LongType, IntegerType, ShortType, ByteType)):
        whole = f"CAST(CAST({col} AS NUMERIC) AS INTEGER)"
        bounds = _INT_RANGES.get(type(dtype))
        if bounds is None:
            stored, converted = col, f"{whole} = {col}"
        else:
            lo, hi = bounds
            stored = f"CASE WHEN {col} BETWEEN {lo} AND {hi} THEN {col} END"
            converted = f"{whole} = {col} AND {whole} BETWEEN {lo} AND {hi}"
        expr = (
            f"CASE typeof({col}) WHEN 'integer' THEN {stored} WHEN 'null' THEN NULL "
            f"ELSE CASE WHEN {converted} THEN {whole} END END"
        )
        return expr, "0"
    if isinstance(dtype, (DoubleType, FloatType)):
        expr = (
            f"CASE typeof({col}) WHEN 'real' THEN {col} WHEN 'null' THEN NULL "
            f"WHEN 'integer' THEN CAST({col} AS REAL) "
            f"ELSE CASE WHEN CAST({col} AS NUMERIC) = {col} THEN CAST({col} AS REAL) END END"
        )
        return expr, "0.0"
    if isinstance(dtype, StringType):
        expr = (
            f"CASE typeof({col}) WHEN 'text' THEN {col} WHEN 'blob' THEN NULL "
            f"ELSE CAST({col} AS TEXT) END"
        )
        return expr, "''"
    raise ValueError(
        f"column {field.name!r}: SQLite reads support LongType, IntegerType, ShortType, "
        f"ByteType, DoubleType, FloatType and StringType, not {dtype.simpleString()}"
    )


def _select_sql(table: str, expressions: Sequence[Tuple[str, str]]) -> str:
    """The range query up to its rowid condition, with the sentinel row first.

    ``table`` is the catalogue's spelling (:func:`_resolve_table`); result columns are named
    ``c0, c1, ...`` (the reader takes them by position). A compound ``UNION ALL`` without
    ``ORDER BY`` returns its left side first; the sentinel fixes the type ADBC infers for each
    column and is dropped by the reader, which appends ``BETWEEN lo AND hi``.
    """
    names = [f"c{i}" for i in range(len(expressions))]
    sentinel = ", ".join(f"{value} AS {name}" for (_, value), name in zip(expressions, names))
    values = ", ".join(f"{expr} AS {name}" for (expr, _), name in zip(expressions, names))
    return f"SELECT {sentinel} UNION ALL SELECT {values} FROM {_quote(table)} WHERE rowid BETWEEN"


# --- executor side ----------------------------------------------------------------------------


def _range_reader(
    local: str,
    table: str,
    sql: str,
    ranges: List[_Range],
    schema: StructType,
    batch_rows: int,
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: rowid-range numbers in, the ranges' rows out as Arrow."""

    def read(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from adbc_driver_sqlite import dbapi
        from pyspark.sql.pandas.types import to_arrow_schema

        arrow_schema = to_arrow_schema(schema)
        if not os.path.isfile(local):
            raise FileNotFoundError(
                f"SQLite database {local} is not present on executor host "
                f"{socket.gethostname()}: the file must be at the same local path on every "
                "node (or convert it to Parquet first)"
            )
        for ids in batches:
            for number in ids.column(0).to_pylist():
                lo, hi = ranges[number]
                if hi < lo:
                    continue
                query = f"{sql} {int(lo)} AND {int(hi)}"
                try:
                    with dbapi.connect(_uri(local)) as con, con.cursor() as cur:
                        cur.adbc_statement.set_options(**{_BATCH_ROWS_OPTION: str(batch_rows)})
                        cur.execute(query)
                        first = True
                        for batch in cur.fetch_record_batch():
                            if first:
                                batch = batch.slice(1)  # the sentinel row
                                first = False
                            if batch.num_rows == 0:
                                continue
                            columns = [
                                batch.column(i).cast(arrow_schema.field(i).type)
                                for i in range(len(arrow_schema))
                            ]
                            yield pa.RecordBatch.from_arrays(columns, schema=arrow_schema)
                except (dbapi.Error, OSError) as err:
                    raise RuntimeError(
                        f"reading SQLite table {table!r} of {local}, rowid {lo}..{hi}: {err}"
                    ) from err

    return read
