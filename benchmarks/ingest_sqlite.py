"""Benchmark: SQLite -> Parquet through :func:`segmentation.sqlite.read_sqlite_table`.

Generates an Avito-shaped database (``segmentation.generate.generate_avito``), then for each
Avito table times the parallel ADBC read written to Parquet by Spark, and, for comparison, a
single-process ``sqlite3`` cursor loop (``fetchmany``) and a single-process ADBC fetch (no Spark)
over the same columns. Prints rows, seconds and rows/s per table and method.

Example::

    .venv/bin/python benchmarks/ingest_sqlite.py --searches 2000000 --workdir /tmp/ingest-bench
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys
import time
from typing import List, Optional, Tuple

from pyspark.sql.types import StructType

from segmentation.generate import generate_avito
from segmentation.schemas import AVITO_TABLES
from segmentation.session import build_session, configure_logging
from segmentation.sqlite import BATCH_ROWS, read_sqlite_table

log = logging.getLogger("benchmarks.ingest_sqlite")


def columns_sql(schema: StructType) -> str:
    return ", ".join('"' + f.name + '"' for f in schema.fields)


def sqlite3_loop(path: str, table: str, schema: StructType) -> Tuple[int, float]:
    """Rows and seconds of a plain sqlite3 cursor loop over the table's columns."""
    began = time.perf_counter()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    cur = con.execute(f'SELECT {columns_sql(schema)} FROM "{table}"')
    rows = 0
    while True:
        chunk = cur.fetchmany(BATCH_ROWS)
        if not chunk:
            break
        rows += len(chunk)
    con.close()
    return rows, time.perf_counter() - began


def adbc_single(path: str, table: str, schema: StructType) -> Tuple[int, float]:
    """Rows and seconds of one ADBC fetch of the table's columns into Arrow (no Spark)."""
    from adbc_driver_sqlite import dbapi

    began = time.perf_counter()
    rows = 0
    with dbapi.connect(f"file:{path}?mode=ro") as con, con.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cur.execute(f'SELECT {columns_sql(schema)} FROM "{table}"')
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
    return rows, time.perf_counter() - began


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=2_000_000, help="rows of SearchInfo")
    parser.add_argument("--users", type=int, default=None, help="default: searches / 20")
    parser.add_argument(
        "--partitions", type=int, default=None, help="rowid ranges per table (default: auto)"
    )
    parser.add_argument("--workdir", default="/tmp/ingest-sqlite-bench")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--reuse", action="store_true", help="reuse workdir/avito.sqlite if it exists"
    )
    args = parser.parse_args(argv)
    configure_logging()

    os.makedirs(args.workdir, exist_ok=True)
    db = os.path.abspath(os.path.join(args.workdir, "avito.sqlite"))
    if args.reuse and os.path.isfile(db):
        log.info("reusing %s", db)
    else:
        users = args.users or max(1, args.searches // 20)
        summary = generate_avito(out=db, users=users, searches=args.searches, seed=args.seed)
        log.info(
            "generated %s: %d searches, %d stream rows in %.1f s",
            db,
            summary.searches,
            summary.stream_rows,
            summary.seconds,
        )
    log.info("database size: %.1f MB", os.path.getsize(db) / 1e6)

    spark = build_session(
        "ingest-sqlite-benchmark", master=args.master, conf={"spark.ui.enabled": "false"}
    )
    spark.range(1).count()  # start the JVM side before timing
    results = []
    for table, schema in AVITO_TABLES.items():
        out = os.path.join(args.workdir, "parquet", table)
        began = time.perf_counter()
        df = read_sqlite_table(spark, db, table, schema, num_partitions=args.partitions)
        parts = df.rdd.getNumPartitions()
        df.write.mode("overwrite").parquet(out)
        seconds = time.perf_counter() - began
        rows = spark.read.parquet(out).count()
        loop_rows, loop_seconds = sqlite3_loop(db, table, schema)
        adbc_rows, adbc_seconds = adbc_single(db, table, schema)
        if not rows == loop_rows == adbc_rows:
            raise SystemExit(f"{table}: row counts differ: {rows}, {loop_rows}, {adbc_rows}")
        results.append((table, rows, parts, seconds, loop_seconds, adbc_seconds))
    spark.stop()

    print(f"\n{db} ({os.path.getsize(db) / 1e6:.0f} MB), Spark {args.master}")
    header = (
        f"{'table':<18} {'rows':>11} {'parts':>5} | {'spark+adbc->parquet':>22} | "
        f"{'sqlite3 fetchmany':>20} | {'adbc 1 process':>20}"
    )
    print(header)
    print("-" * len(header))
    for table, rows, parts, seconds, loop_seconds, adbc_seconds in results:
        print(
            f"{table:<18} {rows:>11,} {parts:>5} | {seconds:6.1f} s {rows / seconds:>10,.0f}/s | "
            f"{loop_seconds:5.1f} s {rows / loop_seconds:>9,.0f}/s | "
            f"{adbc_seconds:5.1f} s {rows / adbc_seconds:>9,.0f}/s"
        )
    total = sum(r[1] for r in results)
    spark_s = sum(r[3] for r in results)
    loop_s = sum(r[4] for r in results)
    print(
        f"{'total':<18} {total:>11,} {'':>5} | {spark_s:6.1f} s {total / spark_s:>10,.0f}/s | "
        f"{loop_s:5.1f} s {total / loop_s:>9,.0f}/s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
