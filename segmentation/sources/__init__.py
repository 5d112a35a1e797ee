"""The sources: one module per kind of input, each describing it in one place.

========  ==========================================  ==========================================
name      input                                       features
========  ==========================================  ==========================================
retail    UCI Online Retail II / I invoice lines      RFM: recency_days, frequency, monetary
avito     Avito Context Ad Clicks (SQLite, folders)   RFE: recency_days, frequency (clicks),
                                                      engagement (searches)
events    any event log with a column mapping         recency_days, frequency, [monetary]
========  ==========================================  ==========================================
"""

from __future__ import annotations

from typing import Dict, Tuple

from segmentation.errors import InputError
from segmentation.sources.avito import AvitoSource
from segmentation.sources.events import EventSource
from segmentation.sources.retail import RetailSource
from segmentation.sources.source import FeatureOptions, Source, TaggedRows

SOURCES: Dict[str, Source] = {
    source.name: source for source in (AvitoSource(), RetailSource(), EventSource())
}

#: ``--source`` choices.
SOURCE_NAMES: Tuple[str, ...] = tuple(SOURCES)


def get_source(name: str) -> Source:
    """The source called ``name`` (``retail``, ``avito``, ``events``)."""
    try:
        return SOURCES[name]
    except KeyError:
        raise InputError(
            f"unknown source {name!r}; expected one of {', '.join(SOURCE_NAMES)}"
        ) from None


__all__ = ["SOURCES", "SOURCE_NAMES", "FeatureOptions", "Source", "TaggedRows", "get_source"]
