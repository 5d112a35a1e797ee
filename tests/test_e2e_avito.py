"""End to end on a generated Avito database: ingest, features, run; checked against SQLite SQL."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
from outputs import published
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation.cli import main
from segmentation.generate import generate_avito

pytestmark = pytest.mark.e2e

USERS, SEARCHES, SEED = 300, 4_000, 3


@pytest.fixture(scope="module")
def database(tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("avito") / "database.sqlite"
    generate_avito(str(path), users=USERS, searches=SEARCHES, fmt="sqlite", seed=SEED)
    return path


def oracle_rfe(database: Path) -> Dict[str, Tuple[int, int, int, int]]:
    """Per user (recency_days, clicks, searches, impressions), computed by SQLite itself."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            """
            WITH per_search AS (
              SELECT SearchID, count(*) AS impressions, sum(coalesce(IsClick, 0)) AS clicks
              FROM trainSearchStream GROUP BY SearchID
            )
            SELECT i.UserID, max(date(substr(i.SearchDate, 1, 19))), sum(p.clicks), count(*),
                   sum(p.impressions)
            FROM SearchInfo i JOIN per_search p ON p.SearchID = i.SearchID
            WHERE i.UserID IS NOT NULL
            GROUP BY i.UserID
            """
        ).fetchall()
    reference = max(dt.date.fromisoformat(r[1]) for r in rows) + dt.timedelta(days=1)
    return {
        str(user): ((reference - dt.date.fromisoformat(last)).days, clicks, searches, shown)
        for user, last, clicks, searches, shown in rows
    }


def features_of(spark: SparkSession, output: Path) -> DataFrame:
    return spark.read.parquet(str(published(output) / "features"))


@pytest.fixture(scope="module")
def sqlite_features(spark: SparkSession, database: Path, tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("avito-features") / "out"
    assert main(["features", "--source", "avito", "--input", str(database),
                 "--output", str(out), "--sqlite-partitions", "3"]) == 0
    return out


def test_features_from_sqlite_equal_sqlite_sql(
    spark: SparkSession, database: Path, sqlite_features: Path
) -> None:
    expected = oracle_rfe(database)
    actual = {
        row["customer_id"]: (row["recency_days"], row["frequency"], row["engagement"],
                             row["impressions"])
        for row in features_of(spark, sqlite_features).collect()
    }
    assert len(actual) == len(expected) > 200
    assert actual == expected


def test_manifest_counts_searches(sqlite_features: Path, database: Path) -> None:
    manifest = json.loads((published(sqlite_features) / "manifest.json").read_text())
    with sqlite3.connect(database) as conn:
        searches = conn.execute("SELECT count(*) FROM SearchInfo").fetchone()[0]
        outside = conn.execute(
            "SELECT count(*) FROM SearchInfo WHERE SearchID NOT IN "
            "(SELECT SearchID FROM trainSearchStream)"
        ).fetchone()[0]
    assert manifest["rows"]["unit"] == "searches"
    assert manifest["rows"]["read"] == searches == SEARCHES
    assert manifest["rows"]["dropped"]["search_not_in_stream"] == outside > 0
    assert manifest["rows"]["dropped"]["stream_rows_without_search"] == 0


def test_ingest_then_features_from_parquet_match_sqlite(
    spark: SparkSession, database: Path, sqlite_features: Path, tmp_path: Path
) -> None:
    ingested = tmp_path / "ingested"
    assert main(["ingest", "--source", "avito", "--input", str(database),
                 "--output", str(ingested), "--sqlite-partitions", "2"]) == 0
    manifest = json.loads((published(ingested) / "manifest.json").read_text())
    with sqlite3.connect(database) as conn:
        for table in ("trainSearchStream", "SearchInfo"):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert manifest["tables"][table]["rows"] == count
            assert manifest["tables"][table]["rows_per_second"] > 0
            assert spark.read.parquet(str(published(ingested) / "tables" / table)).count() == count
    out = tmp_path / "from-parquet"
    # OUT/tables: the tables of the published ingest run (read through OUT/LATEST)
    assert main(["features", "--source", "avito", "--input", str(ingested / "tables"),
                 "--output", str(out)]) == 0
    assertDataFrameEqual(features_of(spark, out), features_of(spark, sqlite_features))


def test_features_from_gzipped_tsv_match_sqlite(
    spark: SparkSession, sqlite_features: Path, tmp_path: Path
) -> None:
    tables = tmp_path / "tsv"
    generate_avito(str(tables), users=USERS, searches=SEARCHES, fmt="tsv", seed=SEED, gzip=True)
    out = tmp_path / "from-tsv"
    assert main(["features", "--source", "avito", "--input", str(tables),
                 "--output", str(out)]) == 0
    assertDataFrameEqual(features_of(spark, out), features_of(spark, sqlite_features))


def test_run_on_sqlite_writes_every_output(
    spark: SparkSession, database: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    assert main(["run", "--source", "avito", "--input", str(database), "--output", str(out),
                 "--k", "2-4", "--max-iter", "8", "--sample-fraction", "0.8"]) == 0
    run = published(out)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["clustering"]["feature_columns"] == ["recency_days", "frequency", "engagement"]
    assert manifest["clustering"]["sample_fraction"] == 0.8
    profiles = json.loads((run / "profiles.json").read_text())
    assert profiles["value_column"] == "frequency"
    segments = profiles["segments"]
    assert [s["cluster"] for s in segments] == list(range(manifest["clustering"]["chosen_k"]))
    assert sum(s["customers"] for s in segments) == manifest["customers"]["kept"]
    assignments = spark.read.parquet(str(run / "assignments"))
    assert assignments.count() == manifest["customers"]["kept"]
    # RFE: the third score is engagement (searches), and the report names clicks as the value.
    assert assignments.columns[-7:] == ["r_score", "f_score", "e_score", "fm_score",
                                        "rfm_segment", "value_score", "value_tier"]
    described = json.loads((run / "run.json").read_text())
    assert [s["feature"] for s in described["scores"]["specs"]] == [
        "recency_days", "frequency", "engagement"]
    assert [m["feature"] for m in described["value_tiers"]["metrics"]] == [
        "recency_days", "frequency", "engagement"]
    assert "Share of clicks" in (run / "report" / "report.html").read_text()


def test_missing_table_in_folder(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "partial"
    folder.mkdir()
    (folder / "SearchInfo.tsv").write_text("SearchID\tSearchDate\n")
    assert main(["features", "--source", "avito", "--input", str(folder),
                 "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: Avito input folder {folder} has no trainSearchStream table" in err
    assert not (tmp_path / "out").exists()
