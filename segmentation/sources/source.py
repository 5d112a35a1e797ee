"""What a source is: how it is read, tagged and aggregated, and the options that shape it.

Each source module (:mod:`~segmentation.sources.retail`, :mod:`~segmentation.sources.avito`,
:mod:`~segmentation.sources.events`) defines one :class:`Source`; the pipeline never asks which
source it has (``segmentation.sources.get_source(name)`` gives it).
"""

from __future__ import annotations

import abc
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Mapping, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession

from segmentation.io.readers import EventColumns
from segmentation.sources.common import FeatureSet, Transform, exclude_after


@dataclass(frozen=True)
class FeatureOptions:
    """Options of the features stage (``segmentation features --help``).

    ``input``, ``input_format`` and ``sqlite_partitions`` say where the data is; the others say
    how it is cleaned and aggregated, and are saved with a run (:meth:`rules`) so that ``score``
    cleans a later period the same way.
    """

    source: str
    input: str
    input_format: str = "auto"
    reference_date: Optional[dt.date] = None
    cancellations: str = "net"
    non_product: str = "exclude"
    timestamp_format: Optional[str] = None
    event_columns: EventColumns = field(default_factory=EventColumns)
    sqlite_partitions: Optional[int] = None

    def rules(self) -> Dict[str, Any]:
        """The cleaning and aggregation rules as JSON-ready data (``run.json``)."""
        return {
            "cancellations": self.cancellations,
            "non_product": self.non_product,
            "timestamp_format": self.timestamp_format,
            "event_columns": {
                "customer_id": self.event_columns.customer_id,
                "timestamp": self.event_columns.timestamp,
                "amount": self.event_columns.amount,
                "session_id": self.event_columns.session_id,
            },
        }

    @classmethod
    def with_rules(
        cls,
        source: str,
        rules: Mapping[str, Any],
        input: str,
        input_format: str = "auto",
        reference_date: Optional[dt.date] = None,
        sqlite_partitions: Optional[int] = None,
    ) -> FeatureOptions:
        """Options for new input cleaned by the saved ``rules`` of :meth:`rules`."""
        columns = rules.get("event_columns") or {}
        return cls(
            source=source,
            input=input,
            input_format=input_format,
            reference_date=reference_date,
            cancellations=rules.get("cancellations", "net"),
            non_product=rules.get("non_product", "exclude"),
            timestamp_format=rules.get("timestamp_format"),
            event_columns=EventColumns(
                customer_id=columns.get("customer_id", "customer_id"),
                timestamp=columns.get("timestamp", "timestamp"),
                amount=columns.get("amount"),
                session_id=columns.get("session_id"),
            ),
            sqlite_partitions=sqlite_partitions,
        )


@dataclass(frozen=True)
class TaggedRows:
    """A source read and tagged: rows at the source's grain with ``drop_reason``.

    Attributes
    ----------
    rows
        Parsed rows, one per invoice line / search / event, each with ``drop_reason`` (NULL when
        kept), ready for :meth:`Source.aggregate`.
    raw
        The table holding the source's date column as read (:attr:`Source.date_column`), to
        show an example when too many dates cannot be read.
    """

    rows: DataFrame
    raw: DataFrame


class Source(abc.ABC):
    """One kind of input: how it is read, tagged, aggregated per customer, and its features.

    Attributes
    ----------
    name
        ``--source`` value.
    row_unit
        What one counted input row is (``rows``, ``searches``), for the manifest and logs.
    date_column
        The raw column of event dates (``InvoiceDate``, ``SearchDate``, the mapped timestamp).
    date_drop_reason
        The drop reason of rows whose date cannot be read.
    time_column
        The parsed event time of tagged rows (``as of`` filtering).
    drop_reasons
        Every drop reason, in rule order.
    """

    name: ClassVar[str]
    row_unit: ClassVar[str] = "rows"
    date_column: ClassVar[str]
    date_drop_reason: ClassVar[str]
    time_column: ClassVar[str]
    drop_reasons: ClassVar[Tuple[str, ...]]

    @abc.abstractmethod
    def feature_set(self, options: FeatureOptions) -> FeatureSet:
        """The features this source gives with these options."""

    @abc.abstractmethod
    def read_and_tag(self, spark: SparkSession, options: FeatureOptions) -> TaggedRows:
        """Read the input (checking paths and columns) and tag each row's drop reason."""

    @abc.abstractmethod
    def aggregate(self, options: FeatureOptions) -> Transform:
        """The one ``groupBy(customer_id)`` over tagged rows (features and drop counts)."""

    @abc.abstractmethod
    def ingest_tables(self, spark: SparkSession, options: FeatureOptions) -> Dict[str, DataFrame]:
        """The input's tables by output name (``segmentation ingest``), as the source names them."""

    def tagged_rows(self, spark: SparkSession, options: FeatureOptions) -> TaggedRows:
        """:meth:`read_and_tag`, with rows on or after ``--reference-date`` tagged too."""
        tagged = self.read_and_tag(spark, options)
        rows = tagged.rows.transform(exclude_after(options.reference_date, self.time_column))
        return TaggedRows(rows=rows, raw=tagged.raw)

    def __repr__(self) -> str:
        return f"<source {self.name}>"


SourceRegistry = Mapping[str, Source]
