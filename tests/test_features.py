"""Feature transforms on small inline DataFrames with hand-computed expectations."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from segmentation.io.schemas import AVITO_SEARCH_INFO, AVITO_SEARCH_STREAM
from segmentation.sources import avito, events, retail
from segmentation.sources import common as ft

T = dt.datetime
D = dt.date

RETAIL_COLUMNS = "invoice string, stock_code string, quantity string, invoice_date string, " \
    "price string, customer_id string"

RETAIL_ROWS = [
    ("489434", "85048", "12", "2009-12-01 07:45:00", "6.95", "13085.0"),
    ("489434", "79323P", "12", "2009-12-01 07:45:00", "6.75", "13085.0"),
    ("489435", "22350", "10", "2009-12-03 09:00:00", "2.00", "13085.0"),
    ("C489449", "22350", "-2", "2009-12-04 10:00:00", "2.00", "13085.0"),
    ("489436", "POST", "1", "2009-12-05 10:00:00", "18.00", "13085.0"),
    ("489437", "21232", "5", "2009-12-02 10:00:00", "0", "12345.0"),
    ("489438", "21232", "3", "2009-12-06 11:00:00", "1.50", "12345"),
    ("489439", "21232", "3", "2009-12-06 11:00:00", "1.50", ""),
    ("489440", "21232", "3", "not a date", "1.50", "99999.0"),
    ("A563185", "B", "1", "2009-12-07 10:00:00", "-11062.06", None),
    ("C489450", "21232", "-1", "2009-12-08 10:00:00", "1.50", "77777.0"),
]

RFM_AGG_SCHEMA = (
    "customer_id string, frequency long, monetary double, returns long, returned_value double, "
    "first_purchase_time timestamp, last_purchase_time timestamp, last_event_time timestamp, "
    "rows_read long, " + ", ".join(f"dropped_{r} long" for r in retail.RETAIL_DROP_REASONS)
)


def invoice_lines(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(RETAIL_ROWS, RETAIL_COLUMNS)


def drops(**counts: int) -> tuple:
    return tuple(counts.get(r, 0) for r in retail.RETAIL_DROP_REASONS)


def test_retail_lines_tags_each_drop_reason(spark: SparkSession) -> None:
    tagged = invoice_lines(spark).transform(retail.retail_lines()).select("invoice", "drop_reason")
    expected = spark.createDataFrame(
        [
            ("489434", None), ("489434", None), ("489435", None), ("C489449", None),
            ("489436", "non_product_line"), ("489437", "zero_price"), ("489438", None),
            ("489439", "missing_customer_id"), ("489440", "unparseable_invoice_date"),
            ("A563185", "missing_customer_id"), ("C489450", None),
        ],
        "invoice string, drop_reason string",
    )
    assertDataFrameEqual(tagged, expected)


def test_rfm_aggregates_net_cancellations_in_one_pass(spark: SparkSession) -> None:
    result = invoice_lines(spark).transform(retail.retail_lines()).transform(
        retail.rfm_aggregates())
    expected = spark.createDataFrame(
        [
            ("13085", 2, 83.4 + 81.0 + 20.0 - 4.0, 1, 4.0, T(2009, 12, 1, 7, 45),
             T(2009, 12, 3, 9), T(2009, 12, 4, 10), 5, *drops(non_product_line=1)),
            ("12345", 1, 4.5, 0, 0.0, T(2009, 12, 6, 11), T(2009, 12, 6, 11),
             T(2009, 12, 6, 11), 2, *drops(zero_price=1)),
            ("99999", 0, 0.0, 0, 0.0, None, None, None, 1,
             *drops(unparseable_invoice_date=1)),
            ("77777", 0, -1.5, 1, 1.5, None, None, T(2009, 12, 8, 10), 1, *drops()),
            (None, 0, 0.0, 0, 0.0, None, None, None, 2, *drops(missing_customer_id=2)),
        ],
        RFM_AGG_SCHEMA,
    )
    assertDataFrameEqual(result, expected)


def test_rfm_counts_invoices_as_rows_without_expanding_lines(spark: SparkSession) -> None:
    # Two countDistinct over different columns make Spark copy every line three times (Expand)
    # before the shuffle; the invoice grain counts the invoices as rows instead.
    aggregates = invoice_lines(spark).transform(retail.retail_lines()).transform(
        retail.rfm_aggregates(checks=True))
    plan = aggregates._jdf.queryExecution().executedPlan().toString()
    assert "Expand" not in plan, plan


def test_count_names_name_the_count_columns(spark: SparkSession) -> None:
    rows = spark.createDataFrame(
        [("late", 1, True)], "drop_reason string, date_family tinyint, invalid_text boolean"
    )
    for invalid in (True, False):
        counts = rows.agg(*ft.check_counts(invalid)).columns
        assert counts == ft.check_count_names(invalid)
    reasons = ("late", "missing_customer_id")
    assert rows.agg(*ft.drop_counts(reasons)).columns == ft.drop_count_names(reasons)
    assert ft.drop_count_names(reasons) == ["dropped_late", "dropped_missing_customer_id"]
    # rfm_aggregates re-sums the line counts of its invoice grain by these names
    aggregates = invoice_lines(spark).transform(retail.retail_lines()).transform(
        retail.rfm_aggregates(checks=True))
    tail = [ft.ROWS_READ, *ft.drop_count_names(retail.RETAIL_DROP_REASONS),
            *ft.check_count_names()]
    assert aggregates.columns[-len(tail):] == tail


def test_rfm_lines_without_an_invoice_number_count_as_spend_only(spark: SparkSession) -> None:
    # Neither purchase nor return (is_cancellation is unknown), so no invoice and no date, as
    # before the invoice grain; their lines and value still count.
    lines = spark.createDataFrame(
        [
            ("489434", "85048", "2", "2009-12-01 07:45:00", "5.00", "13085"),
            (None, "85048", "1", "2009-12-02 07:45:00", "5.00", "13085"),
            (None, "85048", "3", "2009-12-03 07:45:00", "5.00", "13085"),
        ],
        RETAIL_COLUMNS,
    )
    result = lines.transform(retail.retail_lines()).transform(retail.rfm_aggregates()).select(
        "customer_id", "frequency", "monetary", "last_purchase_time", "rows_read")
    expected = spark.createDataFrame(
        [("13085", 1, 30.0, T(2009, 12, 1, 7, 45), 3)],
        "customer_id string, frequency long, monetary double, last_purchase_time timestamp, "
        "rows_read long",
    )
    assertDataFrameEqual(result, expected)


def test_rfm_dropping_cancellations_gives_gross_spend(spark: SparkSession) -> None:
    result = (
        invoice_lines(spark)
        .transform(retail.retail_lines(cancellations="drop"))
        .transform(retail.rfm_aggregates())
        .filter("customer_id in ('13085', '77777')")
    )
    expected = spark.createDataFrame(
        [
            ("13085", 2, 83.4 + 81.0 + 20.0, 0, 0.0, T(2009, 12, 1, 7, 45), T(2009, 12, 3, 9),
             T(2009, 12, 3, 9), 5, *drops(non_product_line=1, cancellation=1)),
            ("77777", 0, 0.0, 0, 0.0, None, None, None, 1, *drops(cancellation=1)),
        ],
        RFM_AGG_SCHEMA,
    )
    assertDataFrameEqual(result, expected)


def test_non_product_lines_can_be_included(spark: SparkSession) -> None:
    result = (
        invoice_lines(spark)
        .transform(retail.retail_lines(non_product="include"))
        .transform(retail.rfm_aggregates())
        .filter("customer_id = '13085'")
        .select("frequency", "monetary", "last_purchase_time")
    )
    expected = spark.createDataFrame(
        [(3, 83.4 + 81.0 + 20.0 - 4.0 + 18.0, T(2009, 12, 5, 10))],
        "frequency long, monetary double, last_purchase_time timestamp",
    )
    assertDataFrameEqual(result, expected)


def test_drop_summary_counts_rows_and_customers(spark: SparkSession) -> None:
    aggregates = invoice_lines(spark).transform(retail.retail_lines()).transform(
        retail.rfm_aggregates())
    summary = ft.drop_summary(aggregates, "first_purchase_time")
    expected = spark.createDataFrame(
        [(11, *drops(missing_customer_id=2, unparseable_invoice_date=1, non_product_line=1,
                     zero_price=1), 2, 2, "2009-12-08 10:00:00", D(2009, 12, 8))],
        "rows_read long, "
        + ", ".join(f"dropped_{r} long" for r in retail.RETAIL_DROP_REASONS)
        + ", customers long, customers_without_activity long, latest_event string, "
        "latest_event_date date",
    )
    assertDataFrameEqual(summary, expected)


def test_default_reference_date_is_the_day_after_the_latest_event() -> None:
    assert ft.default_reference_date(D(2009, 12, 8)) == D(2009, 12, 9)


def test_retail_features_for_a_reference_date(spark: SparkSession) -> None:
    result = (
        invoice_lines(spark)
        .transform(retail.retail_lines())
        .transform(retail.rfm_aggregates())
        .transform(ft.finish_features(retail.RETAIL_FEATURES, D(2009, 12, 10)))
    )
    expected = spark.createDataFrame(
        [
            # one customer with a single purchase: recency == tenure
            ("12345", 4, 1, 4.5, 4, 4.5, 0, 0.0, D(2009, 12, 6), D(2009, 12, 6)),
            ("13085", 7, 2, 180.4, 9, 90.2, 1, 4.0, D(2009, 12, 1), D(2009, 12, 3)),
        ],
        "customer_id string, recency_days int, frequency long, monetary double, "
        "tenure_days int, average_order_value double, returns long, returned_value double, "
        "first_purchase_date date, last_purchase_date date",
    )
    assertDataFrameEqual(result, expected)


def test_us_style_dates_are_parsed() -> None:
    # Online Retail I CSV exports write 12/1/2010 8:26.
    assert "M/d/yyyy H:mm" in ft.FALLBACK_TIMESTAMP_FORMATS


def test_parse_timestamp_formats(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [("2015-05-10 18:11:01.0",), ("2009-12-01 07:45:00",), ("12/1/2010 8:26",),
         ("2010-12-01T08:26:00",), ("garbage",), (None,)],
        "raw string",
    )
    result = df.select(ft.parse_timestamp(df.raw).alias("ts"))
    expected = spark.createDataFrame(
        [(T(2015, 5, 10, 18, 11, 1),), (T(2009, 12, 1, 7, 45),), (T(2010, 12, 1, 8, 26),),
         (T(2010, 12, 1, 8, 26),), (None,), (None,)],
        "ts timestamp",
    )
    assertDataFrameEqual(result, expected)


# ---------------------------------------------------------------------------- Avito


def avito_tables(spark: SparkSession) -> tuple[DataFrame, DataFrame]:
    stream = spark.createDataFrame(
        [
            (1, 10, 1, 3, 0.01, 1), (1, 11, 2, 1, None, None), (1, 12, 3, 3, 0.02, 0),
            (2, 10, 1, 3, 0.01, None),  # contextual ad with NULL click counts as no click
            (3, 13, 1, 2, None, None),
            (5, 10, 1, 3, 0.01, 1),
            (6, 10, 1, 1, None, None),
            (7, 14, 1, 3, 0.03, 0), (7, 15, 2, 3, 0.03, 1),
            (99, 10, 1, 3, 0.01, 1),  # no SearchInfo row
        ],
        AVITO_SEARCH_STREAM,
    )
    info = spark.createDataFrame(
        [
            (1, "2015-05-10 18:11:01.0", 1, 7, 1, "", 1, 1, None),
            (2, "2015-05-12 09:00:00.0", 1, 7, 1, "", 1, 1, None),
            (3, "2015-05-12 09:00:00.0", 1, 7, 1, "", 1, 1, None),  # tie on the last date
            (4, "2015-05-11 10:00:00.0", 1, 8, 0, None, 1, 1, None),  # not in the stream
            (5, "2015-05-13 10:00:00.0", 1, None, 0, None, 1, 1, None),  # no user
            (6, "garbage", 1, 9, 0, None, 1, 1, None),
            (7, "2015-05-09 08:00:00.0", 1, 10, 1, "iphone", 1, 1, "{45:'Iphone'}"),
        ],
        AVITO_SEARCH_INFO,
    )
    return stream, info


RFE_AGG_SCHEMA = (
    "customer_id string, frequency long, engagement long, impressions long, "
    "contextual_impressions long, first_search_time timestamp, last_search_time timestamp, "
    "last_event_time timestamp, rows_read long, "
    + ", ".join(f"dropped_{r} long" for r in avito.AVITO_DROP_REASONS)
    + ", dropped_stream_rows_without_search long"
)


def test_rfe_aggregates(spark: SparkSession) -> None:
    stream, info = avito_tables(spark)
    result = info.transform(avito.avito_searches(stream)).transform(avito.rfe_aggregates())
    last = T(2015, 5, 12, 9)
    expected = spark.createDataFrame(
        [
            ("7", 1, 3, 5, 3, T(2015, 5, 10, 18, 11, 1), last, last, 3, 0, 0, 0, 0, 0),
            ("10", 1, 1, 2, 2, T(2015, 5, 9, 8), T(2015, 5, 9, 8), T(2015, 5, 9, 8), 1,
             0, 0, 0, 0, 0),
            ("8", 0, 0, 0, 0, None, None, None, 1, 1, 0, 0, 0, 0),
            ("9", 0, 0, 0, 0, None, None, None, 1, 0, 0, 1, 0, 0),
            (None, 0, 0, 0, 0, None, None, None, 1, 0, 1, 0, 0, 1),
        ],
        RFE_AGG_SCHEMA,
    )
    assertDataFrameEqual(result, expected)


def test_avito_searches_are_grouped_on_the_typed_user_id(spark: SparkSession) -> None:
    """14M searches are grouped on SearchInfo's long UserID; only the aggregate is text."""
    stream, info = avito_tables(spark)
    searches = info.transform(avito.avito_searches(stream))
    types = dict(searches.dtypes)
    assert types["customer_id"] == "bigint"
    assert types["date_family"] == "tinyint"  # a code, not text, through the shuffle
    aggregates = searches.transform(avito.rfe_aggregates())
    assert dict(aggregates.dtypes)["customer_id"] == "string"


def test_date_families_are_tinyint_codes_counted_by_name(spark: SparkSession) -> None:
    dates = spark.createDataFrame(
        [("2015-05-10 18:11:01",), ("12/1/2010 8:26",), ("13.01.2010 8:26",), ("garbage",)],
        "text string",
    )
    families = dates.select(ft.timestamp_family(F.col("text")).alias("date_family"))
    expected_codes = [list(ft.DATE_FAMILIES).index(name)
                      for name in ("year_first", "month_first", "day_first")]
    assert [r["date_family"] for r in families.collect()] == [*expected_codes, None]
    counts = families.agg(*ft.check_counts(invalid_text=False)).first()
    assert counts is not None
    assert counts.asDict() == {
        ft.DATE_FORMAT_PREFIX + "year_first": 1,
        ft.DATE_FORMAT_PREFIX + "month_first": 1,
        ft.DATE_FORMAT_PREFIX + "day_first": 1,
    }


def test_avito_features_with_default_reference_date(spark: SparkSession) -> None:
    stream, info = avito_tables(spark)
    aggregates = info.transform(avito.avito_searches(stream)).transform(avito.rfe_aggregates())
    summary = ft.drop_summary(aggregates, "first_search_time").first()
    assert summary is not None
    latest = summary["latest_event_date"]
    reference = ft.default_reference_date(latest)
    assert reference == D(2015, 5, 13)
    result = aggregates.transform(ft.finish_features(avito.AVITO_FEATURES, reference))
    expected = spark.createDataFrame(
        [
            ("7", 1, 1, 3, 3, 5, 3, 1 / 3, D(2015, 5, 10), D(2015, 5, 12)),
            ("10", 4, 1, 1, 4, 2, 2, 0.5, D(2015, 5, 9), D(2015, 5, 9)),
        ],
        "customer_id string, recency_days int, frequency long, engagement long, "
        "tenure_days int, impressions long, contextual_impressions long, "
        "click_through_rate double, first_search_date date, last_search_date date",
    )
    assertDataFrameEqual(result, expected)


# ---------------------------------------------------------------------------- events


@pytest.mark.parametrize("with_session", [True, False])
def test_event_features(spark: SparkSession, with_session: bool) -> None:
    log = spark.createDataFrame(
        [
            ("u1", "2024-01-01 10:00:00", "s1", "10.0"),
            ("u1", "2024-01-01 10:05:00", "s1", "5.5"),
            ("u1", "2024-01-03 08:00:00", "s2", None),
            ("u2", "2024-01-02 00:00:00", "s3", "abc"),
            ("u2", "bad", "s4", "1"),
            (None, "2024-01-02 00:00:00", "s5", "1"),
        ],
        "customer_id string, event_time string, session_id string, amount string",
    )
    if not with_session:
        log = log.drop("session_id")
    aggregates = log.transform(events.event_lines()).transform(
        events.event_aggregates(has_session=with_session, has_amount=True)
    )
    summary = ft.drop_summary(aggregates, "first_event_time").select(
        "rows_read", *(f"dropped_{r}" for r in events.EVENT_DROP_REASONS), "customers"
    )
    assertDataFrameEqual(
        summary,
        spark.createDataFrame(
            [(6, 1, 1, 1, 0, 1)],
            "rows_read long, dropped_missing_customer_id long, dropped_unparseable_timestamp "
            "long, dropped_unparseable_amount long, dropped_after_reference_date long, "
            "customers long",
        ),
    )
    result = aggregates.transform(
        ft.finish_features(events.event_feature_set(has_amount=True), D(2024, 1, 4))
    )
    expected = spark.createDataFrame(
        [("u1", 1, 2 if with_session else 3, 15.5, 3, 3, D(2024, 1, 1), D(2024, 1, 3))],
        "customer_id string, recency_days int, frequency long, monetary double, "
        "tenure_days int, events long, first_event_date date, last_event_date date",
    )
    assertDataFrameEqual(result, expected)


def test_reference_date_excludes_later_events(spark: SparkSession) -> None:
    reference = D(2009, 12, 4)
    aggregates = (
        invoice_lines(spark)
        .transform(retail.retail_lines())
        .transform(ft.exclude_after(reference, "invoice_time"))
        .transform(retail.rfm_aggregates())
    )
    summary = ft.drop_summary(aggregates, "first_purchase_time").select(
        "dropped_after_reference_date", "customers"
    )
    # after 2009-12-04 00:00: the C489449 return, 489438 (12345) and C489450 (77777); the POST
    # line stays tagged non_product_line, the unparseable date stays unparseable.
    assertDataFrameEqual(
        summary,
        spark.createDataFrame([(3, 1)], "dropped_after_reference_date long, customers long"),
    )
    result = aggregates.transform(ft.finish_features(retail.RETAIL_FEATURES, reference)).select(
        "customer_id", "recency_days", "frequency", "monetary", "returns"
    )
    assertDataFrameEqual(
        result,
        spark.createDataFrame(
            [("13085", 1, 2, 184.4, 0)],
            "customer_id string, recency_days int, frequency long, monetary double, returns long",
        ),
    )
