"""Paths and small side files, through Hadoop's FileSystem so local disk and S3 behave alike.

Parquet goes through Spark's writers; JSON side files (``manifest.json``, ``profiles.json``...)
and markers go through the same Hadoop filesystem layer, so a job writing to ``s3://`` puts every
output object under the same prefix. On S3 a "folder" is a key prefix: :func:`exists`,
:func:`is_directory` and :func:`list_names` treat a prefix with objects under it as a folder.

Failures of the storage itself (a missing bucket, denied access, no credentials, an unreachable
endpoint, no S3 support installed) raise :class:`~segmentation.errors.StorageError` with one line
(see :func:`segmentation.io.s3.translate_error`).
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional

from py4j.protocol import Py4JJavaError
from pyspark.sql import SparkSession

from segmentation.errors import StorageError
from segmentation.io import s3


def join_path(base: str, *parts: str) -> str:
    """Join path segments with ``/``, for local paths and URIs alike."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def _jvm(spark: SparkSession) -> Any:
    jvm = spark.sparkContext._jvm
    if jvm is None:  # pragma: no cover - a stopped context
        raise RuntimeError("the SparkContext is stopped")
    return jvm


@contextmanager
def translated_errors(path: str) -> Iterator[None]:
    """Turn storage failures on ``path`` surfacing through py4j into one-line errors.

    Raises
    ------
    StorageError
        For the failures :func:`segmentation.io.s3.translate_error` recognises; other errors pass
        through unchanged.
    """
    try:
        yield
    except Py4JJavaError as error:
        translated = s3.translate_error(error, path)
        if translated is None:
            raise
        raise translated from None


def _fs_and_path(spark: SparkSession, path: str) -> Any:
    s3.remember_bucket(path)
    hadoop_path = _jvm(spark).org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = hadoop_path.getFileSystem(conf)
    # No ".name.crc" sidecars beside side files on local disk (a no-op on object stores).
    fs.setWriteChecksum(False)
    return fs, hadoop_path


def _status(fs: Any, hadoop_path: Any) -> Any:
    """The FileStatus of ``hadoop_path``, or ``None`` when nothing is there.

    One call instead of ``exists`` then ``getFileStatus`` (each a round trip on S3, where a prefix
    with objects under it is a folder).
    """
    try:
        return fs.getFileStatus(hadoop_path)
    except Py4JJavaError as error:
        if str(error.java_exception.getClass().getName()) == "java.io.FileNotFoundException":
            return None
        raise


def exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists; a glob counts when it matches anything."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if any(ch in path for ch in "*?[{"):
            matches = fs.globStatus(hadoop_path)
            return matches is not None and len(matches) > 0
        return bool(fs.exists(hadoop_path))


def size_in_bytes(spark: SparkSession, path: str) -> int:
    """Bytes stored under ``path`` (a file, a folder, recursively, or a glob's matches)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if any(ch in path for ch in "*?[{"):
            matches = fs.globStatus(hadoop_path) or []
            return sum(int(fs.getContentSummary(m.getPath()).getLength()) for m in matches)
        if _status(fs, hadoop_path) is None:
            return 0
        return int(fs.getContentSummary(hadoop_path).getLength())


def list_names(spark: SparkSession, path: str) -> List[str]:
    """Names of the entries directly under the folder ``path`` (empty if it does not exist)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        status = _status(fs, hadoop_path)
        if status is None or not status.isDirectory():
            return []
        return sorted(entry.getPath().getName() for entry in fs.listStatus(hadoop_path))


def is_directory(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` is an existing folder."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        status = _status(fs, hadoop_path)
        return status is not None and bool(status.isDirectory())


def delete(spark: SparkSession, path: str) -> None:
    """Delete ``path`` recursively if it exists."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if fs.exists(hadoop_path):
            fs.delete(hadoop_path, True)


def write_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """Write ``data`` to the file ``path``, replacing it (small files: reports, figures)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        stream = fs.create(hadoop_path, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to the file ``path``, replacing it."""
    write_bytes(spark, path, text.encode("utf-8"))


def rename(spark: SparkSession, source: str, target: str) -> None:
    """Move the file ``source`` to ``target`` (on S3 a copy then a delete), replacing it.

    The folder of ``target`` is created if missing (Hadoop's local rename needs it).
    """
    with translated_errors(source):
        fs, source_path = _fs_and_path(spark, source)
        _, target_path = _fs_and_path(spark, target)
        if fs.exists(target_path):
            fs.delete(target_path, False)
        parent = target_path.getParent()
        if parent is not None and not fs.exists(parent):
            fs.mkdirs(parent)
        if not fs.rename(source_path, target_path):
            raise StorageError(f"could not move {source} to {target}")


def _local_file(fs: Any, hadoop_path: Any) -> Optional[str]:
    """The local file name of ``hadoop_path`` when ``fs`` is the local filesystem, else ``None``."""
    if str(fs.getUri().getScheme()) != "file":
        return None
    return str(fs.makeQualified(hadoop_path).toUri().getPath())


#: Schemes whose object PUT replaces an object atomically (a reader sees the old or the new).
_ATOMIC_PUT_SCHEMES = ("s3", "s3a", "s3n", "gs", "wasb", "wasbs", "abfs", "abfss", "oss")


def write_atomic(spark: SparkSession, path: str, data: bytes) -> None:
    """Replace the small file ``path`` with ``data`` so that a reader never sees it half written.

    * local disk: a temporary file in the same folder (``.<name>.<hex>.tmp``), flushed and
      fsync'ed, then ``os.replace`` (an atomic rename on POSIX);
    * object stores (S3 through S3A or EMRFS, ...): one PUT on close, which replaces the object
      atomically;
    * other Hadoop filesystems (HDFS): a temporary file, then delete and rename (a reader may see
      no file for an instant, never a partial one).
    """
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        local = _local_file(fs, hadoop_path)
        if local is not None:
            folder, name = os.path.split(local)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
            try:
                with open(temporary, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, local)
            finally:
                if os.path.exists(temporary):
                    os.remove(temporary)
            return
        if str(fs.getUri().getScheme()) in _ATOMIC_PUT_SCHEMES:
            stream = fs.create(hadoop_path, True)
            try:
                stream.write(bytearray(data))
            finally:
                stream.close()
            return
    folder_name, file_name = path.rsplit("/", 1)
    temporary_path = f"{folder_name}/.{file_name}.{secrets.token_hex(4)}.tmp"
    write_bytes(spark, temporary_path, data)
    rename(spark, temporary_path, path)


def relative_files(spark: SparkSession, path: str) -> List[str]:
    """Paths relative to the folder ``path`` of every file below it (empty if it does not exist)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if _status(fs, hadoop_path) is None:
            return []
        prefix = str(fs.makeQualified(hadoop_path).toString()).rstrip("/") + "/"
        found: List[str] = []
        files = fs.listFiles(hadoop_path, True)
        while files.hasNext():
            name = str(files.next().getPath().toString())
            if name.startswith(prefix):
                found.append(name[len(prefix):])
        return sorted(found)


def list_files(spark: SparkSession, path: str) -> List[str]:
    """Paths of every file below the folder ``path``, recursively (empty if it does not exist)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if _status(fs, hadoop_path) is None:
            return []
        found: List[str] = []
        files = fs.listFiles(hadoop_path, True)
        while files.hasNext():
            found.append(str(files.next().getPath().toString()))
        return sorted(found)


def read_text(spark: SparkSession, path: str) -> str:
    """Read the UTF-8 file ``path`` whole (for small side files only)."""
    with translated_errors(path):
        fs, hadoop_path = _fs_and_path(spark, path)
        if _status(fs, hadoop_path) is None:
            raise StorageError(f"not found: {path}")
        stream = fs.open(hadoop_path)
        try:
            data = _jvm(spark).org.apache.commons.io.IOUtils.toByteArray(stream)
        finally:
            stream.close()
    return bytes(data).decode("utf-8")


def write_json(spark: SparkSession, path: str, document: Any) -> None:
    """Write ``document`` as indented JSON to ``path``."""
    write_text(spark, path, json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


def read_json(spark: SparkSession, path: str) -> Any:
    """Read a JSON side file written by :func:`write_json`."""
    return json.loads(read_text(spark, path))
