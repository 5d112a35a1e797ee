"""Building the SparkSession the jobs share, and quieting Spark's own logging."""

from __future__ import annotations

import logging
import os
import sys
from typing import Dict, Mapping, Optional, Sequence

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from segmentation.io import s3

log = logging.getLogger(__name__)

#: Settings every session gets unless the caller or spark-submit sets them.
DEFAULT_CONF: Mapping[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet timestamps as plain INT64 micros, readable by every engine.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.adaptive.enabled": "true",
    # AQE may coalesce the shuffle partitions of cached plans too (the customer aggregate is
    # cached): without it a few thousand customers are written as 200 files.
    "spark.sql.optimizer.canChangeCachedPlanOutputPartitioning": "true",
    # Coalesce to the advisory partition size (64 MB), not to the default parallelism.
    "spark.sql.adaptive.coalescePartitions.parallelismFirst": "false",
    # Progress bars on stderr garble the job's own progress lines.
    "spark.ui.showConsoleProgress": "false",
    # Unparseable dates become NULL (and are counted) instead of raising upgrade errors.
    "spark.sql.legacy.timeParserPolicy": "CORRECTED",
}


#: ``true`` when the user chose ``spark.sql.shuffle.partitions`` (``--conf``, spark-submit,
#: spark-defaults): :func:`size_shuffle_partitions` then leaves it alone.
USER_PARTITIONS = "spark.segmentation.userShufflePartitions"

#: Input bytes per shuffle partition when the jobs size them (compressed files, as stored).
INPUT_BYTES_PER_PARTITION = 64 * 1024 * 1024

#: At most this many shuffle partitions when the jobs size them.
MAX_SHUFFLE_PARTITIONS = 2_000


def size_shuffle_partitions(spark: SparkSession, input_bytes: int) -> int:
    """Size ``spark.sql.shuffle.partitions`` to the input, unless the user chose it.

    Spark's default of 200 makes a few thousand customers 200 tasks per stage and, for a cached
    aggregate (AQE does not coalesce its partitions), 200 output files. The jobs use one
    partition per :data:`INPUT_BYTES_PER_PARTITION` of input as stored, at least the default
    parallelism (every core busy) and at most :data:`MAX_SHUFFLE_PARTITIONS`.

    Returns
    -------
    int
        The number of shuffle partitions in force.
    """
    current = int(spark.conf.get("spark.sql.shuffle.partitions", "200") or 200)
    if spark.conf.get(USER_PARTITIONS, "false") == "true":
        return current
    cores = spark.sparkContext.defaultParallelism
    wanted = max(cores, min(MAX_SHUFFLE_PARTITIONS, -(-input_bytes // INPUT_BYTES_PER_PARTITION)))
    spark.conf.set("spark.sql.shuffle.partitions", str(wanted))
    log.info(
        "%d shuffle partitions for %.1f MB of input", wanted, input_bytes / (1024 * 1024)
    )
    return wanted


#: Local inputs up to this size (bytes) start the driver JVM with :data:`SMALL_INPUT_JAVA_OPTIONS`.
SMALL_INPUT_BYTES = 64 * 1024 * 1024

#: The JIT setting of a JVM started for a small local input: C1 (the quick compiler) only. The
#: run is a few seconds of many short jobs, where C2's optimisation never pays back its warm-up
#: (the 254-customer demo sample: 31 s -> 26 s end to end, measured); long runs keep the default.
SMALL_INPUT_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"


def quick_start_conf(
    inputs: Sequence[Optional[str]], master: Optional[str], conf: Mapping[str, str]
) -> Dict[str, str]:
    """Driver JVM options for a small local input, when this process starts the JVM.

    Returns ``{"spark.driver.extraJavaOptions": ...}`` when every input is a local file or
    folder (no URI scheme other than ``file:``) of at most :data:`SMALL_INPUT_BYTES` in all, the
    master is local, no JVM is running yet (not under spark-submit, no session lent) and the
    user set no driver Java options; otherwise ``{}``.
    """
    if SparkContext._jvm is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return {}
    if not (master or "local").startswith("local") or "spark.driver.extraJavaOptions" in conf:
        return {}
    paths = [p for p in inputs if p]
    if not paths:
        return {}
    total = 0
    for path in paths:
        local = path[len("file://"):] if path.startswith("file://") else path
        if "://" in local or not os.path.exists(local):
            return {}
        if os.path.isdir(local):
            total += sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(local) for name in names
            )
        else:
            total += os.path.getsize(local)
        if total > SMALL_INPUT_BYTES:
            return {}
    return {"spark.driver.extraJavaOptions": SMALL_INPUT_JAVA_OPTIONS}


def configure_logging(verbose: bool = False) -> None:
    """Send this package's progress messages to stderr and turn py4j's chatter down."""
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("segmentation").setLevel(level)
    for noisy in ("py4j", "py4j.clientserver", "py4j.java_gateway"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_session(
    app_name: str,
    master: Optional[str] = None,
    conf: Optional[Mapping[str, str]] = None,
    spark_log_level: str = "WARN",
) -> SparkSession:
    """Return a SparkSession for a job.

    Outside EMR, ``s3://``, ``s3a://`` and ``s3n://`` paths go through S3A with the jars of
    ``scripts/setup.sh`` and the endpoint, region and credentials of the usual AWS environment
    variables (:mod:`segmentation.io.s3`); on EMR, ``s3://`` stays EMRFS.

    Parameters
    ----------
    app_name
        Shown in the Spark UI and in YARN / EMR step logs.
    master
        ``--master`` of the command line. When ``None``, spark-submit's master is kept; run as a
        plain Python program (no spark-submit), the session is ``local[*]``.
    conf
        Extra ``spark.*`` settings; they win over :data:`DEFAULT_CONF` and over the S3 settings
        derived from the environment (``spark.hadoop.fs.s3a.*``).
    spark_log_level
        Log level of Spark's own log4j output (``WARN`` keeps progress readable).

    Examples
    --------
    >>> spark = build_session("segmentation-features", master="local[2]")  # doctest: +SKIP
    """
    if os.environ.get("PYSPARK_GATEWAY_PORT") and SparkContext._jvm is None:
        # Under spark-submit the JVM is already running: connect to it first, or SparkConf()
        # cannot see spark-submit's settings and --master yarn would be replaced by local[*].
        SparkContext._ensure_initialized()
    submitted = SparkConf()  # loads spark.* system properties set by spark-submit
    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    elif not submitted.contains("spark.master"):
        builder = builder.master("local[*]")
    is_local = (master or submitted.get("spark.master", "local[*]")).startswith("local")
    if is_local:
        # Python workers must use this interpreter (and its packages), not whatever is on PATH.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    settings = dict(DEFAULT_CONF)
    settings.update(conf or {})
    chosen = "spark.sql.shuffle.partitions" in (conf or {}) or submitted.contains(
        "spark.sql.shuffle.partitions"
    )
    settings[USER_PARTITIONS] = "true" if chosen else "false"
    for key, value in settings.items():
        if not submitted.contains(key) or key in (conf or {}):
            builder = builder.config(key, value)
    # S3 outside EMR: hadoop-aws on the classpath and s3:// mapped to S3A (at JVM start).
    current = {key: value for key, value in submitted.getAll()}
    current.update(conf or {})
    for key, value in s3.session_conf(current).items():
        builder = builder.config(key, value)
    if SparkContext._jvm is None and not s3.on_emr():  # the JVM starts now, with this env
        s3.export_sdk_v1_environment()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(spark_log_level)
    # Endpoint, region and credentials of this environment, also on a session already running.
    s3.configure_s3(spark)
    log.info(
        "Spark %s session %r on %s", spark.version, app_name, spark.sparkContext.master
    )
    return spark
