"""Outputs are all or nothing: versioned runs, the LATEST pointer, and what a killed run leaves.

A run-making command writes ``OUT/runs/<run_id>/`` and publishes it by replacing ``OUT/LATEST``
last (see :mod:`segmentation.layout`). These tests check the layout's rules on small folders,
then kill a real ``segmentation run`` with SIGKILL in its write stage, on local disk and on S3
(moto), and check that the previous run is still the published one, whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import test_s3
from outputs import pointer, published
from pyspark.sql import DataFrame, SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation import layout as layout_module
from segmentation.cli import main
from segmentation.errors import InputError, OutputExistsError
from segmentation.io import s3, storage
from segmentation.layout import (
    LATEST,
    RUNS,
    OutputLayout,
    check_name,
    literal_frame,
    output_root,
    read_pointer,
    resolve,
    resolve_run,
)
from segmentation.manifest import RunManifest
from segmentation.run_description import find_run_dir

REPO = Path(__file__).resolve().parents[1]
server = test_s3.server  # the moto server of tests/test_s3.py (a module fixture)
BUCKET, RETAIL_KEY = test_s3.BUCKET, test_s3.RETAIL_KEY
BIN = Path(sys.executable).parent


def finished_layout(spark: SparkSession, root: Path, command: str = "features",
                    overwrite: bool = False, **kwargs: Any) -> OutputLayout:
    """Write and publish a tiny run (two JSON entries) with the layout alone."""
    layout = OutputLayout(spark, str(root), command, **kwargs)
    layout.check(overwrite)
    layout.clear()
    layout.write_json("run.json", {"format": "segmentation-run/1", "n": layout.run_id})
    layout.write_json("features/part.json", {"n": 1})
    layout.publish(RunManifest(command, []))
    return layout


def make_run(root: Path, run_id: str, finished: bool = True) -> Path:
    folder = root / RUNS / run_id
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    if finished:
        (folder / "_SUCCESS").write_text("")
    return folder


# ------------------------------------------------------------------------------ the layout


def test_rows_of_the_driver_are_written_with_their_schema(
    spark: SparkSession, tmp_path: Path
) -> None:
    from segmentation.pipeline import K_SELECTION_SCHEMA

    rows = [  # NULLs, an empty array, NaN: every kind of value the k_selection table holds
        (3, 291.6, 0.48, None, 201.2, None, [106, 95, 53], 3, 4.1, True),
        (4, 248.6, float("nan"), 1.07, None, 0.5, [], 4, 4.2, False),
    ]
    expected = spark.createDataFrame(rows, K_SELECTION_SCHEMA)
    built = literal_frame(spark, rows, K_SELECTION_SCHEMA)
    assert built.schema == K_SELECTION_SCHEMA  # nullability included
    assertDataFrameEqual(built, expected)
    assert literal_frame(spark, [], K_SELECTION_SCHEMA).count() == 0
    with pytest.raises(ValueError, match="10 values"):
        literal_frame(spark, [(3, 1.0)], K_SELECTION_SCHEMA)

    layout = OutputLayout(spark, str(tmp_path / "out"), "run")
    layout.check(False)
    layout.clear()
    path = layout.write_rows(rows, K_SELECTION_SCHEMA, "k_selection")
    assert len([p for p in os.listdir(path) if p.endswith(".parquet")]) == 1
    assertDataFrameEqual(spark.read.parquet(path), expected)



def test_a_run_is_written_to_a_new_folder_and_published_last(
    spark: SparkSession, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    first = finished_layout(spark, root)
    assert sorted(p.name for p in root.iterdir()) == [LATEST, RUNS]
    assert pointer(root)["run_id"] == first.run_id
    assert published(root) == Path(first.run_dir)
    assert sorted(p.name for p in published(root).iterdir()) == [
        "_SUCCESS", "features", "manifest.json", "run.json"]
    manifest = json.loads((published(root) / "manifest.json").read_text())
    assert manifest["run"] == {"id": first.run_id, "folder": first.run_dir}

    second = OutputLayout(spark, str(root), "features")
    with pytest.raises(OutputExistsError, match=rf"already holds run {first.run_id}; pass "):
        second.check(overwrite=False)
    second.check(overwrite=True)
    second.clear()
    second.write_json("run.json", {"n": 2})
    # Written but not published: readers still get the first run, whole.
    assert second.run_id > first.run_id and Path(second.run_dir).is_dir()
    assert resolve_run(spark, str(root)) == first.run_dir
    assert resolve(spark, f"{root}/features").path == f"{first.run_dir}/features"
    with pytest.raises(InputError, match=r"is not a finished run \(no _SUCCESS\)"):
        resolve(spark, second.run_dir)
    second.publish(RunManifest("features", []))
    assert resolve_run(spark, str(root)) == second.run_dir
    assert Path(first.run_dir).is_dir()  # kept: the default keeps the run it replaced


def test_outputs_name_the_published_locations(spark: SparkSession, tmp_path: Path) -> None:
    layout = OutputLayout(spark, str(tmp_path / "out") + "/", "run")
    outputs = layout.outputs()
    assert outputs["assignments"] == f"{tmp_path}/out/runs/{layout.run_id}/assignments"
    assert outputs["_SUCCESS"] == f"{tmp_path}/out/runs/{layout.run_id}/_SUCCESS"
    addition = OutputLayout(spark, layout.run_dir, "audiences")
    assert addition.path("audiences").startswith(f"{layout.run_dir}/_staging/audiences-")
    assert addition.outputs() == {
        "audiences": f"{layout.run_dir}/audiences",
        "audiences.manifest.json": f"{layout.run_dir}/audiences.manifest.json",
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"notes.txt": "", "data": None},
         "holds data, notes.txt, which segmentation did not write: choose a new or empty "
         "folder (--overwrite replaces only runs)"),
        ({"_SUCCESS": "", "assignments": None, "manifest.json": ""},
         "holds the outputs of an earlier version of segmentation (_SUCCESS, assignments, "
         "manifest.json) at its top: move them away or choose another --output"),
        ({"runs/backup": None},
         "holds backup under runs/, which segmentation did not write: choose a new or "
         "empty folder"),
    ],
    ids=["foreign", "earlier-version", "foreign-in-runs"],
)
def test_foreign_content_is_refused_even_with_overwrite(
    spark: SparkSession, tmp_path: Path, content: Dict[str, Optional[str]], message: str
) -> None:
    root = tmp_path / "out"
    for name, text in content.items():
        if text is None:
            (root / name).mkdir(parents=True)
        else:
            root.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
    before = sorted(str(p) for p in root.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(OutputExistsError) as refused:
            OutputLayout(spark, str(root), "run").check(overwrite)
        assert str(refused.value) == f"output {root} {message}"
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_a_foreign_output_fails_the_command_with_one_line(
    spark: SparkSession, tmp_path: Path, retail_sample: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "home"
    root.mkdir()
    (root / "thesis.tex").write_text("keep me")
    capsys.readouterr()
    assert main(["features", "--source", "retail", "--input", str(retail_sample),
                 "--output", str(root), "--overwrite"]) == 2
    errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("error: ")]
    assert errors == [
        f"error: output {root} holds thesis.tex, which segmentation did not write: choose a "
        "new or empty folder (--overwrite replaces only runs)"
    ]
    assert [p.name for p in root.iterdir()] == ["thesis.tex"]
    file_output = tmp_path / "file"
    file_output.write_text("x")
    with pytest.raises(OutputExistsError, match="is a file, not a folder"):
        OutputLayout(spark, str(file_output), "run").check(True)


def test_nothing_is_written_outside_the_output_root(spark: SparkSession, tmp_path: Path) -> None:
    for bad in ("..", "../x", "a/../../x", "/etc/passwd", "a//b", ".", "a\\..\\b", "c:x"):
        with pytest.raises(ValueError, match="outside the output folder"):
            check_name(bad)
    assert check_name("report/report.html") == "report/report.html"
    root = tmp_path / "deep" / "out"
    layout = OutputLayout(spark, str(root), "run")
    for name in ("../escaped.json", "..", "report/../../../escaped.json"):
        with pytest.raises(ValueError, match="outside the output folder"):
            layout.write_json(name, {})
    with pytest.raises(ValueError, match="outside the output folder"):
        layout.path("audiences", "..", "..", "x")
    layout.run_id = "../../escaped"  # a run id is generated, and checked where it is used
    with pytest.raises(ValueError, match="not a run id"):
        layout.path("run.json")
    # --output: local paths are normalised; a URI with '..' is refused.
    assert output_root("out/../..") == ".."
    assert output_root(f"{root}/../out/") == str(root)
    with pytest.raises(InputError, match=r"'\.' and '\.\.' are not allowed in a URI"):
        OutputLayout(spark, "s3://bucket/a/../../b", "run")
    # A LATEST that would lead a reader outside runs/ is not followed.
    root.mkdir(parents=True)
    (root / LATEST).write_text(json.dumps({
        "format": "segmentation-latest/1", "run_id": "20260101T000000Z-000000",
        "path": "../../etc"}))
    with pytest.raises(InputError, match="is not a run pointer of this product"):
        read_pointer(spark, str(root))
    assert not list(tmp_path.glob("**/escaped*"))


def test_latest_complete_run_without_the_pointer(spark: SparkSession, tmp_path: Path) -> None:
    root = tmp_path / "out"
    make_run(root, "20260101T000000Z-aaaaaa")
    newest_finished = make_run(root, "20260102T000000Z-aaaaaa")
    make_run(root, "20260103T000000Z-aaaaaa", finished=False)  # killed: never read
    assert resolve_run(spark, str(root)) == str(newest_finished)
    assert find_run_dir(spark, f"{root}/features") == str(newest_finished)
    # A pointer naming a run without _SUCCESS (deleted by hand) is not followed either.
    (root / LATEST).write_text(json.dumps({
        "format": "segmentation-latest/1", "run_id": "20260103T000000Z-aaaaaa",
        "path": "runs/20260103T000000Z-aaaaaa"}))
    assert resolve_run(spark, str(root)) == str(newest_finished)
    with pytest.raises(InputError, match=rf"point at the output folder {root} or"):
        resolve(spark, f"{root}/runs")
    empty = tmp_path / "empty"
    make_run(empty, "20260101T000000Z-aaaaaa", finished=False)
    with pytest.raises(InputError, match="holds no finished run"):
        resolve_run(spark, str(empty))


def test_retention_keeps_the_newest_runs_and_runs_being_written(
    spark: SparkSession, tmp_path: Path
) -> None:
    root = tmp_path / "out"
    for day in ("01", "02", "03"):
        make_run(root, f"202601{day}T000000Z-aaaaaa")
    make_run(root, "20260104T000000Z-aaaaaa", finished=False)  # an older failed run
    layout = finished_layout(spark, root, overwrite=True, keep_runs=2)
    remaining = sorted(p.name for p in (root / RUNS).iterdir())
    assert remaining == ["20260103T000000Z-aaaaaa", layout.run_id]
    again = OutputLayout(spark, str(root), "features", keep_runs=1)
    again.check(overwrite=True)
    again.write_json("run.json", {})
    (root / RUNS / "29990101T000000Z-bbbbbb").mkdir()  # a run started since, being written
    again.publish(RunManifest("features", []))
    assert sorted(p.name for p in (root / RUNS).iterdir()) == [
        again.run_id, "29990101T000000Z-bbbbbb"]
    assert published(root) == Path(again.run_dir)


def test_an_interrupted_addition_never_looks_complete(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = Path(finished_layout(spark, tmp_path / "out").run_dir)

    def add(names: List[str], overwrite: bool) -> OutputLayout:
        layout = OutputLayout(spark, str(run), "audiences")
        layout.check(overwrite)
        layout.clear()
        for name in names:
            layout.write_bytes(f"audiences/{name}.csv", f"customer_id\n{name}\n".encode())
        layout.write_json("audiences/counts.json", {"files": names})
        layout.publish(RunManifest("audiences", []))
        return layout

    add(["a", "b"], overwrite=False)
    assert sorted(p.name for p in (run / "audiences").iterdir()) == [
        "a.csv", "b.csv", "counts.json"]
    assert (run / "audiences.manifest.json").exists() and not (run / "_staging").exists()
    with pytest.raises(OutputExistsError, match=r"already holds audiences, "
                       r"audiences\.manifest\.json; pass --overwrite"):
        add(["c"], overwrite=False)

    moved: List[str] = []
    rename = storage.rename

    def failing_rename(spark: SparkSession, source: str, target: str) -> None:
        if moved:
            raise RuntimeError("killed while publishing")
        moved.append(target)
        rename(spark, source, target)

    monkeypatch.setattr(storage, "rename", failing_rename)
    with pytest.raises(RuntimeError, match="killed while publishing"):
        add(["c", "d"], overwrite=True)
    # Half moved, and no marker: no reader takes the audiences as complete.
    assert not (run / "audiences.manifest.json").exists()
    # The run's own data was never touched.
    assert sorted(p.name for p in run.iterdir()) == [
        "_SUCCESS", "_staging", "audiences", "features", "manifest.json", "run.json"]
    monkeypatch.setattr(storage, "rename", rename)
    add(["c", "d"], overwrite=True)
    assert sorted(p.name for p in (run / "audiences").iterdir()) == [
        "c.csv", "counts.json", "d.csv"]
    assert (run / "audiences.manifest.json").exists() and not (run / "_staging").exists()


# ------------------------------------------------------------------------------ SIGKILL


def run_until_killed(argv: List[str], marker: str = "write_assignments ...",
                     timeout: float = 420) -> str:
    """Start ``segmentation`` with ``argv``, SIGKILL it (driver JVM too) once ``marker`` shows."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    process = subprocess.Popen(
        [str(BIN / "segmentation"), *argv], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True,
    )
    seen: List[str] = []
    deadline = time.monotonic() + timeout
    try:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace")
            seen.append(line)
            if marker in line:
                os.killpg(process.pid, signal.SIGKILL)  # the driver and its JVM, mid-write
                break
            assert time.monotonic() < deadline, "the run did not reach its write stage"
        else:
            raise AssertionError(f"exited with {process.wait()} before {marker!r}: "
                                 f"{''.join(seen)[-3000:]}")
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return "".join(seen)


def assignments(spark: SparkSession, run_dir: str) -> DataFrame:
    return spark.read.parquet(f"{run_dir}/assignments")


def check_killed_rerun_leaves_the_previous_run(
    spark: SparkSession, output: str, input_path: str, list_runs: Any, read_latest: Any
) -> None:
    argv = ["run", "--source", "retail", "--input", input_path, "--output", output,
            "--k", "3-4", "--overwrite"]
    assert main(argv) == 0
    before_pointer = read_latest()
    before_run = resolve_run(spark, output)
    before = assignments(spark, before_run).collect()

    run_until_killed([*argv, "--master", "local[2]"])

    assert read_latest() == before_pointer  # still the published run
    assert resolve_run(spark, output) == before_run
    assertDataFrameEqual(assignments(spark, before_run), before)
    # OUT/assignments, as every reader of this product resolves it: the previous run's.
    assertDataFrameEqual(spark.read.parquet(resolve(spark, f"{output}/assignments").path), before)
    killed = [r for r in list_runs() if r > before_run.rsplit("/", 1)[-1]]
    assert len(killed) == 1, list_runs()  # the killed run's folder, never published
    killed_dir = f"{output}/{RUNS}/{killed[0]}"
    with pytest.raises(InputError, match="is not a finished run"):
        resolve_run(spark, killed_dir)
    for reading in (["audiences", "--run", killed_dir],
                    ["score", "--model", killed_dir, "--input", input_path, "--output",
                     f"{output}-never"]):
        assert main(reading) == 2

    assert main(argv) == 0  # the next run publishes, and removes the killed run's folder
    after = resolve_run(spark, output)
    assert after not in (before_run, killed_dir)
    assert sorted(list_runs()) == sorted([before_run.rsplit("/", 1)[-1],
                                          after.rsplit("/", 1)[-1]])
    assert assignments(spark, after).count() == len(before)


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_during_the_write_stage_on_local_disk(
    spark: SparkSession, tmp_path: Path, retail_sample: Path
) -> None:
    out = tmp_path / "out"
    check_killed_rerun_leaves_the_previous_run(
        spark, str(out), str(retail_sample),
        list_runs=lambda: sorted(p.name for p in (out / RUNS).iterdir()),
        read_latest=lambda: (out / LATEST).read_bytes(),
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_sigkill_during_the_write_stage_on_s3(
    spark: SparkSession, server: Any, retail_sample: Path
) -> None:
    s3.configure_s3(spark)
    prefix = "out/killed"

    def list_runs() -> List[str]:
        return sorted({k[len(f"{prefix}/runs/"):].split("/", 1)[0]
                       for k in server.keys(f"{prefix}/runs/")})

    check_killed_rerun_leaves_the_previous_run(
        spark, f"s3://{BUCKET}/{prefix}", f"s3://{BUCKET}/{RETAIL_KEY}",
        list_runs=list_runs, read_latest=lambda: server.read(f"{prefix}/LATEST"),
    )
    assert server.keys(prefix)[0].startswith(f"{prefix}/{LATEST}")
    assert not [k for k in server.keys(prefix) if not k.startswith(
        (f"{prefix}/{LATEST}", f"{prefix}/{RUNS}/"))]


def test_layout_module_exports_the_names_the_readme_documents() -> None:
    assert layout_module.DEFAULT_KEEP_RUNS == 2
    assert layout_module.RUN_ID.match("20261123T171800Z-3fa2c1")
