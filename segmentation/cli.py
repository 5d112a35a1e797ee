"""The ``segmentation`` command: ``ingest | features | cluster | run | generate | emr``.

The same parser (:mod:`segmentation.parser`) serves the console script, the spark-submit entry
points in ``jobs/`` and ``segmentation emr``: a flag means the same thing wherever the job runs.
Errors in the input or options print one line, ``error: ...``, and exit with status 2; nothing is
written to ``--output`` then.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import threading
import time
from typing import Any, Dict, Optional, Sequence

from segmentation.errors import SegmentationError
from segmentation.parser import build_parser, cluster_options, feature_options, text_options

log = logging.getLogger("segmentation")

EXIT_USAGE = 2

#: Libraries the report and the clustering import (~0.5 s and ~0.3 s): the commands that
#: write a report import them in a thread while the driver JVM starts, a wait the main thread
#: spends idle. Only leaves that import nothing of this package or of PySpark, so the two
#: threads never import a module cycle (pandas is what ``pyspark.ml.functions`` costs; the
#: 1-D k-means of the value tiers is ``ckwrap``).
REPORT_LIBRARIES = (
    "jinja2", "matplotlib.figure", "matplotlib.backends.backend_agg", "matplotlib.ticker",
    "matplotlib.patches", "matplotlib.colors", "pandas", "ckwrap",
)

#: The commands that write an HTML report.
REPORTING_COMMANDS = ("run", "cluster", "score", "compare")


def preload(modules: Sequence[str]) -> threading.Thread:
    """Import ``modules`` in a daemon thread; return it (started).

    A module that fails to import is left for the code that needs it to report.
    """

    def load() -> None:
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # the importing code reports it
                log.debug("preloading %s failed", name, exc_info=True)

    thread = threading.Thread(target=load, name="preload", daemon=True)
    thread.start()
    return thread


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


def format_audiences(document: Dict[str, Any]) -> str:
    """The audiences written, one line each: file and customers."""
    width = max([len(a["file"]) for a in document["audiences"]] + [8])
    lines = [f"{'file'.ljust(width)}  customers  segment"]
    lines += [
        f"{a['file'].ljust(width)}  {a['customers']:>9,}  {a['segment']}"
        for a in document["audiences"]
    ]
    return "\n".join(lines)


def format_migration(document: Dict[str, Any]) -> str:
    """The migration matrix as text: one line per (from, to) pair with counts and shares."""
    rows = document["migration"]
    width_from = max([len(str(r["from_segment"])) for r in rows] + [4])
    width_to = max([len(str(r["to_segment"])) for r in rows] + [2])
    lines = [
        f"{document['customers_a']:,} customers in A, {document['customers_b']:,} in B: "
        f"{document['same_segment']:,} kept their {document['by']}, "
        f"{document['new_in_b']:,} new, {document['lost_from_a']:,} lost",
        f"{'from'.ljust(width_from)}  {'to'.ljust(width_to)}  customers   share",
    ]
    lines += [
        f"{str(r['from_segment']).ljust(width_from)}  {str(r['to_segment']).ljust(width_to)}  "
        f"{r['customers']:>9,}  {r['share']:>6.1%}"
        for r in rows
    ]
    return "\n".join(lines)


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

    from segmentation.session import build_session, local_driver_java_conf, local_driver_memory_conf

    if args.command in REPORTING_COMMANDS:
        preload(REPORT_LIBRARIES)
    # A session that was already running (a notebook, the test suite) is used and left running.
    owns_session = SparkSession.getActiveSession() is None
    conf = dict(args.conf)
    inputs = [getattr(args, "input", None), getattr(args, "run", None)]
    conf.update(local_driver_java_conf(inputs, args.master, conf))
    conf.update(local_driver_memory_conf(args.master, conf))
    spark = build_session(f"segmentation-{args.command}", args.master, conf)
    # The jobs may size these two; a session we were lent gets them back as they were.
    partitions = str(spark.conf.get("spark.sql.shuffle.partitions"))
    splits = spark.conf.get("spark.sql.files.minPartitionNum", None)
    try:
        return _run_stage(spark, args, argv)
    except Exception as error:  # a damaged input file fails inside a Spark task
        from segmentation.io.readers import damaged_input_error

        where = getattr(args, "input", None) or getattr(args, "run", None) or "the input"
        translated = damaged_input_error(error, where)
        if translated is None:
            raise
        raise translated from None
    finally:
        if owns_session:
            spark.stop()
        else:  # leave a session we were lent as we found it
            spark.conf.set("spark.sql.shuffle.partitions", partitions)
            if splits is None:
                spark.conf.unset("spark.sql.files.minPartitionNum")
            else:
                spark.conf.set("spark.sql.files.minPartitionNum", splits)


def _run_stage(spark: Any, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the command's stage on ``spark``; print what the user reads; return 0."""
    from segmentation import pipeline
    from segmentation.manifest import RunManifest

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
    elif args.command == "run":
        profiles, feature_set = pipeline.run_stage(
            spark, feature_options(args), cluster_options(args), args.output,
            args.overwrite, manifest,
        )
        print(format_profiles(profiles, feature_set.cluster_columns))
    elif args.command == "score":
        profiles, feature_set = pipeline.score_stage(
            spark, args.model, args.source, args.input, args.input_format,
            args.reference_date, args.sqlite_partitions, args.output, args.overwrite,
            manifest, text_options(args), args.max_reject_fraction,
        )
        print(format_profiles(profiles, feature_set.cluster_columns))
    elif args.command == "audiences":
        document = pipeline.audiences_stage(
            spark, args.run, args.by, args.gzip, args.overwrite, manifest
        )
        print(format_audiences(document))
    else:  # compare
        document = pipeline.compare_stage(
            spark, args.run_a, args.run_b, args.by, args.output, args.overwrite, manifest
        )
        print(format_migration(document))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run a command; return its exit status (0 ok, 2 bad input or options, 1 a bug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "emr":  # talks to AWS only: no Spark, no pyspark import
        from segmentation.deploy.emr import run_command

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


def console() -> None:
    """The ``segmentation`` command: :func:`main`, then the process ends at once with its status.

    By then the outputs are written and Spark is stopped; what is left is the interpreter's own
    teardown (finalising pandas, matplotlib, py4j and their modules), 0.3 s of every command's
    wall time. The log handlers and both streams are flushed first. An exception out of
    :func:`main` (a bug) takes the usual way out, traceback and all.
    """
    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
