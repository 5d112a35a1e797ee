"""Segment migration: who moved from each segment of one run to each segment of another.

:func:`migration` joins two runs' assignments on ``customer_id`` (a full outer join, so
customers present in only one run are counted too) and counts customers per (from, to) pair in
one ``groupBy``. Customers only in the later run come ``from`` :data:`NEW`; customers only in the
earlier run go ``to`` :data:`LOST`. ``share`` is the pair's share of its ``from`` row (each row
of the matrix sums to 1).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.sources.common import Transform

#: ``from_segment`` of customers that only the later run has.
NEW = "(new)"
#: ``to_segment`` of customers that only the earlier run has.
LOST = "(lost)"


def _segments(assignments: DataFrame, by: str, what: str) -> DataFrame:
    missing = [c for c in ("customer_id", by) if c not in assignments.columns]
    if missing:
        raise InputError(
            f"{what} assignments lack column(s) {', '.join(missing)}; "
            f"it has: {', '.join(assignments.columns)}"
        )
    return assignments.select("customer_id", F.col(by).cast("string").alias(by))


def migration(earlier: DataFrame, by: str = "segment") -> Transform:
    """Count customers per (segment in ``earlier``, segment in the later assignments).

    Apply to the later run's assignments: ``later.transform(migration(earlier, "segment"))``.

    Parameters
    ----------
    earlier
        The earlier run's assignments (``customer_id`` and ``by``).
    by
        The segmentation column: ``segment``, ``rfm_segment`` or ``value_tier``.

    Returns
    -------
    Transform
        To a DataFrame ``from_segment, to_segment, customers (long), share (double)``, ordered
        by ``from_segment, to_segment``; ``share`` = customers / customers of ``from_segment``.
    """

    def transform(later: DataFrame) -> DataFrame:
        a = _segments(earlier, by, "the earlier run's").withColumnRenamed(by, "from_segment")
        b = _segments(later, by, "the later run's").withColumnRenamed(by, "to_segment")
        pairs = (
            a.join(b, on="customer_id", how="full_outer")
            .select(
                F.coalesce(F.col("from_segment"), F.lit(NEW)).alias("from_segment"),
                F.coalesce(F.col("to_segment"), F.lit(LOST)).alias("to_segment"),
            )
            .groupBy("from_segment", "to_segment")
            .agg(F.count(F.lit(1)).alias("customers"))
        )
        # One row per pair of segments: a window over this small frame, not over customers.
        per_from = Window.partitionBy("from_segment")
        return pairs.select(
            "from_segment",
            "to_segment",
            "customers",
            (F.col("customers") / F.sum("customers").over(per_from)).alias("share"),
        ).orderBy("from_segment", "to_segment")

    return transform
