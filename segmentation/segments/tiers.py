"""Value tiers from per-metric 1-D clustering, as marketers build them by hand.

Each metric (retail: ``recency_days``, ``frequency``, ``monetary``; Avito: ``recency_days``,
``frequency``, ``engagement``) is clustered *on its own* with a 1-D k-means, its clusters are
ranked, and the ranks are summed into a value score that is cut into three tiers.

Fit (:func:`fit_value_tiers`)
-----------------------------
1. One Spark job brings the metrics of the customers to the driver, transformed to
   ``log1p(max(x, 0))``: everyone up to :data:`DEFAULT_TIER_SAMPLE` customers, above that a
   seeded sample of about that many (at most a few hundred kilobytes). Counts and spend have
   heavy right tails: on raw values a handful of extreme customers would take clusters of their
   own and everybody else would share one; on the log scale clusters are bands of the same
   *relative* width (1-10, 10-100, ...). Negative values (net spend after returns) are clamped
   to 0. NULL (and NaN) values are left out of the fit.
2. Each metric is clustered by :func:`kmeans_1d` (``k`` = 3 or 4): the *optimal* 1-D k-means
   (Ckmeans.1d.dp's dynamic programming, exact, no seed), in milliseconds on the driver. It was
   an MLlib ``KMeans`` per metric: about 25 short Spark jobs each, most of the tiers' seconds
   on a small input, for a local optimum.
3. The centres are sorted; the boundary between two adjacent centres is their midpoint, mapped
   back to raw units with ``expm1``. In one dimension nearest-centre assignment is exactly
   "which pair of midpoints is the value between", and ``log1p(max(x, 0))`` is monotone, so
   comparing the *raw* value to these boundaries reproduces the nearest-centre assignment (up
   to floating-point rounding at a boundary itself; a value equal to a boundary goes to the
   lower cluster) without any log at scoring time.
4. A metric with ``k`` or fewer distinct values gets one centre per value; a constant metric
   has one centre and ranks everybody 0.

Scoring (:func:`with_value_tiers`)
----------------------------------
* A metric's rank is its cluster's position among the metric's ``n`` sorted centres, ``0`` =
  worst ... ``n - 1`` = best: ascending for higher-is-better metrics, reversed for recency (the
  cluster of the fewest days ranks highest).
* ``value_score`` = the sum of the ranks over the metrics (int), from 0 to
  ``S = sum(n_metric - 1)`` (``S = 9`` for three metrics with 4 centres each).
* ``value_tier``: ``"high"`` when ``value_score > 2S/3``, ``"low"`` when ``value_score < S/3``,
  ``"mid"`` otherwise. The range is cut in thirds of the *achievable* maximum (a metric with
  fewer centres, or a constant one, does not drag everybody down), and the rule is symmetric:
  reversing every ranking swaps high and low exactly (``S = 9``: low 0-2, mid 3-6, high 7-9;
  ``S = 6``: low 0-1, mid 2-4, high 5-6). With ``S = 0`` (every metric constant) everybody is
  ``"mid"``.
* A NULL (or NaN) metric gives a NULL ``value_score`` and ``value_tier``.

The :class:`ValueTierModel` holds the sorted raw-unit boundaries (and centres, for reports) and
the tier cuts, and saves to JSON (:meth:`ValueTierModel.to_dict`): a later period is scored with
the saved boundaries, without refitting.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.errors import EmptyResultError, InputError, SegmentationError
from segmentation.sources.common import require_columns, sql_identifier

log = logging.getLogger(__name__)

Transform = Callable[[DataFrame], DataFrame]

#: A metric: ``(feature column, higher_is_better)``.
Metric = Tuple[str, bool]

#: Retail: recency (lower is better), frequency, monetary.
RFM_METRICS: Tuple[Metric, ...] = (
    ("recency_days", False),
    ("frequency", True),
    ("monetary", True),
)

#: Avito: recency (lower is better), frequency (clicks), engagement (searches).
RFE_METRICS: Tuple[Metric, ...] = (
    ("recency_days", False),
    ("frequency", True),
    ("engagement", True),
)

#: Allowed numbers of clusters per metric.
MIN_K = 3
MAX_K = 4

#: Columns :func:`with_value_tiers` adds, and the tiers.
SCORE_COL = "value_score"
TIER_COL = "value_tier"
TIERS: Tuple[str, ...] = ("high", "mid", "low")

#: Above this many customers, the metrics are fitted on a seeded sample of about this many
#: (``fit_value_tiers(sample=...)``); it bounds what the fit brings to the driver.
DEFAULT_TIER_SAMPLE = 50_000



def default_tier_cuts(max_score: int) -> Tuple[float, float]:
    """``(S / 3, 2 * S / 3)`` for ``S = max_score``: low below the first, high above the second."""
    return (max_score / 3.0, 2.0 * max_score / 3.0)


@dataclass(frozen=True)
class ValueTierModel:
    """Saved per-metric clusterings and tier cuts (see the module docstring).

    Attributes
    ----------
    metrics
        ``(feature, higher_is_better)`` per metric, in order.
    boundaries
        Feature -> sorted, strictly increasing cut values between adjacent clusters, in raw
        feature units (``expm1`` of the log-scale midpoints); one fewer than the centres.
    centroids
        Feature -> the sorted cluster centres in raw units (``expm1`` of the log-scale centres),
        for reports; scoring does not use them.
    tier_cuts
        ``(low, high)``: ``value_score < low`` is "low", ``value_score > high`` is "high".
    k
        The requested number of clusters per metric (3 or 4).
    """

    metrics: Tuple[Metric, ...]
    boundaries: Mapping[str, Tuple[float, ...]]
    centroids: Mapping[str, Tuple[float, ...]]
    tier_cuts: Tuple[float, float]
    k: int

    def __post_init__(self) -> None:
        features = [f for f, _ in self.metrics]
        if not features:
            raise InputError("a value tier model needs at least one metric")
        if len(set(features)) != len(features):
            raise InputError(f"metrics listed twice in {features}")
        if not MIN_K <= self.k <= MAX_K:
            raise InputError(f"k must be {MIN_K}..{MAX_K}, got {self.k}")
        for f in features:
            if f not in self.boundaries or f not in self.centroids:
                raise InputError(f"no boundaries or centres for metric {f}")
            cuts, centres = list(self.boundaries[f]), list(self.centroids[f])
            if not 1 <= len(centres) <= self.k or len(cuts) != len(centres) - 1:
                raise InputError(
                    f"metric {f}: {len(centres)} centres and {len(cuts)} boundaries for k={self.k}"
                )
            if not all(math.isfinite(c) for c in cuts) or any(
                a >= b for a, b in zip(cuts, cuts[1:])
            ):
                raise InputError(f"boundaries of {f} must be finite and increasing: {cuts}")
        low, high = self.tier_cuts
        if not low <= high:
            raise InputError(f"tier cuts must be (low, high) with low <= high: {self.tier_cuts}")

    @property
    def max_score(self) -> int:
        """The highest achievable ``value_score``: ``sum(centres - 1)`` over the metrics."""
        return sum(len(self.centroids[f]) - 1 for f, _ in self.metrics)

    def to_dict(self) -> Dict[str, Any]:
        """The model as JSON-ready data (lists and plain floats)."""
        return {
            "k": self.k,
            "metrics": [{"feature": f, "higher_is_better": h} for f, h in self.metrics],
            "boundaries": {f: list(self.boundaries[f]) for f, _ in self.metrics},
            "centroids": {f: list(self.centroids[f]) for f, _ in self.metrics},
            "tier_cuts": list(self.tier_cuts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ValueTierModel:
        """The model :meth:`to_dict` saved; :class:`InputError` if it is incomplete or invalid."""
        try:
            metrics = tuple(
                (str(m["feature"]), bool(m["higher_is_better"])) for m in data["metrics"]
            )
            low, high = (float(c) for c in data["tier_cuts"])
            return cls(
                metrics=metrics,
                boundaries={
                    str(f): tuple(float(c) for c in v) for f, v in data["boundaries"].items()
                },
                centroids={
                    str(f): tuple(float(c) for c in v) for f, v in data["centroids"].items()
                },
                tier_cuts=(low, high),
                k=int(data["k"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"invalid value tier model: {exc!r}") from exc


def _check_metrics(metrics: Sequence[Metric]) -> List[Metric]:
    """The metrics as a list of ``(str, bool)``: at least one, no feature twice."""
    checked = [(str(f), bool(h)) for f, h in metrics]
    if not checked:
        raise SegmentationError("no metrics to tier on")
    names = [f for f, _ in checked]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SegmentationError(f"metric(s) listed twice: {', '.join(duplicates)}")
    return checked


def _check_columns(frame: DataFrame, cols: Sequence[str]) -> None:
    """Raise :class:`InputError` if ``frame`` lacks a column of ``cols`` or one is not numeric."""
    require_columns(frame, cols, "metric")


def kmeans_1d(values: Sequence[float], k: int) -> List[float]:
    """Sorted, distinct centres of the optimal 1-D k-means of ``values``.

    Ckmeans.1d.dp (Wang and Song, 2011; the ``ckwrap`` package wraps its C++ code): dynamic
    programming over the sorted values finds the ``k`` intervals with the lowest within-cluster
    sum of squares, exactly, in ``O(k n)`` after sorting; no initialisation, no seed, no local
    optimum. (Lloyd's algorithm from 10 seeded k-means++ starts ended up to 3% above that optimum
    on skewed counts.) This is also the "natural breaks" (Jenks) classification.

    ``values`` with ``k`` or fewer distinct values give one centre per distinct value.
    """
    if k < 1:
        raise SegmentationError(f"k must be >= 1, got {k}")
    x = np.asarray(values, dtype=np.float64)
    distinct = np.unique(x)
    if len(distinct) <= k:
        return [float(v) for v in distinct]
    import ckwrap  # a C++ extension, imported by the fit only

    return sorted(float(c) for c in ckwrap.ckmeans(x, k).centers)


def _log_scale(value: Column) -> Column:
    """``log1p(max(value, 0))`` as double; NULL for a NULL or NaN value."""
    number = value.cast("double")
    # (``greatest`` skips NULLs: ``greatest(NULL, 0)`` is 0, so NULL is tested first.)
    return F.when(
        number.isNotNull() & ~F.isnan(number), F.log1p(F.greatest(number, F.lit(0.0)))
    )


def fit_value_tiers(
    features: DataFrame,
    metrics: Sequence[Metric] = RFM_METRICS,
    k: int = 4,
    seed: int = 42,
    sample: int = DEFAULT_TIER_SAMPLE,
) -> ValueTierModel:
    """Fit one 1-D k-means per metric and derive the boundaries and tier cuts.

    Parameters
    ----------
    features
        One row per customer with the metrics' numeric columns. Read twice: once to count the
        customers and values, once to bring the (sampled) metrics to the driver.
    metrics
        ``(feature, higher_is_better)`` pairs, e.g. :data:`RFM_METRICS` or :data:`RFE_METRICS`.
    k
        Clusters per metric, 3 or 4.
    seed
        Seed of the sample (the clustering itself has no randomness: :func:`kmeans_1d`).
    sample
        Above this many customers, the fit uses a seeded sample of about this many (0: always
        everyone, which brings every customer's metrics to the driver). Four centres on one
        axis are pinned down by tens of thousands of values.

    Returns
    -------
    ValueTierModel
        Boundaries and centres in raw units, tier cuts ``(S / 3, 2S / 3)``.

    Raises
    ------
    SegmentationError
        ``k`` outside 3..4, no or repeated metrics.
    InputError
        A metric column is missing or not numeric.
    EmptyResultError
        The table is empty, or a metric has no non-NULL value.
    """
    checked = _check_metrics(metrics)
    if not MIN_K <= k <= MAX_K:
        raise SegmentationError(f"k of the value tiers must be {MIN_K}..{MAX_K}, got {k}")
    names = [f for f, _ in checked]
    _check_columns(features, names)
    logged = features.select(
        *[_log_scale(F.col(sql_identifier(f))).alias(f"x{i}") for i, f in enumerate(names)]
    )
    counts = logged.select(
        F.count(F.lit(1)).alias("customers"),
        *[F.count(f"x{i}").alias(f"n{i}") for i in range(len(names))],
    ).first()
    assert counts is not None  # an aggregate without grouping has one row
    empty = [f for i, f in enumerate(names) if counts[f"n{i}"] == 0]
    if empty:
        raise EmptyResultError(f"no customer has a value of {', '.join(empty)}: cannot fit tiers")
    customers = int(counts["customers"])
    if 0 < sample < customers:
        logged = logged.sample(withReplacement=False, fraction=sample / customers, seed=seed)
    rows = logged.collect()  # bounded by the sample: a few doubles per customer

    boundaries: Dict[str, Tuple[float, ...]] = {}
    centroids: Dict[str, Tuple[float, ...]] = {}
    for i, feature in enumerate(names):
        values = [row[i] for row in rows if row[i] is not None]
        if not values:  # every value of the metric fell outside the sample
            raise EmptyResultError(
                f"the tiers' sample of {len(rows):,} customers has no value of {feature}; "
                "fit on everyone (sample=0)"
            )
        centres = kmeans_1d(values, k)
        mids = [(a + b) / 2.0 for a, b in zip(centres, centres[1:])]
        boundaries[feature] = tuple(math.expm1(m) for m in mids)
        centroids[feature] = tuple(math.expm1(c) for c in centres)
        log.info(
            "value tiers: %s: %d centre(s) %s, boundaries %s (%s customers)",
            feature,
            len(centres),
            [f"{c:.4g}" for c in centroids[feature]],
            [f"{b:.4g}" for b in boundaries[feature]],
            f"{len(values):,}",
        )
    max_score = sum(len(centroids[f]) - 1 for f in names)
    return ValueTierModel(
        metrics=tuple(checked),
        boundaries=boundaries,
        centroids=centroids,
        tier_cuts=default_tier_cuts(max_score),
        k=k,
    )


def rank_column(value: Column, boundaries: Sequence[float], higher_is_better: bool) -> Column:
    """A metric's cluster rank (int, 0 = worst) from its sorted raw-unit boundaries.

    The cluster index is the number of boundaries strictly below the value (a value equal to a
    boundary goes to the lower cluster); the rank is that index when higher is better, else
    ``len(boundaries) - index``. NULL or NaN values give NULL.
    """
    number = value.cast("double")
    valid = number.isNotNull() & ~F.isnan(number)
    index: Column = F.lit(0)
    for cut in boundaries:
        index = index + (number > F.lit(float(cut))).cast("int")
    rank = index if higher_is_better else F.lit(len(boundaries)) - index
    return F.when(valid, rank.cast("int"))


def with_value_tiers(model: ValueTierModel) -> Transform:
    """Add ``value_score`` (int) and ``value_tier`` (``high`` / ``mid`` / ``low``) with a model.

    Parameters
    ----------
    model
        A fitted (:func:`fit_value_tiers`) or loaded (:meth:`ValueTierModel.from_dict`) model.

    Returns
    -------
    Transform
        ``features -> features`` with ``value_score`` and ``value_tier`` added; raises
        :class:`InputError` when a metric column is missing or not numeric.
    """

    def transform(features: DataFrame) -> DataFrame:
        _check_columns(features, [f for f, _ in model.metrics])
        ranks = [
            rank_column(F.col(sql_identifier(f)), model.boundaries[f], higher)
            for f, higher in model.metrics
        ]
        score = sum(ranks[1:], ranks[0]).cast("int")
        low, high = model.tier_cuts
        with_score = features.withColumn(SCORE_COL, score)
        s = F.col(SCORE_COL)
        tier = (
            F.when(s > F.lit(float(high)), F.lit("high"))
            .when(s < F.lit(float(low)), F.lit("low"))
            .when(s.isNotNull(), F.lit("mid"))
        )
        return with_score.withColumn(TIER_COL, tier)

    return transform
