"""`segmentation emr`: the requests sent to EMR match emr/, uploads, job flags, waiting, errors.

AWS is moto (`mock_aws`); the requests are captured with botocore's `provide-client-params`
event, i.e. exactly as boto3 validated and sent them. Moto's steps never end by themselves, so
the wait loop's sleep moves them on in moto's backend.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr.models import emr_backends

from segmentation import __version__
from segmentation.cli import main
from segmentation.deploy import emr
from segmentation.parser import ACTIONS_ON_FAILURE, build_parser

REPO = Path(__file__).resolve().parents[1]
EMR_DIR = REPO / "emr"
REGION = "us-east-1"
BUCKET = "seg-bucket"
CODE_URI = f"s3://{BUCKET}/code/"
LOG_URI = f"s3://{BUCKET}/logs/"
RUN_JOB = ["run", "--source", "retail", "--input", f"s3://{BUCKET}/in/retail.csv.gz",
           "--output", f"s3://{BUCKET}/out/retail/", "--k", "2-6"]
CHAIN = [
    "ingest", "--source", "avito", "--input", f"s3://{BUCKET}/in/avito/", "--output",
    f"s3://{BUCKET}/out/avito-tables/", "--",
    "features", "--source", "avito", "--input", f"s3://{BUCKET}/out/avito-tables/tables",
    "--output", f"s3://{BUCKET}/out/avito-features/", "--",
    "cluster", "--input", f"s3://{BUCKET}/out/avito-features/features", "--output",
    f"s3://{BUCKET}/out/avito-segments/", "--k", "3",
]
SUBMIT = ["emr", "submit", "--code-uri", CODE_URI, "--region", REGION, "--poll-seconds", "0"]

Calls = List[Tuple[str, Dict[str, Any]]]


def steps_of(cluster_id: str) -> List[Any]:
    return emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id].steps


@pytest.fixture()
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Calls]:
    """Moto S3 + EMR with the bucket; yields the EMR/S3 requests the code sends."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    calls: Calls = []
    real_session = emr.aws_session

    def capture(params: Dict[str, Any], model: Any, **_: Any) -> None:
        if model.name != "PutObject":
            calls.append((model.name, copy.deepcopy(params)))

    def session(region: Any = None, profile: Any = None) -> Any:
        made = real_session(region, profile)
        made.events.register("provide-client-params.emr.*", capture)
        return made

    monkeypatch.setattr(emr, "aws_session", session)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield calls


def finish_steps(monkeypatch: pytest.MonkeyPatch, final: str = "COMPLETED") -> None:
    """Each sleep of the wait loop moves the first unfinished step on: PENDING, RUNNING, final.

    After a failure the remaining steps are cancelled, as EMR does for TERMINATE_CLUSTER and
    CANCEL_AND_WAIT.
    """

    def advance(_: float) -> None:
        backend = emr_backends[DEFAULT_ACCOUNT_ID][REGION]
        for cluster in backend.clusters.values():
            steps = sorted(cluster.steps, key=lambda s: s.creation_date_time)
            for step in steps:
                if step.state in ("PENDING", "RUNNING"):
                    if step.state == "PENDING":
                        step.state = "RUNNING"
                    else:
                        step.state = final
                        if final != "COMPLETED":
                            for later in steps:
                                if later.state == "PENDING":
                                    later.state = "CANCELLED"
                    break

    monkeypatch.setattr(emr, "_sleep", advance)


def new_cluster() -> str:
    response = boto3.client("emr", region_name=REGION).run_job_flow(
        Name="shared", ReleaseLabel="emr-7.12.0", LogUri="s3n://seg-bucket/shared-logs/",
        Instances={"InstanceGroups": [{"InstanceRole": "MASTER", "InstanceType": "m5.xlarge",
                                       "InstanceCount": 1}],
                   "KeepJobFlowAliveWhenNoSteps": True},
        JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
    )
    return str(response["JobFlowId"])


def code_prefix_of(request: Dict[str, Any]) -> str:
    path = request["BootstrapActions"][0]["ScriptBootstrapAction"]["Path"]
    match = re.fullmatch(
        rf"(s3://{BUCKET}/code/segmentation-{re.escape(__version__)}-[0-9a-f]{{12}}/)bootstrap\.sh",
        path,
    )
    assert match, path
    return match.group(1)


def step_definition(command: str, code_prefix: str, action: str) -> Dict[str, Any]:
    """emr/steps/<command>.json with its placeholders filled by plain text replacement."""
    text = (EMR_DIR / "steps" / f"{command}.json").read_text()
    text = text.replace("${CODE_PREFIX}", code_prefix)
    text = text.replace("${ACTION_ON_FAILURE:-CONTINUE}", action)
    (step,) = json.loads(text)
    return step


def assert_step_matches_definition(step: Dict[str, Any], job: List[str], code_prefix: str,
                                   action: str) -> None:
    definition = step_definition(job[0], code_prefix, action)
    args = definition["HadoopJarStep"]["Args"]
    script = args.index(f"{code_prefix}jobs/{job[0]}.py")
    assert step == {
        "Name": definition["Name"],
        "ActionOnFailure": action,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args[: script + 1] + job[1:]},
    }


# ------------------------------------------------------------------ transient cluster


def test_transient_cluster_request_matches_emr_definitions(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    finish_steps(monkeypatch)
    status = main([*SUBMIT, "--log-uri", LOG_URI, "--set", "SUBNET_ID=subnet-0abc",
                   "--set", "CORE_CAPACITY=4", "--", *RUN_JOB])
    out = capsys.readouterr().out
    assert status == 0, out
    operations = [name for name, _ in aws]
    assert operations[0] == "RunJobFlow"
    assert "AddJobFlowSteps" not in operations
    request = aws[0][1]
    prefix = code_prefix_of(request)

    template = json.loads((EMR_DIR / "cluster.json").read_text())
    assert request["ReleaseLabel"] == template["ReleaseLabel"] == "emr-7.12.0"
    assert request["Name"] == "segmentation"
    assert request["LogUri"] == LOG_URI
    assert request["Applications"] == [{"Name": "Hadoop"}, {"Name": "Spark"}]
    assert request["Configurations"] == template["Configurations"]
    assert request["ServiceRole"] == "EMR_DefaultRole"
    assert request["JobFlowRole"] == "EMR_EC2_DefaultRole"
    assert request["VisibleToAllUsers"] is True
    assert request["Tags"] == [
        {"Key": "project", "Value": "segmentation"},
        {"Key": "segmentation:version", "Value": __version__},
        {"Key": "segmentation:code", "Value": prefix},
    ]
    instances = request["Instances"]
    assert instances["KeepJobFlowAliveWhenNoSteps"] is False
    assert instances["Ec2SubnetIds"] == ["subnet-0abc"]
    assert "Ec2KeyName" not in instances  # optional placeholder left empty: removed
    fleets = {fleet["InstanceFleetType"]: fleet for fleet in instances["InstanceFleets"]}
    assert fleets["MASTER"]["TargetOnDemandCapacity"] == 1
    assert fleets["CORE"]["TargetOnDemandCapacity"] == 4
    assert "TargetSpotCapacity" not in fleets["MASTER"] and "TargetSpotCapacity" not in fleets[
        "CORE"]
    assert fleets["TASK"]["TargetSpotCapacity"] == 2
    assert "TargetOnDemandCapacity" not in fleets["TASK"]
    # Everything else in the template is sent exactly as written.
    for name in ("MASTER", "TASK"):
        expected = next(f for f in template["Instances"]["InstanceFleets"]
                        if f["InstanceFleetType"] == name)
        sent = dict(fleets[name])
        sent.pop("TargetSpotCapacity" if name == "TASK" else "TargetOnDemandCapacity")
        expected = {k: v for k, v in expected.items()
                    if k not in ("TargetSpotCapacity", "TargetOnDemandCapacity")}
        assert sent == expected
    # Without --max-minutes the bootstrap action gets no argument (no guard); without
    # --set IDLE_TIMEOUT_SECONDS there is no auto-termination policy.
    assert request["BootstrapActions"] == [{
        "Name": "python runtime dependencies",
        "ScriptBootstrapAction": {"Path": f"{prefix}bootstrap.sh"},
    }]
    assert "AutoTerminationPolicy" not in request
    assert len(request["Steps"]) == 1
    assert_step_matches_definition(request["Steps"][0], RUN_JOB, prefix, "TERMINATE_CLUSTER")

    # What moto (EMR) recorded.
    client = boto3.client("emr", region_name=REGION)
    clusters = client.list_clusters()["Clusters"]
    assert len(clusters) == 1
    cluster = client.describe_cluster(ClusterId=clusters[0]["Id"])["Cluster"]
    assert (cluster["ReleaseLabel"], cluster["LogUri"]) == ("emr-7.12.0", LOG_URI)
    (step,) = client.list_steps(ClusterId=cluster["Id"])["Steps"]
    assert step["Config"]["Args"] == request["Steps"][0]["HadoopJarStep"]["Args"]
    assert step["Status"]["State"] == "COMPLETED"
    assert out.splitlines() == [
        f"started cluster {cluster['Id']} (terminates after its steps)",
        f"step {step['Id']} (segmentation run) submitted",
        f"step {step['Id']} (segmentation run): COMPLETED, "
        f"logs {LOG_URI}{cluster['Id']}/steps/{step['Id']}/",
    ]


def test_every_uri_the_cluster_reads_is_uploaded(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    finish_steps(monkeypatch)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *CHAIN]) == 0
    request = aws[0][1]
    referenced = {action["ScriptBootstrapAction"]["Path"] for action in request["BootstrapActions"]}
    for step in request["Steps"]:
        args = step["HadoopJarStep"]["Args"]
        data = {args[i + 1] for i, arg in enumerate(args) if arg in ("--input", "--output")}
        referenced |= {arg for arg in args if arg.startswith("s3://") and arg not in data}
    prefix = code_prefix_of(request)
    assert referenced == {
        f"{prefix}bootstrap.sh", f"{prefix}segmentation.zip",
        f"{prefix}jobs/ingest.py", f"{prefix}jobs/features.py", f"{prefix}jobs/cluster.py",
    }
    s3 = boto3.client("s3", region_name=REGION)
    listed = {f"s3://{BUCKET}/{obj['Key']}"
              for obj in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert referenced <= listed
    records = sorted(uri for uri in listed if "/requests/" in uri)
    assert len(records) == 1 and records[0].startswith(f"{prefix}requests/RunJobFlow-")
    record = s3.get_object(Bucket=BUCKET, Key=records[0].split(f"{BUCKET}/", 1)[1])
    assert json.loads(record["Body"].read()) == request
    assert s3.get_object(Bucket=BUCKET, Key=f"{prefix.split(BUCKET + '/', 1)[1]}bootstrap.sh")[
        "Body"].read() == (EMR_DIR / "bootstrap.sh").read_bytes()

    # The zip is the package, importable from --py-files alone (zipimport, no install).
    archive = tmp_path / "segmentation.zip"
    archive.write_bytes(s3.get_object(
        Bucket=BUCKET, Key=f"{prefix.split(BUCKET + '/', 1)[1]}segmentation.zip")["Body"].read())
    names = zipfile.ZipFile(archive).namelist()
    assert "segmentation/__init__.py" in names and "segmentation/cli.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import segmentation.cli as c; "
             "print(c.__file__); c.build_parser().parse_args(sys.argv[2:])")
    result = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(archive), *RUN_JOB],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )
    assert result.stdout.strip() == str(archive / "segmentation" / "cli.py")


def test_step_arguments_parse_with_the_jobs_parser(
    aws: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_steps(monkeypatch)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *CHAIN]) == 0
    request = aws[0][1]
    prefix = code_prefix_of(request)
    jobs = emr.split_jobs(CHAIN)
    assert [emr.job_flags(step) for step in request["Steps"]] == [(j[0], j[1:]) for j in jobs]
    for step, job in zip(request["Steps"], jobs):
        assert_step_matches_definition(step, job, prefix, "TERMINATE_CLUSTER")
        command, flags = emr.job_flags(step)
        args = build_parser().parse_args([command, *flags])
        assert args.command == command
    assert build_parser().parse_args(["cluster", *jobs[2][1:]]).ks == (3,)


@pytest.mark.parametrize("command", emr.JOB_COMMANDS)
def test_step_definition_files_parse(command: str) -> None:
    (step,) = json.loads((EMR_DIR / "steps" / f"{command}.json").read_text())
    assert step["HadoopJarStep"]["Jar"] == "command-runner.jar"
    args = step["HadoopJarStep"]["Args"]
    script = args.index(f"${{CODE_PREFIX}}jobs/{command}.py")
    assert args[:script] == [
        "spark-submit", "--deploy-mode", "cluster", "--master", "yarn",
        "--name", f"segmentation-{command}", "--py-files", "${CODE_PREFIX}segmentation.zip",
    ]
    assert step["ActionOnFailure"] == "${ACTION_ON_FAILURE:-CONTINUE}"
    rendered = emr.render(step, {"CODE_PREFIX": "s3://b/code/v/", "INPUT_URI": "s3://b/in/",
                                 "OUTPUT_URI": "s3://b/out/", "MODEL_URI": "s3://b/model/",
                                 "RUN_URI": "s3://b/run/"})
    name, flags = emr.job_flags(rendered)
    assert name == command
    args_ns = emr.validate_job([name, *flags])  # the jobs' parser plus the EMR checks
    assert args_ns.command == command
    expected = {
        "score": [("--model", "s3://b/model/"), ("--input", "s3://b/in/"),
                  ("--output", "s3://b/out/")],
        "audiences": [("--run", "s3://b/run/")],
        "compare": [("RUN_A", "s3://b/run/"), ("RUN_B", "s3://b/out/")],
    }.get(command, [("--input", "s3://b/in/"), ("--output", "s3://b/out/")])
    assert emr.job_locations(args_ns) == expected


def test_cluster_steps_never_write_to_a_nodes_local_disk() -> None:
    with pytest.raises(emr.EmrError, match=r"step 1 \(run\): --output must be shared storage"):
        emr.validate_job(["run", "--source", "retail", "--input", "s3://b/in/",
                          "--output", "file:///mnt/out/"])
    with pytest.raises(emr.EmrError, match=r"--run must be shared storage"):
        emr.validate_job(["audiences", "--run", "file:///mnt/run/"])


@pytest.mark.parametrize("job", [
    ["score", "--model", "/local/run", "--input", "s3://b/in/", "--output", "s3://b/out/"],
    ["audiences", "--run", "out/run"],
    ["compare", "s3://b/a/", "runs/b"],
])
def test_new_commands_need_cluster_wide_locations(job: List[str]) -> None:
    with pytest.raises(emr.EmrError, match=r"must be a location every node reads"):
        emr.validate_job(job)


# ------------------------------------------------------------------ running cluster, failures


def test_steps_added_to_a_running_cluster(
    aws: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = new_cluster()
    status = main([*SUBMIT, "--cluster-id", cluster_id, "--no-wait", "--", *CHAIN])
    out = capsys.readouterr().out
    assert status == 0
    # The cluster is described first (state, StepConcurrencyLevel), then the steps are added.
    assert [name for name, _ in aws] == ["DescribeCluster", "AddJobFlowSteps"]
    request = aws[1][1]
    assert request["JobFlowId"] == cluster_id
    prefix = request["Steps"][0]["HadoopJarStep"]["Args"][8].rsplit("segmentation.zip", 1)[0]
    for step, job in zip(request["Steps"], emr.split_jobs(CHAIN)):
        # Several steps on a shared cluster: a failure cancels the later ones, not the cluster.
        assert_step_matches_definition(step, job, prefix, "CANCEL_AND_WAIT")
    ids = [step.id for step in sorted(steps_of(cluster_id), key=lambda s: s.creation_date_time)]
    assert out.splitlines() == [
        f"step {ids[0]} (segmentation ingest) submitted",
        f"step {ids[1]} (segmentation features) submitted",
        f"step {ids[2]} (segmentation cluster) submitted",
        f"follow with: segmentation emr status --cluster-id {cluster_id} --wait",
    ]


def test_failed_step_exits_3_with_reason_and_logs(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster_id = new_cluster()
    finish_steps(monkeypatch, final="FAILED")
    log_file = f"s3://{BUCKET}/shared-logs/{cluster_id}/steps/STEP/stderr.gz"

    def failure_details(parsed: Dict[str, Any], **_: Any) -> None:
        status = parsed["Step"]["Status"]
        if status["State"] == "FAILED":
            status["FailureDetails"] = {
                "Reason": "Unknown Error.", "Message": "error: step 1 (run): input missing",
                "LogFile": log_file.replace("s3://", "s3n://"),
            }

    real_session = emr.aws_session

    def session(region: Any = None, profile: Any = None) -> Any:
        made = real_session(region, profile)
        made.events.register("after-call.emr.DescribeStep", failure_details)
        return made

    monkeypatch.setattr(emr, "aws_session", session)
    caplog.set_level("INFO", logger="segmentation")
    status = main([*SUBMIT, "--cluster-id", cluster_id, "--", *RUN_JOB, "--", *RUN_JOB])
    out = capsys.readouterr().out.splitlines()
    assert status == emr.EXIT_STEP_FAILED == 3
    first, second = sorted(steps_of(cluster_id), key=lambda s: s.creation_date_time)
    logs = f"s3://{BUCKET}/shared-logs/{cluster_id}/steps"
    assert out[2:] == [
        f"step {first.id} (segmentation run): FAILED, logs {logs}/{first.id}/",
        "  reason: Unknown Error.",
        "  message: error: step 1 (run): input missing",
        f"  log file: {log_file}",
        f"step {second.id} (segmentation run): CANCELLED, logs {logs}/{second.id}/",
    ]
    progress = [r.getMessage() for r in caplog.records if r.name == "segmentation.deploy.emr"]
    assert all(line.startswith(f"uploaded {CODE_URI}segmentation-") for line in progress[:10])
    assert progress[10:] == [
        f"cluster {cluster_id}: RUNNING",
        f"step {first.id} (segmentation run): RUNNING",
        f"step {second.id} (segmentation run): PENDING",
        f"step {first.id} (segmentation run): FAILED",
        f"step {second.id} (segmentation run): CANCELLED",
    ]

    # status reports the same, and exits 3 for the failed step it was asked about.
    capsys.readouterr()
    status_args = ["emr", "status", "--cluster-id", cluster_id, "--region", REGION]
    assert main([*status_args, "--step-id", first.id]) == 3
    assert capsys.readouterr().out.splitlines() == [
        f"cluster {cluster_id} (shared): RUNNING",
        f"step {first.id} (segmentation run): FAILED, logs {logs}/{first.id}/",
        "  reason: Unknown Error.",
        "  message: error: step 1 (run): input missing",
        f"  log file: {log_file}",
    ]
    assert main(status_args) == 0  # the whole cluster: a listing, not a verdict
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"step {first.id} (segmentation run): FAILED, logs {logs}/{first.id}/"
    assert lines[-1] == f"step {second.id} (segmentation run): CANCELLED, logs {logs}/{second.id}/"


def test_cluster_that_ends_before_its_steps_exits_3(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = new_cluster()

    def terminate(_: float) -> None:
        cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id]
        cluster.state = "TERMINATED_WITH_ERRORS"

    monkeypatch.setattr(emr, "_sleep", terminate)
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--", *RUN_JOB]) == 3
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith(f"cluster {cluster_id} ended (TERMINATED_WITH_ERRORS) before")


# ------------------------------------------------------------------ step concurrency


def concurrent_cluster(level: int = 3) -> str:
    """A running cluster with StepConcurrencyLevel ``level`` (moto keeps what ModifyCluster
    sets)."""
    cluster_id = new_cluster()
    boto3.client("emr", region_name=REGION).modify_cluster(
        ClusterId=cluster_id, StepConcurrencyLevel=level)
    return cluster_id


def record_states_at_add(monkeypatch: pytest.MonkeyPatch) -> List[Dict[str, str]]:
    """The states of the cluster's steps each time AddJobFlowSteps is about to be sent."""
    seen: List[Dict[str, str]] = []
    real_session = emr.aws_session

    def before_add(params: Dict[str, Any], **_: Any) -> None:
        steps = steps_of(params["JobFlowId"])
        seen.append({step.name: step.state for step in steps})

    def session(region: Any = None, profile: Any = None) -> Any:
        made = real_session(region, profile)
        made.events.register("provide-client-params.emr.AddJobFlowSteps", before_add)
        return made

    monkeypatch.setattr(emr, "aws_session", session)
    return seen


def test_concurrent_cluster_gets_continue_steps_one_after_another(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """StepConcurrencyLevel 3: EMR rejects CANCEL_AND_WAIT (moto does not, so the test checks
    that it is never sent), and chained steps would overlap: each step is added alone, with
    CONTINUE, once the previous one completed."""
    cluster_id = concurrent_cluster()
    finish_steps(monkeypatch)
    seen = record_states_at_add(monkeypatch)
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--", *CHAIN]) == 0
    adds = [request for name, request in aws if name == "AddJobFlowSteps"]
    assert aws[0][0] == "DescribeCluster"
    assert [len(request["Steps"]) for request in adds] == [1, 1, 1]
    assert {request["Steps"][0]["ActionOnFailure"] for request in adds} == {"CONTINUE"}
    assert [request["Steps"][0]["Name"] for request in adds] == [
        "segmentation ingest", "segmentation features", "segmentation cluster"]
    # Each step was added only after every earlier one had completed.
    assert seen == [
        {},
        {"segmentation ingest": "COMPLETED"},
        {"segmentation ingest": "COMPLETED", "segmentation features": "COMPLETED"},
    ]
    prefix = adds[0]["Steps"][0]["HadoopJarStep"]["Args"][8].rsplit("segmentation.zip", 1)[0]
    for request, job in zip(adds, emr.split_jobs(CHAIN)):
        assert_step_matches_definition(request["Steps"][0], job, prefix, "CONTINUE")
    ids = [step.id for step in sorted(steps_of(cluster_id), key=lambda s: s.creation_date_time)]
    logs = f"s3://{BUCKET}/shared-logs/{cluster_id}/steps"
    assert capsys.readouterr().out.splitlines() == [
        f"step {ids[0]} (segmentation ingest) submitted",
        f"step {ids[0]} (segmentation ingest): COMPLETED, logs {logs}/{ids[0]}/",
        f"step {ids[1]} (segmentation features) submitted",
        f"step {ids[1]} (segmentation features): COMPLETED, logs {logs}/{ids[1]}/",
        f"step {ids[2]} (segmentation cluster) submitted",
        f"step {ids[2]} (segmentation cluster): COMPLETED, logs {logs}/{ids[2]}/",
    ]


def test_concurrent_cluster_stops_submitting_after_a_failed_step(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = concurrent_cluster()
    finish_steps(monkeypatch, final="FAILED")
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--", *CHAIN]) == emr.EXIT_STEP_FAILED
    (step,) = steps_of(cluster_id)
    assert step.state == "FAILED"
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"step {step.id} (segmentation ingest) submitted"
    assert out[1].startswith(f"step {step.id} (segmentation ingest): FAILED, logs ")
    assert out[-1] == ("not submitted, as step 1 did not complete: segmentation features, "
                       "segmentation cluster")
    assert [name for name, _ in aws].count("AddJobFlowSteps") == 1


def test_concurrent_cluster_with_one_step_and_no_wait(
    aws: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = concurrent_cluster(level=2)
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--no-wait", "--", *RUN_JOB]) == 0
    (request,) = [request for name, request in aws if name == "AddJobFlowSteps"]
    assert request["Steps"][0]["ActionOnFailure"] == "CONTINUE"
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"follow with: segmentation emr status --cluster-id {cluster_id} --wait")


@pytest.mark.parametrize(("extra", "message"), [
    (["--action-on-failure", "CANCEL_AND_WAIT"],
     "--action-on-failure CANCEL_AND_WAIT: cluster {c} runs up to 3 steps at once "
     "(StepConcurrencyLevel), and EMR accepts only CONTINUE there; leave the flag out (submit "
     "then runs the steps one after another), or use a cluster with StepConcurrencyLevel 1"),
    (["--action-on-failure", "TERMINATE_CLUSTER"],
     "--action-on-failure TERMINATE_CLUSTER: cluster {c} runs up to 3 steps at once "
     "(StepConcurrencyLevel), and EMR accepts only CONTINUE there; leave the flag out (submit "
     "then runs the steps one after another), or use a cluster with StepConcurrencyLevel 1"),
    (["--no-wait"],
     "cluster {c} runs up to 3 steps at once (StepConcurrencyLevel), so chained steps are "
     "submitted one after another, each once the previous one completed: that needs the wait; "
     "drop --no-wait, or submit one step at a time"),
])
def test_concurrent_cluster_refusals_are_one_line_before_any_upload(
    extra: List[str], message: str, aws: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = concurrent_cluster()
    assert main([*SUBMIT, "--cluster-id", cluster_id, *extra, "--", *CHAIN]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {message.format(c=cluster_id)}"]
    assert [name for name, _ in aws] == ["DescribeCluster"]
    assert "Contents" not in boto3.client("s3", region_name=REGION).list_objects_v2(
        Bucket=BUCKET)  # nothing uploaded


def test_steps_are_not_added_to_a_terminated_cluster(
    aws: Calls, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = new_cluster()
    boto3.client("emr", region_name=REGION).terminate_job_flows(JobFlowIds=[cluster_id])
    aws.clear()
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--", *RUN_JOB]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: cluster {cluster_id} is TERMINATED: steps cannot be added; start "
                      "a new cluster (leave out --cluster-id, pass --log-uri)"]
    assert [name for name, _ in aws] == ["DescribeCluster"]


# ------------------------------------------------------------------ the steps of a new cluster


def list_steps_lags(monkeypatch: pytest.MonkeyPatch, shown: List[int]) -> List[int]:
    """ListSteps shows only ``shown[i]`` (oldest) steps on its i-th call, then all of them,
    as EMR can right after RunJobFlow (moto lists them at once); returns the counts seen."""
    counts: List[int] = []
    real_session = emr.aws_session

    def lag(parsed: Dict[str, Any], **_: Any) -> None:
        if len(counts) < len(shown):
            keep = shown[len(counts)]
            parsed["Steps"] = parsed["Steps"][len(parsed["Steps"]) - keep:] if keep else []
        counts.append(len(parsed["Steps"]))

    def session(region: Any = None, profile: Any = None) -> Any:
        made = real_session(region, profile)
        made.events.register("after-call.emr.ListSteps", lag)
        return made

    monkeypatch.setattr(emr, "aws_session", session)
    return counts


def test_wait_follows_every_step_even_when_list_steps_lags(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    finish_steps(monkeypatch)
    counts = list_steps_lags(monkeypatch, [0, 0, 1])
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *CHAIN]) == 0
    assert counts == [0, 0, 1, 3]
    (cluster,) = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters.values()
    steps = sorted(cluster.steps, key=lambda s: s.creation_date_time)
    assert [step.state for step in steps] == ["COMPLETED"] * 3
    out = capsys.readouterr().out.splitlines()
    assert out[1:4] == [f"step {step.id} ({step.name}) submitted" for step in steps]
    assert [line.split(": ")[1].split(",")[0] for line in out[4:]] == ["COMPLETED"] * 3
    # Every step was followed to its end: DescribeStep was asked about each of them.
    described = {request["StepId"] for name, request in aws if name == "DescribeStep"}
    assert described == {step.id for step in steps}


def test_steps_never_listed_is_an_error_not_a_success(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(emr, "_sleep", lambda _: None)
    list_steps_lags(monkeypatch, [0] * emr.LIST_STEPS_ATTEMPTS)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *RUN_JOB]) == 2
    (cluster_id,) = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [
        f"error: cluster {cluster_id} was started, but lists 0 of its 1 steps after "
        f"{emr.LIST_STEPS_ATTEMPTS} ListSteps calls; follow it with: segmentation emr status "
        f"--cluster-id {cluster_id} --wait"
    ]
    with pytest.raises(emr.EmrError, match="no step of cluster j-1 to wait for"):
        emr.wait_for_steps(None, "j-1", [])


# ------------------------------------------------------------------ termination guards


def test_max_minutes_reaches_the_bootstrap_action_and_the_wait_terminates(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [1000.0]

    def tick(_: float) -> None:  # the steps never end; each poll is ten minutes later
        clock[0] += 600

    monkeypatch.setattr(emr, "_sleep", tick)
    monkeypatch.setattr(emr, "_now", lambda: clock[0])
    status = main([*SUBMIT, "--log-uri", LOG_URI, "--max-minutes", "30", "--", *RUN_JOB])
    assert status == emr.EXIT_STEP_FAILED
    request = aws[0][1]
    prefix = code_prefix_of(request)
    assert request["BootstrapActions"] == [{
        "Name": "python runtime dependencies",
        "ScriptBootstrapAction": {"Path": f"{prefix}bootstrap.sh", "Args": ["30"]},
    }]
    terminations = [params for name, params in aws if name == "TerminateJobFlows"]
    (cluster_id,) = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters
    assert terminations == [{"JobFlowIds": [cluster_id]}]
    assert clock[0] - 1000.0 == 1800  # terminated at the first poll past 30 minutes
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"started cluster {cluster_id} (terminates after its steps, or after 30 " \
        "minutes)"
    assert f"cluster {cluster_id} ran past --max-minutes 30: terminating it" in out
    assert out[-1].startswith(f"cluster {cluster_id} ended (TERMINATED) before its steps")


def test_without_max_minutes_the_wait_never_terminates(
    aws: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    polls = []

    def tick(_: float) -> None:
        clock[0] += 6000
        polls.append(clock[0])
        if len(polls) == 5:
            finish_steps(monkeypatch)
            emr._sleep(0)

    monkeypatch.setattr(emr, "_sleep", tick)
    monkeypatch.setattr(emr, "_now", lambda: clock[0])
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *RUN_JOB]) == 0
    assert "TerminateJobFlows" not in [name for name, _ in aws]


def guard_fragment(tmp_path: Path) -> str:
    """emr/bootstrap.sh's max runtime guard, with its log file under ``tmp_path``."""
    script = (EMR_DIR / "bootstrap.sh").read_text()
    start = script.index("# --- max runtime guard")
    end = script.index("# --- end of the max runtime guard ---")
    return script[start:end].replace("/tmp/segmentation-max-runtime.log",
                                     str(tmp_path / "guard.log"))


def run_guard(tmp_path: Path, minutes: str, primary: bool = True,
              aws_exit: int = 0) -> Tuple[subprocess.CompletedProcess[str], Dict[str, str]]:
    """Run the guard with stand-ins for EMR's files and the commands it calls; returns the
    process and what each stand-in was called with."""
    info = tmp_path / "info"
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    for folder in (info, bin_dir, calls):
        folder.mkdir(exist_ok=True)
    (info / "instance.json").write_text(json.dumps({"isMaster": primary, "isRunningNameNode":
                                                    primary}, indent=2))
    (info / "job-flow.json").write_text(json.dumps({"jobFlowId": "j-GUARDED",
                                                    "jobFlowCreationInstant": 1}, indent=2))
    stubs = {
        "curl": 'case "$*" in *api/token*) echo TOKEN ;; *placement/region*) echo eu-west-1 ;; '
                "esac",
        "sleep": f'echo "$*" > {calls}/sleep',
        "aws": f'echo "$*" > {calls}/aws; exit {aws_exit}',
        "sudo": f'echo "$*" > {calls}/sudo',
        "setsid": 'exec "$@"',
        "nohup": 'exec "$@"',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    program = ("set -euo pipefail\n"
               f"MAX_MINUTES={minutes}\nEMR_INFO={info}\n{guard_fragment(tmp_path)}\nwait\n")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, env=env,
                            timeout=30)
    return result, {path.name: path.read_text().strip() for path in calls.iterdir()}


def test_bootstrap_guard_terminates_the_cluster_from_the_primary_node(tmp_path: Path) -> None:
    result, calls = run_guard(tmp_path, "45")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "bootstrap: cluster j-GUARDED terminates after 45 minutes"
    assert calls == {"sleep": "2700",
                     "aws": "emr terminate-clusters --region eu-west-1 --cluster-ids j-GUARDED"}
    assert "max runtime of 45 minutes reached" in (tmp_path / "guard.log").read_text()


def test_bootstrap_guard_shuts_the_primary_down_when_the_call_fails(tmp_path: Path) -> None:
    result, calls = run_guard(tmp_path, "5", aws_exit=255)
    assert result.returncode == 0, result.stderr
    assert calls["sudo"] == "shutdown -h now"


def test_bootstrap_guard_only_on_the_primary_and_only_when_asked(tmp_path: Path) -> None:
    result, calls = run_guard(tmp_path, "45", primary=False)
    assert (result.returncode, calls, result.stdout) == (0, {}, "")
    result, calls = run_guard(tmp_path, "''")
    assert (result.returncode, calls, result.stdout) == (0, {}, "")
    result, calls = run_guard(tmp_path, "soon")
    assert result.returncode == 1 and calls == {}
    assert "the maximum runtime must be whole minutes, not 'soon'" in result.stderr


def test_idle_auto_termination_policy_is_opt_in(
    aws: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_steps(monkeypatch)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--set", "IDLE_TIMEOUT_SECONDS=1800", "--",
                 *RUN_JOB]) == 0
    request = aws[0][1]
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": 1800}  # a number, as the API wants


# ------------------------------------------------------------------ locations on the cluster


@pytest.mark.parametrize(("job", "message"), [
    (["run", "--source", "retail", "--input", "s3://b/in/", "--output", "hdfs:///segments/"],
     "step 1 (run): --output 'hdfs:///segments/' would be deleted with the cluster, which "
     "terminates after its last step; write it to s3:// (hdfs:// suits what a later step of "
     "the same submit reads)"),
    (["features", "--source", "retail", "--input", "hdfs:///in/", "--output", "s3://b/f/"],
     "step 1 (features): --input 'hdfs:///in/': a new cluster's HDFS is empty; read from "
     "s3://, or write it with an earlier step of the same submit"),
    (["run", "--source", "retail", "--input", "file:///mnt/in.csv", "--output", "s3://b/o/"],
     "step 1 (run): --input 'file:///mnt/in.csv' is on the nodes' own disks, which hold "
     "nothing of yours on a new cluster; use s3://, or a running cluster whose nodes have the "
     "file (--cluster-id)"),
    (["run", "--source", "retail", "--input", "s3://b/in/", "--output", "hdfs:///run/", "--",
      "audiences", "--run", "hdfs:///run/"],
     "step 2 (audiences): --run 'hdfs:///run/' would be deleted with the cluster, which "
     "terminates after its last step; write it to s3:// (hdfs:// suits what a later step of "
     "the same submit reads)"),
    (["run", "--source", "retail", "--input", "s3://b/in/", "--output", "out/retail"],
     "step 1 (run): --output must be a location every node reads, such as s3://bucket/path/, "
     "not 'out/retail'"),
    (["run", "--source", "retail", "--input", "/data/in.csv", "--output", "s3://b/o/"],
     "step 1 (run): --input must be a location every node reads, such as s3://bucket/path/, "
     "not '/data/in.csv'"),
])
def test_new_cluster_locations(
    job: List[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--dry-run", "--", *job]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [f"error: {message}"]


def test_hdfs_between_steps_and_on_a_running_cluster_is_allowed(
    capsys: pytest.CaptureFixture[str]
) -> None:
    chain = ["ingest", "--source", "avito", "--input", "s3://b/avito/", "--output",
             "hdfs:///work/avito/", "--",
             "features", "--source", "avito", "--input", "hdfs:///work/avito/tables",
             "--output", "hdfs://namenode:8020/work/features", "--",
             "cluster", "--input", "hdfs:///work/features/features", "--output", "s3://b/seg/"]
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--dry-run", "--", *chain]) == 0
    single = ["run", "--source", "retail", "--input", "hdfs:///in/", "--output",
              "hdfs:///segments/"]
    assert main([*SUBMIT, "--cluster-id", "j-1", "--dry-run", "--", *single]) == 0
    sqlite = ["ingest", "--source", "avito", "--input", "file:///mnt/avito/database.sqlite",
              "--output", "s3://b/avito/"]
    assert main([*SUBMIT, "--cluster-id", "j-1", "--dry-run", "--", *sqlite]) == 0
    capsys.readouterr()


# ------------------------------------------------------------------ dry run and errors


def test_dry_run_prints_the_requests_and_calls_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)  # no boto3, no credentials: still works

    def no_aws(*_: Any, **__: Any) -> Any:
        raise AssertionError("dry run called AWS")

    monkeypatch.setattr(emr, "aws_session", no_aws)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--dry-run", "--", *RUN_JOB]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["operation"] == "RunJobFlow"
    prefix = plan["code_prefix"]
    assert code_prefix_of(plan["request"]) == prefix
    assert [u["uri"][len(prefix):] for u in plan["uploads"]][:9] == [
        "segmentation.zip", *(f"jobs/{c}.py" for c in emr.JOB_COMMANDS), "bootstrap.sh",
    ]
    assert plan["uploads"][9]["uri"].startswith(f"{prefix}requests/RunJobFlow-")
    assert_step_matches_definition(plan["request"]["Steps"][0], RUN_JOB, prefix,
                                   "TERMINATE_CLUSTER")

    assert main([*SUBMIT, "--cluster-id", "j-ABC", "--dry-run", "--", *RUN_JOB]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["operation"] == "AddJobFlowSteps"
    assert plan["request"]["JobFlowId"] == "j-ABC"
    assert_step_matches_definition(plan["request"]["Steps"][0], RUN_JOB, prefix, "CONTINUE")


def test_emr_command_does_not_import_spark(tmp_path: Path) -> None:
    probe = (
        "import sys; from segmentation.cli import main; "
        f"code = main({[*SUBMIT, '--log-uri', LOG_URI, '--dry-run', '--', *RUN_JOB]!r}); "
        "assert code == 0, code; assert 'pyspark' not in sys.modules, 'pyspark imported'"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["operation"] == "RunJobFlow"


def test_missing_boto3_is_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    assert main([*SUBMIT, "--log-uri", LOG_URI, "--", *RUN_JOB]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == ["error: boto3 is not installed: pip install 'segmentation[emr]'"]
    assert main(["emr", "status", "--cluster-id", "j-1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == ["error: boto3 is not installed: pip install 'segmentation[emr]'"]


@pytest.mark.parametrize(
    ("extra", "job", "message"),
    [
        ([], ["run", "--source", "retail", "--input", "s3://b/in/"],
         "step 1 (run): the following arguments are required: --output"),
        ([], [*RUN_JOB, "--k", "1"], "step 1 (run): argument --k: k must be 2 or more: '1'"),
        ([], [*RUN_JOB, "--", "cluster", "--input", "s3://b/f/", "--output", "s3://b/o/",
              "--bogus"], "step 2 (cluster): unrecognized arguments: --bogus"),
        ([], ["run", "--source", "retail", "--input", "data/x.csv", "--output", "s3://b/o/"],
         "step 1 (run): --input must be a location every node reads, such as "
         "s3://bucket/path/, not 'data/x.csv'"),
        ([], [*RUN_JOB, "--master", "local[2]"],
         "step 1 (run): --master is set by spark-submit on EMR (yarn); remove it"),
        ([], ["ingest", "--source", "avito", "--input", "s3://b/database.sqlite", "--output",
              "s3://b/o/"], "step 1 (ingest): SQLite input must be a local file on every node "
         "(file://...); ingest it to Parquet first and point the job at the tables"),
        ([], ["generate", "avito", "--out", "x"],
         "step 1: 'generate' is not a job; the steps are ingest, features, cluster, run, "
         "score, audiences, compare"),
        ([], [], "no job given: end the options with the job, e.g. -- run --source retail "
         "--input s3://bucket/in/ --output s3://bucket/out/"),
        (["--log-uri", LOG_URI, "--set", "SUBNET=x"], RUN_JOB,
         "--set SUBNET: no such placeholder in the definitions (settable: CORE_CAPACITY, "
         "EC2_KEY_NAME, IDLE_TIMEOUT_SECONDS, JOB_FLOW_ROLE, SERVICE_ROLE, SUBNET_ID, "
         "TASK_SPOT_CAPACITY)"),
        (["--log-uri", LOG_URI, "--set", "MAX_MINUTES=5"], RUN_JOB,
         "--set MAX_MINUTES: filled by submit itself (use --max-minutes)"),
        (["--cluster-id", "j-1", "--max-minutes", "30"], RUN_JOB,
         "--max-minutes applies to a new cluster, not to --cluster-id"),
        (["--log-uri", LOG_URI, "--set", "CODE_PREFIX=s3://x/"], RUN_JOB,
         "--set CODE_PREFIX: filled by submit itself (use --code-uri)"),
        (["--log-uri", LOG_URI, "--set", "CORE_CAPACITY=many"], RUN_JOB,
         f"{EMR_DIR / 'cluster.json'}: TargetOnDemandCapacity must be a whole number: 'many'"),
        ([], RUN_JOB, "a new cluster needs --log-uri s3://bucket/logs/ (its step logs go there); "
         "or add the steps to a running cluster with --cluster-id"),
        (["--cluster-id", "j-1", "--log-uri", LOG_URI], RUN_JOB,
         "--log-uri applies to a new cluster, not to --cluster-id"),
    ],
)
def test_bad_options_are_one_line_before_any_call(
    extra: List[str], job: List[str], message: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_aws(*_: Any, **__: Any) -> Any:
        raise AssertionError("called AWS with bad options")

    monkeypatch.setattr(emr, "aws_session", no_aws)
    assert main([*SUBMIT, *extra, "--", *job]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert [line for line in captured.err.splitlines() if line.startswith("error")] == [
        f"error: {message}"
    ]


def test_bad_code_uri(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emr", "submit", "--code-uri", "code/", "--log-uri", LOG_URI, "--dry-run",
                 "--", *RUN_JOB]) == 2
    assert "error: --code-uri must be s3://bucket/prefix/: 'code/'" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["submit", "status"])
def test_every_emr_flag_is_documented(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["emr", action, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    emr_parser = build_parser()._subparsers._group_actions[0].choices["emr"]  # type: ignore
    sub = emr_parser._subparsers._group_actions[0].choices[action]  # type: ignore[union-attr]
    for action_ in sub._actions:
        assert action_.help, f"{action} {action_.option_strings} has no help"
        for flag in action_.option_strings:
            assert flag in text


# ------------------------------------------------------------------ templates and emr/ files


def test_render_placeholders() -> None:
    template = {"A": "${X}", "B": "pre-${Y:-d}", "C": ["${Z:-}", "keep"], "D": ["${Z:-}"],
                "E": "${Z:-}", "InstanceCount": "${N:-3}", "F": "", "G": 5}
    assert emr.render(template, {"X": "x"}) == {
        "A": "x", "B": "pre-d", "C": ["keep"], "InstanceCount": 3, "F": "", "G": 5,
    }
    assert emr.placeholders(template) == {"X": None, "Y": "d", "Z": "", "N": "3"}
    with pytest.raises(emr.EmrError, match=r"^t.json: no value for X \(pass --set"):
        emr.render(template, {}, "t.json")


def test_render_drops_objects_left_empty_but_keeps_empty_ones() -> None:
    template = {"AutoTerminationPolicy": {"IdleTimeout": "${IDLE:-}"}, "Properties": {},
                "Args": []}
    assert emr.render(template, {}) == {"Properties": {}, "Args": []}
    assert emr.render(template, {"IDLE": "900"})["AutoTerminationPolicy"] == {"IdleTimeout": 900}


def test_zip_is_reproducible() -> None:
    assert emr.package_zip() == emr.package_zip()


def test_bootstrap_installs_pyproject_runtime_deps_without_pyspark() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.S | re.M)
    assert block
    declared = re.findall(r'^\s*"([^"]+)",', block.group(1), re.M)
    assert "pyspark==3.5.6" in declared
    script = (EMR_DIR / "bootstrap.sh").read_text()
    install = re.search(r'-m pip install --no-cache-dir \\\n((?:\s+\'[^\']+\'(?: \\)?\n)+)',
                        script)
    assert install
    pinned = re.findall(r"'([^']+)'", install.group(1))
    assert pinned == [spec for spec in declared if not spec.startswith("pyspark")]
    assert "pyspark" not in script.split("set -euo pipefail", 1)[1].replace(
        "PYSPARK_PYTHON", "")
    assert script.startswith("#!/bin/bash\n") and "python3 -m pip" not in script.replace(
        '"$PYTHON" -m pip', "")
    assert 'PYTHON=/usr/bin/python3' in script


def test_cluster_definition_runs_python3_with_dynamic_allocation() -> None:
    template = json.loads((EMR_DIR / "cluster.json").read_text())
    classes = {c["Classification"]: c for c in template["Configurations"]}
    defaults = classes["spark-defaults"]["Properties"]
    assert defaults["spark.dynamicAllocation.enabled"] == "true"
    assert defaults["spark.shuffle.service.enabled"] == "true"
    assert classes["spark-env"]["Configurations"] == [{
        "Classification": "export",
        "Properties": {"PYSPARK_PYTHON": "/usr/bin/python3",
                       "PYSPARK_DRIVER_PYTHON": "/usr/bin/python3"},
    }]
    markets = {f["InstanceFleetType"]: sorted(k for k in f if k.startswith("Target"))
               for f in template["Instances"]["InstanceFleets"]}
    assert markets == {"MASTER": ["TargetOnDemandCapacity"],
                       "CORE": ["TargetOnDemandCapacity"], "TASK": ["TargetSpotCapacity"]}


def test_instance_profile_policy_limits_s3_to_the_prefixes() -> None:
    policy = emr.render(
        json.loads((EMR_DIR / "iam" / "instance-profile-policy.json").read_text()),
        {"INPUT_BUCKET": "in-b", "INPUT_PREFIX": "raw/retail", "OUTPUT_BUCKET": "out-b",
         "OUTPUT_PREFIX": "segments/retail", "CODE_BUCKET": "code-b", "CODE_PREFIX": "code",
         "LOG_BUCKET": "log-b", "LOG_PREFIX": "logs"},
    )
    statements = {s["Sid"]: s for s in policy["Statement"]}
    writes = {"s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"}
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        assert "s3:*" not in statement["Action"] and statement["Resource"] != "*"
        if writes & set(statement["Action"]) - {"s3:PutObject"}:
            assert statement["Resource"] == ["arn:aws:s3:::out-b/segments/retail*"]
        if "s3:PutObject" in statement["Action"]:
            assert statement["Resource"] in (["arn:aws:s3:::out-b/segments/retail*"],
                                             ["arn:aws:s3:::log-b/logs*"])
        if "s3:ListBucket" in statement["Action"]:
            (prefix,) = statement["Condition"]["StringLike"]["s3:prefix"]
            assert (statement["Resource"], prefix) in (
                (["arn:aws:s3:::in-b"], "raw/retail*"),
                (["arn:aws:s3:::out-b"], "segments/retail*"),
                (["arn:aws:s3:::code-b"], "code*"),
            )
    assert statements["ReadInput"]["Action"] == ["s3:GetObject"]
    assert statements["ReadInput"]["Resource"] == ["arn:aws:s3:::in-b/raw/retail*"]
    for name in ("instance-profile-trust", "service-role-trust", "service-role-passrole-policy",
                 "deployer-policy"):
        document = json.loads((EMR_DIR / "iam" / f"{name}.json").read_text())
        assert document["Version"] == "2012-10-17"


def test_status_wait_follows_a_no_wait_submit(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = new_cluster()
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--no-wait", "--", *RUN_JOB]) == 0
    (step,) = steps_of(cluster_id)
    capsys.readouterr()
    finish_steps(monkeypatch)
    assert main(["emr", "status", "--cluster-id", cluster_id, "--wait", "--poll-seconds", "0",
                 "--region", REGION]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"cluster {cluster_id} (shared): RUNNING",
        f"step {step.id} (segmentation run): COMPLETED, "
        f"logs s3://{BUCKET}/shared-logs/{cluster_id}/steps/{step.id}/",
    ]


def test_aws_errors_are_one_line(aws: Calls, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emr", "status", "--cluster-id", "j-MISSING", "--region", REGION]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1
    assert errors[0].startswith("error: AWS: An error occurred (")
    assert "DescribeCluster" in errors[0]
    # Uploading to a bucket that does not exist stops before EMR is called.
    code_uri = "s3://no-such-bucket/code/"
    assert main(["emr", "submit", "--code-uri", code_uri, "--log-uri", LOG_URI, "--region",
                 REGION, "--", *RUN_JOB]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert errors == [
        "error: AWS: An error occurred (NoSuchBucket) when calling the PutObject operation: "
        "The specified bucket does not exist"
    ]
    assert [name for name, _ in aws] == ["DescribeCluster"]


def test_interrupted_wait_says_how_to_resume(
    aws: Calls, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster_id = new_cluster()

    def interrupt(_: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(emr, "_sleep", interrupt)
    assert main([*SUBMIT, "--cluster-id", cluster_id, "--", *RUN_JOB]) == 130
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"stopped waiting; the steps go on: segmentation emr status --cluster-id {cluster_id} "
        "--wait"
    )


def test_requests_use_the_api_enum_values(capsys: pytest.CaptureFixture[str]) -> None:
    """botocore checks names and types but not enum values: check those against the model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("emr")

    def check(value: Any, shape: Any, path: str) -> int:
        if shape.type_name == "structure":
            assert set(value) <= set(shape.members), path
            return sum(check(v, shape.members[k], f"{path}.{k}") for k, v in value.items())
        if shape.type_name == "list":
            return sum(check(v, shape.member, f"{path}[]") for v in value)
        if shape.type_name == "map":
            return 0
        if getattr(shape, "enum", None):
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
            return 1
        return 0

    assert main([*SUBMIT, "--log-uri", LOG_URI, "--dry-run", "--", *CHAIN]) == 0
    plan = json.loads(capsys.readouterr().out)
    operation = model.operation_model("RunJobFlow")
    # 3 fleet types, Spot timeout action and allocation strategy, 3 ActionOnFailure
    assert check(plan["request"], operation.input_shape, "RunJobFlow") == 8
    for action in ACTIONS_ON_FAILURE:
        assert main([*SUBMIT, "--cluster-id", "j-1", "--dry-run", "--action-on-failure", action,
                     "--", *RUN_JOB]) == 0
        plan = json.loads(capsys.readouterr().out)
        operation = model.operation_model("AddJobFlowSteps")
        assert check(plan["request"], operation.input_shape, "AddJobFlowSteps") == 1
        assert plan["request"]["Steps"][0]["ActionOnFailure"] == action
