"""Shared fixtures: one local SparkSession for the whole test run, and paths to real data."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional

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
    global _JVM_PID
    _JVM_PID = int(session.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    yield session
    session.stop()


# ------------------------------------------------- a hung test says where the JVM is stuck

#: The test session's JVM, once the ``spark`` fixture started it.
_JVM_PID: Optional[int] = None
#: Seconds before pytest-timeout's limit (pyproject.toml) when the JVM's busy threads are dumped.
_DUMP_LEAD_SECONDS = 30


#: Frames of threads that only wait for Python (Py4J's listeners, the gateway's main).
_IDLE_FRAMES = ("waitForCommands", "GatewayServer.run", "PythonGatewayServer$.main")


def _busy_jvm_threads(pid: int) -> str:
    """The Spark task, driver and Py4J threads of the JVM ``pid`` (``jcmd Thread.print``)."""
    dump = subprocess.run(["jcmd", str(pid), "Thread.print"], capture_output=True, text=True,
                          timeout=60, check=False).stdout
    keep: List[str] = []
    for block in dump.split("\n\n"):
        head = block.lstrip().split("\n", 1)[0]
        if any(name in head for name in ("Executor task launch", '"Thread-', '"main"')) and (
            "RUNNABLE" in block
        ) and not any(idle in block for idle in _IDLE_FRAMES):
            keep.append("\n".join(block.strip().split("\n")[:30]))
    return "\n\n".join(keep) or dump


@pytest.fixture(autouse=True)
def _dump_jvm_before_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shortly before pytest-timeout ends a hung test, print where the JVM's threads are.

    pytest-timeout (``timeout_method = "thread"``) then prints the Python stacks and ends the
    run: a hang fails CI in minutes, saying where, instead of timing out every later test.
    """
    limit = float(request.config.getini("timeout") or 0)

    def dump() -> None:
        if _JVM_PID is not None:
            sys.__stderr__.write(
                f"\n== {request.node.nodeid} still running after {limit - _DUMP_LEAD_SECONDS:.0f}"
                f" s; JVM {_JVM_PID} busy threads:\n{_busy_jvm_threads(_JVM_PID)}\n"
            )
            sys.__stderr__.flush()

    timer = threading.Timer(max(limit - _DUMP_LEAD_SECONDS, 1.0), dump) if limit else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    yield
    if timer is not None:
        timer.cancel()


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
