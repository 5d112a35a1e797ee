"""UCI Online Retail II / I invoices: RFM per customer.

These are classic RFM definitions -- recency = days since the last purchase, frequency = all
purchase invoices, monetary = total net spend -- not the ``lifetimes`` package's (which counts
*repeat* periods, measures recency as customer age at the last purchase and uses mean spend).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from segmentation.io import readers
from segmentation.sources.common import (
    INVALID_TEXT,
    MONEY_SUM_TYPE,
    ROWS_READ,
    FeatureSet,
    Transform,
    check_count_names,
    check_counts,
    drop_count_names,
    drop_counts,
    drop_reason,
    invalid_text,
    normalise_customer_id,
    parse_money,
    parse_timestamp,
    parse_whole_number,
    raw_text,
    timestamp_family,
)
from segmentation.sources.source import FeatureOptions, Source, TaggedRows

#: Stock codes of UCI Online Retail that are not products: postage, manual lines, fees, discounts,
#: samples. By default (``non_product="exclude"``) their lines are left out of frequency and
#: monetary: they are not purchases of goods, and "M"/"ADJUST" lines carry arbitrary amounts.
NON_PRODUCT_STOCK_CODES: Tuple[str, ...] = (
    "POST", "DOT", "M", "m", "C2", "C3", "D", "S", "B", "CRUK", "PADS", "AMAZONFEE",
    "BANK CHARGES", "ADJUST", "ADJUST2", "TEST001", "TEST002", "SP1002", "GIFT",
)

CANCELLATIONS = ("net", "drop")
NON_PRODUCT = ("exclude", "include")

RETAIL_DROP_REASONS: Tuple[str, ...] = (
    "missing_customer_id",
    "unparseable_invoice_date",
    "unparseable_quantity_or_price",
    "fractional_quantity",
    "adjustment_invoice",
    "non_product_line",
    "zero_price",
    "negative_price",
    "cancellation",
    "after_reference_date",
)

#: The drop reasons that are errors in the data (``rejected/``, ``--max-reject-fraction``); the
#: others are the documented cleaning rules (guest checkouts, adjustments, non-products, free
#: and negative-price lines, cancellations when dropped, events after the reference date).
RETAIL_REJECT_REASONS: Tuple[str, ...] = (
    "unparseable_invoice_date",
    "unparseable_quantity_or_price",
    "fractional_quantity",
)


def retail_lines(
    cancellations: str = "net",
    non_product: str = "exclude",
    timestamp_format: Optional[str] = None,
) -> Transform:
    """Parse canonical invoice lines (:func:`segmentation.io.readers.read_retail`); tag drops.

    Output columns: ``customer_id, invoice, stock_code, quantity`` (long), ``price``
    (:data:`~segmentation.sources.common.MONEY_TYPE`), ``invoice_time``, ``amount``
    (``quantity * price``, decimal), ``is_cancellation``, ``drop_reason``, ``date_family``
    (the format that read the date), ``invalid_text`` (the line's text holds U+FFFD: bytes not
    valid in the file's encoding; the job then stops) and ``raw`` (the line as read, as text).
    Rules, first match wins:

    ==============================  ===========================================================
    drop_reason                     rows
    ==============================  ===========================================================
    missing_customer_id             no customer id (guest checkouts)
    unparseable_invoice_date        InvoiceDate missing or not a date
    unparseable_quantity_or_price   Quantity or Price missing or not a number (``NaN`` and
                                    infinities included)
    fractional_quantity             Quantity with a fraction (``1.5``): never truncated
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
        quantity, fractional = parse_whole_number(F.col("quantity"))
        parsed = lines.select(
            normalise_customer_id(F.col("customer_id")).alias("customer_id"),
            invoice.alias("invoice"),
            F.trim(F.col("stock_code").cast("string")).alias("stock_code"),
            quantity.alias("quantity"),
            fractional.alias("fractional_quantity"),
            parse_money(F.col("price")).alias("price"),
            parse_timestamp(F.col("invoice_date"), timestamp_format).alias("invoice_time"),
            timestamp_family(F.col("invoice_date"), timestamp_format).alias("date_family"),
            invalid_text(lines).alias(INVALID_TEXT),
            raw_text(lines),
        )
        is_cancellation = F.col("invoice").startswith("C")
        rules = [
            ("missing_customer_id", F.col("customer_id").isNull()),
            ("unparseable_invoice_date", F.col("invoice_time").isNull()),
            ("fractional_quantity", F.col("fractional_quantity")),
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
            (F.col("quantity") * F.col("price")).cast(MONEY_SUM_TYPE).alias("amount"),
            is_cancellation.alias("is_cancellation"),
            drop_reason(rules).alias("drop_reason"),
        ).drop("fractional_quantity")

    return transform


def rfm_aggregates(checks: bool = False) -> Transform:
    """RFM per customer from tagged invoice lines (:func:`retail_lines`), via invoice grain.

    Columns: ``customer_id``; ``frequency`` (distinct purchase invoices); ``monetary`` (sum of
    ``quantity * price`` over kept lines, cancellations included when they were kept, i.e. net);
    ``returns`` (distinct cancellation invoices kept); ``returned_value`` (their value, positive).
    Money is summed exactly as a decimal (the total does not depend on row order) and then
    given as a double, the type every later step (scaling, scores, tiers) works in;
    ``first_purchase_time``, ``last_purchase_time``, ``last_event_time`` (purchases or returns);
    ``rows_read`` and ``dropped_<reason>`` for each of :data:`RETAIL_DROP_REASONS`. The customer
    NULL group holds the lines without a customer id. With ``checks``, also the input checks'
    counts (:func:`~segmentation.sources.common.check_counts`).

    The lines are first aggregated per (customer, invoice) -- every other aggregate is a sum,
    minimum or maximum, which the customer grain finishes -- so that the distinct invoices are
    counted as rows: two ``countDistinct`` over different columns in one ``groupBy`` would make
    Spark expand every line into three rows before its shuffle.
    """

    def transform(lines: DataFrame) -> DataFrame:
        kept = F.col("drop_reason").isNull()
        purchase = kept & ~F.col("is_cancellation")
        returned = kept & F.col("is_cancellation")
        invoices = lines.groupBy("customer_id", "invoice").agg(
            F.max(purchase).alias("is_purchase"),
            F.max(returned).alias("is_return"),
            F.sum(F.when(kept, F.col("amount"))).alias("kept_amount"),
            F.sum(F.when(returned, F.col("amount"))).alias("returned_amount"),
            F.min(F.when(purchase, F.col("invoice_time"))).alias("first_purchase_time"),
            F.max(F.when(purchase, F.col("invoice_time"))).alias("last_purchase_time"),
            F.max(F.when(kept, F.col("invoice_time"))).alias("last_event_time"),
            F.count(F.lit(1)).alias(ROWS_READ),
            *drop_counts(RETAIL_DROP_REASONS),
            *(check_counts() if checks else ()),
        )
        line_counts = [
            ROWS_READ,
            *drop_count_names(RETAIL_DROP_REASONS),
            *(check_count_names() if checks else ()),
        ]
        return invoices.groupBy("customer_id").agg(
            F.count(F.when(F.col("is_purchase"), 1)).alias("frequency"),
            _money(F.sum("kept_amount")).alias("monetary"),
            F.count(F.when(F.col("is_return"), 1)).alias("returns"),
            _money(-F.sum("returned_amount")).alias("returned_value"),
            F.min("first_purchase_time").alias("first_purchase_time"),
            F.max("last_purchase_time").alias("last_purchase_time"),
            F.max("last_event_time").alias("last_event_time"),
            *[F.sum(name).alias(name) for name in line_counts],
        )

    return transform


def _money(total: Column) -> Column:
    """An exact decimal sum as a double (0 when there is nothing to sum)."""
    return F.coalesce(total.cast("double"), F.lit(0.0))


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
    scores={"r_score": "recency_days", "f_score": "frequency", "m_score": "monetary"},
)


class RetailSource(Source):
    """UCI Online Retail II / I invoice lines: RFM per customer (``--source retail``)."""

    name = "retail"
    date_column = "invoice_date"
    date_drop_reason = "unparseable_invoice_date"
    time_column = "invoice_time"
    drop_reasons = RETAIL_DROP_REASONS
    reject_reasons = RETAIL_REJECT_REASONS

    def feature_set(self, options: FeatureOptions) -> FeatureSet:
        """:data:`RETAIL_FEATURES` whatever the options."""
        return RETAIL_FEATURES

    def read_and_tag(self, spark: SparkSession, options: FeatureOptions) -> TaggedRows:
        """Invoice lines (:func:`readers.read_retail`) through :func:`retail_lines`."""
        raw = readers.read_retail(spark, options.input, options.input_format, options.text)
        rows = raw.transform(
            retail_lines(options.cancellations, options.non_product, options.timestamp_format)
        )
        return TaggedRows(rows=rows, raw=raw)

    def aggregate(self, options: FeatureOptions) -> Transform:
        """:func:`rfm_aggregates`, with the input checks' counts."""
        return rfm_aggregates(checks=True)

    def ingest_tables(self, spark: SparkSession, options: FeatureOptions) -> Dict[str, DataFrame]:
        """``invoices``: the file as read (its columns checked first)."""
        readers.read_retail(
            spark, options.input, options.input_format, options.text
        )  # an invoice log?
        return {
            "invoices": readers.read_table(
                spark, options.input, options.input_format, options.text
            )
        }
