"""The output layout: what each command writes under ``--output``, and how it is replaced.

One object, :class:`OutputLayout`, owns a command's output folder (local or S3): it knows the
entries the command writes, refuses to write over an earlier run without ``--overwrite``,
clears exactly those entries before writing, writes Parquet tables and side files, and
publishes the run with ``manifest.json`` and, last, ``_SUCCESS``. A folder without ``_SUCCESS``
is not a finished run.

============================  ================================================================
entry                         written by
============================  ================================================================
``tables/``                   ingest
``features/``                 features, run, score
``assignments/``              cluster, run, score
``profiles/``, ``.json``      cluster, run, score
``k_selection/``, ``.json``   cluster, run
``model/``                    cluster, run (the fitted scoring pipeline)
``run.json``                  features, cluster, run, score (what the run is: see
                              :mod:`segmentation.run_description`)
``report/``                   cluster, run, score (``report.html`` and its figures)
``audiences/``                audiences (added to a finished run)
``<command>.manifest.json``   audiences, compare: their own manifest beside the run's
``migration/``, ``.json``     compare (and ``report/`` re-rendered with the heatmap)
``manifest.json``             every command: what it read, dropped, chose, wrote; timings
``_SUCCESS``                  every command, last
============================  ================================================================
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession

from segmentation.errors import OutputExistsError
from segmentation.io import storage
from segmentation.manifest import RunManifest

log = logging.getLogger(__name__)

_CLUSTER_ENTRIES = (
    "assignments", "profiles", "profiles.json", "k_selection", "k_selection.json", "model",
    "run.json", "report",
)

#: The entries each command writes (besides ``manifest.json`` and ``_SUCCESS``).
ENTRIES: Dict[str, Tuple[str, ...]] = {
    "ingest": ("tables",),
    "features": ("features", "run.json"),
    "cluster": _CLUSTER_ENTRIES,
    "run": ("features", *_CLUSTER_ENTRIES),
    "score": (
        "features", "assignments", "profiles", "profiles.json", "run.json", "report",
    ),
    # These two add to a finished run; compare also re-renders that run's report/.
    "compare": ("migration", "migration.json", "compare.manifest.json"),
    "audiences": ("audiences", "audiences.manifest.json"),
}

#: Every entry this product writes: ``--overwrite`` replaces only these.
KNOWN_ENTRIES = frozenset(
    name for names in ENTRIES.values() for name in names
) | {"manifest.json", "_SUCCESS"}

#: Commands that add to a finished run's folder instead of making a run.
ADDING_COMMANDS = ("audiences", "compare")

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"


class OutputLayout:
    """The output folder of one command.

    Parameters
    ----------
    spark
        The session (its Hadoop configuration reaches S3).
    root
        ``--output``: a local folder or an ``s3://`` prefix.
    command
        The command writing (a key of :data:`ENTRIES`).

    Examples
    --------
    >>> layout = OutputLayout(spark, "out/retail", "features")  # doctest: +SKIP
    >>> layout.check(overwrite=False)  # doctest: +SKIP
    >>> layout.clear()  # doctest: +SKIP
    >>> layout.write_parquet(features, "features")  # doctest: +SKIP
    >>> layout.publish(manifest)  # doctest: +SKIP
    """

    def __init__(self, spark: SparkSession, root: str, command: str) -> None:
        if command not in ENTRIES:
            raise ValueError(f"unknown command {command!r}")
        self.spark = spark
        self.root = root
        self.command = command
        self.entries = ENTRIES[command]

    def path(self, *parts: str) -> str:
        """The location of an entry (``layout.path("features")``)."""
        return storage.join_path(self.root, *parts)

    @property
    def adds_to_run(self) -> bool:
        """Whether the command adds to a finished run's folder (audiences, compare)."""
        return self.command in ADDING_COMMANDS

    def _replaced(self) -> Tuple[str, ...]:
        """What ``--overwrite`` replaces: a whole earlier run, or only this command's entries.

        A command that makes a run replaces every entry of an earlier run in the folder (its
        audiences and comparisons too: they describe the run being replaced), so no folder
        ever mixes two runs.
        """
        if self.adds_to_run:
            return self.entries
        return (*sorted(KNOWN_ENTRIES - {SUCCESS, MANIFEST}), MANIFEST)

    def existing(self) -> Tuple[str, ...]:
        """The entries ``--overwrite`` would replace that are already in the folder."""
        replaced = set(self._replaced()) | ({SUCCESS} if not self.adds_to_run else set())
        return tuple(n for n in storage.list_names(self.spark, self.root) if n in replaced)

    def check(self, overwrite: bool) -> None:
        """Refuse to write over earlier outputs of this command unless ``overwrite``."""
        existing = self.existing()
        if existing and not overwrite:
            raise OutputExistsError(
                f"output {self.root} already holds {', '.join(existing)}; "
                "pass --overwrite to replace"
            )

    def clear(self) -> None:
        """Delete what an earlier run left (``_SUCCESS`` first: a half-replaced run shows)."""
        if not self.adds_to_run:
            storage.delete(self.spark, self.path(SUCCESS))
        for name in self._replaced():
            storage.delete(self.spark, self.path(name))

    def write_parquet(
        self, df: DataFrame, name: str, partitions: Optional[int] = None
    ) -> str:
        """Write ``df`` to the entry ``name`` as Parquet, replacing it; return its path."""
        path = self.path(name)
        if partitions is not None:
            df = df.coalesce(partitions)
        with storage.translated_errors(path):  # e.g. S3 credentials that read but cannot write
            df.write.mode("overwrite").parquet(path)
        return path

    def write_json(self, name: str, document: Any) -> str:
        """Write a JSON side file; return its path."""
        path = self.path(name)
        storage.write_json(self.spark, path, document)
        return path

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write a small file (a report page, a figure); return its path."""
        path = self.path(name)
        storage.write_bytes(self.spark, path, data)
        return path

    def outputs(self) -> Dict[str, str]:
        """Entry -> location, for the manifest (with ``manifest.json`` and ``_SUCCESS``)."""
        names = self.entries if self.adds_to_run else (*self.entries, MANIFEST, SUCCESS)
        return {name: self.path(name) for name in names}

    def publish(self, manifest: RunManifest) -> None:
        """Write ``manifest.json``, then the ``_SUCCESS`` marker, last."""
        if self.adds_to_run:
            name = f"{self.command}.manifest.json"
            storage.write_json(self.spark, self.path(name), manifest.finish())
        else:
            storage.write_json(self.spark, self.path(MANIFEST), manifest.finish())
            storage.write_text(self.spark, self.path(SUCCESS), "")
        log.info("wrote %s", self.root)
