"""``segmentation ingest`` of SQLite: Parquet written by the tasks themselves, on disk and on S3."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import test_s3
from outputs import published
from pyarrow import fs as pafs
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import LongType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual
from test_s3 import BUCKET, S3Server, run_prefix
from test_sqlite import LATE_DDL, LATE_EXPECTED, LATE_ROWS, LATE_SCHEMA, make_db

import segmentation.ingest
from segmentation.cli import main
from segmentation.generate import generate_avito
from segmentation.ingest import arrow_destination, s3_options
from segmentation.io import s3
from segmentation.io.schemas import AVITO_TABLES
from segmentation.io.sqlite import (
    ParquetWrite,
    plan_sqlite_read,
    read_sqlite_table,
    split_rowid_range,
    sqlite_read_of,
    write_ranges,
    write_sqlite_parquet,
)
from segmentation.io.sqlite import reader as sqlite_io

server = test_s3.server  # moto with IAM authentication, and the AWS environment pointing at it


@pytest.fixture(scope="module")
def avito_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("direct") / "database.sqlite"
    generate_avito(str(path), users=150, searches=1500, fmt="sqlite", seed=5)
    return path


@pytest.fixture(scope="module")
def late_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("direct") / "late.sqlite"
    return make_db(
        path,
        [LATE_DDL, "CREATE TABLE Empty (SearchID INTEGER, SearchDate TEXT)"],
        [("Late", LATE_ROWS)],
    )


def part_rows(folder: Path) -> List[Tuple[Any, ...]]:
    """The rows of ``folder``'s ``part-*.parquet`` files, file by file in name order."""
    rows: List[Tuple[Any, ...]] = []
    for part in sorted(folder.glob("part-*.parquet")):
        rows += [tuple(r.values()) for r in pq.read_table(part).to_pylist()]
    return rows


# ------------------------------------------------------------------------------ local disk


def test_direct_ingest_equals_the_spark_writer(
    spark: SparkSession, avito_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, by_spark = tmp_path / "direct", tmp_path / "spark"
    common = ["ingest", "--source", "avito", "--input", str(avito_db), "--sqlite-partitions", "3"]
    assert main([*common, "--output", str(direct)]) == 0
    with monkeypatch.context() as patch:  # no pyarrow target: Spark's writer, as before
        patch.setattr(segmentation.ingest, "arrow_destination", lambda spark, path: None)
        assert main([*common, "--output", str(by_spark)]) == 0

    manifests = [
        json.loads((published(out) / "manifest.json").read_text()) for out in (direct, by_spark)
    ]
    with sqlite3.connect(avito_db) as con:
        counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in AVITO_TABLES}
    for name, schema in AVITO_TABLES.items():
        for manifest in manifests:
            assert manifest["tables"][name]["rows"] == counts[name]
            assert manifest["tables"][name]["partitions"] == 3
            assert manifest["tables"][name]["rows_per_second"] > 0
        folder = published(direct) / "tables" / name
        assert sorted(p.name for p in folder.iterdir()) == [
            "_SUCCESS", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet",
        ]
        assert pq.read_schema(folder / "part-00000.parquet").remove_metadata() == (
            to_arrow_schema(schema)
        )
        ours = spark.read.parquet(str(folder))
        theirs = spark.read.parquet(str(published(by_spark) / "tables" / name))
        assert ours.schema == theirs.schema == schema
        assertDataFrameEqual(ours, theirs)
        # The files hold the rowid ranges in order: together, the table in rowid order.
        table = read_sqlite_table(spark, str(avito_db), name, schema, 3)
        assert part_rows(folder) == [tuple(r) for r in table.collect()]


def test_mixed_storage_classes_written_directly(
    spark: SparkSession, late_db: str, tmp_path: Path
) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 2, batch_rows=2)
    written = write_sqlite_parquet(spark, read, pafs.LocalFileSystem(), str(tmp_path / "late"))
    assert written == ParquetWrite(rows=9, files=2, partitions=2)
    assert part_rows(tmp_path / "late") == LATE_EXPECTED
    assert spark.read.parquet(str(tmp_path / "late")).schema == LATE_SCHEMA


def test_a_retried_range_leaves_one_file(spark: SparkSession, late_db: str, tmp_path: Path) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 2)
    folder = tmp_path / "retried"
    local = pafs.LocalFileSystem()
    for _ in range(2):  # a retry, or a speculative copy, of range 1 (rowid 5..9)
        assert sqlite_io._write_range_task(read, local, str(folder), "snappy", 1) == (5, 1)
        assert [p.name for p in folder.iterdir()] == ["part-00001.parquet"]
        assert part_rows(folder) == LATE_EXPECTED[4:]
    # What a killed attempt left behind is removed once the table is written.
    (folder / ".part-00000.parquet.0123abcd.tmp").write_bytes(b"half a file")
    assert write_sqlite_parquet(spark, read, local, str(folder)).rows == 9
    assert sorted(p.name for p in folder.iterdir()) == [
        "_SUCCESS", "part-00000.parquet", "part-00001.parquet",
    ]
    assert part_rows(folder) == LATE_EXPECTED


REAL_RANGE_BATCHES = sqlite_io.range_batches


def failing_after_one_batch(read: Any, lo: int, hi: int) -> Iterator[pa.RecordBatch]:
    """:func:`range_batches` that fails after its first batch (an I/O error mid-range)."""
    batches = REAL_RANGE_BATCHES(read, lo, hi)
    yield next(batches)
    raise RuntimeError(f"reading SQLite table 'Late' of x, rowid {lo}..{hi}: disk I/O error")


def test_a_failed_attempt_leaves_nothing(
    spark: SparkSession, late_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 1, batch_rows=2)
    monkeypatch.setattr(sqlite_io, "range_batches", failing_after_one_batch)
    folder = tmp_path / "failed"
    with pytest.raises(RuntimeError, match=r"^reading SQLite table 'Late' of x, rowid 1\.\.9: "):
        sqlite_io._write_range_task(read, pafs.LocalFileSystem(), str(folder), "snappy", 0)
    assert list(folder.iterdir()) == []  # neither the part file nor its temporary


def test_missing_database_on_an_executor_is_one_line(
    spark: SparkSession, late_db: str, tmp_path: Path
) -> None:
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 1)
    moved = dataclasses.replace(read, local=str(tmp_path / "gone.sqlite"))
    with pytest.raises(FileNotFoundError) as err:
        sqlite_io._write_range_task(moved, pafs.LocalFileSystem(), str(tmp_path), "snappy", 0)
    assert str(err.value).startswith(
        f"SQLite database {tmp_path / 'gone.sqlite'} is not present on executor host "
    )
    assert "\n" not in str(err.value)


def test_empty_table_writes_one_empty_file_as_before(
    spark: SparkSession, late_db: str, tmp_path: Path
) -> None:
    schema = StructType(
        [StructField("SearchID", LongType()), StructField("SearchDate", StringType())]
    )
    df = read_sqlite_table(spark, late_db, "Empty", schema)
    read = sqlite_read_of(df)
    assert read is not None and read.ranges == ()
    written = write_sqlite_parquet(spark, read, pafs.LocalFileSystem(), str(tmp_path / "direct"))
    assert written == ParquetWrite(rows=0, files=1, partitions=1)
    assert sorted(p.name for p in (tmp_path / "direct").iterdir()) == [
        "_SUCCESS", "part-00000.parquet",
    ]
    assert pq.read_metadata(tmp_path / "direct" / "part-00000.parquet").num_rows == 0
    df.write.parquet(str(tmp_path / "spark"))  # what ingest wrote before: one empty part file too
    for out in ("direct", "spark"):
        back = spark.read.parquet(str(tmp_path / out))
        assert (back.schema, back.count()) == (schema, 0)
        parts = [p for p in (tmp_path / out).iterdir() if p.name.startswith("part-")]
        assert len(parts) == 1


def test_only_the_dataframe_as_read_has_a_plan(spark: SparkSession, late_db: str) -> None:
    df = read_sqlite_table(spark, late_db, "Late", LATE_SCHEMA, 2)
    read = sqlite_read_of(df)
    assert read is not None and read.table == "Late" and read.ranges == ((1, 4), (5, 9))
    assert sqlite_read_of(df.select("n")) is None
    assert sqlite_read_of(spark.range(1)) is None


def test_write_ranges_fill_the_cores_unless_partitions_were_requested(
    spark: SparkSession, late_db: str
) -> None:
    default = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA)
    assert default.requested_partitions is None and default.ranges == ((1, 9),)
    assert write_ranges(default, 2) == ((1, 9),)  # below MIN_ROWS_PER_PARTITION: one range

    def spanning(lo: int, hi: int) -> Any:
        return dataclasses.replace(default, ranges=tuple(split_rowid_range(lo, hi, 7)))

    # 10.1 M rowids on 2 cores: one range per core (not the 6 of 2 M rows each).
    assert write_ranges(spanning(1, 10_100_551), 2) == ((1, 5_050_275), (5_050_276, 10_100_551))
    # 25 M rowids: two waves of 2 keep ranges within WRITE_ROWS_PER_TASK (10 M).
    assert write_ranges(spanning(1, 25_000_000), 2) == (
        (1, 6_250_000), (6_250_001, 12_500_000), (12_500_001, 18_750_000),
        (18_750_001, 25_000_000),
    )
    # 150,000 rowids on 4 cores: no range under 100,000 rowids, so one.
    assert write_ranges(spanning(1, 150_000), 4) == ((1, 150_000),)
    # --sqlite-partitions 3: kept as asked.
    requested = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 3)
    assert requested.requested_partitions == 3
    assert write_ranges(requested, 2) == requested.ranges == ((1, 3), (4, 6), (7, 9))


def test_arrow_destination_by_scheme(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = arrow_destination(spark, str(tmp_path / "out"))
    assert local is not None and isinstance(local[0], pafs.LocalFileSystem)
    assert local[1] == str(tmp_path / "out")
    for uri in (f"file://{tmp_path}/out", f"file:{tmp_path}/out"):
        found = arrow_destination(spark, uri)
        assert found is not None and found[1] == str(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    relative = arrow_destination(spark, "rel/out")
    assert relative is not None and relative[1] == str(tmp_path / "rel" / "out")
    assert arrow_destination(spark, "hdfs://namenode:8020/out") is None
    # On EMR, s3:// is EMRFS (the cluster's encryption settings): Spark writes it.
    monkeypatch.setattr(s3, "on_emr", lambda: True)
    assert arrow_destination(spark, "s3://bucket/out") is None
    assert arrow_destination(spark, str(tmp_path / "out")) is not None


# ------------------------------------------------------------------------------ S3 settings


def test_s3_options_for_a_local_server() -> None:
    options, described = s3_options(
        {
            "endpoint": "http://127.0.0.1:9000", "path.style.access": "true",
            "access.key": "AKIAEXAMPLE", "secret.key": "s3cr3t/key", "session.token": "tok",
            "connection.establish.timeout": "2000", "connection.timeout": "10s",
            "attempts.maximum": "1",
        },
        {"AWS_REGION": "eu-west-3"},
    )
    retry = options.pop("retry_strategy")
    assert isinstance(retry, pafs.AwsStandardS3RetryStrategy) and retry.max_attempts == 1
    assert options == {
        "access_key": "AKIAEXAMPLE", "secret_key": "s3cr3t/key", "session_token": "tok",
        "endpoint_override": "127.0.0.1:9000", "scheme": "http", "region": "eu-west-3",
        "connect_timeout": 2.0, "request_timeout": 10.0,
    }
    assert described == "endpoint http://127.0.0.1:9000, credentials from access keys"


@pytest.mark.parametrize(
    ("settings", "environ", "expected", "described"),
    [
        ({}, {}, {}, "endpoint AWS, credentials from the AWS default chain"),
        ({"endpoint": "s3.amazonaws.com"}, {"AWS_REGION": "eu-west-1"}, {},
         "endpoint AWS, credentials from the AWS default chain"),
        ({"endpoint": "s3.eu-central-1.amazonaws.com"}, {}, {"region": "eu-central-1"},
         "endpoint AWS, credentials from the AWS default chain"),
        ({"endpoint": "s3.amazonaws.com", "endpoint.region": "ap-south-1",
          "path.style.access": "true"}, {},
         {"region": "ap-south-1", "endpoint_override": "s3.amazonaws.com", "scheme": "https"},
         "endpoint AWS, credentials from the AWS default chain"),
        ({"endpoint": "minio:9000", "connection.ssl.enabled": "false",
          "path.style.access": "false", "access.key": "a"}, {},
         {"endpoint_override": "minio:9000", "scheme": "http", "force_virtual_addressing": True,
          "region": "us-east-1"},
         "endpoint http://minio:9000, credentials from the AWS default chain"),
        ({"aws.credentials.provider": "org.apache.hadoop.fs.s3a.AnonymousAWSCredentialsProvider",
          "endpoint": "https://storage.example.com"}, {"AWS_DEFAULT_REGION": "x-1"},
         {"anonymous": True, "endpoint_override": "storage.example.com", "scheme": "https",
          "region": "x-1"},
         "endpoint https://storage.example.com, credentials from none (anonymous)"),
    ],
    ids=["nothing", "global-endpoint", "regional-endpoint", "path-style-aws", "minio", "anonymous"],
)
def test_s3_options(
    settings: Any, environ: Any, expected: Any, described: str
) -> None:
    assert s3_options(settings, environ) == (expected, described)


# ------------------------------------------------------------------------------ S3 (moto)


def test_direct_ingest_to_s3(
    server: S3Server, spark: SparkSession, avito_db: Path, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Spark's own s3a:// reads below cache a filesystem with this server's endpoint: have the
    # fixture's teardown (configure_s3) close it, or the next module's server is not reached.
    s3.remember_bucket(f"s3a://{BUCKET}/")
    local = tmp_path / "local"
    assert main(["ingest", "--source", "avito", "--input", str(avito_db), "--output", str(local),
                 "--sqlite-partitions", "2"]) == 0
    with caplog.at_level(logging.INFO):
        assert main(["ingest", "--source", "avito", "--input", str(avito_db),
                     "--output", f"s3://{BUCKET}/direct", "--sqlite-partitions", "2"]) == 0
    assert (
        f"written to s3://{BUCKET} by the tasks with pyarrow (endpoint {server.endpoint}, "
        "credentials from access keys, region us-east-1)"
    ) in caplog.text
    assert server.secret_key not in caplog.text and server.access_key not in caplog.text
    run = run_prefix(server, "direct")
    assert server.keys(f"{run}tables/") == sorted(
        f"{run}tables/{name}/{file}" for name in AVITO_TABLES
        for file in ("_SUCCESS", "part-00000.parquet", "part-00001.parquet")
    )
    manifest = server.read(f"{run}manifest.json")
    assert server.secret_key.encode() not in manifest
    local_manifest = json.loads((published(local) / "manifest.json").read_text())
    for name in AVITO_TABLES:
        assert json.loads(manifest)["tables"][name]["rows"] == (
            local_manifest["tables"][name]["rows"]
        )
        assertDataFrameEqual(
            spark.read.parquet(f"s3a://{BUCKET}/{run}tables/{name}"),
            spark.read.parquet(str(published(local) / "tables" / name)),
        )


def test_s3a_target_and_a_failed_upload_leaves_no_object(
    server: S3Server, spark: SparkSession, late_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s3.remember_bucket(f"s3a://{BUCKET}/")  # see test_direct_ingest_to_s3
    destination = arrow_destination(spark, f"s3a://{BUCKET}/direct-late/")
    assert destination is not None
    filesystem, folder = destination
    assert isinstance(filesystem, pafs.S3FileSystem) and folder == f"{BUCKET}/direct-late"
    read = plan_sqlite_read(spark, late_db, "Late", LATE_SCHEMA, 2, batch_rows=2)
    assert write_sqlite_parquet(spark, read, filesystem, folder).rows == 9
    assert server.keys("direct-late/") == [
        "direct-late/_SUCCESS", "direct-late/part-00000.parquet", "direct-late/part-00001.parquet",
    ]
    rows = [
        tuple(r.values())
        for part in ("part-00000.parquet", "part-00001.parquet")
        for r in pq.read_table(f"{folder}/{part}", filesystem=filesystem).to_pylist()
    ]
    assert rows == LATE_EXPECTED
    assert spark.read.parquet(f"s3a://{BUCKET}/direct-late").count() == 9
    # A range failing mid-way: nothing is uploaded (the file is written locally first).
    monkeypatch.setattr(sqlite_io, "range_batches", failing_after_one_batch)
    with pytest.raises(RuntimeError, match="disk I/O error"):
        sqlite_io._write_range_task(read, filesystem, f"{BUCKET}/direct-failed", "snappy", 0)
    assert server.keys("direct-failed/") == []
