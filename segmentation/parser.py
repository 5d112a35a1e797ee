"""The command line of every ``segmentation`` command.

It is shared by the console script, ``jobs/`` and ``segmentation emr`` (which checks each step's
flags with it before anything is uploaded).

It imports nothing heavy (no Spark, no boto3): building the parser is cheap everywhere. The
options of the Spark stages (:class:`~segmentation.sources.FeatureOptions`, ...) are made from
the parsed flags by :func:`feature_options` and :func:`cluster_options`.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any, List, Tuple

from segmentation import __version__

#: ``--source`` values (:data:`segmentation.sources.SOURCE_NAMES`; a test keeps them equal).
SOURCE_CHOICES = ("avito", "retail", "events")

#: ``--by`` values: the segmentations of a run's assignments.
GROUPINGS = ("segment", "rfm_segment", "value_tier")

#: EMR step ``ActionOnFailure`` values (``segmentation emr submit --action-on-failure``).
ACTIONS_ON_FAILURE = ("TERMINATE_CLUSTER", "CANCEL_AND_WAIT", "CONTINUE")

def parse_k(text: str) -> Tuple[int, ...]:
    """Parse ``--k``: ``4``, ``2-10`` or ``2,4,8`` (ranges may be mixed: ``2-4,8``)."""
    ks: List[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                low, high = (int(x) for x in part.split("-", 1))
                ks.extend(range(low, high + 1))
            else:
                ks.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a k, range or list of k: {text!r}") from None
    if not ks or min(ks) < 2:
        raise argparse.ArgumentTypeError(f"k must be 2 or more: {text!r}")
    return tuple(sorted(set(ks)))


def parse_date(text: str) -> dt.date:
    """Parse ``--reference-date`` (``YYYY-MM-DD``)."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def parse_fraction(text: str) -> float:
    """Parse ``--sample-fraction``: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]: {text!r}")
    return value


#: Default ``--max-reject-fraction`` (:data:`segmentation.sources.common
#: .DEFAULT_MAX_REJECT_FRACTION`; a test keeps them equal).
DEFAULT_MAX_REJECT_FRACTION = 0.05


def parse_share(text: str) -> float:
    """Parse ``--max-reject-fraction``: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]: {text!r}")
    return value


def parse_delimiter(text: str) -> str:
    """Parse ``--delimiter``: one character (``tab`` or a backslash-t for a tab)."""
    value = "\t" if text in ("\\t", "tab") else text
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"must be one character: {text!r}")
    return value


def parse_conf(text: str) -> Tuple[str, str]:
    """Parse ``--conf KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE: {text!r}")
    return key, value


def parse_stability_seeds(text: str) -> int:
    """Parse ``--stability-seeds``: 0 (off) or a whole number of 2 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0 or value == 1:
        raise argparse.ArgumentTypeError(f"must be 0 (off) or 2 or more: {text!r}")
    return value


def at_least_two(text: str) -> int:
    """Parse a whole number of 2 or more."""
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"must be 2 or more: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """Parse a whole number of 0 or more."""
    value = positive_int(text) if text.strip() not in ("0", "+0", "-0") else 0
    return value


def positive_int(text: str) -> int:
    """Parse a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text!r}")
    return value


def _add_spark_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Spark")
    group.add_argument(
        "--master",
        help="Spark master, e.g. local[4] or yarn (default: spark-submit's, else local[*])",
    )
    group.add_argument(
        "--conf", type=parse_conf, action="append", default=[], metavar="KEY=VALUE",
        help="extra Spark setting, repeatable (e.g. --conf spark.driver.memory=8g)",
    )
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _add_io_flags(parser: argparse.ArgumentParser, sources: bool = True) -> None:
    if sources:
        parser.add_argument(
            "--source", required=True, choices=SOURCE_CHOICES,
            help="avito: Avito Context Ad Clicks (RFE); retail: UCI Online Retail II or I "
            "invoices (RFM); events: any event log with a column mapping (--customer-col ...)",
        )
    parser.add_argument(
        "--input", required=True,
        help="file, folder or glob, local or s3:// (Avito: database.sqlite, or a folder with "
        "trainSearchStream and SearchInfo tables as Parquet/CSV/TSV)",
    )
    parser.add_argument(
        "--output", required=True, help="output folder, local or s3:// (see README: outputs)"
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="publish a new run in --output, which holds an earlier one (default: refuse)",
    )
    _add_keep_runs(parser)


def _add_keep_runs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep-runs", type=positive_int, default=2, metavar="N",
        help="after publishing, keep the N newest finished runs under OUTPUT/runs/ and delete "
        "older ones (default 2: the new run and the one it replaced)",
    )


def _add_format_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--format", dest="input_format", default="auto",
        choices=("auto", "sqlite", "parquet", "csv", "tsv"),
        help="input format (default: from the file names)",
    )
    parser.add_argument(
        "--sqlite-partitions", type=positive_int,
        help="parallel rowid-range partitions per SQLite table (default: by table size)",
    )


def _add_input_check_flags(parser: argparse.ArgumentParser) -> None:
    """``--encoding``, ``--delimiter`` (CSV/TSV text) and ``--max-reject-fraction``."""
    parser.add_argument(
        "--encoding", default="UTF-8", metavar="CHARSET",
        help="character set of CSV/TSV input, e.g. latin1 for UCI Online Retail I (default: "
        "UTF-8; text that is not valid in it stops the job with a hint)",
    )
    parser.add_argument(
        "--delimiter", type=parse_delimiter, metavar="CHAR",
        help="field separator of CSV/TSV input, e.g. ';' (default: ',' for CSV, tab for TSV)",
    )
    parser.add_argument(
        "--max-reject-fraction", type=parse_share, default=DEFAULT_MAX_REJECT_FRACTION,
        metavar="F",
        help="stop when more than this share of rows is rejected as errors (unreadable dates, "
        "quantities, prices, amounts); rows dropped by the documented cleaning rules do not "
        f"count; rejected rows are written to OUTPUT/rejected/ (default: "
        f"{DEFAULT_MAX_REJECT_FRACTION:g})",
    )


def _add_feature_flags(parser: argparse.ArgumentParser) -> None:
    _add_format_flags(parser)
    _add_input_check_flags(parser)
    parser.add_argument(
        "--reference-date", type=parse_date, metavar="YYYY-MM-DD",
        help="compute recency as of this date; later events are excluded "
        "(default: the day after the latest event)",
    )
    parser.add_argument(
        "--timestamp-format", metavar="PATTERN",
        help="Spark datetime pattern of the input's dates when they are not "
        "yyyy-MM-dd HH:mm:ss[.S], ISO 8601 or M/d/yyyy H:mm",
    )
    retail = parser.add_argument_group("retail")
    retail.add_argument(
        "--cancellations", choices=("net", "drop"), default="net",
        help="net: returns (invoices starting with C) reduce monetary (default); drop: ignore them",
    )
    retail.add_argument(
        "--non-product", choices=("exclude", "include"), default="exclude",
        help="lines with stock codes POST, M, DOT, BANK CHARGES, ... (default: exclude)",
    )
    events = parser.add_argument_group("events (column mapping)")
    events.add_argument("--customer-col", default="customer_id", help="customer id column")
    events.add_argument("--timestamp-col", default="timestamp", help="event time column")
    events.add_argument("--amount-col", help="money amount column (gives monetary)")
    events.add_argument(
        "--session-col", help="session/order/invoice id column (frequency counts distinct ones)"
    )


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("clustering")
    group.add_argument(
        "--k", dest="ks", type=parse_k, default=tuple(range(2, 11)), metavar="K",
        help="k to try: 4, 2-10 or 2,4,8 (default: 2-10)",
    )
    group.add_argument(
        "--select", choices=("silhouette", "elbow", "stable"), default="silhouette",
        help="how to choose k from the sweep (default: best silhouette; one k: that k); "
        "stable: the most stable k among those within 0.05 of the best silhouette "
        "(implies --stability-seeds 3 unless given)",
    )
    group.add_argument(
        "--algorithm", choices=("kmeans", "bisecting-kmeans", "gmm"), default="kmeans",
        help="MLlib estimator of the sweep and the final model: KMeans, BisectingKMeans or "
        "GaussianMixture (default: kmeans)",
    )
    group.add_argument(
        "--stability-seeds", type=parse_stability_seeds, metavar="N",
        help="per k, also fit N seeds on a sample and report their mean adjusted Rand index as "
        "stability; multiplies the fits by N (default: 0, off; 3 with --select stable)",
    )
    group.add_argument(
        "--stability-sample", type=at_least_two, default=20_000, metavar="CUSTOMERS",
        help="at most this many customers, a seeded sample, for the stability fits "
        "(default: 20000)",
    )
    group.add_argument(
        "--parallelism", type=positive_int, default=None, metavar="N",
        help="fit up to N values of k at once (concurrent Spark jobs; results do not depend on "
        "it; default: 4)",
    )
    group.add_argument(
        "--transform", choices=("log-standard", "standard", "none"), default="log-standard",
        help="feature scaling before clustering (default: log1p then standardise)",
    )
    group.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    group.add_argument(
        "--sample-fraction", type=parse_fraction, metavar="F",
        help="sweep k on this fraction of customers (the final model fits all of them; "
        "default: all, or --sweep-sample of them)",
    )
    group.add_argument(
        "--sweep-sample", type=non_negative_int, default=50_000, metavar="CUSTOMERS",
        help="with more customers than this and no --sample-fraction, sweep k on a seeded sample "
        "of about this many (the final model fits all of them); 0: always everyone "
        "(default: 50000)",
    )
    group.add_argument(
        "--max-iter", type=positive_int, default=20,
        help="maximum iterations of each fit (default: 20)",
    )
    group.add_argument(
        "--features", dest="feature_columns",
        type=lambda text: tuple(c.strip() for c in text.split(",") if c.strip()),
        help="comma-separated columns to cluster on (default: the source's R, F, M/E)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (``segmentation <command> --help``)."""
    parser = argparse.ArgumentParser(
        prog="segmentation",
        description="Behavioural customer segmentation on Apache Spark: per-customer RFM/RFE "
        "features, KMeans over a range of k, segment profiles.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ingest = commands.add_parser(
        "ingest", help="convert SQLite/CSV/TSV tables to Parquet (parallel reads)",
        description="Convert the input's tables to Parquet under OUTPUT/tables/<table>/. "
        "SQLite tables are read in parallel rowid ranges, their pages decoded by the tasks.",
    )
    _add_io_flags(ingest)
    _add_format_flags(ingest)
    _add_spark_flags(ingest)

    features = commands.add_parser(
        "features", help="per-customer features (RFM / RFE) to OUTPUT/features",
        description="Compute per-customer features in one pass and write OUTPUT/features/.",
    )
    _add_io_flags(features)
    _add_feature_flags(features)
    _add_spark_flags(features)

    cluster = commands.add_parser(
        "cluster", help="KMeans over a range of k on a features table",
        description="Cluster a features table (OUTPUT/features of the features command, or "
        "that OUTPUT folder): k sweep, assignments, profiles, model.",
    )
    _add_io_flags(cluster, sources=False)
    _add_cluster_flags(cluster)
    _add_spark_flags(cluster)

    run = commands.add_parser(
        "run", help="features + cluster in one job",
        description="Read the input, compute features, sweep k, and write every output.",
    )
    _add_io_flags(run)
    _add_feature_flags(run)
    _add_cluster_flags(run)
    _add_spark_flags(run)

    score = commands.add_parser(
        "score", help="apply a saved run to new data (no refit)",
        description="Score a new period with a saved run: the same cleaning, features, "
        "scaler, centroids, cluster ranking, segment names, score cut points and value tiers. "
        "Writes features, assignments, profiles, run.json, the report, manifest.json.",
    )
    score.add_argument(
        "--model", required=True, metavar="RUN_DIR",
        help="output folder of an earlier run (holds run.json and model/), local or s3://",
    )
    score.add_argument(
        "--source", choices=SOURCE_CHOICES,
        help="the saved run's source, if given it must match (default: the run's)",
    )
    _add_io_flags(score, sources=False)
    _add_format_flags(score)
    _add_input_check_flags(score)
    score.add_argument(
        "--reference-date", type=parse_date, metavar="YYYY-MM-DD",
        help="compute recency as of this date (default: the day after the new data's latest "
        "event, the run's own rule)",
    )
    _add_spark_flags(score)

    audiences = commands.add_parser(
        "audiences", help="one CSV of customer ids per segment, for ad platforms",
        description="Write RUN_DIR/audiences/<name>.csv (header customer_id, one id per line) "
        "for each segment of a finished run, and audiences/counts.json, in one Spark job.",
    )
    audiences.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="output folder of run or score"
    )
    audiences.add_argument(
        "--by", choices=GROUPINGS, default="segment",
        help="which segmentation: the clusters (segment, default), the named RFM grid "
        "(rfm_segment) or the value tiers (value_tier)",
    )
    audiences.add_argument("--gzip", action="store_true", help="write <name>.csv.gz")
    audiences.add_argument(
        "--overwrite", action="store_true", help="replace earlier audiences of the run"
    )
    _add_spark_flags(audiences)

    compare = commands.add_parser(
        "compare", help="segment migration between two runs",
        description="Count the customers moving from each segment of RUN_A to each segment of "
        "RUN_B (with customers new in B and lost from A); write migration/ and migration.json "
        "and add a migration heatmap to the report.",
    )
    compare.add_argument("run_a", metavar="RUN_A", help="the earlier run's output folder")
    compare.add_argument("run_b", metavar="RUN_B", help="the later run's output folder")
    compare.add_argument(
        "--output", help="where to write (default: RUN_B, whose report gains the heatmap)"
    )
    compare.add_argument(
        "--by", choices=GROUPINGS, default="segment",
        help="segment (default), rfm_segment or value_tier",
    )
    compare.add_argument(
        "--overwrite", action="store_true", help="replace an earlier comparison in the output"
    )
    _add_keep_runs(compare)
    _add_spark_flags(compare)

    generate = commands.add_parser(
        "generate", help="generate Avito-shaped test data",
        description="Generate data in the Kaggle Avito Context Ad Clicks schema.",
    )
    kinds = generate.add_subparsers(dest="kind", metavar="KIND", required=True)
    avito = kinds.add_parser("avito", help="trainSearchStream + SearchInfo")
    avito.add_argument("--users", type=positive_int, default=1_000, help="users (default 1000)")
    avito.add_argument(
        "--searches", type=positive_int, default=20_000, help="searches (default 20000)"
    )
    avito.add_argument("--format", choices=("sqlite", "parquet", "tsv"), default="sqlite")
    avito.add_argument(
        "--out", required=True, help="database file (sqlite) or folder (parquet, tsv)"
    )
    avito.add_argument("--seed", type=int, default=42)
    avito.add_argument("--days", type=positive_int, default=26, help="days of searches")
    avito.add_argument("--gzip", action="store_true", help="gzip the TSV files")
    avito.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    _add_emr_parser(commands)
    return parser


def feature_options(args: argparse.Namespace) -> Any:
    """The :class:`~segmentation.sources.FeatureOptions` of parsed arguments."""
    from segmentation.io.readers import EventColumns
    from segmentation.sources import FeatureOptions

    return FeatureOptions(
        source=args.source,
        input=args.input,
        input_format=args.input_format,
        reference_date=args.reference_date,
        cancellations=args.cancellations,
        non_product=args.non_product,
        timestamp_format=args.timestamp_format,
        event_columns=EventColumns(
            customer_id=args.customer_col, timestamp=args.timestamp_col,
            amount=args.amount_col, session_id=args.session_col,
        ),
        sqlite_partitions=args.sqlite_partitions,
        text=text_options(args),
        max_reject_fraction=args.max_reject_fraction,
    )


def text_options(args: argparse.Namespace) -> Any:
    """The :class:`~segmentation.io.readers.TextOptions` of parsed arguments."""
    from segmentation.io.readers import TextOptions

    return TextOptions(encoding=args.encoding, delimiter=args.delimiter)


def cluster_options(args: argparse.Namespace) -> Any:
    """The :class:`~segmentation.pipeline.ClusterOptions` of parsed arguments."""
    from segmentation.pipeline import ClusterOptions

    return ClusterOptions(
        ks=args.ks, select=args.select, transform=args.transform, seed=args.seed,
        sample_fraction=args.sample_fraction, max_iter=args.max_iter,
        feature_columns=args.feature_columns, algorithm=args.algorithm,
        stability_seeds=args.stability_seeds, stability_sample=args.stability_sample,
        parallelism=args.parallelism, sweep_sample=args.sweep_sample,
    )


def _add_emr_parser(commands: Any) -> None:
    """Add ``emr submit`` and ``emr status`` to the ``segmentation`` command's subparsers.

    Parameters
    ----------
    commands
        The ``add_subparsers()`` action of :func:`build_parser`.
    """
    emr = commands.add_parser(
        "emr", help="run the jobs as Amazon EMR steps (needs the emr extra: boto3)",
        description="Submit the jobs as Amazon EMR steps and follow them. Exit status: 0 done, "
        "2 bad options or an AWS error, 3 a step failed or was cancelled.",
    )
    actions = emr.add_subparsers(dest="emr_command", metavar="ACTION", required=True)

    submit_parser = actions.add_parser(
        "submit", help="upload the code, then start a cluster or add steps, and wait",
        description="Upload the package, jobs/ and emr/bootstrap.sh to a versioned prefix of "
        "--code-uri, then run the job(s) given after -- as steps: on a new transient cluster "
        "(emr/cluster.json) or, with --cluster-id, on a running one. Each job is the command "
        "and its flags, checked by the same parser as on the cluster: "
        "-- run --source retail --input s3://b/in/ --output s3://b/out/, or several separated "
        "by --: -- ingest ... -- features ... -- cluster ...",
        usage="%(prog)s --code-uri S3URI [options] -- COMMAND FLAGS [-- COMMAND FLAGS ...]",
    )
    submit_parser.add_argument(
        "--code-uri", required=True, metavar="S3URI",
        help="S3 folder for the code; a subfolder segmentation-<version>-<hash>/ is written",
    )
    submit_parser.add_argument(
        "--cluster-id", metavar="ID",
        help="add the steps to this running cluster (default: start a transient cluster)",
    )
    submit_parser.add_argument(
        "--log-uri", metavar="S3URI", help="new cluster: S3 folder for its logs (required then)"
    )
    submit_parser.add_argument("--name", help="new cluster: its name (default: segmentation)")
    submit_parser.add_argument(
        "--cluster-config", metavar="PATH",
        help="new cluster: RunJobFlow template to use instead of emr/cluster.json",
    )
    submit_parser.add_argument(
        "--set", type=parse_conf, action="append", default=[], metavar="NAME=VALUE",
        help="value of a ${NAME} placeholder of the definitions, repeatable "
        "(e.g. --set SUBNET_ID=subnet-0abc --set CORE_CAPACITY=4)",
    )
    submit_parser.add_argument(
        "--action-on-failure", choices=ACTIONS_ON_FAILURE,
        help="default: TERMINATE_CLUSTER on a new cluster; on a running one CONTINUE for one "
        "step, CANCEL_AND_WAIT for several (later steps are cancelled); on a running cluster "
        "with StepConcurrencyLevel > 1 only CONTINUE is allowed, and several steps are then "
        "submitted one after another, each once the previous one completed",
    )
    submit_parser.add_argument(
        "--max-minutes", type=positive_int, metavar="N",
        help="new cluster: terminate it N minutes after it was started, whatever runs; while "
        "waiting, submit calls TerminateJobFlows, and a guard on the primary node (started by "
        "the bootstrap action) does it even when submit is gone",
    )
    submit_parser.add_argument(
        "--no-wait", action="store_true", help="return once submitted (follow with status)"
    )
    submit_parser.add_argument(
        "--dry-run", action="store_true",
        help="print the uploads and the EMR request as JSON; call nothing (no credentials)",
    )
    submit_parser.add_argument(
        "--project-dir", metavar="DIR",
        help="source checkout with jobs/ and emr/ (default: the one holding this package, "
        "else the current folder)",
    )
    _add_aws_flags(submit_parser)
    submit_parser.add_argument(
        "job", nargs=argparse.REMAINDER,
        help="after --: the job command (ingest, features, cluster, run) and its flags",
    )

    status_parser = actions.add_parser(
        "status", help="state of a cluster and of its steps, with their log locations",
        description="Print the cluster's state and each step's state and S3 log folder.",
    )
    status_parser.add_argument("--cluster-id", required=True, metavar="ID", help="the cluster")
    status_parser.add_argument(
        "--step-id", action="append", default=[], metavar="ID",
        help="only this step, repeatable (default: every step); exit 3 when it failed",
    )
    status_parser.add_argument(
        "--wait", action="store_true", help="wait until the steps end, as submit does"
    )
    _add_aws_flags(status_parser)


def _add_aws_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("AWS")
    group.add_argument("--region", help="AWS region (default: the profile's or AWS_REGION)")
    group.add_argument("--profile", help="named AWS profile (default: the environment's)")
    group.add_argument(
        "--poll-seconds", type=float, default=30.0, metavar="S",
        help="seconds between state checks while waiting (default: 30)",
    )
    group.add_argument("--verbose", action="store_true", help="debug logging")
