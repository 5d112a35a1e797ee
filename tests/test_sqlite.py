"""Parallel SQLite reads (segmentation.io.sqlite) on tiny hand-built databases."""

from __future__ import annotations

import dataclasses
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import pytest
from pyspark.sql import Row, SparkSession
from pyspark.sql.types import (
    ByteType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    ShortType,
    StringType,
    StructField,
    StructType,
)
from pyspark.testing import assertDataFrameEqual

from segmentation.errors import InputError
from segmentation.io.schemas import AVITO_SEARCH_INFO, AVITO_SEARCH_STREAM
from segmentation.io.sqlite import (
    SqliteRead,
    arrow_schema_of,
    plan_sqlite_read,
    range_batches,
    read_sqlite_table,
    split_rowid_range,
    sqlite_table_names,
)

# The Kaggle dump's declarations.
STREAM_DDL = (
    "CREATE TABLE trainSearchStream (SearchID INTEGER, AdID INTEGER, Position INTEGER, "
    "ObjectType INTEGER, HistCTR REAL, IsClick INTEGER)"
)
INFO_DDL = (
    "CREATE TABLE SearchInfo (SearchID INTEGER, SearchDate TEXT, IPID INTEGER, UserID INTEGER, "
    "IsUserLoggedOn INTEGER, SearchQuery TEXT, LocationID INTEGER, CategoryID INTEGER, "
    "SearchParams TEXT)"
)

# rowid 1..9; rowids 1, 4 and 5 are deleted afterwards (gaps, and min(rowid) = 2).
STREAM_ROWS: List[Tuple[Any, ...]] = [
    (1, 101, 1, 3, 0.05, 0),
    (1, 102, 2, 1, None, None),
    (1, 103, 7, 3, 0.012, 1),
    (2, 101, 1, 2, None, None),
    (2, 104, 1, 3, 0.3, 0),
    (3, 105, 1, 3, 0.0001, 0),
    (3, 106, 6, 2, None, None),
    (4, 2**40, 1, 3, 0.25, 1),
    (5, 107, 1, 1, None, None),
]
STREAM_DELETED = (1, 4, 5)
STREAM_EXPECTED = [
    Row(SearchID=1, AdID=102, Position=2, ObjectType=1, HistCTR=None, IsClick=None),
    Row(SearchID=1, AdID=103, Position=7, ObjectType=3, HistCTR=0.012, IsClick=1),
    Row(SearchID=3, AdID=105, Position=1, ObjectType=3, HistCTR=0.0001, IsClick=0),
    Row(SearchID=3, AdID=106, Position=6, ObjectType=2, HistCTR=None, IsClick=None),
    Row(SearchID=4, AdID=2**40, Position=1, ObjectType=3, HistCTR=0.25, IsClick=1),
    Row(SearchID=5, AdID=107, Position=1, ObjectType=1, HistCTR=None, IsClick=None),
]

INFO_ROWS: List[Tuple[Any, ...]] = [
    (1, "2015-05-10 18:11:01.0", 11, 100, 1, "iphone", 3960, 22, "{83:'Обувь'}"),
    (2, "2015-05-11 09:00:00.0", 12, None, 0, None, None, None, None),
    (3, "2015-05-20 23:59:59.0", 13, 101, 0, "", 15, 43, None),
    (4, "2015-05-20 00:00:00.0", 14, 100, None, "кроссовки nike", 3960, 22, "{5:'Платья'}"),
]
INFO_EXPECTED = [Row(*row) for row in INFO_ROWS]


def make_db(path: Path, ddl: Sequence[str], inserts: Sequence[Tuple[str, List[Any]]]) -> str:
    con = sqlite3.connect(str(path))
    for statement in ddl:
        con.execute(statement)
    for table, rows in inserts:
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            con.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    con.commit()
    con.close()
    return str(path)


@pytest.fixture(scope="module")
def avito_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "database.sqlite"
    make_db(
        path,
        [
            STREAM_DDL,
            INFO_DDL,
            "CREATE TABLE AdsInfo (AdID INTEGER PRIMARY KEY AUTOINCREMENT, Title TEXT)",
            "CREATE VIEW Clicks AS SELECT * FROM trainSearchStream WHERE IsClick = 1",
            "CREATE TABLE Category (CategoryID INTEGER PRIMARY KEY, Level INTEGER) WITHOUT ROWID",
            "CREATE TABLE Empty (SearchID INTEGER, SearchDate TEXT)",
        ],
        [("trainSearchStream", STREAM_ROWS), ("SearchInfo", INFO_ROWS), ("AdsInfo", [(1, "x")])],
    )
    con = sqlite3.connect(str(path))
    con.executemany("DELETE FROM trainSearchStream WHERE rowid = ?", [(r,) for r in STREAM_DELETED])
    con.commit()
    con.close()
    return str(path)


# --- splitting --------------------------------------------------------------------------------


def test_split_rowid_range_covers_each_rowid_once() -> None:
    assert split_rowid_range(2, 9, 3) == [(2, 3), (4, 6), (7, 9)]
    assert split_rowid_range(5, 5, 1) == [(5, 5)]
    assert split_rowid_range(1, 3, 5) == [(1, 0), (1, 1), (2, 1), (2, 2), (3, 3)]
    ranges = split_rowid_range(-7, 10**9, 7)
    covered = [hi - lo + 1 for lo, hi in ranges]
    assert ranges[0][0] == -7 and ranges[-1][1] == 10**9
    assert all(b[0] == a[1] + 1 for a, b in zip(ranges, ranges[1:]))
    assert sum(covered) == 10**9 + 8 and max(covered) - min(covered) <= 1
    with pytest.raises(ValueError, match="parts must be at least 1"):
        split_rowid_range(1, 2, 0)


# --- reading ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("partitions", "batch_rows"), [(1, 65_536), (3, 1), (50, 2)], ids=["p1", "p3-b1", "p50-b2"]
)
def test_reads_both_avito_tables_in_rowid_order(
    spark: SparkSession, avito_db: str, partitions: int, batch_rows: int
) -> None:
    stream = read_sqlite_table(
        spark, avito_db, "trainSearchStream", AVITO_SEARCH_STREAM, partitions, batch_rows=batch_rows
    )
    assert stream.rdd.getNumPartitions() == partitions
    # Exactly one rowid range per partition, in order.
    surviving = [r for r in range(1, len(STREAM_ROWS) + 1) if r not in STREAM_DELETED]
    expected_sizes = [
        sum(lo <= r <= hi for r in surviving) for lo, hi in split_rowid_range(2, 9, partitions)
    ]
    assert stream.rdd.glom().map(len).collect() == expected_sizes
    assertDataFrameEqual(
        stream, spark.createDataFrame(STREAM_EXPECTED, AVITO_SEARCH_STREAM), checkRowOrder=True
    )
    info = read_sqlite_table(
        spark, avito_db, "SearchInfo", AVITO_SEARCH_INFO, partitions, batch_rows=batch_rows
    )
    assert info.rdd.getNumPartitions() == partitions
    assertDataFrameEqual(
        info, spark.createDataFrame(INFO_EXPECTED, AVITO_SEARCH_INFO), checkRowOrder=True
    )


def test_default_partitions_and_column_subset(spark: SparkSession, avito_db: str) -> None:
    schema = StructType(
        [StructField("histctr", DoubleType()), StructField("ADID", LongType())]
    )  # any case, any order, a subset
    tiny = read_sqlite_table(spark, avito_db, "TRAINSEARCHSTREAM", schema)
    assert tiny.rdd.getNumPartitions() == 1  # 8 rowids: far below MIN_ROWS_PER_PARTITION
    # rowid span 2..9 = 8 -> ceil(8 / 3) = 3 ranges.
    df = read_sqlite_table(spark, avito_db, "trainSearchStream", schema, rows_per_partition=3)
    assert df.rdd.getNumPartitions() == 3
    assert df.columns == ["histctr", "ADID"]
    assert [tuple(r) for r in df.collect()] == [(r.HistCTR, r.AdID) for r in STREAM_EXPECTED]


def test_empty_table_gives_empty_dataframe(spark: SparkSession, avito_db: str) -> None:
    schema = StructType(
        [StructField("SearchID", LongType()), StructField("SearchDate", StringType())]
    )
    df = read_sqlite_table(spark, avito_db, "Empty", schema)
    assert df.schema == schema
    assert df.count() == 0


def test_sqlite_table_names_lists_user_tables_only(avito_db: str) -> None:
    # No views (Clicks), no internal tables (sqlite_sequence from AUTOINCREMENT).
    assert sqlite_table_names(avito_db) == [
        "AdsInfo",
        "Category",
        "Empty",
        "SearchInfo",
        "trainSearchStream",
    ]
    assert sqlite_table_names("file://" + avito_db) == sqlite_table_names(avito_db)


# --- SQLite's per-value typing ---------------------------------------------------------------

# Columns declared without a type keep every value exactly as inserted. With batch_rows=2 the
# first ADBC batch of HistCTR and IsClick is all NULL (ADBC alone infers int64 from it and then
# fails on the REAL 0.5: "Type mismatch in column 4: expected INT64 but got DOUBLE").
LOOSE_STREAM: List[Tuple[Any, ...]] = [
    (1, 1, 1, 1, None, None),
    (1, 2, 2, 1, None, None),
    (1, 3, 3, 1, None, None),
    (2, 4, 1, 3, 0.5, 1),
    (2, 5, 2.0, 3, 1, 0),
    (2, 6, 3.7, 3, "0.0123", "1"),
    (3, "7", "abc", 3, "abc", "12abc"),
    (3, 8, 2**31, 3, b"\x00\x01", 2.5),
    (3, 2**62, -(2**31), 3, " 0.25 ", "1e0"),
    ("x", 9.5, "", 3, 1e300, 2**31),
]
LOOSE_STREAM_EXPECTED = [
    Row(SearchID=1, AdID=1, Position=1, ObjectType=1, HistCTR=None, IsClick=None),
    Row(SearchID=1, AdID=2, Position=2, ObjectType=1, HistCTR=None, IsClick=None),
    Row(SearchID=1, AdID=3, Position=3, ObjectType=1, HistCTR=None, IsClick=None),
    Row(SearchID=2, AdID=4, Position=1, ObjectType=3, HistCTR=0.5, IsClick=1),
    Row(SearchID=2, AdID=5, Position=2, ObjectType=3, HistCTR=1.0, IsClick=0),  # REAL 2.0 -> 2
    Row(SearchID=2, AdID=6, Position=None, ObjectType=3, HistCTR=0.0123, IsClick=1),  # 3.7
    Row(SearchID=3, AdID=7, Position=None, ObjectType=3, HistCTR=None, IsClick=None),  # texts
    Row(SearchID=3, AdID=8, Position=None, ObjectType=3, HistCTR=None, IsClick=None),  # 2**31
    Row(SearchID=3, AdID=2**62, Position=-(2**31), ObjectType=3, HistCTR=0.25, IsClick=1),
    Row(SearchID=None, AdID=None, Position=None, ObjectType=3, HistCTR=1e300, IsClick=None),
]

LOOSE_INFO: List[Tuple[Any, ...]] = [
    (None, None, 1, None, None, None, None, None, None),
    (None, None, 2, None, None, None, None, None, None),
    ("12", 20150510, 3, 1.0, "0", 7, None, None, b"blob"),
    (13, 1.5, 4, "100", 1, 2.25, None, None, "{}"),
]
LOOSE_INFO_EXPECTED = [
    (None, None, 1, None, None, None, None, None, None),
    (None, None, 2, None, None, None, None, None, None),
    (12, "20150510", 3, 1, 0, "7", None, None, None),
    (13, "1.5", 4, 100, 1, "2.25", None, None, "{}"),
]


@pytest.fixture(scope="module")
def loose_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "loose.sqlite"
    info_columns = ", ".join(f.name for f in AVITO_SEARCH_INFO.fields)
    return make_db(
        path,
        [
            "CREATE TABLE trainSearchStream (SearchID, AdID, Position, ObjectType, HistCTR, "
            "IsClick)",
            f"CREATE TABLE SearchInfo ({info_columns})",
            "CREATE TABLE Narrow (s, b, f, t)",
        ],
        [
            ("trainSearchStream", LOOSE_STREAM),
            ("SearchInfo", LOOSE_INFO),
            (
                "Narrow",
                [
                    (32767, 127, 0.1, 1),
                    (32768, -129, 1e300, "x"),
                    (-32768, -128, "2.5", 2.5),
                ],
            ),
        ],
    )


@pytest.mark.parametrize("partitions", [1, 4])
def test_mixed_storage_classes_follow_target_types(
    spark: SparkSession, loose_db: str, partitions: int
) -> None:
    stream = read_sqlite_table(
        spark, loose_db, "trainSearchStream", AVITO_SEARCH_STREAM, partitions, batch_rows=2
    )
    assertDataFrameEqual(
        stream,
        spark.createDataFrame(LOOSE_STREAM_EXPECTED, AVITO_SEARCH_STREAM),
        checkRowOrder=True,
    )
    info = read_sqlite_table(
        spark, loose_db, "SearchInfo", AVITO_SEARCH_INFO, partitions, batch_rows=2
    )
    assertDataFrameEqual(
        info, spark.createDataFrame(LOOSE_INFO_EXPECTED, AVITO_SEARCH_INFO), checkRowOrder=True
    )


def test_narrow_types_null_out_of_range_values(spark: SparkSession, loose_db: str) -> None:
    schema = StructType(
        [
            StructField("s", ShortType()),
            StructField("b", ByteType()),
            StructField("f", FloatType()),
            StructField("t", StringType()),
        ]
    )
    rows = read_sqlite_table(spark, loose_db, "Narrow", schema).collect()
    expected: List[Tuple[Optional[Any], ...]] = [
        (32767, 127, pytest.approx(0.1, rel=1e-7), "1"),
        (None, None, float("inf"), "x"),
        (-32768, -128, 2.5, "2.5"),
    ]
    assert [tuple(r) for r in rows] == expected


# --- errors ----------------------------------------------------------------------------------


def test_arrow_schema_is_pysparks() -> None:
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = StructType(
        [
            StructField(f"c{i}", t, nullable=bool(i % 2))
            for i, t in enumerate(
                [LongType(), IntegerType(), ShortType(), ByteType(), DoubleType(), FloatType(),
                 StringType()]
            )
        ]
    )
    nullable = StructType([StructField(f.name, f.dataType, True) for f in schema.fields])
    assert arrow_schema_of(schema) == to_arrow_schema(nullable)


def test_unsupported_target_type_is_refused(spark: SparkSession, avito_db: str) -> None:
    schema = StructType([StructField("SearchDate", DateType())])
    with pytest.raises(ValueError, match=r"'SearchDate'.*not date"):
        read_sqlite_table(spark, avito_db, "SearchInfo", schema)


@pytest.mark.parametrize(
    "uri", ["s3://bucket/avito/database.sqlite", "s3a://b/x.db", "hdfs:///data/x.db"]
)
def test_remote_uri_is_refused(spark: SparkSession, uri: str) -> None:
    with pytest.raises(InputError, match=r"is not a local file.*Parquet") as err:
        read_sqlite_table(spark, uri, "SearchInfo", AVITO_SEARCH_INFO)
    assert uri in str(err.value) and "\n" not in str(err.value)


def test_path_errors(spark: SparkSession, tmp_path: Path) -> None:
    missing = tmp_path / "nope.sqlite"
    with pytest.raises(InputError, match=re.escape(f"SQLite database {missing} does not exist")):
        read_sqlite_table(spark, str(missing), "SearchInfo", AVITO_SEARCH_INFO)
    with pytest.raises(InputError, match=re.escape(f"SQLite database {tmp_path} is not a file")):
        sqlite_table_names(str(tmp_path))
    text = tmp_path / "notes.sqlite"
    text.write_text("SearchID,SearchDate\n1,2015-05-10\n" * 200)
    with pytest.raises(InputError, match=re.escape(f"{text} is not a SQLite database")):
        read_sqlite_table(spark, str(text), "SearchInfo", AVITO_SEARCH_INFO)


def test_missing_table_lists_tables_present(spark: SparkSession, avito_db: str) -> None:
    with pytest.raises(InputError) as err:
        read_sqlite_table(spark, avito_db, "testSearchStream", AVITO_SEARCH_STREAM)
    assert str(err.value) == (
        f"SQLite database {avito_db} has no table 'testSearchStream' (tables present: AdsInfo, "
        "Category, Empty, SearchInfo, trainSearchStream)"
    )
    with pytest.raises(InputError, match="has no table 'Clicks'"):  # a view
        read_sqlite_table(spark, avito_db, "Clicks", AVITO_SEARCH_STREAM)


def test_missing_columns_are_named(spark: SparkSession, avito_db: str) -> None:
    with pytest.raises(InputError) as err:
        read_sqlite_table(spark, avito_db, "AdsInfo", AVITO_SEARCH_STREAM)
    assert str(err.value) == (
        f"SQLite table 'AdsInfo' in {avito_db} lacks column(s) SearchID, Position, ObjectType, "
        "HistCTR, IsClick (it has: AdID, Title)"
    )


def test_without_rowid_table_is_refused(spark: SparkSession, avito_db: str) -> None:
    schema = StructType([StructField("CategoryID", LongType())])
    with pytest.raises(InputError, match=r"'Category' .* is a WITHOUT ROWID table"):
        read_sqlite_table(spark, avito_db, "Category", schema)


# --- optimistic plain SELECT, resumed with the converting query -------------------------------

# Values of other storage classes only from rowid 5 on. Untyped columns (n, i_in_real, k) keep
# every value's class as inserted; declared ones convert on insert what their affinity allows
# (r REAL keeps 'x', t TEXT keeps the BLOB, narrow INTEGER keeps 2**31). With batch_rows=2 the
# batches are [sentinel, 1], [2, 3], [4, 5]...: the first two read plainly, then rowid 5's 2**31
# fails the safe cast to int32.
LATE_DDL = "CREATE TABLE Late (n, narrow INTEGER, i_in_real, r REAL, t TEXT, k)"
LATE_ROWS: List[Tuple[Any, ...]] = [
    (1, 1, 0.5, 0.25, "a", 10),
    (2, 2, 1.5, 0.5, "b", 20),
    (3, 3, 2.5, 0.75, "c", 30),
    (4, 4, 3.5, 1.0, "d", 40),
    (5, 2**31, 4, 1.25, "e", 50),  # out of int32 range; INTEGER for a DoubleType
    (6, -(2**31), 2**53 + 1, "x", "f", 60),  # INTEGER beyond 2**53; TEXT for a FloatType
    (7.5, 7, None, 0.5, "g", 70),  # REAL for a LongType
    ("8", 8, None, None, b"\x00", "8x"),  # TEXT whole number; BLOB for a StringType; TEXT
    (9, None, None, None, None, 9.0),  # REAL whole number for a LongType
]
LATE_SCHEMA = StructType(
    [
        StructField("n", LongType()),
        StructField("narrow", IntegerType()),
        StructField("i_in_real", DoubleType()),
        StructField("r", FloatType()),
        StructField("t", StringType()),
        StructField("k", LongType()),
    ]
)
LATE_EXPECTED: List[Tuple[Any, ...]] = [
    (1, 1, 0.5, 0.25, "a", 10),
    (2, 2, 1.5, 0.5, "b", 20),
    (3, 3, 2.5, 0.75, "c", 30),
    (4, 4, 3.5, 1.0, "d", 40),
    (5, None, 4.0, 1.25, "e", 50),
    (6, -(2**31), 9007199254740992.0, None, "f", 60),  # 2**53 + 1 rounds to even
    (None, 7, None, 0.5, "g", 70),
    (8, 8, None, None, None, None),
    (9, None, None, None, None, 9),
]
# Read plainly throughout: ADBC converts an INTEGER in a double column itself, as CAST does.
CLEAN_ROWS = [(i, i / 4, str(i)) for i in range(1, 7)] + [(7, 2**53 + 1, "7"), (8, 3, "8")]
CLEAN_EXPECTED = [(i, i / 4, str(i)) for i in range(1, 7)] + [
    (7, 9007199254740992.0, "7"),
    (8, 3.0, "8"),
]


@pytest.fixture(scope="module")
def late_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "late.sqlite"
    return make_db(
        path,
        [
            LATE_DDL,
            "CREATE TABLE Texts (t, n INTEGER)",
            "CREATE TABLE Clean (a INTEGER, b, c TEXT)",
        ],
        [
            ("Late", LATE_ROWS),
            # REAL and INTEGER in a TEXT target within the first batch: SQLite's printing, not
            # ADBC's ("%e" for a REAL that starts out a string column's first batch).
            (
                "Texts",
                [
                    ("a", "abc"),
                    (3.0, 5),
                    (1e30, 2.5),
                    (7, b"\x02"),
                    (b"\x01", None),
                    (None, "12"),
                    ("", ""),
                    (b"", b""),
                ],
            ),
            ("Clean", CLEAN_ROWS),
        ],
    )


def arrow_rows(read: SqliteRead) -> List[Tuple[Any, ...]]:
    """Every row of every range of ``read`` through :func:`range_batches`, in order."""
    rows: List[Tuple[Any, ...]] = []
    for lo, hi in read.ranges:
        for batch in range_batches(read, lo, hi):
            rows += [tuple(r.values()) for r in batch.to_pylist()]
    return rows


def converting_only(read: SqliteRead) -> SqliteRead:
    """The same plan reading everything with the converting query (the reference semantics)."""
    return dataclasses.replace(read, plain_sql=read.converting_sql, columns=None)


@pytest.mark.parametrize(
    ("partitions", "batch_rows"), [(1, 2), (1, 1), (1, 65_536), (3, 2), (9, 1)]
)
def test_late_mismatches_resume_with_the_converting_query(
    spark: SparkSession,
    late_db: str,
    partitions: int,
    batch_rows: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, partitions, batch_rows=batch_rows)
    with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
        rows = arrow_rows(read)
    reference = arrow_rows(converting_only(read))
    # FloatType: single precision (all values here are exact in it).
    assert rows == reference == LATE_EXPECTED
    assert any("with the converting query" in r.getMessage() for r in caplog.records)


def test_resume_starts_after_the_last_row_passed_on(
    spark: SparkSession, late_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    read = plan_sqlite_read(
        spark, late_db, "Late", LATE_SCHEMA, 1, batch_rows=2, decode_pages=False
    )
    with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
        assert len(arrow_rows(read)) == 9
    # Batches: [sentinel, 1], [2, 3], [4, 5]: rowid 5 holds 2**31 for IntegerType (the safe cast
    # fails), so rows 1..3 came from the plain query and 4..9 from the converting one.
    [message] = [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]
    assert message.startswith("SQLite table Late, rowid 1..9: ")
    assert "not in range" in message  # pyarrow's safe-cast error
    assert message.endswith("reading rowid 4..9 with the converting query")


@pytest.mark.parametrize("decode_pages", [True, False])
def test_clean_ranges_never_fall_back(
    spark: SparkSession, late_db: str, caplog: pytest.LogCaptureFixture, decode_pages: bool
) -> None:
    schema = StructType(
        [
            StructField("a", IntegerType()),
            StructField("b", DoubleType()),
            StructField("c", StringType()),
        ]
    )
    read = plan_sqlite_read(
        spark, late_db, "Clean", schema, 2, batch_rows=2, decode_pages=decode_pages
    )
    assert (read.columns is not None) == decode_pages
    with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
        rows = arrow_rows(read)
    assert rows == arrow_rows(converting_only(read)) == CLEAN_EXPECTED
    assert not [r for r in caplog.records if "query" in r.getMessage()]


@pytest.mark.parametrize("batch_rows", [1, 2, 65_536])
def test_text_targets_print_numbers_as_sqlite_does(
    spark: SparkSession, late_db: str, batch_rows: int
) -> None:
    # t is untyped; n INTEGER applies NUMERIC affinity on insert ('12' is stored as 12) and in
    # the comparison with x'' (which leaves the BLOB literal as it is).
    schema = StructType([StructField("t", StringType()), StructField("n", StringType())])
    read = plan_sqlite_read(spark, late_db, "Texts", schema, 1, batch_rows=batch_rows)
    expected = [
        ("a", "abc"),
        ("3.0", "5"),
        ("1.0e+30", "2.5"),
        ("7", None),
        (None, None),
        (None, "12"),
        ("", ""),
        (None, None),
    ]
    assert arrow_rows(read) == arrow_rows(converting_only(read)) == expected


def test_late_mismatches_through_spark(spark: SparkSession, late_db: str) -> None:
    df = read_sqlite_table(spark, late_db, "Late", LATE_SCHEMA, 2, batch_rows=2)
    assert df.schema == LATE_SCHEMA
    assert [tuple(r) for r in df.collect()] == LATE_EXPECTED


def test_other_errors_do_not_fall_back(
    spark: SparkSession, late_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adbc_driver_sqlite import dbapi

    calls: List[str] = []

    def failing_connect(*args: Any, **kwargs: Any) -> Any:
        calls.append(str(args[0]))
        raise OSError("disk I/O error")

    monkeypatch.setattr(dbapi, "connect", failing_connect)
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 1, decode_pages=False)
    with pytest.raises(RuntimeError) as err:
        list(range_batches(read, 1, 9))
    assert str(err.value) == f"reading SQLite table 'Late' of {late_db}, rowid 1..9: disk I/O error"
    assert len(calls) == 1  # no second (converting) attempt


def test_plain_query_reads_stored_columns(spark: SparkSession, late_db: str) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 1)
    assert read.plain_sql == (
        "SELECT 0 AS r, 0 AS c0, 0 AS c1, 0.0 AS c2, 0.0 AS c3, '' AS c4, 0 AS c5 UNION ALL "
        'SELECT rowid, "n" AS c0, "narrow" AS c1, "i_in_real" AS c2, "r" AS c3, '
        """CASE WHEN "t" < x'' THEN CAST("t" AS TEXT) END AS c4, "k" AS c5 FROM "Late" """
        "WHERE rowid BETWEEN"
    )
    assert read.ranges == ((1, 9),)


def test_each_way_a_mismatch_shows_up_is_caught(
    spark: SparkSession, late_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    def fallbacks(partitions: int, batch_rows: int) -> List[str]:
        read = plan_sqlite_read(
            spark, late_db, "Late", LATE_SCHEMA, partitions, batch_rows=batch_rows,
            decode_pages=False,
        )
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="segmentation.io.sqlite"):
            assert arrow_rows(read) == LATE_EXPECTED
        return [r.getMessage() for r in caplog.records if "converting" in r.getMessage()]

    # One row per range, one row per batch: a later batch meets ADBC's type check, or the cast.
    single = fallbacks(9, 1)
    assert [m.split(":")[0] for m in single] == [
        f"SQLite table Late, rowid {r}..{r}" for r in (5, 6, 7, 8, 9)
    ]
    assert "not in range" in single[0]  # rowid 5: 2**31 for IntegerType (the safe cast)
    assert "Type mismatch in column 4: expected DOUBLE" in single[1]  # rowid 6: 'x' (r is c3)
    assert "Type mismatch in column 1: expected INT64 but got DOUBLE" in single[2]  # 7.5
    assert "Type mismatch in column 1: expected INT64 but got STRING" in single[3]  # '8'
    assert "Type mismatch in column 6: expected INT64 but got DOUBLE" in single[4]  # 9.0
    # Everything in the first batch: ADBC widens the column's type instead of failing.
    [whole] = fallbacks(1, 65_536)
    assert "column 'n' arrived as string, not int64" in whole
    assert whole.endswith("reading rowid 1..9 with the converting query")
