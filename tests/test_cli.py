"""The command line as users run it: --help, spark-submit of jobs/, the events source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from outputs import published
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation.cli import format_profiles, main
from segmentation.parser import build_parser, parse_k

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", ["ingest", "features", "cluster", "run"])
def test_every_flag_is_documented(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings} has no help"
        for flag in action.option_strings:
            assert flag in text


def test_parse_k() -> None:
    assert parse_k("4") == (4,)
    assert parse_k("2-5") == (2, 3, 4, 5)
    assert parse_k("2-3,8,3") == (2, 3, 8)


def test_format_profiles_table() -> None:
    table = format_profiles(
        [
            {"cluster": 0, "segment": "champions", "customers": 1200, "customer_share": 0.6,
             "value_share": 0.9, "mean_recency_days": 3.25, "mean_frequency": 12.0},
            {"cluster": 1, "segment": "hibernating", "customers": 800, "customer_share": 0.4,
             "value_share": 0.1, "mean_recency_days": 200.0, "mean_frequency": 1.5},
        ],
        ["recency_days", "frequency"],
    )
    assert table.splitlines() == [
        "cluster  segment      customers  share  value share  mean recency_days  mean frequency",
        "0        champions        1,200  60.0%        90.0%                3.2            12.0",
        "1        hibernating        800  40.0%        10.0%              200.0             1.5",
    ]


def test_events_source_with_column_mapping(spark: SparkSession, tmp_path: Path) -> None:
    log = tmp_path / "orders.tsv"
    rows = ["user\twhen\torder\ttotal"]
    for user in range(12):
        for order in range(1 + user % 4):
            rows.append(f"u{user}\t2024-03-{1 + order + user % 9:02d} 10:00:00\to{user}-{order}"
                        f"\t{10.0 * (1 + user % 3):.2f}")
    log.write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    lent = {k: spark.conf.get(k, None)
            for k in ("spark.sql.shuffle.partitions", "spark.sql.files.minPartitionNum")}
    assert main(["run", "--source", "events", "--input", str(log), "--output", str(out),
                 "--customer-col", "user", "--timestamp-col", "when", "--session-col", "order",
                 "--amount-col", "total", "--k", "2-3"]) == 0
    # The job sized partitions and splits for itself, then gave the lent session back as it was.
    assert {k: spark.conf.get(k, None) for k in lent} == lent
    features = spark.read.parquet(str(published(out) / "features")).filter("customer_id = 'u7'")
    # u7: orders o7-0..o7-3 on 2024-03-08..11, 20.00 each; 03-11 is the latest event of all,
    # so the reference date is 2024-03-12.
    assertDataFrameEqual(
        features.select("recency_days", "frequency", "monetary", "events"),
        spark.createDataFrame([(1, 4, 80.0, 4)],
                              "recency_days int, frequency long, monetary double, events long"),
    )
    manifest = json.loads((published(out) / "manifest.json").read_text())
    assert manifest["source"] == "events"
    assert manifest["clustering"]["feature_columns"] == ["recency_days", "frequency", "monetary"]


@pytest.mark.e2e
def test_spark_submit_runs_the_job_script(retail_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run(
        [str(BIN / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         str(REPO / "jobs" / "run.py"), "--source", "retail", "--input", str(retail_sample),
         "--output", str(out), "--k", "3", "--max-iter", "5"],
        capture_output=True, text=True, env=env, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (published(out) / "_SUCCESS").exists()
    # spark-submit merges the Python driver's stderr (progress logging) into stdout.
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("cluster  segment"))
    assert [line.split()[0] for line in lines[start + 1:start + 4]] == ["0", "1", "2"]
    manifest = json.loads((published(out) / "manifest.json").read_text())
    assert manifest["clustering"]["selection"] == "fixed"
    assert manifest["customers"]["kept"] == 254  # = the DuckDB oracle of test_e2e_retail
    # With the jobs' own session settings (not the test fixture's), outputs are sized to the
    # data: 254 customers are not 200 files, and no Spark progress bar garbles the log.
    assert manifest["shuffle_partitions"] == 2
    for table in ("features", "assignments", "profiles"):
        parts = [p for p in (published(out) / table).iterdir() if p.name.startswith("part-")]
        assert 1 <= len(parts) <= 2, (table, len(parts))
    assert "[Stage " not in done.stdout + done.stderr


@pytest.mark.e2e
@pytest.mark.e2e
def test_a_local_run_logs_without_sparks_start_up_noise(
    retail_sample: Path, tmp_path: Path
) -> None:
    # The JVM that `segmentation` starts reads segmentation/conf/log4j2.properties: Spark's
    # warnings in the product's format, without the lines that say nothing to a local user.
    env = {key: value for key, value in os.environ.items()
           if key not in ("SPARK_CONF_DIR", "SPARK_HOME")}
    done = subprocess.run(
        [str(BIN / "segmentation"), "features", "--source", "retail", "--input",
         str(retail_sample), "--output", str(tmp_path / "out"), "--conf", "spark.ui.enabled=false"],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for noise in ("NativeCodeLoader", "loopback address", "SPARK_LOCAL_IP",
                  "Setting default log level", "To adjust logging level"):
        assert noise not in done.stderr, done.stderr
    assert "INFO segmentation: features finished in" in done.stderr


def test_local_jvms_get_the_products_log_configuration_unless_the_user_has_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pyspark import SparkContext

    from segmentation import session

    monkeypatch.setattr(SparkContext, "_jvm", None)  # as in a fresh `segmentation` process
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.setenv(session.CLASS_ARCHIVE_ENV, "off")
    monkeypatch.delenv("SPARK_CONF_DIR", raising=False)
    monkeypatch.delenv("SPARK_HOME", raising=False)
    big = [f"s3://bucket/{tmp_path.name}.csv"]  # no quick JIT: the log option alone
    option = f"-Dlog4j2.configurationFile={session.LOG_CONFIGURATION}"
    wanted = {"spark.driver.extraJavaOptions": option}
    assert session.local_driver_java_conf(big, None, {}) == wanted
    assert Path(session.LOG_CONFIGURATION).is_file()

    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))  # the user's log4j2.properties wins
    assert session.local_driver_java_conf(big, None, {}) == {}
    monkeypatch.delenv("SPARK_CONF_DIR")
    (tmp_path / "conf").mkdir()
    monkeypatch.setenv("SPARK_HOME", str(tmp_path))  # a Spark installation's conf/ too
    assert session.local_driver_java_conf(big, None, {}) == {}


def test_console_script_bad_input_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "segmentation"), "features", "--source", "retail", "--input",
         str(tmp_path / "missing.csv"), "--output", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: input not found: {tmp_path}/missing.csv"


@pytest.mark.e2e
def test_features_then_cluster_as_two_steps(
    spark: SparkSession, retail_sample: Path, tmp_path: Path
) -> None:
    stage1 = tmp_path / "features-run"
    assert main(["features", "--source", "retail", "--input", str(retail_sample),
                 "--output", str(stage1)]) == 0
    assert sorted(p.name for p in stage1.iterdir()) == ["LATEST", "runs"]
    assert sorted(p.name for p in published(stage1).iterdir()) == [
        "_SUCCESS", "features", "manifest.json", "run.json"]
    stage2 = tmp_path / "segments"
    # --input may be the features folder or the earlier run's output folder holding it
    assert main(["cluster", "--input", str(stage1), "--output", str(stage2), "--k", "2-3",
                 "--features", "recency_days,frequency", "--select", "elbow"]) == 0
    assert sorted(p.name for p in published(stage2).iterdir()) == sorted(
        ["_SUCCESS", "assignments", "k_selection", "k_selection.json", "manifest.json", "model",
         "profiles", "profiles.json", "report", "run.json"]
    )
    # The cluster run describes itself: source and rules from the features run, its own choice
    described = json.loads((published(stage2) / "run.json").read_text())
    assert described["format"] == "segmentation-run/1" and described["command"] == "cluster"
    assert described["source"] == "retail" and described["rules"]["cancellations"] == "net"
    assert described["feature_set"]["cluster_columns"] == ["recency_days", "frequency"]
    assert described["feature_set"]["value_weights"] == {"recency_days": -1.0, "frequency": 1.0}
    assert described["reference_date"] == {"rule": "day_after_latest_event",
                                           "date": "2011-12-10"}
    assert described["clustering"]["k"] in (2, 3)
    assert [s["cluster"] for s in described["segments"]] == list(
        range(described["clustering"]["k"]))
    manifest = json.loads((published(stage2) / "manifest.json").read_text())
    assert manifest["clustering"]["feature_columns"] == ["recency_days", "frequency"]
    assert manifest["clustering"]["selection"] == "elbow"
    assert manifest["customers"]["kept"] == 254
    assignments = spark.read.parquet(str(published(stage2) / "assignments"))
    features = spark.read.parquet(str(published(stage1) / "features"))
    assert assignments.select("customer_id").exceptAll(features.select("customer_id")).count() == 0
    assert assignments.count() == 254


@pytest.mark.e2e
def test_same_seed_same_segments(spark: SparkSession, retail_sample: Path, tmp_path: Path) -> None:
    outputs = [tmp_path / "first", tmp_path / "second"]
    for out in outputs:
        assert main(["run", "--source", "retail", "--input", str(retail_sample), "--output",
                     str(out), "--k", "2-3", "--seed", "11", "--sample-fraction", "0.7"]) == 0
    first, second = (
        spark.read.parquet(str(published(out) / "assignments")).select(
            "customer_id", "cluster", "segment")
        for out in outputs
    )
    assertDataFrameEqual(first, second)
    assert (published(outputs[0]) / "k_selection.json").read_text() != ""
    runs = [json.loads((published(out) / "k_selection.json").read_text())["results"]
            for out in outputs]
    assert [(r["k"], r["wssse"], r["silhouette"]) for r in runs[0]] == [
        (r["k"], r["wssse"], r["silhouette"]) for r in runs[1]
    ]


def test_preload_imports_in_a_thread_and_leaves_failures_to_the_importer() -> None:
    import sys

    from segmentation.cli import REPORT_LIBRARIES, preload

    name = "json.tool"  # a leaf module this test process has not imported yet
    sys.modules.pop(name, None)
    preload(["segmentation_no_such_module", name]).join(timeout=60)
    assert name in sys.modules
    assert "segmentation_no_such_module" not in sys.modules
    for library in REPORT_LIBRARIES:  # leaves: they never import this package or PySpark
        assert not library.startswith(("segmentation", "pyspark"))


def test_the_console_script_ends_with_the_status_and_flushed_output(tmp_path: Path) -> None:
    # `segmentation` ends its process with os._exit once the command is done: what it printed
    # into pipes (block-buffered) must still arrive, and the status must be main()'s.
    command = [str(BIN / "segmentation"), "generate", "avito", "--users", "10", "--searches",
               "50", "--format", "parquet", "--out", str(tmp_path / "avito")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {tmp_path / 'avito'} (parquet): 10 users, 50 searches")
    assert "generate finished in" in done.stderr  # the log handler was flushed too

    command[command.index("--searches") + 1] = "5"  # fewer searches than users: refused
    failed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1] == (
        "error: searches must be at least users (10) so that every user searches once, got 5"
    )
