"""Plain-language descriptions of segments, and the number formats of the report.

A segment is described from its standardised centroid (the coordinate ``z`` of each clustered
feature: how many standard deviations the segment's centre lies from the average customer, after
the run's transform) and from its shares of customers and of value.

Each feature's ``z`` is put in one of three levels, with fixed thresholds:

=========  ==================  ===========================================================
level      condition           meaning
=========  ==================  ===========================================================
low        ``z < -0.5``        half a standard deviation or more below the average customer
average    ``-0.5 <= z <= 0.5``  close to the average customer
high       ``z > 0.5``         half a standard deviation or more above the average customer
=========  ==================  ===========================================================

and each level has a phrase per feature (:data:`PHRASES`). Recency is measured in days since the
last activity, so a *low* ``recency_days`` means *recently active*. Features without phrases of
their own read ``"high <name>"``, ``"average <name>"``, ``"low <name>"`` (underscores as spaces).
Clauses follow the order of the feature columns; features without a centroid are skipped. The
shares follow a semicolon: ``"21% of customers, 81% of revenue"`` (whole percent, halves rounded
up, ``"<1%"`` for a positive share under half a percent).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

from segmentation.report.inputs import get_number, number

#: Shown for a missing number (an en dash).
MISSING = "\u2013"

#: ``z`` below this is "low".
LOW_Z = -0.5
#: ``z`` above this is "high".
HIGH_Z = 0.5

#: Phrases per feature and level (``low``, ``average``, ``high`` of the standardised centroid).
PHRASES: Dict[str, Dict[str, str]] = {
    "recency_days": {
        "low": "active recently",
        "average": "last active a while ago",
        "high": "inactive for a long time",
    },
    "frequency": {
        "low": "infrequent",
        "average": "moderately frequent",
        "high": "frequent",
    },
    "monetary": {
        "low": "spends little",
        "average": "spends a moderate amount",
        "high": "spends a lot",
    },
    "engagement": {
        "low": "rarely engaged",
        "average": "moderately engaged",
        "high": "highly engaged",
    },
    "tenure_days": {
        "low": "new",
        "average": "of average tenure",
        "high": "long-standing",
    },
}

#: Column headings of well-known features; others are the name with spaces, capitalised.
FEATURE_LABELS: Dict[str, str] = {
    "recency_days": "Recency (days)",
    "frequency": "Frequency",
    "monetary": "Monetary",
    "engagement": "Engagement",
    "tenure_days": "Tenure (days)",
}


def level(z: float) -> str:
    """The level of a standardised coordinate: ``"low"``, ``"average"`` or ``"high"``.

    Parameters
    ----------
    z
        The centroid coordinate (standard deviations from the average customer).

    Returns
    -------
    str
        ``"low"`` when ``z < LOW_Z``, ``"high"`` when ``z > HIGH_Z``, else ``"average"``.
    """
    if z < LOW_Z:
        return "low"
    if z > HIGH_Z:
        return "high"
    return "average"


def feature_phrase(feature: str, z: float) -> str:
    """The phrase for one feature at one centroid coordinate.

    Parameters
    ----------
    feature
        The feature column, e.g. ``"monetary"``.
    z
        Its standardised centroid coordinate.

    Returns
    -------
    str
        E.g. ``"spends a lot"``, or ``"low average order value"`` for a feature without phrases.
    """
    lvl = level(z)
    phrases = PHRASES.get(feature)
    if phrases is not None:
        return phrases[lvl]
    return f"{lvl} {feature.replace('_', ' ')}"


def feature_label(feature: str) -> str:
    """A column heading for a feature: ``"Recency (days)"``, ``"Average order value"``.

    Parameters
    ----------
    feature
        The feature column.

    Returns
    -------
    str
        The heading.
    """
    known = FEATURE_LABELS.get(feature)
    if known is not None:
        return known
    text = feature.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def format_percent(share: Any, decimals: int = 0) -> str:
    """A share (0..1) as a percentage, halves rounded up: ``0.2149 -> "21%"``.

    Parameters
    ----------
    share
        The share; ``None`` or not a number gives :data:`MISSING`.
    decimals
        Digits after the decimal point.

    Returns
    -------
    str
        E.g. ``"21%"``, ``"21.5%"``, ``"<1%"`` (positive but rounds to zero), ``"-3%"``.
    """
    value = number(share)
    if value is None:
        return MISSING
    scale = 10**decimals
    rounded = math.floor(value * 100 * scale + 0.5) / scale
    if rounded == 0 and value > 0:
        return f"<{1 / scale:g}%"
    if rounded == 0:
        rounded = 0.0  # no "-0%"
    return f"{rounded:.{decimals}f}%"


def format_number(value: Any) -> str:
    """A measurement for a table: thousands separators, fewer decimals for bigger numbers.

    Parameters
    ----------
    value
        The number; ``None`` or not a number gives :data:`MISSING`; ints are shown exactly.

    Returns
    -------
    str
        ``1234567 -> "1,234,567"``, ``1234.5 -> "1,234"`` (halves to even), ``37.25 -> "37.2"``,
        ``4.127 -> "4.13"``.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    x = number(value)
    if x is None:
        return MISSING
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def format_metric(value: Any) -> str:
    """A quality metric for the k-selection table, :data:`MISSING` if missing.

    Parameters
    ----------
    value
        The metric value or ``None``.

    Returns
    -------
    str
        Whole numbers with thousands separators from 1000 on (``"16,523"``), three decimals
        below (``"0.612"``), scientific notation for tiny non-zero values (``"4.20e-05"``).
    """
    x = number(value)
    if x is None:
        return MISSING
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if x != 0 and abs(x) < 1e-3:
        return f"{x:.2e}"
    return f"{x:.3f}"


def describe_segment(
    profile: Mapping[str, Any],
    feature_columns: Sequence[str],
    value_label: Optional[str] = "revenue",
) -> str:
    """Describe a segment in plain language from its standardised centroid and its shares.

    Parameters
    ----------
    profile
        The segment's profile: ``centroid_<f>`` for each feature ``f``, ``customer_share`` and
        ``value_share`` (either may be ``None`` or absent).
    feature_columns
        The clustered features, in the order the clauses should follow.
    value_label
        What the value share is a share of (``"revenue"``, ``"clicks"``); empty or ``None`` reads
        ``"value"``.

    Returns
    -------
    str
        E.g. ``"active recently, frequent, spends a lot; 21% of customers, 81% of revenue"``.
        Thresholds and phrases are in the module documentation; the result depends only on the
        arguments.
    """
    clauses = []
    for feature in feature_columns:
        z = get_number(profile, f"centroid_{feature}")
        if z is not None:
            clauses.append(feature_phrase(feature, z))
    shares = []
    customer_share = get_number(profile, "customer_share")
    if customer_share is not None:
        shares.append(f"{format_percent(customer_share)} of customers")
    value_share = get_number(profile, "value_share")
    if value_share is not None:
        shares.append(f"{format_percent(value_share)} of {value_label or 'value'}")
    parts = [", ".join(clauses), ", ".join(shares)]
    return "; ".join(part for part in parts if part)
