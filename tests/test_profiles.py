"""Profiles per RFM segment and value tier (``profiles.json`` ``by``): one pass, exact figures."""

from __future__ import annotations

import pytest
from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from segmentation.pipeline import _group_profiles
from segmentation.sources.retail import RETAIL_FEATURES

SCHEMA = StructType([
    StructField("customer_id", StringType()),
    StructField("recency_days", LongType()),
    StructField("frequency", LongType()),
    StructField("monetary", DoubleType()),
    StructField("rfm_segment", StringType()),
    StructField("value_tier", StringType()),
])


def test_group_profiles_sums_each_grouping_from_one_pass(spark: SparkSession) -> None:
    assignments = spark.createDataFrame(
        [
            ("a", 10, 4, 100.0, "champions", "high"),
            ("b", 20, 2, 300.0, "champions", "mid"),
            ("c", 40, 1, None, "hibernating", "mid"),  # monetary unknown: left out of its mean
            ("d", 80, 1, 100.0, "hibernating", None),  # no tier: a group of its own
        ],
        SCHEMA,
    )
    grouped = _group_profiles(assignments, RETAIL_FEATURES, ("rfm_segment", "value_tier"))

    assert grouped == {
        "rfm_segment": [
            {"rfm_segment": "champions", "customers": 2, "mean_recency_days": 15.0,
             "mean_frequency": 3.0, "mean_monetary": 200.0, "customer_share": 0.5,
             "value_share": pytest.approx(0.8)},
            {"rfm_segment": "hibernating", "customers": 2, "mean_recency_days": 60.0,
             "mean_frequency": 1.0, "mean_monetary": 100.0, "customer_share": 0.5,
             "value_share": pytest.approx(0.2)},
        ],
        "value_tier": [
            {"value_tier": "mid", "customers": 2, "mean_recency_days": 30.0,
             "mean_frequency": 1.5, "mean_monetary": 300.0, "customer_share": 0.5,
             "value_share": pytest.approx(0.6)},
            {"value_tier": "high", "customers": 1, "mean_recency_days": 10.0,
             "mean_frequency": 4.0, "mean_monetary": 100.0, "customer_share": 0.25,
             "value_share": pytest.approx(0.2)},
            {"value_tier": None, "customers": 1, "mean_recency_days": 80.0,
             "mean_frequency": 1.0, "mean_monetary": 100.0, "customer_share": 0.25,
             "value_share": pytest.approx(0.2)},
        ],
    }


def test_group_profiles_mean_of_a_group_without_values_is_null(spark: SparkSession) -> None:
    assignments = spark.createDataFrame(
        [("a", 10, 4, None, "lost", "low"), ("b", 5, 1, 50.0, "new", "low")], SCHEMA
    )
    grouped = _group_profiles(assignments, RETAIL_FEATURES, ("rfm_segment",))
    lost = next(g for g in grouped["rfm_segment"] if g["rfm_segment"] == "lost")
    assert lost["mean_monetary"] is None
    assert lost["value_share"] == 0.0
