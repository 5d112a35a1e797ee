"""``segmentation emr submit | status``: the jobs as Amazon EMR steps.

``submit`` validates each job's flags with the jobs' own parser (:func:`segmentation.parser
.build_parser`), packages the ``segmentation`` package as a zip for ``--py-files``, uploads it
with ``jobs/*.py``, ``emr/bootstrap.sh`` and a record of the request to a versioned S3 prefix,
then adds the steps to a running cluster (``AddJobFlowSteps``) or starts a transient cluster that
runs them and terminates (``RunJobFlow``), and waits, printing a line per state change. The
requests are built from the reviewed definitions in ``emr/`` (``cluster.json``,
``steps/<command>.json``); ``--dry-run`` prints them as JSON without calling AWS.

Nothing here starts Spark, and boto3 is imported only when AWS is called (the ``emr`` extra).

On a running cluster whose ``StepConcurrencyLevel`` is above 1 (read with ``DescribeCluster``
before anything is uploaded), EMR rejects ``ActionOnFailure`` ``CANCEL_AND_WAIT`` and
``TERMINATE_CLUSTER`` and would run chained steps at the same time: the steps get ``CONTINUE``
and are submitted one at a time, each once the previous one completed (which needs the wait).
A new cluster's steps are followed by the ids ``ListSteps`` returns for all of them (it can be
empty for a moment after ``RunJobFlow``). ``--max-minutes`` bounds a new cluster's life twice:
the wait calls ``TerminateJobFlows`` past the limit, and the bootstrap action starts a guard on
the primary node that terminates the cluster even when the client is gone.

Exit status: 0 the steps completed (or were submitted, with ``--no-wait``); 2 bad options or an
AWS error, one line ``error: ...``; 3 a step failed, was cancelled or interrupted, or the cluster
ended before its steps did (also when ``--max-minutes`` terminated it); 130 the wait was
interrupted (Ctrl-C: the steps go on).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import logging
import re
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from segmentation import __version__
from segmentation.errors import SegmentationError
from segmentation.parser import build_parser

log = logging.getLogger(__name__)

#: The commands that run as EMR steps (``generate`` and ``emr`` itself do not).
JOB_COMMANDS = ("ingest", "features", "cluster", "run", "score", "audiences", "compare")
EXIT_USAGE = 2
#: A step failed, was cancelled or interrupted, or the cluster ended before its steps.
EXIT_STEP_FAILED = 3
TERMINAL_STEP_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"})
FAILED_STEP_STATES = frozenset({"CANCELLED", "FAILED", "INTERRUPTED"})
ENDED_CLUSTER_STATES = frozenset({"TERMINATED", "TERMINATED_WITH_ERRORS"})
#: RunJobFlow fields that are integers: a placeholder there renders to a number.
INTEGER_KEYS = frozenset({
    "TargetOnDemandCapacity", "TargetSpotCapacity", "WeightedCapacity", "InstanceCount",
    "TimeoutDurationMinutes", "StepConcurrencyLevel", "EbsRootVolumeSize", "SizeInGB",
    "VolumesPerInstance", "IdleTimeout",
})
#: Job inputs and outputs must be locations every node reaches.
CLUSTER_SCHEMES = ("s3://", "s3a://", "hdfs://", "file://")
#: ``ActionOnFailure`` values that EMR rejects on a cluster with ``StepConcurrencyLevel`` > 1.
SERIAL_ONLY_ACTIONS = ("CANCEL_AND_WAIT", "TERMINATE_CLUSTER")
#: Cluster states in which steps can no longer be added.
CLOSING_CLUSTER_STATES = frozenset({"TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS"})
#: ``ListSteps`` calls (``poll_seconds`` apart, at most 5 s) until a new cluster lists its steps.
LIST_STEPS_ATTEMPTS = 12
#: Placeholders that submit fills from its own options.
RESERVED_PLACEHOLDERS = {
    "CODE_PREFIX": "--code-uri", "LOG_URI": "--log-uri", "CLUSTER_NAME": "--name",
    "ACTION_ON_FAILURE": "--action-on-failure", "PACKAGE_VERSION": "a new package version",
    "MAX_MINUTES": "--max-minutes",
}
EXIT_INTERRUPTED = 130
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::-([^}]*))?\}")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


class EmrError(SegmentationError):
    """A problem with the ``emr`` options, the definitions in ``emr/``, or a call to AWS."""


# --------------------------------------------------------------------------- templates


def placeholders(template: Any) -> Dict[str, Optional[str]]:
    """The ``${NAME}`` / ``${NAME:-default}`` placeholders of a JSON template.

    Parameters
    ----------
    template
        Parsed JSON (dicts, lists, strings, numbers).

    Returns
    -------
    dict
        Name to default value, ``None`` for a placeholder without a default (a required one).
    """
    found: Dict[str, Optional[str]] = {}

    def visit(value: Any) -> None:
        if isinstance(value, str):
            for match in PLACEHOLDER.finditer(value):
                if found.get(match.group(1)) is None:
                    found[match.group(1)] = match.group(2)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, list):
            for item in value:
                visit(item)

    visit(template)
    return found


_DROP = object()


def render(template: Any, variables: Mapping[str, str], source: str = "template") -> Any:
    """Fill a JSON template's placeholders.

    ``${NAME}`` takes ``variables[NAME]`` (an error if absent); ``${NAME:-default}`` falls back
    to the default. A string that contained a placeholder and renders empty is removed (from its
    object or list), as is a list or an object left empty by that, so optional settings (a
    subnet, a key pair, an auto-termination policy) disappear when not given. Under the integer
    fields of :data:`INTEGER_KEYS` the rendered text becomes a number.

    Parameters
    ----------
    template
        Parsed JSON; not modified.
    variables
        Placeholder values.
    source
        Named in error messages (the template's file).

    Returns
    -------
    Any
        The rendered copy.

    Raises
    ------
    EmrError
        A placeholder without a default has no value, or an integer field is not a number.
    """
    missing: Set[str] = set()

    def fill(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in variables:
                return str(variables[name])
            if default is not None:
                return default
            missing.add(name)
            return ""

        return PLACEHOLDER.sub(one, text)

    def walk(value: Any, key: Optional[str]) -> Any:
        if isinstance(value, str):
            if not PLACEHOLDER.search(value):
                return value
            text = fill(value)
            if text == "":
                return _DROP
            if key in INTEGER_KEYS:
                try:
                    return int(text)
                except ValueError:
                    raise EmrError(f"{source}: {key} must be a whole number: {text!r}") from None
            return text
        if isinstance(value, dict):
            out = {}
            for name, item in value.items():
                rendered = walk(item, name)
                if rendered is not _DROP:
                    out[name] = rendered
            return _DROP if value and not out else out
        if isinstance(value, list):
            items = [walk(item, key) for item in value]
            kept = [item for item in items if item is not _DROP]
            return _DROP if value and not kept else kept
        return copy.deepcopy(value)

    result = walk(template, None)
    if missing:
        names = ", ".join(sorted(missing))
        raise EmrError(f"{source}: no value for {names} (pass --set NAME=VALUE)")
    return result


def load_json(path: Path) -> Any:
    """Read a JSON definition, with its file named in the error when it is not valid JSON.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    Any
        The parsed document.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmrError(f"missing EMR definition: {path}") from None
    except ValueError as error:
        raise EmrError(f"{path}: not valid JSON: {error}") from None


# --------------------------------------------------------------------------- jobs and steps


def split_jobs(tokens: Sequence[str]) -> List[List[str]]:
    """Split the words after ``--`` into jobs: ``run ...`` or ``ingest ... -- features ...``.

    Parameters
    ----------
    tokens
        The command line after ``segmentation emr submit [options]``.

    Returns
    -------
    list of list of str
        One list per job, each starting with its command.
    """
    words = list(tokens)
    if words and words[0] == "--":
        words = words[1:]
    jobs: List[List[str]] = [[]]
    for word in words:
        if word == "--":
            jobs.append([])
        else:
            jobs[-1].append(word)
    if not any(jobs):
        raise EmrError(
            "no job given: end the options with the job, e.g. "
            "-- run --source retail --input s3://bucket/in/ --output s3://bucket/out/"
        )
    if not all(jobs):
        raise EmrError("an empty job between two --")
    return jobs


def validate_job(tokens: Sequence[str], number: int = 1) -> argparse.Namespace:
    """Parse one job's flags with the jobs' own parser, and check they make sense on EMR.

    Parameters
    ----------
    tokens
        The command (one of :data:`JOB_COMMANDS`) and its flags.
    number
        The job's position (1-based), named in errors.

    Returns
    -------
    argparse.Namespace
        The parsed flags, as the job will see them on the cluster.

    Raises
    ------
    EmrError
        With one line naming the step and the problem.
    """
    command = tokens[0]
    if command not in JOB_COMMANDS:
        raise EmrError(
            f"step {number}: {command!r} is not a job; the steps are {', '.join(JOB_COMMANDS)}"
        )
    label = f"step {number} ({command})"
    messages = io.StringIO()
    try:
        with contextlib.redirect_stderr(messages), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(list(tokens))
    except SystemExit as exit_info:
        if exit_info.code == 0:
            raise EmrError(f"{label}: --help is not a job flag") from None
        lines = [line for line in messages.getvalue().splitlines() if line.strip()]
        reason = lines[-1].split("error: ", 1)[-1] if lines else "invalid flags"
        raise EmrError(f"{label}: {reason}") from None
    if args.master is not None:
        raise EmrError(f"{label}: --master is set by spark-submit on EMR (yarn); remove it")
    for flag, value in job_locations(args):
        if not value.startswith(CLUSTER_SCHEMES):
            raise EmrError(
                f"{label}: {flag} must be a location every node reads, such as "
                f"s3://bucket/path/, not {value!r}"
            )
        if value.startswith("file://") and flag != "--input":
            # Each node would write its part of the output to its own disk, and the driver's
            # _SUCCESS would describe files that are nowhere together.
            raise EmrError(
                f"{label}: {flag} must be shared storage (s3://, hdfs://), not a node's local "
                f"disk: {value!r}"
            )
    given = getattr(args, "input", None) or ""
    sqlite = getattr(args, "input_format", "auto") == "sqlite" or given.lower().endswith(
        (".sqlite", ".sqlite3", ".db")
    )
    if sqlite and not given.startswith("file://"):
        raise EmrError(
            f"{label}: SQLite input must be a local file on every node (file://...); "
            "ingest it to Parquet first and point the job at the tables"
        )
    return args


def job_locations(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """The (flag, location) pairs of a parsed job that every node must reach."""
    flags = {
        "score": (("--model", "model"), ("--input", "input"), ("--output", "output")),
        "audiences": (("--run", "run"),),
        "compare": (("RUN_A", "run_a"), ("RUN_B", "run_b"), ("--output", "output")),
    }.get(args.command, (("--input", "input"), ("--output", "output")))
    return [
        (flag, getattr(args, name)) for flag, name in flags if getattr(args, name) is not None
    ]


def _written_locations(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """The (flag, location) pairs a parsed job writes to (``audiences`` adds to its ``--run``)."""
    flag = "--run" if args.command == "audiences" else "--output"
    return [(f, value) for f, value in job_locations(args) if f == flag]


def _hdfs_path(uri: str) -> str:
    """The path of an ``hdfs://`` URI without its trailing slash (the namenode is ignored)."""
    return re.sub(r"^hdfs://[^/]*", "", uri).rstrip("/") or "/"


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def check_cluster_locations(jobs: Sequence[argparse.Namespace], new_cluster: bool) -> None:
    """Check the steps' locations together, for the cluster they run on.

    :func:`validate_job` already refuses relative and local paths (only ``s3://``, ``s3a://``,
    ``hdfs://`` and, for inputs, ``file://``). On a new cluster, which terminates after its last
    step, more is refused: ``file://`` (a new node's disk holds nothing of the user's), an
    ``hdfs://`` input that no earlier step writes (a new cluster's HDFS is empty), and an
    ``hdfs://`` output that no later step reads (it is deleted with the cluster). ``hdfs://``
    between steps of one submit (``ingest`` to HDFS, ``features`` from it) stays allowed.

    Parameters
    ----------
    jobs
        The parsed jobs, in step order.
    new_cluster
        Whether the steps start a new (transient) cluster.

    Raises
    ------
    EmrError
        With one line naming the step, the flag and the location.
    """
    if not new_cluster:
        return
    for number, args in enumerate(jobs, 1):
        label = f"step {number} ({args.command})"
        written = _written_locations(args)
        for flag, value in job_locations(args):
            if value.startswith("file://"):
                raise EmrError(
                    f"{label}: {flag} {value!r} is on the nodes' own disks, which hold nothing "
                    "of yours on a new cluster; use s3://, or a running cluster whose nodes "
                    "have the file (--cluster-id)"
                )
            if not value.startswith("hdfs://"):
                continue
            path = _hdfs_path(value)
            if (flag, value) not in written or args.command == "audiences":
                earlier = [_hdfs_path(out) for job in jobs[:number - 1]
                           for _, out in _written_locations(job) if out.startswith("hdfs://")]
                if not any(_under(path, folder) for folder in earlier):
                    raise EmrError(
                        f"{label}: {flag} {value!r}: a new cluster's HDFS is empty; read from "
                        "s3://, or write it with an earlier step of the same submit"
                    )
            if (flag, value) in written:
                later = [_hdfs_path(location) for job in jobs[number:]
                         for _, location in job_locations(job)
                         if location.startswith("hdfs://")]
                if not any(_under(location, path) for location in later):
                    raise EmrError(
                        f"{label}: {flag} {value!r} would be deleted with the cluster, which "
                        "terminates after its last step; write it to s3:// (hdfs:// suits "
                        "what a later step of the same submit reads)"
                    )


def _script_index(args: Sequence[str], command: str, source: str) -> int:
    hits = [i for i, arg in enumerate(args) if arg.endswith(f"jobs/{command}.py")]
    if len(hits) != 1:
        raise EmrError(f"{source}: expected one jobs/{command}.py argument, found {len(hits)}")
    return hits[0]


def step_prefix(template: Mapping[str, Any], command: str, source: str) -> Dict[str, Any]:
    """A step definition without the example flags after its job script.

    Parameters
    ----------
    template
        The step definition.
    command
        Its job command.
    source
        The definition's file, named in errors.

    Returns
    -------
    dict
        A copy whose ``Args`` end with ``jobs/<command>.py``.
    """
    step = copy.deepcopy(dict(template))
    args = step["HadoopJarStep"]["Args"]
    del args[_script_index(args, command, source) + 1:]
    return step


def build_step(
    template: Mapping[str, Any], job: Sequence[str], variables: Mapping[str, str], source: str
) -> Dict[str, Any]:
    """One AddJobFlowSteps/RunJobFlow step from an ``emr/steps/<command>.json`` definition.

    The definition's ``spark-submit`` arguments up to the job script are kept (rendered); the
    example flags after the script are replaced by the job's own flags, verbatim.

    Parameters
    ----------
    template
        The step definition (one element of the file's list).
    job
        The command and its validated flags.
    variables
        Placeholder values (``CODE_PREFIX``, ``ACTION_ON_FAILURE``, ...).
    source
        The definition's file, named in errors.

    Returns
    -------
    dict
        The step as sent to EMR.
    """
    command, flags = job[0], list(job[1:])
    rendered: Dict[str, Any] = render(step_prefix(template, command, source), variables, source)
    rendered["HadoopJarStep"]["Args"].extend(flags)
    return rendered


def job_flags(step: Mapping[str, Any]) -> Tuple[str, List[str]]:
    """The job command and flags of a step: the arguments after its ``jobs/<command>.py``.

    Parameters
    ----------
    step
        A step as sent to EMR or as defined in ``emr/steps/``.

    Returns
    -------
    tuple
        The command and the flags, ready for ``build_parser().parse_args([command, *flags])``.
    """
    args = step["HadoopJarStep"]["Args"]
    for i, arg in enumerate(args):
        match = re.search(r"jobs/(\w+)\.py$", arg)
        if match:
            return match.group(1), list(args[i + 1:])
    raise EmrError(f"step {step.get('Name')!r} runs no jobs/<command>.py")


# --------------------------------------------------------------------------- code bundle


def package_zip(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The ``segmentation`` package as a zip for ``spark-submit --py-files``.

    Built with :mod:`zipfile` from the package's sources (no pip, no build step), with fixed
    timestamps and order so the same sources give the same bytes (and the same S3 prefix).

    Parameters
    ----------
    package_dir
        The package folder (default: this package).

    Returns
    -------
    bytes
        The archive, with ``segmentation/__init__.py`` etc. at its root.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(package_dir.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            if path.suffix not in (".py", ".typed", ".j2"):
                continue
            info = zipfile.ZipInfo(
                f"segmentation/{path.relative_to(package_dir).as_posix()}",
                date_time=(1980, 1, 1, 0, 0, 0),
            )
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_bundle(project_dir: Path) -> Dict[str, bytes]:
    """The files every step and the bootstrap action read, by name under the code prefix.

    Parameters
    ----------
    project_dir
        The source checkout holding ``jobs/`` and ``emr/``.

    Returns
    -------
    dict
        ``segmentation.zip``, ``jobs/<command>.py`` for every job, ``bootstrap.sh``.
    """
    files = {"segmentation.zip": package_zip()}
    for command in JOB_COMMANDS:
        script = project_dir / "jobs" / f"{command}.py"
        if not script.is_file():
            raise EmrError(f"missing job script {script} (run from a source checkout, or pass "
                           "--project-dir)")
        files[f"jobs/{command}.py"] = script.read_bytes()
    bootstrap = project_dir / "emr" / "bootstrap.sh"
    if not bootstrap.is_file():
        raise EmrError(f"missing bootstrap action {bootstrap}")
    files["bootstrap.sh"] = bootstrap.read_bytes()
    return files


def bundle_digest(files: Mapping[str, bytes]) -> str:
    """SHA-256 over the bundle's names and contents (hex).

    Parameters
    ----------
    files
        Name to content.

    Returns
    -------
    str
        The digest; its first 12 characters version the code prefix.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def split_s3_uri(uri: str, flag: str) -> Tuple[str, str]:
    """Bucket and key of an ``s3://bucket/key`` URI.

    Parameters
    ----------
    uri
        The URI.
    flag
        The option it came from, named in the error.

    Returns
    -------
    tuple
        ``(bucket, key)``; the key may be empty.
    """
    match = re.match(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$", uri)
    if not match:
        raise EmrError(f"{flag} must be s3://bucket/prefix/: {uri!r}")
    return match.group(1), match.group(2) or ""


def join_uri(prefix: str, *parts: str) -> str:
    """``prefix`` and ``parts`` joined with single slashes, ``s3n://`` read as ``s3://``.

    Parameters
    ----------
    prefix
        A folder URI, with or without the trailing slash.
    *parts
        Path parts.

    Returns
    -------
    str
        The joined URI.
    """
    if prefix.startswith("s3n://"):
        prefix = "s3://" + prefix[len("s3n://"):]
    kept = [part.strip("/") for part in parts if part.strip("/")]
    return "/".join([prefix.rstrip("/"), *kept])


def step_log_uri(log_uri: Optional[str], cluster_id: str, step_id: str) -> str:
    """Where EMR writes a step's ``controller``, ``stderr`` and ``stdout`` logs.

    Parameters
    ----------
    log_uri
        The cluster's ``LogUri``.
    cluster_id, step_id
        The step.

    Returns
    -------
    str
        ``<LogUri>/<cluster-id>/steps/<step-id>/``, or a note when the cluster keeps no logs.
    """
    if not log_uri:
        return "(the cluster has no LogUri: step logs stay on the primary node)"
    return join_uri(log_uri, cluster_id, "steps", step_id) + "/"


def find_project_dir(given: Optional[str]) -> Path:
    """The source checkout with ``jobs/`` and ``emr/``.

    Parameters
    ----------
    given
        ``--project-dir``; by default the checkout holding this package (an editable install),
        else the current folder.

    Returns
    -------
    Path
        The folder.
    """
    candidates = [Path(given)] if given else [PACKAGE_DIR.parent, Path.cwd()]
    for candidate in candidates:
        if (candidate / "jobs").is_dir() and (candidate / "emr").is_dir():
            return candidate.resolve()
    raise EmrError(
        f"no jobs/ and emr/ in {', '.join(str(c) for c in candidates)}: run from a source "
        "checkout or pass --project-dir"
    )


# --------------------------------------------------------------------------- the plan


@dataclasses.dataclass
class SubmitPlan:
    """Everything ``submit`` uploads and sends, computed without calling AWS."""

    code_prefix: str
    files: Dict[str, bytes]
    operation: str
    request: Dict[str, Any]
    #: Add the steps one at a time, each after the previous one completed (a running cluster
    #: with ``StepConcurrencyLevel`` > 1 would otherwise run them at the same time).
    sequential: bool = False

    def uploads(self) -> List[Tuple[str, bytes]]:
        """``(s3 uri, body)`` of every file, the code first and the request record last.

        Returns
        -------
        list of tuple
            In upload order.
        """
        return [(self.code_prefix + name, body) for name, body in self.files.items()]

    def describe(self) -> Dict[str, Any]:
        """The plan as ``--dry-run`` prints it.

        Returns
        -------
        dict
            The uploads (URI, size, SHA-256) and the EMR request.
        """
        return {
            "code_prefix": self.code_prefix,
            "uploads": [
                {"uri": uri, "bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
                for uri, body in self.uploads()
            ],
            "operation": self.operation,
            "request": self.request,
        }


def plan_submit(args: argparse.Namespace, step_concurrency: int = 1) -> SubmitPlan:
    """Validate the ``submit`` options and jobs and build the uploads and the EMR request.

    Parameters
    ----------
    args
        Parsed ``segmentation emr submit`` options.
    step_concurrency
        The running cluster's ``StepConcurrencyLevel`` (``DescribeCluster``); 1 for a new
        cluster and for ``--dry-run``, which calls nothing.

    Returns
    -------
    SubmitPlan
        What to upload and the ``RunJobFlow`` or ``AddJobFlowSteps`` request.
    """
    jobs = split_jobs(args.job)
    parsed = [validate_job(job, number) for number, job in enumerate(jobs, 1)]
    check_cluster_locations(parsed, new_cluster=args.cluster_id is None)
    bucket, key = split_s3_uri(args.code_uri, "--code-uri")
    if args.log_uri is not None:
        split_s3_uri(args.log_uri, "--log-uri")
    project_dir = find_project_dir(args.project_dir)
    emr_dir = project_dir / "emr"
    files = code_bundle(project_dir)
    version = f"segmentation-{__version__}-{bundle_digest(files)[:12]}"
    code_prefix = join_uri(f"s3://{bucket}", key, version) + "/"

    sets = dict(args.set)
    variables: Dict[str, str] = {"CODE_PREFIX": code_prefix, "PACKAGE_VERSION": __version__}
    sequential = False
    if args.cluster_id is None:
        action = args.action_on_failure or "TERMINATE_CLUSTER"
    elif step_concurrency > 1:
        if args.action_on_failure in SERIAL_ONLY_ACTIONS:
            raise EmrError(
                f"--action-on-failure {args.action_on_failure}: cluster {args.cluster_id} runs "
                f"up to {step_concurrency} steps at once (StepConcurrencyLevel), and EMR accepts "
                "only CONTINUE there; leave the flag out (submit then runs the steps one after "
                "another), or use a cluster with StepConcurrencyLevel 1"
            )
        if len(jobs) > 1 and args.no_wait:
            raise EmrError(
                f"cluster {args.cluster_id} runs up to {step_concurrency} steps at once "
                "(StepConcurrencyLevel), so chained steps are submitted one after another, each "
                "once the previous one completed: that needs the wait; drop --no-wait, or "
                "submit one step at a time"
            )
        action = "CONTINUE"
        sequential = len(jobs) > 1
    else:
        action = args.action_on_failure or ("CONTINUE" if len(jobs) == 1 else "CANCEL_AND_WAIT")
    variables["ACTION_ON_FAILURE"] = action

    step_templates = {}
    for command in {job[0] for job in jobs}:
        path = emr_dir / "steps" / f"{command}.json"
        document = load_json(path)
        if not (isinstance(document, list) and len(document) == 1):
            raise EmrError(f"{path}: expected a list with one step")
        step_templates[command] = (document[0], str(path))

    cluster_path = Path(args.cluster_config) if args.cluster_config else emr_dir / "cluster.json"
    known = {
        name
        for command, (template, source) in step_templates.items()
        for name in placeholders(step_prefix(template, command, source))
    }
    cluster_template = None
    if args.cluster_id is None:
        if args.log_uri is None:
            raise EmrError("a new cluster needs --log-uri s3://bucket/logs/ (its step logs go "
                           "there); or add the steps to a running cluster with --cluster-id")
        cluster_template = load_json(cluster_path)
        known |= set(placeholders(cluster_template))
        if args.max_minutes is not None and "MAX_MINUTES" not in known:
            log.warning("%s has no ${MAX_MINUTES} (emr/cluster.json passes it to the bootstrap "
                        "action): --max-minutes is then kept only while submit waits",
                        cluster_path)
        variables["LOG_URI"] = args.log_uri
        if args.name is not None:
            variables["CLUSTER_NAME"] = args.name
        if args.max_minutes is not None:
            variables["MAX_MINUTES"] = str(args.max_minutes)
    else:
        for flag, value in (("--log-uri", args.log_uri), ("--name", args.name),
                            ("--cluster-config", args.cluster_config),
                            ("--max-minutes", args.max_minutes)):
            if value is not None:
                raise EmrError(f"{flag} applies to a new cluster, not to --cluster-id")
    reserved = sorted(set(sets) & set(RESERVED_PLACEHOLDERS))
    if reserved:
        raise EmrError(f"--set {reserved[0]}: filled by submit itself "
                       f"(use {RESERVED_PLACEHOLDERS[reserved[0]]})")
    unknown = sorted(set(sets) - known)
    if unknown:
        settable = ", ".join(sorted(known - set(RESERVED_PLACEHOLDERS)))
        raise EmrError(f"--set {unknown[0]}: no such placeholder in the definitions "
                       f"(settable: {settable})")
    variables.update(sets)

    steps = [
        build_step(step_templates[job[0]][0], job, variables, step_templates[job[0]][1])
        for job in jobs
    ]
    if cluster_template is None:
        operation = "AddJobFlowSteps"
        request: Dict[str, Any] = {"JobFlowId": args.cluster_id, "Steps": steps}
    else:
        operation = "RunJobFlow"
        request = render(cluster_template, variables, str(cluster_path))
        request["Steps"] = steps
    record = json.dumps(request, indent=2, sort_keys=True).encode()
    files[f"requests/{operation}-{hashlib.sha256(record).hexdigest()[:12]}.json"] = record
    return SubmitPlan(code_prefix=code_prefix, files=files, operation=operation, request=request,
                      sequential=sequential)


# --------------------------------------------------------------------------- AWS


def aws_session(region: Optional[str] = None, profile: Optional[str] = None) -> Any:
    """A boto3 session; boto3 is imported here, so only the AWS-calling paths need it.

    Parameters
    ----------
    region
        AWS region (default: the profile's or the environment's).
    profile
        Named profile of the AWS config (default: the environment's).

    Returns
    -------
    boto3.session.Session
        The session.
    """
    try:
        import boto3
        from botocore.exceptions import BotoCoreError
    except ImportError:
        raise EmrError("boto3 is not installed: pip install 'segmentation[emr]'") from None
    try:
        return boto3.session.Session(region_name=region, profile_name=profile)
    except BotoCoreError as error:
        raise EmrError(str(error)) from None


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turn AWS errors (no credentials, access denied, no such cluster) into one line.

    Yields
    ------
    None
        Inside the block, botocore's errors become :class:`EmrError`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise EmrError(f"AWS: {error}") from None


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _now() -> float:
    return time.monotonic()


def _step_name(step: Mapping[str, Any]) -> str:
    return str(step.get("Name") or step.get("Id"))


def step_report(step: Mapping[str, Any], cluster_id: str, log_uri: Optional[str]) -> List[str]:
    """Lines describing a step: its state and log location, and why it failed.

    Parameters
    ----------
    step
        ``describe_step``'s ``Step`` (or a ``list_steps`` summary).
    cluster_id
        Its cluster.
    log_uri
        The cluster's ``LogUri``.

    Returns
    -------
    list of str
        ``step <id> (<name>): <STATE>, logs <uri>`` and, when it failed, its reason, message
        and log file.
    """
    status = step["Status"]
    lines = [
        f"step {step['Id']} ({_step_name(step)}): {status['State']}, "
        f"logs {step_log_uri(log_uri, cluster_id, step['Id'])}"
    ]
    failure = status.get("FailureDetails") or {}
    if status["State"] in FAILED_STEP_STATES:
        reason = failure.get("Reason") or (status.get("StateChangeReason") or {}).get("Message")
        if reason:
            lines.append(f"  reason: {reason}")
        if failure.get("Message"):
            lines.append(f"  message: {failure['Message']}")
        if failure.get("LogFile"):
            lines.append(f"  log file: {join_uri(failure['LogFile'])}")
    return lines


def wait_for_steps(
    emr: Any,
    cluster_id: str,
    step_ids: Sequence[str],
    poll_seconds: float = 30.0,
    out: Callable[[str], None] = print,
    max_minutes: Optional[int] = None,
    started: Optional[float] = None,
) -> int:
    """Poll the cluster and its steps until every step ends; report each step.

    A line is logged per state change of the cluster and of each step; at the end each step's
    final state and log location are printed (with the failure's reason and log file).

    Parameters
    ----------
    emr
        A boto3 EMR client.
    cluster_id
        The cluster.
    step_ids
        The steps to follow, in order; at least one.
    poll_seconds
        Seconds between polls.
    out
        Where the final report goes (default: stdout).
    max_minutes
        Terminate the cluster (``TerminateJobFlows``) once it is older than this, then wait for
        it to end; ``None``: never.
    started
        When the cluster was started (:func:`_now`); default: now.

    Returns
    -------
    int
        0 when every step completed, :data:`EXIT_STEP_FAILED` otherwise (also when
        ``max_minutes`` terminated the cluster), and :data:`EXIT_INTERRUPTED` when the wait is
        interrupted (Ctrl-C; the steps go on).
    """
    if not step_ids:
        raise EmrError(f"no step of cluster {cluster_id} to wait for")
    deadline = None
    if max_minutes is not None:
        deadline = (_now() if started is None else started) + max_minutes * 60
    try:
        return _wait(emr, cluster_id, step_ids, poll_seconds, out, deadline, max_minutes)
    except KeyboardInterrupt:
        out(f"stopped waiting; the steps go on: segmentation emr status --cluster-id "
            f"{cluster_id} --wait")
        return EXIT_INTERRUPTED


def _wait(
    emr: Any, cluster_id: str, step_ids: Sequence[str], poll_seconds: float,
    out: Callable[[str], None], deadline: Optional[float] = None,
    max_minutes: Optional[int] = None,
) -> int:
    seen: Dict[str, str] = {}
    cluster_state = ""
    terminating = False
    while True:
        with aws_errors():
            cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
            steps = [
                emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
                for step_id in step_ids
            ]
        state = cluster["Status"]["State"]
        if state != cluster_state:
            log.info("cluster %s: %s", cluster_id, state)
            cluster_state = state
        for step in steps:
            step_state = step["Status"]["State"]
            if seen.get(step["Id"]) != step_state:
                log.info("step %s (%s): %s", step["Id"], _step_name(step), step_state)
                seen[step["Id"]] = step_state
        done = all(step["Status"]["State"] in TERMINAL_STEP_STATES for step in steps)
        if done or state in ENDED_CLUSTER_STATES:
            break
        if deadline is not None and not terminating and _now() >= deadline:
            out(f"cluster {cluster_id} ran past --max-minutes {max_minutes}: terminating it")
            log.warning("cluster %s: --max-minutes %s reached, TerminateJobFlows",
                        cluster_id, max_minutes)
            with aws_errors():
                emr.terminate_job_flows(JobFlowIds=[cluster_id])
            terminating = True
            continue
        _sleep(poll_seconds)
    log_uri = cluster.get("LogUri")
    for step in steps:
        for line in step_report(step, cluster_id, log_uri):
            out(line)
    if not done:
        reason = cluster["Status"].get("StateChangeReason") or {}
        out(f"cluster {cluster_id} ended ({state}) before its steps: "
            f"{reason.get('Code', '')} {reason.get('Message', '')}".rstrip())
        return EXIT_STEP_FAILED
    if any(step["Status"]["State"] in FAILED_STEP_STATES for step in steps):
        return EXIT_STEP_FAILED
    return 0


def running_cluster(emr: Any, cluster_id: str) -> Dict[str, Any]:
    """``DescribeCluster`` of the cluster ``--cluster-id`` names, refused when it is closing.

    Parameters
    ----------
    emr
        A boto3 EMR client.
    cluster_id
        The cluster.

    Returns
    -------
    dict
        ``DescribeCluster``'s ``Cluster`` (``StepConcurrencyLevel`` among its fields).
    """
    with aws_errors():
        cluster: Dict[str, Any] = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    state = cluster["Status"]["State"]
    if state in CLOSING_CLUSTER_STATES:
        raise EmrError(f"cluster {cluster_id} is {state}: steps cannot be added; start a new "
                       "cluster (leave out --cluster-id, pass --log-uri)")
    return cluster


def new_cluster_step_ids(
    emr: Any, cluster_id: str, count: int, poll_seconds: float
) -> List[str]:
    """The ids of the ``count`` steps a new cluster was started with, oldest first.

    ``ListSteps`` right after ``RunJobFlow`` can return fewer steps than were sent (or none):
    it is asked again, ``poll_seconds`` apart (at most 5 s), up to :data:`LIST_STEPS_ATTEMPTS`
    times, so the wait never follows fewer steps than were submitted.

    Parameters
    ----------
    emr
        A boto3 EMR client.
    cluster_id
        The new cluster.
    count
        How many steps ``RunJobFlow`` sent.
    poll_seconds
        The wait's poll interval.

    Returns
    -------
    list of str
        The step ids in submission order.

    Raises
    ------
    EmrError
        When the cluster still lists fewer steps after the last attempt.
    """
    listed: List[Dict[str, Any]] = []
    for attempt in range(LIST_STEPS_ATTEMPTS):
        if attempt:
            _sleep(min(poll_seconds, 5.0))
        with aws_errors():
            listed = []
            for page in emr.get_paginator("list_steps").paginate(ClusterId=cluster_id):
                listed.extend(page["Steps"])
        if len(listed) >= count:
            # A new cluster's steps are exactly ours; ListSteps returns the newest first.
            return [step["Id"] for step in reversed(listed)][:count]
        log.info("cluster %s lists %d of its %d steps yet", cluster_id, len(listed), count)
    raise EmrError(
        f"cluster {cluster_id} was started, but lists {len(listed)} of its {count} steps after "
        f"{LIST_STEPS_ATTEMPTS} ListSteps calls; follow it with: segmentation emr status "
        f"--cluster-id {cluster_id} --wait"
    )


def submit_one_by_one(
    emr: Any, cluster_id: str, steps: Sequence[Mapping[str, Any]], poll_seconds: float,
    out: Callable[[str], None],
) -> int:
    """Add steps one at a time, each once the previous one completed, and wait for each.

    For a running cluster with ``StepConcurrencyLevel`` > 1, where EMR would run steps added
    together at the same time and accepts only ``ActionOnFailure: CONTINUE``: a step that does
    not complete keeps the later ones from being submitted at all.

    Parameters
    ----------
    emr
        A boto3 EMR client.
    cluster_id
        The running cluster.
    steps
        The steps, in order.
    poll_seconds
        Seconds between polls.
    out
        Where results go.

    Returns
    -------
    int
        As :func:`wait_for_steps`, for the first step that did not complete (0: all did).
    """
    for number, step in enumerate(steps, 1):
        with aws_errors():
            (step_id,) = emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"]
        out(f"step {step_id} ({step['Name']}) submitted")
        code = wait_for_steps(emr, cluster_id, [step_id], poll_seconds, out)
        if code != 0:
            rest = [str(later["Name"]) for later in steps[number:]]
            if rest:
                out(f"not submitted, as step {number} did not complete: {', '.join(rest)}")
            return code
    return 0


def submit(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """``segmentation emr submit``: validate, upload, start or add the steps, wait.

    Parameters
    ----------
    args
        Parsed options.
    out
        Where results go (default: stdout).

    Returns
    -------
    int
        The exit status.
    """
    plan = plan_submit(args)
    if args.dry_run:
        out(json.dumps(plan.describe(), indent=2))
        return 0
    session = aws_session(args.region, args.profile)
    with aws_errors():
        s3 = session.client("s3")
        emr = session.client("emr")
    if plan.operation == "AddJobFlowSteps":
        # Before anything is uploaded: a closing cluster, or one that runs steps concurrently
        # (where CANCEL_AND_WAIT is rejected and chained steps would overlap), changes the plan.
        level = int(running_cluster(emr, args.cluster_id).get("StepConcurrencyLevel") or 1)
        if level > 1:
            log.info("cluster %s runs up to %d steps at once (StepConcurrencyLevel): "
                     "ActionOnFailure CONTINUE%s", args.cluster_id, level,
                     ", one step after another" if len(plan.request["Steps"]) > 1 else "")
            plan = plan_submit(args, step_concurrency=level)
    with aws_errors():
        for uri, body in plan.uploads():
            bucket, key = split_s3_uri(uri, "--code-uri")
            s3.put_object(Bucket=bucket, Key=key, Body=body)
            log.info("uploaded %s (%s bytes)", uri, f"{len(body):,}")
    steps = plan.request["Steps"]
    started: Optional[float] = None
    if plan.operation == "RunJobFlow":
        with aws_errors():
            cluster_id = emr.run_job_flow(**plan.request)["JobFlowId"]
        started = _now()
        out(f"started cluster {cluster_id} (terminates after its steps"
            + (f", or after {args.max_minutes} minutes)" if args.max_minutes else ")"))
        step_ids = new_cluster_step_ids(emr, cluster_id, len(steps), args.poll_seconds)
    elif plan.sequential:
        return submit_one_by_one(emr, args.cluster_id, steps, args.poll_seconds, out)
    else:
        cluster_id = args.cluster_id
        with aws_errors():
            step_ids = emr.add_job_flow_steps(**plan.request)["StepIds"]
    for step_id, step in zip(step_ids, steps):
        out(f"step {step_id} ({step['Name']}) submitted")
    if args.no_wait:
        out(f"follow with: segmentation emr status --cluster-id {cluster_id} --wait")
        return 0
    return wait_for_steps(emr, cluster_id, step_ids, args.poll_seconds, out,
                          max_minutes=args.max_minutes if started is not None else None,
                          started=started)


def status(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    """``segmentation emr status``: the cluster's state and its steps' states and logs.

    Parameters
    ----------
    args
        Parsed options.
    out
        Where results go (default: stdout).

    Returns
    -------
    int
        0; with ``--step-id`` or ``--wait``, :data:`EXIT_STEP_FAILED` when a step failed.
    """
    session = aws_session(args.region, args.profile)
    with aws_errors():
        emr = session.client("emr")
        cluster = emr.describe_cluster(ClusterId=args.cluster_id)["Cluster"]
        if args.step_id:
            steps = [emr.describe_step(ClusterId=args.cluster_id, StepId=step_id)["Step"]
                     for step_id in args.step_id]
        else:
            steps = []
            for page in emr.get_paginator("list_steps").paginate(ClusterId=args.cluster_id):
                steps.extend(page["Steps"])
            steps.reverse()  # oldest first
    reason = cluster["Status"].get("StateChangeReason") or {}
    line = f"cluster {args.cluster_id} ({cluster.get('Name', '')}): {cluster['Status']['State']}"
    if reason.get("Message"):
        line += f" ({reason['Message']})"
    out(line)
    if args.wait:
        pending = [step["Id"] for step in steps]
        if pending:
            return wait_for_steps(emr, args.cluster_id, pending, args.poll_seconds, out)
    for step in steps:
        for text in step_report(step, args.cluster_id, cluster.get("LogUri")):
            out(text)
    failed = any(step["Status"]["State"] in FAILED_STEP_STATES for step in steps)
    return EXIT_STEP_FAILED if failed and (args.step_id or args.wait) else 0


# --------------------------------------------------------------------------- command line


def configure_logging(verbose: bool = False) -> None:
    """Progress lines to stderr, as the Spark commands log (without importing Spark).

    Parameters
    ----------
    verbose
        Debug level instead of info.
    """
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S", stream=sys.stderr,
    )
    logging.getLogger("segmentation").setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_command(args: argparse.Namespace) -> int:
    """Run ``segmentation emr submit|status``; return the exit status.

    Parameters
    ----------
    args
        Parsed ``segmentation emr ...`` options.

    Returns
    -------
    int
        0 done, 2 bad options or an AWS error (one ``error:`` line), 3 a step failed.
    """
    configure_logging(args.verbose)
    try:
        return submit(args) if args.emr_command == "submit" else status(args)
    except SegmentationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
