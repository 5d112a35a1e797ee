"""Clustering segmentation of a customer-grain feature table: k sweep, final model, labels.

The input is one row per customer with numeric feature columns (RFM: ``recency_days``,
``frequency``, ``monetary``; RFE: ``recency_days``, ``frequency``, ``engagement``).

Steps
-----
1. :func:`feature_pipeline` scales the features (by default ``log1p`` then standardisation, which
   tames the long right tails of frequency and spend so that a few big spenders do not become
   clusters of their own).
2. :func:`sweep_k` fits one MLlib estimator (:data:`ALGORITHMS`) for several k and reports WSSSE,
   silhouette, Davies-Bouldin, Calinski-Harabasz and, on request, the stability across seeds;
   :func:`choose_k` picks k from them.
3. :func:`fit_segments` fits the final model on all customers, ranks the clusters by value and
   names them; :meth:`SegmentationModel.assign` adds ``cluster`` and ``segment``.
4. :func:`segment_profiles` summarises each segment (size, share of value, feature means,
   approximate medians, centroid).

Algorithms
----------
* ``kmeans`` (default): MLlib ``KMeans``, ``k-means||`` initialisation, ``seed``, ``maxIter``.
* ``bisecting-kmeans``: MLlib ``BisectingKMeans`` (``seed``, ``maxIter``): divisive, repeatedly
  splits a cluster in two with 2-means; it can return fewer than k leaf clusters. MLlib starts a
  split from the centre moved by ``1e-4 * norm(centre)``, which is nothing at the origin, where
  standardised data is centred: the root would never split. Its scaler therefore divides by the
  standard deviation without subtracting the mean (a translation, which changes no distance and
  no metric), and its centres are translated back to the standardised space.
* ``gmm``: MLlib ``GaussianMixture`` (``seed``, ``maxIter``, full covariances). A customer's
  cluster is its most probable gaussian (MLlib's ``prediction``, the argmax of ``probability``);
  the *centres* used to rank and name the clusters are the gaussians' means.

The centres are in the scaled space; the ranking and the labels below apply to all three.

Cluster ranking
---------------
Each centroid gets the score ``sum(value_weights[f] * z_f)`` where ``z_f`` is its coordinate on
feature ``f`` in the standardised space (for ``transform="none"`` the raw centroid is first
standardised with the features' mean and sample standard deviation, so that weights mean the
same thing under every transform). Cluster ``0`` has the highest score (the most valuable
customers), ties go to the lower index in the model. Typical weights are
``{"recency_days": -1, "frequency": 1, "monetary": 1}`` (recency: fewer days is better).

Segment labels
--------------
Two numbers are read off each standardised centroid:

* ``r``, the coordinate of the recency feature (``recency_col``, ``recency_days`` by default):
  **recent** when ``r < 0`` (more recent than the average customer), else **lapsed**;
* ``v``, the mean of ``sign(weight) * z_f`` over the *other* features with a non-zero weight:
  **high** when ``v >= 0.5`` (half a standard deviation above the average customer),
  **mid** when ``-0.5 <= v < 0.5``, **low** when ``v < -0.5``.

============  ============  ===================================================================
recency       value         label
============  ============  ===================================================================
recent        high          ``champions`` for the best-ranked such cluster, ``loyal`` for others
recent        mid or low    ``promising``
lapsed        high          ``at risk``
lapsed        mid           ``needs attention``
lapsed        low           ``hibernating``
============  ============  ===================================================================

Labels are made unique in cluster order: the first cluster with a label keeps it, the next ones
get ``" 2"``, ``" 3"``, ... (``promising``, ``promising 2``).

Quality metrics
---------------
Every metric is a function of the assignment of the points, so the three algorithms are compared
on the same terms:

* WSSSE: sum of squared Euclidean distances from each point to its cluster's centre, recomputed
  from the final assignments, for every algorithm. (KMeans' own ``trainingCost`` is not used: it
  is measured against the centres before their last update.) The centre is the model's centre
  for ``kmeans`` and ``bisecting-kmeans`` (the mean of its points once they converged) and, for
  ``gmm``, the mean of the points assigned to the gaussian, not the gaussian's mean, which is a
  weighted mean of *all* points and would overstate WSSSE and distort the indices below.
* Silhouette on *squared* Euclidean distances, the value of MLlib's ``ClusteringEvaluator`` with
  ``distanceMeasure="squaredEuclidean"`` (O(n) instead of O(n^2)); it is larger than the
  textbook Euclidean silhouette on the same clustering. Higher is better.
* Davies-Bouldin (lower is better) and Calinski-Harabasz (higher is better), with Euclidean
  distances as in scikit-learn.

All of them come from two passes over the predictions per k, per-cluster sums then per-point
distances (:mod:`segmentation.segments.metrics`), instead of one pass per metric.

A model may return fewer than k centres (fewer distinct points than k, bisecting k-means out of
divisible clusters) or centres that no point is assigned to (a gaussian that is nobody's most
probable); the metrics are computed over the non-empty clusters. They are ``None`` where
undefined: fewer than two non-empty clusters, or as many clusters as points (scikit-learn's rule
``2 <= clusters <= points - 1``), and Calinski-Harabasz also when every cluster has zero spread
(the index is infinite).

Stability
---------
With ``stability_seeds=N`` (``N >= 2``), :func:`sweep_k` also fits, for every k, the same
algorithm with the seeds ``seed, seed + 1, ..., seed + N - 1`` on one seeded sample of at most
``stability_sample`` customers of the scaled vectors (drawn once per sweep, cached), and reports
``stability``: the mean adjusted Rand index (ARI) between the N assignments of that sample, over
all ``N (N - 1) / 2`` pairs. 1 means every seed finds the same partition (up to the cluster
numbering); about 0 means agreement no better than chance. The contingency tables of all pairs
come from one ``groupBy(pair, a, b).count()`` over the sample scored by the N models side by
side (no join); the ARI is computed on the driver from those small tables (at most
``k * k`` rows per pair), see :func:`adjusted_rand_from_contingency`.

``choose_k(..., "stable")`` takes, among the ks whose silhouette is within
:data:`STABLE_SILHOUETTE_TOLERANCE` (0.05, absolute, inclusive) of the best silhouette, the one
with the highest stability (ties: the smaller k).

Cost: per k, the sweep does one fit on the (sampled) customers plus two passes over the cached
vectors (:mod:`segmentation.segments.metrics`); several k run at once; stability adds N
fits on the stability sample and one pass scoring it with the N models. On large data, where
the fits dominate, it multiplies the fitting time per k by about ``1 + N * sample / customers``
(``1 + N`` when every customer is in the sample); on small data Spark's per-job overhead
dominates (on the 254-customer retail sample, 2 local cores, N = 3: kmeans about 0.9 s per k
without and 2.6 s with stability). Bisecting k-means runs several Spark jobs per level of
bisection and is the slowest of the three per k. Progress is logged per k and per stability seed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from pyspark import StorageLevel
from pyspark.ml import Estimator, Pipeline, PipelineModel, Transformer
from pyspark.ml.clustering import (
    BisectingKMeans,
    BisectingKMeansModel,
    GaussianMixture,
    GaussianMixtureModel,
    KMeans,
    KMeansModel,
)
from pyspark.ml.feature import (
    SQLTransformer,
    StandardScaler,
    StandardScalerModel,
    VectorAssembler,
)
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from segmentation.errors import EmptyResultError, InputError, SegmentationError
from segmentation.segments import metrics
from segmentation.segments.stall import stall_guard
from segmentation.sources.common import require_columns, sql_identifier

log = logging.getLogger(__name__)

#: A stage of an unfitted ``Pipeline`` (what ``pyspark.ml`` calls ``PipelineStage``).
PipelineStage = Union[Estimator, Transformer]

#: Feature transforms understood by :func:`feature_pipeline`.
TRANSFORMS = ("none", "standard", "log-standard")

#: Clustering algorithms understood by :func:`sweep_k` and :func:`fit_segments`: MLlib ``KMeans``,
#: ``BisectingKMeans`` and ``GaussianMixture``.
ALGORITHMS = ("kmeans", "bisecting-kmeans", "gmm")

#: Methods understood by :func:`choose_k`.
CHOOSE_METHODS = ("silhouette", "elbow", "stable")

#: ``choose_k(method="stable")`` considers the ks whose silhouette is at most this much (absolute)
#: below the best one.
STABLE_SILHOUETTE_TOLERANCE = 0.05

#: Seeds fitted per k for the stability when it is asked for without a number (``--select stable``).
DEFAULT_STABILITY_SEEDS = 3

#: At most this many customers are clustered for the stability (a seeded sample).
DEFAULT_STABILITY_SAMPLE = 20_000

#: A fitted clustering model of one of :data:`ALGORITHMS`.
ClusteringModel = Union[KMeansModel, BisectingKMeansModel, GaussianMixtureModel]

#: The vector column the feature pipeline produces and the estimators read.
FEATURES_COL = "features"

#: Columns :meth:`SegmentationModel.assign` adds.
CLUSTER_COL = "cluster"
SEGMENT_COL = "segment"

#: ``value >= HIGH_VALUE`` is "high", ``value < LOW_VALUE`` is "low" (standard deviations).
HIGH_VALUE = 0.5
LOW_VALUE = -0.5

#: Accuracy of ``percentile_approx`` for the medians (relative rank error 1 / accuracy), Spark's
#: default: within 30 ranks of the true median in a cluster of 300,000. A tenfold accuracy made
#: the profiles of 620,000 customers cost 6.8-7.9 s instead of 3.3 s, for the same medians.
MEDIAN_ACCURACY = 10_000

# Intermediate columns of the pipelines; none of them survives ``assign``.
_INPUT_STRUCT = "__seg_input"
_PREDICTION = "__seg_prediction"
_PROBABILITY = "__seg_probability"  # GaussianMixture's per-gaussian probabilities
_SEED_PREDICTION = "__seg_seed_"  # prefix of the stability fits' prediction columns
_VECTOR = "__seg_vector"
_LOG_PREFIX = "__seg_log_"
_SWEEP_PREDICTION = "prediction"

_LABEL_PATTERN = re.compile(r"^[a-z0-9 ]+$")
_QUOTED_NAME = re.compile(r"`((?:[^`]|``)*)`")


def _fmt(value: Optional[float]) -> str:
    """A metric for the log: 4 significant digits or ``None``."""
    return "None" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class KResult:
    """Quality of the clustering for one k.

    Attributes
    ----------
    k
        The requested number of clusters.
    wssse
        Within-cluster sum of squared Euclidean distances to the cluster centres, recomputed from
        the final assignments (see the module notes), lower is better.
    silhouette
        Mean silhouette on **squared** Euclidean distances (the value of MLlib's
        ``ClusteringEvaluator``, ``squaredEuclidean``), in [-1, 1], higher is better; ``None`` if
        undefined.
    davies_bouldin
        Davies-Bouldin index (Euclidean), >= 0, lower is better; ``None`` if undefined.
    calinski_harabasz
        Calinski-Harabasz index (variance ratio), higher is better; ``None`` if undefined.
    cluster_sizes
        Points per centre the model returned, largest first (may hold zeros, may be shorter
        than k).
    non_empty_clusters
        Number of clusters with at least one point; the metrics are computed over these.
    seconds
        Wall-clock time of the fit and the metrics for this k, stability included.
    stability
        Mean adjusted Rand index between the assignments of several seeds on a sample, at most 1,
        higher is more stable; ``None`` when not computed (see the module notes).
    """

    k: int
    wssse: float
    silhouette: Optional[float]
    davies_bouldin: Optional[float]
    calinski_harabasz: Optional[float]
    cluster_sizes: List[int]
    non_empty_clusters: int
    seconds: float
    stability: Optional[float] = None

    def to_dict(self) -> Dict[str, Any]:
        """Return the result as a JSON-serialisable dict (field name -> value).

        Returns
        -------
        dict
            All fields; ``cluster_sizes`` as a new list.
        """
        return dataclasses.asdict(self)


def _check_transform(transform: str) -> None:
    """Raise :class:`SegmentationError` unless ``transform`` is one of :data:`TRANSFORMS`."""
    if transform not in TRANSFORMS:
        raise SegmentationError(
            f"unknown feature transform {transform!r}; expected one of {', '.join(TRANSFORMS)}"
        )


def _check_names(feature_cols: Sequence[str]) -> List[str]:
    """The feature columns as a list: at least one, no duplicates."""
    if isinstance(feature_cols, str):
        raise SegmentationError("feature_cols must be a sequence of column names, not a string")
    cols = list(feature_cols)
    if not cols:
        raise SegmentationError("no feature columns to cluster on")
    duplicates = sorted({c for c in cols if cols.count(c) > 1})
    if duplicates:
        raise SegmentationError(f"feature columns listed twice: {', '.join(duplicates)}")
    return cols


def _check_columns(frame: DataFrame, cols: Sequence[str], numeric: bool = True) -> None:
    """Raise :class:`InputError` if ``frame`` lacks a column of ``cols`` or one is not numeric."""
    require_columns(frame, cols, "feature", numeric)


def feature_pipeline(
    feature_cols: Sequence[str], transform: str = "log-standard", centre: bool = True
) -> List[PipelineStage]:
    """Unfitted stages that turn raw feature columns into the ``features`` vector column.

    Parameters
    ----------
    feature_cols
        Numeric columns, in the order of the vector's coordinates.
    transform
        ``"log-standard"`` (default): ``log1p(max(x, 0))`` per column, then standardise each
        coordinate to mean 0 and (sample) standard deviation 1. Negative values are clamped to 0
        before the log because ``log1p`` is undefined below -1 and net ``monetary`` is negative
        for customers whose returns exceed their purchases; for segmentation they are simply
        "no net spend". ``"standard"``: standardisation without the log. ``"none"``: the raw
        values.
    centre
        Subtract the mean in the standardisation (default). ``False`` only divides by the
        standard deviation, which leaves the points translated by ``mean / std`` from the
        standardised ones (for ``bisecting-kmeans``, see :func:`sweep_k`).

    Returns
    -------
    list of PipelineStage
        ``[SQLTransformer (log, only for log-standard), VectorAssembler, StandardScaler (not for
        none)]``. Every stage is savable, so a saved ``PipelineModel`` scores raw features. The
        log stage adds ``__seg_log_<i>`` columns and the assembler ``__seg_vector``; only
        ``features`` is meant for use.

    Raises
    ------
    SegmentationError
        For an unknown transform, no feature columns or duplicated ones.

    Notes
    -----
    MLlib's ``StandardScaler`` centres only with ``withMean=True`` (set here) and divides by the
    corrected sample standard deviation; a column with zero variance becomes 0, not NaN. The
    assembler rejects nulls (``handleInvalid="error"``): the feature table must not have any.
    """
    cols = _check_names(feature_cols)
    _check_transform(transform)
    stages: List[PipelineStage] = []
    inputs = cols
    if transform == "log-standard":
        logs = [f"{_LOG_PREFIX}{i}" for i in range(len(cols))]
        # CASE rather than greatest(): greatest(NULL, 0) is 0, which would hide a null feature.
        expressions = ", ".join(
            f"log1p(CASE WHEN {sql_identifier(c)} < 0 THEN 0D "
            f"ELSE CAST({sql_identifier(c)} AS DOUBLE) END) AS {name}"
            for c, name in zip(cols, logs)
        )
        stages.append(SQLTransformer(statement=f"SELECT *, {expressions} FROM __THIS__"))
        inputs = logs
    if transform == "none":
        stages.append(VectorAssembler(inputCols=inputs, outputCol=FEATURES_COL))
    else:
        stages.append(VectorAssembler(inputCols=inputs, outputCol=_VECTOR))
        stages.append(
            StandardScaler(
                inputCol=_VECTOR, outputCol=FEATURES_COL, withMean=centre, withStd=True
            )
        )
    return stages


def _centres_data(algorithm: str) -> bool:
    """Whether the scaler of ``algorithm``'s pipeline subtracts the mean (all but bisecting).

    MLlib's ``BisectingKMeans`` splits a cluster by moving two copies of its centre apart by
    ``1e-4 * norm(centre)``: the root of standardised data is the origin, so its split starts
    from two identical centres and every point lands on one side (MLlib then returns fewer than
    k clusters, often a single one). Euclidean distances do not change under a translation, so
    bisecting k-means clusters the standardised-but-uncentred points instead, and its centres
    are translated back (:func:`_scaler_offset`).
    """
    return algorithm != "bisecting-kmeans"


def _scaler_offset(stages: Sequence[Transformer]) -> Optional[List[float]]:
    """``mean / std`` per coordinate when the fitted scaler did not centre, else ``None``.

    Subtracting it from a centre of the uncentred space gives the standardised centre (a
    constant column, ``std == 0``, is 0 in both).
    """
    for stage in stages:
        if isinstance(stage, StandardScalerModel) and not stage.getWithMean():
            return [
                float(m) / float(sd) if float(sd) > 0 else 0.0
                for m, sd in zip(stage.mean.toArray(), stage.std.toArray())
            ]
    return None


def _translate(centres: Sequence[Sequence[float]], offset: Optional[Sequence[float]]
               ) -> List[List[float]]:
    """``centres`` minus ``offset`` (unchanged without an offset)."""
    if offset is None:
        return [list(c) for c in centres]
    return [[v - o for v, o in zip(c, offset)] for c in centres]


def _check_ks(ks: Sequence[int]) -> List[int]:
    """The distinct ks in ascending order; each must be an integer >= 2."""
    values = list(ks)
    if not values:
        raise SegmentationError("no k to try")
    bad = [k for k in values if isinstance(k, bool) or not isinstance(k, int) or k < 2]
    if bad:
        raise SegmentationError(f"every k must be an integer >= 2, got {bad}")
    return sorted(set(values))


def _check_algorithm(algorithm: str) -> None:
    """Raise :class:`SegmentationError` unless ``algorithm`` is one of :data:`ALGORITHMS`."""
    if algorithm not in ALGORITHMS:
        raise SegmentationError(
            f"unknown clustering algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}"
        )


def _estimator(
    algorithm: str, k: int, seed: int, max_iter: int, prediction_col: str
) -> Union[KMeans, BisectingKMeans, GaussianMixture]:
    """The one configuration of ``algorithm`` used by the sweep, the stability and the final fit."""
    if algorithm == "kmeans":
        return KMeans(
            featuresCol=FEATURES_COL,
            predictionCol=prediction_col,
            k=k,
            seed=seed,
            maxIter=max_iter,
            initMode="k-means||",
        )
    if algorithm == "bisecting-kmeans":
        return BisectingKMeans(
            featuresCol=FEATURES_COL, predictionCol=prediction_col, k=k, seed=seed, maxIter=max_iter
        )
    if algorithm == "gmm":
        return GaussianMixture(
            featuresCol=FEATURES_COL,
            predictionCol=prediction_col,
            probabilityCol=_PROBABILITY,
            k=k,
            seed=seed,
            maxIter=max_iter,
        )
    _check_algorithm(algorithm)
    raise AssertionError(algorithm)  # pragma: no cover - _check_algorithm raised


def iteration_input(scaled: DataFrame) -> DataFrame:
    """The cached vectors as an estimator should see them: a plan that is not itself cached.

    MLlib's KMeans, BisectingKMeans and GaussianMixture cache their own deserialised points
    (vectors with their norms) for the iterations only when the input DataFrame is *not*
    persisted; given a persisted one, every iteration decodes the cached rows and deserialises
    every vector again (on 125,612 customers, most of a fit's time). A projection over the cache
    reads it once per fit, and lets MLlib cache the points for the iterations.
    """
    return scaled.select(F.col(FEATURES_COL).alias(FEATURES_COL))


#: What a user can do when a GaussianMixture fit stalls (see :mod:`segmentation.segments.stall`).
GMM_STALL_HINT = (
    "GaussianMixture loops forever on a degenerate covariance (a gaussian left with almost no "
    "weight); use --algorithm kmeans, fewer k, or more customers per k"
)


def _guard(algorithm: str, data: DataFrame, what: str) -> ContextManager[None]:
    """A :func:`~segmentation.segments.stall.stall_guard` around a ``gmm`` fit; nothing else.

    k-means and bisecting k-means always end within ``maxIter`` iterations; MLlib's
    GaussianMixture can spin forever in LAPACK on a degenerate covariance.
    """
    if algorithm != "gmm":
        return nullcontext()
    return stall_guard(data.sparkSession.sparkContext, what, hint=GMM_STALL_HINT)


def _check_customers_per_gaussian(
    algorithm: str, points: int, k: int, dims: int, what: str
) -> None:
    """Refuse a ``gmm`` fit with fewer than ``k * (dims + 1)`` customers.

    A full covariance in ``dims`` dimensions is singular unless its gaussian has at least
    ``dims + 1`` points; below that EM degenerates (and MLlib's can then loop forever).
    """
    needed = k * (dims + 1)
    if algorithm == "gmm" and 0 < points < needed:
        raise SegmentationError(
            f"gmm with k={k} on {dims} features needs at least {needed} customers "
            f"(k x (features + 1), so that every gaussian's covariance can be non-singular); "
            f"{what} has {points}"
        )


def _fit(
    algorithm: str, data: DataFrame, k: int, seed: int, max_iter: int, prediction_col: str
) -> ClusteringModel:
    """Fit ``algorithm`` on the ``features`` vectors of ``data`` (a stalled gmm fit raises)."""
    with _guard(algorithm, data, f"{algorithm} fit, k={k}, seed {seed}"):
        model = _estimator(algorithm, k, seed, max_iter, prediction_col).fit(
            iteration_input(data)
        )
    assert isinstance(model, (KMeansModel, BisectingKMeansModel, GaussianMixtureModel))
    return model


def _algorithm_of(model: Transformer) -> Optional[str]:
    """The name in :data:`ALGORITHMS` of a fitted model, ``None`` for anything else."""
    if isinstance(model, KMeansModel):
        return "kmeans"
    if isinstance(model, BisectingKMeansModel):
        return "bisecting-kmeans"
    if isinstance(model, GaussianMixtureModel):
        return "gmm"
    return None


def model_centres(model: Transformer) -> List[List[float]]:
    """The centres of a fitted clustering model, indexed by its raw prediction.

    Parameters
    ----------
    model
        A fitted ``KMeansModel``, ``BisectingKMeansModel`` or ``GaussianMixtureModel``
        (:data:`ClusteringModel`).

    Returns
    -------
    list of list of float
        ``clusterCenters()`` for (bisecting) k-means, the gaussians' means for a mixture.

    Raises
    ------
    SegmentationError
        For any other model.
    """
    if isinstance(model, (KMeansModel, BisectingKMeansModel)):
        return [[float(v) for v in c] for c in model.clusterCenters()]
    if isinstance(model, GaussianMixtureModel):
        return [[float(v) for v in g.mean.toArray()] for g in model.gaussians]
    raise SegmentationError(f"not a clustering model: {type(model).__name__}")


def _stability_sample(scaled: DataFrame, points: int, size: int, seed: int) -> DataFrame:
    """At most ``size`` rows of ``scaled`` picked by a seeded random key (all when fewer).

    ``orderBy(rand).limit`` runs as a per-partition top-``size`` (``TakeOrderedAndProject``),
    not as a full sort; the key is deterministic over the cached ``scaled``.
    """
    if points <= size:
        return scaled
    key = "__seg_sample_key"
    return (
        scaled.select(FEATURES_COL, F.rand(seed).alias(key))
        .orderBy(key)
        .limit(size)
        .select(FEATURES_COL)
    )


def _stability(
    sample: DataFrame, k: int, seed: int, max_iter: int, algorithm: str, seeds: int
) -> Optional[float]:
    """Mean pairwise adjusted Rand index of ``seeds`` fits (seeds ``seed``, ``seed + 1``, ...)."""
    scored = sample.select(FEATURES_COL)
    cols: List[str] = []
    for i in range(seeds):
        started = time.perf_counter()
        col = f"{_SEED_PREDICTION}{i}"
        model = _fit(algorithm, sample, k, seed + i, max_iter, col)
        # Each model appends its prediction; the select drops GaussianMixture's probabilities.
        scored = model.transform(scored).select(FEATURES_COL, *cols, col)
        cols.append(col)
        log.info(
            "k=%d: stability fit %d/%d (seed %d) in %.1f s",
            k, i + 1, seeds, seed + i, time.perf_counter() - started,
        )
    indices = metrics.pairwise_adjusted_rand(scored, cols)
    return metrics.finite(sum(indices) / len(indices))


def _evaluate_k(
    scaled: DataFrame,
    points: int,
    k: int,
    seed: int,
    max_iter: int,
    algorithm: str = "kmeans",
    stability_sample: Optional[DataFrame] = None,
    stability_seeds: int = 0,
) -> Tuple[KResult, ClusteringModel]:
    """Fit ``algorithm`` for one k on the cached ``scaled`` frame, measure it; return the model."""
    started = time.perf_counter()
    model = _fit(algorithm, scaled, k, seed, max_iter, _SWEEP_PREDICTION)
    centroids = model_centres(model)
    # For a mixture, distances are measured to the mean of each gaussian's assigned points.
    measured = metrics.clustering_metrics(
        model.transform(scaled), centroids, FEATURES_COL, _SWEEP_PREDICTION,
        centre_on_means=algorithm == "gmm",
    )
    fitted = time.perf_counter()
    if measured.non_empty_clusters < k:
        log.warning(
            "k=%d: only %d non-empty cluster(s) (%d centre(s) for %d points: fewer distinct "
            "points than k?)", k, measured.non_empty_clusters, len(centroids), points,
        )
    stability: Optional[float] = None
    if stability_sample is not None and stability_seeds >= 2:
        stability = _stability(stability_sample, k, seed, max_iter, algorithm, stability_seeds)
    seconds = time.perf_counter() - started
    log.info(
        "k=%d (%s): wssse=%s, silhouette=%s (squared Euclidean), davies_bouldin=%s, "
        "calinski_harabasz=%s, stability=%s, sizes=%s, %.1f s (stability %.1f s)",
        k, algorithm, _fmt(measured.wssse), _fmt(measured.silhouette),
        _fmt(measured.davies_bouldin), _fmt(measured.calinski_harabasz), _fmt(stability),
        measured.cluster_sizes, seconds, time.perf_counter() - fitted,
    )
    result = KResult(
        k=k,
        wssse=measured.wssse,
        silhouette=measured.silhouette,
        davies_bouldin=measured.davies_bouldin,
        calinski_harabasz=measured.calinski_harabasz,
        cluster_sizes=measured.cluster_sizes,
        non_empty_clusters=measured.non_empty_clusters,
        seconds=seconds,
        stability=stability,
    )
    return result, model


def _check_stability(stability_seeds: int, stability_sample: int) -> None:
    """Raise :class:`SegmentationError` for a number of seeds or a sample size that cannot work."""
    if isinstance(stability_seeds, bool) or not isinstance(stability_seeds, int) or (
        stability_seeds < 0 or stability_seeds == 1
    ):
        raise SegmentationError(
            f"stability_seeds must be 0 (off) or at least 2, got {stability_seeds!r}"
        )
    if isinstance(stability_sample, bool) or not isinstance(stability_sample, int) or (
        stability_sample < 2
    ):
        raise SegmentationError(f"stability_sample must be at least 2, got {stability_sample!r}")


#: k values fitted at once by default (threads submitting Spark jobs concurrently).
DEFAULT_SWEEP_PARALLELISM = 4

#: Customers per partition of what a fit iterates over (:func:`fit_partitions`).
CUSTOMERS_PER_FIT_PARTITION = 250_000


def fit_partitions(customers: int) -> int:
    """Partitions for fitting on ``customers`` points: one per :data:`CUSTOMERS_PER_FIT_PARTITION`.

    Every KMeans iteration (and every k-means|| step) is a Spark job with one task per input
    partition, and on a few hundred thousand 3-feature points a task's fixed cost (scheduling,
    the centres' broadcast, the aggregation tree) outweighs its arithmetic: the sweep of k = 2..10
    on a 50,000-customer sample took 35-38 s laid out in the 7 partitions of a 620,000-customer
    table and 13-19 s in one (measured on 2 cores). Concurrent fits of the sweep keep the cores
    busy meanwhile. The number depends only on the customer count, so that, as with
    :func:`segmentation.pipeline.reproducible_layout`, the same data and seed give the same
    clusters on any cluster size.
    """
    return max(1, -(-customers // CUSTOMERS_PER_FIT_PARTITION))


@dataclass(frozen=True)
class Sweep:
    """What :func:`sweep` measured and fitted.

    Attributes
    ----------
    results
        One :class:`KResult` per distinct k, ascending.
    scaler
        The fitted feature transform (:func:`feature_pipeline`) the models were fitted after.
    models
        k -> the model fitted for it; on everyone unless ``sampled``.
    sampled
        Whether the sweep ran on a sample (``sample_fraction`` < 1): its models and scaler then
        describe the sample only and :func:`fit_segments` refits on everyone.
    """

    results: List[KResult]
    scaler: PipelineModel
    models: Dict[int, ClusteringModel]
    sampled: bool

    def fitted(self, k: int) -> Optional[Tuple[PipelineModel, ClusteringModel]]:
        """The scaler and model of ``k`` when they were fitted on everyone, else ``None``."""
        if self.sampled or k not in self.models:
            return None
        return self.scaler, self.models[k]


def sweep(
    features: DataFrame,
    feature_cols: Sequence[str],
    ks: Sequence[int],
    transform: str = "log-standard",
    seed: int = 42,
    sample_fraction: Optional[float] = None,
    max_iter: int = 20,
    algorithm: str = "kmeans",
    stability_seeds: int = 0,
    stability_sample: int = DEFAULT_STABILITY_SAMPLE,
    parallelism: Optional[int] = None,
    rows: Optional[int] = None,
) -> Sweep:
    """Fit ``algorithm`` for each k and measure the clusterings, to choose k.

    The (optionally sampled) feature columns are selected, the transform is fitted on them once
    and the scaled vectors are cached once; every k reuses them. Several k are fitted at once,
    from a thread pool (Spark runs the jobs of several threads concurrently, as
    ``CrossValidator(parallelism=...)`` does): on small data a fit is a chain of short Spark jobs
    whose cost is mostly scheduling, which concurrent fits overlap. The caches are released
    before returning, also on error. For ``bisecting-kmeans`` the scaler does not centre
    (MLlib's bisection cannot split a cluster centred on the origin); the metrics do not depend
    on it.

    Parameters
    ----------
    features
        Customer-grain table holding ``feature_cols`` (other columns are ignored).
    feature_cols
        Numeric, non-null columns to cluster on.
    ks
        Values of k to try (integers >= 2; duplicates are dropped, results come in ascending k).
    transform
        One of :data:`TRANSFORMS`, see :func:`feature_pipeline`.
    seed
        Seed of the samples and of the estimator: the same input, partitioning and seed give the
        same results.
    sample_fraction
        Fraction of customers to sample (without replacement) before fitting, in (0, 1];
        ``None`` or 1 uses everyone. The transform is then fitted on the sample too.
    max_iter
        Maximum iterations of the estimator per fit.
    algorithm
        One of :data:`ALGORITHMS` (see the module notes).
    stability_seeds
        0 (default): no stability. ``N >= 2``: per k, also fit the seeds ``seed .. seed + N - 1``
        on a sample and report their mean pairwise adjusted Rand index as ``stability``.
    stability_sample
        At most this many customers (of the swept ones) for the stability fits: a seeded random
        sample drawn once and cached for the whole sweep.

    parallelism
        At most this many k fitted at once (default :data:`DEFAULT_SWEEP_PARALLELISM`, never more
        than the number of k). Results do not depend on it: each fit is seeded and reads the same
        cached vectors.
    rows
        The number of rows of ``features``, when the caller knows it: without a sample it is
        the number of points, and the sweep does not count them again.

    Returns
    -------
    Sweep
        The results (one per distinct k, ascending), the fitted scaler and the model per k.

    Raises
    ------
    SegmentationError
        For invalid options.
    InputError
        If a feature column is missing or not numeric.
    EmptyResultError
        If there is no row to cluster (after sampling).

    Notes
    -----
    Passes over the input: one to count it (unless ``rows`` says), one to fit the transform, one
    to cache the scaled vectors in :func:`fit_partitions` partitions; everything after that reads
    the cache (plus, with stability, one pass to draw and cache its sample). Per k: the fit, then
    two passes for the metrics (:func:`segmentation.segments.metrics.clustering_metrics`).
    """
    cols = _check_names(feature_cols)
    _check_transform(transform)
    _check_algorithm(algorithm)
    k_values = _check_ks(ks)
    if sample_fraction is not None and not 0 < sample_fraction <= 1:
        raise SegmentationError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
    if max_iter < 1:
        raise SegmentationError(f"max_iter must be >= 1, got {max_iter}")
    if parallelism is not None and (
        isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1
    ):
        raise SegmentationError(f"parallelism must be an integer >= 1, got {parallelism!r}")
    _check_stability(stability_seeds, stability_sample)
    _check_columns(features, cols)

    data = features.select(*[F.col(sql_identifier(c)) for c in cols])
    sampled = sample_fraction is not None and sample_fraction < 1
    if sample_fraction is not None and sampled:
        data = data.sample(withReplacement=False, fraction=sample_fraction, seed=seed)
    started = time.perf_counter()
    points = rows if rows is not None and not sampled else data.count()
    if points == 0:  # the scaler cannot be fitted on nothing
        raise EmptyResultError(
            "no customers to cluster"
            + (f" in a {sample_fraction:g} sample" if sample_fraction is not None else "")
        )
    _check_customers_per_gaussian(algorithm, points, k_values[-1], len(cols), "the sweep")
    if stability_seeds:
        _check_customers_per_gaussian(
            algorithm, min(points, stability_sample), k_values[-1], len(cols),
            "the stability sample",
        )
    scaler = Pipeline(
        stages=feature_pipeline(cols, transform, centre=_centres_data(algorithm))
    ).fit(data)
    scaled = (
        scaler.transform(data)
        .select(FEATURES_COL)
        .coalesce(fit_partitions(points))
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    sample: Optional[DataFrame] = None
    try:
        scaled.count()  # fill the cache once, before concurrent fits read it
        workers = min(len(k_values), parallelism or DEFAULT_SWEEP_PARALLELISM)
        log.info(
            "sweep: %s on %d customers, features %s, transform %s, ks %s, %d at once "
            "(%.1f s to scale and cache)",
            algorithm, points, ", ".join(cols), transform, k_values, workers,
            time.perf_counter() - started,
        )
        if stability_seeds:
            sample = _stability_sample(scaled, points, stability_sample, seed)
            if sample is not scaled:
                sample = sample.persist(StorageLevel.MEMORY_AND_DISK)
            log.info(
                "stability: %d seeds per k on %d customers",
                stability_seeds, sample.count() if sample is not scaled else points,
            )

        def evaluate(k: int) -> Tuple[KResult, ClusteringModel]:
            return _evaluate_k(
                scaled, points, k, seed, max_iter, algorithm, sample, stability_seeds
            )

        if workers == 1:
            evaluated = [evaluate(k) for k in k_values]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sweep") as pool:
                evaluated = list(pool.map(evaluate, k_values))
        return Sweep(
            results=[result for result, _ in evaluated],
            scaler=scaler,
            models={result.k: model for result, model in evaluated},
            sampled=sampled,
        )
    finally:
        if sample is not None and sample is not scaled:
            sample.unpersist()
        scaled.unpersist()


def sweep_k(
    features: DataFrame,
    feature_cols: Sequence[str],
    ks: Sequence[int],
    transform: str = "log-standard",
    seed: int = 42,
    sample_fraction: Optional[float] = None,
    max_iter: int = 20,
    algorithm: str = "kmeans",
    stability_seeds: int = 0,
    stability_sample: int = DEFAULT_STABILITY_SAMPLE,
    parallelism: Optional[int] = None,
) -> List[KResult]:
    """The results of :func:`sweep` (same parameters): one :class:`KResult` per k, ascending."""
    return sweep(
        features, feature_cols, ks, transform=transform, seed=seed,
        sample_fraction=sample_fraction, max_iter=max_iter, algorithm=algorithm,
        stability_seeds=stability_seeds, stability_sample=stability_sample,
        parallelism=parallelism,
    ).results


def _best_silhouette(results: Sequence[KResult]) -> int:
    """The k with the highest silhouette, the smaller k on ties; ``None`` silhouettes ignored."""
    usable = [r for r in results if r.silhouette is not None and math.isfinite(r.silhouette)]
    if not usable:
        raise SegmentationError(
            "cannot choose k: no k has a silhouette (each gave fewer than two non-empty clusters "
            "or one cluster per customer); try smaller ks or more customers"
        )
    best = min(usable, key=lambda r: (-(r.silhouette or 0.0), r.k))
    return best.k


def _most_stable(results: Sequence[KResult]) -> int:
    """The most stable k among those with a silhouette near the best (ties: the smaller k)."""
    best_k = _best_silhouette(results)
    best = next(r.silhouette for r in results if r.k == best_k)
    assert best is not None
    near = [
        r
        for r in results
        if r.silhouette is not None
        and math.isfinite(r.silhouette)
        # the tiny slack keeps a k exactly 0.05 below the best despite float rounding
        and best - r.silhouette <= STABLE_SILHOUETTE_TOLERANCE + 1e-12
        and r.stability is not None
        and math.isfinite(r.stability)
    ]
    if not near:
        raise SegmentationError(
            "cannot choose the most stable k: the sweep measured no stability near the best "
            "silhouette (sweep with stability_seeds >= 2, --stability-seeds)"
        )
    chosen = min(near, key=lambda r: (-(r.stability or 0.0), r.k))
    log.info(
        "most stable k=%d (stability %s) among k=%s, within %.2f of the best silhouette %.4g "
        "(k=%d)",
        chosen.k, _fmt(chosen.stability), sorted(r.k for r in near),
        STABLE_SILHOUETTE_TOLERANCE, best, best_k,
    )
    return chosen.k


def _elbow(results: Sequence[KResult]) -> Optional[int]:
    """The knee of the WSSSE curve, or ``None`` when there is none (fewer than 3 ks, a line)."""
    by_k: Dict[int, float] = {}
    for r in results:
        if r.k not in by_k and math.isfinite(r.wssse):
            by_k[r.k] = r.wssse
    if len(by_k) < 3:
        return None
    ks = sorted(by_k)
    costs = [by_k[k] for k in ks]
    low, high = min(costs), max(costs)
    if high <= low:
        return None
    xs = [(k - ks[0]) / (ks[-1] - ks[0]) for k in ks]
    ys = [(c - low) / (high - low) for c in costs]
    slope = ys[-1] - ys[0]
    norm = math.sqrt(1 + slope * slope)
    best_k: Optional[int] = None
    best_distance = 1e-12
    for k, x, y in zip(ks[1:-1], xs[1:-1], ys[1:-1]):
        # Perpendicular distance below the chord (the convex side of a decreasing cost curve).
        distance = (ys[0] + slope * x - y) / norm
        if distance > best_distance:
            best_k, best_distance = k, distance
    return best_k


def choose_k(results: Sequence[KResult], method: str = "silhouette") -> int:
    """Pick k from sweep results.

    Parameters
    ----------
    results
        Output of :func:`sweep_k` (any order).
    method
        ``"silhouette"``: the k with the highest silhouette (ties go to the smaller k; ``None``
        silhouettes are ignored). ``"elbow"``: the knee of the WSSSE curve, i.e. the k whose
        point lies furthest below the chord from the first to the last point, with both axes
        scaled to [0, 1]; with fewer than 3 ks, or no point below the chord, it falls back to
        the silhouette. ``"stable"``: among the ks whose silhouette is at most
        :data:`STABLE_SILHOUETTE_TOLERANCE` (0.05, absolute) below the best, the one with the
        highest ``stability`` (ties go to the smaller k; ks without a stability are skipped).

    Returns
    -------
    int
        The chosen k; a single result gives its k whatever its metrics.

    Raises
    ------
    SegmentationError
        If ``results`` is empty, ``method`` is unknown, or no k is usable (for ``"stable"``:
        none near the best silhouette has a stability).
    """
    if method not in CHOOSE_METHODS:
        raise SegmentationError(
            f"unknown method {method!r} to choose k; expected one of {', '.join(CHOOSE_METHODS)}"
        )
    items = list(results)
    if not items:
        raise SegmentationError("cannot choose k: the sweep produced no results")
    if len({r.k for r in items}) == 1:
        return items[0].k
    if method == "elbow":
        knee = _elbow(items)
        if knee is not None:
            log.info("elbow of the WSSSE curve at k=%d", knee)
            return knee
        log.info("no elbow in the WSSSE curve (fewer than 3 ks or no bend); using the silhouette")
    if method == "stable":
        return _most_stable(items)
    return _best_silhouette(items)


def _value_tier(value: float) -> str:
    """``high``, ``mid`` or ``low`` for a mean standardised value coordinate."""
    if value >= HIGH_VALUE:
        return "high"
    if value >= LOW_VALUE:
        return "mid"
    return "low"


def _check_weights(
    value_weights: Mapping[str, float], cols: Sequence[str], recency_col: str
) -> Dict[str, float]:
    """Validated weights: known features, finite, a recency feature and a value feature."""
    unknown = [f for f in value_weights if f not in cols]
    if unknown:
        raise SegmentationError(
            f"value_weights name feature(s) not clustered on: {', '.join(unknown)}"
        )
    weights = {f: float(w) for f, w in value_weights.items()}
    if not all(math.isfinite(w) for w in weights.values()):
        raise SegmentationError(f"value_weights must be finite numbers, got {weights}")
    if recency_col not in cols:
        raise SegmentationError(
            f"recency column {recency_col!r} is not among the features {', '.join(cols)}"
        )
    if not any(w for f, w in weights.items() if f != recency_col):
        raise SegmentationError(
            "value_weights need a non-zero weight on at least one feature besides "
            f"{recency_col!r} (e.g. frequency: 1)"
        )
    return weights


def segment_labels(
    ranked_centroids: Sequence[Sequence[float]],
    feature_cols: Sequence[str],
    value_weights: Mapping[str, float],
    recency_col: str = "recency_days",
) -> List[str]:
    """Name clusters by the rule of the module docstring.

    Parameters
    ----------
    ranked_centroids
        Standardised centroids, most valuable cluster first.
    feature_cols
        Coordinates of the centroids.
    value_weights
        Weights of the value score; the features other than ``recency_col`` with a non-zero
        weight make the value side (a negative weight counts the coordinate negated).
    recency_col
        Feature whose coordinate decides recent (< 0) or lapsed (>= 0).

    Returns
    -------
    list of str
        One unique label per centroid, in the same order.

    Raises
    ------
    SegmentationError
        If the weights name unknown features, the recency feature is missing, or there is no
        value feature.
    """
    cols = list(feature_cols)
    weights = _check_weights(value_weights, cols, recency_col)
    recency = cols.index(recency_col)
    value_features = [(cols.index(f), w) for f, w in weights.items() if f != recency_col and w]
    labels: List[str] = []
    champions = False
    for centroid in ranked_centroids:
        recent = centroid[recency] < 0
        value = sum(math.copysign(1.0, w) * centroid[i] for i, w in value_features)
        tier = _value_tier(value / len(value_features))
        if recent and tier == "high":
            label = "loyal" if champions else "champions"
            champions = True
        elif recent:
            label = "promising"
        elif tier == "high":
            label = "at risk"
        elif tier == "mid":
            label = "needs attention"
        else:
            label = "hibernating"
        labels.append(label)
    seen: Dict[str, int] = {}
    unique: List[str] = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label} {seen[label]}")
    return unique


def _final_statement(rank_of_raw: Sequence[int], label_of_raw: Sequence[str]) -> str:
    """SQL mapping the model's raw prediction to ranked ``cluster`` and ``segment``.

    It selects the packed input columns back out, which drops every intermediate column.
    """
    for label in label_of_raw:
        if not _LABEL_PATTERN.match(label):  # labels come from segment_labels; keep SQL safe
            raise SegmentationError(f"unexpected segment label {label!r}")
    ranks = ", ".join(str(int(r)) for r in rank_of_raw)
    names = ", ".join(f"'{label}'" for label in label_of_raw)
    index = f"{_PREDICTION} + 1"
    return (
        f"SELECT {_INPUT_STRUCT}.*, "
        f"CAST(element_at(array({ranks}), {index}) AS INT) AS {CLUSTER_COL}, "
        f"element_at(array({names}), {index}) AS {SEGMENT_COL} "
        "FROM __THIS__"
    )


def _pack_statement(cols: Sequence[str]) -> str:
    """SQL keeping the whole input row in one struct next to the feature columns."""
    return (
        f"SELECT struct(*) AS {_INPUT_STRUCT}, "
        f"{', '.join(sql_identifier(c) for c in cols)} FROM __THIS__"
    )


def _check_assignable(frame: DataFrame, cols: Sequence[str]) -> None:
    """Raise :class:`InputError` if ``frame`` cannot be assigned segments."""
    _check_columns(frame, cols)
    taken = [c for c in (CLUSTER_COL, SEGMENT_COL) if c in frame.columns]
    if taken:
        raise InputError(f"the input already has column(s) {', '.join(taken)}")


@dataclass(frozen=True)
class SegmentationModel:
    """A fitted segmentation: scoring pipeline, ranked centroids and segment labels.

    Attributes
    ----------
    pipeline
        Stages: pack the input row, feature transform, the fitted clustering model
        (``KMeansModel``, ``BisectingKMeansModel`` or ``GaussianMixtureModel``), and a final
        ``SQLTransformer`` mapping its prediction to the ranked ``cluster`` and its ``segment``
        (literal arrays) while dropping every intermediate column. Savable; a loaded copy scores
        raw features.
    centroids
        Centres in the standardised space (raw units for ``transform="none"``), indexed by
        ranked cluster id, coordinates in ``feature_cols`` order: the cluster centres of
        (bisecting) k-means, the gaussians' means of a mixture.
    labels
        Segment label of each ranked cluster id.
    feature_cols
        The features clustered on.
    """

    pipeline: PipelineModel
    centroids: List[List[float]]
    labels: List[str]
    feature_cols: Tuple[str, ...]

    @property
    def algorithm(self) -> str:
        """The clustering algorithm of the pipeline, one of :data:`ALGORITHMS`."""
        return _algorithm_of(self.pipeline.stages[-2]) or "unknown"

    def assign(self, features: DataFrame) -> DataFrame:
        """Add ``cluster`` (int, 0 = most valuable) and ``segment`` (label) to each row.

        Parameters
        ----------
        features
            A table with the model's feature columns (non-null); any other columns pass through.

        Returns
        -------
        DataFrame
            The input columns, in order, then ``cluster`` and ``segment``.

        Raises
        ------
        InputError
            If a feature column is missing or not numeric, or ``cluster``/``segment`` exist.
        """
        _check_assignable(features, self.feature_cols)
        return self.pipeline.transform(features)

    def save(self, path: str, overwrite: bool = False) -> None:
        """Save the scoring pipeline to ``path`` (any Hadoop file system URI, e.g. ``s3://``).

        Parameters
        ----------
        path
            Target directory.
        overwrite
            Replace an existing model at ``path``.
        """
        writer = self.pipeline.write()
        (writer.overwrite() if overwrite else writer).save(path)

    @classmethod
    def load(cls, path: str) -> SegmentationModel:
        """Load a model saved by :meth:`save` (or ``pipeline.save``).

        Parameters
        ----------
        path
            Directory of the saved pipeline.

        Returns
        -------
        SegmentationModel
            With centroids, labels and feature columns recovered from the pipeline.
        """
        return cls.from_pipeline(PipelineModel.load(path))

    @classmethod
    def from_pipeline(cls, pipeline: PipelineModel) -> SegmentationModel:
        """Rebuild the model from its pipeline (as made by :func:`fit_segments`).

        Parameters
        ----------
        pipeline
            The fitted scoring pipeline.

        Returns
        -------
        SegmentationModel
            Centres and labels read back from the clustering stage (any of
            :data:`ALGORITHMS`) and the final mapping.

        Raises
        ------
        SegmentationError
            If the pipeline was not made by :func:`fit_segments`.
        """
        stages = pipeline.stages
        if (
            len(stages) < 4
            or not isinstance(stages[0], SQLTransformer)
            or _algorithm_of(stages[-2]) is None
            or not isinstance(stages[-1], SQLTransformer)
            or _INPUT_STRUCT not in stages[0].getStatement()
        ):
            raise SegmentationError("not a segmentation pipeline made by fit_segments")
        pack = stages[0].getStatement().split(f"AS {_INPUT_STRUCT},", 1)[1]
        cols = tuple(m.replace("``", "`") for m in _QUOTED_NAME.findall(pack))
        raw = _translate(model_centres(stages[-2]), _scaler_offset(stages))
        spark = SparkSession.builder.getOrCreate()
        probe = spark.range(len(raw)).selectExpr(
            f"CAST(id AS INT) AS {_PREDICTION}", f"named_struct('id', id) AS {_INPUT_STRUCT}"
        )
        rows = stages[-1].transform(probe).collect()  # one row per centroid
        ranked: List[Tuple[int, int, str]] = sorted(
            (int(r[CLUSTER_COL]), int(r["id"]), str(r[SEGMENT_COL])) for r in rows
        )
        return cls(
            pipeline=pipeline,
            centroids=[raw[raw_id] for _, raw_id, _ in ranked],
            labels=[label for _, _, label in ranked],
            feature_cols=cols,
        )


def _standardised(
    features: DataFrame, cols: Sequence[str], centroids: Sequence[Sequence[float]]
) -> List[List[float]]:
    """Raw-unit centroids standardised by the features' mean and sample std (one aggregate)."""
    stats = features.agg(
        *[F.avg(F.col(sql_identifier(c))).alias(f"m{i}") for i, c in enumerate(cols)],
        *[F.stddev_samp(F.col(sql_identifier(c))).alias(f"s{i}") for i, c in enumerate(cols)],
    ).first()
    assert stats is not None  # a global aggregate always has one row
    means = [float(stats[f"m{i}"] or 0.0) for i in range(len(cols))]
    stds = [float(stats[f"s{i}"] or 0.0) for i in range(len(cols))]
    return [
        [(v - m) / s if s > 0 and math.isfinite(s) else 0.0 for v, m, s in zip(c, means, stds)]
        for c in centroids
    ]


def fit_segments(
    features: DataFrame,
    feature_cols: Sequence[str],
    k: int,
    value_weights: Mapping[str, float],
    transform: str = "log-standard",
    seed: int = 42,
    max_iter: int = 20,
    recency_col: str = "recency_days",
    algorithm: str = "kmeans",
    fitted: Optional[Tuple[PipelineModel, ClusteringModel]] = None,
    customers: Optional[int] = None,
) -> SegmentationModel:
    """Fit the final segmentation on all rows, rank the clusters by value and name them.

    Parameters
    ----------
    features
        Customer-grain table with ``feature_cols`` (non-null); other columns pass through
        :meth:`SegmentationModel.assign`. It must not have ``cluster`` or ``segment`` columns.
    feature_cols
        Numeric columns to cluster on.
    k
        Number of clusters (>= 2). (Bisecting) k-means may return fewer if there are fewer
        distinct points.
    value_weights
        Weight of each feature in the value score (see the module docstring), e.g.
        ``{"recency_days": -1, "frequency": 1, "monetary": 1}``; features not named weigh 0.
    transform
        One of :data:`TRANSFORMS`.
    seed
        Seed of the estimator.
    max_iter
        Maximum iterations of the estimator.
    recency_col
        Feature that decides "recent" vs "lapsed" in the labels.
    algorithm
        One of :data:`ALGORITHMS`; the clusters are ranked and named from its centres (the
        gaussians' means for ``gmm``).
    fitted
        The feature transform and the model of ``algorithm`` for ``k`` already fitted on all of
        ``features`` with these options (:meth:`Sweep.fitted`): they are used instead of fitting
        again.
    customers
        The number of rows of ``features``, when known (otherwise they are counted). The fit
        iterates over them in :func:`fit_partitions` partitions, laid out as the sweep lays
        out its points, so that a fit here equals the sweep's fit of the same k on the same rows.

    Returns
    -------
    SegmentationModel
        Cluster 0 is the most valuable; see :meth:`SegmentationModel.assign`.

    Raises
    ------
    SegmentationError
        For invalid options or weights.
    InputError
        If a feature column is missing or not numeric, or ``cluster``/``segment`` exist.
    EmptyResultError
        If ``features`` has no row.
    """
    cols = _check_names(feature_cols)
    _check_transform(transform)
    _check_algorithm(algorithm)
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise SegmentationError(f"k must be an integer >= 2, got {k!r}")
    weights = _check_weights(value_weights, cols, recency_col)
    _check_assignable(features, cols)
    started = time.perf_counter()
    pack = SQLTransformer(statement=_pack_statement(cols))
    if fitted is not None:
        scaler, clustering_model = fitted
        if _algorithm_of(clustering_model) != algorithm:
            raise SegmentationError(
                f"the fitted model is not {algorithm}: {type(clustering_model).__name__}"
            )
        clustering_model.setPredictionCol(_PREDICTION)
        pipeline = PipelineModel(stages=[pack, *scaler.stages, clustering_model])
    else:
        rows = features.count() if customers is None else customers
        if rows == 0:
            raise EmptyResultError("no customers to cluster")
        _check_customers_per_gaussian(algorithm, rows, k, len(cols), "the table")
        stages: List[PipelineStage] = [
            pack,
            *feature_pipeline(cols, transform, centre=_centres_data(algorithm)),
            _estimator(algorithm, k, seed, max_iter, _PREDICTION),
        ]
        with _guard(algorithm, features, f"{algorithm} final fit, k={k}, seed {seed}"):
            pipeline = Pipeline(stages=stages).fit(features.coalesce(fit_partitions(rows)))
    raw = _translate(model_centres(pipeline.stages[-1]), _scaler_offset(pipeline.stages))
    if len(raw) < k:
        log.warning("%s returned %d centres for k=%d (few distinct customers)", algorithm,
                    len(raw), k)
    standard = _standardised(features, cols, raw) if transform == "none" else raw
    scores = [sum(weights.get(f, 0.0) * c[i] for i, f in enumerate(cols)) for c in standard]
    order = sorted(range(len(raw)), key=lambda j: (-scores[j], j))  # rank -> raw model index
    labels = segment_labels([standard[j] for j in order], cols, weights, recency_col)
    rank_of_raw = [0] * len(raw)
    for rank, j in enumerate(order):
        rank_of_raw[j] = rank
    mapping = SQLTransformer(
        statement=_final_statement(rank_of_raw, [labels[r] for r in rank_of_raw])
    )
    log.info(
        "%s %s k=%d on %s (%s) in %.1f s: %s",
        "reused the sweep's" if fitted is not None else "fitted", algorithm, k, ", ".join(cols),
        transform, time.perf_counter() - started,
        "; ".join(f"{rank} {label} (score {scores[j]:.2f})"
                  for rank, (j, label) in enumerate(zip(order, labels))),
    )
    return SegmentationModel(
        pipeline=PipelineModel(stages=[*pipeline.stages, mapping]),
        centroids=[raw[j] for j in order],
        labels=labels,
        feature_cols=tuple(cols),
    )


def segment_profiles(
    assignments: DataFrame,
    feature_cols: Sequence[str],
    value_col: Optional[str],
    model: SegmentationModel,
) -> DataFrame:
    """Summarise each segment: size, shares, feature means, approximate medians, centroid.

    Parameters
    ----------
    assignments
        Output of :meth:`SegmentationModel.assign` (``cluster``, ``segment`` and the features).
    feature_cols
        Numeric columns to describe; need not be the clustered ones (``centroid_<f>`` is null for
        a feature the model did not cluster on).
    value_col
        Numeric column whose total is shared out in ``value_share`` (``monetary``, clicks), or
        ``None``.
    model
        The model that made the assignments (for the centroids).

    Returns
    -------
    DataFrame
        One row per non-empty cluster, ordered by ``cluster``: ``cluster`` (int), ``segment``,
        ``customers`` (long), ``customer_share`` (of all customers), ``value_share`` (the
        cluster's total ``value_col`` over the grand total; null without ``value_col`` or when
        the grand total is 0; with negative values, e.g. net monetary, a share can fall outside
        [0, 1]), then for each feature ``f``: ``mean_<f>``, ``median_<f>`` and ``centroid_<f>``
        (double). Medians are **approximate** (``percentile_approx``, accuracy
        :data:`MEDIAN_ACCURACY`, exact for clusters smaller than that): the lower middle value
        for an even count, never an average of two values.

    Raises
    ------
    InputError
        If a column is missing or not numeric.

    Notes
    -----
    One ``groupBy`` over the assignments; shares come from a window over the grouped rows (one
    per cluster) and centroids from a literal array, so nothing is joined back.
    """
    cols = _check_names(feature_cols)
    measured = cols + ([value_col] if value_col is not None and value_col not in cols else [])
    _check_columns(assignments, measured)
    _check_columns(assignments, [CLUSTER_COL, SEGMENT_COL], numeric=False)

    aggregates: List[Column] = [F.count(F.lit(1)).alias("customers")]
    if value_col is not None:
        aggregates.append(F.sum(F.col(sql_identifier(value_col)).cast("double")).alias("__value"))
    for i, c in enumerate(cols):
        column = F.col(sql_identifier(c))
        aggregates.append(F.avg(column).alias(f"__mean_{i}"))
        aggregates.append(
            F.percentile_approx(column, 0.5, MEDIAN_ACCURACY).cast("double").alias(f"__median_{i}")
        )
    grouped = assignments.groupBy(CLUSTER_COL, SEGMENT_COL).agg(*aggregates)

    # All clusters in one window: the grouped frame has one row per cluster.
    everyone = Window.partitionBy(F.lit(0))
    if value_col is not None:
        total = F.sum("__value").over(everyone)
        value_share = F.when(total != 0, F.col("__value") / total)
    else:
        value_share = F.lit(None)
    index = F.col(CLUSTER_COL).cast("int") + 1
    columns: List[Column] = [
        F.col(CLUSTER_COL).cast("int").alias(CLUSTER_COL),
        F.col(SEGMENT_COL),
        F.col("customers"),
        (F.col("customers") / F.sum("customers").over(everyone)).alias("customer_share"),
        value_share.cast("double").alias("value_share"),
    ]
    for i, c in enumerate(cols):
        if c in model.feature_cols:
            position = model.feature_cols.index(c)
            centroid = F.element_at(
                F.array(*[F.lit(float(centre[position])) for centre in model.centroids]), index
            )
        else:
            centroid = F.lit(None)
        columns += [
            F.col(f"__mean_{i}").cast("double").alias(f"mean_{c}"),
            F.col(f"__median_{i}").alias(f"median_{c}"),
            centroid.cast("double").alias(f"centroid_{c}"),
        ]
    # The window over all clusters put every row in one partition already: sorting that one is
    # the order (orderBy would first sample the rows for a range partitioning: one job more).
    return grouped.select(*columns).coalesce(1).sortWithinPartitions(CLUSTER_COL)
