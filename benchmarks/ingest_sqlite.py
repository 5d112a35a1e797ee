"""Benchmark: SQLite -> Parquet through :func:`segmentation.io.sqlite.read_sqlite_table`.

Generates an Avito-shaped database (``segmentation.generate.generate_avito``), then for each
Avito table times the parallel ADBC read written to Parquet by Spark, and, for comparison, a
single-process ``sqlite3`` cursor loop (``fetchmany``) and a single-process ADBC fetch (no Spark)
over the same columns. Prints rows, wall seconds and rows/s per table and method, and CPU
seconds (Spark: the JVM and its Python workers, read from /proc; the others: this process), so
that figures taken on a shared, busy machine can still be compared.

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
from typing import Dict, List, NamedTuple, Optional, Tuple

from pyspark.sql.types import StructType

from segmentation.generate import generate_avito
from segmentation.io.schemas import AVITO_TABLES
from segmentation.io.sqlite import BATCH_ROWS, read_sqlite_table
from segmentation.session import build_session, configure_logging

log = logging.getLogger("benchmarks.ingest_sqlite")


class Measure(NamedTuple):
    table: str
    rows: int
    parts: int
    spark: Tuple[float, float]  # wall seconds, CPU seconds
    loop: Tuple[float, float]
    adbc: Tuple[float, float]


def _cell(rows: int, run: Tuple[float, float]) -> str:
    wall, cpu = run
    return f"{wall:6.1f} s {rows / wall:>10,.0f}/s ({rows / cpu:>9,.0f})"


def columns_sql(schema: StructType) -> str:
    return ", ".join('"' + f.name + '"' for f in schema.fields)


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its live descendants (and their reaped children)."""
    if not os.path.isdir("/proc"):
        return float("nan")
    tick = os.sysconf("SC_CLK_TCK")
    stats: Dict[int, List[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    stats[int(entry)] = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: Dict[int, List[int]] = {}
    for child, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(child)
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        stat = stats.get(current)
        if stat is not None:  # utime, stime, cutime, cstime
            total += sum(int(value) for value in stat[11:15]) / tick
        stack.extend(children.get(current, []))
    return total


def sqlite3_loop(path: str, table: str, schema: StructType) -> Tuple[int, float, float]:
    """Rows, seconds and CPU seconds of a plain sqlite3 cursor loop over the table's columns."""
    cpu = time.process_time()
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
    return rows, time.perf_counter() - began, time.process_time() - cpu


def adbc_single(path: str, table: str, schema: StructType) -> Tuple[int, float, float]:
    """Rows, seconds and CPU seconds of one ADBC fetch of the columns into Arrow (no Spark)."""
    from adbc_driver_sqlite import dbapi

    cpu = time.process_time()
    began = time.perf_counter()
    rows = 0
    with dbapi.connect(f"file:{path}?mode=ro") as con, con.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)})
        cur.execute(f'SELECT {columns_sql(schema)} FROM "{table}"')
        for batch in cur.fetch_record_batch():
            rows += batch.num_rows
    return rows, time.perf_counter() - began, time.process_time() - cpu


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
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the untimed first read (JIT warm-up, Python worker start)",
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
    if not args.no_warmup:  # JIT-compile the Arrow -> row -> Parquet path, as a long ingest would
        warm = read_sqlite_table(spark, db, "SearchInfo", AVITO_TABLES["SearchInfo"])
        warm.write.mode("overwrite").parquet(os.path.join(args.workdir, "warmup"))
    jvm_pid = spark.sparkContext._jvm.ProcessHandle.current().pid()  # type: ignore[union-attr]
    results: List[Measure] = []
    for table, schema in AVITO_TABLES.items():
        out = os.path.join(args.workdir, "parquet", table)
        cpu = tree_cpu_seconds(jvm_pid)
        began = time.perf_counter()
        df = read_sqlite_table(spark, db, table, schema, num_partitions=args.partitions)
        parts = df.rdd.getNumPartitions()
        df.write.mode("overwrite").parquet(out)
        spark_run = (time.perf_counter() - began, tree_cpu_seconds(jvm_pid) - cpu)
        rows = spark.read.parquet(out).count()
        loop_rows, *loop_run = sqlite3_loop(db, table, schema)
        adbc_rows, *adbc_run = adbc_single(db, table, schema)
        if not rows == loop_rows == adbc_rows:
            raise SystemExit(f"{table}: row counts differ: {rows}, {loop_rows}, {adbc_rows}")
        results.append(
            Measure(
                table,
                rows,
                parts,
                spark_run,
                (loop_run[0], loop_run[1]),
                (adbc_run[0], adbc_run[1]),
            )
        )
    spark.stop()

    print(
        f"\n{db} ({os.path.getsize(db) / 1e6:.0f} MB), Spark {args.master}, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print("wall s, rows/s (rows per CPU second)")
    header = (
        f"{'table':<18} {'rows':>11} {'parts':>5} | {'spark+adbc -> parquet':^34} | "
        f"{'sqlite3 fetchmany':^34} | {'adbc, 1 process, no spark':^34}"
    )
    print(header)
    print("-" * len(header))
    for m in results:
        cells = [_cell(m.rows, run) for run in (m.spark, m.loop, m.adbc)]
        print(f"{m.table:<18} {m.rows:>11,} {m.parts:>5} | " + " | ".join(cells))
    total = sum(m.rows for m in results)
    sums = [
        (sum(getattr(m, name)[0] for m in results), sum(getattr(m, name)[1] for m in results))
        for name in ("spark", "loop", "adbc")
    ]
    print(f"{'total':<18} {total:>11,} {'':>5} | " + " | ".join(_cell(total, r) for r in sums))
    return 0


if __name__ == "__main__":
    sys.exit(main())
