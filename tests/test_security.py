"""Security: no credentials leak into outputs, logs or errors; writes stay under ``--output``.

Credentials are fake but distinctive values put in the environment (and once passed as
``--conf``), so that any copy of them in a log line, a manifest, a report, a Parquet file or an
error message is found by a plain byte search. The S3 runs go to a local moto server, so the keys
are really used to sign requests. (Malicious SQLite table and column names are covered by
``tests/test_bad_input.py::test_sqlite_names_come_from_the_catalogue``.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import test_s3
from conftest import TEST_S3A_CONF
from outputs import pointer, published
from pyspark.sql import SparkSession
from test_faults import Moto
from test_s3 import free_port

from segmentation.cli import main

BIN = Path(sys.executable).parent
REGION = "us-east-1"
ACCESS_KEY = "AKIAFAKEQ7SECURITYTST"
SECRET_KEY = "zQ9+secret/ThatMustNeverBeWritten+7xKp2vLmN0wR"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKEsessionTOKENthatMustStayPrivate0123456789"
CONF_SECRET = "confSecret-5f1e9c0b-never-in-a-manifest"
SECRETS = {
    "access key id": ACCESS_KEY, "secret key": SECRET_KEY, "session token": SESSION_TOKEN,
    "secret given as --conf": CONF_SECRET,
}

HEADER = "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country\n"
LINES = [
    "489434,85048,LED CANDLE,12,2009-12-01 07:45:00,6.95,13085.0,United Kingdom",
    "489435,22350,CAT,10,2009-12-03 09:00:00,2.00,13086.0,United Kingdom",
    "489436,22350,CAT,1,2009-12-05 09:00:00,2.00,13087.0,France",
]


def leaks(data: bytes) -> List[str]:
    """Which of the secrets ``data`` holds (also URL- or JSON-escaped)."""
    found = []
    for name, secret in SECRETS.items():
        variants = {secret, secret.replace("/", "%2F").replace("+", "%2B"),
                    secret.replace("/", "\\/")}
        if any(v.encode() in data for v in variants):
            found.append(name)
    return found


def credential_env(tmp_path: Path, endpoint: str) -> Dict[str, str]:
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "AWS_ENDPOINT_URL_S3": endpoint,
           "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "AWS_REGION": REGION,
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials")}
    for name in ("PYSPARK_GATEWAY_PORT", "AWS_ENDPOINT_URL", "AWS_PROFILE",
                 "AWS_DEFAULT_REGION"):
        env.pop(name, None)
    return env


def conf_flags() -> List[str]:
    return [flag for key, value in TEST_S3A_CONF.items() for flag in ("--conf", f"{key}={value}")]


def segmentation(argv: List[str], env: Dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``segmentation argv`` with stdout and stderr together in ``log``."""
    with log.open("wb") as handle:
        return subprocess.Popen([str(BIN / "segmentation"), *argv], env=env, stdout=handle,
                                stderr=subprocess.STDOUT)


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto(free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.mark.slow
@pytest.mark.e2e
def test_no_credentials_in_outputs_or_logs(
    moto: Moto, retail_sample: Path, tmp_path: Path
) -> None:
    """A run to S3 (keys used to sign) and one to local disk: no secret in any byte written."""
    client = moto.client()
    client.create_bucket(Bucket="segments")
    client.upload_file(str(retail_sample), "segments", "in/sample.csv.gz")
    env = credential_env(tmp_path, moto.endpoint)
    common = ["--source", "retail", "--k", "2-3", "--master", "local[2]", *conf_flags()]
    on_s3 = segmentation(["run", "--input", "s3://segments/in/sample.csv.gz",
                          "--output", "s3://segments/out", *common], env, tmp_path / "s3.log")
    local = tmp_path / "local"
    on_disk = segmentation(
        ["run", "--input", str(retail_sample), "--output", str(local), *common,
         # a secret given on the command line must not be copied into the manifest either
         "--conf", f"spark.hadoop.fs.s3a.secret.key={CONF_SECRET}"],
        env, tmp_path / "local.log")
    for process, log in ((on_s3, "s3.log"), (on_disk, "local.log")):
        assert process.wait(timeout=600) == 0, (tmp_path / log).read_text()[-4000:]

    # The S3 run really went through the server with these keys.
    keys = moto.keys("segments", "out/")
    assert "out/LATEST" in keys and any(k.endswith("/report/report.html") for k in keys)
    assert leaks(f"x{ACCESS_KEY}x".encode()) == ["access key id"]  # the search works
    found: Dict[str, List[str]] = {}
    for key in keys:
        data = client.get_object(Bucket="segments", Key=key)["Body"].read()
        if leaks(data):
            found[f"s3://segments/{key}"] = leaks(data)
    files = [p for p in local.rglob("*") if p.is_file()]
    assert any(p.name == "manifest.json" for p in files)
    assert any(p.suffix == ".parquet" for p in files)
    for path in files:
        if leaks(path.read_bytes()):
            found[str(path)] = leaks(path.read_bytes())
    for log in ("s3.log", "local.log"):
        text = (tmp_path / log).read_bytes()
        assert b"published run" in text
        if leaks(text):
            found[log] = leaks(text)
    assert found == {}
    manifest = json.loads((published(local) / "manifest.json").read_text())
    assert "spark.hadoop.fs.s3a.secret.key=*********(redacted)" in manifest["arguments"]
    assert "spark.hadoop.fs.s3a.attempts.maximum=1" in manifest["arguments"]  # others kept


server = test_s3.server  # the moto server of tests/test_s3.py, which checks credentials


@pytest.mark.e2e
def test_refused_or_unreachable_s3_errors_hold_no_credentials(
    server: test_s3.S3Server, tmp_path: Path
) -> None:
    """Keys the server does not know, then an endpoint nobody listens on: one line, no secret."""
    endpoint, input_uri = server.endpoint, f"s3://{test_s3.BUCKET}/{test_s3.RETAIL_KEY}"
    runs = {
        "denied": (endpoint, "access to s3://segments/out/denied denied ("),
        "unreachable": (f"http://127.0.0.1:{free_port()}", "cannot reach http://127.0.0.1:"),
    }
    processes = {}
    for name, (url, _) in runs.items():
        processes[name] = segmentation(
            ["run", "--source", "retail", "--input", input_uri, "--output",
             f"s3://segments/out/{name}", "--k", "2", "--master", "local[1]", *conf_flags()],
            credential_env(tmp_path, url), tmp_path / f"{name}.log")
    for name, process in processes.items():
        assert process.wait(timeout=300) == 2, (tmp_path / f"{name}.log").read_text()[-4000:]
        text = (tmp_path / f"{name}.log").read_bytes()
        errors = [line for line in text.decode().splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(f"error: {runs[name][1]}"), errors
        assert leaks(text) == [], name


def test_emr_dry_run_prints_no_credentials(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)
    capsys.readouterr()
    assert main(["emr", "submit", "--code-uri", "s3://bucket/code/", "--log-uri",
                 "s3://bucket/logs/", "--dry-run", "--", "run", "--source", "retail",
                 "--input", "s3://bucket/in/retail.csv.gz", "--output", "s3://bucket/out/"]) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "RunJobFlow" in printed or "Steps" in printed, printed[:2000]
    assert leaks(printed.encode()) == []


# ------------------------------------------------------------------------------ paths


def snapshot(folder: Path) -> List[str]:
    """Every path under ``folder`` (symlinks not followed), sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def features(input_path: Path, output: str, *extra: str) -> int:
    return main(["features", "--source", "retail", "--input", str(input_path),
                 "--output", output, *extra])


@pytest.fixture
def tiny_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "in.csv"
    path.write_text(HEADER + "\n".join(LINES) + "\n")
    return path


def test_output_with_dot_dot_segments_writes_only_where_it_resolves(
    spark: SparkSession, tmp_path: Path, tiny_csv: Path
) -> None:
    parent = tmp_path.parent
    before = snapshot(parent)
    # tmp/never/../../<tmp name>/out: "never" is not created, nothing lands beside tmp_path.
    output = f"{tmp_path}/never/../../{tmp_path.name}/out"
    assert features(tiny_csv, output) == 0
    created = sorted(set(snapshot(parent)) - set(before))
    assert created and all(c.startswith(f"{tmp_path.name}/out") for c in created), created
    assert not (tmp_path / "never").exists()
    assert (published(tmp_path / "out") / "features").is_dir()
    manifest = json.loads((published(tmp_path / "out") / "manifest.json").read_text())
    assert all(path.startswith(f"{tmp_path}/out/runs/") for path in manifest["outputs"].values())


def test_symlinked_output_and_latest_do_not_leak_writes(
    spark: SparkSession, tmp_path: Path, tiny_csv: Path
) -> None:
    """``--output`` a symlink: written into its target only. A ``LATEST`` symlinked to a file
    elsewhere is replaced as a link, the file it pointed at is untouched."""
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target, target_is_directory=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    parent = tmp_path.parent
    before = snapshot(parent)
    assert features(tiny_csv, str(link)) == 0
    created = set(snapshot(parent)) - set(before)
    assert created and all(c.startswith(f"{tmp_path.name}/target/") for c in created), created
    assert link.is_symlink()
    first = pointer(link)["run_id"]

    # Someone replaced LATEST by a symlink to a file outside: the next publish must not write
    # through it.
    latest = target / "LATEST"
    document = latest.read_text()
    latest.unlink()
    victim.write_text(document)  # a valid pointer, so the output is still recognised
    latest.symlink_to(victim)
    victim_before = victim.read_bytes()
    before = snapshot(parent)
    assert features(tiny_csv, str(link), "--overwrite") == 0
    created = set(snapshot(parent)) - set(before)
    assert all(c.startswith(f"{tmp_path.name}/target/") for c in created), created
    assert victim.read_bytes() == victim_before
    assert not latest.is_symlink()
    assert pointer(target)["run_id"] != first
