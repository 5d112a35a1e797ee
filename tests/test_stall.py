"""The stall guard: a Spark job that runs far too long is cancelled and becomes an error."""

from __future__ import annotations

import re
import time

import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from segmentation.errors import SegmentationError
from segmentation.segments import stall
from segmentation.segments.stall import StalledJobError, stall_guard


def _sleepy_count(spark: SparkSession, seconds: float) -> int:
    """One job of one task that sleeps ``seconds`` in a Python worker (which a cancel kills)."""
    nap = F.udf(lambda x: time.sleep(seconds) or x, "long")
    return len(spark.range(1, numPartitions=1).select(nap("id").alias("id")).collect())


def test_a_stalled_job_is_cancelled_and_raised(
    spark: SparkSession, caplog: pytest.LogCaptureFixture
) -> None:
    sc = spark.sparkContext
    sc.setJobGroup("outer", "the caller's group")
    started = time.monotonic()
    expected = (r"sleepy block: Spark job \d+ ran \d+ s, longer than its limit of 2 s .*"
                r"cancelled\. try something else")
    with pytest.raises(StalledJobError, match=expected), stall_guard(
        sc, "sleepy block", min_seconds=2.0, hint="try something else"
    ):
        _sleepy_count(spark, 120)
    assert time.monotonic() - started < 60
    # The caller's job group is back, and the session still runs jobs.
    assert sc.getLocalProperty("spark.jobGroup.id") == "outer"
    assert spark.range(10).count() == 10
    sc.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
    sc.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]
    sc.setLocalProperty("spark.job.interruptOnCancel", None)  # type: ignore[arg-type]
    # The log says where the task was: its thread waits for the Python worker's result.
    where = [r.getMessage() for r in caplog.records if r.getMessage().startswith("where the")]
    assert len(where) == 1, caplog.text
    assert re.search(r"\nExecutor task launch worker for task [\d.]+ in stage \d+\.\d+ .*\n"
                     r"    at \S+\(", where[0]), where[0]
    assert "PythonUDFRunner" in where[0], where[0]


def test_jobs_within_their_limit_run_to_the_end(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stall, "POLL_SECONDS", 0.05)
    sc = spark.sparkContext
    # The first job takes ~1 s; the second ~2 s is within factor 5 x 1 s, though over 1.5 s.
    with stall_guard(sc, "two naps", min_seconds=1.5, factor=5.0):
        assert _sleepy_count(spark, 1.0) == 1
        assert _sleepy_count(spark, 2.0) == 1
    assert sc.getLocalProperty("spark.jobGroup.id") is None
    # Errors that are not a stall pass through unchanged.
    with pytest.raises(SegmentationError, match=r"^not a stall$"), stall_guard(
        sc, "failing block", min_seconds=5.0
    ):
        raise SegmentationError("not a stall")


def test_a_stall_is_cancelled_when_its_stack_cannot_be_read(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(*_: object) -> None:
        raise RuntimeError("no stacks")

    monkeypatch.setattr(stall, "task_stacks", unreadable)
    started = time.monotonic()
    with pytest.raises(StalledJobError, match="sleepy block"), stall_guard(
        spark.sparkContext, "sleepy block", min_seconds=2.0
    ):
        _sleepy_count(spark, 120)
    assert time.monotonic() - started < 60
    assert spark.range(10).count() == 10
