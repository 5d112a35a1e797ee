"""S3 in and out, for real: whole runs against a local S3 server (moto) through hadoop-aws.

The server enforces IAM authentication (an IAM user with an access key made for the run), so the
credentials the jobs pick up from the environment are really checked, and wrong ones really fail.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set

import boto3
import duckdb
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from outputs import published
from pyspark.sql import SparkSession
from pyspark.testing import assertDataFrameEqual

from segmentation.cli import main
from segmentation.generate import generate_avito
from segmentation.io import s3

pytestmark = pytest.mark.e2e

BUCKET = "segments"
RETAIL_KEY = "in/online_retail_II_sample.csv.gz"
AVITO_PREFIX = "avito/"
REGION = "us-east-1"

OUTPUTS = {
    "features", "assignments", "profiles", "profiles.json", "k_selection", "k_selection.json",
    "model", "run.json", "report", "manifest.json", "_SUCCESS",
}
PARQUET_OUTPUTS = ("features", "assignments", "profiles", "k_selection")

# moto checks a request's signature by recomputing it with botocore, which never signs (and so
# drops) the User-Agent header; the AWS SDK for Java v1 under hadoop-aws signs it, as AWS allows.
# The server process therefore keeps User-Agent among the signed headers it recomputes.
SERVER = (
    "import sys, botocore.auth; botocore.auth.SIGNED_HEADERS_BLACKLIST.remove('user-agent'); "
    "from moto.server import main; main(sys.argv[1:])"
)

ADMIN_POLICY = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    uploaded: Set[str]
    avito: Path

    def client(self, access_key: str = "", secret_key: str = "") -> Any:
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=access_key or self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
        )

    def keys(self, prefix: str = "") -> List[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        )
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key: str) -> bytes:
        return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"moto server exited with {process.returncode}"
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"moto server at {url} did not answer within {seconds} s")


def upload_tree(client: Any, folder: Path, prefix: str) -> Set[str]:
    keys = set()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            key = prefix + path.relative_to(folder).as_posix()
            client.upload_file(str(path), BUCKET, key)
            keys.add(key)
    return keys


@pytest.fixture(scope="module")
def server(
    spark: SparkSession, retail_sample: Path, tmp_path_factory: Any
) -> Iterator[S3Server]:
    """moto on a free port with IAM auth on, a bucket with the inputs, and the AWS env set."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_up(endpoint, process)
        # Before authentication is switched on: an IAM user allowed everything, and its key.
        iam = boto3.client("iam", endpoint_url=endpoint, region_name=REGION,
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="segmentation")
        iam.put_user_policy(UserName="segmentation", PolicyName="all", PolicyDocument=ADMIN_POLICY)
        key = iam.create_access_key(UserName="segmentation")["AccessKey"]
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request) as response:
            assert json.load(response)["status"] == "ok"
        avito = tmp_path_factory.mktemp("avito") / "tables"
        generate_avito(str(avito), users=200, searches=2000, fmt="parquet", seed=1)
        s3_server = S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], set(), avito)
        client = s3_server.client()
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(retail_sample), BUCKET, RETAIL_KEY)
        s3_server.uploaded.add(RETAIL_KEY)
        s3_server.uploaded |= upload_tree(client, avito, AVITO_PREFIX)

        with pytest.MonkeyPatch.context() as env:
            for name in ("AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                         "AWS_DEFAULT_REGION"):
                env.delenv(name, raising=False)
            env.setenv("AWS_ENDPOINT_URL_S3", endpoint)
            env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
            env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
            env.setenv("AWS_REGION", REGION)
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path_factory.mktemp("aws") / "none"))
            yield s3_server
    finally:
        process.terminate()
        process.wait(timeout=10)
        s3.configure_s3(spark)  # back to this environment's S3 settings


def run_fails(argv: List[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def top_level_names(keys: List[str], prefix: str) -> Set[str]:
    return {key[len(prefix):].split("/", 1)[0] for key in keys}


def run_prefix(server: S3Server, output: str) -> str:
    """The key prefix of the run ``<output>/LATEST`` names (``out/retail/runs/<run_id>/``)."""
    pointer = json.loads(server.read(f"{output.rstrip('/')}/LATEST"))
    return f"{output.rstrip('/')}/{pointer['path']}/"


# ------------------------------------------------------------------------------ retail


@pytest.fixture(scope="module")
def retail_run(server: S3Server, spark: SparkSession) -> Dict[str, Any]:
    started = time.monotonic()
    status = main(["run", "--source", "retail", "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                   "--output", f"s3://{BUCKET}/out/retail", "--k", "2-3"])
    assert status == 0
    print(f"retail run on S3: {time.monotonic() - started:.1f} s")
    run = run_prefix(server, "out/retail")
    return {"manifest": json.loads(server.read(f"{run}manifest.json")), "run": run}


def test_retail_run_writes_the_output_contract_on_s3(
    server: S3Server, retail_run: Dict[str, Any], retail_sample: Path
) -> None:
    assert top_level_names(server.keys("out/retail/"), "out/retail/") == {"LATEST", "runs"}
    run = retail_run["run"]  # out/retail/runs/<run_id>/
    keys = server.keys(run)
    assert top_level_names(keys, run) == OUTPUTS
    for name in ("profiles.json", "k_selection.json", "manifest.json", "_SUCCESS"):
        assert f"{run}{name}" in keys
    for name in PARQUET_OUTPUTS:
        assert f"{run}{name}/_SUCCESS" in keys
        assert any(k.startswith(f"{run}{name}/part-") and k.endswith(".parquet")
                   for k in keys), name
    assert f"{run}model/metadata/part-00000" in keys
    assert {f"{run}run.json", f"{run}report/report.html",
            f"{run}report/rfm_grid.png"} <= set(keys)
    assert not [k for k in keys if "_temporary" in k or k.endswith(".crc")]
    assert server.read(f"{run}_SUCCESS") == b""

    manifest = retail_run["manifest"]
    assert manifest["inputs"] == [
        {"path": f"s3://{BUCKET}/{RETAIL_KEY}", "format": "auto"}
    ]
    with gzip.open(retail_sample, "rt", encoding="utf-8") as lines:
        data_lines = sum(1 for _ in lines) - 1
    assert manifest["rows"]["read"] == data_lines == 34766
    assert manifest["outputs"]["features"] == f"s3://{BUCKET}/{run}features"
    assert manifest["outputs"]["_SUCCESS"] == f"s3://{BUCKET}/{run}_SUCCESS"

    profiles = json.loads(server.read(f"{run}profiles.json"))
    k_selection = json.loads(server.read(f"{run}k_selection.json"))
    assert [r["k"] for r in k_selection["results"]] == [2, 3]
    chosen = manifest["clustering"]["chosen_k"]
    assert len(profiles["segments"]) == k_selection["chosen_k"] == chosen
    assert sum(s["customers"] for s in profiles["segments"]) == manifest["customers"]["kept"]
    parts = [k for k in keys if k.startswith(f"{run}assignments/part-")]
    assigned = sum(pq.read_table(io.BytesIO(server.read(k))).num_rows for k in parts)
    assert assigned == manifest["customers"]["kept"]


def test_retail_features_on_s3_equal_a_local_run(
    server: S3Server, retail_run: Dict[str, Any], retail_sample: Path, spark: SparkSession,
    tmp_path: Path,
) -> None:
    local = tmp_path / "local"
    assert main(["features", "--source", "retail", "--input", str(retail_sample),
                 "--output", str(local)]) == 0
    from_s3 = spark.read.parquet(f"s3://{BUCKET}/{retail_run['run']}features")
    assert from_s3.count() == retail_run["manifest"]["customers"]["kept"]
    assertDataFrameEqual(from_s3, spark.read.parquet(str(published(local) / "features")))


def test_second_run_refuses_to_overwrite_s3_output(
    server: S3Server, retail_run: Dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = server.keys("out/retail/")
    line = run_fails(["run", "--source", "retail", "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                      "--output", f"s3://{BUCKET}/out/retail/", "--k", "2"], capsys)
    run_id = retail_run["run"].rstrip("/").rsplit("/", 1)[-1]
    assert line == f"error: output s3://{BUCKET}/out/retail/ already holds run {run_id}; " \
        "pass --overwrite to replace"
    assert server.keys("out/retail/") == before


def test_score_audiences_and_compare_on_s3(
    server: S3Server, retail_run: Dict[str, Any], spark: SparkSession,
    capsys: pytest.CaptureFixture[str],
) -> None:
    trained, scored = f"s3://{BUCKET}/out/retail", f"s3://{BUCKET}/out/retail-scored"
    assert main(["score", "--model", trained, "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                 "--output", scored]) == 0
    run = run_prefix(server, "out/retail-scored")
    keys = server.keys(run)
    assert {"assignments", "features", "profiles", "profiles.json", "run.json", "report",
            "manifest.json", "_SUCCESS"} == top_level_names(keys, run)
    # Scoring the training data with its own run reproduces the training assignments.
    columns = ["customer_id", "cluster", "segment", "r_score", "f_score", "m_score",
               "rfm_segment", "value_tier"]
    assertDataFrameEqual(
        spark.read.parquet(f"s3://{BUCKET}/{run}assignments").select(*columns),
        spark.read.parquet(f"s3://{BUCKET}/{retail_run['run']}assignments").select(*columns))

    assert main(["audiences", "--run", scored, "--by", "value_tier"]) == 0
    audience_keys = {k.rsplit("/", 1)[1] for k in server.keys(f"{run}audiences/")}
    counts = json.loads(server.read(f"{run}audiences/counts.json"))
    assert audience_keys == {"counts.json"} | {a["file"] for a in counts["audiences"]}
    assert sum(a["customers"] for a in counts["audiences"]) == 254
    first = counts["audiences"][0]
    lines = server.read(f"{run}audiences/{first['file']}").decode().splitlines()
    assert lines[0] == "customer_id" and len(lines) == first["customers"] + 1

    assert main(["compare", trained, scored]) == 0
    migration = json.loads(server.read(f"{run}migration.json"))
    assert migration["same_segment"] == 254 and migration["new_in_b"] == 0
    assert f"{run}report/migration.png" in server.keys(f"{run}report/")
    assert {f"{run}audiences.manifest.json", f"{run}compare.manifest.json"} <= set(
        server.keys(run))
    assert not server.keys(f"{run}_staging")  # published, staging removed
    # A second audiences run needs --overwrite; nothing changes without it.
    before = server.keys("out/retail-scored/")
    line = run_fails(["audiences", "--run", scored], capsys)
    assert line == f"error: output s3://{BUCKET}/{run.rstrip('/')} already holds audiences, " \
        "audiences.manifest.json; pass --overwrite to replace"
    assert server.keys("out/retail-scored/") == before


# ------------------------------------------------------------------------------ avito


def test_avito_parquet_tables_on_s3(server: S3Server, spark: SparkSession) -> None:
    assert main(["run", "--source", "avito", "--input", f"s3://{BUCKET}/{AVITO_PREFIX}",
                 "--output", f"s3://{BUCKET}/out/avito", "--k", "2-3"]) == 0
    run = run_prefix(server, "out/avito")
    keys = server.keys(run)
    assert top_level_names(keys, run) == OUTPUTS
    manifest = json.loads(server.read(f"{run}manifest.json"))
    assert manifest["inputs"] == [{"path": f"s3://{BUCKET}/{AVITO_PREFIX}", "format": "auto"}]
    assert manifest["rows"]["unit"] == "searches"
    [(searches, in_stream, users)] = duckdb.sql(
        f"""
        SELECT count(*), count(*) FILTER (WHERE in_stream),
               count(DISTINCT UserID) FILTER (WHERE in_stream)
        FROM (SELECT UserID, SearchID IN (SELECT SearchID FROM
                read_parquet('{server.avito}/trainSearchStream/*.parquet')) AS in_stream
              FROM read_parquet('{server.avito}/SearchInfo/*.parquet'))
        """
    ).fetchall()
    assert manifest["rows"]["read"] == searches == 2000
    assert manifest["rows"]["dropped"]["search_not_in_stream"] == searches - in_stream
    assert manifest["customers"]["kept"] == users
    assert manifest["clustering"]["feature_columns"] == ["recency_days", "frequency", "engagement"]


def test_ingest_local_sqlite_to_s3_then_features_from_s3(
    server: S3Server, spark: SparkSession, tmp_path: Path
) -> None:
    database = tmp_path / "database.sqlite"
    generate_avito(str(database), users=150, searches=1500, fmt="sqlite", seed=5)
    tables = f"s3://{BUCKET}/out/ingested"
    assert main(["ingest", "--source", "avito", "--input", str(database),
                 "--output", tables, "--sqlite-partitions", "2"]) == 0
    run = run_prefix(server, "out/ingested")
    assert top_level_names(server.keys(run), run) == {"tables", "manifest.json", "_SUCCESS"}
    manifest = json.loads(server.read(f"{run}manifest.json"))
    with sqlite3.connect(database) as conn:
        for table in ("trainSearchStream", "SearchInfo"):
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert manifest["tables"][table]["rows"] == count
    local = tmp_path / "local-features"
    assert main(["features", "--source", "avito", "--input", str(database),
                 "--output", str(local)]) == 0
    # OUT/tables: the tables of the published ingest run, through OUT/LATEST.
    assert main(["features", "--source", "avito", "--input", f"{tables}/tables",
                 "--output", f"s3://{BUCKET}/out/ingested-features"]) == 0
    features_run = run_prefix(server, "out/ingested-features")
    assertDataFrameEqual(
        spark.read.parquet(f"s3a://{BUCKET}/{features_run}features"),
        spark.read.parquet(str(published(local) / "features")),
    )


# ------------------------------------------------------------------------------ errors


def test_missing_bucket(server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_fails(["run", "--source", "retail", "--input", "s3://no-such-bucket/in.csv.gz",
                      "--output", f"s3://{BUCKET}/out/missing-bucket", "--k", "2"], capsys)
    assert line == (
        "error: S3 bucket no-such-bucket does not exist (or is not visible): "
        "s3://no-such-bucket/in.csv.gz"
    )
    line = run_fails(["run", "--source", "retail", "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                      "--output", "s3a://no-such-bucket/out", "--k", "2"], capsys)
    assert line == (
        "error: S3 bucket no-such-bucket does not exist (or is not visible): "
        "s3a://no-such-bucket/out"
    )
    assert server.keys("out/missing-bucket") == []


def test_missing_key(server: S3Server, capsys: pytest.CaptureFixture[str]) -> None:
    line = run_fails(["run", "--source", "retail", "--input", f"s3://{BUCKET}/in/nope.csv.gz",
                      "--output", f"s3://{BUCKET}/out/missing-key", "--k", "2"], capsys)
    assert line == f"error: input not found: s3://{BUCKET}/in/nope.csv.gz"
    line = run_fails(["run", "--source", "avito", "--input", f"s3://{BUCKET}/no-such-folder/",
                      "--output", f"s3://{BUCKET}/out/missing-key", "--k", "2"], capsys)
    assert line == f"error: input not found: s3://{BUCKET}/no-such-folder/"
    assert server.keys("out/missing-key") == []


@pytest.mark.parametrize(
    ("access_key", "secret_key", "code"),
    [("AKIAIOSFODNN7EXAMPLE", "wrong", "InvalidAccessKeyId"),
     ("", "wrong-secret-for-the-right-key", "SignatureDoesNotMatch")],
    ids=["unknown-access-key", "wrong-secret"],
)
def test_wrong_credentials(
    server: S3Server, access_key: str, secret_key: str, code: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key or server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    with pytest.raises(ClientError) as refused:  # the server really checks them
        server.client(access_key, secret_key).list_objects_v2(Bucket=BUCKET)
    assert refused.value.response["Error"]["Code"] == code
    path = f"s3://{BUCKET}/{RETAIL_KEY}"
    line = run_fails(["run", "--source", "retail", "--input", path,
                      "--output", f"s3://{BUCKET}/out/denied", "--k", "2"], capsys)
    assert line == (
        f"error: access to s3://{BUCKET}/out/denied denied (403 Forbidden): check the AWS "
        "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and their permissions"
    )
    assert server.keys("out/denied") == []


def test_read_only_credentials_fail_at_the_first_write(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    iam = boto3.client("iam", endpoint_url=server.endpoint, region_name=REGION,
                       aws_access_key_id=server.access_key,
                       aws_secret_access_key=server.secret_key)
    iam.create_user(UserName="reader")
    read_only = {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
            "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"],
        }],
    }
    iam.put_user_policy(UserName="reader", PolicyName="read",
                        PolicyDocument=json.dumps(read_only))
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    line = run_fails(["features", "--source", "retail", "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                      "--output", f"s3://{BUCKET}/out/read-only"], capsys)
    assert line.startswith(f"error: access to s3://{BUCKET}/out/read-only/runs/")
    assert "/features denied " in line
    assert server.keys("out/read-only") == []


def test_credentials_from_a_profile(server: S3Server, tmp_path: Path) -> None:
    # A fresh process: the JVM reads AWS_PROFILE and the shared credentials file when it starts.
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[segmentation-test]\naws_access_key_id = {server.access_key}\n"
        f"aws_secret_access_key = {server.secret_key}\n\n"
        f"[wrong]\naws_access_key_id = {server.access_key}\naws_secret_access_key = nope\n"
    )
    env = {**os.environ, "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_CREDENTIAL_PROFILES_FILE",
                 "PYSPARK_GATEWAY_PORT"):
        env.pop(name, None)
    missing = f"s3://{BUCKET}/in/nope.csv.gz"
    lines = {}
    for profile in ("segmentation-test", "wrong"):
        result = subprocess.run(
            [sys.executable, "-m", "segmentation.cli", "run", "--source", "retail",
             "--input", missing, "--output", f"s3://{BUCKET}/out/profile", "--k", "2",
             "--master", "local[1]"],
            env={**env, "AWS_PROFILE": profile}, capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 2, result.stderr[-3000:]
        lines[profile] = [
            line for line in result.stderr.splitlines() if line.startswith("error: ")
        ]
    # Allowed in: the input is simply not there. With the wrong secret: refused at the output.
    assert lines["segmentation-test"] == [f"error: input not found: {missing}"]
    assert lines["wrong"] == [
        f"error: access to s3://{BUCKET}/out/profile denied (403 Forbidden): check the AWS "
        "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and their permissions"
    ]

def test_good_credentials_work_again_after_wrong_ones(
    server: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    # The session's cached S3 filesystem of the wrong keys must not outlive them.
    line = run_fails(["run", "--source", "retail", "--input", f"s3://{BUCKET}/in/nope.csv",
                      "--output", f"s3://{BUCKET}/out/again", "--k", "2"], capsys)
    assert line == f"error: input not found: s3://{BUCKET}/in/nope.csv"


def test_unreachable_endpoint(
    server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", closed)
    started = time.monotonic()
    line = run_fails(["run", "--source", "retail", "--input", f"s3://{BUCKET}/{RETAIL_KEY}",
                      "--output", f"s3://{BUCKET}/out/unreachable", "--k", "2"], capsys)
    assert line == (
        f"error: cannot reach {closed} for s3://{BUCKET}/out/unreachable: Connection refused"
    )
    assert time.monotonic() - started < 30


def test_without_the_jars_s3_paths_fail_with_one_line(server: S3Server, tmp_path: Path) -> None:
    env = {**os.environ, s3.JARS_DIR_ENV: str(tmp_path / "no-jars")}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    result = subprocess.run(
        [sys.executable, "-m", "segmentation.cli", "run", "--source", "retail",
         "--input", f"s3://{BUCKET}/{RETAIL_KEY}", "--output", f"s3://{BUCKET}/out/no-jars",
         "--k", "2", "--master", "local[1]"],
        env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: cannot open s3://{BUCKET}/out/no-jars: S3 support needs the hadoop-aws jars: "
        f"run scripts/setup.sh (it puts them in {tmp_path / 'no-jars'}; SEGMENTATION_JARS_DIR "
        "names another folder), or with spark-submit pass --jars "
        f"{tmp_path / 'no-jars' / 'hadoop-aws-3.3.1.jar'},"
        f"{tmp_path / 'no-jars' / 'aws-java-sdk-bundle-1.11.901.jar'} "
        "(with internet: --packages org.apache.hadoop:hadoop-aws:3.3.4)"
    ]
    assert server.keys("out/no-jars") == []


# ------------------------------------------------------------------------------ last


def test_nothing_written_outside_the_output_prefixes(server: S3Server) -> None:
    keys = server.keys()
    outputs = ("out/retail/", "out/retail-scored/", "out/avito/", "out/ingested/",
               "out/ingested-features/")
    outside = {k for k in keys if not k.startswith(outputs)}
    assert outside == server.uploaded
    assert server.uploaded == {
        RETAIL_KEY, "avito/SearchInfo/part-00000.parquet",
        "avito/trainSearchStream/part-00000.parquet",
    }


# ------------------------------------------------------------------------------ settings


def test_hadoop_settings_from_the_aws_environment() -> None:
    settings = s3.hadoop_settings({
        "AWS_ENDPOINT_URL": "https://minio.example:9000",
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000",
        "AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t",
        "AWS_REGION": "eu-west-1",
    })
    assert settings["fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert settings["fs.s3a.path.style.access"] == "true"
    assert settings["fs.s3a.connection.ssl.enabled"] == "false"
    assert (settings["fs.s3a.access.key"], settings["fs.s3a.secret.key"],
            settings["fs.s3a.session.token"]) == ("AKIA1", "s", "t")
    assert settings["fs.s3.impl"] == settings["fs.s3n.impl"] == s3.S3A_FILESYSTEM
    assert settings["fs.s3a.aws.credentials.provider"] == ",".join(s3.CREDENTIAL_PROVIDERS)

    tls = s3.hadoop_settings({"AWS_ENDPOINT_URL": "https://minio.example:9000"})
    assert tls["fs.s3a.endpoint"] == "https://minio.example:9000"
    assert tls["fs.s3a.connection.ssl.enabled"] == "true"
    assert tls["fs.s3a.access.key"] is None and tls["fs.s3a.secret.key"] is None

    regional = s3.hadoop_settings({"AWS_DEFAULT_REGION": "eu-central-1", "AWS_PROFILE": "x"})
    assert regional["fs.s3a.endpoint"] == "s3.eu-central-1.amazonaws.com"
    assert regional["fs.s3a.path.style.access"] is None
    assert regional["fs.s3a.session.token"] is None
    assert s3.hadoop_settings({"AWS_REGION": "cn-north-1"})["fs.s3a.endpoint"] == (
        "s3.cn-north-1.amazonaws.com.cn"
    )
    assert s3.hadoop_settings({})["fs.s3a.endpoint"] == "s3.amazonaws.com"

    env = {"AWS_SHARED_CREDENTIALS_FILE": "/creds"}
    s3.export_sdk_v1_environment(env)
    assert env["AWS_CREDENTIAL_PROFILES_FILE"] == "/creds"
    env = {"AWS_SHARED_CREDENTIALS_FILE": "/creds", "AWS_CREDENTIAL_PROFILES_FILE": "/mine"}
    s3.export_sdk_v1_environment(env)
    assert env["AWS_CREDENTIAL_PROFILES_FILE"] == "/mine"


def test_session_conf_adds_the_jars_and_keeps_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTATION_ON_EMR", "0")
    jars = s3.bundled_jars()
    assert [Path(j).name for j in jars] == list(s3.JARS)
    assert all(Path(j).is_file() for j in jars)
    conf = s3.session_conf({"spark.jars": "/opt/other.jar",
                            "spark.hadoop.fs.s3.impl": "my.FileSystem"})
    assert conf["spark.jars"] == ",".join(["/opt/other.jar", *jars])
    assert "spark.hadoop.fs.s3.impl" not in conf
    assert conf["spark.hadoop.fs.s3n.impl"] == s3.S3A_FILESYSTEM
    packages = s3.session_conf({"spark.jars.packages": "org.apache.hadoop:hadoop-aws:3.3.4"})
    assert "spark.jars" not in packages
    monkeypatch.setenv("SEGMENTATION_ON_EMR", "1")
    assert s3.session_conf({}) == {}


def test_configure_s3_keeps_user_settings_and_leaves_emr_alone(
    spark: SparkSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    try:
        hadoop_conf.set("fs.s3a.endpoint", "https://user.example")  # a user's choice
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:1")
        s3.configure_s3(spark)
        assert hadoop_conf.get("fs.s3a.endpoint") == "https://user.example"
        assert hadoop_conf.get("fs.s3a.path.style.access") == "true"
        hadoop_conf.unset("fs.s3a.endpoint")
        monkeypatch.setenv("SEGMENTATION_ON_EMR", "1")
        s3.configure_s3(spark)
        assert hadoop_conf.get("fs.s3a.endpoint") is None
    finally:
        monkeypatch.undo()
        hadoop_conf.unset("fs.s3a.endpoint")
        s3.configure_s3(spark)
    assert hadoop_conf.get("fs.s3a.endpoint") == os.environ.get(
        "AWS_ENDPOINT_URL_S3", "s3.amazonaws.com"
    )

