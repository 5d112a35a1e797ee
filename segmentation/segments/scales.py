"""A run's marketing scales: RFM quintile scores, the named grid and value tiers, together.

:func:`fit_scales` fits them on a period's features (score cut points by ``approxQuantile``, one
1-D KMeans per metric for the tiers); :meth:`Scales.transform` applies them to any period's
features (``score`` reuses the saved ones, so a later period is scored on the same scale). The
columns added, in order: the score columns of the feature set (``r_score, f_score, m_score`` or
``r_score, f_score, e_score``), ``fm_score``, ``rfm_segment``, ``value_score``, ``value_tier``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from pyspark.sql import DataFrame

from segmentation.segments import scores, tiers
from segmentation.sources.common import FeatureSet


@dataclass(frozen=True)
class Scales:
    """Score cut points and the value-tier model of a run.

    Attributes
    ----------
    specs
        The quintile scores (score, feature, direction).
    cut_points
        Score -> its 4 cut points.
    value_tiers
        The per-metric value-tier model.
    """

    specs: Tuple[scores.ScoreSpec, ...]
    cut_points: Mapping[str, Sequence[float]]
    value_tiers: tiers.ValueTierModel

    @property
    def columns(self) -> List[str]:
        """The columns :meth:`transform` adds, in order."""
        return [
            *(spec.score for spec in self.specs), scores.FM_SCORE_COL, scores.SEGMENT_COL,
            tiers.SCORE_COL, tiers.TIER_COL,
        ]

    def transform(self, features: DataFrame) -> DataFrame:
        """Add the scores, ``fm_score``, ``rfm_segment``, ``value_score`` and ``value_tier``."""
        return (
            features.transform(scores.with_scores(self.cut_points, self.specs))
            .transform(scores.with_rfm_segment(self.specs))
            .transform(tiers.with_value_tiers(self.value_tiers))
        )

    def scores_document(self) -> Dict[str, Any]:
        """``run.json``'s ``scores``: the specs, cut points and the grid they name."""
        return {
            "specs": [
                {"score": s.score, "feature": s.feature, "higher_is_better": s.higher_is_better}
                for s in self.specs
            ],
            "quantiles": list(scores.QUANTILES),
            "cut_points": {k: [float(c) for c in v] for k, v in self.cut_points.items()},
            "fm_score": "mean of the scores other than r_score, rounded half up",
            "grid": [
                {"r_score": r, "fm_score": fm, "rfm_segment": name}
                for (r, fm), name in sorted(scores.RFM_GRID.items())
            ],
        }

    @classmethod
    def from_documents(
        cls, scores_document: Mapping[str, Any], tiers_document: Mapping[str, Any]
    ) -> Scales:
        """The scales saved in ``run.json`` (:meth:`scores_document`, the tier model)."""
        specs = tuple(
            scores.ScoreSpec(str(s["score"]), str(s["feature"]), bool(s["higher_is_better"]))
            for s in scores_document["specs"]
        )
        cut_points = {str(k): [float(c) for c in v] for k, v in
                      scores_document["cut_points"].items()}
        return cls(
            specs=specs,
            cut_points=cut_points,
            value_tiers=tiers.ValueTierModel.from_dict(tiers_document),
        )


def fit_scales(features: DataFrame, feature_set: FeatureSet, seed: int = 42) -> Scales:
    """Fit the score cut points and the value tiers of ``feature_set`` on ``features``.

    ``features`` is read once for the cut points and twice for the tiers (a count, then the
    sampled metrics), the two at once (concurrent Spark jobs from threads): cache it.
    """
    specs = scores.score_specs(feature_set.scores, feature_set.value_weights)
    metrics = [(spec.feature, spec.higher_is_better) for spec in specs]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="scales") as pool:
        cut_points = pool.submit(scores.score_cut_points, features, specs)
        value_tiers = pool.submit(tiers.fit_value_tiers, features, metrics, seed=seed)
        return Scales(
            specs=specs, cut_points=cut_points.result(), value_tiers=value_tiers.result()
        )
