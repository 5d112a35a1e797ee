"""Per-customer behaviour features: RFM for invoice logs, RFE for ad-click streams.

Every source goes through two transforms:

1. a *line* transform (:func:`retail_lines`, :func:`avito_searches`, :func:`event_lines`) that
   parses the raw columns and tags each row with the reason it is dropped (``drop_reason``, NULL
   for rows that are kept);
2. an *aggregate* transform (:func:`rfm_aggregates`, :func:`rfe_aggregates`,
   :func:`event_aggregates`): one ``groupBy`` per customer that computes the features over kept
   rows and, in the same pass, counts dropped rows per reason into ``dropped_<reason>`` columns.
   Rows without a customer id land in the NULL-customer group, so nothing is read twice.

:func:`drop_summary` sums those counts (one small action on the customer-grain table) for the
run manifest; :func:`kept_customers` keeps the customers with at least one kept purchase (or
search); :func:`with_recency` adds ``recency_days`` and ``tenure_days`` for a reference date.

These are classic RFM definitions -- recency = days since the last purchase, frequency = all
purchase invoices, monetary = total net spend -- not the ``lifetimes`` package's (which counts
*repeat* periods, measures recency as customer age at the last purchase and uses mean spend).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

Transform = Callable[[DataFrame], DataFrame]

DROPPED_PREFIX = "dropped_"
ROWS_READ = "rows_read"

#: Stock codes of UCI Online Retail that are not products: postage, manual lines, fees, discounts,
#: samples. By default (``non_product="exclude"``) their lines are left out of frequency and
#: monetary: they are not purchases of goods, and "M"/"ADJUST" lines carry arbitrary amounts.
NON_PRODUCT_STOCK_CODES: Tuple[str, ...] = (
    "POST", "DOT", "M", "m", "C2", "C3", "D", "S", "B", "CRUK", "PADS", "AMAZONFEE",
    "BANK CHARGES", "ADJUST", "ADJUST2", "TEST001", "TEST002", "SP1002", "GIFT",
)

#: Text formats tried, in order, for timestamps Spark's own cast does not read (it reads
#: ``2009-12-01 07:45:00``, ``2015-05-10 18:11:01.0`` and ISO 8601).
FALLBACK_TIMESTAMP_FORMATS: Tuple[str, ...] = (
    "M/d/yyyy H:mm",
    "M/d/yyyy H:mm:ss",
    "d.M.yyyy H:mm",
    "yyyy/MM/dd HH:mm:ss",
)

CANCELLATIONS = ("net", "drop")
NON_PRODUCT = ("exclude", "include")


def parse_timestamp(column: Column, timestamp_format: Optional[str] = None) -> Column:
    """Parse text (or pass through a timestamp/date) into a timestamp; NULL when unparseable.

    With ``timestamp_format`` only that Spark datetime pattern is used; otherwise Spark's cast is
    tried first, then :data:`FALLBACK_TIMESTAMP_FORMATS` (US ``12/1/2010 8:26`` first, as in the
    UCI Online Retail CSV exports).
    """
    text = F.trim(column.cast("string"))
    if timestamp_format:
        return F.to_timestamp(text, timestamp_format)
    candidates = [text.cast("timestamp")]
    candidates += [F.to_timestamp(text, fmt) for fmt in FALLBACK_TIMESTAMP_FORMATS]
    return F.coalesce(*candidates)


def _drop_reason(rules: Sequence[Tuple[str, Column]]) -> Column:
    """The first matching rule's reason, NULL when no rule matches (the row is kept)."""
    expr: Optional[Column] = None
    for reason, condition in rules:
        expr = F.when(condition, F.lit(reason)) if expr is None else expr.when(condition, reason)
    return expr if expr is not None else F.lit(None).cast("string")


def _drop_counts(reasons: Sequence[str]) -> List[Column]:
    return [
        F.sum(F.when(F.col("drop_reason") == reason, 1).otherwise(0)).alias(DROPPED_PREFIX + reason)
        for reason in reasons
    ]


def exclude_after(reference_date: Optional[dt.date], time_column: str) -> Transform:
    """Tag rows on or after ``reference_date`` as ``after_reference_date`` (RFM "as of" a date).

    Rows already tagged keep their reason; with ``reference_date=None`` nothing changes.
    """

    def transform(rows: DataFrame) -> DataFrame:
        if reference_date is None:
            return rows
        late = F.col(time_column) >= F.lit(reference_date.isoformat()).cast("timestamp")
        return rows.withColumn(
            "drop_reason",
            F.coalesce(F.col("drop_reason"), F.when(late, F.lit("after_reference_date"))),
        )

    return transform


def _blank_to_null(column: Column) -> Column:
    text = F.trim(column.cast("string"))
    return F.when(text == "", None).otherwise(text)


def normalise_customer_id(column: Column) -> Column:
    """Customer ids as text: trimmed, blank -> NULL, a float-written id ``13085.0`` -> ``13085``."""
    text = _blank_to_null(column)
    return F.regexp_replace(text, r"^(\d+)\.0+$", "$1")


# --------------------------------------------------------------------------------------------
# Retail invoices: RFM
# --------------------------------------------------------------------------------------------

RETAIL_DROP_REASONS: Tuple[str, ...] = (
    "missing_customer_id",
    "unparseable_invoice_date",
    "unparseable_quantity_or_price",
    "adjustment_invoice",
    "non_product_line",
    "zero_price",
    "negative_price",
    "cancellation",
    "after_reference_date",
)


def retail_lines(
    cancellations: str = "net",
    non_product: str = "exclude",
    timestamp_format: Optional[str] = None,
) -> Transform:
    """Parse canonical invoice lines (:func:`segmentation.io.readers.read_retail`); tag drops.

    Output columns: ``customer_id, invoice, stock_code, quantity, price, invoice_time, amount``
    (``quantity * price``), ``is_cancellation`` and ``drop_reason``. Rules, first match wins:

    ==============================  ===========================================================
    drop_reason                     rows
    ==============================  ===========================================================
    missing_customer_id             no customer id (guest checkouts)
    unparseable_invoice_date        InvoiceDate missing or not a date
    unparseable_quantity_or_price   Quantity or Price missing or not a number
    adjustment_invoice              invoice starting with "A" (bad-debt adjustments)
    non_product_line                stock code in :data:`NON_PRODUCT_STOCK_CODES` (postage,
                                    manual, fees...), unless ``non_product="include"``
    zero_price                      price 0 (free samples, gifts, manual fixes)
    negative_price                  price below 0
    cancellation                    invoice starting with "C", only if ``cancellations="drop"``
    ==============================  ===========================================================

    Parameters
    ----------
    cancellations
        ``net`` (default): cancellation lines (negative quantity) are kept and net out of
        ``monetary``; ``drop``: they are dropped, so ``monetary`` is gross spend.
    non_product
        ``exclude`` (default) or ``include`` the non-product stock codes.
    timestamp_format
        Spark datetime pattern of InvoiceDate when it is not one :func:`parse_timestamp` reads.
    """
    if cancellations not in CANCELLATIONS:
        raise ValueError(f"cancellations must be one of {CANCELLATIONS}, not {cancellations!r}")
    if non_product not in NON_PRODUCT:
        raise ValueError(f"non_product must be one of {NON_PRODUCT}, not {non_product!r}")

    def transform(lines: DataFrame) -> DataFrame:
        invoice = F.upper(F.trim(F.col("invoice").cast("string")))
        parsed = lines.select(
            normalise_customer_id(F.col("customer_id")).alias("customer_id"),
            invoice.alias("invoice"),
            F.trim(F.col("stock_code").cast("string")).alias("stock_code"),
            F.col("quantity").cast("string").cast("int").alias("quantity"),
            F.col("price").cast("string").cast("double").alias("price"),
            parse_timestamp(F.col("invoice_date"), timestamp_format).alias("invoice_time"),
        )
        is_cancellation = F.col("invoice").startswith("C")
        rules = [
            ("missing_customer_id", F.col("customer_id").isNull()),
            ("unparseable_invoice_date", F.col("invoice_time").isNull()),
            (
                "unparseable_quantity_or_price",
                F.col("quantity").isNull() | F.col("price").isNull(),
            ),
            ("adjustment_invoice", F.col("invoice").startswith("A")),
        ]
        if non_product == "exclude":
            rules.append(
                ("non_product_line", F.col("stock_code").isin(*NON_PRODUCT_STOCK_CODES))
            )
        rules += [
            ("zero_price", F.col("price") == 0),
            ("negative_price", F.col("price") < 0),
        ]
        if cancellations == "drop":
            rules.append(("cancellation", is_cancellation))
        return parsed.select(
            "*",
            (F.col("quantity") * F.col("price")).alias("amount"),
            is_cancellation.alias("is_cancellation"),
            _drop_reason(rules).alias("drop_reason"),
        )

    return transform


def rfm_aggregates() -> Transform:
    """One ``groupBy(customer_id)`` over tagged invoice lines (:func:`retail_lines`).

    Columns: ``customer_id``; ``frequency`` (distinct purchase invoices); ``monetary`` (sum of
    ``quantity * price`` over kept lines, cancellations included when they were kept, i.e. net);
    ``returns`` (distinct cancellation invoices kept); ``returned_value`` (their value, positive);
    ``first_purchase_time``, ``last_purchase_time``, ``last_event_time`` (purchases or returns);
    ``rows_read`` and ``dropped_<reason>`` for each of :data:`RETAIL_DROP_REASONS`. The customer
    NULL group holds the lines without a customer id.
    """

    def transform(lines: DataFrame) -> DataFrame:
        kept = F.col("drop_reason").isNull()
        purchase = kept & ~F.col("is_cancellation")
        returned = kept & F.col("is_cancellation")
        return lines.groupBy("customer_id").agg(
            F.countDistinct(F.when(purchase, F.col("invoice"))).alias("frequency"),
            F.coalesce(F.sum(F.when(kept, F.col("amount"))), F.lit(0.0)).alias("monetary"),
            F.countDistinct(F.when(returned, F.col("invoice"))).alias("returns"),
            F.coalesce(-F.sum(F.when(returned, F.col("amount"))), F.lit(0.0)).alias(
                "returned_value"
            ),
            F.min(F.when(purchase, F.col("invoice_time"))).alias("first_purchase_time"),
            F.max(F.when(purchase, F.col("invoice_time"))).alias("last_purchase_time"),
            F.max(F.when(kept, F.col("invoice_time"))).alias("last_event_time"),
            F.count(F.lit(1)).alias(ROWS_READ),
            *_drop_counts(RETAIL_DROP_REASONS),
        )

    return transform


# --------------------------------------------------------------------------------------------
# Avito ad clicks: RFE
# --------------------------------------------------------------------------------------------

AVITO_DROP_REASONS: Tuple[str, ...] = (
    "search_not_in_stream",
    "search_missing_user_id",
    "search_unparseable_date",
    "after_reference_date",
)

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
    columns: ``customer_id`` (UserID as text), ``search_id``, ``search_time``, ``impressions``,
    ``contextual_impressions``, ``clicks``, ``orphan_stream_rows``, ``drop_reason``.
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
            F.col("UserID").cast("string").alias("customer_id"),
            parse_timestamp(F.col("SearchDate"), timestamp_format).alias("search_time"),
            F.lit(True).alias("in_search_info"),
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
            F.when(in_info, _drop_reason(rules)).alias("drop_reason"),
            in_info.alias("in_search_info"),
        )

    return transform


def rfe_aggregates() -> Transform:
    """One ``groupBy(customer_id)`` over tagged searches (:func:`avito_searches`).

    Columns: ``customer_id``; ``frequency`` (clicks); ``engagement`` (searches, i.e. sessions);
    ``impressions``, ``contextual_impressions``; ``first_search_time``, ``last_search_time``,
    ``last_event_time``; ``rows_read`` (SearchInfo rows); ``dropped_<reason>`` for each of
    :data:`AVITO_DROP_REASONS` (searches) and ``dropped_stream_rows_without_search`` (stream
    rows).
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
            *_drop_counts(AVITO_DROP_REASONS),
            F.sum(F.col("orphan_stream_rows")).cast("long").alias(
                DROPPED_PREFIX + STREAM_ROWS_WITHOUT_SEARCH
            ),
        )

    return transform


# --------------------------------------------------------------------------------------------
# Generic event logs
# --------------------------------------------------------------------------------------------

EVENT_DROP_REASONS: Tuple[str, ...] = (
    "missing_customer_id",
    "unparseable_timestamp",
    "unparseable_amount",
    "after_reference_date",
)


def event_lines(timestamp_format: Optional[str] = None) -> Transform:
    """Parse a mapped event log (:func:`segmentation.io.readers.read_events`) and tag drops.

    Output: ``customer_id, event_time, session_id, amount, drop_reason``; ``session_id`` and
    ``amount`` are NULL when the log has no such column.
    """

    def transform(events: DataFrame) -> DataFrame:
        has_amount = "amount" in events.columns
        has_session = "session_id" in events.columns
        amount_text = _blank_to_null(F.col("amount")) if has_amount else F.lit(None)
        amount = amount_text.cast("double") if has_amount else F.lit(None).cast("double")
        session = (
            _blank_to_null(F.col("session_id")) if has_session else F.lit(None).cast("string")
        )
        parsed = events.select(
            normalise_customer_id(F.col("customer_id")).alias("customer_id"),
            parse_timestamp(F.col("event_time"), timestamp_format).alias("event_time"),
            session.alias("session_id"),
            amount.alias("amount"),
            amount_text.alias("_amount_text"),
        )
        rules = [
            ("missing_customer_id", F.col("customer_id").isNull()),
            ("unparseable_timestamp", F.col("event_time").isNull()),
            ("unparseable_amount", F.col("_amount_text").isNotNull() & F.col("amount").isNull()),
        ]
        return parsed.select(
            "customer_id", "event_time", "session_id", "amount",
            _drop_reason(rules).alias("drop_reason"),
        )

    return transform


def event_aggregates(has_session: bool, has_amount: bool) -> Transform:
    """One ``groupBy(customer_id)`` over tagged events (:func:`event_lines`).

    ``frequency`` counts distinct sessions when the log has a session column, else events;
    ``monetary`` (when the log has an amount) sums amounts. Also ``events``,
    ``first_event_time``, ``last_event_time``, ``rows_read`` and ``dropped_<reason>``.
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
                F.coalesce(F.sum(F.when(kept, F.col("amount"))), F.lit(0.0)).alias("monetary")
            )
        return events.groupBy("customer_id").agg(
            *aggregates,
            F.min(F.when(kept, F.col("event_time"))).alias("first_event_time"),
            F.max(F.when(kept, F.col("event_time"))).alias("last_event_time"),
            F.count(F.lit(1)).alias(ROWS_READ),
            *_drop_counts(EVENT_DROP_REASONS),
        )

    return transform


# --------------------------------------------------------------------------------------------
# Shared: drops, kept customers, recency
# --------------------------------------------------------------------------------------------


def dropped_columns(aggregates: DataFrame) -> List[str]:
    """The ``dropped_<reason>`` columns of a customer-grain aggregate."""
    return [c for c in aggregates.columns if c.startswith(DROPPED_PREFIX)]


def drop_summary(aggregates: DataFrame, first_column: str) -> DataFrame:
    """Sum a customer-grain aggregate into one row of counts for the run manifest.

    The row holds rows read, rows dropped per reason, customers kept, customers without any kept
    activity, and the latest kept event.

    ``first_column`` is the column that is NULL for a customer with no kept purchase/search
    (``first_purchase_time``...); such customers are counted as ``customers_without_activity``.
    """
    has_id = F.col("customer_id").isNotNull()
    active = has_id & F.col(first_column).isNotNull()
    return aggregates.agg(
        F.sum(ROWS_READ).cast("long").alias(ROWS_READ),
        *(F.sum(c).cast("long").alias(c) for c in dropped_columns(aggregates)),
        F.count(F.when(active, 1)).alias("customers"),
        F.count(F.when(has_id & ~active, 1)).alias("customers_without_activity"),
        F.max("last_event_time").alias("last_event_time"),
    )


def kept_customers(first_column: str) -> Transform:
    """Customers with an id and at least one kept purchase/search; drop-count columns removed."""

    def transform(aggregates: DataFrame) -> DataFrame:
        return aggregates.filter(
            F.col("customer_id").isNotNull() & F.col(first_column).isNotNull()
        ).drop(ROWS_READ, *dropped_columns(aggregates))

    return transform


def default_reference_date(last_event_time: dt.datetime) -> dt.date:
    """The day after the latest event: recency is then at least 1 day for everyone."""
    return last_event_time.date() + dt.timedelta(days=1)


def with_recency(
    reference_date: dt.date, last_column: str, first_column: str
) -> Transform:
    """Add ``recency_days`` and ``tenure_days`` for ``reference_date``.

    ``recency_days`` counts days from the last activity's date to the reference date,
    ``tenure_days`` from the first activity's date.
    """
    reference = F.lit(reference_date.isoformat()).cast("date")

    def transform(customers: DataFrame) -> DataFrame:
        return customers.withColumns(
            {
                "recency_days": F.datediff(reference, F.to_date(F.col(last_column))),
                "tenure_days": F.datediff(reference, F.to_date(F.col(first_column))),
            }
        )

    return transform


@dataclass(frozen=True)
class FeatureSet:
    """The features of a source, how they are clustered and which one measures value.

    Attributes
    ----------
    source
        ``retail``, ``avito`` or ``events``.
    columns
        Output columns of ``features/`` after ``customer_id``, in order.
    cluster_columns
        The columns KMeans clusters on.
    value_weights
        Sign of each clustered feature in the cluster value score (recency: lower is better).
    value_column
        Summed for each segment's share of value (``monetary`` or clicks), if any.
    first_column, last_column
        Timestamps of the first and last kept activity (recency and tenure are measured from them).
    """

    source: str
    columns: Tuple[str, ...]
    cluster_columns: Tuple[str, ...]
    value_weights: Mapping[str, float]
    value_column: Optional[str]
    first_column: str
    last_column: str


RETAIL_FEATURES = FeatureSet(
    source="retail",
    columns=(
        "recency_days", "frequency", "monetary", "tenure_days", "average_order_value",
        "returns", "returned_value", "first_purchase_date", "last_purchase_date",
    ),
    cluster_columns=("recency_days", "frequency", "monetary"),
    value_weights={"recency_days": -1.0, "frequency": 1.0, "monetary": 1.0},
    value_column="monetary",
    first_column="first_purchase_time",
    last_column="last_purchase_time",
)

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
)


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
    )


def finish_features(feature_set: FeatureSet, reference_date: dt.date) -> Transform:
    """Kept customers -> the ``features/`` table: ``customer_id`` + ``feature_set.columns``.

    Adds recency and tenure, derived ratios (``average_order_value = monetary / frequency``,
    ``click_through_rate = clicks / contextual impressions``), and first/last activity dates.
    """
    prefix = feature_set.first_column.rsplit("_", 1)[0].replace("first_", "")

    def transform(aggregates: DataFrame) -> DataFrame:
        customers = aggregates.transform(kept_customers(feature_set.first_column)).transform(
            with_recency(reference_date, feature_set.last_column, feature_set.first_column)
        )
        derived: Dict[str, Column] = {
            f"first_{prefix}_date": F.to_date(feature_set.first_column),
            f"last_{prefix}_date": F.to_date(feature_set.last_column),
        }
        if "average_order_value" in feature_set.columns:
            derived["average_order_value"] = F.col("monetary") / F.col("frequency")
        if "click_through_rate" in feature_set.columns:
            derived["click_through_rate"] = F.when(
                F.col("contextual_impressions") > 0,
                F.col("frequency") / F.col("contextual_impressions"),
            )
        return customers.withColumns(derived).select("customer_id", *feature_set.columns)

    return transform
