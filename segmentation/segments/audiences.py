"""Audiences: one list of customer ids per segment, named safely for file systems and uploads.

:func:`audience_names` turns segment names into file names (lowercase ASCII letters, digits and
``_``; ``can't lose them`` -> ``cant_lose_them``, ``at risk 2`` -> ``at_risk_2``) and refuses two
segments that would share a file. :func:`audience_rows` tags each customer with its file name,
laid out so that one partitioned write puts each audience in one file, sorted by customer id.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Dict, Iterable, Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.sources.common import Transform

#: File name of customers whose segment is NULL (e.g. a score that could not be computed).
UNASSIGNED = "unassigned"

_UNSAFE = re.compile(r"[^a-z0-9]+")


def safe_name(segment: Optional[str]) -> str:
    """A file-system-safe name for a segment: ``"can't lose them"`` -> ``"cant_lose_them"``.

    Accents are folded to ASCII, apostrophes dropped, every other run of characters outside
    ``a-z0-9`` becomes one ``_``; ``None`` or a name with nothing left is :data:`UNASSIGNED`.
    """
    if segment is None:
        return UNASSIGNED
    text = unicodedata.normalize("NFKD", segment).encode("ascii", "ignore").decode("ascii")
    text = text.lower().replace("'", "")
    name = _UNSAFE.sub("_", text).strip("_")
    return name or UNASSIGNED


def audience_names(segments: Iterable[Optional[str]]) -> Dict[Optional[str], str]:
    """Segment -> safe file name for each distinct segment; raise if two names collide."""
    names: Dict[Optional[str], str] = {}
    owners: Dict[str, Optional[str]] = {}
    for segment in segments:
        name = safe_name(segment)
        if name in owners and owners[name] != segment:
            raise InputError(
                f"segments {owners[name]!r} and {segment!r} would both be written to {name}.csv"
            )
        owners[name] = segment
        names[segment] = name
    return names


def audience_rows(by: str, names: Dict[Optional[str], str]) -> Transform:
    """Each customer's ``audience`` file name and ``customer_id``, one audience per partition.

    ``names`` comes from :func:`audience_names` (a handful of segments, a literal map in the
    plan: no join). Rows are hash-partitioned by audience and sorted by customer id, so a
    ``partitionBy("audience")`` write makes exactly one sorted file per audience.
    """

    def transform(assignments: DataFrame) -> DataFrame:
        if by not in assignments.columns:
            raise InputError(
                f"the assignments have no {by} column; they have: {', '.join(assignments.columns)}"
            )
        mapping = F.create_map(
            *[x for segment, name in names.items() if segment is not None
              for x in (F.lit(segment), F.lit(name))]
        ) if any(s is not None for s in names) else None
        segment = F.col(by).cast("string")
        audience = F.when(segment.isNull(), F.lit(UNASSIGNED))
        if mapping is not None:
            audience = audience.otherwise(F.element_at(mapping, segment))
        return (
            assignments.select(audience.alias("audience"), F.col("customer_id"))
            .repartition("audience")
            .sortWithinPartitions("audience", "customer_id")
        )

    return transform
