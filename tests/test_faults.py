"""Faults during a run: failed tasks are retried, a vanishing S3 store is one error line, and
every error path releases the cached customer aggregate.

Task failures are injected without any hook in the product: a ``sitecustomize.py`` on the
``PYTHONPATH`` of a ``segmentation`` process (Spark's Python workers inherit it) wraps
``sqlite3.connect`` and ``adbc_driver_sqlite.dbapi.connect``, which the SQLite readers call
inside their Spark tasks (the page decoder for its read lock, SQL through ADBC), so that the
first attempt of partition 0 of each such task set fails. Local mode retries a task
only with a master ``local[N,F]`` (``spark.task.maxFailures`` = F), so these runs are
subprocesses with ``--master local[2,3]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import TEST_S3A_CONF
from outputs import published
from pyspark.sql import SparkSession
from test_s3 import SERVER, free_port, wait_until_up

from segmentation.cli import main

BIN = Path(sys.executable).parent
REGION = "us-east-1"

SITECUSTOMIZE = textwrap.dedent(
    '''
    """Test fault injection: the first attempt of partition 0 of a SQLite-reading task fails."""
    import os

    def _failing(connect):
        def failing_connect(*args, **kwargs):
            from pyspark import TaskContext

            context = TaskContext.get()
            if context is not None and context.partitionId() == 0 and (
                context.attemptNumber() == 0
            ):
                marker = os.path.join(
                    os.environ["FAULT_MARKER_DIR"],
                    f"stage{context.stageId()}-partition0-attempt0-pid{os.getpid()}",
                )
                with open(marker, "w") as handle:
                    handle.write("injected")
                raise OSError("injected fault: first attempt of partition 0")
            return connect(*args, **kwargs)

        return failing_connect

    def _install():
        # Both ways a task opens the database: the page decoder's lock (sqlite3), ADBC's SQL.
        import sqlite3

        from adbc_driver_sqlite import dbapi

        dbapi.connect = _failing(dbapi.connect)
        sqlite3.connect = _failing(sqlite3.connect)

    if os.environ.get("FAULT_MARKER_DIR"):
        _install()
    '''
)


def subprocess_env(**extra: str) -> Dict[str, str]:
    """A fresh ``segmentation`` process's environment (own JVM, this interpreter)."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, **extra}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def injected_env(tmp_path: Path) -> Dict[str, str]:
    """The environment with the fault-injecting ``sitecustomize`` and an empty marker folder."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    markers = tmp_path / "markers"
    markers.mkdir()
    python_path = os.pathsep.join(p for p in (str(hook), os.environ.get("PYTHONPATH")) if p)
    return subprocess_env(PYTHONPATH=python_path, FAULT_MARKER_DIR=str(markers))


def table(folder: Path, key: str) -> pd.DataFrame:
    frame = pq.read_table(str(folder)).to_pandas()
    return frame.sort_values(key, kind="stable").reset_index(drop=True)[sorted(frame.columns)]


@pytest.fixture(scope="module")
def avito_db(tmp_path_factory: Any) -> Path:
    path = tmp_path_factory.mktemp("avito") / "database.sqlite"
    result = subprocess.run(
        [str(BIN / "segmentation"), "generate", "avito", "--users", "200", "--searches", "3000",
         "--format", "sqlite", "--out", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return path


# ------------------------------------------------------------------------------ task retries


@pytest.mark.slow
@pytest.mark.e2e
def test_a_failed_task_attempt_is_retried_and_the_run_is_unchanged(
    spark: SparkSession, avito_db: Path, tmp_path: Path
) -> None:
    """``ingest`` and ``run`` with the first attempt of a SQLite task failing: same results."""
    env = injected_env(tmp_path)
    ingested, segmented = tmp_path / "ingested", tmp_path / "injected-run"
    common = ["--sqlite-partitions", "2", "--master", "local[2,3]"]
    processes = {
        "ingest": subprocess.Popen(
            [str(BIN / "segmentation"), "ingest", "--source", "avito", "--input", str(avito_db),
             "--output", str(ingested), *common],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        "run": subprocess.Popen(
            [str(BIN / "segmentation"), "run", "--source", "avito", "--input", str(avito_db),
             "--output", str(segmented), "--k", "2-3", *common],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
    }
    baseline = tmp_path / "baseline"  # meanwhile, the same run without faults, in this process
    assert main(["run", "--source", "avito", "--input", str(avito_db), "--output",
                 str(baseline), "--k", "2-3", "--sqlite-partitions", "2"]) == 0
    for name, process in processes.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {output.decode()[-4000:]}"
        assert b"injected fault" in output, name  # Spark reported the failed attempt

    markers = sorted(p.name for p in (tmp_path / "markers").iterdir())
    # Both processes failed at least one first attempt (ingest: one per table).
    assert len(markers) >= 3, markers
    assert all("-partition0-attempt0-" in m for m in markers)

    # ingest: every row of both tables, as in the database.
    manifest = json.loads((published(ingested) / "manifest.json").read_text())
    with closing(sqlite3.connect(avito_db)) as con:
        for name, key in (("trainSearchStream", ["SearchID", "AdID", "Position"]),
                          ("SearchInfo", ["SearchID"])):
            expected = pd.read_sql_query(f"SELECT * FROM {name}", con)
            got = pq.read_table(str(published(ingested) / "tables" / name)).to_pandas()
            assert manifest["tables"][name]["rows"] == len(expected) == len(got)
            got = got.sort_values(key).reset_index(drop=True)
            expected = expected.sort_values(key).reset_index(drop=True)
            assert list(got["SearchID"]) == list(expected["SearchID"])
            if name == "SearchInfo":
                assert list(got["UserID"].fillna(-1)) == list(expected["UserID"].fillna(-1))

    # run: features, assignments and profiles identical to the run without faults.
    for entry in ("features", "assignments"):
        pd.testing.assert_frame_equal(table(published(segmented) / entry, "customer_id"),
                                      table(published(baseline) / entry, "customer_id"),
                                      check_exact=True, obj=entry)
    for name in ("profiles.json",):
        assert json.loads((published(segmented) / name).read_text()) == json.loads(
            (published(baseline) / name).read_text())
    rows = [json.loads((published(out) / "manifest.json").read_text())["rows"]
            for out in (segmented, baseline)]
    assert rows[0] == rows[1]


# ------------------------------------------------------------------------------ S3 goes away


class Moto:
    """A moto S3 server on a fixed port (no IAM checks), that can be killed and restarted."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process: Optional[subprocess.Popen[bytes]] = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVER, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_until_up(self.endpoint, self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def keys(self, bucket: str, prefix: str = "") -> List[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[Moto]:
    server = Moto(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


def s3_env(moto: Moto, tmp_path: Path) -> Dict[str, str]:
    env = subprocess_env(
        AWS_ENDPOINT_URL_S3=moto.endpoint, AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test", AWS_REGION=REGION,
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    return env


def conf_flags() -> List[str]:
    return [flag for key, value in TEST_S3A_CONF.items() for flag in ("--conf", f"{key}={value}")]


def seed_bucket(moto: Moto, retail_sample: Path) -> None:
    client = moto.client()
    client.create_bucket(Bucket="segments")
    client.upload_file(str(retail_sample), "segments", "in/sample.csv.gz")


@pytest.mark.slow
@pytest.mark.e2e
def test_s3_store_going_away_mid_write_is_one_error_line(
    moto: Moto, retail_sample: Path, tmp_path: Path
) -> None:
    """Kill the S3 server when the run writes its assignments: one ``error:`` line, exit != 0,
    nothing published; a server back on the same endpoint takes the next run."""
    seed_bucket(moto, retail_sample)
    argv = [str(BIN / "segmentation"), "run", "--source", "retail",
            "--input", "s3://segments/in/sample.csv.gz", "--output", "s3://segments/out",
            "--k", "2", "--master", "local[2]", *conf_flags()]
    env = s3_env(moto, tmp_path)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    lines: List[str] = []
    killed_at = None
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 400
        for raw in process.stderr:
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
            if killed_at is None and "write_assignments ..." in lines[-1]:
                assert "out/LATEST" not in moto.keys("segments", "out/")
                moto.kill()
                killed_at = time.monotonic()
            assert time.monotonic() < deadline, "\n".join(lines[-40:])
        status = process.wait(timeout=300)
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert killed_at is not None, "\n".join(lines[-40:])
    assert status != 0, "\n".join(lines[-40:])
    printed = [line for line in lines if line.strip()]
    last = printed[-1]
    assert last.startswith("error: "), "\n".join(printed[-40:])
    assert [line for line in printed if line.startswith("error: ")] == [last]
    assert "Traceback" not in "\n".join(printed), "\n".join(printed[-60:])
    assert "s3://segments/out" in last and moto.endpoint in last, last
    print(f"after the store went away: {last}")
    assert time.monotonic() - killed_at < 120  # short S3A timeouts: no minutes of retries

    # The store comes back (empty: moto keeps its state in memory) on the same endpoint.
    moto.start()
    seed_bucket(moto, retail_sample)
    assert moto.keys("segments", "out/") == []
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    keys = moto.keys("segments", "out/")
    latest = json.loads(moto.client().get_object(Bucket="segments", Key="out/LATEST")["Body"]
                        .read())
    assert f"out/{latest['path']}/_SUCCESS" in keys
    assert {k.split("/")[2] for k in keys if k.startswith("out/runs/")} == {latest["run_id"]}


# ------------------------------------------------------------------------------ caches


HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
LINES = [
    "489434,85048,LED CANDLE,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom",
    "489435,22350,CAT,10,2009-12-03 09:00:00,2.00,13086.0,United Kingdom",
    "489436,22350,CAT,1,2009-12-05 09:00:00,2.00,13087.0,France",
]


def cache_state(spark: SparkSession) -> Dict[str, Any]:
    """What the session holds cached: persisted RDD ids and the SQL cache's emptiness."""
    jsc = spark.sparkContext._jsc
    return {
        "rdds": sorted(int(i) for i in jsc.getPersistentRDDs().keySet()),
        "sql_cache_empty": bool(spark._jsparkSession.sharedState().cacheManager().isEmpty()),
    }


def latin1_file(path: Path) -> Path:
    text = HEADER + "\n".join(LINES) + "\n"
    path.write_bytes(text.replace("LED CANDLE", "CAFÉ CRÈME").encode("latin-1"))
    return path


def fractional_file(path: Path) -> Path:
    path.write_text(HEADER + "\n".join([LINES[0].replace(",12,", ",1.5,"), *LINES[1:]]) + "\n")
    return path


def one_point_file(path: Path) -> Path:
    lines = [LINES[0].replace("13085.0", f"{13085 + i}") for i in range(3)]
    path.write_text(HEADER + "\n".join(lines) + "\n")
    return path


FAILING_STAGES = {
    # name: (input writer, command, extra flags, text of the error line)
    "reject fraction exceeded": (fractional_file, "run", ["--max-reject-fraction", "0.1"],
                                 "above --max-reject-fraction 0.1: fractional_quantity=1"),
    "encoding stop": (latin1_file, "run", [], "not valid UTF-8"),
    "distinct points stop": (one_point_file, "run", ["--k", "2"],
                             "fewer than 2 distinct points on recency_days, frequency, monetary"),
    "bad --features": (fractional_file, "run", ["--max-reject-fraction", "0.5",
                                                "--features", "recency_days,nope"], "nope"),
    "features stage, reject fraction": (fractional_file, "features",
                                        ["--max-reject-fraction", "0"], "fractional_quantity=1"),
}


@pytest.mark.parametrize("case", sorted(FAILING_STAGES))
def test_failing_stages_release_their_caches(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    write, command, extra, expected = FAILING_STAGES[case]
    path = write(tmp_path / "in.csv")
    before = cache_state(spark)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main([command, "--source", "retail", "--input", str(path), "--output", str(out),
                 *extra]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], errors
    assert cache_state(spark) == before
    assert not (out / "LATEST").exists()


def test_cache_state_sees_a_leak(spark: SparkSession) -> None:
    """The check above can fail: a persisted, materialised DataFrame shows in both counters."""
    before = cache_state(spark)
    frame = spark.range(10).persist()
    try:
        frame.count()
        assert cache_state(spark) != before
    finally:
        frame.unpersist(blocking=True)
    assert cache_state(spark) == before
