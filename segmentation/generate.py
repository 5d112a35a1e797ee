"""Deterministic generator of Avito-shaped data (Kaggle "Avito Context Ad Clicks").

Writes the two tables the RFE features read, ``trainSearchStream`` and ``SearchInfo``, with the
Kaggle column names and types (see :mod:`segmentation.io.schemas`), as a SQLite database, Parquet
folders or tab-separated text. It runs on the driver with numpy, pyarrow and sqlite3 only (no
Spark), fully vectorised: one million searches take seconds.

Layouts
-------
``sqlite``
    ``out`` is the database file. Tables ``trainSearchStream(SearchID INTEGER, AdID INTEGER,
    Position INTEGER, ObjectType INTEGER, HistCTR REAL, IsClick INTEGER)`` and
    ``SearchInfo(SearchID INTEGER, SearchDate TEXT, IPID INTEGER, UserID INTEGER,
    IsUserLoggedOn INTEGER, SearchQuery TEXT, LocationID INTEGER, CategoryID INTEGER,
    SearchParams TEXT)``, ordinary rowid tables without indexes, rows in SearchID order. An
    existing file is replaced (the new database is written beside it and renamed over it).
``parquet``
    ``out`` is a folder holding ``trainSearchStream/`` and ``SearchInfo/``, each with
    ``part-NNNNN.parquet`` files of at most 1,000,000 rows whose Arrow types follow the Spark
    schemas (``LongType`` -> int64, ``IntegerType`` -> int32, ``DoubleType`` -> double,
    ``StringType`` -> string). Existing ``trainSearchStream/`` and ``SearchInfo/`` are replaced.
``tsv``
    ``out`` is a folder with ``trainSearchStream.tsv`` and ``SearchInfo.tsv`` (``.tsv.gz`` with
    ``gzip=True``): UTF-8, tab-separated, one unquoted header line with the Kaggle column names,
    no quoting, NULL written as an empty field. No text value contains a tab, newline or ``"``.

What the data looks like
------------------------
* ``SearchDate`` is text exactly as in the Kaggle dump, ``2015-05-10 18:11:01.0``, spread over
  ``days`` days from ``start_date`` (the Kaggle training period is 2015-04-25 + 26 days). Each
  user is active in a window of their own (from a few percent of the period to all of it), so
  recency varies between users.
* Searches per user are heavy-tailed: every user gets one search, and the remaining
  ``searches - users`` are spread with lognormal weights (sigma 1.6), so a few users make
  hundreds of searches while most make a handful. ``UserID`` values are sparse random ids.
* ``SearchID`` is unique and ascends with ``SearchDate`` (gaps of 1-3 between ids, as the Kaggle
  ids are not dense either).
* Each search shows 1..8 ads (mean about 3.6; about 3.5 stream rows per search overall, as in
  Kaggle's 392M rows over 112M searches) at distinct positions in 1..8; about 3% of searches have
  no stream rows at all, like Kaggle's test-period searches.
* ``ObjectType`` is 1 (regular, ~47%), 2 (highlighted, ~8%) or 3 (contextual, ~45%). Contextual
  and non-contextual ads come from two disjoint Zipf-ish ``AdID`` pools.
* ``HistCTR`` and ``IsClick`` are NULL unless ``ObjectType`` is 3. ``HistCTR`` is a per-ad value
  in [0.001, 0.05] (lognormal around 0.008, six decimals). ``IsClick`` is drawn per contextual row
  with probability ``HistCTR`` times a per-user propensity (lognormal, mean 1, sigma 1), so the
  click rate is about 1% and some users click far more often than others.
* ``IPID`` is mostly the user's home address (85%), shared now and then between users;
  ``LocationID`` is mostly the user's home region (90%) from a Zipf-ish pool of 4,000;
  ``CategoryID`` is the user's favourite category 55% of the time, else one of 60 Zipf-ish
  categories; ``IsUserLoggedOn`` is 0/1 with a per-user habit (40% of users log in).
* ``SearchQuery`` is NULL (~45%), empty (~30%) or a short Russian or English word;
  ``SearchParams`` is NULL (~55%) or text such as ``{45:'Iphone', 816:'Apple'}``. In TSV, NULL
  and the empty string are both written as an empty field.

The same arguments and seed give identical table contents in every format
(``numpy.random.default_rng(seed)``).
"""

from __future__ import annotations

import datetime as _dt
import logging
import numbers
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pyspark.sql.types import (
    DataType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructType,
)

from segmentation.errors import InputError
from segmentation.io.schemas import AVITO_SEARCH_INFO, AVITO_SEARCH_STREAM

logger = logging.getLogger(__name__)

FORMATS = ("sqlite", "parquet", "tsv")
STREAM_TABLE = "trainSearchStream"
INFO_TABLE = "SearchInfo"

#: Rows per Parquet file and per ``executemany`` batch.
_ROWS_PER_FILE = 1_000_000
_SQLITE_BATCH = 100_000

# Ads per search given that the search has any: mean 3.59.
_ADS_PER_SEARCH_P = np.array([0.14, 0.16, 0.22, 0.20, 0.12, 0.08, 0.05, 0.03])
_EMPTY_SEARCH_SHARE = 0.03
_OBJECT_TYPE_P = np.array([0.47, 0.08, 0.45])  # regular, highlighted, contextual

_WORDS = (
    "диван", "iphone", "велосипед", "коляска", "шины", "квартира", "samsung", "ноутбук",
    "платье", "холодильник", "куртка", "телевизор", "кроссовки", "стиральная машина", "лодка",
    "nokia", "гараж", "ваз 2107", "стол", "шкаф", "собака", "котенок", "детская кроватка",
    "sony playstation", "мотоцикл", "кровать", "планшет", "lada", "bmw", "toyota", "сапоги",
    "телефон", "iphone 6", "пальто", "комод", "дача", "аквариум", "монитор", "xbox", "ipad",
)  # fmt: skip

_PARAMS = (
    "{45:'Iphone', 816:'Apple'}",
    "{5:'Шины', 6:'Зимние'}",
    "{110:'Детские коляски'}",
    "{175:'Женская одежда', 88:'Платья и юбки', 178:'44-46 (M)'}",
    "{45:'Телефоны', 816:'Samsung'}",
    "{127:'Диваны', 128:'Новый'}",
    "{797:'Легковые', 709:'ВАЗ (LADA)', 799:'2107'}",  # noqa: RUF001
    "{83:'Обувь', 175:'Мужская', 88:'42'}",
    "{45:'Ноутбуки', 816:'Asus'}",
    "{1:'Продам', 2:'Квартира', 3:'2-комнатные'}",
    "{45:'Iphone', 816:'Apple', 817:'16 ГБ'}",
    "{797:'Легковые', 709:'Toyota', 799:'Camry'}",
    "{5:'Диски', 6:'R16'}",
    "{110:'Кроватки и манежи'}",
    "{127:'Шкафы и комоды'}",
    "{45:'Планшеты', 816:'Apple'}",
)


@dataclass(frozen=True)
class AvitoGenerationSummary:
    """What :func:`generate_avito` wrote.

    Attributes
    ----------
    path : str
        The database file (``sqlite``) or folder (``parquet``, ``tsv``) written.
    format : str
        ``"sqlite"``, ``"parquet"`` or ``"tsv"``.
    users : int
        Distinct ``UserID`` values in ``SearchInfo``.
    searches : int
        Rows of ``SearchInfo``.
    stream_rows : int
        Rows of ``trainSearchStream``.
    clicks : int
        Sum of ``IsClick``.
    first_date : str
        Earliest ``SearchDate``, as written (``2015-04-25 00:00:07.0``).
    last_date : str
        Latest ``SearchDate``, as written.
    seconds : float
        Wall-clock time of the generation, writing included.
    """

    path: str
    format: str
    users: int
    searches: int
    stream_rows: int
    clicks: int
    first_date: str
    last_date: str
    seconds: float


def generate_avito(
    out: str,
    users: int,
    searches: int,
    fmt: str = "sqlite",
    seed: int = 42,
    start_date: str = "2015-04-25",
    days: int = 26,
    gzip: bool = False,
) -> AvitoGenerationSummary:
    """Generate Avito-shaped ``trainSearchStream`` and ``SearchInfo`` tables and write them.

    Parameters
    ----------
    out : str
        The SQLite database file for ``fmt="sqlite"`` (replaced if it exists), else the folder
        that receives the two tables. Missing parent folders are created.
    users : int
        Number of distinct users, at least 1.
    searches : int
        Number of searches (rows of ``SearchInfo``), at least ``users``.
    fmt : str, default "sqlite"
        ``"sqlite"``, ``"parquet"`` or ``"tsv"``; see the module docstring for the layouts.
    seed : int, default 42
        Seed of ``numpy.random.default_rng``; the same arguments give the same tables.
    start_date : str, default "2015-04-25"
        First day of the period, ``YYYY-MM-DD``.
    days : int, default 26
        Length of the period in days, at least 1.
    gzip : bool, default False
        Write ``.tsv.gz`` instead of ``.tsv`` (``fmt="tsv"`` only).

    Returns
    -------
    AvitoGenerationSummary
        Counts and date range of what was written.

    Raises
    ------
    InputError
        If an argument is out of range, ``fmt`` is unknown, or ``out`` is a folder where a file
        is expected (``sqlite``) or a file where a folder is expected.
    """
    start = _validate(users, searches, fmt, seed, start_date, days, gzip)
    if fmt == "sqlite" and os.path.isdir(out):
        raise InputError(f"{out} is a folder; fmt='sqlite' needs the database file path")
    if fmt != "sqlite" and os.path.isfile(out):
        raise InputError(f"{out} is a file; fmt={fmt!r} writes a folder")
    began = time.perf_counter()
    stream, info = build_avito_tables(users, searches, seed=seed, start=start, days=days)
    if fmt == "sqlite":
        _write_sqlite(out, stream, info)
    elif fmt == "parquet":
        _write_parquet(out, stream, info)
    else:
        _write_tsv(out, stream, info, gzip)
    dates = info.column("SearchDate")
    summary = AvitoGenerationSummary(
        path=str(out),
        format=fmt,
        users=len(pc.unique(info.column("UserID"))),
        searches=info.num_rows,
        stream_rows=stream.num_rows,
        clicks=int(pc.sum(stream.column("IsClick")).as_py() or 0),
        first_date=str(pc.min(dates).as_py()),
        last_date=str(pc.max(dates).as_py()),
        seconds=time.perf_counter() - began,
    )
    logger.info(
        "wrote %s Avito data to %s: %d users, %d searches, %d stream rows, %d clicks in %.1f s",
        fmt,
        out,
        summary.users,
        summary.searches,
        summary.stream_rows,
        summary.clicks,
        summary.seconds,
    )
    return summary


def _validate(
    users: Any, searches: Any, fmt: Any, seed: Any, start_date: Any, days: Any, gzip: Any
) -> _dt.date:
    """Check the arguments of :func:`generate_avito`; return the parsed start date."""
    for name, value in (("users", users), ("searches", searches), ("days", days), ("seed", seed)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise InputError(f"{name} must be an integer, got {value!r}")
    if users < 1:
        raise InputError(f"users must be at least 1, got {users}")
    if searches < users:
        raise InputError(
            f"searches must be at least users ({users}) so that every user searches once, "
            f"got {searches}"
        )
    if days < 1:
        raise InputError(f"days must be at least 1, got {days}")
    if seed < 0:
        raise InputError(f"seed must be non-negative, got {seed}")
    if fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if gzip and fmt != "tsv":
        raise InputError(f"gzip applies to fmt='tsv' only, not {fmt!r}")
    try:
        return _dt.date.fromisoformat(str(start_date))
    except ValueError:
        raise InputError(f"start_date must be YYYY-MM-DD, got {start_date!r}") from None


def arrow_schema(schema: StructType) -> pa.Schema:
    """Arrow schema matching a Spark schema of long, int, double and string columns.

    Parameters
    ----------
    schema : StructType
        A flat Spark schema such as :data:`segmentation.io.schemas.AVITO_SEARCH_STREAM`.

    Returns
    -------
    pyarrow.Schema
        Same names and nullability; ``LongType`` -> int64, ``IntegerType`` -> int32,
        ``DoubleType`` -> float64, ``StringType`` -> string.
    """
    types: Dict[type, pa.DataType] = {
        LongType: pa.int64(),
        IntegerType: pa.int32(),
        DoubleType: pa.float64(),
        StringType: pa.string(),
    }
    fields = []
    for field in schema.fields:
        spark_type: DataType = field.dataType
        if type(spark_type) not in types:
            raise TypeError(f"no Arrow mapping for {field.name}: {spark_type.simpleString()}")
        fields.append(pa.field(field.name, types[type(spark_type)], nullable=field.nullable))
    return pa.schema(fields)


STREAM_ARROW_SCHEMA = arrow_schema(AVITO_SEARCH_STREAM)
INFO_ARROW_SCHEMA = arrow_schema(AVITO_SEARCH_INFO)


def _zipf_index(rng: np.random.Generator, pool: int, size: int, alpha: float) -> np.ndarray:
    """Indices in ``[0, pool)`` with P(i) proportional to ``(i + 1) ** -alpha``."""
    cdf = np.cumsum(1.0 / np.arange(1, pool + 1, dtype=np.float64) ** alpha)
    cdf /= cdf[-1]
    idx = np.searchsorted(cdf, rng.random(size), side="right")
    return np.minimum(idx, pool - 1)


def _sparse_ids(rng: np.random.Generator, count: int, spread: int) -> np.ndarray:
    """``count`` distinct random ids in ``[1, count * spread]``, as int64."""
    return rng.choice(count * spread, size=count, replace=False).astype(np.int64) + 1


def _pick_text(
    rng: np.random.Generator, vocab: Sequence[str], size: int, null_p: float, empty_p: float
) -> pa.Array:
    """Strings: NULL with ``null_p``, ``""`` with ``empty_p``, else a Zipf-ish pick of vocab."""
    words = pa.array(["", *vocab], type=pa.string())
    kind = rng.random(size)
    idx = _zipf_index(rng, len(vocab), size, 1.0) + 1
    idx[kind < null_p + empty_p] = 0
    return pc.take(words, pa.array(idx, mask=kind < null_p, type=pa.int32()))


def build_avito_tables(
    users: int, searches: int, seed: int, start: _dt.date, days: int
) -> Tuple[pa.Table, pa.Table]:
    """Build the ``trainSearchStream`` and ``SearchInfo`` tables in memory.

    Arguments are not validated; use :func:`generate_avito`.

    Parameters
    ----------
    users : int
        Number of distinct users (>= 1).
    searches : int
        Number of searches (>= ``users``).
    seed : int
        Seed of ``numpy.random.default_rng``.
    start : datetime.date
        First day of the period.
    days : int
        Length of the period in days.

    Returns
    -------
    tuple of pyarrow.Table
        ``(trainSearchStream, SearchInfo)`` with schemas :data:`STREAM_ARROW_SCHEMA` and
        :data:`INFO_ARROW_SCHEMA`, rows in ``SearchID`` (then ``Position``) order.
    """
    rng = np.random.default_rng(seed)
    n = searches
    period = days * 86_400

    # --- users: activity, window, habits -------------------------------------------------
    weight = rng.lognormal(0.0, 1.6, users)
    per_user = 1 + rng.multinomial(n - users, weight / weight.sum())
    user_ids = _sparse_ids(rng, users, 8)
    win_len = period * rng.uniform(0.05, 1.0, users)
    win_start = rng.random(users) * (period - win_len)
    home_ip = rng.integers(1, 4 * users + 1000, users)
    login_p = np.where(rng.random(users) < 0.4, 0.9, 0.02)
    n_locations = 4000
    location_ids = _sparse_ids(rng, n_locations, 3)
    home_location = _zipf_index(rng, n_locations, users, 1.0)
    n_categories = 60
    category_ids = _sparse_ids(rng, n_categories, 2)
    favourite_category = _zipf_index(rng, n_categories, users, 0.8)
    click_propensity = rng.lognormal(-0.5, 1.0, users)

    # --- searches, in date order ---------------------------------------------------------
    user = np.repeat(np.arange(users), per_user)
    second = (win_start[user] + rng.random(n) * win_len[user]).astype(np.int64)
    order = np.argsort(second, kind="stable")
    user = user[order]
    second = second[order]
    search_id = np.cumsum(rng.integers(1, 4, n)).astype(np.int64)
    stamps = np.datetime64(start.isoformat(), "s") + second
    dates = pa.array(np.datetime_as_string(stamps, unit="s"), type=pa.string())
    dates = pc.binary_join_element_wise(
        pc.replace_substring(dates, "T", " ", max_replacements=1), ".0", ""
    )
    ipid = np.where(
        rng.random(n) < 0.85, home_ip[user], rng.integers(1, 4 * users + 1000, n)
    ).astype(np.int64)
    logged_on = (rng.random(n) < login_p[user]).astype(np.int32)
    location = location_ids[
        np.where(rng.random(n) < 0.9, home_location[user], _zipf_index(rng, n_locations, n, 1.0))
    ]
    category = category_ids[
        np.where(
            rng.random(n) < 0.55,
            favourite_category[user],
            _zipf_index(rng, n_categories, n, 0.8),
        )
    ]
    query = _pick_text(rng, _WORDS, n, null_p=0.45, empty_p=0.30)
    params = _pick_text(rng, _PARAMS, n, null_p=0.55, empty_p=0.0)
    info = pa.Table.from_arrays(
        [
            pa.array(search_id, type=pa.int64()),
            dates,
            pa.array(ipid, type=pa.int64()),
            pa.array(user_ids[user], type=pa.int64()),
            pa.array(logged_on, type=pa.int32()),
            query,
            pa.array(location, type=pa.int64()),
            pa.array(category, type=pa.int64()),
            params,
        ],
        schema=INFO_ARROW_SCHEMA,
    )

    # --- stream: 0..8 ads per search at distinct positions ---------------------------------
    ads = rng.choice(np.arange(1, 9), size=n, p=_ADS_PER_SEARCH_P)
    ads[rng.random(n) < _EMPTY_SEARCH_SHARE] = 0
    slot_rank = np.argsort(np.argsort(rng.random((n, 8)), axis=1), axis=1)
    row, col = np.nonzero(slot_rank < ads[:, None])  # row-major: SearchID, then Position
    m = row.size
    object_type = (rng.choice(3, size=m, p=_OBJECT_TYPE_P) + 1).astype(np.int32)
    contextual = object_type == 3
    n_ctx = int(contextual.sum())

    ctx_pool = max(50, n // 25)
    reg_pool = max(200, n // 3)
    pool_ids = _sparse_ids(rng, ctx_pool + reg_pool, 10)
    ctx_ad_ids, reg_ad_ids = pool_ids[:ctx_pool], pool_ids[ctx_pool:]
    ctx_ad_ctr = np.round(np.clip(rng.lognormal(np.log(0.008), 0.8, ctx_pool), 0.001, 0.05), 6)
    ad_id = np.empty(m, dtype=np.int64)
    ctx_pick = _zipf_index(rng, ctx_pool, n_ctx, 1.0)
    ad_id[contextual] = ctx_ad_ids[ctx_pick]
    ad_id[~contextual] = reg_ad_ids[_zipf_index(rng, reg_pool, m - n_ctx, 0.9)]

    hist_ctr = np.zeros(m, dtype=np.float64)
    hist_ctr[contextual] = ctx_ad_ctr[ctx_pick]
    click_p = np.minimum(hist_ctr[contextual] * click_propensity[user[row[contextual]]], 0.6)
    is_click = np.zeros(m, dtype=np.int32)
    is_click[contextual] = rng.random(n_ctx) < click_p

    stream = pa.Table.from_arrays(
        [
            pa.array(search_id[row], type=pa.int64()),
            pa.array(ad_id, type=pa.int64()),
            pa.array((col + 1).astype(np.int32), type=pa.int32()),
            pa.array(object_type, type=pa.int32()),
            pa.array(hist_ctr, mask=~contextual, type=pa.float64()),
            pa.array(is_click, mask=~contextual, type=pa.int32()),
        ],
        schema=STREAM_ARROW_SCHEMA,
    )
    return stream, info


# --- writers ------------------------------------------------------------------------------


def _sql_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "INTEGER"
    if pa.types.is_floating(arrow_type):
        return "REAL"
    return "TEXT"


def _column_values(column: pa.ChunkedArray) -> List[Any]:
    """Python values of a column, None for NULL; fast for null-free numeric columns."""
    if column.null_count == 0 and not pa.types.is_string(column.type):
        return column.to_numpy().tolist()
    return column.to_pylist()


def _rows(table: pa.Table, batch: int) -> Iterator[List[Tuple[Any, ...]]]:
    for offset in range(0, table.num_rows, batch):
        part = table.slice(offset, batch)
        yield list(zip(*(_column_values(part.column(i)) for i in range(part.num_columns))))


def _write_sqlite(out: str, stream: pa.Table, info: pa.Table) -> None:
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    con = sqlite3.connect(str(tmp), isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        for name, table in ((STREAM_TABLE, stream), (INFO_TABLE, info)):
            columns = ", ".join(f"{f.name} {_sql_type(f.type)}" for f in table.schema)
            con.execute(f"CREATE TABLE {name}({columns})")
            marks = ", ".join("?" * table.num_columns)
            sql = f"INSERT INTO {name} VALUES ({marks})"
            for rows in _rows(table, _SQLITE_BATCH):
                con.executemany(sql, rows)
        con.execute("COMMIT")
    except BaseException:
        con.close()
        tmp.unlink()
        raise
    con.close()
    os.replace(tmp, target)


def _write_parquet(out: str, stream: pa.Table, info: pa.Table) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    for name, table in ((STREAM_TABLE, stream), (INFO_TABLE, info)):
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        offsets = range(0, max(table.num_rows, 1), _ROWS_PER_FILE)
        for part, offset in enumerate(offsets):
            pq.write_table(
                table.slice(offset, _ROWS_PER_FILE),
                str(folder / f"part-{part:05d}.parquet"),
                compression="snappy",
            )


def _write_tsv(out: str, stream: pa.Table, info: pa.Table, gzip: bool) -> None:
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    for name, table in ((STREAM_TABLE, stream), (INFO_TABLE, info)):
        path = root / (f"{name}.tsv.gz" if gzip else f"{name}.tsv")
        stale = root / (f"{name}.tsv" if gzip else f"{name}.tsv.gz")
        if stale.exists():
            stale.unlink()
        sink: Any = (
            pa.CompressedOutputStream(str(path), "gzip") if gzip else pa.OSFile(str(path), "wb")
        )
        with sink:
            sink.write(("\t".join(table.column_names) + "\n").encode("utf-8"))
            pa_csv.write_csv(table, sink, options)
