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
from pyspark.sql import functions as F

from segmentation.errors import InputError
from segmentation.io.readers import EventColumns, TextOptions
from segmentation.sources.common import (
    CHECK_PREFIX,
    DEFAULT_MAX_REJECT_FRACTION,
    INVALID_TEXT,
    RAW,
    FeatureSet,
    Transform,
    check_date_formats,
    describe_reject,
    exclude_after,
    rejected_rows,
)


@dataclass(frozen=True)
class FeatureOptions:
    """Options of the features stage (``segmentation features --help``).

    ``input``, ``input_format``, ``sqlite_partitions`` and ``text`` (``--encoding``,
    ``--delimiter``) say where the data is and how it is read; ``max_reject_fraction`` how many
    rows may be rejected as errors before the job stops; the others say how it is cleaned and
    aggregated, and are saved with a run (:meth:`rules`) so that ``score`` cleans a later period
    the same way.
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
    text: TextOptions = field(default_factory=TextOptions)
    max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION

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
        text: Optional[TextOptions] = None,
        max_reject_fraction: float = DEFAULT_MAX_REJECT_FRACTION,
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
            text=text or TextOptions(),
            max_reject_fraction=max_reject_fraction,
        )


@dataclass(frozen=True)
class TaggedRows:
    """A source read and tagged: rows at the source's grain with ``drop_reason``.

    Attributes
    ----------
    rows
        Parsed rows, one per invoice line / search / event, each with ``drop_reason`` (NULL when
        kept) and ``raw`` (the row as read, as text), ready for :meth:`Source.aggregate`.
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
    reject_reasons
        The drop reasons that are errors in the data, not documented cleaning rules: their rows
        are written to ``rejected/`` and count against ``--max-reject-fraction``.
    """

    name: ClassVar[str]
    row_unit: ClassVar[str] = "rows"
    date_column: ClassVar[str]
    date_drop_reason: ClassVar[str]
    time_column: ClassVar[str]
    drop_reasons: ClassVar[Tuple[str, ...]]
    reject_reasons: ClassVar[Tuple[str, ...]]

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

    def rejected(self, tagged: TaggedRows, reasons: Optional[Tuple[str, ...]] = None) -> DataFrame:
        """The rows rejected as errors: raw columns as text and ``reason`` (``rejected/``).

        A second read of the input: call it only when the drop counts show rejects.
        ``reasons`` narrows the reasons (default: :attr:`reject_reasons`).
        """
        return rejected_rows(tagged.rows, reasons or self.reject_reasons)

    def check_input(
        self,
        tagged: TaggedRows,
        options: FeatureOptions,
        rows_read: int,
        dropped: Mapping[str, int],
        checks: Mapping[str, Any],
    ) -> Optional[DataFrame]:
        """Stop on text in another encoding, mixed date formats or too many rejects.

        Parameters
        ----------
        tagged
            The rows as tagged (read again, lazily, for ``rejected/`` and examples).
        options
            Gives the input, ``--encoding`` and ``--max-reject-fraction``.
        rows_read, dropped, checks
            The counts of the aggregate pass (:func:`~segmentation.sources.common.drop_summary`):
            rows read, dropped rows by reason, and the ``check_<name>`` columns.

        Returns
        -------
        DataFrame or None
            The rejected rows (:meth:`rejected`) when the counts show any, else ``None``.

        Raises
        ------
        InputError
            A text column holds bytes that are not valid in the encoding (any row: the whole
            file is then in another encoding), the dates mix formats, or the share of rejected
            rows exceeds ``options.max_reject_fraction``; the message names the reasons and an
            example.
        """
        unit = self.row_unit
        bad_text = int(checks.get(CHECK_PREFIX + INVALID_TEXT) or 0)
        if bad_text:
            row = tagged.rows.filter(F.col(INVALID_TEXT)).select(
                f"{RAW}.*", F.lit(INVALID_TEXT).alias("reason")
            ).first()
            example = f" (e.g. {describe_reject(row.asDict())})" if row is not None else ""
            raise InputError(
                f"{options.input}: {bad_text:,} of {rows_read:,} {unit} hold text that is not "
                f"valid {options.text.encoding}{example}; pass --encoding with the file's "
                "character set, e.g. --encoding latin1 (UCI Online Retail I) or cp1252"
            )
        check_date_formats(checks, self.date_column, options.input)
        rejects = {r: int(dropped.get(r, 0)) for r in self.reject_reasons if dropped.get(r, 0)}
        if not rejects or rows_read <= 0:
            return None
        total = sum(rejects.values())
        fraction = total / rows_read
        if fraction > options.max_reject_fraction:
            top = sorted(rejects.items(), key=lambda item: -item[1])
            reasons = ", ".join(f"{reason}={n:,}" for reason, n in top[:3])
            row = self.rejected(tagged, (top[0][0],)).first()
            example = f"; e.g. {top[0][0]}: {describe_reject(row.asDict())}" if row else ""
            raise InputError(
                f"{options.input}: {total:,} of {rows_read:,} {unit} ({fraction:.1%}) are "
                f"rejected, above --max-reject-fraction {options.max_reject_fraction:g}: "
                f"{reasons}{example}"
            )
        return self.rejected(tagged)

    def __repr__(self) -> str:
        return f"<source {self.name}>"


SourceRegistry = Mapping[str, Source]
