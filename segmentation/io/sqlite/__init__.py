"""SQLite tables read in parallel rowid ranges: into Spark, or straight to Parquet.

- :mod:`~segmentation.io.sqlite.reader`: the plan (ranges, columns, SQL), the tasks' reads, the
  DataFrame (``mapInArrow``) and the tasks' own Parquet files; the type rules.
- :mod:`~segmentation.io.sqlite.pages`: a range decoded from the file's b-tree pages, the first
  reader of every range where the file allows it.
- :mod:`~segmentation.io.sqlite.kernels`: its numba-compiled loops (imported by tasks only).
"""

from segmentation.io.sqlite.reader import (
    ParquetWrite,
    SqliteRead,
    arrow_schema_of,
    plan_sqlite_read,
    range_batches,
    read_sqlite_table,
    split_rowid_range,
    sqlite_read_of,
    sqlite_table_names,
    write_ranges,
    write_sqlite_parquet,
)

__all__ = [
    "ParquetWrite",
    "SqliteRead",
    "arrow_schema_of",
    "plan_sqlite_read",
    "range_batches",
    "read_sqlite_table",
    "split_rowid_range",
    "sqlite_read_of",
    "sqlite_table_names",
    "write_ranges",
    "write_sqlite_parquet",
]
