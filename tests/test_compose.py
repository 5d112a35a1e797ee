"""docker-compose.yml: no Docker engine here, so check what can be checked without one."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, Dict, List
from urllib.parse import urlparse

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


def test_services() -> None:
    assert set(SERVICES) == {
        "minio", "create-bucket", "spark-master", "spark-worker-1", "spark-worker-2",
        "segmentation",
    }


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
    assert {"8080", "8081", "8082", "9000", "9001"} <= set(published)


def test_bucket_and_paths_agree() -> None:
    args = build_parser().parse_args(["run", *job_arguments()])
    buckets = {urlparse(args.input).netloc, urlparse(args.output).netloc}
    assert len(buckets) == 1
    bucket = buckets.pop()
    setup = " ".join(SERVICES["create-bucket"]["command"])
    assert f"mc mb --ignore-existing local/{bucket}" in setup
    uploaded = re.search(r"mc cp /sample/(\S+) local/(\S+)", setup)
    assert uploaded is not None
    assert f"s3://{uploaded.group(2)}{uploaded.group(1)}" == args.input
    assert (REPO / "data" / "sample" / uploaded.group(1)).exists()
    assert "./data/sample:/sample:ro" in SERVICES["create-bucket"]["volumes"]


def test_s3_endpoint_and_credentials_point_at_minio() -> None:
    minio = SERVICES["minio"]["environment"]
    for name in ("spark-master", "spark-worker-1", "spark-worker-2", "segmentation"):
        env = SERVICES[name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert env["AWS_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        endpoint = urlparse(env["AWS_ENDPOINT_URL_S3"])
        assert endpoint.hostname == "minio"
        assert f"{endpoint.port}:{endpoint.port}" in SERVICES["minio"]["ports"]


@pytest.mark.parametrize("dependency", ["create-bucket", "spark-worker-1", "spark-worker-2"])
def test_submit_waits_for_the_bucket_and_the_workers(dependency: str) -> None:
    assert dependency in SERVICES["segmentation"]["depends_on"]
    assert SERVICES["segmentation"]["depends_on"]["create-bucket"]["condition"] == (
        "service_completed_successfully"
    )
