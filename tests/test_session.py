"""Tests of segmentation.session: the small-input JVM options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark import SparkContext

from segmentation.session import (
    SMALL_INPUT_BYTES,
    SMALL_INPUT_JAVA_OPTIONS,
    quick_start_conf,
)

QUICK = {"spark.driver.extraJavaOptions": SMALL_INPUT_JAVA_OPTIONS}


@pytest.fixture()
def no_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh `segmentation` process: no JVM yet, not under spark-submit."""
    monkeypatch.setattr(SparkContext, "_jvm", None)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)


def test_small_local_inputs_start_the_jvm_with_the_quick_jit(
    no_jvm: None, tmp_path: Path
) -> None:
    small = tmp_path / "small.csv.gz"
    small.write_bytes(b"x" * 1000)
    folder = tmp_path / "tables"
    (folder / "t").mkdir(parents=True)
    (folder / "t" / "part-0.parquet").write_bytes(b"x" * 1000)
    assert quick_start_conf([str(small)], None, {}) == QUICK
    assert quick_start_conf([f"file://{small}", str(folder), None], "local[2]", {}) == QUICK

    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.truncate(SMALL_INPUT_BYTES + 1)
    assert quick_start_conf([str(big)], None, {}) == {}
    assert quick_start_conf([str(small), str(big)], None, {}) == {}
    assert quick_start_conf(["s3://bucket/in.csv"], None, {}) == {}
    assert quick_start_conf([str(tmp_path / "missing.csv")], None, {}) == {}
    assert quick_start_conf([None], None, {}) == {}
    assert quick_start_conf([str(small)], "yarn", {}) == {}
    user = {"spark.driver.extraJavaOptions": "-Xss4m"}
    assert quick_start_conf([str(small)], None, user) == {}


def test_no_jvm_options_once_a_jvm_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.csv"
    small.write_text("a\n")
    monkeypatch.setattr(SparkContext, "_jvm", object())
    assert quick_start_conf([str(small)], None, {}) == {}
    monkeypatch.setattr(SparkContext, "_jvm", None)
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")  # under spark-submit
    assert quick_start_conf([str(small)], None, {}) == {}
