"""The same input and seed give the same segments: across runs, sessions and shuffle settings.

``segmentation run`` on the real sample three times: in this process on the shared ``local[2]``
session (2 shuffle partitions, AQE off), and in two fresh processes with
``spark.sql.shuffle.partitions`` 1 and 7 (AQE on, the product's defaults). Assignments (every
column), features, ``profiles.json`` and ``k_selection.json`` (timings aside) must be equal,
value for value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pandas as pd
import pyarrow.parquet as pq
import pytest
from outputs import published
from pyspark.sql import SparkSession

from segmentation.cli import main

BIN = Path(sys.executable).parent
RUN_FLAGS = ["--k", "2-4", "--seed", "7"]


def subprocess_env() -> Dict[str, str]:
    """The environment of a fresh ``segmentation`` process (its own JVM, this interpreter)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def start(argv: List[str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``segmentation argv`` with stdout and stderr into ``log``."""
    with log.open("wb") as handle:
        return subprocess.Popen([str(BIN / "segmentation"), *argv], env=subprocess_env(),
                                stdout=handle, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 600) -> None:
    assert process.wait(timeout=timeout) == 0, log.read_text()[-4000:]


def table(folder: Path, key: str = "customer_id") -> pd.DataFrame:
    """A Parquet folder as pandas, rows sorted by ``key``, columns by name."""
    frame = pq.read_table(str(folder)).to_pandas()
    frame = frame.sort_values(key, kind="stable").reset_index(drop=True)
    return frame[sorted(frame.columns)]


def without_timings(value: Any) -> Any:
    """``value`` without the keys that hold seconds (they vary from run to run)."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items()
                if k != "seconds" and not k.startswith("timings")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def results(out: Path) -> Dict[str, Any]:
    run = published(out)
    return {
        "assignments": table(run / "assignments"),
        "features": table(run / "features"),
        "profiles": without_timings(json.loads((run / "profiles.json").read_text())),
        "k_selection": without_timings(json.loads((run / "k_selection.json").read_text())),
        "manifest": json.loads((run / "manifest.json").read_text()),
        "run": json.loads((run / "run.json").read_text()),
    }


@pytest.mark.slow
@pytest.mark.e2e
def test_same_segments_across_sessions_and_shuffle_partitions(
    spark: SparkSession, retail_sample: Path, tmp_path: Path
) -> None:
    """In-process (2 partitions, AQE off) = fresh process with 1 partition = with 7."""
    started = time.monotonic()
    processes = {}
    for partitions in (1, 7):
        out = tmp_path / f"p{partitions}"
        argv = ["run", "--source", "retail", "--input", str(retail_sample), "--output", str(out),
                *RUN_FLAGS, "--master", "local[2]",
                "--conf", f"spark.sql.shuffle.partitions={partitions}"]
        processes[partitions] = (start(argv, tmp_path / f"p{partitions}.log"), out)
    in_process = tmp_path / "in-process"
    assert main(["run", "--source", "retail", "--input", str(retail_sample),
                 "--output", str(in_process), *RUN_FLAGS]) == 0
    for partitions, (process, _) in processes.items():
        finish(process, tmp_path / f"p{partitions}.log")
    print(f"three runs in {time.monotonic() - started:.1f} s")

    reference = results(in_process)
    assert len(reference["assignments"]) == 254
    assert reference["manifest"]["time_zone"] == reference["run"]["time_zone"] == "UTC"
    assert reference["k_selection"]["chosen_k"] == len(reference["profiles"]["segments"])
    for partitions, (_, out) in processes.items():
        other = results(out)
        # The settings really differed: the test compares different physical plans.
        assert other["manifest"]["shuffle_partitions"] == partitions
        assert other["manifest"]["time_zone"] == "UTC"
        for name in ("assignments", "features"):
            pd.testing.assert_frame_equal(other[name], reference[name], check_exact=True,
                                          obj=f"{name} with {partitions} shuffle partition(s)")
        assert other["profiles"] == reference["profiles"], partitions
        assert other["k_selection"] == reference["k_selection"], partitions
        for key in ("reference_date", "rows", "customers", "clustering"):
            assert other["manifest"][key] == reference["manifest"][key], key


@pytest.mark.e2e
def test_same_segments_from_the_cached_layout_as_from_features_read_back(
    spark: SparkSession, retail_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run`` clusters the cached laid-out table above 100,000 customers, else re-reads
    ``features/``: both paths give the same outputs, value for value."""
    from segmentation import pipeline

    argv = ["run", "--source", "retail", "--input", str(retail_sample), *RUN_FLAGS]
    assert main([*argv, "--output", str(tmp_path / "read-back")]) == 0
    monkeypatch.setattr(pipeline, "KEEP_LAID_OUT_ABOVE", 0)
    assert main([*argv, "--output", str(tmp_path / "cached")]) == 0
    read_back, cached = results(tmp_path / "read-back"), results(tmp_path / "cached")
    assert len(cached["assignments"]) == 254
    for name in ("assignments", "features"):
        pd.testing.assert_frame_equal(cached[name], read_back[name], check_exact=True, obj=name)
    assert cached["profiles"] == read_back["profiles"]
    assert cached["k_selection"] == read_back["k_selection"]
    # The cached path writes features/ in the clustering layout: one file per 100,000 customers
    # (the read-back path's files follow the shuffle settings: tests/test_cli.py checks them).
    files = list((published(tmp_path / "cached") / "features").glob("part-*.parquet"))
    assert len(files) == 1, files


TIME_ZONE_LINES = [
    # Evening invoices: in UTC still 2009-12-01 / 12-03, the same local dates in New York.
    "489434,85048,CANDLE,12,2009-12-01 23:45:00,6.95,13085.0,United Kingdom",
    "489435,22350,CAT,10,2009-12-03 22:30:00,2.00,13086.0,United Kingdom",
    "489436,22350,CAT,1,2009-12-05 00:15:00,2.00,13087.0,France",
    "489437,22350,CAT,3,2009-12-05 23:59:59,2.00,13085.0,France",
]


def test_session_time_zone_is_recorded_and_dates_stay_as_written(
    spark: SparkSession, tmp_path: Path
) -> None:
    """``--conf spark.sql.session.timeZone=America/New_York``: recorded, same features as UTC.

    Invoice dates carry no zone: they are read as wall-clock times of the session zone, so the
    dates (and so recency and tenure) are the dates written in the file, whatever the zone.
    """
    path = tmp_path / "in.csv"
    path.write_text("Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,"
                    "Country\n" + "\n".join(TIME_ZONE_LINES) + "\n")
    zoned = tmp_path / "new-york"
    process = start(["features", "--source", "retail", "--input", str(path),
                     "--output", str(zoned), "--master", "local[1]",
                     "--conf", "spark.sql.session.timeZone=America/New_York"],
                    tmp_path / "zoned.log")
    utc = tmp_path / "utc"
    assert main(["features", "--source", "retail", "--input", str(path),
                 "--output", str(utc)]) == 0
    finish(process, tmp_path / "zoned.log")
    for out, zone in ((utc, "UTC"), (zoned, "America/New_York")):
        run = published(out)
        assert json.loads((run / "manifest.json").read_text())["time_zone"] == zone
        assert json.loads((run / "run.json").read_text())["time_zone"] == zone
    # Parquet dates are zone-free; compare them as written.
    expected = table(published(utc) / "features")
    assert list(expected["customer_id"]) == ["13085", "13086", "13087"]
    assert str(expected.loc[0, "last_purchase_date"]) == "2009-12-05"
    assert json.loads((published(utc) / "manifest.json").read_text())["reference_date"] == (
        "2009-12-06")
    pd.testing.assert_frame_equal(table(published(zoned) / "features"), expected,
                                  check_exact=True)
    assert json.loads((published(zoned) / "manifest.json").read_text())["reference_date"] == (
        "2009-12-06")
