"""Paths and small side files, through Hadoop's FileSystem so local disk and S3 behave alike.

Parquet goes through Spark's writers; JSON side files (``manifest.json``, ``profiles.json``...)
and markers go through the same Hadoop filesystem layer, so a job writing to ``s3://`` puts every
output object under the same prefix.
"""

from __future__ import annotations

import json
from typing import Any, List

from pyspark.sql import SparkSession


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


def _fs_and_path(spark: SparkSession, path: str) -> Any:
    hadoop_path = _jvm(spark).org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    fs = hadoop_path.getFileSystem(conf)
    # No ".name.crc" sidecars beside side files on local disk (a no-op on object stores).
    fs.setWriteChecksum(False)
    return fs, hadoop_path


def exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` exists; a glob counts when it matches anything."""
    fs, hadoop_path = _fs_and_path(spark, path)
    if any(ch in path for ch in "*?[{"):
        matches = fs.globStatus(hadoop_path)
        return matches is not None and len(matches) > 0
    return bool(fs.exists(hadoop_path))


def list_names(spark: SparkSession, path: str) -> List[str]:
    """Names of the entries directly under the folder ``path`` (empty if it does not exist)."""
    fs, hadoop_path = _fs_and_path(spark, path)
    if not fs.exists(hadoop_path) or not fs.getFileStatus(hadoop_path).isDirectory():
        return []
    return sorted(status.getPath().getName() for status in fs.listStatus(hadoop_path))


def is_directory(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` is an existing folder."""
    fs, hadoop_path = _fs_and_path(spark, path)
    return bool(fs.exists(hadoop_path) and fs.getFileStatus(hadoop_path).isDirectory())


def delete(spark: SparkSession, path: str) -> None:
    """Delete ``path`` recursively if it exists."""
    fs, hadoop_path = _fs_and_path(spark, path)
    if fs.exists(hadoop_path):
        fs.delete(hadoop_path, True)


def write_text(spark: SparkSession, path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to the file ``path``, replacing it."""
    fs, hadoop_path = _fs_and_path(spark, path)
    stream = fs.create(hadoop_path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()


def read_text(spark: SparkSession, path: str) -> str:
    """Read the UTF-8 file ``path`` whole (for small side files only)."""
    fs, hadoop_path = _fs_and_path(spark, path)
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
