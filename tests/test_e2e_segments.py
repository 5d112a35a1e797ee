"""Two periods of real UCI Online Retail II: run, score, compare, audiences, checked independently.

The 2009-2010 sheet is split at 2010-06-01. A run on the first period, ``score`` of the second
period with that run, ``compare`` of the two and ``audiences`` of both; every number is checked
against a computation that shares no code with the pipeline: quintile scores with numpy on the
saved cut points, grid names and value tiers from the saved tables in plain Python, migration
counts from a pandas join, audience files against the assignments.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any, Dict, Iterator, List

import duckdb
import numpy as np
import pandas as pd
import pytest
from outputs import published
from pyspark.sql import SparkSession

from segmentation.cli import main
from segmentation.segments.scores import RFM_GRID

pytestmark = pytest.mark.e2e

SPLIT = "2010-06-01"


@pytest.fixture(scope="module")
def periods(tmp_path_factory: pytest.TempPathFactory, retail_full: Path) -> Dict[str, Path]:
    """The real sheet split into two CSV files by invoice date (written by DuckDB)."""
    folder = tmp_path_factory.mktemp("periods")
    paths = {"first": folder / "first.csv", "second": folder / "second.csv"}
    source = f"read_csv('{retail_full}', all_varchar = true, header = true)"
    for name, condition in (("first", f"< '{SPLIT}'"), ("second", f">= '{SPLIT}'")):
        duckdb.sql(
            f"COPY (SELECT * FROM {source} WHERE InvoiceDate {condition}) "
            f"TO '{paths[name]}' (HEADER, DELIMITER ',')"
        )
    return paths


@pytest.fixture(scope="module")
def runs(
    spark: SparkSession, periods: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Dict[str, Path]]:
    out = tmp_path_factory.mktemp("runs")
    first, second = out / "first", out / "second"
    assert main(["run", "--source", "retail", "--input", str(periods["first"]),
                 "--output", str(first), "--k", "3-4"]) == 0
    assert main(["score", "--model", str(first), "--input", str(periods["second"]),
                 "--output", str(second)]) == 0
    assert main(["compare", str(first), str(second)]) == 0
    assert main(["audiences", "--run", str(first)]) == 0
    assert main(["audiences", "--run", str(second), "--by", "rfm_segment", "--gzip"]) == 0
    # The published run folders (OUT/runs/<run_id>), and the output folders themselves.
    yield {"first": published(first), "second": published(second),
           "first_output": first, "second_output": second}


def read(run: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(run / name)


def described(run: Path) -> Dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def numpy_score(values: np.ndarray, cuts: List[float], higher_is_better: bool) -> np.ndarray:
    """1 + cut points strictly below the value; recency mirrored (6 - that)."""
    bucket = 1 + (values[:, None] > np.asarray(cuts)[None, :]).sum(axis=1)
    return bucket if higher_is_better else 6 - bucket


def test_cut_points_are_quintiles_within_the_approximation(runs: Dict[str, Path]) -> None:
    features = read(runs["first"], "features")
    scores = described(runs["first"])["scores"]
    for spec in scores["specs"]:
        values = np.sort(features[spec["feature"]].to_numpy(dtype=float))
        n = len(values)
        for p, cut in zip((0.2, 0.4, 0.6, 0.8), scores["cut_points"][spec["score"]]):
            # approxQuantile's guarantee (relative error 0.001): a value of the data whose
            # 1-based rank lies in [floor((p - 0.001) n), ceil((p + 0.001) n)]
            first_rank = int(np.searchsorted(values, cut, side="left")) + 1
            last_rank = int(np.searchsorted(values, cut, side="right"))
            assert last_rank >= first_rank, (spec, cut)  # the cut is one of the values
            assert first_rank <= np.ceil((p + 1e-3) * n), (spec, p, cut)
            assert last_rank >= np.floor((p - 1e-3) * n), (spec, p, cut)


@pytest.mark.parametrize("period", ["first", "second"])
def test_scores_grid_and_tiers_match_an_independent_computation(
    runs: Dict[str, Path], period: str
) -> None:
    # The second period is scored with the FIRST period's cut points and tier boundaries.
    trained = described(runs["first"])
    assert described(runs[period])["scores"]["cut_points"] == trained["scores"]["cut_points"]
    assignments = read(runs[period], "assignments")
    scores = {}
    for spec in trained["scores"]["specs"]:
        expected = numpy_score(assignments[spec["feature"]].to_numpy(dtype=float),
                               trained["scores"]["cut_points"][spec["score"]],
                               spec["higher_is_better"])
        assert (assignments[spec["score"]].to_numpy() == expected).all(), spec["score"]
        scores[spec["score"]] = expected
    fm = np.floor((scores["f_score"] + scores["m_score"]) / 2 + 0.5).astype(int)
    assert (assignments["fm_score"].to_numpy() == fm).all()
    names = [RFM_GRID[(int(r), int(f))] for r, f in zip(scores["r_score"], fm)]
    assert assignments["rfm_segment"].tolist() == names

    tiers = trained["value_tiers"]
    total = np.zeros(len(assignments), dtype=int)
    for metric in tiers["metrics"]:
        bounds = np.asarray(tiers["boundaries"][metric["feature"]])
        values = assignments[metric["feature"]].to_numpy(dtype=float)
        rank = np.searchsorted(bounds, values, side="left")  # clusters below the value
        total += rank if metric["higher_is_better"] else len(bounds) - rank
    assert (assignments["value_score"].to_numpy() == total).all()
    low, high = tiers["tier_cuts"]
    expected_tier = np.where(total > high, "high", np.where(total < low, "low", "mid"))
    assert assignments["value_tier"].tolist() == expected_tier.tolist()


def test_score_applies_the_saved_run_to_the_new_period(
    runs: Dict[str, Path], periods: Dict[str, Path]
) -> None:
    first, second = described(runs["first"]), described(runs["second"])
    assert second["command"] == "score" and second["trained_on"] == str(runs["first"])
    assert second["segments"] == first["segments"]
    assert second["feature_set"] == first["feature_set"]
    # The run's rule: the day after the new period's latest event (2010-12-09 20:01)
    assert second["reference_date"] == {"rule": "day_after_latest_event", "date": "2010-12-10"}
    latest = duckdb.sql(
        f"SELECT max(CAST(InvoiceDate AS TIMESTAMP)) FROM read_csv('{periods['first']}', "
        "all_varchar = true, header = true) WHERE \"Customer ID\" IS NOT NULL").fetchall()[0][0]
    assert first["reference_date"]["date"] == str(latest.date() + dt.timedelta(days=1))
    assignments = read(runs["second"], "assignments")
    assert assignments["cluster"].notna().all() and assignments["segment"].notna().all()
    assert set(assignments["segment"]) <= {s["segment"] for s in first["segments"]}
    # Customers the first period never saw are scored like any other.
    known = set(read(runs["first"], "assignments")["customer_id"])
    new = assignments[~assignments["customer_id"].isin(known)]
    assert len(new) > 500 and new["segment"].notna().all()
    # Same contract as run, minus the sweep.
    names = sorted(p.name for p in runs["second"].iterdir())
    assert {"features", "assignments", "profiles", "profiles.json", "run.json", "report",
            "manifest.json", "_SUCCESS"} <= set(names)
    assert "k_selection" not in names and "model" not in names
    assert not (runs["second"] / "report" / "elbow.png").exists()
    assert (runs["first"] / "report" / "elbow.png").exists()


def test_migration_counts_equal_a_plain_join(runs: Dict[str, Path]) -> None:
    a = read(runs["first"], "assignments")[["customer_id", "segment"]]
    b = read(runs["second"], "assignments")[["customer_id", "segment"]]
    joined = a.merge(b, on="customer_id", how="outer", suffixes=("_a", "_b"))
    joined["from_segment"] = joined["segment_a"].fillna("(new)")
    joined["to_segment"] = joined["segment_b"].fillna("(lost)")
    expected = joined.groupby(["from_segment", "to_segment"]).size().to_dict()

    document = json.loads((runs["second"] / "migration.json").read_text())
    got = {(r["from_segment"], r["to_segment"]): r["customers"] for r in document["migration"]}
    assert got == expected
    assert document["customers_a"] == len(a) and document["customers_b"] == len(b)
    assert document["new_in_b"] == int(joined["segment_a"].isna().sum())
    assert document["lost_from_a"] == int(joined["segment_b"].isna().sum())
    for row in document["migration"]:
        row_total = sum(n for (f, _), n in expected.items() if f == row["from_segment"])
        assert row["share"] == pytest.approx(row["customers"] / row_total)
    table = read(runs["second"], "migration")
    assert len(table) == len(document["migration"])
    # The report of the later run now shows the heatmap.
    assert (runs["second"] / "report" / "migration.png").exists()
    assert "Movement since the last run" in (runs["second"] / "report" / "report.html").read_text()


def test_audiences_hold_exactly_each_segments_customers(runs: Dict[str, Path]) -> None:
    for run, by, suffix in ((runs["first"], "segment", ".csv"),
                            (runs["second"], "rfm_segment", ".csv.gz")):
        assignments = read(run, "assignments")
        counts = json.loads((run / "audiences" / "counts.json").read_text())
        assert counts["by"] == by and counts["customers"] == len(assignments)
        files = sorted(p.name for p in (run / "audiences").iterdir() if p.name != "counts.json")
        assert files == sorted(a["file"] for a in counts["audiences"])
        assert all(name.endswith(suffix) and " " not in name and "'" not in name
                   for name in files)
        for audience in counts["audiences"]:
            path = run / "audiences" / audience["file"]
            opener = gzip.open if suffix.endswith(".gz") else open
            with opener(path, "rt") as handle:
                lines = handle.read().splitlines()
            assert lines[0] == "customer_id"
            expected = sorted(
                assignments.loc[assignments[by] == audience["segment"], "customer_id"])
            assert lines[1:] == expected  # sorted, one id per line
            assert audience["customers"] == len(expected)
    assert "cant_lose_them.csv.gz" in files or "can't lose them" not in set(
        read(runs["second"], "assignments")["rfm_segment"])


def test_profiles_can_be_grouped_by_each_segmentation(runs: Dict[str, Path]) -> None:
    profiles = json.loads((runs["first"] / "profiles.json").read_text())
    assignments = read(runs["first"], "assignments")
    for by in ("rfm_segment", "value_tier"):
        groups = {g[by]: g for g in profiles["by"][by]}
        sizes = assignments.groupby(by).size().to_dict()
        assert {k: g["customers"] for k, g in groups.items()} == sizes
        revenue = assignments.groupby(by)["monetary"].sum() / assignments["monetary"].sum()
        for key, share in revenue.items():
            assert groups[key]["value_share"] == pytest.approx(share)


def test_score_refuses_another_source_and_existing_output(
    runs: Dict[str, Path], periods: Dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    def error(argv: List[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        return next(x for x in capsys.readouterr().err.splitlines() if x.startswith("error: "))

    assert error(["score", "--model", str(runs["first_output"]), "--source", "avito",
                  "--input", str(periods["second"]), "--output",
                  str(runs["first_output"]) + "-x"]) == (
        f"error: --source avito does not match the run in {runs['first']}, which was fitted "
        "on retail data")
    assert error(["score", "--model", str(runs["first"]), "--input", str(periods["second"]),
                  "--output", str(runs["second_output"])]).endswith(
        "pass --overwrite to replace")
    # A run folder is not an output folder: writing into it is refused, even with --overwrite.
    assert f"error: output {runs['second']} is a run folder of the output " in error(
        ["score", "--model", str(runs["first"]), "--input", str(periods["second"]),
         "--output", str(runs["second"]), "--overwrite"])
