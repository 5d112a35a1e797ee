"""Avito Context Ad Clicks: RFE (recency, frequency = clicks, engagement = searches) per user."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.io import readers
from segmentation.sources.common import (
    DROPPED_PREFIX,
    ROWS_READ,
    FeatureSet,
    Transform,
    check_counts,
    drop_counts,
    drop_reason,
    parse_timestamp,
    raw_text,
    timestamp_family,
)
from segmentation.sources.source import FeatureOptions, Source, TaggedRows

AVITO_DROP_REASONS: Tuple[str, ...] = (
    "search_not_in_stream",
    "search_missing_user_id",
    "search_unparseable_date",
    "after_reference_date",
)

#: The drop reasons that are errors in the data (``rejected/``, ``--max-reject-fraction``): only
#: unreadable dates; searches outside the stream or without a user are the documented rules.
AVITO_REJECT_REASONS: Tuple[str, ...] = ("search_unparseable_date",)

#: Stream rows whose SearchID has no SearchInfo row: counted in stream rows, not searches.
STREAM_ROWS_WITHOUT_SEARCH = "stream_rows_without_search"


def avito_searches(
    search_stream: DataFrame, timestamp_format: Optional[str] = None
) -> Transform:
    """Join per-search stream aggregates to ``SearchInfo`` rows; tag the searches dropped.

    The stream (``trainSearchStream``, one row per ad shown) is first aggregated per SearchID --
    ``impressions`` (ads shown), ``contextual_impressions`` (ObjectType 3) and ``clicks`` (sum of
    IsClick, NULL as 0) -- and then joined to SearchInfo with a full outer join, so that both kinds
    of orphans are counted in the same pass:

    =========================  ================================================================
    drop_reason                searches
    =========================  ================================================================
    search_not_in_stream       in SearchInfo but with no ad in trainSearchStream (e.g. Kaggle's
                               test-period searches: their clicks are unknown)
    search_missing_user_id     UserID NULL
    search_unparseable_date    SearchDate missing or not a timestamp
    (stream rows)              stream rows whose SearchID is not in SearchInfo: not a search, so
                               counted as ``stream_rows_without_search``, in stream rows
    =========================  ================================================================

    Apply to ``SearchInfo``: ``search_info.transform(avito_searches(search_stream))``. Output
    columns: ``customer_id`` (UserID, typed as in SearchInfo: :func:`rfe_aggregates` makes it
    text after grouping, so that 14M searches are grouped on a long, not on a string),
    ``search_id``, ``search_time``, ``impressions``,
    ``contextual_impressions``, ``clicks``, ``orphan_stream_rows``, ``drop_reason``,
    ``in_search_info`` and ``raw`` (the SearchInfo row as text).
    """

    def transform(search_info: DataFrame) -> DataFrame:
        per_search = search_stream.groupBy("SearchID").agg(
            F.count(F.lit(1)).alias("impressions"),
            F.sum(F.when(F.col("ObjectType") == 3, 1).otherwise(0)).alias(
                "contextual_impressions"
            ),
            F.sum(F.coalesce(F.col("IsClick"), F.lit(0))).alias("clicks"),
        )
        info = search_info.select(
            "SearchID",
            F.col("UserID").alias("customer_id"),
            parse_timestamp(F.col("SearchDate"), timestamp_format).alias("search_time"),
            timestamp_family(F.col("SearchDate"), timestamp_format).alias("date_family"),
            F.lit(True).alias("in_search_info"),
            raw_text(search_info),
        )
        joined = info.join(per_search, on="SearchID", how="full_outer")
        in_info = F.col("in_search_info").isNotNull()
        rules = [
            ("search_not_in_stream", F.col("impressions").isNull()),
            ("search_missing_user_id", F.col("customer_id").isNull()),
            ("search_unparseable_date", F.col("search_time").isNull()),
        ]
        return joined.select(
            # Orphan stream rows have no user: they fall in the NULL-customer group.
            F.col("customer_id"),
            F.col("SearchID").alias("search_id"),
            F.col("search_time"),
            F.coalesce(F.col("impressions"), F.lit(0)).alias("impressions"),
            F.coalesce(F.col("contextual_impressions"), F.lit(0)).alias("contextual_impressions"),
            F.coalesce(F.col("clicks"), F.lit(0)).alias("clicks"),
            F.when(in_info, 0).otherwise(F.col("impressions")).alias("orphan_stream_rows"),
            F.when(in_info, drop_reason(rules)).alias("drop_reason"),
            in_info.alias("in_search_info"),
            F.col("date_family"),
            F.col("raw"),
        )

    return transform


def rfe_aggregates(checks: bool = False) -> Transform:
    """One ``groupBy(customer_id)`` over tagged searches (:func:`avito_searches`).

    Columns: ``customer_id``; ``frequency`` (clicks); ``engagement`` (searches, i.e. sessions);
    ``impressions``, ``contextual_impressions``; ``first_search_time``, ``last_search_time``,
    ``last_event_time``; ``rows_read`` (SearchInfo rows); ``dropped_<reason>`` for each of
    :data:`AVITO_DROP_REASONS` (searches) and ``dropped_stream_rows_without_search`` (stream
    rows). With ``checks``, the searches per date format family
    (:func:`~segmentation.sources.common.check_counts`; the ids and dates of SearchInfo are
    typed, so there is no text to check for U+FFFD). ``customer_id`` is grouped as SearchInfo
    types it and cast to text afterwards, on one row per user.
    """

    def transform(searches: DataFrame) -> DataFrame:
        kept = F.col("in_search_info") & F.col("drop_reason").isNull()
        return searches.groupBy("customer_id").agg(
            F.coalesce(F.sum(F.when(kept, F.col("clicks"))), F.lit(0)).cast("long").alias(
                "frequency"
            ),
            F.count(F.when(kept, F.col("search_id"))).alias("engagement"),
            F.coalesce(F.sum(F.when(kept, F.col("impressions"))), F.lit(0)).cast("long").alias(
                "impressions"
            ),
            F.coalesce(F.sum(F.when(kept, F.col("contextual_impressions"))), F.lit(0))
            .cast("long")
            .alias("contextual_impressions"),
            F.min(F.when(kept, F.col("search_time"))).alias("first_search_time"),
            F.max(F.when(kept, F.col("search_time"))).alias("last_search_time"),
            F.max(F.when(kept, F.col("search_time"))).alias("last_event_time"),
            F.count(F.when(F.col("in_search_info"), 1)).alias(ROWS_READ),
            *drop_counts(AVITO_DROP_REASONS),
            *(check_counts(invalid_text=False) if checks else ()),
            F.sum(F.col("orphan_stream_rows")).cast("long").alias(
                DROPPED_PREFIX + STREAM_ROWS_WITHOUT_SEARCH
            ),
        ).withColumn("customer_id", F.col("customer_id").cast("string"))

    return transform


AVITO_FEATURES = FeatureSet(
    source="avito",
    columns=(
        "recency_days", "frequency", "engagement", "tenure_days", "impressions",
        "contextual_impressions", "click_through_rate", "first_search_date", "last_search_date",
    ),
    cluster_columns=("recency_days", "frequency", "engagement"),
    value_weights={"recency_days": -1.0, "frequency": 1.0, "engagement": 1.0},
    value_column="frequency",
    first_column="first_search_time",
    last_column="last_search_time",
    scores={"r_score": "recency_days", "f_score": "frequency", "e_score": "engagement"},
)


class AvitoSource(Source):
    """Avito Context Ad Clicks: RFE per user (``--source avito``)."""

    name = "avito"
    row_unit = "searches"
    date_column = "SearchDate"
    date_drop_reason = "search_unparseable_date"
    time_column = "search_time"
    drop_reasons = AVITO_DROP_REASONS
    reject_reasons = AVITO_REJECT_REASONS

    def feature_set(self, options: FeatureOptions) -> FeatureSet:
        """:data:`AVITO_FEATURES` whatever the options."""
        return AVITO_FEATURES

    def _tables(self, spark: SparkSession, options: FeatureOptions) -> readers.AvitoTables:
        return readers.read_avito(
            spark, options.input, options.input_format, options.sqlite_partitions, options.text
        )

    def read_and_tag(self, spark: SparkSession, options: FeatureOptions) -> TaggedRows:
        """SearchInfo joined to per-search stream aggregates (:func:`avito_searches`)."""
        tables = self._tables(spark, options)
        rows = tables.search_info.transform(
            avito_searches(tables.search_stream, options.timestamp_format)
        )
        return TaggedRows(rows=rows, raw=tables.search_info)

    def aggregate(self, options: FeatureOptions) -> Transform:
        """:func:`rfe_aggregates`."""
        return rfe_aggregates(checks=True)

    def ingest_tables(self, spark: SparkSession, options: FeatureOptions) -> Dict[str, DataFrame]:
        """``trainSearchStream`` and ``SearchInfo`` with the Kaggle names and types."""
        tables = self._tables(spark, options)
        return {"trainSearchStream": tables.search_stream, "SearchInfo": tables.search_info}
