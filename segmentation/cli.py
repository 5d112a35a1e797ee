"""The ``segmentation`` command: ``ingest | features | cluster | run | generate | emr``.

The same parser serves the console script and the spark-submit entry points in ``jobs/``: a
flag means the same thing wherever the job runs. Errors in the input or options print one line,
``error: ...``, and exit with status 2; nothing is written to ``--output`` then.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from segmentation import __version__
from segmentation.errors import SegmentationError

log = logging.getLogger("segmentation")

EXIT_USAGE = 2


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


def parse_conf(text: str) -> Tuple[str, str]:
    """Parse ``--conf KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE: {text!r}")
    return key, value


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
            "--source", required=True, choices=("avito", "retail", "events"),
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
        help="replace an earlier run's outputs in --output (default: refuse)",
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


def _add_feature_flags(parser: argparse.ArgumentParser) -> None:
    _add_format_flags(parser)
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
        "--select", choices=("silhouette", "elbow"), default="silhouette",
        help="how to choose k from the sweep (default: best silhouette; one k: that k)",
    )
    group.add_argument(
        "--transform", choices=("log-standard", "standard", "none"), default="log-standard",
        help="feature scaling before KMeans (default: log1p then standardise)",
    )
    group.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    group.add_argument(
        "--sample-fraction", type=parse_fraction, metavar="F",
        help="sweep k on this fraction of customers (the final model fits all of them)",
    )
    group.add_argument(
        "--max-iter", type=positive_int, default=20, help="KMeans iterations (default: 20)"
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
        "SQLite tables are read in parallel rowid ranges through ADBC.",
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

    from segmentation.emr import add_parser as add_emr_parser

    add_emr_parser(commands)
    return parser


def feature_options(args: argparse.Namespace) -> Any:
    """The :class:`~segmentation.pipeline.FeatureOptions` of parsed arguments."""
    from segmentation.pipeline import FeatureOptions
    from segmentation.readers import EventColumns

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
    )


def cluster_options(args: argparse.Namespace) -> Any:
    """The :class:`~segmentation.pipeline.ClusterOptions` of parsed arguments."""
    from segmentation.pipeline import ClusterOptions

    return ClusterOptions(
        ks=args.ks, select=args.select, transform=args.transform, seed=args.seed,
        sample_fraction=args.sample_fraction, max_iter=args.max_iter,
        feature_columns=args.feature_columns,
    )


def format_profiles(profiles: Sequence[Dict[str, Any]], columns: Sequence[str]) -> str:
    """The segment profiles as a plain-text table (one line per cluster)."""
    header = ["cluster", "segment", "customers", "share"]
    if profiles and profiles[0].get("value_share") is not None:
        header.append("value share")
    header += [f"mean {c}" for c in columns]
    lines = [header]
    for row in profiles:
        line = [str(row["cluster"]), str(row["segment"]), f"{row['customers']:,}",
                f"{row['customer_share']:.1%}"]
        if "value share" in header:
            share = row.get("value_share")
            line.append("" if share is None else f"{share:.1%}")
        line += [f"{row[f'mean_{c}']:,.1f}" for c in columns]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.rjust(w) if i >= 2 else cell.ljust(w) for i, (cell, w) in
                  enumerate(zip(line, widths)))
        for line in lines
    )


def _run_generate(args: argparse.Namespace) -> int:
    from segmentation.generate import generate_avito

    summary = generate_avito(
        out=args.out, users=args.users, searches=args.searches, fmt=args.format,
        seed=args.seed, days=args.days, gzip=args.gzip,
    )
    print(
        f"wrote {summary.path} ({summary.format}): {summary.users:,} users, "
        f"{summary.searches:,} searches, {summary.stream_rows:,} stream rows, "
        f"{summary.clicks:,} clicks, {summary.first_date} .. {summary.last_date}, "
        f"{summary.seconds:.1f} s"
    )
    return 0


def _run_spark_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from pyspark.sql import SparkSession

    from segmentation import pipeline
    from segmentation.manifest import RunManifest
    from segmentation.session import build_session

    # A session that was already running (a notebook, the test suite) is used and left running.
    owns_session = SparkSession.getActiveSession() is None
    spark = build_session(f"segmentation-{args.command}", args.master, dict(args.conf))
    try:
        manifest = RunManifest(args.command, argv)
        manifest.set(
            "parameters",
            {key: value for key, value in sorted(vars(args).items()) if key != "conf"},
        )
        if args.command == "ingest":
            from segmentation.ingest import ingest_stage

            ingest_stage(spark, args.source, args.input, args.input_format, args.output,
                         args.overwrite, manifest, args.sqlite_partitions)
        elif args.command == "features":
            pipeline.features_stage(
                spark, feature_options(args), args.output, args.overwrite, manifest
            )
        elif args.command == "cluster":
            profiles, feature_set = pipeline.cluster_only_stage(
                spark, args.input, cluster_options(args), args.output, args.overwrite, manifest
            )
            print(format_profiles(profiles, feature_set.cluster_columns))
        else:  # run
            profiles = pipeline.run_stage(
                spark, feature_options(args), cluster_options(args), args.output,
                args.overwrite, manifest,
            )
            print(format_profiles(profiles, manifest.document["clustering"]["feature_columns"]))
    finally:
        if owns_session:
            spark.stop()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command; return its exit status (0 ok, 2 bad input or options, 1 a bug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "emr":  # talks to AWS only: no Spark, no pyspark import
        from segmentation.emr import run_command

        return run_command(args)
    from segmentation.session import configure_logging

    configure_logging(args.verbose)
    started = time.monotonic()
    try:
        status = _run_generate(args) if args.command == "generate" else _run_spark_command(
            args, argv
        )
    except SegmentationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    log.info("%s finished in %.1f s", args.command, time.monotonic() - started)
    return status


if __name__ == "__main__":
    sys.exit(main())
