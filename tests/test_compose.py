"""docker-compose.yml: no Docker engine here, so check what can be checked without one.

The one-shot `create-bucket` command is run for real, against a local moto S3 server.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterator, List
from urllib.parse import urlparse

import boto3
import pytest
import yaml

from segmentation.parser import build_parser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
COMPOSE: Dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: Dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
PYSPARK = next(d for d in PROJECT["dependencies"] if d.startswith("pyspark=="))
SPARK_VERSION = PYSPARK.split("==")[1]


def submit_command() -> List[str]:
    return list(SERVICES["segmentation"]["command"])


def job_arguments() -> List[str]:
    command = submit_command()
    script = next(i for i, arg in enumerate(command) if arg.endswith(".py"))
    return command[script + 1:]


#: An image reference pinned to bytes: registry/name:tag@sha256:<64 hex>.
PINNED = re.compile(
    r"^[a-z0-9.\-]+(?::[0-9]+)?/[a-z0-9._/\-]+:[A-Za-z0-9._\-]+@sha256:[0-9a-f]{64}$"
)


def test_services() -> None:
    assert set(SERVICES) == {
        "s3", "create-bucket", "spark-master", "spark-worker-1", "spark-worker-2",
        "segmentation",
    }


def test_no_minio_image_and_every_pulled_image_is_pinned() -> None:
    """MinIO's images left Docker Hub (minio/minio, minio/mc) and quay.io: none may come back.
    Every image that is pulled (no build) names its registry, a tag and a digest."""
    for name, service in SERVICES.items():
        image = str(service["image"])
        assert "minio" not in image.lower(), (name, image)
        assert not image.endswith(":latest"), (name, image)
        if "build" in service:  # built here, from the pinned official Spark image
            assert service["image"] == f"segmentation-spark:{SPARK_VERSION}"
        else:
            assert PINNED.match(image), (name, image)
    assert "minio" not in (REPO / "docker-compose.yml").read_text().lower().split(
        "name: segmentation", 1)[1]
    base = re.search(r"^ARG SPARK_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert base is not None and re.fullmatch(r"apache/spark:[0-9][\w.\-]+", base.group(1))


def test_s3_service_is_seaweedfs_mini_with_a_health_check() -> None:
    s3 = SERVICES["s3"]
    assert s3["image"].startswith("ghcr.io/chrislusf/seaweedfs:4.47@sha256:")
    assert s3["command"][0] == "mini"
    assert "-master.telemetry=false" in s3["command"]
    endpoint = urlparse(SERVICES["segmentation"]["environment"]["AWS_ENDPOINT_URL_S3"])
    probe = s3["healthcheck"]["test"]
    assert probe[:2] == ["CMD", "curl"] and probe[-1] == f"http://localhost:{endpoint.port}/healthz"
    assert SERVICES["create-bucket"]["depends_on"]["s3"]["condition"] == "service_healthy"


def test_spark_images_are_the_official_image_at_the_pinned_version() -> None:
    spark_services = ["spark-master", "spark-worker-1", "spark-worker-2", "segmentation"]
    for name in spark_services:
        service = SERVICES[name]
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        base = service["build"]["args"]["SPARK_IMAGE"]
        assert base.startswith(f"apache/spark:{SPARK_VERSION}-"), base
        assert service["image"].endswith(f":{SPARK_VERSION}")
    default = re.search(r"^ARG SPARK_IMAGE=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert default is not None and default.group(1) == base


def test_image_installs_the_runtime_dependencies_of_pyproject() -> None:
    installed = set(re.findall(r'"([A-Za-z0-9_.\-]+[<>=!~][^"]*)"', DOCKERFILE))
    expected = {d for d in PROJECT["dependencies"] if not d.startswith("pyspark")}
    assert installed == expected
    # hadoop-aws must match the Hadoop that Spark 3.5.x ships (3.3.4)
    assert "hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar" in DOCKERFILE


def test_submit_flags_parse_with_the_jobs_own_parser() -> None:
    command = submit_command()
    assert command[0] == "/opt/spark/bin/spark-submit"
    script = next(arg for arg in command if arg.endswith(".py"))
    assert script == "/opt/segmentation/jobs/run.py"
    args = build_parser().parse_args(["run", *job_arguments()])
    assert args.source == "retail"
    assert args.ks == (2, 3, 4, 5, 6)


def test_submit_targets_the_master_and_its_port() -> None:
    command = submit_command()
    master = urlparse(command[command.index("--master") + 1])
    assert master.scheme == "spark" and master.hostname == "spark-master"
    master_command = SERVICES["spark-master"]["command"]
    assert master_command[master_command.index("--port") + 1] == str(master.port)
    assert f"{master.port}:{master.port}" in SERVICES["spark-master"]["ports"]
    for worker in ("spark-worker-1", "spark-worker-2"):
        assert f"spark://spark-master:{master.port}" in SERVICES[worker]["command"]


def test_web_ui_ports_are_published_and_distinct() -> None:
    published = [p.split(":")[0] for s in SERVICES.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published))
    assert {"8080", "8081", "8082", "8333"} <= set(published)


def create_bucket_arguments() -> List[str]:
    """bucket, source file, key prefix: the arguments after create-bucket's script."""
    command = SERVICES["create-bucket"]["command"]
    assert command[:2] == ["python3", "-c"]
    return list(command[3:])


def test_bucket_and_paths_agree() -> None:
    args = build_parser().parse_args(["run", *job_arguments()])
    buckets = {urlparse(args.input).netloc, urlparse(args.output).netloc}
    assert len(buckets) == 1
    bucket, source, prefix = create_bucket_arguments()
    assert bucket == buckets.pop()
    assert source.startswith("/sample/")
    assert f"s3://{bucket}/{prefix}{Path(source).name}" == args.input
    assert (REPO / "data" / "sample" / Path(source).name).exists()
    assert "./data/sample:/sample:ro" in SERVICES["create-bucket"]["volumes"]


def test_s3_endpoint_and_credentials_point_at_the_s3_service() -> None:
    store = SERVICES["s3"]["environment"]
    for name in ("create-bucket", "spark-master", "spark-worker-1", "spark-worker-2",
                 "segmentation"):
        env = SERVICES[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == store["AWS_ACCESS_KEY_ID"]
        assert env["AWS_SECRET_ACCESS_KEY"] == store["AWS_SECRET_ACCESS_KEY"]
        endpoint = urlparse(env["AWS_ENDPOINT_URL_S3"])
        assert endpoint.hostname == "s3"
        assert f"{endpoint.port}:{endpoint.port}" in SERVICES["s3"]["ports"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture()
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (any key pair is accepted)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "moto server exited"
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not answer"
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_create_bucket_command_creates_the_bucket_and_uploads_the_sample(
    s3_endpoint: str
) -> None:
    """The service's own command, with this machine's Python (the image's pyarrow pin), the
    compose environment and the volume's files; twice, as a re-run of `up` would."""
    command = SERVICES["create-bucket"]["command"]
    bucket, source, prefix = create_bucket_arguments()
    local_source = str(REPO / "data" / "sample" / Path(source).name)
    env = {k: str(v) for k, v in SERVICES["create-bucket"]["environment"].items()}
    env["AWS_ENDPOINT_URL_S3"] = s3_endpoint
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-c", command[2], bucket, local_source, prefix],
            capture_output=True, text=True, env=env, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == (
            f"create-bucket: uploaded {local_source} to s3://{bucket}/{prefix}"
            f"{Path(source).name}")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name=env["AWS_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
    keys = [item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"{prefix}{Path(source).name}"]
    body = client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    assert body == Path(local_source).read_bytes()


@pytest.mark.parametrize("dependency", ["create-bucket", "spark-worker-1", "spark-worker-2"])
def test_submit_waits_for_the_bucket_and_the_workers(dependency: str) -> None:
    assert dependency in SERVICES["segmentation"]["depends_on"]
    assert SERVICES["segmentation"]["depends_on"]["create-bucket"]["condition"] == (
        "service_completed_successfully"
    )
