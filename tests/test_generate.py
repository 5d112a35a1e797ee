"""Tests of the Avito-shaped data generator (segmentation.generate)."""

from __future__ import annotations

import datetime as dt
import gzip
import re
import sqlite3
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession

from segmentation.errors import InputError
from segmentation.generate import AvitoGenerationSummary, generate_avito
from segmentation.io.schemas import AVITO_SEARCH_INFO, AVITO_SEARCH_STREAM

USERS = 200
SEARCHES = 2000

STREAM_COLUMNS = [
    ("SearchID", "INTEGER"),
    ("AdID", "INTEGER"),
    ("Position", "INTEGER"),
    ("ObjectType", "INTEGER"),
    ("HistCTR", "REAL"),
    ("IsClick", "INTEGER"),
]
INFO_COLUMNS = [
    ("SearchID", "INTEGER"),
    ("SearchDate", "TEXT"),
    ("IPID", "INTEGER"),
    ("UserID", "INTEGER"),
    ("IsUserLoggedOn", "INTEGER"),
    ("SearchQuery", "TEXT"),
    ("LocationID", "INTEGER"),
    ("CategoryID", "INTEGER"),
    ("SearchParams", "TEXT"),
]
STREAM_ARROW = pa.schema(
    [
        ("SearchID", pa.int64()),
        ("AdID", pa.int64()),
        ("Position", pa.int32()),
        ("ObjectType", pa.int32()),
        ("HistCTR", pa.float64()),
        ("IsClick", pa.int32()),
    ]
)
INFO_ARROW = pa.schema(
    [
        ("SearchID", pa.int64()),
        ("SearchDate", pa.string()),
        ("IPID", pa.int64()),
        ("UserID", pa.int64()),
        ("IsUserLoggedOn", pa.int32()),
        ("SearchQuery", pa.string()),
        ("LocationID", pa.int64()),
        ("CategoryID", pa.int64()),
        ("SearchParams", pa.string()),
    ]
)
DATE_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.0$")

Rows = List[Tuple[Any, ...]]


def _sqlite_rows(path: Path, table: str) -> Rows:
    con = sqlite3.connect(str(path))
    try:
        return [tuple(r) for r in con.execute(f"SELECT * FROM {table} ORDER BY rowid")]
    finally:
        con.close()


def _parquet_rows(folder: Path, table: str) -> Rows:
    data = pq.read_table(str(folder / table))
    return [tuple(d.values()) for d in data.to_pylist()]


def _blank_to_none(rows: Rows) -> Rows:
    return [tuple(None if v == "" else v for v in row) for row in rows]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, AvitoGenerationSummary]:
    root = tmp_path_factory.mktemp("avito")
    return {
        "sqlite": generate_avito(str(root / "db" / "database.sqlite"), USERS, SEARCHES),
        "parquet": generate_avito(str(root / "parquet"), USERS, SEARCHES, fmt="parquet"),
        "tsv": generate_avito(str(root / "tsv"), USERS, SEARCHES, fmt="tsv"),
        "tsv.gz": generate_avito(str(root / "tsvgz"), USERS, SEARCHES, fmt="tsv", gzip=True),
    }


@pytest.fixture(scope="module")
def info_rows(generated: Dict[str, AvitoGenerationSummary]) -> Rows:
    return _sqlite_rows(Path(generated["sqlite"].path), "SearchInfo")


@pytest.fixture(scope="module")
def stream_rows(generated: Dict[str, AvitoGenerationSummary]) -> Rows:
    return _sqlite_rows(Path(generated["sqlite"].path), "trainSearchStream")


def _summary_from_rows(info: Rows, stream: Rows) -> Tuple[int, int, int, int, str, str]:
    dates = [r[1] for r in info]
    clicks = sum(r[5] for r in stream if r[5] is not None)
    return len({r[3] for r in info}), len(info), len(stream), clicks, min(dates), max(dates)


def _summary_figures(summary: AvitoGenerationSummary) -> Tuple[int, int, int, int, str, str]:
    return (
        summary.users,
        summary.searches,
        summary.stream_rows,
        summary.clicks,
        summary.first_date,
        summary.last_date,
    )


# --- layouts ------------------------------------------------------------------------------


def test_sqlite_tables_and_columns_are_kaggles(
    generated: Dict[str, AvitoGenerationSummary], info_rows: Rows, stream_rows: Rows
) -> None:
    summary = generated["sqlite"]
    assert summary.format == "sqlite"
    path = Path(summary.path)
    assert path.name == "database.sqlite" and path.is_file()
    con = sqlite3.connect(str(path))
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master ORDER BY name")]
        assert tables == ["SearchInfo", "trainSearchStream"]
        for table, expected in (
            ("trainSearchStream", STREAM_COLUMNS),
            ("SearchInfo", INFO_COLUMNS),
        ):
            info = [(r[1], r[2]) for r in con.execute(f"PRAGMA table_info({table})")]
            assert info == expected
    finally:
        con.close()
    assert _summary_from_rows(info_rows, stream_rows) == _summary_figures(summary)
    assert summary.users == USERS and summary.searches == SEARCHES


def test_parquet_layout_types_and_summary(
    generated: Dict[str, AvitoGenerationSummary], spark: SparkSession
) -> None:
    summary = generated["parquet"]
    root = Path(summary.path)
    assert sorted(p.name for p in root.iterdir()) == ["SearchInfo", "trainSearchStream"]
    for table, expected in (("trainSearchStream", STREAM_ARROW), ("SearchInfo", INFO_ARROW)):
        files = sorted(p.name for p in (root / table).iterdir())
        assert files == ["part-00000.parquet"]
        assert pq.read_schema(str(root / table / files[0])).equals(expected)
    info = _parquet_rows(root, "SearchInfo")
    stream = _parquet_rows(root, "trainSearchStream")
    assert _summary_from_rows(info, stream) == _summary_figures(summary)
    # Spark reads it with the explicit schemas (a type mismatch would fail the read).
    spark_stream = spark.read.schema(AVITO_SEARCH_STREAM).parquet(str(root / "trainSearchStream"))
    assert spark_stream.count() == summary.stream_rows
    spark_info = spark.read.schema(AVITO_SEARCH_INFO).parquet(str(root / "SearchInfo")).collect()
    assert [tuple(r) for r in spark_info] == info


@pytest.mark.parametrize("kind", ["tsv", "tsv.gz"])
def test_tsv_header_and_spark_round_trip(
    kind: str,
    generated: Dict[str, AvitoGenerationSummary],
    info_rows: Rows,
    stream_rows: Rows,
    spark: SparkSession,
) -> None:
    summary = generated[kind]
    root = Path(summary.path)
    suffix = ".tsv.gz" if kind == "tsv.gz" else ".tsv"
    assert sorted(p.name for p in root.iterdir()) == [
        f"SearchInfo{suffix}",
        f"trainSearchStream{suffix}",
    ]
    for table, columns, schema, expected in (
        ("trainSearchStream", STREAM_COLUMNS, AVITO_SEARCH_STREAM, stream_rows),
        ("SearchInfo", INFO_COLUMNS, AVITO_SEARCH_INFO, info_rows),
    ):
        path = root / f"{table}{suffix}"
        opener: Any = gzip.open if kind == "tsv.gz" else open
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            lines = handle.read().split("\n")
        assert lines[0] == "\t".join(name for name, _ in columns)
        assert lines[-1] == ""  # ends with a newline
        assert len(lines) == len(expected) + 2
        assert all(line.count("\t") == len(columns) - 1 for line in lines[:-1])
        assert not any('"' in line or "\r" in line for line in lines)
        frame = (
            spark.read.schema(schema)
            .option("sep", "\t")
            .option("header", True)
            .option("mode", "FAILFAST")
            .csv(str(path))
        )
        got = [tuple(r) for r in frame.collect()]
        # Same values as the sqlite database of the same seed (NULL and "" are alike in TSV).
        assert _blank_to_none(got) == _blank_to_none(expected)
    assert _summary_figures(summary) == _summary_figures(generated["sqlite"])


def test_formats_hold_the_same_data(generated: Dict[str, AvitoGenerationSummary]) -> None:
    db = Path(generated["sqlite"].path)
    root = Path(generated["parquet"].path)
    for table in ("trainSearchStream", "SearchInfo"):
        assert _parquet_rows(root, table) == _sqlite_rows(db, table)


# --- determinism --------------------------------------------------------------------------


def test_same_seed_same_content_other_seed_other_content(tmp_path: Path) -> None:
    first = generate_avito(str(tmp_path / "a"), 50, 400, fmt="parquet", seed=7)
    second = generate_avito(str(tmp_path / "b"), 50, 400, fmt="parquet", seed=7)
    third = generate_avito(str(tmp_path / "c"), 50, 400, fmt="parquet", seed=8)
    for table in ("trainSearchStream", "SearchInfo"):
        a = _parquet_rows(tmp_path / "a", table)
        assert a == _parquet_rows(tmp_path / "b", table)
        assert a != _parquet_rows(tmp_path / "c", table)
    assert _summary_figures(first) == _summary_figures(second)
    assert _summary_figures(first) != _summary_figures(third)


def test_sqlite_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "database.sqlite"
    generate_avito(str(path), 30, 300, seed=1)
    summary = generate_avito(str(path), 20, 100, seed=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["database.sqlite"]
    info = _sqlite_rows(path, "SearchInfo")
    stream = _sqlite_rows(path, "trainSearchStream")
    assert _summary_from_rows(info, stream) == _summary_figures(summary)
    assert len(info) == 100


def test_tsv_rewrite_drops_the_other_compression(tmp_path: Path) -> None:
    generate_avito(str(tmp_path), 10, 50, fmt="tsv")
    generate_avito(str(tmp_path), 10, 50, fmt="tsv", gzip=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "SearchInfo.tsv.gz",
        "trainSearchStream.tsv.gz",
    ]


# --- content ------------------------------------------------------------------------------


def test_histctr_and_isclick_null_exactly_off_contextual(stream_rows: Rows) -> None:
    contextual = [r for r in stream_rows if r[3] == 3]
    others = [r for r in stream_rows if r[3] != 3]
    assert {r[3] for r in stream_rows} == {1, 2, 3}
    assert contextual and others
    assert all(r[4] is None and r[5] is None for r in others)
    assert all(r[4] is not None and r[5] is not None for r in contextual)
    assert {r[5] for r in contextual} == {0, 1}
    assert all(0.001 <= r[4] <= 0.05 for r in contextual)


def test_dates_pattern_span_and_ids_ascend(info_rows: Rows) -> None:
    dates = [r[1] for r in info_rows]
    assert all(DATE_TEXT.match(d) for d in dates)
    parsed = [dt.datetime.strptime(d, "%Y-%m-%d %H:%M:%S.0") for d in dates]
    assert min(parsed) >= dt.datetime(2015, 4, 25)
    assert max(parsed) < dt.datetime(2015, 4, 25) + dt.timedelta(days=26)
    assert max(parsed) - min(parsed) >= dt.timedelta(days=16)
    ids = [r[0] for r in info_rows]
    assert all(a < b for a, b in zip(ids, ids[1:]))
    assert all(a <= b for a, b in zip(parsed, parsed[1:]))


def test_other_start_date_and_days(tmp_path: Path) -> None:
    summary = generate_avito(str(tmp_path), 20, 500, fmt="parquet", start_date="2016-02-28", days=3)
    dates = [r[1] for r in _parquet_rows(tmp_path, "SearchInfo")]
    assert all("2016-02-28" <= d < "2016-03-02" for d in dates)
    assert {d[:10] for d in dates} == {"2016-02-28", "2016-02-29", "2016-03-01"}
    assert (summary.first_date, summary.last_date) == (min(dates), max(dates))


def test_heavy_tail_and_every_user_searches(info_rows: Rows) -> None:
    per_user = Counter(r[3] for r in info_rows)
    assert len(per_user) == USERS
    counts = sorted(per_user.values())
    assert counts[-1] >= 10 * statistics.median(counts)
    assert sum(c <= 5 for c in counts) >= USERS // 2


def test_stream_shape(info_rows: Rows, stream_rows: Rows) -> None:
    positions: Dict[int, List[int]] = defaultdict(list)
    for row in stream_rows:
        positions[row[0]].append(row[2])
    search_ids = {r[0] for r in info_rows}
    assert set(positions) <= search_ids
    assert all(p == sorted(set(p)) and p[0] >= 1 and p[-1] <= 8 for p in positions.values())
    keys = [(r[0], r[2]) for r in stream_rows]
    assert keys == sorted(keys)


def test_rates_at_a_larger_size(tmp_path: Path) -> None:
    summary = generate_avito(str(tmp_path), 5000, 50_000, fmt="parquet", seed=3)
    stream = pq.read_table(str(tmp_path / "trainSearchStream"), columns=["SearchID", "ObjectType"])
    object_type = stream.column("ObjectType").to_pylist()
    contextual = sum(t == 3 for t in object_type)
    assert 0.40 <= contextual / len(object_type) <= 0.50
    assert 0.003 <= summary.clicks / contextual <= 0.03
    assert 3.2 <= summary.stream_rows / summary.searches <= 3.8
    with_ads = len(set(stream.column("SearchID").to_pylist()))
    assert 0.02 <= 1 - with_ads / summary.searches <= 0.04
    users = pq.read_table(str(tmp_path / "SearchInfo"), columns=["UserID"]).column("UserID")
    assert len(set(users.to_pylist())) == summary.users == 5000


def test_clicks_vary_between_users(tmp_path: Path) -> None:
    generate_avito(str(tmp_path), 2000, 40_000, fmt="parquet", seed=5)
    info = pq.read_table(str(tmp_path / "SearchInfo"), columns=["SearchID", "UserID"])
    user_of = dict(zip(info.column("SearchID").to_pylist(), info.column("UserID").to_pylist()))
    stream = pq.read_table(str(tmp_path / "trainSearchStream")).to_pylist()
    shown: Counter[int] = Counter()
    clicked: Counter[int] = Counter()
    for row in stream:
        if row["ObjectType"] == 3:
            shown[user_of[row["SearchID"]]] += 1
            clicked[user_of[row["SearchID"]]] += row["IsClick"]
    overall = sum(clicked.values()) / sum(shown.values())
    busy = [u for u, n in shown.items() if n >= 200]
    rates = [clicked[u] / shown[u] for u in busy]
    assert len(busy) >= 20
    assert max(rates) >= 3 * overall


# --- arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"users": 0, "searches": 10}, "users must be at least 1"),
        ({"users": 10, "searches": 9}, "searches must be at least users"),
        ({"days": 0}, "days must be at least 1"),
        ({"fmt": "csv"}, "unknown format 'csv'"),
        ({"fmt": "parquet", "gzip": True}, "gzip applies to fmt='tsv' only"),
        ({"start_date": "25/04/2015"}, "start_date must be YYYY-MM-DD"),
        ({"users": 2.5}, "users must be an integer"),
        ({"seed": -1}, "seed must be non-negative"),
    ],
)
def test_bad_arguments_raise_input_error(
    tmp_path: Path, kwargs: Dict[str, Any], message: str
) -> None:
    args: Dict[str, Any] = {"out": str(tmp_path / "x"), "users": 10, "searches": 20}
    args.update(kwargs)
    with pytest.raises(InputError, match=re.escape(message)):
        generate_avito(**args)
    assert not (tmp_path / "x").exists()


def test_out_of_the_wrong_kind_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        generate_avito(str(tmp_path), 10, 20)
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep me")
    with pytest.raises(InputError, match="is a file"):
        generate_avito(str(a_file), 10, 20, fmt="parquet")
    assert a_file.read_text() == "keep me"
