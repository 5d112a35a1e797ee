"""What a report is made of: small, already-collected data in plain Python containers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: Name of the ``from_segment`` of customers who appear only in the later run.
NEW = "(new)"
#: Name of the ``to_segment`` of customers who are gone from the later run.
LOST = "(lost)"

#: Keys every segment profile must have (besides the per-feature ``mean_``/``median_``/
#: ``centroid_`` keys, which may be missing or ``None``).
PROFILE_KEYS = ("cluster", "segment", "customers", "customer_share")


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, collected by the pipeline (no Spark objects).

    Parameters
    ----------
    title
        Heading of the report, e.g. ``"Customer segments: Online Retail II"``.
    run
        Facts about the run, shown as a small table in insertion order, e.g. ``command``,
        ``source``, ``input``, ``reference_date``, ``customers``, ``algorithm``, ``chosen_k``,
        ``transform``, ``created_at``. Values are shown with ``str`` (lists joined by commas);
        ``None`` values are left out.
    feature_columns
        The clustered feature columns, e.g. ``["recency_days", "frequency", "monetary"]``.
    value_column
        The feature whose total is shared among segments as "value" (``"monetary"`` for retail,
        ``"frequency"``, i.e. clicks, for Avito), or ``None`` when there is none.
    value_label
        What the value is called in the text: ``"revenue"``, ``"clicks"``.
    k_selection
        One row per k tried: ``k``, ``wssse``, ``silhouette``, ``davies_bouldin``,
        ``calinski_harabasz`` (each may be ``None``), optionally ``stability`` (``None`` or absent
        when not computed) and ``chosen`` (bool). Empty when the customers were scored with a
        saved model (no sweep).
    profiles
        One row per segment: ``cluster`` (int, 0 = most valuable), ``segment`` (name),
        ``customers`` (int), ``customer_share`` (0..1), ``value_share`` (0..1 or ``None``), and
        for each feature ``f``: ``mean_<f>``, ``median_<f>``, ``centroid_<f>`` (standardised).
    sample
        A bounded sample of customers (a few thousand at most) with ``recency_days``,
        ``frequency`` and ``segment``, for the recency/frequency scatter. May be empty.
    rfm_grid
        Rows ``r_score`` (1..5), ``fm_score`` (1..5), ``rfm_segment`` (name), ``customers``.
        May be empty (no grid computed).
    grid_layout
        The classic RFM segment map, ``(r_score, fm_score) -> name`` for all 25 cells, so that the
        grid figure names empty cells too; ``None`` to take the names from ``rfm_grid``.
    migration
        Rows ``from_segment``, ``to_segment``, ``customers``, ``share`` (share of the
        from-segment's customers) comparing an earlier run with this one; ``from_segment`` is
        ``"(new)"`` for customers only in this run, ``to_segment`` ``"(lost)"`` for customers
        gone. ``None`` when no comparison was run.

    Raises
    ------
    ValueError
        If there are no feature columns or no profiles, or a profile lacks one of
        :data:`PROFILE_KEYS`: the pipeline collected the wrong thing.
    """

    title: str
    run: Dict[str, Any]
    feature_columns: List[str]
    value_column: Optional[str]
    value_label: str
    k_selection: List[Dict[str, Any]] = field(default_factory=list)
    profiles: List[Dict[str, Any]] = field(default_factory=list)
    sample: List[Dict[str, Any]] = field(default_factory=list)
    rfm_grid: List[Dict[str, Any]] = field(default_factory=list)
    grid_layout: Optional[Dict[Tuple[int, int], str]] = None
    migration: Optional[List[Dict[str, Any]]] = None

    def __post_init__(self) -> None:
        if not self.feature_columns:
            raise ValueError("report: no feature columns")
        if not self.profiles:
            raise ValueError("report: no segment profiles")
        for profile in self.profiles:
            missing = [key for key in PROFILE_KEYS if key not in profile]
            if missing:
                raise ValueError(f"report: a segment profile lacks {', '.join(missing)}")

    @property
    def ordered_profiles(self) -> List[Dict[str, Any]]:
        """The profiles in cluster order (0, the most valuable, first)."""
        return sorted(self.profiles, key=lambda p: int(p["cluster"]))

    @property
    def segment_order(self) -> List[str]:
        """Segment names in cluster order."""
        return [str(p["segment"]) for p in self.ordered_profiles]


def number(value: Any) -> Optional[float]:
    """``value`` as a finite float, or ``None`` (missing, ``None``, NaN, infinite, not numeric).

    Parameters
    ----------
    value
        Anything collected from a DataFrame row.

    Returns
    -------
    float or None
        The number, or ``None`` when there is no usable number.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def get_number(row: Mapping[str, Any], key: str) -> Optional[float]:
    """:func:`number` of ``row[key]``; ``None`` when the key is absent.

    Parameters
    ----------
    row
        A collected row.
    key
        The column.

    Returns
    -------
    float or None
        The number, or ``None``.
    """
    return number(row.get(key))
