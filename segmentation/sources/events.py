"""Any event log with a column mapping: recency, frequency (events or sessions), monetary."""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.io import readers
from segmentation.sources.common import (
    INVALID_TEXT,
    MONEY_SUM_TYPE,
    ROWS_READ,
    FeatureSet,
    Transform,
    blank_to_null,
    check_counts,
    drop_counts,
    drop_reason,
    invalid_text,
    normalise_customer_id,
    parse_money,
    parse_timestamp,
    raw_text,
    timestamp_family,
)
from segmentation.sources.source import FeatureOptions, Source, TaggedRows

EVENT_DROP_REASONS: Tuple[str, ...] = (
    "missing_customer_id",
    "unparseable_timestamp",
    "unparseable_amount",
    "after_reference_date",
)

#: The drop reasons that are errors in the data (``rejected/``, ``--max-reject-fraction``);
#: events without a customer id (anonymous visitors) and after the reference date are rules.
EVENT_REJECT_REASONS: Tuple[str, ...] = (
    "unparseable_timestamp",
    "unparseable_amount",
)


def event_lines(timestamp_format: Optional[str] = None) -> Transform:
    """Parse a mapped event log (:func:`segmentation.io.readers.read_events`) and tag drops.

    Output: ``customer_id, event_time, session_id, amount, drop_reason, date_family,
    invalid_text, raw``;
    ``session_id`` and ``amount`` are NULL when the log has no such column. ``amount`` is a
    decimal (:data:`~segmentation.sources.common.MONEY_TYPE`): an amount that is not a finite
    number (``abc``, ``NaN``, ``inf``) is ``unparseable_amount``. ``invalid_text`` is true
    when the row's text holds U+FFFD (bytes not valid in the encoding; the job then stops).
    """

    def transform(events: DataFrame) -> DataFrame:
        has_amount = "amount" in events.columns
        has_session = "session_id" in events.columns
        amount_text = blank_to_null(F.col("amount")) if has_amount else F.lit(None)
        amount = parse_money(F.col("amount")) if has_amount else F.lit(None).cast(MONEY_SUM_TYPE)
        session = (
            blank_to_null(F.col("session_id")) if has_session else F.lit(None).cast("string")
        )
        parsed = events.select(
            normalise_customer_id(F.col("customer_id")).alias("customer_id"),
            parse_timestamp(F.col("event_time"), timestamp_format).alias("event_time"),
            timestamp_family(F.col("event_time"), timestamp_format).alias("date_family"),
            session.alias("session_id"),
            amount.alias("amount"),
            amount_text.alias("_amount_text"),
            invalid_text(events).alias(INVALID_TEXT),
            raw_text(events),
        )
        rules = [
            ("missing_customer_id", F.col("customer_id").isNull()),
            ("unparseable_timestamp", F.col("event_time").isNull()),
            ("unparseable_amount", F.col("_amount_text").isNotNull() & F.col("amount").isNull()),
        ]
        return parsed.select(
            "customer_id", "event_time", "session_id", "amount",
            drop_reason(rules).alias("drop_reason"), "date_family", INVALID_TEXT, "raw",
        )

    return transform


def event_aggregates(
    has_session: bool, has_amount: bool, checks: bool = False
) -> Transform:
    """One ``groupBy(customer_id)`` over tagged events (:func:`event_lines`).

    ``frequency`` counts distinct sessions when the log has a session column, else events;
    ``monetary`` (when the log has an amount) sums amounts exactly as decimals, then gives the
    total as a double. Also ``events``,
    ``first_event_time``, ``last_event_time``, ``rows_read`` and ``dropped_<reason>``; with
    ``checks``, the input checks' counts (:func:`~segmentation.sources.common.check_counts`).
    """

    def transform(events: DataFrame) -> DataFrame:
        kept = F.col("drop_reason").isNull()
        frequency = (
            F.countDistinct(F.when(kept, F.col("session_id")))
            if has_session
            else F.count(F.when(kept, 1))
        )
        aggregates = [
            frequency.alias("frequency"),
            F.count(F.when(kept, 1)).alias("events"),
        ]
        if has_amount:
            aggregates.append(
                F.coalesce(
                    F.sum(F.when(kept, F.col("amount"))).cast("double"), F.lit(0.0)
                ).alias("monetary")
            )
        return events.groupBy("customer_id").agg(
            *aggregates,
            F.min(F.when(kept, F.col("event_time"))).alias("first_event_time"),
            F.max(F.when(kept, F.col("event_time"))).alias("last_event_time"),
            F.count(F.lit(1)).alias(ROWS_READ),
            *drop_counts(EVENT_DROP_REASONS),
            *(check_counts() if checks else ()),
        )

    return transform


def event_feature_set(has_amount: bool) -> FeatureSet:
    """The feature set of a generic event log, with ``monetary`` when it has an amount."""
    cluster: Tuple[str, ...] = ("recency_days", "frequency", *(("monetary",) if has_amount else ()))
    weights: Dict[str, float] = {"recency_days": -1.0, "frequency": 1.0}
    if has_amount:
        weights["monetary"] = 1.0
    return FeatureSet(
        source="events",
        columns=(*cluster, "tenure_days", "events", "first_event_date", "last_event_date"),
        cluster_columns=cluster,
        value_weights=weights,
        value_column="monetary" if has_amount else "frequency",
        first_column="first_event_time",
        last_column="last_event_time",
        scores={
            "r_score": "recency_days", "f_score": "frequency",
            **({"m_score": "monetary"} if has_amount else {}),
        },
    )


class EventSource(Source):
    """Any event log through a column mapping (``--source events``)."""

    name = "events"
    date_column = "event_time"
    date_drop_reason = "unparseable_timestamp"
    time_column = "event_time"
    drop_reasons = EVENT_DROP_REASONS
    reject_reasons = EVENT_REJECT_REASONS

    def feature_set(self, options: FeatureOptions) -> FeatureSet:
        """:func:`event_feature_set`: ``monetary`` when an amount column is mapped."""
        return event_feature_set(has_amount=options.event_columns.amount is not None)

    def read_and_tag(self, spark: SparkSession, options: FeatureOptions) -> TaggedRows:
        """The mapped columns (:func:`readers.read_events`) through :func:`event_lines`."""
        raw = readers.read_events(
            spark, options.input, options.event_columns, options.input_format, options.text
        )
        return TaggedRows(rows=raw.transform(event_lines(options.timestamp_format)), raw=raw)

    def aggregate(self, options: FeatureOptions) -> Transform:
        """:func:`event_aggregates` for the mapped columns."""
        columns = options.event_columns
        return event_aggregates(
            has_session=columns.session_id is not None, has_amount=columns.amount is not None,
            checks=True,
        )

    def ingest_tables(self, spark: SparkSession, options: FeatureOptions) -> Dict[str, DataFrame]:
        """``events``: the file as read."""
        return {
            "events": readers.read_table(spark, options.input, options.input_format, options.text)
        }
