"""Readers: SQLite, CSV/TSV (optionally gzipped) and Parquet dumps into DataFrames.

Paths may be files, folders or globs, local or URIs (``s3://``, ``s3a://``); they are passed to
Spark unchanged, except SQLite, which must be a local file (see :mod:`segmentation.io.sqlite`).

Every reader checks that the input exists and has the columns its source needs before returning,
and raises :class:`~segmentation.errors.InputError` with one line naming the problem otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from segmentation.errors import InputError, SegmentationError
from segmentation.io import storage
from segmentation.io.schemas import AVITO_TABLES

log = logging.getLogger(__name__)

FORMATS = ("auto", "sqlite", "parquet", "csv", "tsv")

_SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".lz4", ".snappy", ".deflate")


def _strip_compression(name: str) -> str:
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def format_from_name(name: str) -> Optional[str]:
    """Guess the format from a file name or glob: ``.csv.gz`` is csv, ``.tsv`` tsv, and so on."""
    lowered = _strip_compression(name.lower().rstrip("/"))
    if lowered.endswith(_SQLITE_SUFFIXES):
        return "sqlite"
    if lowered.endswith(".parquet") or lowered.endswith(".pq"):
        return "parquet"
    if lowered.endswith(".tsv") or lowered.endswith(".tab"):
        return "tsv"
    if lowered.endswith(".csv") or lowered.endswith(".txt"):
        return "csv"
    return None


def _data_names(names: Sequence[str]) -> List[str]:
    """Entry names that may hold data: not hidden (``.x``) and not markers (``_SUCCESS``)."""
    return [name for name in names if not name.startswith((".", "_"))]


def require_data(spark: SparkSession, path: str) -> None:
    """Raise :class:`InputError` when the folder ``path`` holds no data files."""
    if storage.is_directory(spark, path) and not _data_names(storage.list_names(spark, path)):
        raise InputError(f"input folder {path} holds no data files")


def detect_format(spark: SparkSession, path: str) -> str:
    """Return the format of ``path``: by its name, else by the files inside the folder."""
    by_name = format_from_name(path)
    if by_name is not None:
        return by_name
    require_data(spark, path)
    formats = {format_from_name(name) for name in storage.list_names(spark, path)}
    formats.discard(None)
    if len(formats) == 1:
        return str(formats.pop())
    if storage.is_directory(spark, path) and any(
        name.startswith("part-") for name in storage.list_names(spark, path)
    ):
        return "parquet"
    raise InputError(
        f"cannot tell the format of {path}: name it .csv/.tsv/.parquet/.sqlite or pass --format"
    )


def require_exists(spark: SparkSession, path: str) -> None:
    """Raise :class:`InputError` when ``path`` (file, folder or glob) does not exist."""
    if not storage.exists(spark, path):
        raise InputError(f"input not found: {path}")


#: Default ``--encoding`` of CSV/TSV input.
DEFAULT_ENCODING = "UTF-8"


@dataclass(frozen=True)
class TextOptions:
    """How CSV/TSV text is read (``--encoding``, ``--delimiter``); Parquet ignores them.

    Attributes
    ----------
    encoding
        Character set of the files (Spark's CSV option ``encoding``): ``UTF-8`` (default),
        ``latin1`` / ``ISO-8859-1`` (UCI Online Retail I), ``cp1252``... Bytes that are not
        valid in it are read as U+FFFD, which the sources detect and stop on.
    delimiter
        Field separator; ``None``: ``,`` for CSV and a tab for TSV.
    """

    encoding: str = DEFAULT_ENCODING
    delimiter: Optional[str] = None


def read_table(
    spark: SparkSession, path: str, fmt: str = "auto", text: Optional[TextOptions] = None
) -> DataFrame:
    """Read a CSV/TSV/Parquet file, folder or glob with the columns as the source names them.

    CSV and TSV are read with a header line, every column as text (no schema inference: it costs
    a pass and guesses differently per file); the transforms parse and count bad values. CSV uses
    standard quoting (``"a, b"``, inner quotes doubled) and reads quoted fields across lines
    (Spark's ``multiLine``: a description holding a line break stays one field; the price of it
    is that one CSV file is read by one task, as a gzipped file always is). TSV has no quoting,
    as in Kaggle's dumps, so a line is a row.

    Raises
    ------
    InputError
        The path is missing, an empty folder, not a readable file of the format (a damaged
        ``.gz``, Parquet without a footer), or a file without a header line.
    """
    require_exists(spark, path)
    text = text or TextOptions()
    if fmt == "auto":
        fmt = detect_format(spark, path)
    else:
        require_data(spark, path)
    reader = spark.read
    try:
        if fmt == "parquet":
            return reader.parquet(path)
        if fmt == "csv":
            return reader.options(
                header=True, escape='"', mode="PERMISSIVE", multiLine=True,
                encoding=text.encoding, sep=text.delimiter or ",",
            ).csv(path)
        if fmt == "tsv":
            # quote "\u0000" switches quoting off: Kaggle's TSV text may hold bare quotes.
            return reader.options(
                header=True, sep=text.delimiter or "\t", quote="\u0000", mode="PERMISSIVE",
                encoding=text.encoding,
            ).csv(path)
    except Exception as error:  # reading the header (or Parquet footers) of a damaged file
        translated = damaged_input_error(error, path)
        if translated is None:
            raise
        raise translated from None
    if fmt == "sqlite":
        raise InputError(f"{path} is a SQLite database; this source reads CSV, TSV or Parquet")
    raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


#: Separators a misread header line gives away, with the flag that reads such a file.
_SEPARATORS = (
    (";", "';'", "--delimiter ';'"),
    ("\t", "tab", "--format tsv"),
    ("|", "'|'", "--delimiter '|'"),
    (",", "','", "--delimiter ','"),
)


def _delimiter_hint(columns: Sequence[str]) -> str:
    """A hint when the header came out as one column holding another separator, else ``""``."""
    if len(columns) != 1:
        return ""
    for char, name, flag in _SEPARATORS:
        if char in columns[0]:
            return (
                f"; the header line is one column holding {name}: the file seems to be "
                f"{name}-separated, pass {flag}"
            )
    return ""


def select_columns(
    df: DataFrame,
    aliases: Mapping[str, Sequence[str]],
    required: Sequence[str],
    what: str,
) -> DataFrame:
    """Select and rename columns to canonical names, matching any alias case-insensitively.

    Parameters
    ----------
    df
        The table as read.
    aliases
        Canonical name -> the names a source may give it (``"customer_id": ["Customer ID",
        "CustomerID"]``). The canonical name itself always matches.
    required
        Canonical names that must be found; optional ones missing are left out.
    what
        Names the input in the error message.
    """
    if not df.columns:
        raise InputError(f"{what} is empty: no header line (0 bytes, or an empty .gz)")
    present: Dict[str, str] = {name.lower(): name for name in df.columns}
    chosen: List[str] = []
    missing: List[str] = []
    for canonical, names in aliases.items():
        match = next(
            (present[n.lower()] for n in (canonical, *names) if n.lower() in present), None
        )
        if match is None:
            if canonical in required:
                missing.append(f"{canonical} (any of: {', '.join(names)})")
            continue
        chosen.append(canonical)
        df = df.withColumnRenamed(match, f"__{canonical}")
    if missing:
        raise InputError(
            f"{what} lacks required column(s) {'; '.join(missing)}; "
            f"it has: {', '.join(present.values())}{_delimiter_hint(df.columns)}"
        )
    return df.select(*(F.col(f"`__{c}`").alias(c) for c in chosen))


#: UCI Online Retail II / I column names by canonical name.
RETAIL_COLUMNS: Mapping[str, Sequence[str]] = {
    "invoice": ("Invoice", "InvoiceNo", "invoice_no"),
    "stock_code": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "price": ("Price", "UnitPrice", "unit_price"),
    "customer_id": ("Customer ID", "CustomerID"),
    "country": ("Country",),
}
RETAIL_REQUIRED = ("invoice", "stock_code", "quantity", "invoice_date", "price", "customer_id")


def read_retail(
    spark: SparkSession, path: str, fmt: str = "auto", text: Optional[TextOptions] = None
) -> DataFrame:
    """Read invoice lines of UCI Online Retail II or I (CSV(.gz) or Parquet).

    Returns the canonical columns ``invoice, stock_code, [description], quantity, invoice_date,
    price, customer_id, [country]``, in the types the file holds (text for CSV); parse them with
    :func:`segmentation.sources.retail.retail_lines`.
    """
    table = read_table(spark, path, fmt, text)
    return select_columns(table, RETAIL_COLUMNS, RETAIL_REQUIRED, f"retail input {path}")


@dataclass(frozen=True)
class EventColumns:
    """Where a generic event log keeps each field the features need.

    Attributes
    ----------
    customer_id
        Column identifying the customer.
    timestamp
        Column with the event time (timestamp, date, or text in a format Spark's cast accepts or
        ``date_format``).
    amount
        Optional column with a money amount per event (gives ``monetary``).
    session_id
        Optional column with a session, order or invoice id (``frequency`` counts distinct ones;
        without it, ``frequency`` counts events).
    """

    customer_id: str = "customer_id"
    timestamp: str = "timestamp"
    amount: Optional[str] = None
    session_id: Optional[str] = None


def read_events(
    spark: SparkSession,
    path: str,
    columns: EventColumns,
    fmt: str = "auto",
    text: Optional[TextOptions] = None,
) -> DataFrame:
    """Read a generic event log through a column mapping.

    Returns ``customer_id, event_time`` and, when mapped, ``amount`` and ``session_id``.
    """
    table = read_table(spark, path, fmt, text)
    aliases: Dict[str, Sequence[str]] = {
        "customer_id": (columns.customer_id,),
        "event_time": (columns.timestamp,),
    }
    required = ["customer_id", "event_time"]
    if columns.amount:
        aliases["amount"] = (columns.amount,)
        required.append("amount")
    if columns.session_id:
        aliases["session_id"] = (columns.session_id,)
        required.append("session_id")
    return select_columns(table, aliases, required, f"event input {path}")


@dataclass(frozen=True)
class AvitoTables:
    """The two Avito tables the RFE features need, with the Kaggle column names and types."""

    search_stream: DataFrame
    search_info: DataFrame


def _cast_to_schema(df: DataFrame, schema: StructType, what: str) -> DataFrame:
    present = {name.lower(): name for name in df.columns}
    missing = [f.name for f in schema.fields if f.name.lower() not in present]
    if missing:
        raise InputError(
            f"{what} lacks column(s) {', '.join(missing)}; it has: {', '.join(df.columns)}"
        )
    return df.select(
        *(
            F.col(f"`{present[f.name.lower()]}`").cast(f.dataType).alias(f.name)
            for f in schema.fields
        )
    )


def _find_avito_table(spark: SparkSession, folder: str, table: str) -> str:
    names = storage.list_names(spark, folder)
    for name in names:
        stem = _strip_compression(name)
        for suffix in ("", ".parquet", ".tsv", ".csv", ".txt"):
            if stem == table + suffix:
                return storage.join_path(folder, name)
    raise InputError(
        f"Avito input folder {folder} has no {table} table (expected {table}/, {table}.parquet, "
        f"{table}.tsv or {table}.csv, optionally .gz); it has: {', '.join(names) or 'nothing'}"
    )


def read_avito(
    spark: SparkSession,
    path: str,
    fmt: str = "auto",
    sqlite_partitions: Optional[int] = None,
    text: Optional[TextOptions] = None,
) -> AvitoTables:
    """Read ``trainSearchStream`` and ``SearchInfo`` from a SQLite database or a folder of tables.

    Parameters
    ----------
    path
        The Kaggle ``database.sqlite``, or a folder holding one file or subfolder per table, named
        as the table: ``trainSearchStream/`` (Parquet or CSV parts), ``trainSearchStream.tsv``,
        ``SearchInfo.tsv.gz``, ``SearchInfo.parquet``...
    fmt
        ``auto`` (by name), ``sqlite``, or the format of the tables in the folder.
    sqlite_partitions
        Number of parallel rowid-range partitions per SQLite table (default: by table size).
    text
        Encoding and delimiter of CSV/TSV tables.
    """
    require_exists(spark, path)
    if fmt == "sqlite" or (fmt == "auto" and format_from_name(path) == "sqlite"):
        from segmentation.io.sqlite import read_sqlite_table

        tables = {
            name: read_sqlite_table(spark, path, name, schema, num_partitions=sqlite_partitions)
            for name, schema in AVITO_TABLES.items()
        }
    else:
        if not storage.is_directory(spark, path):
            raise InputError(
                f"Avito input {path} must be a SQLite database or a folder with one entry per "
                "table (trainSearchStream, SearchInfo)"
            )
        tables = {}
        for name, schema in AVITO_TABLES.items():
            table_path = _find_avito_table(spark, path, name)
            table_fmt = fmt if fmt != "auto" else detect_format(spark, table_path)
            raw = read_table(spark, table_path, table_fmt, text)
            tables[name] = _cast_to_schema(raw, schema, f"Avito table {table_path}")
    return AvitoTables(search_stream=tables["trainSearchStream"], search_info=tables["SearchInfo"])


#: Java failures of reading a damaged file: (text in the error, what it means for the user).
_DAMAGED_FILE_SIGNS = (
    ("Unexpected end of input stream", "a compressed file ends early (truncated or corrupt)"),
    ("Not in GZIP format", "a .gz file is not gzip data"),
    ("not a gzip file", "a .gz file is not gzip data"),
    ("incorrect header check", "a compressed file is corrupt"),
    ("invalid block type", "a compressed file is corrupt"),
    ("invalid distance too far back", "a compressed file is corrupt"),
    ("is not a Parquet file", "a Parquet file is damaged (no Parquet footer: truncated?)"),
    ("Could not read footer", "a Parquet file is damaged (unreadable footer: truncated?)"),
    ("can not read class org.apache.parquet", "a Parquet file is damaged"),
    ("too many length or distance symbols", "a compressed file is corrupt"),
    ("invalid code lengths set", "a compressed file is corrupt"),
    ("invalid literal/length", "a compressed file is corrupt"),
    ("invalid stored block lengths", "a compressed file is corrupt"),
    ("invalid bit length repeat", "a compressed file is corrupt"),
    ("unknown compression method", "a compressed file is corrupt"),
    ("ZipException", "a compressed file is corrupt"),
    ("MalformedInputException", "a file is not text in the given --encoding"),
    ("Encountered error while reading file", "a file cannot be read (damaged?)"),
    ("Error reading from input", "a file cannot be read (damaged?)"),
)

#: The generic signs: the message then names the underlying cause.
_GENERIC_SIGNS = ("Encountered error while reading file", "Error reading from input")


def damaged_input_error(error: BaseException, path: str) -> Optional[InputError]:
    """One line for a Spark failure that comes from a damaged input file, else ``None``.

    Damaged files (a truncated ``.csv.gz``, a Parquet file cut short) fail inside a Spark task
    with a Java exception; the user should see which input and what is wrong, not a stack trace.
    """
    if isinstance(error, SegmentationError):  # already one line (e.g. from read_table)
        return None
    text = str(error)
    for sign, meaning in _DAMAGED_FILE_SIGNS:
        if sign in text:
            cause = next(
                (line.strip() for line in text.splitlines() if sign in line), sign
            )
            causes = [line.strip()[len("Caused by: "):] for line in text.splitlines()
                      if line.strip().startswith("Caused by: ")]
            if sign in _GENERIC_SIGNS and causes:  # name the cause, an I/O one first
                cause = next((c for c in causes if "IOException" in c), causes[-1])
            cause = cause.rsplit("Exception: ", 1)[-1][:300]
            return InputError(f"cannot read {path}: {meaning} ({cause})")
    return None
