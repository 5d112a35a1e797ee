"""``segmentation ingest``: source tables to Parquet, read in parallel.

SQLite tables are read in rowid ranges by every executor at once (their pages decoded into
Arrow by the tasks, or SQL through ADBC, see :mod:`segmentation.io.sqlite`), and each range is
written straight to Parquet by its task with pyarrow
(:func:`~segmentation.io.sqlite.write_sqlite_parquet`): no Spark rows, no Spark Parquet writer
(10 M rows on 2 cores: 3.5 M rows/s; 2.3 M through ADBC, 0.9 M through Spark's writer). That
needs a target pyarrow can write to: a local path or ``file://``
(:class:`pyarrow.fs.LocalFileSystem`), or ``s3://``, ``s3a://``, ``s3n://``
(:class:`pyarrow.fs.S3FileSystem`, configured from the session's S3A settings, see
:func:`s3_filesystem`). Other targets (``hdfs://``...) and CSV/TSV/Parquet inputs go through
Spark's reader and writer.

The Parquet keeps the source's table and column names, so the features job reads it like the
original: ``OUTPUT/tables/trainSearchStream/``, ``OUTPUT/tables/SearchInfo/`` for Avito,
``OUTPUT/tables/invoices/`` for retail, ``OUTPUT/tables/events/`` for event logs.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import unquote, urlparse

from pyarrow import fs as pafs
from pyspark.sql import SparkSession

from segmentation.errors import StorageError
from segmentation.io import s3
from segmentation.io.sqlite import ParquetWrite, sqlite_read_of, write_sqlite_parquet
from segmentation.layout import OutputLayout
from segmentation.manifest import RunManifest
from segmentation.sources import FeatureOptions, get_source

log = logging.getLogger(__name__)

#: AWS's own S3 endpoints (``s3.amazonaws.com``, ``s3.eu-west-1.amazonaws.com``,
#: ``s3-eu-west-1.amazonaws.com``, ``s3.dualstack.us-east-1.amazonaws.com``, China's ``.cn``).
_AWS_ENDPOINT = re.compile(
    r"^s3(?:[.-](?:dualstack\.)?(?P<region>[a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?$"
)
_REGION = re.compile(r"^[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-\d+$")


def ingest_stage(
    spark: SparkSession,
    source: str,
    path: str,
    fmt: str,
    output: str,
    overwrite: bool,
    manifest: RunManifest,
    sqlite_partitions: Optional[int] = None,
) -> Dict[str, Dict[str, float]]:
    """Write each table of the source to ``OUTPUT/tables/<table>/``; report rows and rows/s."""
    layout = OutputLayout(spark, output, "ingest")
    layout.check(overwrite)
    options = FeatureOptions(
        source=source, input=path, input_format=fmt, sqlite_partitions=sqlite_partitions
    )
    tables = get_source(source).ingest_tables(spark, options)
    layout.clear()
    direct: Optional[Tuple[pafs.FileSystem, str]] = None
    if any(sqlite_read_of(table) is not None for table in tables.values()):
        direct = arrow_destination(spark, layout.path("tables"))
    report: Dict[str, Dict[str, float]] = {}
    for name, table in tables.items():
        target = layout.path("tables", name)
        read = sqlite_read_of(table)
        written: Optional[ParquetWrite] = None
        started = time.monotonic()
        with manifest.stage(f"ingest_{name}"):
            if read is not None and direct is not None:
                filesystem, folder = direct
                written = write_sqlite_parquet(spark, read, filesystem, f"{folder}/{name}")
            else:
                table.write.mode("overwrite").parquet(target)
        seconds = time.monotonic() - started
        if written is not None:  # the tasks counted their rows
            rows, partitions = written.rows, written.partitions
        else:
            rows = spark.read.parquet(target).count()  # from Parquet footers: cheap
            partitions = table.rdd.getNumPartitions()
        report[name] = {
            "rows": rows,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds) if seconds > 0 else 0,
            "partitions": partitions,
        }
        log.info(
            "%s: %s rows in %.1f s (%s rows/s, %d partition(s))", name, f"{rows:,}", seconds,
            f"{report[name]['rows_per_second']:,.0f}", report[name]["partitions"],
        )
    manifest.set("source", source)
    manifest.set("inputs", [{"path": path, "format": fmt}])
    manifest.set("tables", report)
    manifest.set("outputs", layout.outputs())
    layout.publish(manifest)
    return report


def arrow_destination(spark: SparkSession, path: str) -> Optional[Tuple[pafs.FileSystem, str]]:
    """The pyarrow filesystem and path the ingest tasks write ``path`` through, if pyarrow can.

    Parameters
    ----------
    spark : SparkSession
        The session (its Hadoop configuration holds the S3A settings).
    path : str
        A folder: a local path, ``file://``, ``s3://``, ``s3a://`` or ``s3n://`` URI.

    Returns
    -------
    (pyarrow.fs.FileSystem, str) or None
        ``LocalFileSystem`` and the absolute path, or ``S3FileSystem`` (:func:`s3_filesystem`)
        and ``bucket/key``; ``None`` for S3 on EMR (EMRFS, with the cluster's encryption
        settings, writes those) and any other scheme (``hdfs://``...: Spark writes those).
    """
    parsed = urlparse(path)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        return pafs.LocalFileSystem(), os.path.abspath(unquote(parsed.path)).rstrip("/")
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))
    if scheme in s3.S3_SCHEMES and s3.on_emr():
        # EMRFS serves s3:// there, with the cluster's encryption and retry settings, which
        # pyarrow's own S3 client would bypass.
        log.info("ingest: %s:// targets on EMR are written by Spark through EMRFS", scheme)
        return None
    if scheme in s3.S3_SCHEMES and parsed.netloc:
        key = parsed.path.strip("/")
        folder = f"{parsed.netloc}/{key}" if key else parsed.netloc
        return s3_filesystem(spark, parsed.netloc), folder
    log.info("ingest: %s:// targets are written by Spark", scheme)
    return None


def s3_filesystem(spark: SparkSession, bucket: str) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for ``bucket`` with the session's S3A settings (:func:`s3_options`).

    Only settings someone made count (a user, :func:`segmentation.io.s3.configure_s3`, Spark),
    not Hadoop's ``core-default.xml`` values: pyarrow keeps its own retries and timeouts. On EMR,
    where EMRFS serves ``s3://`` and the S3A settings do not apply, only the AWS default chain
    (the cluster's instance profile) and the bucket's region are used.

    Raises
    ------
    StorageError
        The bucket's region cannot be found (no such bucket, or AWS unreachable).
    """
    settings: Dict[str, str] = {}
    if not s3.on_emr():
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        for key in _S3A_KEYS:
            for name in (f"fs.s3a.bucket.{bucket}.{key}", f"fs.s3a.{key}"):
                value = conf.get(name)
                sources = conf.getPropertySources(name) if value is not None else None
                if sources is not None and all(str(x) == "core-default.xml" for x in sources):
                    continue  # Hadoop's defaults (20 attempts, 200 s timeouts): pyarrow's own
                if value is not None and str(value).strip():
                    settings[key] = str(value).strip()
                    break
    options, described = s3_options(settings, os.environ)
    if "region" not in options:
        try:
            options["region"] = pafs.resolve_s3_region(bucket)
        except OSError as err:
            raise StorageError(f"cannot find the region of S3 bucket {bucket}: {err}") from None
    log.info(
        "ingest: SQLite tables written to s3://%s by the tasks with pyarrow (%s, region %s)",
        bucket, described, options["region"],
    )
    return pafs.S3FileSystem(**options)


#: The S3A settings :func:`s3_options` maps (without ``fs.s3a.``).
_S3A_KEYS = (
    "access.key", "secret.key", "session.token", "aws.credentials.provider", "endpoint",
    "endpoint.region", "path.style.access", "connection.ssl.enabled",
    "connection.establish.timeout", "connection.timeout", "attempts.maximum",
)


def s3_options(
    settings: Mapping[str, str], environ: Mapping[str, str]
) -> Tuple[Dict[str, Any], str]:
    """``pyarrow.fs.S3FileSystem`` arguments for S3A settings, and a description without secrets.

    Parameters
    ----------
    settings : mapping
        S3A settings without their ``fs.s3a.`` prefix (a per-bucket value already chosen over
        the general one): ``endpoint`` (an AWS endpoint only names the region; any other is used
        as the endpoint, over ``http`` when its URL says so or ``connection.ssl.enabled`` is
        ``false``), ``path.style.access``, ``endpoint.region``, ``access.key`` with
        ``secret.key`` (and ``session.token``), ``aws.credentials.provider`` (anonymous),
        ``connection.establish.timeout``, ``connection.timeout`` (milliseconds, or with a unit)
        and ``attempts.maximum``.
    environ : mapping
        The environment: ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` give the region of a non-AWS
        endpoint (else ``us-east-1``).

    Returns
    -------
    (dict, str)
        The arguments, without ``region`` when the bucket's region must be looked up (an AWS
        endpoint that names none, or no endpoint); and "endpoint ..., credentials from ..." for
        the log. Without keys, the AWS default chain of each executor (environment, profile, web
        identity, container or instance role).
    """
    options: Dict[str, Any] = {}
    if settings.get("access.key") and settings.get("secret.key"):
        options.update(access_key=settings["access.key"], secret_key=settings["secret.key"])
        if settings.get("session.token"):
            options["session_token"] = settings["session.token"]
        credentials = "access keys"
    elif "AnonymousAWSCredentialsProvider" in settings.get("aws.credentials.provider", ""):
        options["anonymous"] = True
        credentials = "none (anonymous)"
    else:
        credentials = "the AWS default chain"

    region = settings.get("endpoint.region")
    endpoint = settings.get("endpoint")
    path_style = settings.get("path.style.access", "").lower()
    shown = "AWS"
    if endpoint:
        has_scheme = "://" in endpoint
        url = urlparse(endpoint if has_scheme else f"//{endpoint}")
        host = url.netloc
        ssl = settings.get("connection.ssl.enabled", "true").lower() != "false"
        scheme = url.scheme if has_scheme else ("https" if ssl else "http")
        aws = _AWS_ENDPOINT.match(host.lower())
        if aws:
            named = aws.group("region")
            if region is None and named and _REGION.match(named):
                region = named
            if path_style == "true":  # pyarrow addresses by path when given an endpoint
                options.update(endpoint_override=host, scheme=scheme)
        else:
            options.update(endpoint_override=host, scheme=scheme)
            if path_style == "false":
                options["force_virtual_addressing"] = True
            region = region or s3.region_from_env(environ) or "us-east-1"
            shown = f"{scheme}://{host}"
    if region is not None:
        options["region"] = region
    connect = _seconds(settings.get("connection.establish.timeout"))
    if connect is not None:
        options["connect_timeout"] = connect
    request = _seconds(settings.get("connection.timeout"))
    if request is not None:
        options["request_timeout"] = request
    attempts = settings.get("attempts.maximum", "")
    if attempts.isdigit() and int(attempts) >= 1:
        options["retry_strategy"] = pafs.AwsStandardS3RetryStrategy(max_attempts=int(attempts))
    return options, f"endpoint {shown}, credentials from {credentials}"


def _seconds(value: Optional[str]) -> Optional[float]:
    """A Hadoop duration in seconds: milliseconds (``2000``) or with a unit (``2s``, ``500ms``)."""
    if value is None:
        return None
    match = re.match(r"^(\d+)\s*(ms|s|m)?$", value.strip().lower())
    if match is None:
        return None
    number, unit = int(match.group(1)), match.group(2) or "ms"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]
