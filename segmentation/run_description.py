"""``run.json``: a saved run describes itself, so ``score`` and ``compare`` never guess.

It holds what is needed to apply the run to new data and to read its outputs: the source and its
cleaning rules, the feature set (columns, clustered columns, value weights, value column, score
features), the reference-date rule and time zone, the transform, algorithm and k, the segment
names by cluster, the score cut points and grid, and the value-tier model.

Example (retail, abridged)::

    {
      "format": "segmentation-run/1",
      "command": "run",
      "source": "retail",
      "rules": {"cancellations": "net", "non_product": "exclude", ...},
      "feature_set": {"columns": [...], "cluster_columns": ["recency_days", "frequency",
                      "monetary"], "value_weights": {...}, "value_column": "monetary", ...},
      "reference_date": {"rule": "day_after_latest_event", "date": "2010-12-10"},
      "time_zone": "UTC",
      "clustering": {"algorithm": "kmeans", "transform": "log-standard", "k": 4,
                     "model": "model"},
      "segments": [{"cluster": 0, "segment": "champions"}, ...],
      "scores": {"cut_points": {"r_score": [...]}, "grid": {...}},
      "value_tiers": {...}
    }
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Mapping, Optional

from pyspark.sql import SparkSession

from segmentation.errors import InputError
from segmentation.io import storage
from segmentation.sources.common import FeatureSet

FORMAT = "segmentation-run/1"
FILE_NAME = "run.json"

#: ``reference_date.rule``: the day after the latest kept event of the data being processed.
DAY_AFTER_LATEST_EVENT = "day_after_latest_event"
#: ``reference_date.rule``: a date given with ``--reference-date``.
FIXED = "fixed"


@dataclass(frozen=True)
class RunDescription:
    """What a run is. See the module docstring for the JSON.

    Attributes
    ----------
    command
        The command that made the run (``features``, ``cluster``, ``run``, ``score``).
    source
        ``retail``, ``avito`` or ``events``.
    rules
        The source's cleaning and aggregation rules (:meth:`FeatureOptions.rules`).
    feature_set
        The features, the clustered ones and the value weights.
    reference_rule, reference_date
        :data:`DAY_AFTER_LATEST_EVENT` or :data:`FIXED`, and the date it gave.
    time_zone
        The Spark session time zone every date was computed in.
    clustering
        ``algorithm``, ``transform``, ``k``, ``model`` (path of the saved model, relative to the
        run), ``seed``; empty for ``features``.
    segments
        ``{"cluster": int, "segment": str}`` per cluster, most valuable first.
    scores
        ``cut_points`` (score -> 4 cut points) and ``grid`` (the named RFM grid).
    value_tiers
        The per-metric value-tier model.
    trained_on
        For ``score``: the run whose model was applied (its location as given).
    """

    command: str
    source: str
    rules: Mapping[str, Any]
    feature_set: FeatureSet
    reference_rule: str
    reference_date: Optional[dt.date]
    time_zone: str = "UTC"
    clustering: Mapping[str, Any] = field(default_factory=dict)
    segments: List[Dict[str, Any]] = field(default_factory=list)
    scores: Mapping[str, Any] = field(default_factory=dict)
    value_tiers: Mapping[str, Any] = field(default_factory=dict)
    trained_on: Optional[str] = None

    def with_changes(self, **changes: Any) -> RunDescription:
        """A copy with some fields replaced."""
        return replace(self, **changes)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON document."""
        return {
            "format": FORMAT,
            "command": self.command,
            "source": self.source,
            "rules": dict(self.rules),
            "feature_set": self.feature_set.to_dict(),
            "reference_date": {
                "rule": self.reference_rule,
                "date": self.reference_date.isoformat() if self.reference_date else None,
            },
            "time_zone": self.time_zone,
            "clustering": dict(self.clustering),
            "segments": list(self.segments),
            "scores": dict(self.scores),
            "value_tiers": dict(self.value_tiers),
            "trained_on": self.trained_on,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = FILE_NAME) -> RunDescription:
        """Read the document of :meth:`to_dict`; raise :class:`InputError` if it is not one."""
        if data.get("format") != FORMAT:
            raise InputError(
                f"{where} is not a run description of this product "
                f"(format {data.get('format')!r}, expected {FORMAT!r})"
            )
        reference = data.get("reference_date") or {}
        date = reference.get("date")
        return cls(
            command=str(data["command"]),
            source=str(data["source"]),
            rules=dict(data.get("rules") or {}),
            feature_set=FeatureSet.from_dict(data["feature_set"]),
            reference_rule=str(reference.get("rule", DAY_AFTER_LATEST_EVENT)),
            reference_date=dt.date.fromisoformat(date) if date else None,
            time_zone=str(data.get("time_zone", "UTC")),
            clustering=dict(data.get("clustering") or {}),
            segments=list(data.get("segments") or []),
            scores=dict(data.get("scores") or {}),
            value_tiers=dict(data.get("value_tiers") or {}),
            trained_on=data.get("trained_on"),
        )

    @classmethod
    def load(cls, spark: SparkSession, run_dir: str) -> RunDescription:
        """The ``run.json`` of the run in ``run_dir`` (local or S3)."""
        path = storage.join_path(run_dir, FILE_NAME)
        if not storage.exists(spark, path):
            what = "an unfinished run" if not storage.exists(
                spark, storage.join_path(run_dir, "manifest.json")
            ) else "a run of an older version"
            raise InputError(
                f"{run_dir} has no {FILE_NAME}: not a run of this product, or {what}"
            )
        return cls.from_dict(storage.read_json(spark, path), path)


def find_run_dir(spark: SparkSession, path: str) -> Optional[str]:
    """The finished run folder holding ``path`` (with a ``run.json``), or ``None``.

    ``path`` goes through :func:`segmentation.layout.resolve`, the one resolver of product
    outputs: an output folder is read through its ``LATEST`` pointer, ``OUT/features`` is the
    ``features/`` of that run, ``OUT/runs/<run_id>/features`` belongs to that run, and a run
    folder of an earlier version (``RUN`` or ``RUN/features``) is found by its ``run.json``.
    """
    from segmentation.layout import resolve

    run_dir = resolve(spark, path).run_dir
    if run_dir is not None and storage.exists(spark, storage.join_path(run_dir, FILE_NAME)):
        return run_dir
    return None
