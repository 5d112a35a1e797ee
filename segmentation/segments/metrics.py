"""Quality metrics of a clustering, from per-cluster sums: two passes over the points per k.

Every metric is a function of the assignment of the points (a prediction column) and of the
cluster centres, so the algorithms of :mod:`segmentation.segments.clustering` are compared on the
same terms. :func:`cluster_statistics` makes two passes over the predictions:

1. one ``groupBy(cluster)`` of the points' count, coordinate sums ``Y_c`` and squared norms
   ``Psi_c`` (k rows collected);
2. one ``groupBy(cluster)`` of, per point, its squared and plain Euclidean distance to its centre
   and its squared-Euclidean silhouette, computed from the sums of pass 1 as plain arithmetic
   columns (generated code; no UDF, no higher-order function).

From these come:

* WSSSE: the sum of squared distances from each point to its cluster's centre;
* the silhouette on *squared* Euclidean distances, as MLlib's ``ClusteringEvaluator`` with
  ``distanceMeasure="squaredEuclidean"`` computes it (its O(n) form: the mean squared distance
  from a point ``x`` to the points of cluster ``c`` is
  ``|x|^2 + Psi_c / n_c - 2 x . Y_c / n_c``; a point's own cluster excludes the point itself,
  a point alone in its cluster scores 0). It is larger than the textbook Euclidean silhouette on
  the same clustering. Higher is better;
* Davies-Bouldin (lower is better) and Calinski-Harabasz (higher is better), with Euclidean
  distances as in scikit-learn, from the per-cluster counts, mean distances and centres.

The metrics are computed over the non-empty clusters and are ``None`` where undefined: fewer than
two non-empty clusters, or as many clusters as points (scikit-learn's rule
``2 <= clusters <= points - 1``), and Calinski-Harabasz also when every cluster has zero spread.

The adjusted Rand index (:func:`adjusted_rand_from_contingency`, :func:`pairwise_adjusted_rand`)
measures the agreement of two labellings, for the stability across seeds.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.errors import SegmentationError
from segmentation.sources.common import sql_identifier


@dataclass(frozen=True)
class ClusterStatistics:
    """One non-empty cluster, as measured by :func:`cluster_statistics`."""

    cluster: int  #: the prediction (index into the centres)
    count: int
    mean: Tuple[float, ...]  #: mean of the cluster's points
    mean_distance: float  #: mean Euclidean distance of the points to the centre
    sum_squared_distance: float  #: summed squared Euclidean distance to the centre
    silhouette_sum: float  #: summed squared-Euclidean silhouette of the cluster's points


@dataclass(frozen=True)
class ClusteringMetrics:
    """The metrics of one clustering (see the module docstring); ``None`` where undefined."""

    wssse: float
    silhouette: Optional[float]
    davies_bouldin: Optional[float]
    calinski_harabasz: Optional[float]
    cluster_sizes: List[int]  #: points per centre, largest first (empty centres as 0)
    non_empty_clusters: int


def _dot(xs: Sequence[Column], ys: Sequence[float]) -> Column:
    """``sum(x_i * y_i)`` as one arithmetic expression."""
    total: Column = F.lit(0.0)
    for x, y in zip(xs, ys):
        total = total + x * F.lit(float(y))
    return total


def _case(on: Column, values: Mapping[int, Column]) -> Column:
    """``CASE on WHEN key THEN value ... END`` (NULL for any other ``on``)."""
    expression: Optional[Column] = None
    for key, value in values.items():
        expression = (F.when(on == key, value) if expression is None
                      else expression.when(on == key, value))
    assert expression is not None
    return expression


def _sum_squares(xs: Sequence[Column]) -> Column:
    """``sum(x_i ** 2)`` as one arithmetic expression."""
    total: Column = F.lit(0.0)
    for x in xs:
        total = total + x * x
    return total


def _points(
    predictions: DataFrame, features_col: str, prediction_col: str, dims: int
) -> DataFrame:
    """``cluster`` (int) and the coordinates ``x0, x1, ...`` of each point."""
    array = vector_to_array(F.col(sql_identifier(features_col)))
    return predictions.select(
        F.col(sql_identifier(prediction_col)).cast("int").alias("cluster"),
        *[array[d].alias(f"x{d}") for d in range(dims)],
    )


def _sums(
    predictions: DataFrame, features_col: str, prediction_col: str, dims: int
) -> Dict[int, Tuple[int, List[float], float]]:
    """Pass 1: cluster -> (points, coordinate sums, summed squared norms)."""
    xs = [F.col(f"x{d}") for d in range(dims)]
    rows = _points(predictions, features_col, prediction_col, dims).groupBy("cluster").agg(
        F.count(F.lit(1)).alias("n"),
        *[F.sum(x).alias(f"y{d}") for d, x in enumerate(xs)],
        F.sum(_sum_squares(xs)).alias("psi"),
    ).collect()
    return {
        int(r["cluster"]): (int(r["n"]), [float(r[f"y{d}"]) for d in range(dims)], float(r["psi"]))
        for r in rows
    }


def cluster_statistics(
    predictions: DataFrame,
    centroids: Sequence[Sequence[float]],
    features_col: str,
    prediction_col: str,
    centre_on_means: bool = False,
) -> List[ClusterStatistics]:
    """Per non-empty cluster: size, mean, distances to the centre and summed silhouette.

    Parameters
    ----------
    predictions
        One row per point with the vector ``features_col`` and the integer ``prediction_col``
        indexing ``centroids``.
    centroids
        The model's centres (their dimension is the vectors').
    features_col, prediction_col
        Column names.
    centre_on_means
        Measure distances to the mean of each cluster's points instead of ``centroids`` (for a
        gaussian mixture, whose means are weighted means of *all* points).

    Returns
    -------
    list of ClusterStatistics
        Ordered by cluster; clusters without a point are absent.

    Notes
    -----
    Two Spark jobs (see the module docstring); k rows are collected from each.
    """
    dims = len(centroids[0]) if centroids else 0
    sums = _sums(predictions, features_col, prediction_col, dims)
    if not sums:
        return []
    means = {c: [y / n for y in ys] for c, (n, ys, _) in sums.items()}
    centres = {
        c: (means[c] if centre_on_means or c >= len(centroids) else list(centroids[c]))
        for c in sums
    }
    xs = [F.col(f"x{d}") for d in range(dims)]
    cluster = F.col("cluster")
    # Built in steps, each projection naming what the next reuses (the squared norm, the mean
    # squared distance to each cluster, the point's own and nearest other cluster): written as
    # one expression, every reuse copies a whole subtree, and planning the copies cost ~0.5 s
    # per k on any number of points.
    normed = _points(predictions, features_col, prediction_col, dims).select(
        "cluster", *xs, _sum_squares(xs).alias("norm")
    )
    # Mean squared distance from the point to the points of each non-empty cluster.
    to_cluster = {
        c: F.col("norm") + F.lit(psi / n) - F.lit(2.0 / n) * _dot(xs, ys)
        for c, (n, ys, psi) in sums.items()
    }
    squared = _case(
        cluster,
        {c: _sum_squares([x - F.lit(float(v)) for x, v in zip(xs, centre)])
         for c, centre in centres.items()},
    )
    distances = normed.select(
        "cluster",
        squared.alias("sq"),
        _case(cluster, {c: F.lit(float(n)) for c, (n, _, _) in sums.items()}).alias("size"),
        *[d.alias(f"d{c}") for c, d in to_cluster.items()],
    )
    # Excluding the point itself from its own cluster's mean (no division for a lone point).
    size = F.col("size")
    own = F.when(
        size > 1, _case(cluster, {c: F.col(f"d{c}") for c in to_cluster}) * size / (size - 1.0)
    )
    others = [F.when(cluster != c, F.col(f"d{c}")) for c in to_cluster]
    nearest = F.least(*others) if len(others) > 1 else others[0]
    paired = distances.select("cluster", "sq", "size", own.alias("own"), nearest.alias("other"))
    own, other = F.col("own"), F.col("other")
    silhouette = (
        F.when(size <= 1, F.lit(0.0))
        .when(own < other, F.lit(1.0) - own / other)
        .when(own > other, other / own - F.lit(1.0))
        .otherwise(F.lit(0.0))
    )
    measured = (
        paired.select("cluster", "sq", silhouette.alias("s"))
        .groupBy("cluster")
        .agg(
            F.avg(F.sqrt("sq")).alias("mean_distance"),
            F.sum("sq").alias("sse"),
            F.sum("s").alias("silhouette"),
        )
        .collect()
    )
    return sorted(
        (
            ClusterStatistics(
                cluster=int(r["cluster"]),
                count=sums[int(r["cluster"])][0],
                mean=tuple(means[int(r["cluster"])]),
                mean_distance=float(r["mean_distance"]),
                sum_squared_distance=float(r["sse"]),
                silhouette_sum=float(r["silhouette"]),
            )
            for r in measured
        ),
        key=lambda s: s.cluster,
    )


def _distance(a: Sequence[float], b: Sequence[float]) -> float:
    """Euclidean distance of two points."""
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def finite(value: float) -> Optional[float]:
    """``value`` or ``None`` if it is NaN or infinite."""
    return value if math.isfinite(value) else None


def _defined(stats: Sequence[ClusterStatistics]) -> bool:
    """Whether the indices are defined: ``2 <= clusters <= points - 1``."""
    return 2 <= len(stats) < sum(s.count for s in stats)


def _db_ch(
    stats: Sequence[ClusterStatistics], centres: Sequence[Sequence[float]]
) -> Tuple[Optional[float], Optional[float]]:
    """Davies-Bouldin and Calinski-Harabasz from the statistics and the centre of each cluster."""
    clusters = len(stats)
    points = sum(s.count for s in stats)
    if not _defined(stats):
        return None, None
    worst: List[float] = []
    for i, si in enumerate(stats):
        ratios = []
        for j, sj in enumerate(stats):
            if i == j:
                continue
            separation = _distance(centres[i], centres[j])
            # Coinciding centroids: scikit-learn counts the pair as 0 rather than infinity.
            ratios.append((si.mean_distance + sj.mean_distance) / separation if separation else 0.0)
        worst.append(max(ratios))
    davies_bouldin = sum(worst) / clusters
    dims = len(centres[0])
    overall = [sum(s.count * c[d] for s, c in zip(stats, centres)) / points for d in range(dims)]
    between = sum(s.count * _distance(c, overall) ** 2 for s, c in zip(stats, centres))
    within = sum(s.sum_squared_distance for s in stats)
    calinski_harabasz = (
        None
        if within <= 0
        else finite(between * (points - clusters) / (within * (clusters - 1)))
    )
    return finite(davies_bouldin), calinski_harabasz


def clustering_metrics(
    predictions: DataFrame,
    centroids: Sequence[Sequence[float]],
    features_col: str,
    prediction_col: str,
    centre_on_means: bool = False,
) -> ClusteringMetrics:
    """WSSSE, silhouette, Davies-Bouldin, Calinski-Harabasz and sizes of one clustering.

    Parameters are those of :func:`cluster_statistics`; two Spark jobs in all.
    """
    stats = cluster_statistics(
        predictions, centroids, features_col, prediction_col, centre_on_means
    )
    centres = [
        list(s.mean) if centre_on_means or s.cluster >= len(centroids)
        else list(centroids[s.cluster])
        for s in stats
    ]
    davies_bouldin, calinski_harabasz = _db_ch(stats, centres)
    points = sum(s.count for s in stats)
    silhouette = (
        finite(sum(s.silhouette_sum for s in stats) / points) if _defined(stats) else None
    )
    counts = {s.cluster: s.count for s in stats}
    return ClusteringMetrics(
        wssse=sum(s.sum_squared_distance for s in stats),
        silhouette=silhouette,
        davies_bouldin=davies_bouldin,
        calinski_harabasz=calinski_harabasz,
        cluster_sizes=sorted(
            (counts.get(i, 0) for i in range(max(len(centroids), max(counts, default=-1) + 1))),
            reverse=True,
        ),
        non_empty_clusters=len(stats),
    )


def davies_bouldin_calinski_harabasz(
    predictions: DataFrame,
    centroids: Sequence[Sequence[float]],
    features_col: str = "features",
    prediction_col: str = "prediction",
) -> Tuple[Optional[float], Optional[float]]:
    """Davies-Bouldin and Calinski-Harabasz indices of a clustering (Euclidean distances).

    Parameters
    ----------
    predictions
        One row per point with the vector ``features_col`` and the integer ``prediction_col``
        indexing ``centroids``.
    centroids
        Cluster centres (normally the means of their points, as KMeans centres are once KMeans
        has converged). Entries with no point are ignored.
    features_col, prediction_col
        Column names.

    Returns
    -------
    tuple of (float or None, float or None)
        ``(davies_bouldin, calinski_harabasz)``; ``None`` when undefined (see the module notes).
    """
    metrics = clustering_metrics(predictions, centroids, features_col, prediction_col)
    return metrics.davies_bouldin, metrics.calinski_harabasz


def adjusted_rand_from_contingency(counts: Mapping[Tuple[Hashable, Hashable], int]) -> float:
    """Adjusted Rand index of two partitions from their contingency table.

    Parameters
    ----------
    counts
        ``(label_a, label_b) -> n_ab``: how many points partition A puts in ``label_a`` and
        partition B in ``label_b``. Missing pairs count 0; labels are any hashable values.

    Returns
    -------
    float
        ``(index - expected) / (max - expected)`` with ``index = sum C(n_ab, 2)``,
        ``expected = sum_a C(a, 2) * sum_b C(b, 2) / C(n, 2)`` (``a``, ``b`` the row and column
        sums) and ``max = (sum_a C(a, 2) + sum_b C(b, 2)) / 2`` (Hubert and Arabie, 1985; the
        same value as scikit-learn's ``adjusted_rand_score``). 1 for identical partitions (up to
        the numbering), about 0 for independent ones, negative for worse than chance. When the
        denominator is 0 (fewer than two points, or both partitions all in one cluster, or both
        all singletons) the partitions are identical and the result is 1.

    Raises
    ------
    SegmentationError
        If a count is negative.

    Notes
    -----
    Computed in integers, ``2 (T index - A B) / ((A + B) T - 2 A B)`` with ``A``, ``B`` the
    row and column sums of pairs and ``T = C(n, 2)``, and divided once at the end.
    """
    rows: Dict[Hashable, int] = {}
    cols: Dict[Hashable, int] = {}
    index = 0
    for (a, b), n in counts.items():
        n = int(n)
        if n < 0:
            raise SegmentationError(f"negative count {n} in a contingency table")
        rows[a] = rows.get(a, 0) + n
        cols[b] = cols.get(b, 0) + n
        index += n * (n - 1) // 2
    together_a = sum(n * (n - 1) // 2 for n in rows.values())
    together_b = sum(n * (n - 1) // 2 for n in cols.values())
    points = sum(rows.values())
    total = points * (points - 1) // 2
    denominator = (together_a + together_b) * total - 2 * together_a * together_b
    if denominator == 0:
        return 1.0
    return 2 * (total * index - together_a * together_b) / denominator


def pairwise_adjusted_rand(predictions: DataFrame, prediction_cols: Sequence[str]) -> List[float]:
    """Adjusted Rand index of every pair of label columns of one frame, in one Spark job.

    Parameters
    ----------
    predictions
        One row per point with the label columns (e.g. several models' predictions of the same
        points, side by side).
    prediction_cols
        The label columns (at least two); a null label counts as a label of its own.

    Returns
    -------
    list of float
        One index per pair ``(i, j)``, ``i < j``, in ``itertools.combinations`` order.

    Notes
    -----
    Each row is exploded into one ``(pair, a, b)`` per pair and counted with one
    ``groupBy(pair, a, b).count()``: the contingency tables of all pairs, at most
    ``pairs * labels_a * labels_b`` rows, are the only thing collected; the indices are then
    computed by :func:`adjusted_rand_from_contingency`.
    """
    cols = list(prediction_cols)
    if len(cols) < 2:
        raise SegmentationError("the adjusted Rand index needs two label columns")
    pairs = list(itertools.combinations(cols, 2))
    exploded = predictions.select(
        F.explode(
            F.array(
                *[
                    F.struct(
                        F.lit(p).alias("pair"),
                        F.col(sql_identifier(a)).alias("a"),
                        F.col(sql_identifier(b)).alias("b"),
                    )
                    for p, (a, b) in enumerate(pairs)
                ]
            )
        ).alias("cell")
    ).select("cell.pair", "cell.a", "cell.b")
    tables: List[Dict[Tuple[Hashable, Hashable], int]] = [{} for _ in pairs]
    for row in exploded.groupBy("pair", "a", "b").count().collect():
        tables[int(row["pair"])][(row["a"], row["b"])] = int(row["count"])
    return [adjusted_rand_from_contingency(table) for table in tables]


def adjusted_rand_index(predictions: DataFrame, col_a: str, col_b: str) -> float:
    """Adjusted Rand index between two label columns of ``predictions`` (computed in Spark).

    Parameters
    ----------
    predictions
        One row per point.
    col_a, col_b
        The two labellings to compare.

    Returns
    -------
    float
        See :func:`adjusted_rand_from_contingency`; the contingency table is one
        ``groupBy().count()``.
    """
    return pairwise_adjusted_rand(predictions, [col_a, col_b])[0]


