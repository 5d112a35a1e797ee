"""Tests of segmentation.session: the quick-start JVM options (JIT, class-data archive)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from pyspark import SparkContext
from pyspark.sql import SparkSession

from segmentation.session import (
    CLASS_ARCHIVE_ENV,
    FILE_SPLITS_PER_CORE,
    SMALL_INPUT_BYTES,
    SMALL_INPUT_JAVA_OPTIONS,
    class_archive,
    class_archive_key,
    default_class_archive,
    local_driver_java_conf,
    local_driver_memory_conf,
    size_file_splits,
    stale_class_archives,
)

QUICK = {"spark.driver.extraJavaOptions": SMALL_INPUT_JAVA_OPTIONS}


@pytest.fixture()
def no_jvm(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in a fresh `segmentation` process: no JVM yet, not under spark-submit."""
    monkeypatch.setattr(SparkContext, "_jvm", None)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv(CLASS_ARCHIVE_ENV, "off")  # setup.sh may have built one on this machine
    # As for a user with a Spark configuration folder: no log configuration option (its own
    # test is test_local_jvms_get_the_products_log_configuration_unless_the_user_has_one).
    monkeypatch.setenv("SPARK_CONF_DIR", "/etc/spark/conf")


def test_small_local_inputs_start_the_jvm_with_the_quick_jit(
    no_jvm: None, tmp_path: Path
) -> None:
    small = tmp_path / "small.csv.gz"
    small.write_bytes(b"x" * 1000)
    folder = tmp_path / "tables"
    (folder / "t").mkdir(parents=True)
    (folder / "t" / "part-0.parquet").write_bytes(b"x" * 1000)
    assert local_driver_java_conf([str(small)], None, {}) == QUICK
    assert local_driver_java_conf([f"file://{small}", str(folder), None], "local[2]", {}) == QUICK

    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:  # sparse: no disk used
        handle.truncate(SMALL_INPUT_BYTES + 1)
    assert local_driver_java_conf([str(big)], None, {}) == {}
    assert local_driver_java_conf([str(small), str(big)], None, {}) == {}
    assert local_driver_java_conf(["s3://bucket/in.csv"], None, {}) == {}
    assert local_driver_java_conf([str(tmp_path / "missing.csv")], None, {}) == {}
    assert local_driver_java_conf([None], None, {}) == {}
    assert local_driver_java_conf([str(small)], "yarn", {}) == {}
    user = {"spark.driver.extraJavaOptions": "-Xss4m"}
    assert local_driver_java_conf([str(small)], None, user) == {}


def test_local_jvms_get_a_driver_heap_unless_chosen(
    no_jvm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segmentation.session as session

    monkeypatch.delenv("SPARK_DRIVER_MEMORY", raising=False)
    monkeypatch.setattr(session, "_physical_memory_mb", lambda: 24 * 1024)
    assert local_driver_memory_conf(None, {}) == {"spark.driver.memory": "2048m"}
    assert local_driver_memory_conf("local[2]", {}) == {"spark.driver.memory": "2048m"}
    monkeypatch.setattr(session, "_physical_memory_mb", lambda: 6 * 1024)  # a quarter of it
    assert local_driver_memory_conf(None, {}) == {"spark.driver.memory": "1536m"}
    monkeypatch.setattr(session, "_physical_memory_mb", lambda: 2 * 1024)  # never below 1 GB
    assert local_driver_memory_conf(None, {}) == {"spark.driver.memory": "1024m"}
    monkeypatch.setattr(session, "_physical_memory_mb", lambda: None)
    assert local_driver_memory_conf(None, {}) == {"spark.driver.memory": "2048m"}

    assert local_driver_memory_conf("yarn", {}) == {}
    assert local_driver_memory_conf(None, {"spark.driver.memory": "8g"}) == {}
    monkeypatch.setenv("SPARK_DRIVER_MEMORY", "3g")
    assert local_driver_memory_conf(None, {}) == {}
    monkeypatch.delenv("SPARK_DRIVER_MEMORY")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")  # under spark-submit: already started
    assert local_driver_memory_conf(None, {}) == {}


def test_no_jvm_options_once_a_jvm_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = tmp_path / "small.csv"
    small.write_text("a\n")
    archive = tmp_path / "classes.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(CLASS_ARCHIVE_ENV, str(archive))
    monkeypatch.setattr(SparkContext, "_jvm", object())
    assert local_driver_java_conf([str(small)], None, {}) == {}
    monkeypatch.setattr(SparkContext, "_jvm", None)
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")  # under spark-submit
    assert local_driver_java_conf([str(small)], None, {}) == {}


def test_class_archive_for_every_local_start_when_present(
    no_jvm: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    small = tmp_path / "small.csv"
    small.write_text("a\n")
    big = tmp_path / "big.csv"
    with open(big, "wb") as handle:
        handle.truncate(SMALL_INPUT_BYTES + 1)
    archive = tmp_path / "cache dir" / "classes.jsa"  # a space: quoted for Spark's splitting
    monkeypatch.setenv(CLASS_ARCHIVE_ENV, str(archive))
    assert class_archive() is None  # not built: nothing to map
    assert local_driver_java_conf([str(big)], None, {}) == {}

    archive.parent.mkdir()
    archive.write_bytes(b"x")
    assert class_archive() == str(archive)
    mapped = f'"-XX:SharedArchiveFile={archive}" -Xlog:cds=off -Xlog:cds+dynamic=off'
    assert local_driver_java_conf([str(big)], None, {}) == {"spark.driver.extraJavaOptions": mapped}
    assert local_driver_java_conf([str(small)], "local[2]", {}) == {
        "spark.driver.extraJavaOptions": f"{mapped} {SMALL_INPUT_JAVA_OPTIONS}"
    }
    assert local_driver_java_conf([str(big)], "yarn", {}) == {}
    user = {"spark.driver.extraJavaOptions": "-Xss4m"}
    assert local_driver_java_conf([str(big)], None, user) == {}

    for off in ("off", "0", ""):
        monkeypatch.setenv(CLASS_ARCHIVE_ENV, off)
        assert class_archive() is None
    monkeypatch.delenv(CLASS_ARCHIVE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_class_archive().startswith(str(tmp_path / "xdg" / "segmentation"))
    assert class_archive() is None


def test_archives_of_gone_or_reinstalled_pysparks_are_stale(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    live = tmp_path / "live" / "pyspark"
    (live / "jars").mkdir(parents=True)
    gone = tmp_path / "gone" / "pyspark"
    (gone / "jars").mkdir(parents=True)

    def archive(name: str, home: Path) -> str:
        path = cache / f"spark-3.5.6-{name}-classes.jsa"
        path.write_bytes(b"x")
        Path(f"{path}.json").write_text(json.dumps(class_archive_key(str(home))))
        return str(path)

    current = archive("live", live)
    removed = archive("gone", gone)
    reinstalled = archive("old", live)
    Path(f"{reinstalled}.json").write_text(
        json.dumps({**class_archive_key(str(live)), "jars_modified_ns": "1"})
    )
    (cache / "spark-3.5.6-legacy-classes.jsa").write_bytes(b"x")  # no key beside it: kept
    (cache / "spark-3.5.6-bad-classes.jsa").write_bytes(b"x")
    (cache / "spark-3.5.6-bad-classes.jsa.json").write_text("{not json")
    shutil.rmtree(gone.parent)
    assert stale_class_archives(str(cache)) == sorted([removed, reinstalled])
    assert current not in stale_class_archives(str(cache))
    assert stale_class_archives(str(tmp_path / "nowhere")) == []


def test_a_started_jvm_maps_the_archive_setup_built(tmp_path: Path) -> None:
    """The archive ``scripts/setup.sh`` built matches this JVM and class path: it is mapped."""
    archive = default_class_archive()
    assert Path(archive).is_file(), f"{archive} missing: run scripts/setup.sh"
    small = tmp_path / "small.csv"
    small.write_text("a\n1\n")
    script = (
        "import sys\n"
        "from pyspark import SparkContext\n"
        "from segmentation.session import build_session, local_driver_java_conf\n"
        "conf = local_driver_java_conf([sys.argv[1]], 'local[1]', {})\n"
        "spark = build_session('archive-check', 'local[1]', conf)\n"
        "assert spark.range(3).count() == 3\n"
        "pid = SparkContext._gateway.proc.pid\n"
        "print('\\n'.join(sorted({line.split()[-1] for line in open(f'/proc/{pid}/maps')\n"
        "                         if line.rstrip().endswith('.jsa')})))\n"
        "spark.stop()\n"
    )
    env = {**os.environ, CLASS_ARCHIVE_ENV: archive}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    mapped = subprocess.run(
        [sys.executable, "-c", script, str(small)], env=env, capture_output=True, text=True,
        timeout=300, check=True,
    ).stdout.split()
    assert archive in mapped


def test_file_splits_sized_to_the_cores_unless_chosen(spark: SparkSession) -> None:
    key = "spark.sql.files.minPartitionNum"
    before = spark.conf.get(key, None)
    try:
        spark.conf.unset(key)
        cores = spark.sparkContext.defaultParallelism
        assert size_file_splits(spark) == FILE_SPLITS_PER_CORE * cores
        assert spark.conf.get(key) == str(FILE_SPLITS_PER_CORE * cores)
        spark.conf.set(key, "3")  # the user's choice is left alone
        assert size_file_splits(spark) is None
        assert spark.conf.get(key) == "3"
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def test_spark_warnings_that_say_nothing_to_users_are_quieted(spark: SparkSession) -> None:
    from segmentation.session import QUIET_SPARK_LOGGERS, _quiet_spark_loggers

    jvm = spark.sparkContext._jvm
    assert jvm is not None

    def levels() -> List[str]:
        get = jvm.org.apache.logging.log4j.LogManager.getLogger
        return [get(name).getLevel().toString() for name in QUIET_SPARK_LOGGERS]

    # What a job's session has: Spark's own warnings on (the test session keeps ERROR).
    for name in QUIET_SPARK_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            name, jvm.org.apache.logging.log4j.Level.WARN
        )
    assert levels() == ["WARN"] * len(QUIET_SPARK_LOGGERS)
    assert "dev.ludovic.netlib" in QUIET_SPARK_LOGGERS  # "Failed to load implementation ..."
    _quiet_spark_loggers(spark)
    assert levels() == ["ERROR"] * len(QUIET_SPARK_LOGGERS)
