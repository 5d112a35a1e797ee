"""RFM quintile scores (1..5) and the named 11-segment RFM grid.

Scores
------
Each score reads one feature (:class:`ScoreSpec`): retail scores ``r_score`` from
``recency_days`` (lower is better), ``f_score`` from ``frequency`` and ``m_score`` from
``monetary`` (:data:`RFM_SCORES`); Avito scores ``r_score``, ``f_score`` from ``frequency``
(clicks) and ``e_score`` from ``engagement`` (searches) (:data:`RFE_SCORES`).

1. :func:`score_cut_points` computes, per score, the 4 cut points ``c1 <= c2 <= c3 <= c4`` at
   quantiles 0.2, 0.4, 0.6 and 0.8 of its feature, with one multi-column
   ``DataFrame.approxQuantile`` call (NULLs are ignored). They are plain floats, saved with a run
   so that a later period is scored on the same scale.
2. :func:`with_scores` adds one int column per score, 5 = best. For a higher-is-better feature
   the score is ``1 + (number of cut points strictly below the value)``::

       value <= c1 -> 1,  c1 < value <= c2 -> 2,  ...,  c3 < value <= c4 -> 4,  value > c4 -> 5

   For a lower-is-better feature (recency) the buckets are the same and the score is mirrored,
   ``6 - bucket``: ``recency <= c1 -> 5`` (the most recent), ..., ``recency > c4 -> 1``.

Tie policy
~~~~~~~~~~
A value equal to a cut point goes to the bucket *below* the cut point, i.e. buckets are
``(c_{i-1}, c_i]``, for both directions; for recency the same bucket is scored mirrored, so a
recency equal to a cut point gets the better (more recent) score of the two. A score is a function
of the value alone: all customers with the same value get the same score, ties are never split.
With ``relative_error=0`` a cut point is the element of rank ``ceil(p * n)``, so with distinct
values every bucket holds exactly its quintile. With heavy ties (e.g. many customers with
``frequency = 1``) buckets are *not* 20% each: the tied value's bucket holds all of them (it can
be far larger than 20%), and cut points that coincide (``c1 = c2 = 1``) collapse buckets, which
are then empty (nobody is ``> 1`` and ``<= 1``, so no ``f_score = 2``). Ties are never broken
arbitrarily (e.g. by row order, as ``ntile`` over a window would do) to force equal sizes.

A NULL feature gives a NULL score; NaN compares above every number in Spark, so it counts as the
largest value.

The RFM grid
------------
:func:`with_rfm_segment` names each customer from two axes:

* ``r_score`` (the recency score), and
* ``fm_score``, the "frequency / monetary" axis: the mean of the other (higher-is-better) scores,
  rounded half up to an int 1..5: ``fm_score = floor(mean + 0.5)``. Retail:
  ``(f_score + m_score) / 2``; Avito: ``(f_score + e_score) / 2``; a source with only
  ``f_score``: ``f_score``. So ``f = 1, m = 2`` gives ``fm = 2``, ``f = 2, m = 3`` gives ``3``.

:data:`RFM_GRID` maps each of the 25 ``(r_score, fm_score)`` cells to one of the 11 segments of
the widely used RFM grid (:data:`RFM_SEGMENTS`); :func:`grid_rows` returns it as a table (rows
``r = 5..1``, columns ``fm = 1..5``)::

    r  fm = 1          fm = 2               fm = 3               fm = 4           fm = 5
    5  new customers   potential loyalists  potential loyalists  champions        champions
    4  promising       potential loyalists  potential loyalists  loyal customers  loyal customers
    3  about to sleep  about to sleep       need attention       loyal customers  loyal customers
    2  hibernating     hibernating          at risk              at risk          can't lose them
    1  lost            lost                 at risk              at risk          can't lose them

It is the common 10-segment (R, F) grid with ``fm`` for F, and ``lost`` split out of
``hibernating``: the low-value half of the bottom recency row (``r = 1``, ``fm <= 2``), the
customers gone longest among those that were never worth much. The split follows recency only,
which is what "lost" means, so both segments stay 2-cell rectangles; it does not hinge on the
``fm = 1`` / ``fm = 2`` line, which ties in low frequency (many one-time buyers) make arbitrary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from segmentation.errors import EmptyResultError, InputError, SegmentationError
from segmentation.sources.common import require_columns, sql_identifier

Transform = Callable[[DataFrame], DataFrame]

#: Quantiles of the 4 cut points between the 5 score buckets.
QUANTILES: Tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)

#: Lowest and highest score.
MIN_SCORE = 1
MAX_SCORE = 5

#: Columns :func:`with_rfm_segment` adds.
FM_SCORE_COL = "fm_score"
SEGMENT_COL = "rfm_segment"


@dataclass(frozen=True)
class ScoreSpec:
    """Which feature a quintile score reads, and in which direction.

    Attributes
    ----------
    score
        Name of the score column (``r_score``, ``f_score``, ``m_score``, ``e_score``).
    feature
        The numeric feature column it scores.
    higher_is_better
        ``True`` when a larger value is better (frequency, monetary, engagement); ``False`` for
        recency, whose smallest values (the most recent customers) score 5.
    """

    score: str
    feature: str
    higher_is_better: bool


#: Retail (RFM): recency, frequency (invoices), monetary (net spend).
RFM_SCORES: Tuple[ScoreSpec, ...] = (
    ScoreSpec("r_score", "recency_days", higher_is_better=False),
    ScoreSpec("f_score", "frequency", higher_is_better=True),
    ScoreSpec("m_score", "monetary", higher_is_better=True),
)

#: Avito (RFE): recency, frequency (clicks), engagement (searches).
RFE_SCORES: Tuple[ScoreSpec, ...] = (
    ScoreSpec("r_score", "recency_days", higher_is_better=False),
    ScoreSpec("f_score", "frequency", higher_is_better=True),
    ScoreSpec("e_score", "engagement", higher_is_better=True),
)

#: The 11 segments of the grid, from the most to the least valuable.
RFM_SEGMENTS: Tuple[str, ...] = (
    "champions",
    "loyal customers",
    "potential loyalists",
    "new customers",
    "promising",
    "need attention",
    "about to sleep",
    "can't lose them",
    "at risk",
    "hibernating",
    "lost",
)

# Rows r = 5..1, columns fm = 1..5.
_GRID_TABLE: Tuple[Tuple[str, str, str, str, str], ...] = (
    ("new customers", "potential loyalists", "potential loyalists", "champions", "champions"),
    ("promising", "potential loyalists", "potential loyalists", "loyal customers",
     "loyal customers"),
    ("about to sleep", "about to sleep", "need attention", "loyal customers", "loyal customers"),
    ("hibernating", "hibernating", "at risk", "at risk", "can't lose them"),
    ("lost", "lost", "at risk", "at risk", "can't lose them"),
)

#: ``(r_score, fm_score) -> segment`` for all 25 cells.
RFM_GRID: Dict[Tuple[int, int], str] = {
    (MAX_SCORE - i, fm): name
    for i, row in enumerate(_GRID_TABLE)
    for fm, name in enumerate(row, start=MIN_SCORE)
}


def grid_rows() -> List[Tuple[int, List[str]]]:
    """The grid as a table for reports: rows ``r = 5..1``, each with its names for ``fm = 1..5``.

    Returns
    -------
    list of (int, list of str)
        ``[(5, ["new customers", ..., "champions"]), ..., (1, ["lost", ..., "can't lose them"])]``.
    """
    return [
        (r, [RFM_GRID[(r, fm)] for fm in range(MIN_SCORE, MAX_SCORE + 1)])
        for r in range(MAX_SCORE, MIN_SCORE - 1, -1)
    ]


def score_specs(
    scores: Mapping[str, str], value_weights: Optional[Mapping[str, float]] = None
) -> Tuple[ScoreSpec, ...]:
    """Score specs from a ``score -> feature`` mapping (a source's feature set).

    Parameters
    ----------
    scores
        ``{"r_score": "recency_days", "f_score": "frequency", ...}``, in score order.
    value_weights
        Feature -> sign of its value (negative: lower is better). Features without a weight:
        ``recency_days`` is lower-is-better, every other feature higher-is-better.

    Returns
    -------
    tuple of ScoreSpec
        One spec per score, in the mapping's order.
    """
    weights = value_weights or {}
    return tuple(
        ScoreSpec(
            score,
            feature,
            higher_is_better=(
                weights[feature] >= 0 if feature in weights else feature != "recency_days"
            ),
        )
        for score, feature in scores.items()
    )


def _check_specs(specs: Sequence[ScoreSpec]) -> List[ScoreSpec]:
    """The specs as a list: at least one, no score name twice."""
    checked = list(specs)
    if not checked:
        raise SegmentationError("no scores to compute")
    names = [s.score for s in checked]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SegmentationError(f"score(s) listed twice: {', '.join(duplicates)}")
    return checked


def _check_features(frame: DataFrame, features: Sequence[str]) -> None:
    """Raise :class:`InputError` if ``frame`` lacks one of ``features`` or one is not numeric."""
    require_columns(frame, features, "score feature")


def score_cut_points(
    features: DataFrame, specs: Sequence[ScoreSpec], relative_error: float = 1e-3
) -> Dict[str, List[float]]:
    """The 4 cut points of every score: quantiles 0.2, 0.4, 0.6, 0.8 of its feature.

    One Spark action: a multi-column ``approxQuantile`` over the distinct features of ``specs``.
    Only 4 numbers per feature reach the driver.

    Parameters
    ----------
    features
        One row per customer with the specs' numeric feature columns.
    specs
        The scores to compute cut points for.
    relative_error
        ``approxQuantile``'s relative rank error; 0 is exact (the element of rank
        ``ceil(p * n)`` among the non-NULL values) and costlier on large tables.

    Returns
    -------
    dict
        Score name -> ``[c1, c2, c3, c4]`` as plain floats (non-decreasing, JSON-serialisable).

    Raises
    ------
    InputError
        A feature column is missing or not numeric.
    EmptyResultError
        The table is empty or a feature has no non-NULL value.
    """
    checked = _check_specs(specs)
    if not 0.0 <= relative_error <= 1.0:
        raise SegmentationError(f"relative_error must be in [0, 1], got {relative_error}")
    columns = list(dict.fromkeys(s.feature for s in checked))
    _check_features(features, columns)
    quantiles = features.approxQuantile(columns, list(QUANTILES), relative_error)
    by_feature = dict(zip(columns, quantiles))
    empty = [c for c in columns if not by_feature[c]]
    if empty:
        raise EmptyResultError(
            f"no customer has a value of {', '.join(empty)}: cannot compute score cut points"
        )
    return {s.score: [float(v) for v in by_feature[s.feature]] for s in checked}


def _check_cut_points(cut_points: Mapping[str, Sequence[float]], score: str) -> List[float]:
    """The score's cut points as 4 finite, non-decreasing floats, else :class:`InputError`."""
    if score not in cut_points:
        raise InputError(f"no cut points for score {score}")
    cuts = [float(c) for c in cut_points[score]]
    if len(cuts) != len(QUANTILES):
        raise InputError(f"score {score} needs {len(QUANTILES)} cut points, got {len(cuts)}")
    if not all(math.isfinite(c) for c in cuts) or cuts != sorted(cuts):
        raise InputError(f"cut points of score {score} must be finite and sorted: {cuts}")
    return cuts


def score_column(value: Column, cuts: Sequence[float], higher_is_better: bool) -> Column:
    """The 1..5 score of ``value`` for sorted cut points ``cuts`` (NULL for NULL).

    ``bucket = 1 + (number of cut points strictly below value)``; the score is ``bucket`` when
    higher is better, else ``6 - bucket``. See the module docstring for the tie policy.
    """
    if len(cuts) != len(QUANTILES):
        raise SegmentationError(f"a score needs {len(QUANTILES)} cut points, got {len(cuts)}")
    above = [(value > F.lit(float(c))).cast("int") for c in cuts]
    below_count = sum(above[1:], above[0])
    if higher_is_better:
        return (F.lit(MIN_SCORE) + below_count).cast("int")
    return (F.lit(MAX_SCORE) - below_count).cast("int")


def with_scores(
    cut_points: Mapping[str, Sequence[float]], specs: Sequence[ScoreSpec]
) -> Transform:
    """Add one int score column (1..5, 5 = best) per spec, from saved cut points.

    Parameters
    ----------
    cut_points
        Score name -> its 4 sorted cut points (:func:`score_cut_points`, or loaded from a run).
    specs
        The scores to add.

    Returns
    -------
    Transform
        ``features -> features`` with the score columns added (replaced if present). Raises
        :class:`InputError` when a feature column is missing or not numeric.

    Raises
    ------
    InputError
        A score has no cut points, or not 4 finite sorted ones.
    """
    checked = _check_specs(specs)
    cuts = {s.score: _check_cut_points(cut_points, s.score) for s in checked}

    def transform(features: DataFrame) -> DataFrame:
        _check_features(features, [s.feature for s in checked])
        return features.withColumns(
            {
                s.score: score_column(
                    F.col(sql_identifier(s.feature)), cuts[s.score], s.higher_is_better
                )
                for s in checked
            }
        )

    return transform


def fm_score_column(scores: Sequence[Column]) -> Column:
    """``floor(mean(scores) + 0.5)`` as an int: the mean rounded half up (NULL if any is NULL)."""
    if not scores:
        raise SegmentationError("fm_score needs at least one score")
    total = sum(scores[1:], scores[0])
    n = len(scores)
    # floor(total / n + 1/2) = floor((2 * total + n) / (2 * n)), exact for small ints.
    return F.floor((total * 2 + n) / (2 * n)).cast("int")


def with_rfm_segment(
    specs: Sequence[ScoreSpec], recency_score: str = "r_score"
) -> Transform:
    """Add ``fm_score`` (int 1..5) and ``rfm_segment`` (:data:`RFM_GRID` name) from scores.

    The input must hold the score columns (:func:`with_scores`). ``fm_score`` is the mean of the
    scores of ``specs`` other than ``recency_score``, rounded half up; ``rfm_segment`` is looked
    up in a literal array of the 25 grid names at ``(r_score - 1) * 5 + fm_score`` (no join, no
    UDF). A NULL score gives NULL ``fm_score`` / ``rfm_segment``, and so does a score outside
    1..5.

    Parameters
    ----------
    specs
        The scores (e.g. :data:`RFM_SCORES`); one must be ``recency_score``.
    recency_score
        The score of the grid's R axis.

    Returns
    -------
    Transform
        ``scored -> scored`` with ``fm_score`` and ``rfm_segment`` added.
    """
    checked = _check_specs(specs)
    names = [s.score for s in checked]
    if recency_score not in names:
        raise SegmentationError(f"the recency score {recency_score} is not among {names}")
    value_scores = [n for n in names if n != recency_score]
    if not value_scores:
        raise SegmentationError("the RFM grid needs at least one score besides recency")
    cells = F.array(
        *[
            F.lit(RFM_GRID[(r, fm)])
            for r in range(MIN_SCORE, MAX_SCORE + 1)
            for fm in range(MIN_SCORE, MAX_SCORE + 1)
        ]
    )

    def transform(scored: DataFrame) -> DataFrame:
        present = set(scored.columns)
        missing = [n for n in names if n not in present]
        if missing:
            raise InputError(
                f"missing score column(s) {', '.join(missing)}; add them with with_scores"
            )
        r = F.col(sql_identifier(recency_score))
        fm = fm_score_column([F.col(sql_identifier(n)) for n in value_scores])
        with_fm = scored.withColumn(FM_SCORE_COL, fm)
        fm_col = F.col(FM_SCORE_COL)
        valid = r.between(MIN_SCORE, MAX_SCORE) & fm_col.between(MIN_SCORE, MAX_SCORE)
        index = (r - MIN_SCORE) * (MAX_SCORE - MIN_SCORE + 1) + fm_col
        return with_fm.withColumn(SEGMENT_COL, F.when(valid, F.element_at(cells, index)))

    return transform
