"""Tests of segmentation.segments.scores: quintile cut points, scores, the named RFM grid."""

from __future__ import annotations

import json
import math
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)
from pyspark.testing import assertDataFrameEqual

from segmentation.errors import EmptyResultError, InputError
from segmentation.segments.scores import (
    QUANTILES,
    RFE_SCORES,
    RFM_GRID,
    RFM_SCORES,
    RFM_SEGMENTS,
    ScoreSpec,
    grid_rows,
    score_cut_points,
    score_specs,
    with_rfm_segment,
    with_scores,
)

FEATURE_SCHEMA = StructType(
    [
        StructField("customer_id", StringType(), False),
        StructField("recency_days", IntegerType(), True),
        StructField("frequency", LongType(), True),
        StructField("monetary", DoubleType(), True),
    ]
)
SCORED_SCHEMA = StructType(
    [
        *FEATURE_SCHEMA.fields,
        StructField("r_score", IntegerType(), True),
        StructField("f_score", IntegerType(), True),
        StructField("m_score", IntegerType(), True),
    ]
)


def reference_score(
    value: Optional[float], cuts: Sequence[float], higher_is_better: bool
) -> Optional[int]:
    """The documented rule in plain Python: bucket = 1 + #cut points strictly below the value."""
    if value is None:
        return None
    bucket = 1 + sum(1 for c in cuts if value > c)
    return bucket if higher_is_better else 6 - bucket


def reference_quantile(values: Sequence[float], p: float) -> float:
    """Exact quantile as approxQuantile(relative_error=0): the element of rank ceil(p * n)."""
    ordered = sorted(values)
    return float(ordered[math.ceil(p * len(ordered)) - 1])


# ---------------------------------------------------------------- the grid (no Spark)


def test_grid_covers_every_cell_once_with_the_11_names() -> None:
    cells = [(r, fm) for r in range(1, 6) for fm in range(1, 6)]
    assert sorted(RFM_GRID) == cells
    assert len(RFM_GRID) == 25
    assert set(RFM_GRID.values()) == set(RFM_SEGMENTS)
    assert len(RFM_SEGMENTS) == 11
    assert set(RFM_SEGMENTS) == {
        "champions", "loyal customers", "potential loyalists", "new customers", "promising",
        "need attention", "about to sleep", "at risk", "can't lose them", "hibernating", "lost",
    }
    for name in RFM_SEGMENTS:
        assert re.fullmatch(r"[a-z' ]+", name), name
    assert grid_rows() == [
        (5, ["new customers", "potential loyalists", "potential loyalists", "champions",
             "champions"]),
        (4, ["promising", "potential loyalists", "potential loyalists", "loyal customers",
             "loyal customers"]),
        (3, ["about to sleep", "about to sleep", "need attention", "loyal customers",
             "loyal customers"]),
        (2, ["hibernating", "hibernating", "at risk", "at risk", "can't lose them"]),
        (1, ["lost", "lost", "at risk", "at risk", "can't lose them"]),
    ]


def test_score_specs_from_a_feature_set_mapping() -> None:
    scores = {"r_score": "recency_days", "f_score": "frequency", "m_score": "monetary"}
    assert score_specs(scores) == RFM_SCORES
    weights = {"recency_days": -1.0, "frequency": 1.0, "engagement": 1.0}
    rfe = {"r_score": "recency_days", "f_score": "frequency", "e_score": "engagement"}
    assert score_specs(rfe, weights) == RFE_SCORES
    assert score_specs({"x_score": "x"}, {"x": -1.0}) == (ScoreSpec("x_score", "x", False),)


# ---------------------------------------------------------------- with_scores


def test_with_scores_ties_recency_reversed_nulls(spark: SparkSession) -> None:
    cuts = {
        "r_score": [10.0, 30.0, 60.0, 120.0],
        "f_score": [1.0, 1.0, 2.0, 5.0],  # c1 = c2: bucket 2 is empty, 1 holds every "1"
        "m_score": [50.0, 100.0, 200.0, 500.0],
    }
    rows = [
        # id, recency, frequency, monetary -> r, f, m
        ("c01", 5, 1, 50.0, 5, 1, 1),  # monetary at c1 -> lower bucket
        ("c02", 10, 2, 50.01, 5, 3, 2),  # recency at c1 -> the more recent side, 5
        ("c03", 11, 3, 100.0, 4, 4, 2),
        ("c04", 30, 5, 200.0, 4, 4, 3),  # every value at a cut point
        ("c05", 31, 6, 500.0, 3, 5, 4),
        ("c06", 120, 100, 500.5, 2, 5, 5),  # recency at c4 -> 2, not 1
        ("c07", 121, 0, -20.0, 1, 1, 1),  # net negative spend -> 1
        ("c08", None, 1, None, None, 1, None),
        ("c09", 60, None, 1e6, 3, None, 5),
    ]
    features = spark.createDataFrame([r[:4] for r in rows], FEATURE_SCHEMA)
    expected = spark.createDataFrame(rows, SCORED_SCHEMA)
    assertDataFrameEqual(features.transform(with_scores(cuts, RFM_SCORES)), expected)


def test_with_scores_rejects_bad_cut_points_and_columns(spark: SparkSession) -> None:
    good = {"r_score": [1.0, 2.0, 3.0, 4.0], "f_score": [1.0, 2.0, 3.0, 4.0]}
    specs = RFM_SCORES[:2]
    with pytest.raises(InputError, match="m_score"):
        with_scores(good, RFM_SCORES)
    with pytest.raises(InputError, match="4 cut points"):
        with_scores({**good, "f_score": [1.0, 2.0]}, specs)
    with pytest.raises(InputError, match="sorted"):
        with_scores({**good, "f_score": [1.0, 3.0, 2.0, 4.0]}, specs)
    frame = spark.createDataFrame([("a", "x")], "customer_id string, frequency string")
    with pytest.raises(InputError, match="recency_days"):
        frame.transform(with_scores(good, specs))
    with pytest.raises(InputError, match="numeric"):
        frame.transform(with_scores(good, specs[1:]))


# ---------------------------------------------------------------- cut points


def test_cut_points_are_exact_quantiles_and_heavy_ties_skew_the_buckets(
    spark: SparkSession,
) -> None:
    recency = [7, 1, 12, 3, 9, 5, 11, 2, 8, 4, 10, 6]
    frequency = [1, 1, 2, 1, 9, 1, 3, 1, 1, 2, 5, 1]  # 7 of 12 customers buy once
    monetary: List[Optional[float]] = [
        10.5, 300.0, 22.0, 10.5, 999.0, 47.25, None, 5.0, 80.0, 150.0, 61.0, 12.0,
    ]
    rows = [
        (f"c{i:02d}", r, f, m) for i, (r, f, m) in enumerate(zip(recency, frequency, monetary))
    ]
    features = spark.createDataFrame(rows, FEATURE_SCHEMA)

    cuts = score_cut_points(features, RFM_SCORES, relative_error=0.0)

    present = [m for m in monetary if m is not None]  # NULLs are ignored
    expected = {
        "r_score": [reference_quantile(recency, p) for p in QUANTILES],
        "f_score": [reference_quantile(frequency, p) for p in QUANTILES],
        "m_score": [reference_quantile(present, p) for p in QUANTILES],
    }
    assert cuts == expected
    assert cuts == {
        "r_score": [3.0, 5.0, 8.0, 10.0],
        "f_score": [1.0, 1.0, 2.0, 3.0],
        "m_score": [10.5, 22.0, 61.0, 150.0],
    }
    for name, column in (("r_score", recency), ("f_score", frequency), ("m_score", present)):
        numpy_cuts = np.percentile(column, [100 * p for p in QUANTILES], method="inverted_cdf")
        assert cuts[name] == [float(c) for c in numpy_cuts]
    assert json.loads(json.dumps(cuts)) == cuts
    assert all(type(c) is float for values in cuts.values() for c in values)

    # Ties: the seven "1"s all score 1 (58%), and f_score 2 is empty (c1 = c2 = 1).
    scored = features.transform(with_scores(cuts, RFM_SCORES))
    expected_scores = spark.createDataFrame(
        [
            (cid, r, f, m, reference_score(r, cuts["r_score"], False),
             reference_score(f, cuts["f_score"], True), reference_score(m, cuts["m_score"], True))
            for cid, r, f, m in rows
        ],
        SCORED_SCHEMA,
    )
    assertDataFrameEqual(scored, expected_scores)
    assert sorted(reference_score(f, cuts["f_score"], True) for f in frequency) == [
        1, 1, 1, 1, 1, 1, 1, 3, 3, 4, 5, 5,
    ]


def test_cut_points_errors(spark: SparkSession) -> None:
    empty = spark.createDataFrame([], FEATURE_SCHEMA)
    with pytest.raises(EmptyResultError, match="recency_days"):
        score_cut_points(empty, RFM_SCORES)
    text = spark.createDataFrame([("a", "1")], "customer_id string, frequency string")
    with pytest.raises(InputError, match="missing"):
        score_cut_points(text, RFM_SCORES)
    with pytest.raises(InputError, match="numeric"):
        score_cut_points(text, RFM_SCORES[1:2])


# ---------------------------------------------------------------- the RFM segment


def test_with_rfm_segment_cells(spark: SparkSession) -> None:
    schema = StructType(
        [
            StructField("customer_id", StringType(), False),
            StructField("r_score", IntegerType(), True),
            StructField("f_score", IntegerType(), True),
            StructField("m_score", IntegerType(), True),
        ]
    )
    rows = [
        # id, r, f, m -> fm, segment
        ("a", 5, 5, 5, 5, "champions"),
        ("b", 5, 1, 1, 1, "new customers"),
        ("c", 5, 1, 2, 2, "potential loyalists"),  # (1 + 2) / 2 = 1.5 rounds half up
        ("d", 4, 1, 1, 1, "promising"),
        ("e", 4, 4, 5, 5, "loyal customers"),
        ("f", 3, 3, 3, 3, "need attention"),
        ("g", 3, 2, 1, 2, "about to sleep"),
        ("h", 2, 5, 4, 5, "can't lose them"),
        ("i", 1, 4, 3, 4, "at risk"),
        ("j", 2, 2, 1, 2, "hibernating"),
        ("k", 1, 1, 2, 2, "lost"),
        ("l", None, 3, 3, 3, None),
        ("m", 3, None, 3, None, None),
    ]
    scored = spark.createDataFrame([r[:4] for r in rows], schema)
    expected = spark.createDataFrame(
        rows,
        StructType(
            [
                *schema.fields,
                StructField("fm_score", IntegerType(), True),
                StructField("rfm_segment", StringType(), True),
            ]
        ),
    )
    assertDataFrameEqual(scored.transform(with_rfm_segment(RFM_SCORES)), expected)
    with pytest.raises(InputError, match="e_score"):
        scored.transform(with_rfm_segment(RFE_SCORES))


# ---------------------------------------------------------------- property test


@settings(max_examples=30, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.integers(0, 30)), min_size=1, max_size=12),
    cuts=st.lists(st.integers(0, 30), min_size=4, max_size=4).map(sorted),
)
def test_scores_match_the_reference_rule(
    spark: SparkSession, values: List[Optional[int]], cuts: List[int]
) -> None:
    cut_points: Dict[str, List[float]] = {
        "up": [float(c) for c in cuts], "down": [float(c) for c in cuts],
    }
    specs = [ScoreSpec("up", "v", True), ScoreSpec("down", "v", False)]
    frame = spark.createDataFrame(
        [(i, v) for i, v in enumerate(values)], "i int, v long"
    )
    # A projection of local rows: Spark evaluates it on the driver, no job per example.
    rows = sorted(frame.transform(with_scores(cut_points, specs)).collect(), key=lambda r: r["i"])

    assert [(r["up"], r["down"]) for r in rows] == [
        (reference_score(v, cuts, True), reference_score(v, cuts, False)) for v in values
    ]
    scored = [(r["v"], r["up"], r["down"]) for r in rows if r["v"] is not None]
    assert all(r["up"] is None and r["down"] is None for r in rows if r["v"] is None)
    for _, up, down in scored:
        assert 1 <= up <= 5 and 1 <= down <= 5
        assert up + down == 6
    for v1, up1, down1 in scored:
        for v2, up2, down2 in scored:
            if v1 == v2:
                assert (up1, down1) == (up2, down2)
            if v1 < v2:
                assert up1 <= up2 and down1 >= down2
