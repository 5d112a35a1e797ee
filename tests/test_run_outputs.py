"""The shape of a run: sources, run.json, the output layout, audiences and migration transforms."""

from __future__ import annotations

import datetime as dt
import importlib
import json
from pathlib import Path
from typing import List

import pytest
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation import parser, sources
from segmentation.cli import main
from segmentation.errors import InputError, OutputExistsError
from segmentation.layout import ENTRIES, KNOWN_ENTRIES, OutputLayout
from segmentation.run_description import RunDescription
from segmentation.segments.audiences import audience_names, audience_rows, safe_name
from segmentation.segments.migration import migration
from segmentation.sources import FeatureOptions, get_source
from segmentation.sources.retail import RETAIL_FEATURES

REPO = Path(__file__).resolve().parents[1]


def test_every_source_is_described_once_and_offered_by_the_parser() -> None:
    assert parser.SOURCE_CHOICES == sources.SOURCE_NAMES
    for name in sources.SOURCE_NAMES:
        source = get_source(name)
        assert source.name == name
        feature_set = source.feature_set(FeatureOptions(source=name, input="x"))
        assert feature_set.source == name
        assert set(feature_set.cluster_columns) <= set(feature_set.columns)
        assert set(feature_set.scores.values()) <= set(feature_set.columns)
    with pytest.raises(InputError, match="unknown source 'crm'"):
        get_source("crm")


def test_feature_set_chosen_columns_and_json_round_trip() -> None:
    chosen = RETAIL_FEATURES.with_cluster_columns(["recency_days", "tenure_days"])
    assert chosen.cluster_columns == ("recency_days", "tenure_days")
    assert dict(chosen.value_weights) == {"recency_days": -1.0, "tenure_days": 1.0}
    assert type(chosen).from_dict(json.loads(json.dumps(chosen.to_dict()))) == chosen
    with pytest.raises(InputError, match=r"--features names column.*: customer_name"):
        RETAIL_FEATURES.with_cluster_columns(["recency_days", "customer_name"])


def test_run_description_round_trip_and_foreign_json() -> None:
    options = FeatureOptions(source="retail", input="in.csv", cancellations="drop")
    description = RunDescription(
        command="run", source="retail", rules=options.rules(), feature_set=RETAIL_FEATURES,
        reference_rule="fixed", reference_date=dt.date(2011, 1, 1),
        clustering={"algorithm": "kmeans", "k": 4, "model": "model"},
        segments=[{"cluster": 0, "segment": "champions"}],
    )
    document = json.loads(json.dumps(description.to_dict()))
    assert RunDescription.from_dict(document) == description
    # The saved rules clean a later period the same way.
    again = FeatureOptions.with_rules("retail", document["rules"], "next.csv")
    assert again.cancellations == "drop" and again.input == "next.csv"
    with pytest.raises(InputError, match="not a run description of this product"):
        RunDescription.from_dict({"format": "something-else"}, "x/run.json")


def test_layout_refuses_a_run_of_an_earlier_version_even_with_overwrite(
    spark: SparkSession, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    for name in ("features", "assignments", "audiences", "model"):
        (root / name).mkdir(parents=True)
    for name in ("manifest.json", "_SUCCESS"):
        (root / name).write_text("")
    layout = OutputLayout(spark, str(root), "features")
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError, match=r"holds the outputs of an earlier version "
                           r"of segmentation \(_SUCCESS, assignments, audiences, features, "
                           r"manifest.json, model\) at its top"):
            layout.check(overwrite=overwrite)
    # Nothing was touched; every entry a command writes is one the layout knows.
    assert sorted(p.name for p in root.iterdir()) == [
        "_SUCCESS", "assignments", "audiences", "features", "manifest.json", "model"]
    assert set(ENTRIES["run"]) <= KNOWN_ENTRIES


def test_safe_audience_names() -> None:
    assert safe_name("can't lose them") == "cant_lose_them"
    assert safe_name("at risk 2") == "at_risk_2"
    assert safe_name("Élite / VIP") == "elite_vip"
    assert safe_name("../../etc") == "etc"
    assert safe_name(None) == "unassigned" and safe_name("***") == "unassigned"
    assert audience_names(["high", "low", None]) == {
        "high": "high", "low": "low", None: "unassigned"}
    with pytest.raises(InputError, match="'at risk' and 'at-risk' would both be written"):
        audience_names(["at risk", "at-risk"])


def test_audience_rows_one_partition_per_audience(spark: SparkSession) -> None:
    assignments = spark.createDataFrame(
        [("c3", "at risk"), ("c1", "champions"), ("c2", "at risk"), ("c4", None)],
        "customer_id string, segment string",
    )
    names = audience_names(["at risk", "champions", None])
    rows = assignments.transform(audience_rows("segment", names))
    assertDataFrameEqual(
        rows,
        spark.createDataFrame(
            [("at_risk", "c2"), ("at_risk", "c3"), ("champions", "c1"), ("unassigned", "c4")],
            "audience string, customer_id string",
        ),
    )
    per_partition = rows.rdd.glom().map(lambda part: sorted({r[0] for r in part})).collect()
    assert sorted(a for part in per_partition for a in part) == [
        "at_risk", "champions", "unassigned"]  # no audience split over two partitions


def test_migration_counts_new_and_lost_customers(spark: SparkSession) -> None:
    earlier = spark.createDataFrame(
        [("a", "gold"), ("b", "gold"), ("c", "silver"), ("d", "silver")],
        "customer_id string, segment string",
    )
    later = spark.createDataFrame(
        [("a", "gold"), ("b", "silver"), ("c", "silver"), ("e", "gold")],
        "customer_id string, segment string",
    )
    assertDataFrameEqual(
        later.transform(migration(earlier)),
        spark.createDataFrame(
            [("(new)", "gold", 1, 1.0), ("gold", "gold", 1, 0.5), ("gold", "silver", 1, 0.5),
             ("silver", "(lost)", 1, 0.5), ("silver", "silver", 1, 0.5)],
            "from_segment string, to_segment string, customers long, share double",
        ),
    )


@pytest.mark.parametrize("command", ["score", "audiences", "compare"])
def test_each_job_script_runs_its_command(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = importlib.import_module(f"jobs.{command}")
    seen: List[List[str]] = []
    monkeypatch.setattr(module, "cli_main", lambda argv: seen.append(list(argv)) or 0)
    assert module.main(["--flag"]) == 0
    assert seen == [[command, "--flag"]]


def test_score_refuses_what_is_not_a_finished_run(
    spark: SparkSession, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def error(argv: List[str]) -> str:
        capsys.readouterr()
        assert main(argv) == 2
        lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
        assert len(lines) == 1
        return lines[0]

    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "data.csv").write_text("a\n1\n")
    assert error(["score", "--model", str(folder), "--input", str(folder / "data.csv"),
                  "--output", str(tmp_path / "o")]) == (
        f"error: {folder} has no run.json: not a run of this product, or an unfinished run")
    assert error(["audiences", "--run", str(tmp_path / "missing")]) == (
        f"error: input not found: {tmp_path / 'missing'}")
    assert not (tmp_path / "o").exists()


def test_shuffle_partitions_are_sized_to_the_input_unless_chosen(spark: SparkSession) -> None:
    from segmentation.session import (
        INPUT_BYTES_PER_PARTITION,
        USER_PARTITIONS,
        size_shuffle_partitions,
    )

    before = spark.conf.get("spark.sql.shuffle.partitions")
    try:
        spark.conf.set(USER_PARTITIONS, "false")
        assert size_shuffle_partitions(spark, 1_000) == 2  # the cores of local[2]
        # 11 partitions' worth, rounded up to whole waves of the 2 cores
        assert size_shuffle_partitions(spark, 10 * INPUT_BYTES_PER_PARTITION + 1) == 12
        assert spark.conf.get("spark.sql.shuffle.partitions") == "12"
        assert size_shuffle_partitions(spark, 9 * INPUT_BYTES_PER_PARTITION + 1) == 10
        assert size_shuffle_partitions(spark, 10**15) == 2_000
        spark.conf.set("spark.sql.shuffle.partitions", "7")
        spark.conf.set(USER_PARTITIONS, "true")  # --conf spark.sql.shuffle.partitions=7
        assert size_shuffle_partitions(spark, 10 * INPUT_BYTES_PER_PARTITION) == 7
    finally:
        spark.conf.unset(USER_PARTITIONS)
        spark.conf.set("spark.sql.shuffle.partitions", before)
