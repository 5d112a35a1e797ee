"""Parallel reads of SQLite tables (Kaggle Avito ``database.sqlite``): into Spark, or Parquet.

Spark has no SQLite source, JDBC through one connection is single-threaded, and a Python row
loop feeding Spark moves a few hundred thousand rows a second: hours for the 392 M rows of
``trainSearchStream``. A table is instead split into ``rowid`` ranges (the bounds are read on the
driver with two b-tree end lookups, not a scan) and every range is read in its own Spark task,
into Arrow record batches:

1. by decoding the table's b-tree pages from the file (:mod:`segmentation.io.sqlite.pages`, a
   numba-compiled loop, about 10 M rows a second per core, under SQLite's read lock), for every
   row whose values are stored as their target types, up to the first that is not;
2. then through SQL with the ADBC SQLite driver (``adbc_driver_sqlite``, a few million rows a
   second per core) for the rest of the range, as described under *Types* below; all of it when
   the file is in WAL mode or not UTF-8, or the plan was made with ``decode_pages=False``.

Whichever reads a row, its values are those of the converting query of *Types*. Both ways of
consuming the ranges share one generator of a range's Arrow batches (:func:`range_batches`):

- :func:`read_sqlite_table` returns a DataFrame; the batches reach Spark through ``mapInArrow``
  without any per-row Python.
- :func:`write_sqlite_parquet` (``segmentation ingest``) skips Spark's rows altogether: each task
  writes its range with pyarrow as one Parquet file, ``part-<range:05d>.parquet``, and returns
  only its row count. Converting Arrow to Spark rows and Spark's Parquet writer took about two
  thirds of the CPU of an ingest.

Where the file must be
    Every task opens the database by the same local path, so the file must be readable at that
    path on every executor: local mode (``--master local[*]``), or a copy at the same path on
    every node (e.g. an EMR bootstrap action, or a shared POSIX mount). Object stores and HDFS
    (``s3://``, ``hdfs://``...) are refused with an :class:`~segmentation.errors.InputError`;
    copy the file locally first, or convert the tables to Parquet once and read those.

Types
    SQLite types are per value, not per column, and ADBC infers each result column's Arrow type
    from the values of the *first batch only*: a first batch holding a REAL in an otherwise
    INTEGER column turns the column into ``double``, TEXT into ``string``; in later batches a
    value of another storage class fails the read (``Type mismatch in column 1: expected INT64
    but got DOUBLE``), except that an INTEGER is converted silently in a ``double`` column and
    anything in a ``string`` column (a REAL is printed ``%e`` in the first batch, a BLOB's bytes
    are copied as text). Every query therefore puts a typed sentinel row in front of its results
    (``SELECT 0, 0, 0.0, '' UNION ALL SELECT rowid, ...``, dropped again before anyone sees it) so
    that inference always starts from the target's storage class, and reads a range in up to two
    steps:

    1. *Optimistically*, the stored INTEGER and REAL columns as they are (plain ``SELECT``:
       ``trainSearchStream`` reads 1.5 times as fast as in step 2), TEXT targets through an
       expression equal to their conversion below but cheaper (nothing in a ``string`` column
       can make ADBC fail, so it must be exact).
       Each batch must arrive with the sentinel's types and is cast to the target Arrow type with
       pyarrow's safe cast (``int64`` to ``int32``... fails on a value out of range).
    2. If ADBC raises its type mismatch, a batch arrives with another type, or the safe cast
       fails, nothing of that batch has been passed on: the rest of the range (``rowid`` after the
       last row passed on) is read again with every column converting in SQL, which gives exactly
       the rules of the table below. Any other error (I/O, a corrupt file) fails the task.

    The result is therefore the converting read's for every input; only a range holding
    a value of another storage class (or out of a narrow type's range) pays for the conversion,
    from that batch on (logged at debug level).

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

Parquet written by the tasks
    :func:`write_sqlite_parquet` writes the Arrow schema of the Spark schema
    (:func:`arrow_schema_of`, every field nullable), so ``spark.read.parquet`` gives the DataFrame
    :func:`read_sqlite_table` would. A retried or speculative task writes the same file name with
    the same content. On local disk a task writes ``.part-<range>.<attempt>.tmp`` in the target
    folder (a name Spark's and pyarrow's readers skip) and renames it into place with
    ``os.replace``; on S3 it writes the file to local scratch space first (``SPARK_LOCAL_DIRS``)
    and uploads it only once it is complete, as one object (a single PUT or multipart upload
    appears whole when it completes): a range that fails to read uploads nothing, where a
    Parquet stream straight to S3 would complete a truncated object as it is discarded (pyarrow's
    S3 output stream closes, not aborts, when destroyed). A range without rows writes no file,
    but an empty table still gets one empty ``part-00000.parquet`` with the schema; ``_SUCCESS``
    is written last.

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

import dataclasses
import functools
import logging
import math
import os
import re
import socket
import sqlite3
import tempfile
import uuid
import weakref
from contextlib import closing, suppress
from dataclasses import dataclass
from typing import (
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
)
from urllib.parse import quote, unquote, urlparse

import pyarrow as pa
from pyarrow import fs as pafs
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
from segmentation.io.sqlite.pages import (
    DONE,
    KIND_INTEGER,
    KIND_REAL,
    KIND_TEXT,
    MISMATCH,
    NOT_STARTED,
    PageRead,
    TableColumns,
    page_batches,
    page_format,
    table_columns,
)

log = logging.getLogger(__name__)

#: Rows per Arrow record batch fetched by ADBC (option ``adbc.sqlite.query.batch_rows``; the
#: driver's default is 1024).
BATCH_ROWS = 65_536

#: Default partitioning never makes rowid ranges smaller than this just to reach
#: ``defaultParallelism``: a task per few thousand rows costs more than it saves.
MIN_ROWS_PER_PARTITION = 100_000

#: Rowids per task :func:`write_sqlite_parquet` aims at when no partition count was requested:
#: its tasks stream to their files, so a range needs no memory in proportion to its size, while
#: each task costs a connection, a writer and Spark's scheduling (10 M rows take a core ~7 s).
WRITE_ROWS_PER_TASK = 10_000_000

#: Parquet compression of :func:`write_sqlite_parquet` (Spark's default too).
PARQUET_COMPRESSION = "snappy"

#: Row groups of :func:`write_sqlite_parquet`: at most this many rows, and batches are buffered
#: only up to this many Arrow bytes (a row group per ADBC batch would restart dictionary encoding
#: every 65,536 rows: files 10-20 % larger, for no less CPU).
ROW_GROUP_ROWS = 1_048_576
ROW_GROUP_BYTES = 64 * 2**20

_BATCH_ROWS_OPTION = "adbc.sqlite.query.batch_rows"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")

#: Inclusive value range of the narrow integer types.
_INT_RANGES = {
    IntegerType: (-(2**31), 2**31 - 1),
    ShortType: (-(2**15), 2**15 - 1),
    ByteType: (-(2**7), 2**7 - 1),
}

_Range = Tuple[int, int]


@dataclass(frozen=True)
class SqliteRead:
    """One planned read of a SQLite table: where, which rowid ranges, and the two range queries.

    Made on the driver (:func:`plan_sqlite_read`) and sent to the tasks, which read
    ``ranges[i]`` with :func:`range_batches`.

    Attributes
    ----------
    local : str
        Absolute local path of the database file.
    table : str
        The table as the catalogue spells it.
    schema : StructType
        The output schema: the caller's fields and types, every field nullable.
    ranges : tuple of (int, int)
        Inclusive rowid ranges, one per partition, in order; empty for an empty table.
    plain_sql, converting_sql : str
        The optimistic and the converting range query, up to ``WHERE rowid BETWEEN`` (the
        bounds are appended). Result column 0 is the rowid, then one column per field.
    batch_rows : int
        Rows per Arrow record batch fetched from SQLite.
    requested_partitions : int or None
        The partition count the caller asked for (``--sqlite-partitions``); ``None`` when
        ``ranges`` follow the default sizing, which :func:`write_sqlite_parquet` may replace.
    columns : TableColumns or None
        Where the fields sit in the table's records, for the tasks to decode its pages
        themselves (:mod:`segmentation.io.sqlite.pages`); ``None`` when only SQL reads it.
    """

    local: str
    table: str
    schema: StructType
    ranges: Tuple[_Range, ...]
    plain_sql: str
    converting_sql: str
    batch_rows: int
    requested_partitions: Optional[int] = None
    columns: Optional[TableColumns] = None


@dataclass(frozen=True)
class ParquetWrite:
    """What :func:`write_sqlite_parquet` wrote.

    Attributes
    ----------
    rows : int
        Rows written, as counted by the tasks.
    files : int
        Parquet files written (ranges without rows write none; an empty table writes one).
    partitions : int
        Rowid ranges, one Spark task each (1 for an empty table: its file is written by the
        driver).
    """

    rows: int
    files: int
    partitions: int


#: The plan behind each DataFrame :func:`read_sqlite_table` returned (see :func:`sqlite_read_of`).
_READS: weakref.WeakKeyDictionary[DataFrame, SqliteRead] = weakref.WeakKeyDictionary()


class _TypeMismatchError(Exception):
    """A batch of the optimistic query does not fit its target types (not an I/O error)."""


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
    types are converted to ``schema``. The DataFrame returned remembers its plan
    (:func:`sqlite_read_of`), so ``segmentation ingest`` can write it without Spark's rows.

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
    read = plan_sqlite_read(
        spark, path, table, schema, num_partitions, rows_per_partition, batch_rows
    )
    if not read.ranges:
        df = spark.createDataFrame([], read.schema)
    else:
        ids = spark.range(0, len(read.ranges), 1, numPartitions=len(read.ranges))
        df = ids.mapInArrow(_range_reader(read), read.schema)
    _READS[df] = read
    return df


def plan_sqlite_read(
    spark: SparkSession,
    path: str,
    table: str,
    schema: StructType,
    num_partitions: Optional[int] = None,
    rows_per_partition: int = 2_000_000,
    batch_rows: int = BATCH_ROWS,
    decode_pages: bool = True,
) -> SqliteRead:
    """Check the database, table and columns, and plan the rowid ranges and range queries.

    The driver's part of :func:`read_sqlite_table` (same parameters and errors); nothing is read
    but the catalogue and the two ends of the rowid b-tree. With ``decode_pages`` (the default)
    the tasks decode the table's pages themselves where the file allows it
    (:mod:`segmentation.io.sqlite.pages`); without, they read only through SQL.

    Returns
    -------
    SqliteRead
        The plan; ``ranges`` is empty for an empty table.
    """
    for name, value in (
        ("num_partitions", num_partitions),
        ("rows_per_partition", rows_per_partition),
        ("batch_rows", batch_rows),
    ):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    for field in schema.fields:  # unsupported types fail before the file is even opened
        _value_expression(field)
    out_schema = StructType([StructField(f.name, f.dataType, True) for f in schema.fields])

    local = _local_path(path)
    with closing(_open(local)) as con:
        actual = _resolve_table(con, local, table)
        stored = _check_columns(con, local, actual, schema)
        lo, hi = _rowid_bounds(con, local, actual)
        columns = _page_columns(con, local, actual, schema, stored) if decode_pages else None
    converting = [_value_expression(f, c) for f, c in zip(schema.fields, stored)]
    plain = [_plain_expression(f, c) for f, c in zip(schema.fields, stored)]

    requested = num_partitions
    ranges: List[_Range] = []
    if lo is None or hi is None:
        log.info("SQLite table %s of %s is empty", actual, local)
    else:
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
            "Reading SQLite table %s of %s: rowid %d..%d in %d partition(s), %s",
            actual,
            local,
            lo,
            hi,
            len(ranges),
            _how(columns),
        )
    return SqliteRead(
        local=local,
        table=actual,
        schema=out_schema,
        ranges=tuple(ranges),
        plain_sql=_select_sql(actual, plain),
        converting_sql=_select_sql(actual, converting),
        batch_rows=batch_rows,
        requested_partitions=requested,
        columns=columns,
    )


def _how(columns: Optional[TableColumns]) -> str:
    """How the tasks read a table, for the log."""
    return "pages decoded by the tasks" if columns is not None else "through SQL"


def _page_columns(
    con: sqlite3.Connection, local: str, table: str, schema: StructType, stored: Sequence[str]
) -> Optional[TableColumns]:
    """Where the fields sit in the records, when the tasks can decode the pages themselves."""
    if page_format(local) is None:
        log.info(
            "SQLite database %s is read through SQL only (WAL journal, not UTF-8, or an "
            "unusual page layout)", local,
        )
        return None
    kinds: List[int] = []
    bounds: List[Tuple[int, int]] = []
    for field in schema.fields:
        dtype = field.dataType
        if isinstance(dtype, StringType):
            kinds.append(KIND_TEXT)
        elif isinstance(dtype, (DoubleType, FloatType)):
            kinds.append(KIND_REAL)
        else:
            kinds.append(KIND_INTEGER)
        narrow = [b for t, b in _INT_RANGES.items() if isinstance(dtype, t)]
        bounds.append(narrow[0] if narrow else (-(2**63), 2**63 - 1))
    columns = table_columns(con, table, stored, kinds, bounds)
    if columns is None:
        log.info(
            "SQLite table %s of %s is read through SQL only (generated columns, or a SQLite "
            "library too old for pragma_table_xinfo)", table, local,
        )
    return columns


def sqlite_read_of(df: DataFrame) -> Optional[SqliteRead]:
    """The plan of a DataFrame exactly as :func:`read_sqlite_table` returned it, else ``None``.

    Any transformation makes a new DataFrame, which has no plan: only the table as read can be
    written by :func:`write_sqlite_parquet` instead of by Spark.
    """
    return _READS.get(df)


def write_sqlite_parquet(
    spark: SparkSession,
    read: SqliteRead,
    filesystem: pafs.FileSystem,
    folder: str,
    compression: str = PARQUET_COMPRESSION,
) -> ParquetWrite:
    """Write a planned SQLite read to Parquet, each rowid range by its own task, without Spark rows.

    One Spark task per range reads it with :func:`range_batches` and writes it with pyarrow as
    ``folder/part-<range:05d>.parquet`` (see the module docstring: retries, temporary names, S3);
    then the driver writes ``folder/_SUCCESS``. ``spark.read.parquet(folder)`` then gives what
    :func:`read_sqlite_table` gives.

    The ranges are the plan's when its partition count was requested; otherwise the table is
    split anew for writing (:func:`write_ranges`): ``defaultParallelism`` ranges, or a multiple
    of it keeping ranges to :data:`WRITE_ROWS_PER_TASK` rowids. A task per core, not per 2 M
    rows: on 2 cores (a warm session), 10 M rows of ``trainSearchStream`` are written at
    3.0 M rows/s in 2 ranges and 2.5-2.8 M in 6.

    Parameters
    ----------
    spark : SparkSession
        The session whose executors run the tasks.
    read : SqliteRead
        The plan (:func:`plan_sqlite_read`, or :func:`sqlite_read_of` a DataFrame).
    filesystem : pyarrow.fs.FileSystem
        ``LocalFileSystem`` (local disk, also in every executor: local mode or a shared mount)
        or ``S3FileSystem``; it travels to the executors with the tasks.
    folder : str
        The target folder in ``filesystem``'s terms: an absolute local path, or ``bucket/key``
        for S3. It should hold nothing (earlier files of other names would be read too).
    compression : str, default :data:`PARQUET_COMPRESSION`
        Parquet compression codec.

    Returns
    -------
    ParquetWrite
        Rows written (the tasks' counts), files and partitions.

    Raises
    ------
    pyspark.errors.PySparkException, py4j.protocol.Py4JJavaError
        A task failed after its retries; its error is one line naming the table, the rowid
        range and the cause (``reading SQLite table ...``, ``writing ... part-00003.parquet``),
        or that the database is missing on an executor host.
    """
    read = dataclasses.replace(
        read, ranges=write_ranges(read, spark.sparkContext.defaultParallelism)
    )
    if read.ranges:
        log.info(
            "Writing SQLite table %s: rowid %d..%d in %d range(s), a Parquet file each, %s, "
            "to %s",
            read.table, read.ranges[0][0], read.ranges[-1][1], len(read.ranges),
            _how(read.columns), folder,
        )
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:
        os.makedirs(folder, exist_ok=True)
    task = functools.partial(_write_range_task, read, filesystem, folder, compression)
    results: List[Tuple[int, int]] = []
    if read.ranges:
        context = spark.sparkContext
        description = context.getLocalProperty("spark.job.description")
        context.setJobDescription(f"write SQLite table {read.table} to Parquet")
        try:
            numbers = list(range(len(read.ranges)))
            results = context.parallelize(numbers, len(numbers)).map(task).collect()
        finally:
            context.setLocalProperty("spark.job.description", description)  # type: ignore[arg-type]
    rows = sum(r for r, _ in results)
    files = sum(f for _, f in results)
    if files == 0:  # an empty table (or only empty ranges): one empty file with the schema
        _write_part(read, None, filesystem, folder, compression, required=True)
        files = 1
    if local:
        _remove_temporaries(folder)
    with filesystem.open_output_stream(f"{folder}/_SUCCESS"):
        pass
    return ParquetWrite(rows=rows, files=files, partitions=max(len(read.ranges), 1))


def write_ranges(read: SqliteRead, parallelism: int) -> Tuple[_Range, ...]:
    """The rowid ranges :func:`write_sqlite_parquet` writes, one task each.

    Parameters
    ----------
    read : SqliteRead
        The plan; its ranges are kept when its partition count was requested, or it has none.
    parallelism : int
        Cores to fill (``defaultParallelism``).

    Returns
    -------
    tuple of (int, int)
        ``parallelism * waves`` ranges, ``waves`` the fewest that keep each range within
        :data:`WRITE_ROWS_PER_TASK` rowids, but no range under :data:`MIN_ROWS_PER_PARTITION`
        rowids (a small table is one range).
    """
    if read.requested_partitions is not None or not read.ranges:
        return read.ranges
    lo, hi = read.ranges[0][0], read.ranges[-1][1]
    span = hi - lo + 1
    parallelism = max(parallelism, 1)
    waves = math.ceil(span / (parallelism * WRITE_ROWS_PER_TASK))
    count = max(min(parallelism * waves, span // MIN_ROWS_PER_PARTITION), 1)
    return tuple(split_rowid_range(lo, hi, count))


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


def _plain_expression(field: StructField, column: str) -> Tuple[str, str]:
    """The optimistic query's expression for a column, and its sentinel (see the module docstring).

    INTEGER and REAL targets read the stored column as it is (a value of another class is caught
    by ADBC or by the type checks of :func:`_typed`). TEXT targets must convert, since ADBC
    accepts anything in a ``string`` column: ``CASE WHEN c < x'' THEN CAST(c AS TEXT) END`` is
    the converting expression of :func:`_value_expression` for every value (NULL compares to
    NULL; every INTEGER, REAL and TEXT sorts before every BLOB, and no BLOB before the empty
    one; a BLOB literal has no affinity, and no affinity converts a BLOB), for a comparison
    instead of a ``typeof`` call: about 10 % of a read of ``SearchInfo``.
    """
    _, sentinel = _value_expression(field, column)
    col = _quote(column)
    if isinstance(field.dataType, StringType):
        return f"CASE WHEN {col} < x'' THEN CAST({col} AS TEXT) END", sentinel
    return col, sentinel


def _select_sql(table: str, expressions: Sequence[Tuple[str, str]]) -> str:
    """The range query up to its rowid condition, with the sentinel row first.

    ``table`` is the catalogue's spelling (:func:`_resolve_table`); result columns are the rowid
    ``r`` then ``c0, c1, ...`` (the reader takes them by position). A compound ``UNION ALL``
    without ``ORDER BY`` returns its left side first; the sentinel fixes the type ADBC infers for
    each column and is dropped by the reader, which appends ``lo AND hi``.
    """
    names = [f"c{i}" for i in range(len(expressions))]
    sentinel = ", ".join(f"{value} AS {name}" for (_, value), name in zip(expressions, names))
    values = ", ".join(f"{expr} AS {name}" for (expr, _), name in zip(expressions, names))
    return (
        f"SELECT 0 AS r, {sentinel} UNION ALL SELECT rowid, {values} FROM {_quote(table)} "
        "WHERE rowid BETWEEN"
    )


# --- executor side ----------------------------------------------------------------------------


def range_batches(read: SqliteRead, lo: int, hi: int) -> Iterator[pa.RecordBatch]:
    """The rows of rowid range ``lo..hi`` as Arrow batches of ``read.schema``, in rowid order.

    Runs where the rows are needed (a Spark task). The pages decoded from the file first (when
    the plan has ``columns``), up to the row before the first value they do not convert; then the
    optimistic query; from the first batch that does not fit (ADBC's type mismatch, a column of
    another type, a failed safe cast) the rest of the range with the converting query (straight
    away after a value the page decoder did not convert). Batches are only passed on once they
    fit, so every row is passed on exactly once. See the module docstring.

    Parameters
    ----------
    read : SqliteRead
        The plan.
    lo, hi : int
        Inclusive rowid bounds; nothing is read when ``hi < lo``.

    Yields
    ------
    pyarrow.RecordBatch
        Batches with the Arrow schema of ``read.schema`` (no rowid column), none empty.

    Raises
    ------
    RuntimeError
        Reading failed for another reason than the types (``reading SQLite table 't' of
        /path, rowid lo..hi: ...``).
    """
    if hi < lo:
        return
    arrow_schema = arrow_schema_of(read.schema)
    fetched = [pa.int64()] + [_fetched_type(f.dataType) for f in read.schema.fields]
    start, converting = lo, False
    if read.columns is not None:
        pages = page_batches(
            read.local, read.table, read.columns, arrow_schema.names, lo, hi, read.batch_rows
        )
        outcome = yield from _cast_batches(pages, arrow_schema)
        if outcome.status == DONE:
            return
        if outcome.last_rowid is not None:
            start = outcome.last_rowid + 1
        converting = outcome.status == MISMATCH
        log.log(
            logging.DEBUG if outcome.status in (MISMATCH, NOT_STARTED) else logging.WARNING,
            "SQLite table %s, rowid %d..%d: %s; reading rowid %d..%d with the %s query",
            read.table, lo, hi, outcome.reason, start, hi,
            "converting" if converting else "plain",
        )
    while True:
        sql = read.converting_sql if converting else read.plain_sql
        batches = _fetch(read, sql, start, hi, (lo, hi))
        try:
            for batch in batches:
                typed = _typed(batch, fetched, arrow_schema)
                yield typed
                start = batch.column(0)[-1].as_py() + 1
            return
        except _TypeMismatchError as mismatch:
            if converting:  # the converting query yields one storage class per column
                raise RuntimeError(
                    f"reading SQLite table {read.table!r} of {read.local}, rowid {lo}..{hi}: "
                    f"unexpected types from the converting query ({mismatch})"
                ) from mismatch
            log.debug(
                "SQLite table %s, rowid %d..%d: %s; reading rowid %d..%d with the converting "
                "query",
                read.table, lo, hi, mismatch, start, hi,
            )
            converting = True
        finally:
            batches.close()


def _cast_batches(
    pages: Generator[pa.RecordBatch, None, PageRead], schema: pa.Schema
) -> Generator[pa.RecordBatch, None, PageRead]:
    """The page reader's batches cast to ``schema``; returns how its read ended.

    Its integers are within each narrow type's range and its texts are strings, so the casts
    cannot fail; ``float32`` rounds.
    """
    try:
        while True:
            try:
                batch = next(pages)
            except StopIteration as end:
                return end.value
            yield pa.RecordBatch.from_arrays(
                [batch.column(i).cast(schema.field(i).type) for i in range(len(schema))],
                schema=schema,
            )
    finally:
        pages.close()


#: The Arrow type of each Spark type a SQLite read supports (PySpark 3.5's ``to_arrow_type``).
_ARROW_TYPES: Dict[type, pa.DataType] = {
    LongType: pa.int64(),
    IntegerType: pa.int32(),
    ShortType: pa.int16(),
    ByteType: pa.int8(),
    DoubleType: pa.float64(),
    FloatType: pa.float32(),
    StringType: pa.string(),
}


def arrow_schema_of(schema: StructType) -> pa.Schema:
    """The Arrow schema of a read's Spark schema, as PySpark's ``to_arrow_schema`` gives it.

    Its own mapping of the supported types: PySpark's first call costs a task 0.12 s (its
    pyarrow version check imports setuptools).
    """
    return pa.schema(
        [pa.field(f.name, _ARROW_TYPES[type(f.dataType)], nullable=True) for f in schema.fields]
    )


def _fetched_type(dtype: DataType) -> pa.DataType:
    """The Arrow type ADBC gives a column whose sentinel is of ``dtype``'s storage class."""
    if isinstance(dtype, StringType):
        return pa.string()
    if isinstance(dtype, (DoubleType, FloatType)):
        return pa.float64()
    return pa.int64()


def _fetch(
    read: SqliteRead, sql: str, lo: int, hi: int, bounds: _Range
) -> Generator[pa.RecordBatch, None, None]:
    """Run one range query; the batches without the sentinel row, none empty.

    Raises :class:`_TypeMismatchError` for ADBC's type mismatch, a one-line RuntimeError naming the
    table and ``bounds`` (the whole range) for any other failure.
    """
    from adbc_driver_sqlite import dbapi

    query = f"{sql} {int(lo)} AND {int(hi)}"
    try:
        with dbapi.connect(_uri(read.local)) as con, con.cursor() as cur:
            cur.adbc_statement.set_options(**{_BATCH_ROWS_OPTION: str(read.batch_rows)})
            cur.execute(query)
            first = True
            for batch in cur.fetch_record_batch():
                if first:
                    batch = batch.slice(1)  # the sentinel row
                    first = False
                if batch.num_rows:
                    yield batch
    except (dbapi.Error, OSError) as err:
        if "Type mismatch in column" in str(err):
            raise _TypeMismatchError(str(err)) from err
        raise RuntimeError(
            f"reading SQLite table {read.table!r} of {read.local}, rowid {bounds[0]}..{bounds[1]}: "
            f"{err}"
        ) from err


def _typed(
    batch: pa.RecordBatch, fetched: Sequence[pa.DataType], schema: pa.Schema
) -> pa.RecordBatch:
    """``batch`` (rowid first) as ``schema`` (no rowid), or :class:`_TypeMismatchError`."""
    for i, expected in enumerate(fetched):
        actual = batch.schema.field(i).type
        if actual != expected:
            name = "rowid" if i == 0 else schema.field(i - 1).name
            raise _TypeMismatchError(f"column {name!r} arrived as {actual}, not {expected}")
    try:
        columns = [batch.column(i + 1).cast(schema.field(i).type) for i in range(len(schema))]
    except pa.ArrowInvalid as err:  # e.g. int64 -> int32 out of range (a safe cast)
        raise _TypeMismatchError(str(err)) from err
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _require_file(local: str) -> None:
    """Fail with one line when the database is not at ``local`` on this host."""
    if not os.path.isfile(local):
        raise FileNotFoundError(
            f"SQLite database {local} is not present on executor host "
            f"{socket.gethostname()}: the file must be at the same local path on every "
            "node (or convert it to Parquet first)"
        )


def _range_reader(
    read: SqliteRead,
) -> Callable[[Iterable[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The ``mapInArrow`` function: rowid-range numbers in, the ranges' rows out as Arrow."""

    def read_ranges(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        _require_file(read.local)
        for ids in batches:
            for number in ids.column(0).to_pylist():
                lo, hi = read.ranges[number]
                yield from range_batches(read, lo, hi)

    return read_ranges


def _write_range_task(
    read: SqliteRead, filesystem: pafs.FileSystem, folder: str, compression: str, number: int
) -> Tuple[int, int]:
    """The task of range ``number`` in :func:`write_sqlite_parquet`: (rows, files) written."""
    _require_file(read.local)
    return _write_part(read, number, filesystem, folder, compression, required=False)


def _write_part(
    read: SqliteRead,
    number: Optional[int],
    filesystem: pafs.FileSystem,
    folder: str,
    compression: str,
    required: bool,
) -> Tuple[int, int]:
    """Write range ``number`` (``None``: no rows, file 0) as ``part-<number:05d>.parquet``.

    Returns (rows, files): a range without rows writes no file unless ``required``. On local
    disk the file is written under a temporary name in ``folder`` and renamed into place; on
    other filesystems it is written to local scratch space and then uploaded in one piece.
    """
    import pyarrow.parquet as pq
    arrow_schema = arrow_schema_of(read.schema)
    name = f"part-{0 if number is None else number:05d}.parquet"
    target = f"{folder}/{name}"
    batches: Iterator[pa.RecordBatch] = iter(())
    if number is not None:
        lo, hi = read.ranges[number]
        batches = range_batches(read, lo, hi)
    local = isinstance(filesystem, pafs.LocalFileSystem)
    if local:
        os.makedirs(folder, exist_ok=True)
        scratch = os.path.join(folder, f".{name}.{uuid.uuid4().hex}.tmp")
    else:
        scratch = os.path.join(_scratch_dir(), f"segmentation-{uuid.uuid4().hex}-{name}")
    rows = 0
    try:
        try:
            with pq.ParquetWriter(scratch, arrow_schema, compression=compression) as writer:
                for group in _row_groups(batches):
                    writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
                    rows += group.num_rows
        except OSError as err:
            raise RuntimeError(
                f"writing {name} of SQLite table {read.table!r} to {_scratch_place(scratch)}: "
                f"{err}"
            ) from err
        if rows == 0 and not required:
            return 0, 0
        if local:
            os.replace(scratch, target)
        else:
            try:
                pafs.copy_files(
                    scratch, target, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=filesystem,
                )
            except OSError as err:
                raise RuntimeError(
                    f"writing {name} of SQLite table {read.table!r} to {target}: {err}"
                ) from err
        return rows, 1
    finally:
        if os.path.exists(scratch):
            os.remove(scratch)


def _row_groups(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    """``batches`` regrouped into tables of up to :data:`ROW_GROUP_ROWS` / ``ROW_GROUP_BYTES``."""
    buffered: List[pa.RecordBatch] = []
    rows = size = 0
    for batch in batches:
        if buffered and (
            rows + batch.num_rows > ROW_GROUP_ROWS or size + batch.nbytes > ROW_GROUP_BYTES
        ):
            yield pa.Table.from_batches(buffered)
            buffered, rows, size = [], 0, 0
        buffered.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
    if buffered:
        yield pa.Table.from_batches(buffered)


def _scratch_place(path: str) -> str:
    """The folder of a scratch file, for messages."""
    return os.path.dirname(path) or "."


def _scratch_dir() -> str:
    """A task's local scratch folder: Spark's local dir for Python workers, else the temp dir."""
    for folder in os.environ.get("SPARK_LOCAL_DIRS", "").split(","):
        if folder.strip() and os.path.isdir(folder.strip()):
            return folder.strip()
    return tempfile.gettempdir()


def _remove_temporaries(folder: str) -> None:
    """Delete what killed task attempts left in a local target folder (``.part-*.tmp``)."""
    for name in os.listdir(folder):
        if name.startswith(".part-") and name.endswith(".tmp"):
            with suppress(FileNotFoundError):  # a late attempt renamed it meanwhile
                os.remove(os.path.join(folder, name))
