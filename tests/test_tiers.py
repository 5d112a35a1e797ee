"""Tests of segmentation.segments.tiers: per-metric optimal 1-D k-means, boundaries, value tiers."""

from __future__ import annotations

import itertools
import json
import math
from typing import Dict, List, Sequence, Tuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)
from pyspark.testing import assertDataFrameEqual

from segmentation.errors import EmptyResultError, InputError, SegmentationError
from segmentation.segments.tiers import (
    RFM_METRICS,
    ValueTierModel,
    default_tier_cuts,
    fit_value_tiers,
    kmeans_1d,
    rank_column,
    with_value_tiers,
)

FEATURE_SCHEMA = StructType(
    [
        StructField("customer_id", StringType(), False),
        StructField("recency_days", IntegerType(), True),
        StructField("frequency", LongType(), True),
        StructField("monetary", DoubleType(), True),
    ]
)
TIERED_SCHEMA = StructType(
    [
        *FEATURE_SCHEMA.fields,
        StructField("value_score", IntegerType(), True),
        StructField("value_tier", StringType(), True),
    ]
)


def expected_cuts(groups: Sequence[Sequence[float]]) -> Tuple[List[float], List[float]]:
    """Raw-unit centres and boundaries of obvious 1-D clusters: means and midpoints of log1p."""
    centres = sorted(sum(math.log1p(v) for v in g) / len(g) for g in groups)
    mids = [(a + b) / 2 for a, b in zip(centres, centres[1:])]
    return [math.expm1(c) for c in centres], [math.expm1(m) for m in mids]


# Three obvious clusters per metric (low L, mid M, high H value of the metric); the rank of
# recency is reversed (L days = most recent = rank 2), the others ascending (H = rank 2).
#  id     R  F  M   ranks      score  tier
#  c01    L  H  H   2 + 2 + 2  6      high
#  c02    L  H  M   2 + 2 + 1  5      high
#  c03    L  M  M   2 + 1 + 1  4      mid   (S = 6: low < 2, high > 4)
#  c04    M  M  M   1 + 1 + 1  3      mid
#  c05    M  L  H   1 + 0 + 2  3      mid
#  c06    M  L  L   1 + 0 + 0  1      low
#  c07    H  L  L   0 + 0 + 0  0      low
#  c08    H  M  H   0 + 1 + 2  3      mid
#  c09    H  M  M   0 + 1 + 1  2      mid
#  c10    L  L  -   NULL monetary: left out of its fit, NULL score and tier
THREE_CLUSTER_ROWS = [
    ("c01", 1, 200, 5000.0, 6, "high"),
    ("c02", 2, 250, 100.0, 5, "high"),
    ("c03", 3, 10, 120.0, 4, "mid"),
    ("c04", 40, 12, 150.0, 3, "mid"),
    ("c05", 45, 1, 6000.0, 3, "mid"),
    ("c06", 50, 1, 5.0, 1, "low"),
    ("c07", 400, 2, 8.0, 0, "low"),
    ("c08", 420, 15, 8000.0, 3, "mid"),
    ("c09", 450, 11, 130.0, 2, "mid"),
    ("c10", 2, 1, None, None, None),
]
THREE_CLUSTER_GROUPS: Dict[str, List[List[float]]] = {
    "recency_days": [[1, 2, 3, 2], [40, 45, 50], [400, 420, 450]],
    "frequency": [[1, 1, 2, 1], [10, 12, 15, 11], [200, 250]],
    "monetary": [[5, 8], [100, 120, 150, 130], [5000, 6000, 8000]],
}


def test_fit_three_obvious_clusters_per_metric(spark: SparkSession) -> None:
    features = spark.createDataFrame([r[:4] for r in THREE_CLUSTER_ROWS], FEATURE_SCHEMA)

    model = fit_value_tiers(features, RFM_METRICS, k=3, seed=42)

    assert model.metrics == RFM_METRICS
    assert model.k == 3
    for feature, groups in THREE_CLUSTER_GROUPS.items():
        centres, boundaries = expected_cuts(groups)
        assert list(model.centroids[feature]) == pytest.approx(centres, rel=1e-9), feature
        assert list(model.boundaries[feature]) == pytest.approx(boundaries, rel=1e-9), feature
    # Raw-unit boundaries fall between the groups (between 2 and 10 for frequency).
    assert 2 < model.boundaries["frequency"][0] < 10 < 15 < model.boundaries["frequency"][1]
    assert model.max_score == 6
    assert model.tier_cuts == (2.0, 4.0)

    expected = spark.createDataFrame(THREE_CLUSTER_ROWS, TIERED_SCHEMA)
    assertDataFrameEqual(features.transform(with_value_tiers(model)), expected)


def _sse(values: Sequence[float], centres: Sequence[float]) -> float:
    return sum(min((v - c) ** 2 for c in centres) for v in values)


def _optimum(values: Sequence[float], k: int) -> float:
    """The lowest within-cluster sum of squares of ``k`` intervals of sorted ``values``."""
    x = sorted(values)
    best = math.inf
    for cuts in itertools.combinations(range(1, len(x)), k - 1):
        bounds = (0, *cuts, len(x))
        groups = [x[a:b] for a, b in zip(bounds, bounds[1:])]
        best = min(best, sum(_sse(g, [sum(g) / len(g)]) for g in groups))
    return best


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 40).map(lambda v: v / 4), min_size=1, max_size=9),
    st.integers(3, 4),
)
def test_kmeans_1d_is_the_optimal_clustering(values: List[float], k: int) -> None:
    centres = kmeans_1d(values, k)

    assert centres == sorted(set(centres))
    distinct = sorted(set(values))
    if len(distinct) <= k:
        assert centres == distinct
    else:
        assert len(centres) == k
        assert _sse(values, centres) == pytest.approx(_optimum(values, k), abs=1e-9)


def test_boundaries_reproduce_the_nearest_centre_and_beat_mllib(spark: SparkSession) -> None:
    values = [int(1.2**i) for i in range(40)] + [0, 0, 3, 3, 3]
    frame = spark.createDataFrame(
        [(f"c{i:02d}", v) for i, v in enumerate(values)], "customer_id string, frequency long"
    )
    model = fit_value_tiers(frame, [("frequency", True)], k=4, seed=7)

    logs = [math.log1p(v) for v in values]
    centres = [math.log1p(c) for c in model.centroids["frequency"]]
    assert len(centres) == 4
    # What the per-metric MLlib KMeans of earlier versions found: the optimum is no worse.
    vectors = VectorAssembler(inputCols=["x"], outputCol="v").transform(
        frame.withColumn("x", F.log1p(F.col("frequency").cast("double")))
    )
    mllib = KMeans(k=4, seed=7, maxIter=20, featuresCol="v").fit(vectors)
    assert _sse(logs, centres) <= _sse(logs, [float(c[0]) for c in mllib.clusterCenters()]) + 1e-9
    assert _sse(logs, centres) == pytest.approx(_optimum(logs, 4), rel=1e-12)
    # Ranking the raw values by the raw-unit boundaries is nearest-centre on the log scale.
    rows = frame.select(
        "frequency",
        rank_column(F.col("frequency"), model.boundaries["frequency"], True).alias("rank"),
    ).collect()
    assert len(rows) == len(values)
    for row in rows:
        distances = [abs(math.log1p(row["frequency"]) - c) for c in centres]
        assert row["rank"] == distances.index(min(distances)), row
    assert {r["rank"] for r in rows} == {0, 1, 2, 3}


# A saved retail model with 4 clusters per metric: S = 9, low 0-2, mid 3-6, high 7-9.
SAVED = ValueTierModel(
    metrics=RFM_METRICS,
    boundaries={
        "recency_days": (14.0, 60.0, 180.0),
        "frequency": (2.0, 5.0, 15.0),
        "monetary": (100.0, 500.0, 2000.0),
    },
    centroids={
        "recency_days": (5.0, 30.0, 90.0, 300.0),
        "frequency": (1.0, 3.0, 8.0, 30.0),
        "monetary": (40.0, 250.0, 1000.0, 5000.0),
    },
    tier_cuts=(3.0, 6.0),
    k=4,
)


def test_json_round_trip_and_scoring_new_rows(spark: SparkSession) -> None:
    assert default_tier_cuts(9) == SAVED.tier_cuts
    text = json.dumps(SAVED.to_dict())
    loaded = ValueTierModel.from_dict(json.loads(text))
    assert loaded == SAVED

    rows = [
        # id, recency, frequency, monetary -> ranks R + F + M, score, tier
        ("n1", 3, 40, 9000.0, 9, "high"),  # 3 + 3 + 3
        ("n2", 14, 15, 2000.0, 7, "high"),  # at boundaries -> lower cluster: 3 + 2 + 2
        ("n3", 15, 5, 500.0, 4, "mid"),  # 2 + 1 + 1
        ("n4", 200, 16, 2500.0, 6, "mid"),  # 0 + 3 + 3: 6 is not > 6
        ("n5", 61, 3, 100.0, 2, "low"),  # 1 + 1 + 0
        ("n6", 365, 1, -50.0, 0, "low"),  # negative spend: lowest cluster
        ("n7", 30, 2, 101.0, 3, "mid"),  # 2 + 0 + 1: 3 is not < 3
        ("n8", None, 10, 100.0, None, None),
        ("n9", 10, 10, float("nan"), None, None),
    ]
    new = spark.createDataFrame([r[:4] for r in rows], FEATURE_SCHEMA)
    expected = spark.createDataFrame(rows, TIERED_SCHEMA)
    assertDataFrameEqual(new.transform(with_value_tiers(loaded)), expected)


def test_constant_metric_and_fewer_distinct_values_than_k(spark: SparkSession) -> None:
    rows = [
        # recency constant (1 centre, rank 0), frequency 2 values, monetary 3 values: S = 0+1+2
        ("d1", 7, 1, 10.0, 0, "low"),
        ("d2", 7, 1, 10.0, 0, "low"),
        ("d3", 7, 1, 100.0, 1, "mid"),
        ("d4", 7, 5, 1000.0, 3, "high"),
        ("d5", 7, 5, 100.0, 2, "mid"),
    ]
    features = spark.createDataFrame([r[:4] for r in rows], FEATURE_SCHEMA)

    model = fit_value_tiers(features, RFM_METRICS)  # k = 4

    assert model.k == 4
    assert model.boundaries["recency_days"] == ()
    assert model.centroids["recency_days"] == pytest.approx((7.0,))
    assert model.centroids["frequency"] == pytest.approx((1.0, 5.0))
    assert model.boundaries["frequency"] == pytest.approx((math.sqrt(2 * 6) - 1,))
    assert model.centroids["monetary"] == pytest.approx((10.0, 100.0, 1000.0))
    assert model.boundaries["monetary"] == pytest.approx(
        (math.sqrt(11 * 101) - 1, math.sqrt(101 * 1001) - 1)
    )
    assert model.max_score == 3
    assert model.tier_cuts == pytest.approx((1.0, 2.0))
    expected = spark.createDataFrame(rows, TIERED_SCHEMA)
    assertDataFrameEqual(features.transform(with_value_tiers(model)), expected)

    # Every metric constant: S = 0, everybody is "mid".
    flat = ValueTierModel(
        metrics=(("recency_days", False),),
        boundaries={"recency_days": ()},
        centroids={"recency_days": (7.0,)},
        tier_cuts=default_tier_cuts(0),
        k=4,
    )
    assert ValueTierModel.from_dict(json.loads(json.dumps(flat.to_dict()))) == flat
    tiered = features.transform(with_value_tiers(flat))
    assertDataFrameEqual(
        tiered.select("customer_id", "value_score", "value_tier"),
        spark.createDataFrame(
            [(r[0], 0, "mid") for r in rows],
            "customer_id string, value_score int, value_tier string",
        ),
    )


def test_errors(spark: SparkSession) -> None:
    features = spark.createDataFrame([("a", 1, 2, 3.0)], FEATURE_SCHEMA)
    with pytest.raises(SegmentationError, match="k of the value tiers"):
        fit_value_tiers(features, RFM_METRICS, k=5)
    with pytest.raises(SegmentationError, match="twice"):
        fit_value_tiers(features, [("frequency", True), ("frequency", True)])
    with pytest.raises(InputError, match="engagement"):
        fit_value_tiers(features, [("engagement", True)])
    text = spark.createDataFrame([("a", "x")], "customer_id string, frequency string")
    with pytest.raises(InputError, match="numeric"):
        fit_value_tiers(text, [("frequency", True)])
    with pytest.raises(InputError, match="missing metric column"):
        text.transform(with_value_tiers(SAVED))
    empty = spark.createDataFrame([], FEATURE_SCHEMA)
    with pytest.raises(EmptyResultError, match="recency_days"):
        fit_value_tiers(empty, RFM_METRICS)

    broken = SAVED.to_dict()
    broken["boundaries"]["frequency"] = [5.0, 2.0, 15.0]
    with pytest.raises(InputError, match="increasing"):
        ValueTierModel.from_dict(broken)
    with pytest.raises(InputError, match="invalid value tier model"):
        ValueTierModel.from_dict({"k": 4})


def test_large_metrics_are_fitted_on_a_seeded_sample(spark: SparkSession) -> None:
    # Three well-separated bands of 100 customers each; values vary inside a band.
    bands = [(1, 3), (100, 120), (10_000, 12_000)]
    values = [lo + (i * 7919) % (hi - lo + 1) for lo, hi in bands for i in range(100)]
    frame = spark.createDataFrame(
        [(f"c{i:03d}", v) for i, v in enumerate(values)], "customer_id string, frequency long"
    )
    metric = [("frequency", True)]

    everyone = fit_value_tiers(frame, metric, k=3, seed=3, sample=0)
    logs = [[math.log1p(v) for v in values[b * 100:(b + 1) * 100]] for b in range(3)]
    assert list(everyone.centroids["frequency"]) == pytest.approx(
        [math.expm1(sum(band) / len(band)) for band in logs], rel=1e-9
    )
    sampled = fit_value_tiers(frame, metric, k=3, seed=3, sample=60)
    again = fit_value_tiers(frame, metric, k=3, seed=3, sample=60)
    assert sampled.centroids == again.centroids  # seeded
    assert sampled.centroids != everyone.centroids  # a sample, not everyone
    for centre, (lo, hi) in zip(sampled.centroids["frequency"], bands):
        assert lo <= centre <= hi
    assert 3 < sampled.boundaries["frequency"][0] < 100 < 120 < sampled.boundaries["frequency"][1]
    # At or above the number of customers, the sample is everyone.
    assert fit_value_tiers(frame, metric, k=3, seed=3, sample=300).centroids == everyone.centroids
