"""Every bad input exits 2 with one clear line, and writes nothing."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import List

import pytest
from pyspark.sql import SparkSession

from segmentation.cli import main

HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"


def write_csv(path: Path, lines: List[str], header: str = HEADER) -> Path:
    path.write_text(header + "".join(line + "\n" for line in lines))
    return path


def run_fails(argv: List[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def retail_run(input_path: Path, output: Path, *extra: str) -> List[str]:
    return ["run", "--source", "retail", "--input", str(input_path), "--output", str(output),
            "--k", "2", *extra]


GOOD_LINES = [
    "489434,85048,LED CANDLE,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom",
    "489435,22350,\"CAT, WITH \"\"HAT\"\"\",10,2009-12-03 09:00:00,2.00,13086.0,United Kingdom",
    "489436,22350,CAT,1,2009-12-05 09:00:00,2.00,13087.0,France",
]


def test_missing_path(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = run_fails(retail_run(tmp_path / "nope.csv", tmp_path / "out"), capsys)
    assert line == f"error: input not found: {tmp_path / 'nope.csv'}"
    assert not (tmp_path / "out").exists()


def test_missing_columns(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "x.csv", ["1,2,3"], header="Invoice,Quantity,Price\n")
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert "lacks required column(s) stock_code" in line
    assert "customer_id (any of: Customer ID, CustomerID)" in line
    assert not (tmp_path / "out").exists()


def test_unparseable_dates_then_timestamp_format(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    european = {
        "2009-12-01 07:45:00": "25/12/2009 07:45",
        "2009-12-03 09:00:00": "26/12/2009 09:00",
        "2009-12-05 09:00:00": "27/12/2009 09:00",
    }
    lines = []
    for line in GOOD_LINES:
        for iso, eu in european.items():
            line = line.replace(iso, eu)
        lines.append(line)
    path = write_csv(tmp_path / "eu.csv", lines)
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line.startswith("error: invoice_date: 3 of 3 rows are not dates")
    assert "'25/12/2009 07:45'" in line and "--timestamp-format" in line
    assert not (tmp_path / "out").exists()
    assert main(retail_run(path, tmp_path / "out", "--timestamp-format", "dd/MM/yyyy HH:mm")) == 0
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_nothing_left_after_filtering(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [",".join([*line.split(",")[:-2], "", "UK"]) for line in GOOD_LINES]
    path = tmp_path / "guests.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write(HEADER + "\n".join(lines) + "\n")
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line == (
        f"error: no customers left after cleaning {path}: 3 rows read, dropped "
        "missing_customer_id=3"
    )
    assert not (tmp_path / "out").exists()


def test_output_exists_needs_overwrite(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_csv(tmp_path / "ok.csv", GOOD_LINES)
    out = tmp_path / "out"
    assert main(["features", "--source", "retail", "--input", str(path), "--output", str(out)]) == 0
    before = (out / "manifest.json").read_text()
    line = run_fails(
        ["features", "--source", "retail", "--input", str(path), "--output", str(out)], capsys
    )
    assert line == f"error: output {out} already holds _SUCCESS, features, manifest.json, " \
        "run.json; " \
        "pass --overwrite to replace"
    assert (out / "manifest.json").read_text() == before
    assert main(["features", "--source", "retail", "--input", str(path), "--output", str(out),
                 "--overwrite"]) == 0


def test_too_few_customers_to_cluster(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cached_before = set(spark.sparkContext._jsc.getPersistentRDDs().keySet())
    path = write_csv(tmp_path / "one.csv", GOOD_LINES[:1])
    line = run_fails(retail_run(path, tmp_path / "out"), capsys)
    assert line == "error: 1 customer(s): at least 2 are needed to cluster"
    assert not (tmp_path / "out").exists()
    # the failed run released the customer aggregate it had cached
    assert set(spark.sparkContext._jsc.getPersistentRDDs().keySet()) == cached_before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--source", "retail", "--input", "x", "--output", "y", "--k", "1"],
         "k must be 2 or more"),
        (["run", "--source", "retail", "--input", "x", "--output", "y", "--k", "a-b"],
         "not a k, range or list of k"),
        (["run", "--source", "retail", "--input", "x", "--output", "y",
          "--reference-date", "2010-13-01"], "not a date (YYYY-MM-DD)"),
        (["run", "--source", "retail", "--input", "x", "--output", "y",
          "--sample-fraction", "0"], "must be in (0, 1]"),
        (["run", "--source", "shop", "--input", "x", "--output", "y"], "invalid choice: 'shop'"),
    ],
)
def test_bad_flags_are_usage_errors(
    argv: List[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("features, message", [
    ("recency_days,first_purchase_date",
     "error: --features column(s) must be numeric: first_purchase_date (date)"),
    ("recency_days,customer_id",
     "error: --features names column(s) that are not retail features: customer_id; "),
])
def test_features_flag_checked_before_anything_is_written(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], features: str,
    message: str,
) -> None:
    path = write_csv(tmp_path / "ok.csv", GOOD_LINES)
    out = tmp_path / "out"
    line = run_fails(retail_run(path, out, "--features", features), capsys)
    assert line.startswith(message)
    assert not out.exists()


def test_features_with_missing_values_are_refused(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segmentation.generate import generate_avito

    database = tmp_path / "db"
    generate_avito(str(database), users=40, searches=300, fmt="parquet", seed=3)
    out = tmp_path / "out"
    line = run_fails(["run", "--source", "avito", "--input", str(database), "--output",
                      str(out), "--k", "2", "--features", "recency_days,click_through_rate"],
                     capsys)
    assert line.startswith("error: --features names column(s) with missing values: "
                           "click_through_rate (")
    assert not out.exists()


def test_truncated_gzip_is_one_line_and_releases_the_cache(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    retail_sample: Path,
) -> None:
    cached_before = set(spark.sparkContext._jsc.getPersistentRDDs().keySet())
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(retail_sample.read_bytes()[:200_000])
    out = tmp_path / "out"
    line = run_fails(["features", "--source", "retail", "--input", str(truncated),
                      "--output", str(out)], capsys)
    assert line == (f"error: cannot read {truncated}: a compressed file ends early (truncated "
                    "or corrupt) (Unexpected end of input stream)")
    assert not out.exists()
    # nothing new left cached
    assert set(spark.sparkContext._jsc.getPersistentRDDs().keySet()) == cached_before


def test_truncated_parquet_is_one_line(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "invoices.parquet"
    spark.createDataFrame(
        [("1", "A", "2", "2010-01-01 10:00:00", "1.5", "7")],
        "Invoice string, StockCode string, Quantity string, InvoiceDate string, Price string, "
        "`Customer ID` string",
    ).coalesce(1).write.parquet(str(folder))
    part = next(folder.glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:-40])  # cut the footer short
    line = run_fails(["features", "--source", "retail", "--input", str(folder),
                      "--output", str(tmp_path / "out")], capsys)
    assert line.startswith(f"error: cannot read {folder}: a Parquet file is damaged")
    assert not (tmp_path / "out").exists()
