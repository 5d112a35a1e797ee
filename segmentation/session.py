"""Building the SparkSession the jobs share, and quieting Spark's own logging."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

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
    parallelism (every core busy) and at most :data:`MAX_SHUFFLE_PARTITIONS`, rounded up to a
    multiple of the cores: 11 tasks of equal size on 2 cores run as 6 waves, the last on one
    core (the join of the 50M-row Avito set: 11 -> 12 partitions).

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
    whole_waves = -(-wanted // cores) * cores
    if whole_waves <= MAX_SHUFFLE_PARTITIONS:
        wanted = whole_waves
    spark.conf.set("spark.sql.shuffle.partitions", str(wanted))
    log.info(
        "%d shuffle partitions for %.1f MB of input", wanted, input_bytes / (1024 * 1024)
    )
    return wanted


#: File splits per core at least, when the jobs size them (:func:`size_file_splits`).
FILE_SPLITS_PER_CORE = 4

_MIN_SPLITS = "spark.sql.files.minPartitionNum"


def size_file_splits(spark: SparkSession) -> Optional[int]:
    """Ask for at least :data:`FILE_SPLITS_PER_CORE` input splits per core, unless the user chose.

    Spark splits files into at most ``spark.sql.files.maxPartitionBytes`` (128 MB) and at least
    ``minPartitionNum`` pieces (default: one per core): 444 MB of stream Parquet became 4-5 tasks
    on 2 cores, the last wave on one core (the per-search partial aggregation used 1.2 of 2
    cores). With 4 splits per core the waves even out: read + aggregate of 50 M stream rows 39.9 s
    -> 32.4 s (8 splits; 16 gave 34.0 s). Small files are not cut below
    ``spark.sql.files.openCostInBytes`` (4 MB) either way.

    Returns
    -------
    int or None
        The minimum in force, ``None`` when the user's setting is left alone.
    """
    if spark.conf.get(_MIN_SPLITS, None) is not None:
        return None
    wanted = FILE_SPLITS_PER_CORE * spark.sparkContext.defaultParallelism
    spark.conf.set(_MIN_SPLITS, str(wanted))
    return wanted


#: Local inputs up to this size (bytes) start the driver JVM with :data:`SMALL_INPUT_JAVA_OPTIONS`.
SMALL_INPUT_BYTES = 64 * 1024 * 1024

#: The JIT setting of a JVM started for a small local input: C1 (the quick compiler) only. The
#: run is a few seconds of many short jobs, where C2's optimisation never pays back its warm-up
#: (the 254-customer demo sample: 31 s -> 26 s end to end, measured); long runs keep the default.
SMALL_INPUT_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1"

#: Environment variable: path of the driver JVM's class-data archive, or ``off``.
CLASS_ARCHIVE_ENV = "SEGMENTATION_CLASS_ARCHIVE"

#: JVM options that keep a missing or mismatched class-data archive quiet (the JVM then loads
#: classes as usual).
_QUIET_CDS = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def class_archive_key(home: Optional[str] = None) -> Dict[str, str]:
    """What a class-data archive is built for: a PySpark installation and a ``java``.

    ``home`` is PySpark's folder (default: the imported one's). The JVM also checks the jars'
    modification times: a reinstalled PySpark at the same path (a recreated .venv) needs a new
    archive, so their folder's time is part of the key.
    """
    import shutil

    if home is None:
        import pyspark

        home = os.path.dirname(os.path.abspath(pyspark.__file__))
    jars = os.path.join(home, "jars")
    return {
        "pyspark": home,
        "java": os.path.realpath(shutil.which("java") or ""),
        "jars_modified_ns": str(os.stat(jars).st_mtime_ns) if os.path.isdir(jars) else "",
    }


def stale_class_archives(folder: str) -> List[str]:
    """The archives in ``folder`` built for a PySpark installation that is gone or reinstalled.

    Each archive ``scripts/build_class_archive.py`` builds has a ``<archive>.json`` beside it
    with its :func:`class_archive_key`; an archive is stale when that key no longer holds (every
    fresh clone's ``.venv`` gets its own archive of ~170 MB). Archives without one are kept.
    """
    stale = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if not name.endswith("-classes.jsa") or not os.path.isfile(path + ".json"):
            continue
        try:
            with open(path + ".json", encoding="utf-8") as handle:
                built_for = json.load(handle)
            now = class_archive_key(str(built_for["pyspark"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if now["jars_modified_ns"] != built_for.get("jars_modified_ns"):
            stale.append(path)
    return stale


def default_class_archive() -> str:
    """Where ``scripts/setup.sh`` puts the class-data archive: the user's cache folder.

    The name holds the PySpark version and a digest of the PySpark installation (its path and
    when its jars were installed) and the ``java`` found on the PATH: an archive only serves the
    class path and the JVM it was built with, so each installation (a clone's ``.venv``, also a
    recreated one) and Java gets its own.
    """
    import hashlib

    import pyspark

    key = "\n".join(class_archive_key().values())
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(
        cache, "segmentation", f"spark-{pyspark.__version__}-{digest}-classes.jsa"
    )


def class_archive() -> Optional[str]:
    """The class-data archive a locally started driver JVM maps, or ``None``.

    A Java class-data-sharing (AppCDS) archive holds the classes a run of the demo loaded,
    already parsed and verified: the JVM maps it instead of loading and verifying ~10,000
    Spark, Catalyst and MLlib classes from jars one by one, which is most of a short run's
    start-up and first-query time. ``scripts/setup.sh`` builds it once
    (``scripts/build_class_archive.py``) at :func:`default_class_archive`;
    ``$SEGMENTATION_CLASS_ARCHIVE`` names another file, or ``off``. The JVM checks that the
    archive matches its own version and class path and otherwise ignores it.
    """
    setting = os.environ.get(CLASS_ARCHIVE_ENV)
    if setting is not None and setting.strip().lower() in ("", "off", "0", "false", "no"):
        return None
    path = setting or default_class_archive()
    return path if os.path.isfile(path) else None


def _java_path_option(name: str, path: str, kind: str = "-XX:") -> str:
    """``-XX:<name>=<path>`` or ``-D<name>=<path>``, quoted when the path has spaces.

    Spark splits its Java options on whitespace, except inside quotes.
    """
    option = f"{kind}{name}={path}"
    return f'"{option}"' if any(c.isspace() for c in path) else option


#: This package's log4j 2 configuration for the local-mode JVMs it starts (see the file).
LOG_CONFIGURATION = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "conf", "log4j2.properties"
)


def _has_spark_configuration() -> bool:
    """Whether the user has a Spark configuration: ``$SPARK_CONF_DIR`` or ``$SPARK_HOME/conf``."""
    if os.environ.get("SPARK_CONF_DIR"):
        return True
    spark_home = os.environ.get("SPARK_HOME")
    return bool(spark_home) and os.path.isdir(os.path.join(str(spark_home), "conf"))


def _small_local_inputs(inputs: Sequence[Optional[str]]) -> bool:
    """Every input a local file or folder, at most :data:`SMALL_INPUT_BYTES` in all."""
    paths = [p for p in inputs if p]
    if not paths:
        return False
    total = 0
    for path in paths:
        local = path[len("file://"):] if path.startswith("file://") else path
        if "://" in local or not os.path.exists(local):
            return False
        if os.path.isdir(local):
            total += sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(local) for name in names
            )
        else:
            total += os.path.getsize(local)
        if total > SMALL_INPUT_BYTES:
            return False
    return True


def _starts_local_jvm(master: Optional[str]) -> bool:
    """Whether this process is about to start a local-mode driver JVM (none runs yet)."""
    if SparkContext._jvm is not None or os.environ.get("PYSPARK_GATEWAY_PORT"):
        return False  # a JVM is running: under spark-submit, or a session lent
    return (master or "local").startswith("local")


def local_driver_java_conf(
    inputs: Sequence[Optional[str]], master: Optional[str], conf: Mapping[str, str]
) -> Dict[str, str]:
    """Driver JVM options (log format, class-data archive, JIT) for a local-mode JVM started here.

    Returns ``{"spark.driver.extraJavaOptions": ...}`` with :data:`LOG_CONFIGURATION` (Spark's
    warnings in this product's log format, without the start-up lines that say nothing to a
    local user; not when the user has a Spark configuration folder, ``$SPARK_CONF_DIR`` or
    ``$SPARK_HOME/conf``), the class-data archive
    (:func:`class_archive`, when there is one) and, when every input is a local file or folder
    (no URI scheme other than ``file:``) of at most :data:`SMALL_INPUT_BYTES` in all,
    :data:`SMALL_INPUT_JAVA_OPTIONS`; ``{}`` when there is none of these, when the master is not
    local, when a JVM is running already (under spark-submit, a session lent) or when the user
    set driver Java options.
    """
    if not _starts_local_jvm(master) or "spark.driver.extraJavaOptions" in conf:
        return {}
    options = []
    if not _has_spark_configuration():
        options.append(_java_path_option("log4j2.configurationFile", LOG_CONFIGURATION, "-D"))
    archive = class_archive()
    if archive is not None:
        options += [_java_path_option("SharedArchiveFile", archive), _QUIET_CDS]
    if _small_local_inputs(inputs):
        options.append(SMALL_INPUT_JAVA_OPTIONS)
    return {"spark.driver.extraJavaOptions": " ".join(options)} if options else {}


#: Largest driver heap (MB) :func:`local_driver_memory_conf` gives a local-mode JVM.
LOCAL_DRIVER_MEMORY_MB = 2048


def _physical_memory_mb() -> Optional[int]:
    """The machine's RAM in MB, ``None`` where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (AttributeError, OSError, ValueError):
        return None


def local_driver_memory_conf(master: Optional[str], conf: Mapping[str, str]) -> Dict[str, str]:
    """``spark.driver.memory`` for a local-mode JVM this process starts, unless the user chose.

    In local mode the driver JVM is also the executor, and Spark's default heap of 1 GB leaves
    its tasks ~430 MB of execution memory: on the 50M-row Avito set the join and per-user
    aggregate spilled 1.6 GB (its 11 tasks 24.6 s of CPU; 17.5 s without the spill, which
    2 GB removes). The heap is :data:`LOCAL_DRIVER_MEMORY_MB`, or a quarter of the RAM on a
    smaller machine, at least 1 GB. ``{}`` when the master is not local, when a JVM is running
    already (under spark-submit, a session lent), or when ``conf`` or ``$SPARK_DRIVER_MEMORY``
    sets the driver memory.
    """
    if not _starts_local_jvm(master):
        return {}
    if "spark.driver.memory" in conf or os.environ.get("SPARK_DRIVER_MEMORY"):
        return {}
    physical = _physical_memory_mb()
    heap = LOCAL_DRIVER_MEMORY_MB if physical is None else min(
        LOCAL_DRIVER_MEMORY_MB, physical // 4
    )
    return {"spark.driver.memory": f"{max(1024, heap)}m"}


def class_archive_conf(target: str) -> Dict[str, str]:
    """Session settings that make the driver JVM write its loaded classes to ``target`` at exit.

    For ``scripts/build_class_archive.py``: the archive is complete once the JVM process has
    exited (:func:`stop_driver_jvm`).
    """
    return {
        "spark.driver.extraJavaOptions": (
            f"{_java_path_option('ArchiveClassesAtExit', target)} {_QUIET_CDS}"
        )
    }


def stop_driver_jvm(timeout: float = 300.0) -> None:
    """End the driver JVM this process started (after ``spark.stop()``) and wait for it.

    PySpark leaves the JVM running until Python exits; closing its standard input makes it
    exit now (which is when it writes a class-data archive).
    """
    gateway = SparkContext._gateway
    process = getattr(gateway, "proc", None)
    if process is None:
        return
    if process.stdin is not None:
        process.stdin.close()
    process.wait(timeout=timeout)


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


#: Spark loggers whose warnings say nothing to a user of this product: a plan string shortened
#: for a log line (the profiles' aggregate has more than 25 columns); MLlib's BLAS/LAPACK
#: loader saying that no native library is installed (it then uses its Java implementation,
#: which the clustering of a few features needs no more than).
QUIET_SPARK_LOGGERS = (
    "org.apache.spark.sql.catalyst.util.SparkStringUtils",
    "dev.ludovic.netlib",
)


def _quiet_spark_loggers(spark: SparkSession) -> None:
    """Raise :data:`QUIET_SPARK_LOGGERS` to ERROR in the driver JVM's log4j 2."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    error = jvm.org.apache.logging.log4j.Level.ERROR
    for name in QUIET_SPARK_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, error)


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
    _quiet_spark_loggers(spark)
    # Endpoint, region and credentials of this environment, also on a session already running.
    s3.configure_s3(spark)
    log.info(
        "Spark %s session %r on %s", spark.version, app_name, spark.sparkContext.master
    )
    return spark
