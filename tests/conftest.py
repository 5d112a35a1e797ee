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

from segmentation.io import s3

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
RETAIL_2009_2010 = SHARED_DATA / "online_retail_II_2009-2010.csv.gz"
RETAIL_SAMPLE = SHARED_DATA / "online_retail_II_sample.csv.gz"


#: S3A settings of the test session: fail in seconds, not minutes, when a test server is down or
#: a request is refused (production keeps the S3A defaults: 20 SDK attempts, 7 S3A retries).
TEST_S3A_CONF = {
    "spark.hadoop.fs.s3a.attempts.maximum": "1",
    "spark.hadoop.fs.s3a.retry.limit": "1",
    "spark.hadoop.fs.s3a.retry.interval": "100ms",
    "spark.hadoop.fs.s3a.connection.establish.timeout": "2000",
    "spark.hadoop.fs.s3a.connection.timeout": "10000",
}


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    """A ``local[2]`` session: few shuffle partitions, no UI, UTC, workers on this interpreter.

    It has the S3 jars and scheme mappings of :func:`segmentation.io.s3.session_conf` (what
    ``build_session`` adds), so tests can read and write ``s3://`` on a local test server.
    """
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    builder = SparkSession.builder
    for key, value in {**s3.session_conf(), **TEST_S3A_CONF}.items():
        builder = builder.config(key, value)
    session = (
        builder.master("local[2]")
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
