"""What every source shares: timestamp parsing, drop tagging and counting, recency, feature sets.

Every source (:mod:`~segmentation.sources.retail`, :mod:`~segmentation.sources.avito`,
:mod:`~segmentation.sources.events`) goes through two transforms:

1. a *line* transform that parses the raw columns and tags each row with the reason it is dropped
   (``drop_reason``, NULL for rows that are kept);
2. an *aggregate* transform: one ``groupBy`` per customer that computes the features over kept
   rows and, in the same pass, counts dropped rows per reason into ``dropped_<reason>`` columns.
   Rows without a customer id land in the NULL-customer group, so nothing is read twice.

:func:`drop_summary` sums those counts (one small action on the customer-grain table) for the
run manifest; :func:`finish_features` keeps the customers with at least one kept purchase (or
search) and adds ``recency_days`` and ``tenure_days`` for a reference date.

:class:`Source` describes one source in one place: how it is read, tagged and aggregated, its
feature set, its date column and its score features.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import NumericType, StringType

from segmentation.errors import InputError

Transform = Callable[[DataFrame], DataFrame]

DROPPED_PREFIX = "dropped_"
ROWS_READ = "rows_read"

#: The struct column of tagged rows holding the row's raw columns as text (for ``rejected/``).
RAW = "raw"

#: The boolean column of tagged rows that is true when the row's text holds U+FFFD, the
#: character a reader puts for bytes that are not valid in the file's encoding: the whole file
#: is then in another encoding (``--encoding``), and the job stops.
INVALID_TEXT = "invalid_text"

#: Prefix of the aggregate columns that count rows for the input checks (not drops):
#: ``check_invalid_text`` and ``check_date_format_<family>``.
CHECK_PREFIX = "check_"

#: Default ``--max-reject-fraction``: the share of rows rejected as errors (not dropped by a
#: documented cleaning rule) above which a run stops.
DEFAULT_MAX_REJECT_FRACTION = 0.05

#: Money is parsed and summed in this type: a decimal sum does not depend on row order (a double
#: sum does, in its last bits, with Spark's partitioning), and prices keep their cents exactly.
#: Prices and amounts with more than 6 decimals are rounded half up to 6.
MONEY_TYPE = "decimal(20,6)"
#: The type of a sum of money (Spark widens decimal sums to precision 38 anyway).
MONEY_SUM_TYPE = "decimal(38,6)"

#: Text formats tried, in order, for timestamps Spark's own cast does not read (it reads
#: ``2009-12-01 07:45:00``, ``2015-05-10 18:11:01.0`` and ISO 8601).
FALLBACK_TIMESTAMP_FORMATS: Tuple[str, ...] = (
    "M/d/yyyy H:mm",
    "M/d/yyyy H:mm:ss",
    "d.M.yyyy H:mm",
    "yyyy/MM/dd HH:mm:ss",
)

def sql_identifier(name: str) -> str:
    """A column name as a Spark SQL identifier (backticks, inner backticks doubled)."""
    return "`" + name.replace("`", "``") + "`"


def require_columns(
    frame: DataFrame, columns: Sequence[str], what: str = "feature", numeric: bool = True
) -> None:
    """Raise :class:`InputError` if ``frame`` lacks one of ``columns`` or one is not numeric.

    ``what`` names the columns in the message (``feature``, ``score feature``, ``metric``).
    """
    types = {f.name: f.dataType for f in frame.schema.fields}
    missing = [c for c in columns if c not in types]
    if missing:
        raise InputError(
            f"missing {what} column(s) {', '.join(missing)}; "
            f"the table has {', '.join(types) or 'no columns'}"
        )
    if numeric:
        bad = [f"{c} ({types[c].simpleString()})" for c in columns
               if not isinstance(types[c], NumericType)]
        if bad:
            raise InputError(f"{what} column(s) must be numeric: {', '.join(bad)}")


#: Prefix of the aggregate columns counting the rows whose date each format family read.
DATE_FORMAT_PREFIX = CHECK_PREFIX + "date_format_"

#: Date format families: the day/month order each reads. A file mixing families (``2009-12-01``
#: and ``01/12/2009``) is refused: which of its dates are day-first cannot be known.
DATE_FAMILIES: Mapping[str, str] = {
    "year_first": "yyyy-MM-dd (ISO)",
    "month_first": "M/d/yyyy",
    "day_first": "d.M.yyyy",
}
_FALLBACK_FAMILIES = ("month_first", "month_first", "day_first", "year_first")


def _family_code(name: str) -> Column:
    """The tagged-row code of a :data:`DATE_FAMILIES` key: its position, as a tinyint."""
    return F.lit(list(DATE_FAMILIES).index(name)).cast("tinyint")


def timestamp_family(column: Column, timestamp_format: Optional[str] = None) -> Column:
    """The format family that reads ``column``: a tinyint code (NULL: none does).

    The code is the position of the family's key in :data:`DATE_FAMILIES` (a byte instead of
    text: the tagged rows carry it through the shuffles of the aggregate). The same candidates,
    in the same order, as :func:`parse_timestamp`; with ``timestamp_format`` every readable date
    is of that one format (``year_first``).
    """
    text = F.trim(column.cast("string"))
    if timestamp_format:
        return F.when(
            F.to_timestamp(text, timestamp_format).isNotNull(), _family_code("year_first")
        )
    family = F.when(text.cast("timestamp").isNotNull(), _family_code("year_first"))
    for fmt, name in zip(FALLBACK_TIMESTAMP_FORMATS, _FALLBACK_FAMILIES):
        family = family.when(F.to_timestamp(text, fmt).isNotNull(), _family_code(name))
    return family


def check_count_names(invalid_text: bool = True) -> List[str]:
    """The names of :func:`check_counts`' columns, in its order."""
    names = [DATE_FORMAT_PREFIX + name for name in DATE_FAMILIES]
    return [*names, CHECK_PREFIX + INVALID_TEXT] if invalid_text else names


def check_counts(invalid_text: bool = True) -> List[Column]:
    """The input checks' counts, for the customer ``groupBy`` of a source (not of its tests).

    Per :data:`DATE_FAMILIES` key the rows whose date it read (column ``date_family`` of the
    tagged rows, :func:`timestamp_family`'s code), and with ``invalid_text`` the rows whose text
    holds U+FFFD (column :data:`INVALID_TEXT`); named by :func:`check_count_names`.
    """
    rows_of = [F.col("date_family") == _family_code(name) for name in DATE_FAMILIES]
    if invalid_text:
        rows_of.append(F.col(INVALID_TEXT))
    return [
        F.sum(F.when(condition, 1).otherwise(0)).alias(name)
        for condition, name in zip(rows_of, check_count_names(invalid_text))
    ]


def check_date_formats(counts: Mapping[str, Any], column: str, path: str) -> None:
    """Raise :class:`InputError` when the dates of one input come in more than one family.

    ``counts`` maps ``date_format_<family>`` to rows (:func:`drop_summary`'s row).
    """
    found = {
        name[len(DATE_FORMAT_PREFIX):]: int(n or 0) for name, n in counts.items()
        if name.startswith(DATE_FORMAT_PREFIX) and n
    }
    if len(found) < 2:
        return
    shares = ", ".join(f"{n:,} rows {DATE_FAMILIES[name]}" for name, n in found.items())
    raise InputError(
        f"{path}: column {column} mixes date formats ({shares}): which dates are day-first "
        "cannot be known; make the file use one format (or pass --timestamp-format with the "
        "one pattern to read; rows in others are then unparseable)"
    )


def parse_timestamp(column: Column, timestamp_format: Optional[str] = None) -> Column:
    """Parse text (or pass through a timestamp/date) into a timestamp; NULL when unparseable.

    With ``timestamp_format`` only that Spark datetime pattern is used; otherwise Spark's cast is
    tried first, then :data:`FALLBACK_TIMESTAMP_FORMATS` (US ``12/1/2010 8:26`` first, as in the
    UCI Online Retail CSV exports).
    """
    text = F.trim(column.cast("string"))
    if timestamp_format:
        return F.to_timestamp(text, timestamp_format)
    candidates = [text.cast("timestamp")]
    candidates += [F.to_timestamp(text, fmt) for fmt in FALLBACK_TIMESTAMP_FORMATS]
    return F.coalesce(*candidates)


def drop_reason(rules: Sequence[Tuple[str, Column]]) -> Column:
    """The first matching rule's reason, NULL when no rule matches (the row is kept)."""
    expr: Optional[Column] = None
    for reason, condition in rules:
        expr = F.when(condition, F.lit(reason)) if expr is None else expr.when(condition, reason)
    return expr if expr is not None else F.lit(None).cast("string")


def raw_text(frame: DataFrame) -> Column:
    """Every column of ``frame`` as text, in one struct column :data:`RAW` (for ``rejected/``).

    Unused by the aggregate, it is pruned from the pass that computes the features; only the
    extra pass that writes rejected rows reads it.
    """
    return F.struct(*(F.col(f"`{c}`").cast("string").alias(c) for c in frame.columns)).alias(RAW)


def invalid_text(frame: DataFrame) -> Column:
    """True where a text column of ``frame`` holds U+FFFD (bytes not valid in the encoding)."""
    texts = [f.name for f in frame.schema.fields if isinstance(f.dataType, StringType)]
    condition: Column = F.lit(False)
    for name in texts:
        condition = condition | F.coalesce(F.col(f"`{name}`").contains("\ufffd"), F.lit(False))
    return condition


def parse_money(column: Column) -> Column:
    """Text or a number as :data:`MONEY_TYPE`; NULL for blanks, words, ``NaN`` and infinities."""
    return blank_to_null(column).cast(MONEY_TYPE)


def parse_whole_number(column: Column) -> Tuple[Column, Column]:
    """A count (a quantity) as a long, and whether the value is a number with a fraction.

    ``"12"``, ``"12.0"`` and ``"1e1"`` are whole; ``"1.5"`` is not: it is NULL with the
    fraction flag set, never truncated to 1 as a cast to an integer would. Words, ``NaN`` and
    infinities are NULL without the flag.
    """
    number = blank_to_null(column).cast("decimal(38,9)")
    whole = number == F.floor(number)
    fraction = F.coalesce(number.isNotNull() & ~whole, F.lit(False))
    value = F.when(whole & number.between(-(2**63), 2**63 - 1), number.cast("long"))
    return value, fraction


#: The raw column(s) each reject reason is about, to name them in an error message.
REJECT_COLUMNS: Mapping[str, Tuple[str, ...]] = {
    "unparseable_invoice_date": ("invoice_date",),
    "unparseable_quantity_or_price": ("quantity", "price"),
    "fractional_quantity": ("quantity",),
    "unparseable_timestamp": ("event_time",),
    "unparseable_amount": ("amount",),
    "search_unparseable_date": ("SearchDate",),
}


def describe_reject(row: Mapping[str, Any]) -> str:
    """One rejected row (raw columns and ``reason``) as ``column 'value'`` for a message."""
    reason = str(row.get("reason"))
    values = {k: v for k, v in row.items() if k != "reason"}
    if reason == INVALID_TEXT:
        columns: Sequence[str] = [k for k, v in values.items() if v and "\ufffd" in v][:1]
    else:
        columns = [c for c in REJECT_COLUMNS.get(reason, ()) if c in values]
    shown = ", ".join(f"{c} {str(values[c])[:80]!r}" for c in columns)
    return shown or ", ".join(f"{k}={str(v)[:40]!r}" for k, v in values.items())[:240]


def rejected_rows(rows: DataFrame, reasons: Sequence[str]) -> DataFrame:
    """The tagged rows dropped for one of ``reasons``: their raw columns as text and ``reason``."""
    return rows.filter(F.col("drop_reason").isin(*reasons)).select(
        f"{RAW}.*", F.col("drop_reason").alias("reason")
    )


def drop_count_names(reasons: Sequence[str]) -> List[str]:
    """The names of :func:`drop_counts`' columns: ``dropped_<reason>`` per reason."""
    return [DROPPED_PREFIX + reason for reason in reasons]


def drop_counts(reasons: Sequence[str]) -> List[Column]:
    """One ``dropped_<reason>`` count aggregate per reason (for the customer ``groupBy``)."""
    return [
        F.sum(F.when(F.col("drop_reason") == reason, 1).otherwise(0)).alias(name)
        for reason, name in zip(reasons, drop_count_names(reasons))
    ]


def exclude_after(reference_date: Optional[dt.date], time_column: str) -> Transform:
    """Tag rows on or after ``reference_date`` as ``after_reference_date`` (RFM "as of" a date).

    Rows already tagged keep their reason; with ``reference_date=None`` nothing changes.
    """

    def transform(rows: DataFrame) -> DataFrame:
        if reference_date is None:
            return rows
        late = F.col(time_column) >= F.lit(reference_date.isoformat()).cast("timestamp")
        return rows.withColumn(
            "drop_reason",
            F.coalesce(F.col("drop_reason"), F.when(late, F.lit("after_reference_date"))),
        )

    return transform


def blank_to_null(column: Column) -> Column:
    """Text trimmed, with blank text as NULL."""
    text = F.trim(column.cast("string"))
    return F.when(text == "", None).otherwise(text)


def normalise_customer_id(column: Column) -> Column:
    """Customer ids as text: trimmed, blank -> NULL, a float-written id ``13085.0`` -> ``13085``."""
    text = blank_to_null(column)
    return F.regexp_replace(text, r"^(\d+)\.0+$", "$1")


def dropped_columns(aggregates: DataFrame) -> List[str]:
    """The ``dropped_<reason>`` columns of a customer-grain aggregate."""
    return [c for c in aggregates.columns if c.startswith(DROPPED_PREFIX)]


def drop_summary(aggregates: DataFrame, first_column: str) -> DataFrame:
    """Sum a customer-grain aggregate into one row of counts for the run manifest.

    The row holds rows read, rows dropped per reason, the input checks' counts
    (``check_<name>``, when the aggregate has them: :func:`check_counts`), customers kept,
    customers without any kept activity, and the latest kept event as text (``latest_event``)
    and as a date (``latest_event_date``). Both are computed by Spark in the session time
    zone: a timestamp collected to the driver would be converted to the driver's local time
    zone, and a date taken from it could move by a day with the machine.

    ``first_column`` is the column that is NULL for a customer with no kept purchase/search
    (``first_purchase_time``...); such customers are counted as ``customers_without_activity``.
    """
    has_id = F.col("customer_id").isNotNull()
    active = has_id & F.col(first_column).isNotNull()
    return aggregates.agg(
        F.sum(ROWS_READ).cast("long").alias(ROWS_READ),
        *(F.sum(c).cast("long").alias(c) for c in dropped_columns(aggregates)),
        *(F.sum(c).cast("long").alias(c) for c in aggregates.columns
          if c.startswith(CHECK_PREFIX)),
        F.count(F.when(active, 1)).alias("customers"),
        F.count(F.when(has_id & ~active, 1)).alias("customers_without_activity"),
        F.date_format(F.max("last_event_time"), "yyyy-MM-dd HH:mm:ss").alias("latest_event"),
        F.to_date(F.max("last_event_time")).alias("latest_event_date"),
    )


def kept_customers(first_column: str) -> Transform:
    """Customers with an id and at least one kept purchase/search; drop-count columns removed."""

    def transform(aggregates: DataFrame) -> DataFrame:
        return aggregates.filter(
            F.col("customer_id").isNotNull() & F.col(first_column).isNotNull()
        ).drop(
            ROWS_READ, *dropped_columns(aggregates),
            *(c for c in aggregates.columns if c.startswith(CHECK_PREFIX)),
        )

    return transform


def default_reference_date(latest_event_date: dt.date) -> dt.date:
    """The day after the latest event's date: recency is then at least 1 day for everyone.

    Pass the date computed by Spark (:func:`drop_summary`'s ``latest_event_date``), not a
    timestamp collected to the driver.
    """
    return latest_event_date + dt.timedelta(days=1)


def with_recency(
    reference_date: dt.date, last_column: str, first_column: str
) -> Transform:
    """Add ``recency_days`` and ``tenure_days`` for ``reference_date``.

    ``recency_days`` counts days from the last activity's date to the reference date,
    ``tenure_days`` from the first activity's date.
    """
    reference = F.lit(reference_date.isoformat()).cast("date")

    def transform(customers: DataFrame) -> DataFrame:
        return customers.withColumns(
            {
                "recency_days": F.datediff(reference, F.to_date(F.col(last_column))),
                "tenure_days": F.datediff(reference, F.to_date(F.col(first_column))),
            }
        )

    return transform


@dataclass(frozen=True)
class FeatureSet:
    """The features of a source, how they are clustered and which one measures value.

    Attributes
    ----------
    source
        ``retail``, ``avito`` or ``events``.
    columns
        Output columns of ``features/`` after ``customer_id``, in order.
    cluster_columns
        The columns KMeans clusters on.
    value_weights
        Sign of each clustered feature in the cluster value score (recency: lower is better).
    value_column
        Summed for each segment's share of value (``monetary`` or clicks), if any.
    first_column, last_column
        Timestamps of the first and last kept activity (recency and tenure are measured from them).
    scores
        Quintile score name -> the feature it scores (``r_score: recency_days``, ``f_score:
        frequency``, ``m_score: monetary`` or ``e_score: engagement``); the direction is the sign
        of the feature's value weight (recency: lower is better, so the most recent score 5).
    """

    source: str
    columns: Tuple[str, ...]
    cluster_columns: Tuple[str, ...]
    value_weights: Mapping[str, float]
    value_column: Optional[str]
    first_column: str
    last_column: str
    scores: Mapping[str, str] = field(default_factory=dict)

    def with_cluster_columns(self, chosen: Optional[Sequence[str]]) -> FeatureSet:
        """Return the feature set clustering on ``chosen`` (``--features``) instead.

        ``recency_days`` then weighs -1 in the value score and every other chosen column +1.
        """
        if not chosen:
            return self
        unknown = [c for c in chosen if c not in self.columns]
        if unknown:
            raise InputError(
                f"--features names column(s) that are not {self.source} features: "
                f"{', '.join(unknown)}; the features are {', '.join(self.columns)}"
            )
        weights = {c: (-1.0 if c == "recency_days" else 1.0) for c in chosen}
        return replace(self, cluster_columns=tuple(chosen), value_weights=weights)

    def to_dict(self) -> Dict[str, Any]:
        """The feature set as JSON-ready data (saved in ``run.json``)."""
        return {
            "source": self.source,
            "columns": list(self.columns),
            "cluster_columns": list(self.cluster_columns),
            "value_weights": dict(self.value_weights),
            "value_column": self.value_column,
            "first_column": self.first_column,
            "last_column": self.last_column,
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSet:
        """The feature set :meth:`to_dict` saved."""
        return cls(
            source=str(data["source"]),
            columns=tuple(data["columns"]),
            cluster_columns=tuple(data["cluster_columns"]),
            value_weights={str(k): float(v) for k, v in data["value_weights"].items()},
            value_column=data.get("value_column"),
            first_column=str(data["first_column"]),
            last_column=str(data["last_column"]),
            scores={str(k): str(v) for k, v in data.get("scores", {}).items()},
        )


def finish_features(feature_set: FeatureSet, reference_date: dt.date) -> Transform:
    """Kept customers -> the ``features/`` table: ``customer_id`` + ``feature_set.columns``.

    Adds recency and tenure, derived ratios (``average_order_value = monetary / frequency``,
    ``click_through_rate = clicks / contextual impressions``), and first/last activity dates.
    """
    prefix = feature_set.first_column.rsplit("_", 1)[0].replace("first_", "")

    def transform(aggregates: DataFrame) -> DataFrame:
        customers = aggregates.transform(kept_customers(feature_set.first_column)).transform(
            with_recency(reference_date, feature_set.last_column, feature_set.first_column)
        )
        derived: Dict[str, Column] = {
            f"first_{prefix}_date": F.to_date(feature_set.first_column),
            f"last_{prefix}_date": F.to_date(feature_set.last_column),
        }
        if "average_order_value" in feature_set.columns:
            derived["average_order_value"] = F.col("monetary") / F.col("frequency")
        if "click_through_rate" in feature_set.columns:
            derived["click_through_rate"] = F.when(
                F.col("contextual_impressions") > 0,
                F.col("frequency") / F.col("contextual_impressions"),
            )
        return customers.withColumns(derived).select("customer_id", *feature_set.columns)

    return transform
