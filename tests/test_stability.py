"""Stability across seeds (adjusted Rand index), --select stable, --algorithm and their flags."""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path
from typing import Dict, Hashable, Sequence, Tuple

import pytest
from outputs import published
from pyspark.sql import SparkSession
from pyspark.sql.types import DoubleType, IntegerType, StringType, StructField, StructType

from segmentation.cli import main
from segmentation.errors import InputError, SegmentationError
from segmentation.parser import build_parser, cluster_options
from segmentation.pipeline import ClusterOptions
from segmentation.segments.clustering import (
    ALGORITHMS,
    DEFAULT_STABILITY_SEEDS,
    KResult,
    SegmentationModel,
    choose_k,
    fit_segments,
    sweep_k,
)
from segmentation.segments.metrics import (
    adjusted_rand_from_contingency,
    adjusted_rand_index,
    pairwise_adjusted_rand,
)

# ---------------------------------------------------------------- a pure-Python reference


def reference_ari(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """ARI by enumerating every pair of points (O(n^2)): the pair-confusion form.

    ``tp``: pairs together in both, ``fn``/``fp``: together in one only, ``tn``: apart in both;
    ``ARI = 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn))``, 1 if ``fn = fp = 0``.
    """
    tp = fp = fn = tn = 0
    for i, j in combinations(range(len(labels_a)), 2):
        same_a = labels_a[i] == labels_a[j]
        same_b = labels_b[i] == labels_b[j]
        tp += same_a and same_b
        fn += same_a and not same_b
        fp += same_b and not same_a
        tn += not same_a and not same_b
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def contingency(
    labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]
) -> Dict[Tuple[Hashable, Hashable], int]:
    table: Dict[Tuple[Hashable, Hashable], int] = {}
    for a, b in zip(labels_a, labels_b):
        table[(a, b)] = table.get((a, b), 0) + 1
    return table


def ari(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    return adjusted_rand_from_contingency(contingency(labels_a, labels_b))


# ---------------------------------------------------------------- ARI on the driver


def test_ari_hand_computed_cases() -> None:
    labels = [0, 0, 1, 1, 1, 2, 2]
    assert ari(labels, labels) == 1.0
    # the same partition under other names
    assert ari(labels, ["c", "c", "a", "a", "a", "b", "b"]) == 1.0
    assert ari(labels, [2, 2, 0, 0, 0, 1, 1]) == 1.0
    # scikit-learn's documented examples. [0,0,1,1] vs [0,1,0,1]: index 0, rows and columns
    # C(2,2) + C(2,2) = 2 each, C(4,2) = 6 -> (0 - 2*2/6) / (2 - 2*2/6) = -0.5.
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5, abs=1e-15)
    # [0,0,1,1] vs [0,0,1,2]: index 1, rows 2, columns 1 -> (1 - 2/6) / (1.5 - 2/6) = 4/7.
    assert ari([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7, rel=1e-15)
    assert ari([0, 0, 1, 2], [0, 0, 1, 1]) == pytest.approx(4 / 7, rel=1e-15)
    # one cluster against all singletons: no agreement beyond chance
    assert ari([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    # degenerate: identical trivial partitions, and fewer than two points
    assert ari([5, 5, 5], [1, 1, 1]) == 1.0
    assert ari([0, 1, 2], [2, 0, 1]) == 1.0
    assert ari([0], [1]) == 1.0
    assert adjusted_rand_from_contingency({}) == 1.0
    with pytest.raises(SegmentationError, match="negative count"):
        adjusted_rand_from_contingency({(0, 0): 3, (0, 1): -1})


def test_ari_matches_the_pair_counting_reference() -> None:
    rng = random.Random(5)
    for n, ka, kb in [(2, 2, 2), (9, 2, 3), (30, 3, 3), (57, 4, 6), (80, 10, 2)]:
        a = [rng.randrange(ka) for _ in range(n)]
        b = [rng.randrange(kb) for _ in range(n)]
        assert ari(a, b) == pytest.approx(reference_ari(a, b), rel=1e-12, abs=1e-15)


# ---------------------------------------------------------------- ARI in Spark


def test_spark_ari_matches_the_reference(spark: SparkSession) -> None:
    rng = random.Random(11)
    rows = []
    for i in range(45):
        p = rng.randrange(3)
        q = p if rng.random() < 0.7 else rng.randrange(4)  # mostly agrees with p
        rows.append((i, p, q, rng.randrange(2)))
    schema = StructType(
        [StructField(name, IntegerType(), False) for name in ("id", "p", "q", "r")]
    )
    frame = spark.createDataFrame(rows, schema)
    labels = {name: [row[i + 1] for row in rows] for i, name in enumerate(("p", "q", "r"))}
    got = pairwise_adjusted_rand(frame, ["p", "q", "r"])  # one job for the three pairs
    want = [reference_ari(labels[a], labels[b]) for a, b in combinations("pqr", 2)]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert 0.2 < got[0] < 1.0  # p and q agree a lot, not fully
    assert adjusted_rand_index(frame, "q", "q") == 1.0
    with pytest.raises(SegmentationError, match="two label columns"):
        pairwise_adjusted_rand(frame, ["p"])


# ---------------------------------------------------------------- stability in the sweep

# Three tight, far-apart blobs of 16 points each (x, y): every seed finds the same partition.
GRID = [(dx, dy) for dx in (-0.3, -0.1, 0.1, 0.3) for dy in (-0.3, -0.1, 0.1, 0.3)]
BLOBS = [(cx + dx, cy + dy) for cx, cy in ((0.0, 0.0), (20.0, 0.0), (0.0, 20.0)) for dx, dy in GRID]


def test_stability_of_well_separated_blobs(spark: SparkSession) -> None:
    schema = StructType(
        [
            StructField("customer_id", StringType(), False),
            StructField("x", DoubleType(), False),
            StructField("y", DoubleType(), False),
        ]
    )
    frame = spark.createDataFrame(
        [(f"c{i:02d}", x, y) for i, (x, y) in enumerate(BLOBS)], schema
    )
    # a 30-customer sample of the 48 (drawn once for both ks), 3 seeds per k
    two, three = sweep_k(frame, ["x", "y"], [2, 3], transform="none", max_iter=10,
                         stability_seeds=3, stability_sample=30)
    assert three.stability == pytest.approx(1.0, abs=1e-12)
    assert three.cluster_sizes == [16, 16, 16]
    assert two.stability is not None and -1.0 <= two.stability <= 1.0
    assert choose_k([two, three], "stable") == 3
    assert three.to_dict()["stability"] == three.stability


def test_bisecting_kmeans_splits_standardised_data(spark: SparkSession) -> None:
    # MLlib's bisection starts from the centre moved by 1e-4 * its norm: on centred data (the
    # origin) it never split and returned one cluster; the uncentred scaler avoids that.
    schema = "customer_id string, x double, y double"
    frame = spark.createDataFrame([(f"c{i:02d}", x, y) for i, (x, y) in enumerate(BLOBS)], schema)
    [three] = sweep_k(frame, ["x", "y"], [3], transform="standard", max_iter=10,
                      algorithm="bisecting-kmeans")
    assert three.cluster_sizes == [16, 16, 16]
    assert three.silhouette is not None and three.silhouette > 0.99


def test_stability_options_are_checked(spark: SparkSession) -> None:
    frame = spark.createDataFrame(
        [("a", 1.0), ("b", 2.0), ("c", 9.0)], "customer_id string, x double"
    )
    with pytest.raises(SegmentationError, match="stability_seeds must be 0"):
        sweep_k(frame, ["x"], [2], stability_seeds=1)
    with pytest.raises(SegmentationError, match="stability_sample must be at least 2"):
        sweep_k(frame, ["x"], [2], stability_seeds=2, stability_sample=1)
    with pytest.raises(SegmentationError, match="unknown clustering algorithm 'dbscan'"):
        sweep_k(frame, ["x"], [2], algorithm="dbscan")
    with pytest.raises(SegmentationError, match="unknown clustering algorithm 'kmedoids'"):
        fit_segments(frame, ["x"], 2, {"x": 1}, recency_col="x", algorithm="kmedoids")


# ---------------------------------------------------------------- choose_k(..., "stable")


def result(k: int, silhouette: float, stability: object) -> KResult:
    return KResult(k=k, wssse=100.0 / k, silhouette=silhouette, davies_bouldin=None,
                   calinski_harabasz=None, cluster_sizes=[1] * k, non_empty_clusters=k,
                   seconds=0.0, stability=stability)  # type: ignore[arg-type]


def test_choose_k_stable() -> None:
    # best silhouette 0.80 (k=4); within 0.05: k=3 (0.76), k=4, k=5 (0.75, the edge); k=6 is not
    results = [result(2, 0.60, 0.99), result(3, 0.76, 0.90), result(4, 0.80, 0.85),
               result(5, 0.75, 0.95), result(6, 0.74, 1.0)]
    assert choose_k(results, "stable") == 5
    assert choose_k(results, "silhouette") == 4
    # ties on stability -> the smaller k; a k without stability is skipped
    tied = [result(3, 0.70, 0.9), result(4, 0.72, 0.9), result(5, 0.71, None)]
    assert choose_k(tied, "stable") == 3
    assert choose_k([result(2, 0.5, None), result(3, 0.9, 0.1)], "stable") == 3
    with pytest.raises(SegmentationError, match="no stability"):
        choose_k([result(2, 0.5, 0.9), result(3, 0.9, None)], "stable")
    with pytest.raises(SegmentationError, match="no k has a silhouette"):
        choose_k([result(2, float("nan"), 0.9), result(3, float("nan"), 0.9)], "stable")
    assert choose_k([result(7, 0.1, None)], "stable") == 7  # one k: that k


# ---------------------------------------------------------------- the flags


def test_cluster_flags_parse() -> None:
    parser = build_parser()
    base = ["run", "--source", "retail", "--input", "in.csv", "--output", "out"]
    defaults = cluster_options(parser.parse_args(base))
    assert (defaults.algorithm, defaults.stability_seeds, defaults.stability_sample) == (
        "kmeans", None, 20_000)
    assert defaults.seeds_for_stability == 0
    stable = cluster_options(parser.parse_args([*base, "--select", "stable"]))
    assert stable.seeds_for_stability == DEFAULT_STABILITY_SEEDS == 3
    args = parser.parse_args(
        ["cluster", "--input", "f", "--output", "o", "--algorithm", "bisecting-kmeans",
         "--stability-seeds", "4", "--stability-sample", "500"]
    )
    options = cluster_options(args)
    assert (options.algorithm, options.stability_seeds, options.stability_sample) == (
        "bisecting-kmeans", 4, 500)
    assert options.select == "silhouette" and options.seeds_for_stability == 4
    assert cluster_options(parser.parse_args([*base, "--stability-seeds", "0"])
                           ).seeds_for_stability == 0
    for bad in (["--algorithm", "dbscan"], ["--stability-seeds", "1"],
                ["--stability-seeds", "-2"], ["--stability-sample", "1"],
                ["--select", "gap"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*base, *bad])
    with pytest.raises(InputError, match="--select stable needs"):
        cluster_options(parser.parse_args([*base, "--select", "stable", "--stability-seeds", "0"]))
    assert ClusterOptions(select="stable", stability_seeds=2).seeds_for_stability == 2
    assert ALGORITHMS == ("kmeans", "bisecting-kmeans", "gmm")


# ---------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_run_with_gmm_and_stability(
    spark: SparkSession, retail_sample: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert main(["run", "--source", "retail", "--input", str(retail_sample), "--output",
                 str(out), "--k", "3-4", "--algorithm", "gmm", "--stability-seeds", "2"]) == 0
    out = published(out)  # the run folder OUT/LATEST names
    selection = json.loads((out / "k_selection.json").read_text())
    assert selection["algorithm"] == "gmm" and selection["method"] == "silhouette"
    assert selection["stability"]["seeds"] == 2
    assert [r["k"] for r in selection["results"]] == [3, 4]
    for row in selection["results"]:
        assert isinstance(row["stability"], float) and -1.0 <= row["stability"] <= 1.0
        assert row["wssse"] > 0 and sum(row["cluster_sizes"]) == 254
    assert sum(r["chosen"] for r in selection["results"]) == 1
    table = spark.read.parquet(str(out / "k_selection"))
    assert table.schema["stability"].dataType == DoubleType()
    described = json.loads((out / "run.json").read_text())
    assert described["clustering"]["algorithm"] == "gmm"
    assert described["clustering"]["k"] == selection["chosen_k"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["clustering"]["algorithm"] == "gmm"
    assert manifest["clustering"]["stability_seeds"] == 2
    assert manifest["clustering"]["stability_sample"] == 20_000
    model = SegmentationModel.load(str(out / "model"))
    assert model.algorithm == "gmm" and len(model.labels) == selection["chosen_k"]

