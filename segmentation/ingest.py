"""``segmentation ingest``: source tables to Parquet, read in parallel.

SQLite tables are read in rowid ranges by every executor at once (ADBC into Arrow inside
``mapInArrow``, see :mod:`segmentation.io.sqlite`); CSV/TSV through Spark's reader. The Parquet
keeps the source's table and column names, so the features job reads it like the original:
``OUTPUT/tables/trainSearchStream/``, ``OUTPUT/tables/SearchInfo/`` for Avito,
``OUTPUT/tables/invoices/`` for retail, ``OUTPUT/tables/events/`` for event logs.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, Optional

from pyspark.sql import SparkSession

from segmentation.layout import OutputLayout
from segmentation.manifest import RunManifest
from segmentation.sources import FeatureOptions, get_source

log = logging.getLogger(__name__)


def ingest_stage(
    spark: SparkSession,
    source: str,
    path: str,
    fmt: str,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
    sqlite_partitions: Optional[int] = None,
) -> Dict[str, Dict[str, float]]:
    """Write each table of the source to ``OUTPUT/tables/<table>/``; report rows and rows/s."""
    layout = OutputLayout(spark, output, "ingest")
    layout.check(overwrite)
    options = FeatureOptions(
        source=source, input=path, input_format=fmt, sqlite_partitions=sqlite_partitions
    )
    tables = get_source(source).ingest_tables(spark, options)
    layout.clear()
    report: Dict[str, Dict[str, float]] = {}
    for name, table in tables.items():
        target = layout.path("tables", name)
        started = time.monotonic()
        with manifest.stage(f"ingest_{name}"):
            table.write.mode("overwrite").parquet(target)
        seconds = time.monotonic() - started
        rows = spark.read.parquet(target).count()  # from Parquet footers: cheap
        report[name] = {
            "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds > 0 else 0,
            "partitions": table.rdd.getNumPartitions(),
        }
        log.info(
            "%s: %s rows in %.1f s (%s rows/s, %d partitions)", name, f"{rows:,}", seconds,
            f"{report[name]['rows_per_second']:,.0f}", report[name]["partitions"],
        )
    manifest.set("source", source)
    manifest.set("inputs", [{"path": path, "format": fmt}])
    manifest.set("tables", report)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return report
