"""Property tests: the feature transforms against plain-Python reference implementations.

Random small inputs (explicit schemas, a few rows) go through the Spark transforms and through a
straightforward Python computation of the same definitions (README, Features); both must agree.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.sources import avito, retail
from segmentation.sources import common as ft

SETTINGS = settings(
    max_examples=15, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
START = dt.datetime(2010, 1, 1)
REFERENCE = dt.date(2010, 3, 1)

RETAIL_SCHEMA = ("invoice string, stock_code string, quantity string, invoice_date string, "
                 "price string, customer_id string")

# one invoice line: (customer, invoice number, cancellation?, quantity, cents, minutes after START)
line_strategy = st.tuples(
    st.sampled_from(["101", "102", "103"]),
    st.integers(1, 6),
    st.booleans(),
    st.integers(1, 50),
    st.integers(1, 100_000),
    st.integers(0, 60 * 24 * 50),
)


def _retail_rows(lines: List[Tuple[str, int, bool, int, int, int]]) -> List[Tuple[str, ...]]:
    rows = []
    for customer, number, cancel, quantity, cents, minutes in lines:
        invoice = f"{'C' if cancel else ''}5{number:05d}"
        when = START + dt.timedelta(minutes=minutes)
        rows.append((invoice, "85048", str(-quantity if cancel else quantity),
                     when.strftime("%Y-%m-%d %H:%M:%S"), f"{Decimal(cents) / 100:.2f}", customer))
    return rows


def _retail_reference(rows: List[Tuple[str, ...]]) -> Dict[str, Tuple[int, int, Decimal]]:
    """customer -> (recency_days, frequency, monetary), by the README's definitions."""
    invoices: Dict[str, set] = defaultdict(set)
    money: Dict[str, Decimal] = defaultdict(Decimal)
    last: Dict[str, dt.datetime] = {}
    for invoice, _, quantity, date, price, customer in rows:
        money[customer] += int(quantity) * Decimal(price)
        if not invoice.startswith("C"):
            invoices[customer].add(invoice)
            when = dt.datetime.strptime(date, "%Y-%m-%d %H:%M:%S")
            last[customer] = max(last.get(customer, when), when)
    return {
        c: ((REFERENCE - last[c].date()).days, len(invoices[c]), money[c]) for c in last
    }


@SETTINGS
@given(st.lists(line_strategy, min_size=1, max_size=12))
def test_retail_rfm_matches_reference(
    spark: SparkSession, lines: List[Tuple[str, int, bool, int, int, int]]
) -> None:
    rows = _retail_rows(lines)
    features = (
        spark.createDataFrame(rows, RETAIL_SCHEMA)
        .transform(retail.retail_lines())
        .transform(retail.rfm_aggregates())
        .transform(ft.finish_features(retail.RETAIL_FEATURES, REFERENCE))
        .select("customer_id", "recency_days", "frequency", "monetary")
        .collect()
    )
    got = {r["customer_id"]: (r["recency_days"], r["frequency"], r["monetary"]) for r in features}
    expected = _retail_reference(rows)
    assert set(got) == set(expected)
    for customer, (recency, frequency, monetary) in expected.items():
        assert got[customer][:2] == (recency, frequency)
        assert got[customer][2] == float(monetary)  # exact: summed as a decimal


@settings(max_examples=5, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(line_strategy, min_size=2, max_size=12), st.randoms(use_true_random=False))
def test_monetary_does_not_depend_on_row_order(
    spark: SparkSession, lines: List[Tuple[str, int, bool, int, int, int]], rnd: object
) -> None:
    rows = _retail_rows(lines)
    shuffled = list(rows)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]

    def monetary(data: List[Tuple[str, ...]], partitions: int) -> Dict[str, float]:
        frame = spark.createDataFrame(data, RETAIL_SCHEMA).repartition(partitions)
        result = frame.transform(retail.retail_lines()).transform(retail.rfm_aggregates())
        return {r["customer_id"]: r["monetary"] for r in result.collect()}

    assert monetary(rows, 1) == monetary(shuffled, 3)


SEARCH_INFO_SCHEMA = "SearchID long, SearchDate string, UserID long"
STREAM_SCHEMA = "SearchID long, ObjectType long, IsClick long"

search_strategy = st.tuples(
    st.sampled_from([1, 2, 3, None]),  # user
    st.integers(0, 60 * 24 * 50),  # minutes after START
)
ad_strategy = st.tuples(
    st.integers(0, 9),  # search index (beyond the searches: a stream row without search)
    st.sampled_from([1, 2, 3]),
    st.sampled_from([0, 1, None]),
)


def _avito_reference(
    searches: List[Tuple[int, str, Optional[int]]], ads: List[Tuple[int, int, Optional[int]]]
) -> Dict[str, Tuple[int, int, int]]:
    """user -> (recency_days, frequency = clicks, engagement = searches in the stream)."""
    by_search: Dict[int, List[Tuple[int, Optional[int]]]] = defaultdict(list)
    for search_id, object_type, click in ads:
        by_search[search_id].append((object_type, click))
    clicks: Dict[str, int] = defaultdict(int)
    sessions: Dict[str, int] = defaultdict(int)
    last: Dict[str, dt.date] = {}
    for search_id, date, user in searches:
        if user is None or search_id not in by_search:
            continue
        key = str(user)
        clicks[key] += sum(c or 0 for _, c in by_search[search_id])
        sessions[key] += 1
        day = dt.datetime.strptime(date, "%Y-%m-%d %H:%M:%S").date()
        last[key] = max(last.get(key, day), day)
    return {u: ((REFERENCE - last[u]).days, clicks[u], sessions[u]) for u in last}


@SETTINGS
@given(st.lists(search_strategy, min_size=1, max_size=8),
       st.lists(ad_strategy, min_size=0, max_size=16))
def test_avito_rfe_matches_reference(
    spark: SparkSession,
    searches: List[Tuple[Optional[int], int]],
    ads: List[Tuple[int, int, Optional[int]]],
) -> None:
    info = [
        (i, (START + dt.timedelta(minutes=m)).strftime("%Y-%m-%d %H:%M:%S"), user)
        for i, (user, m) in enumerate(searches)
    ]
    features = (
        spark.createDataFrame(info, SEARCH_INFO_SCHEMA)
        .transform(avito.avito_searches(spark.createDataFrame(ads, STREAM_SCHEMA)))
        .transform(avito.rfe_aggregates())
        .transform(ft.finish_features(avito.AVITO_FEATURES, REFERENCE))
        .select("customer_id", "recency_days", "frequency", "engagement")
        .collect()
    )
    got = {r["customer_id"]: (r["recency_days"], r["frequency"], r["engagement"])
           for r in features}
    assert got == _avito_reference([(i, d, u) for i, d, u in info], ads)


@pytest.mark.parametrize("text, value, fraction", [
    ("12", 12, False), ("12.0", 12, False), (" 3 ", 3, False), ("1e1", 10, False),
    ("-2", -2, False), ("1.5", None, True), ("-0.25", None, True), ("abc", None, False),
    ("NaN", None, False), ("", None, False),
])
def test_quantities_are_never_truncated(
    spark: SparkSession, text: str, value: Optional[int], fraction: bool
) -> None:
    whole, has_fraction = ft.parse_whole_number(F.lit(text))
    row = spark.range(1).select(whole.alias("v"), has_fraction.alias("f")).first()
    assert row is not None and (row["v"], row["f"]) == (value, fraction)
