"""S3 outside EMR: the hadoop-aws jars, S3A settings from the standard AWS environment, errors.

On Amazon EMR, ``s3://`` is EMRFS and is configured by the cluster: nothing here touches it.
Anywhere else (``local[*]``, a standalone cluster, a laptop), ``s3://``, ``s3a://`` and ``s3n://``
all go through Hadoop's S3A connector:

- :func:`session_conf` adds the hadoop-aws and AWS SDK jars that ``scripts/setup.sh`` extracts into
  ``.jars/`` (or ``$SEGMENTATION_JARS_DIR``) to ``spark.jars``, and maps the ``s3``/``s3n`` schemes
  to ``S3AFileSystem``, so users' ``s3://`` URIs work unchanged; it is applied when the JVM starts;
- :func:`configure_s3` sets endpoint, region, path style and credentials on the session's Hadoop
  configuration from the usual AWS variables, and can be called again on a running session;
- :func:`translate_error` turns the Java exceptions S3A raises (missing bucket, denied access, no
  credentials, unreachable endpoint, missing jars) into one-line
  :class:`~segmentation.errors.StorageError` messages.

Settings a user gives explicitly (``--conf spark.hadoop.fs.s3a.endpoint=...``, ``core-site.xml``)
always win over the ones derived here.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Set
from urllib.parse import urlparse

from pyspark.sql import SparkSession

from segmentation.errors import SegmentationError, StorageError

log = logging.getLogger(__name__)

#: URI schemes served by S3A outside EMR (and by EMRFS on EMR).
S3_SCHEMES = ("s3", "s3a", "s3n")

#: The jars ``scripts/setup.sh`` extracts from PyPI's sagemaker-pyspark 1.4.5 sdist.
JARS = ("hadoop-aws-3.3.1.jar", "aws-java-sdk-bundle-1.11.901.jar")

#: Environment variable naming the folder holding :data:`JARS` (default: ``.jars/`` of the repo).
JARS_DIR_ENV = "SEGMENTATION_JARS_DIR"

S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
S3A_ABSTRACT_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3A"

#: Credential providers (AWS SDK v1 class names, as hadoop-aws 3.3.x expects), tried in order:
#: keys in the Hadoop configuration (which :func:`configure_s3` copies from ``AWS_ACCESS_KEY_ID``,
#: ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``), then the SDK's default chain: environment,
#: system properties, web identity (EKS), ``AWS_PROFILE`` / shared credentials file, container and
#: instance roles.
CREDENTIAL_PROVIDERS = (
    "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider",
    "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    "com.amazonaws.auth.DefaultAWSCredentialsProviderChain",
)

#: Source label of the Hadoop settings written by :func:`configure_s3` (so a later call can
#: tell its own settings from a user's).
_SOURCE = "segmentation.io.s3"
#: Sources that are defaults, not choices: settings from them may be replaced.
_DEFAULT_SOURCES = ("core-default.xml", _SOURCE)

#: Hadoop keys :func:`configure_s3` manages (set from the environment, or unset).
MANAGED_KEYS = (
    "fs.s3a.impl", "fs.s3.impl", "fs.s3n.impl",
    "fs.AbstractFileSystem.s3a.impl", "fs.AbstractFileSystem.s3.impl",
    "fs.AbstractFileSystem.s3n.impl",
    "fs.s3a.aws.credentials.provider", "fs.s3a.access.key", "fs.s3a.secret.key",
    "fs.s3a.session.token", "fs.s3a.endpoint", "fs.s3a.path.style.access",
    "fs.s3a.connection.ssl.enabled",
)

#: Buckets whose cached FileSystem must be dropped when the S3 settings change (see
#: :func:`remember_bucket`).
_buckets_seen: Set[str] = set()


# ------------------------------------------------------------------------------ where we run


def on_emr() -> bool:
    """Whether this process runs on Amazon EMR (EC2, EKS or Serverless), where EMRFS serves S3.

    ``SEGMENTATION_ON_EMR=1`` or ``0`` overrides the detection, which looks for the EMRFS
    libraries (``/usr/share/aws/emr/emrfs``) or the EMR instance metadata
    (``/mnt/var/lib/info/job-flow.json``) that EMR release images carry, or for EMRFS named in
    the Hadoop ``core-site.xml`` (``$HADOOP_CONF_DIR``, default ``/etc/hadoop/conf``).
    """
    forced = os.environ.get("SEGMENTATION_ON_EMR", "").strip().lower()
    if forced in ("1", "true", "yes"):
        return True
    if forced in ("0", "false", "no"):
        return False
    if os.path.isdir("/usr/share/aws/emr/emrfs") or os.path.isfile(
        "/mnt/var/lib/info/job-flow.json"
    ):
        return True
    core_site = os.path.join(os.environ.get("HADOOP_CONF_DIR", "/etc/hadoop/conf"), "core-site.xml")
    try:
        with open(core_site, encoding="utf-8", errors="replace") as handle:
            return "com.amazon.ws.emr.hadoop.fs.EmrFileSystem" in handle.read()
    except OSError:
        return False


def is_s3_path(path: str) -> bool:
    """Whether ``path`` is an ``s3://``, ``s3a://`` or ``s3n://`` URI."""
    return urlparse(path).scheme.lower() in S3_SCHEMES


def jars_dir() -> Path:
    """The folder holding :data:`JARS`: ``$SEGMENTATION_JARS_DIR``, else ``.jars/`` of the repo."""
    configured = os.environ.get(JARS_DIR_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2] / ".jars"


def bundled_jars() -> List[str]:
    """Paths of :data:`JARS` in :func:`jars_dir`, or an empty list when either is missing."""
    folder = jars_dir()
    paths = [folder / name for name in JARS]
    if all(path.is_file() for path in paths):
        return [str(path) for path in paths]
    return []


def _spark_home_has_hadoop_aws() -> bool:
    """Whether Spark's own jars already include hadoop-aws (e.g. an image that added it)."""
    homes = [os.environ.get("SPARK_HOME", "")]
    try:
        import pyspark

        homes.append(os.path.dirname(pyspark.__file__))
    except ImportError:  # pragma: no cover - pyspark is a dependency
        pass
    return any(home and glob.glob(os.path.join(home, "jars", "hadoop-aws-*.jar")) for home in homes)


def jars_hint() -> str:
    """How to get S3 support when the hadoop-aws classes are missing (for error messages)."""
    jars = bundled_jars()
    if jars:  # there, but the JVM started without them (spark-submit ignores a late spark.jars)
        return (
            "the hadoop-aws jars are not on Spark's classpath: with spark-submit pass "
            f"--jars {','.join(jars)}"
        )
    return (
        "S3 support needs the hadoop-aws jars: run scripts/setup.sh (it puts them in "
        f"{jars_dir()}; {JARS_DIR_ENV} names another folder), or with spark-submit pass "
        f"--jars {','.join(str(jars_dir() / name) for name in JARS)} "
        "(with internet: --packages org.apache.hadoop:hadoop-aws:3.3.4)"
    )


# ------------------------------------------------------------------------------ session start


def export_sdk_v1_environment(environ: Optional[Dict[str, str]] = None) -> None:
    """Name the shared credentials file the way the AWS SDK for Java v1 reads it.

    The AWS CLI, boto3 and SDK v2 read ``AWS_SHARED_CREDENTIALS_FILE``; SDK v1 (under hadoop-aws
    3.3) reads ``AWS_CREDENTIAL_PROFILES_FILE``. Call before the JVM starts (it inherits the
    environment); an explicit ``AWS_CREDENTIAL_PROFILES_FILE`` is kept.

    Parameters
    ----------
    environ
        The environment to update (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    shared = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if shared and not env.get("AWS_CREDENTIAL_PROFILES_FILE"):
        env["AWS_CREDENTIAL_PROFILES_FILE"] = shared


def session_conf(current: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Spark settings that make ``s3://``, ``s3a://`` and ``s3n://`` work; apply at JVM start.

    Parameters
    ----------
    current
        The settings the session will otherwise get (spark-submit's and the user's). ``spark.jars``
        is extended, not replaced, and ``spark.hadoop.*`` keys already there are kept.

    Returns
    -------
    dict
        ``spark.jars`` with :data:`JARS` (unless they are missing, or hadoop-aws is already on
        Spark's classpath or in ``spark.jars`` / ``spark.jars.packages``) and the scheme mappings
        as ``spark.hadoop.*`` settings. Empty on EMR, where EMRFS serves ``s3://``.
    """
    current = current or {}
    if on_emr():
        return {}
    settings: Dict[str, str] = {}
    user_jars = [j for j in current.get("spark.jars", "").split(",") if j.strip()]
    provided = (
        _spark_home_has_hadoop_aws()
        or any("hadoop-aws" in j for j in user_jars)
        or "hadoop-aws" in current.get("spark.jars.packages", "")
    )
    jars = bundled_jars()
    if not provided:
        if jars:
            settings["spark.jars"] = ",".join([*user_jars, *jars])
        else:
            log.debug("no hadoop-aws jars in %s: S3 paths will fail until setup.sh", jars_dir())
    for key, value in _scheme_settings().items():
        if f"spark.hadoop.{key}" not in current:
            settings[f"spark.hadoop.{key}"] = value
    return settings


def _scheme_settings() -> Dict[str, str]:
    settings: Dict[str, str] = {}
    for scheme in S3_SCHEMES:
        settings[f"fs.{scheme}.impl"] = S3A_FILESYSTEM
        settings[f"fs.AbstractFileSystem.{scheme}.impl"] = S3A_ABSTRACT_FILESYSTEM
    return settings


# ------------------------------------------------------------------------------ running session


def endpoint_from_env(environ: Mapping[str, str]) -> Optional[str]:
    """The S3 endpoint URL of ``AWS_ENDPOINT_URL_S3`` (wins) or ``AWS_ENDPOINT_URL``, if any."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def region_from_env(environ: Mapping[str, str]) -> Optional[str]:
    """The region of ``AWS_REGION`` (wins) or ``AWS_DEFAULT_REGION``, if any."""
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def hadoop_settings(environ: Optional[Mapping[str, str]] = None) -> Dict[str, Optional[str]]:
    """The S3A settings the AWS environment variables call for (``None``: leave unset).

    Parameters
    ----------
    environ
        The environment (default: ``os.environ``).

    Returns
    -------
    dict
        Hadoop keys of :data:`MANAGED_KEYS` to values. With ``AWS_ENDPOINT_URL_S3`` or
        ``AWS_ENDPOINT_URL`` (an S3-compatible store such as MinIO, or a test server), that
        endpoint with path-style access and SSL as its scheme says; otherwise the regional AWS
        endpoint of ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, or ``s3.amazonaws.com`` (hadoop-aws
        3.3.1 cannot find a region by itself off EC2). Access keys from ``AWS_ACCESS_KEY_ID`` and
        ``AWS_SECRET_ACCESS_KEY`` (with ``AWS_SESSION_TOKEN``); without them, the AWS SDK's
        default chain (``AWS_PROFILE`` and the shared credentials file, web identity, instance
        and container roles).
    """
    env = os.environ if environ is None else environ
    settings: Dict[str, Optional[str]] = dict(_scheme_settings())
    settings["fs.s3a.aws.credentials.provider"] = ",".join(CREDENTIAL_PROVIDERS)
    access_key = env.get("AWS_ACCESS_KEY_ID", "").strip()
    secret_key = env.get("AWS_SECRET_ACCESS_KEY", "").strip()
    has_keys = bool(access_key and secret_key)
    settings["fs.s3a.access.key"] = access_key if has_keys else None
    settings["fs.s3a.secret.key"] = secret_key if has_keys else None
    token = env.get("AWS_SESSION_TOKEN", "").strip()
    settings["fs.s3a.session.token"] = token if has_keys and token else None
    endpoint = endpoint_from_env(env)
    if endpoint is not None:
        scheme = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}").scheme
        settings["fs.s3a.endpoint"] = endpoint
        settings["fs.s3a.path.style.access"] = "true"
        settings["fs.s3a.connection.ssl.enabled"] = "true" if scheme == "https" else "false"
    else:
        region = region_from_env(env)
        if region is None:
            settings["fs.s3a.endpoint"] = "s3.amazonaws.com"
        else:
            suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
            settings["fs.s3a.endpoint"] = f"s3.{region}.{suffix}"
        settings["fs.s3a.path.style.access"] = None
        settings["fs.s3a.connection.ssl.enabled"] = None
    return settings


def _is_default_source(source: str) -> bool:
    """Whether a Hadoop property source is a default rather than someone's choice.

    Besides ``core-default.xml`` and this module, Spark itself fills in ``fs.s3a.endpoint``
    ("Set by Spark to default values") and copies the AWS key variables of the JVM's start-up
    environment ("Set by Spark on <host> from AWS_ACCESS_KEY_ID"); both follow the environment.
    """
    return (
        source in _DEFAULT_SOURCES
        or source.startswith("Set by Spark to default values")
        or (source.startswith("Set by Spark on ") and " from AWS_" in source)
    )


def _user_set(hadoop_conf: Any, key: str) -> bool:
    """Whether ``key`` holds a value someone chose (not a default, not ours)."""
    if hadoop_conf.get(key) is None:
        return False
    sources = hadoop_conf.getPropertySources(key)
    if sources is None:
        return True
    return not any(_is_default_source(str(source)) for source in sources)


def configure_s3(spark: SparkSession, environ: Optional[Mapping[str, str]] = None) -> None:
    """Point S3A at the endpoint and credentials of the current environment (not on EMR).

    Sets :func:`hadoop_settings` on the session's Hadoop configuration, leaving alone any key a
    user set (``spark.hadoop.*``, ``core-site.xml``, code). Safe to call again on a running session:
    when the settings change, cached S3 filesystems are closed so the next access uses them.

    Parameters
    ----------
    spark
        The session (a local one, or the driver of a cluster).
    environ
        The environment to read (default: ``os.environ``).
    """
    if on_emr():
        return
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    changed = False
    for key, value in hadoop_settings(environ).items():
        if _user_set(hadoop_conf, key):
            continue
        previous = hadoop_conf.get(key)
        # Set earlier from an environment (ours, or Spark's copy of the AWS keys at start-up).
        previous_ours = previous is not None and any(
            str(source) == _SOURCE or str(source).startswith("Set by Spark on ")
            for source in (hadoop_conf.getPropertySources(key) or [])
        )
        if value is None:
            if previous_ours:
                hadoop_conf.unset(key)
                changed = True
        elif previous != value:
            hadoop_conf.set(key, value, _SOURCE)
            changed = changed or previous_ours
    if changed:
        _close_cached_filesystems(spark)
    keys = "access keys" if hadoop_conf.get("fs.s3a.access.key") else "the AWS default chain"
    log.info(
        "s3://, s3a:// through S3A: endpoint %s, credentials from %s",
        hadoop_conf.get("fs.s3a.endpoint"), keys,
    )


def remember_bucket(path: str) -> None:
    """Note the bucket of an S3 ``path``, whose cached FileSystem a settings change must drop."""
    parsed = urlparse(path)
    if parsed.scheme.lower() in S3_SCHEMES and parsed.netloc:
        _buckets_seen.add(f"{parsed.scheme.lower()}://{parsed.netloc}/")


def _close_cached_filesystems(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a stopped context
        return
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for root in sorted(_buckets_seen):
        try:
            jvm.org.apache.hadoop.fs.FileSystem.get(jvm.java.net.URI(root), hadoop_conf).close()
        except Exception as error:  # a filesystem that cannot even start has nothing to close
            log.debug("closing the cached filesystem of %s: %s", root, error)
    _buckets_seen.clear()


# ------------------------------------------------------------------------------ errors


def _java_chain(error: BaseException) -> List[Any]:
    """The Java exception behind a py4j error and its causes (outermost first)."""
    java = getattr(error, "java_exception", None)
    chain: List[Any] = []
    while java is not None and len(chain) < 20:
        chain.append(java)
        java = java.getCause()
    return chain


def translate_error(error: BaseException, path: str) -> Optional[SegmentationError]:
    """A one-line :class:`StorageError` for a storage failure on ``path``, or ``None``.

    Recognises, anywhere in the Java cause chain: missing hadoop-aws classes; a missing bucket
    (``UnknownStoreException``, ``NoSuchBucket``); denied access (``AccessDeniedException``,
    403, ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``); no credentials
    (``NoAuthWithAWSException``); an unreachable endpoint (connection refused, unknown host,
    timeouts). Anything else returns ``None`` (a bug, or a problem the caller handles).
    """
    chain = _java_chain(error)
    if not chain:
        return None
    names = [str(e.getClass().getName()) for e in chain]
    messages = [str(e.getMessage() or "") for e in chain]
    text = " ".join(messages)
    parsed = urlparse(path)
    bucket = parsed.netloc
    if any(
        "S3AFileSystem" in m or 'No FileSystem for scheme "s3' in m for m in messages
    ) or any(n.startswith("com.amazonaws") and "ClassNotFound" in n for n in names):
        return StorageError(f"cannot open {path}: {jars_hint()}")
    if not is_s3_path(path):
        return None
    if "org.apache.hadoop.fs.s3a.UnknownStoreException" in names or "NoSuchBucket" in text:
        return StorageError(f"S3 bucket {bucket} does not exist (or is not visible): {path}")
    if (
        "java.nio.file.AccessDeniedException" in names
        or "InvalidAccessKeyId" in text
        or "SignatureDoesNotMatch" in text
        or "Status Code: 403" in text
    ):
        reason = next(
            (code for code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
             if code in text),
            "403 Forbidden",
        )
        return StorageError(
            f"access to {path} denied ({reason}): check the AWS credentials "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and their permissions"
        )
    if "org.apache.hadoop.fs.s3a.auth.NoAuthWithAWSException" in names:
        return StorageError(
            f"no AWS credentials for {path}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "or AWS_PROFILE, or run where an instance role applies"
        )
    unreachable = (
        "java.net.ConnectException", "java.net.UnknownHostException",
        "java.net.SocketTimeoutException", "org.apache.http.conn.ConnectTimeoutException",
        "org.apache.http.conn.HttpHostConnectException",
    )
    if any(n in unreachable for n in names) or "Unable to execute HTTP request" in text:
        endpoint = endpoint_from_env(os.environ) or "the S3 endpoint"
        detail = messages[-1].splitlines()[0] if messages[-1] else names[-1]
        return StorageError(f"cannot reach {endpoint} for {path}: {detail}")
    return None
