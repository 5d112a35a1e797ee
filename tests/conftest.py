"""Shared fixtures: one local SparkSession for the whole test run, and paths to real data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

# Before pyspark.pandas is imported (pyspark.testing imports it): Arrow timestamps as Spark does.
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

from pyspark.sql import SparkSession

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RETAIL_2009_2010 = SHARED_DATA / "online_retail_II_2009-2010.csv.gz"
RETAIL_SAMPLE = SHARED_DATA / "online_retail_II_sample.csv.gz"


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A ``local[2]`` session: few shuffle partitions, no UI, UTC, workers on this interpreter."""
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("segmentation-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.sql.legacy.timeParserPolicy", "CORRECTED")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def retail_full() -> Path:
    """UCI Online Retail II, sheet 2009-2010, complete (real data, see ../shared/data/README.md)."""
    assert RETAIL_2009_2010.exists(), f"real data missing: {RETAIL_2009_2010}"
    return RETAIL_2009_2010


@pytest.fixture(scope="session")
def retail_sample() -> Path:
    """A 262-customer sample of UCI Online Retail II, both sheets (real data)."""
    assert RETAIL_SAMPLE.exists(), f"real data missing: {RETAIL_SAMPLE}"
    return RETAIL_SAMPLE
