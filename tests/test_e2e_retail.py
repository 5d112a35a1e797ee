"""End to end on real data: UCI Online Retail II 2009-2010, checked against DuckDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import duckdb
import pandas as pd
import pytest
from outputs import published
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from segmentation.cli import main
from segmentation.sources.retail import NON_PRODUCT_STOCK_CODES

pytestmark = pytest.mark.e2e

OUTPUTS = (
    "features", "assignments", "profiles", "profiles.json", "k_selection", "k_selection.json",
    "model", "run.json", "report", "manifest.json", "_SUCCESS",
)


def oracle_rfm(path: Path) -> pd.DataFrame:
    """RFM written independently, in DuckDB SQL, from the rules in the README."""
    codes = ", ".join(f"'{c}'" for c in NON_PRODUCT_STOCK_CODES)
    return duckdb.sql(
        f"""
        WITH lines AS (
          SELECT upper(trim(Invoice)) AS invoice,
                 trim(StockCode) AS stock_code,
                 TRY_CAST(Quantity AS INTEGER) * TRY_CAST(Price AS DOUBLE) AS amount,
                 TRY_CAST(Price AS DOUBLE) AS price,
                 TRY_CAST(InvoiceDate AS TIMESTAMP) AS ts,
                 NULLIF(regexp_replace(trim("Customer ID"), '\\.0+$', ''), '') AS customer_id
          FROM read_csv('{path}', header = true, all_varchar = true, quote = '"', escape = '"')
        ),
        kept AS (
          SELECT *, starts_with(invoice, 'C') AS is_return FROM lines
          WHERE customer_id IS NOT NULL AND ts IS NOT NULL AND amount IS NOT NULL
            AND NOT starts_with(invoice, 'A') AND stock_code NOT IN ({codes}) AND price > 0
        ),
        reference AS (SELECT CAST(max(ts) AS DATE) + 1 AS day FROM kept)
        SELECT customer_id,
               CAST((SELECT day FROM reference)
                    - CAST(max(ts) FILTER (WHERE NOT is_return) AS DATE) AS INTEGER)
                 AS recency_days,
               count(DISTINCT invoice) FILTER (WHERE NOT is_return) AS frequency,
               sum(amount) AS monetary
        FROM kept
        GROUP BY customer_id
        HAVING count(*) FILTER (WHERE NOT is_return) > 0
        """
    ).df()


@pytest.fixture(scope="module")
def run_output(spark: SparkSession, retail_full: Path, tmp_path_factory: Any) -> Path:
    out = tmp_path_factory.mktemp("retail") / "out"
    status = main(
        ["run", "--source", "retail", "--input", str(retail_full), "--output", str(out),
         "--k", "2-5", "--seed", "7", "--max-iter", "10"]
    )
    assert status == 0
    return published(out)  # the run folder OUT/LATEST names


@pytest.fixture(scope="module")
def manifest(run_output: Path) -> Dict[str, Any]:
    return json.loads((run_output / "manifest.json").read_text())


def test_every_output_is_written(run_output: Path) -> None:
    assert sorted(p.name for p in run_output.iterdir()) == sorted(OUTPUTS)
    success = (run_output / "_SUCCESS").stat().st_mtime
    assert success >= (run_output / "manifest.json").stat().st_mtime


def test_features_equal_an_independent_duckdb_computation(
    run_output: Path, retail_full: Path
) -> None:
    expected = oracle_rfm(retail_full).set_index("customer_id").sort_index()
    actual = pd.read_parquet(run_output / "features").set_index("customer_id").sort_index()
    assert len(actual) == len(expected) == 4_285
    assert list(actual.index) == list(expected.index)
    assert (actual["recency_days"] == expected["recency_days"]).all()
    assert (actual["frequency"] == expected["frequency"]).all()
    assert (actual["monetary"] - expected["monetary"]).abs().max() < 1e-6


def test_manifest_counts_and_reference_date(manifest: Dict[str, Any], retail_full: Path) -> None:
    rows = manifest["rows"]
    assert rows["read"] == 525_461
    assert rows["dropped"]["missing_customer_id"] == 107_927
    assert rows["dropped"]["cancellation"] == 0  # netted, not dropped
    assert rows["read"] == rows["kept"] + sum(rows["dropped"].values())
    assert manifest["reference_date"] == "2010-12-10"
    assert manifest["customers"]["kept"] == 4_285
    assert manifest["clustering"]["k_range"] == [2, 3, 4, 5]
    assert manifest["clustering"]["chosen_k"] in (2, 3, 4, 5)
    assert set(manifest["timings_seconds"]) >= {
        "read_and_aggregate", "k_sweep", "fit_scores_and_tiers", "total"
    }
    assert manifest["concurrent_stages"] == {
        "fit_scores_and_tiers": "k_sweep", "save_model": "write_assignments"
    }
    assert manifest["versions"]["pyspark"] == "3.5.6"
    assert manifest["parameters"]["cancellations"] == "net"
    assert manifest["parameters"]["ks"] == [2, 3, 4, 5]


def test_assignments_profiles_and_k_selection_agree(
    run_output: Path, manifest: Dict[str, Any]
) -> None:
    k = manifest["clustering"]["chosen_k"]
    assignments = pd.read_parquet(run_output / "assignments")
    features = pd.read_parquet(run_output / "features")
    assert len(assignments) == len(features)
    assert set(assignments["customer_id"]) == set(features["customer_id"])
    assert set(assignments["cluster"]) == set(range(k))
    assert assignments["segment"].notna().all()

    profiles = pd.read_parquet(run_output / "profiles").sort_values("cluster")
    assert list(profiles["cluster"]) == list(range(k))
    sizes = assignments.groupby("cluster").size()
    assert list(profiles["customers"]) == list(sizes)
    assert profiles["customer_share"].sum() == pytest.approx(1.0)
    assert profiles["value_share"].sum() == pytest.approx(1.0)
    by_cluster = assignments.groupby("cluster")["monetary"].mean()
    assert list(profiles["mean_monetary"]) == pytest.approx(list(by_cluster))
    # every numeric feature is profiled; only the clustered ones have a centroid
    tenure = assignments.groupby("cluster")["tenure_days"].mean()
    assert list(profiles["mean_tenure_days"]) == pytest.approx(list(tenure))
    assert profiles["centroid_tenure_days"].isna().all()
    assert profiles["centroid_monetary"].notna().all()
    assert profiles["segment"].is_unique

    selection = json.loads((run_output / "k_selection.json").read_text())
    assert [r["k"] for r in selection["results"]] == [2, 3, 4, 5]
    assert [r["k"] for r in selection["results"] if r["chosen"]] == [k]
    best = max(selection["results"], key=lambda r: r["silhouette"])
    assert best["k"] == k
    k_table = pd.read_parquet(run_output / "k_selection")
    assert k_table["chosen"].sum() == 1
    assert list(k_table.columns) == [
        "k", "wssse", "silhouette", "davies_bouldin", "calinski_harabasz", "stability",
        "cluster_sizes", "non_empty_clusters", "seconds", "chosen",
    ]
    assert [list(sizes) for sizes in k_table["cluster_sizes"]] == [
        r["cluster_sizes"] for r in selection["results"]
    ]
    segments = json.loads((run_output / "profiles.json").read_text())["segments"]
    assert [s["segment"] for s in segments] == list(profiles["segment"])


def test_saved_model_scores_new_data_like_the_run(spark: SparkSession, run_output: Path) -> None:
    model = PipelineModel.load(str(run_output / "model"))
    features = spark.read.parquet(str(run_output / "features"))
    scored = model.transform(features).select("customer_id", "cluster", "segment")
    assigned = spark.read.parquet(str(run_output / "assignments")).select(
        "customer_id", "cluster", "segment"
    )
    assert scored.exceptAll(assigned).count() == 0


def test_dates_do_not_move_with_the_drivers_time_zone(retail_full: Path, tmp_path: Path) -> None:
    # The latest invoice, 2010-12-09 20:01 UTC, is already 2010-12-10 in Tokyo: a date taken
    # from a timestamp collected to the driver would move the reference date by a day.
    out = tmp_path / "tokyo"
    env = {**os.environ, "TZ": "Asia/Tokyo", "PYSPARK_PYTHON": sys.executable}
    done = subprocess.run(
        [sys.executable, "-m", "segmentation.cli", "features", "--source", "retail",
         "--input", str(retail_full), "--output", str(out), "--master", "local[2]"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((published(out) / "manifest.json").read_text())
    assert manifest["latest_event"] == "2010-12-09 20:01:00"
    assert manifest["reference_date"] == "2010-12-10" and manifest["time_zone"] == "UTC"
    described = json.loads((published(out) / "run.json").read_text())
    assert described["time_zone"] == "UTC"
    assert described["reference_date"]["date"] == "2010-12-10"
