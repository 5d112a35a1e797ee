"""The output layout: versioned runs under ``--output``, published all or nothing.

A command that makes a run (ingest, features, cluster, run, score, and compare with
``--output``) never modifies an earlier run. It writes a new run folder, and publishes it by
replacing one small pointer object, the way table formats commit::

    OUTPUT/
      LATEST                         {"format": "segmentation-latest/1", "run_id": "...",
                                      "path": "runs/<run_id>", "command": "run",
                                      "finished_at": "..."}: the published run
      runs/
        20261123T171800Z-3fa2c1/     one run: its entries (below), manifest.json, then _SUCCESS
        20261124T080000Z-9b0e77/     a newer run being written (no _SUCCESS: never read)

1. every entry is written into ``runs/<run_id>/`` (a new folder; ``run_id`` sorts by time);
2. ``manifest.json``, then ``_SUCCESS``, are written in the run folder;
3. ``LATEST`` is replaced in one write (one PUT on S3; a temporary file and ``os.replace`` on
   local disk): this is the publication. A run killed before it leaves the previous ``LATEST``
   and the run it names untouched;
4. runs beyond the retention (``--keep-runs``, default :data:`DEFAULT_KEEP_RUNS`: the published
   run and the one before it) and unfinished run folders older than the published one are
   deleted.

No step renames or copies data, so it is as safe on S3 (where a rename is a copy) as on disk.
Readers resolve a location through :func:`resolve`: ``OUTPUT`` (or ``OUTPUT/features``, ...) is
read through ``LATEST``; ``OUTPUT/runs/<run_id>`` can be given directly and is read only if it
holds ``_SUCCESS``. Without ``LATEST`` (deleted by hand, or a writer killed between ``_SUCCESS``
and ``LATEST``) the latest complete run is the greatest ``run_id`` under ``runs/`` holding
``_SUCCESS``.

``audiences`` and ``compare`` (without ``--output``) add to a published run: they stage their
entries in ``<run>/_staging/<command>-<token>/``, and on success delete their marker
``<run>/<command>.manifest.json``, move the staged files into place (file by file: each file is
whole, old or new) and write the marker again, last. An addition is complete exactly when its
marker exists; an interrupted re-run leaves it without marker, never looking complete. They
never touch the run's own data (``assignments/``, ``features/``, ``model/``, ``run.json``,
``manifest.json``, ``_SUCCESS``); compare replaces the files of ``report/`` one by one
(``report.html`` is self-contained, so it is always one whole page).

``--output`` must be empty, missing or an earlier output of this product (``LATEST`` and
``runs/`` only): anything else is refused, with ``--overwrite`` too. Every path written is built
from checked names below the output root (no ``..``, no absolute part).

============================  ================================================================
entry of a run                written by
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
``audiences/``                audiences (added to a published run)
``<command>.manifest.json``   audiences, compare: their marker and manifest, last
``migration/``, ``.json``     compare (and ``report/`` re-rendered with the heatmap)
``manifest.json``             every run-making command: what it read, dropped, chose, wrote
``_SUCCESS``                  every run-making command, last in the run folder
============================  ================================================================
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, StructType

from segmentation.errors import InputError, OutputExistsError, StorageError
from segmentation.io import storage
from segmentation.manifest import RunManifest

log = logging.getLogger(__name__)

_CLUSTER_ENTRIES = (
    "assignments", "profiles", "profiles.json", "k_selection", "k_selection.json", "model",
    "run.json", "report",
)

#: The entries each command writes (besides ``manifest.json`` and ``_SUCCESS``, or the marker).
ENTRIES: Dict[str, Tuple[str, ...]] = {
    "ingest": ("tables",),
    "features": ("features", "rejected", "run.json"),
    "cluster": _CLUSTER_ENTRIES,
    "run": ("features", "rejected", *_CLUSTER_ENTRIES),
    "score": (
        "features", "rejected", "assignments", "profiles", "profiles.json", "run.json", "report",
    ),
    # These two add to a published run; compare also re-renders that run's report/.
    "compare": ("migration", "migration.json", "report"),
    "audiences": ("audiences",),
}

#: Commands that add to a published run's folder instead of making a run.
ADDING_COMMANDS = ("audiences", "compare")

#: Entries of the run an addition replaces without owning them (no ``--overwrite`` needed).
SHARED_ENTRIES = ("report",)

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
LATEST = "LATEST"
RUNS = "runs"
STAGING = "_staging"

#: Every entry this product writes in a run folder.
KNOWN_ENTRIES = frozenset(
    name for names in ENTRIES.values() for name in names
) | {MANIFEST, SUCCESS, STAGING} | {f"{c}.manifest.json" for c in ADDING_COMMANDS}

#: ``format`` of the ``LATEST`` pointer.
POINTER_FORMAT = "segmentation-latest/1"

#: A run id: UTC time of the start, then 6 hex digits (sorts by time; unique).
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")

#: Published runs kept by default: the new one and the one it replaced.
DEFAULT_KEEP_RUNS = 2

#: Trailing parts of a location that may name an entry of an output (``OUT/tables/invoices``).
_MAX_ENTRY_DEPTH = 3


def _ignorable(name: str) -> bool:
    """Names that are no content: temporary pointer files, EMRFS folder markers."""
    return (name.startswith(f".{LATEST}.") and name.endswith(".tmp")) or name.endswith(
        "_$folder$"
    )


def check_name(name: str) -> str:
    """Return ``name`` (``"report/report.html"``) if every part stays below its folder.

    Raises
    ------
    ValueError
        For an empty, absolute or ``.``/``..`` part, or a backslash.
    """
    parts = name.split("/")
    if (
        not name or name.startswith("/") or "\\" in name or ":" in parts[0]
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise ValueError(f"refusing to write {name!r}: outside the output folder")
    return name


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is one (``20261123T171800Z-3fa2c1``), else raise ValueError."""
    if not RUN_ID.match(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return run_id


def output_root(root: str) -> str:
    """``--output`` as a folder path without a trailing ``/``; refuse ``..`` in a URI.

    Local paths are normalised (``out/../x`` is ``x``); ``s3://b/a/../x`` is refused (an S3 key
    holds ``..`` literally).
    """
    text = root.rstrip("/") or root
    if "://" in text:
        rest = text.split("://", 1)[1]
        if any(part in (".", "..") for part in rest.split("/")[1:]):
            raise InputError(f"output {root}: '.' and '..' are not allowed in a URI")
        return text
    return os.path.normpath(text)


def new_run_id(after: Optional[str] = None) -> str:
    """A new run id, greater than ``after`` (the greatest existing one) if given."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"{stamp}-{secrets.token_hex(3)}"
    if after is not None and run_id <= after:  # a clock behind the last run's: stay after it
        last_stamp, last_hex = after.split("-")
        following = int(last_hex, 16) + 1
        run_id = f"{last_stamp}-{following:06x}" if following < 0x1000000 else (
            f"{last_stamp}-ffffff"
        )
    return run_id


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class Resolved:
    """Where a location given by the user is read.

    Attributes
    ----------
    path
        The physical location to read (the given one, or the same entry of the published run).
    run_dir
        The finished run folder holding ``path``, or ``None`` when ``path`` is not in one.
    root
        The output folder (``LATEST`` and ``runs/``) of that run, when there is one.
    """

    path: str
    run_dir: Optional[str] = None
    root: Optional[str] = None


def read_pointer(spark: SparkSession, root: str) -> Optional[Dict[str, Any]]:
    """The ``LATEST`` pointer of the output ``root``, or ``None`` when it has none.

    Raises
    ------
    InputError
        When ``LATEST`` is not a pointer of this product (or names a path outside ``runs/``).
    """
    path = storage.join_path(root, LATEST)
    if not storage.exists(spark, path):
        return None
    try:
        document = json.loads(storage.read_text(spark, path))
    except ValueError:
        document = None
    if (
        not isinstance(document, dict) or document.get("format") != POINTER_FORMAT
        or not RUN_ID.match(str(document.get("run_id")))
        or document.get("path") != f"{RUNS}/{document.get('run_id')}"
    ):
        raise InputError(f"{path} is not a run pointer of this product")
    return document


def finished_runs(spark: SparkSession, root: str) -> List[str]:
    """Run ids under ``root/runs/`` holding ``_SUCCESS``, oldest first."""
    runs = storage.join_path(root, RUNS)
    return [
        name for name in storage.list_names(spark, runs)
        if RUN_ID.match(name) and storage.exists(spark, storage.join_path(runs, name, SUCCESS))
    ]


def latest_run(spark: SparkSession, root: str) -> Optional[str]:
    """The folder of the published run of the output ``root``, or ``None`` if it has none.

    ``LATEST`` names it; without ``LATEST`` (or if it names a run without ``_SUCCESS``) it is
    the greatest run id under ``runs/`` holding ``_SUCCESS``.
    """
    pointer = read_pointer(spark, root)
    if pointer is not None:
        run_dir = storage.join_path(root, pointer["path"])
        if storage.exists(spark, storage.join_path(run_dir, SUCCESS)):
            return run_dir
        log.warning("%s/%s names %s, which has no %s: using the latest finished run",
                    root, LATEST, run_dir, SUCCESS)
    finished = finished_runs(spark, root)
    return storage.join_path(root, RUNS, finished[-1]) if finished else None


def _is_output_root(spark: SparkSession, base: str) -> bool:
    return storage.exists(spark, storage.join_path(base, LATEST)) or storage.is_directory(
        spark, storage.join_path(base, RUNS)
    )


def _candidates(path: str) -> List[Tuple[str, List[str]]]:
    """``(base, rest)`` splits of ``path``: itself, then up to 3 parents, never above a bucket."""
    parts = path.split("/")
    if "://" in path:
        minimum = 3  # "s3:", "", "bucket"
    elif path.startswith("/"):
        minimum = 2
    else:
        minimum = 1
    found = []
    for depth in range(_MAX_ENTRY_DEPTH + 1):
        keep = len(parts) - depth
        if keep < minimum:
            break
        rest = parts[keep:]
        if any(part in ("", ".", "..") for part in rest):
            break
        found.append(("/".join(parts[:keep]), rest))
    return found


def resolve(spark: SparkSession, path: str) -> Resolved:
    """Where to read ``path``: the one resolver of every location that may be a product output.

    * ``OUT`` or ``OUT/<entry>...`` where ``OUT`` holds ``LATEST`` or ``runs/``: the same entry
      of the published run (:func:`latest_run`);
    * ``OUT/runs/<run_id>[/<entry>...]``: that run, if it holds ``_SUCCESS``;
    * a run folder of an earlier version (``run.json`` at its top), or an entry of it: as given;
    * anything else (an input file, a folder of tables): as given, with no run.

    Raises
    ------
    InputError
        For an output with no finished run, an unfinished run folder, or ``OUT/runs``.
    """
    text = path.rstrip("/") or path
    if any(ch in text for ch in "*?[{"):
        return Resolved(path)
    there = storage.exists(spark, text)  # errors (missing bucket, denied) name ``path``
    for depth, (base, rest) in enumerate(_candidates(text)):
        if depth == 0 and not there:
            continue
        name = base.rsplit("/", 1)[-1]
        parent = base.rsplit("/", 1)[0] if "/" in base else ""
        if RUN_ID.match(name) and parent.rsplit("/", 1)[-1] == RUNS:  # OUT/runs/<run_id>
            if not storage.exists(spark, storage.join_path(base, SUCCESS)):
                raise InputError(
                    f"{base} is not a finished run (no {SUCCESS}): it failed, was interrupted "
                    "or is still running"
                )
            return Resolved(storage.join_path(base, *rest), base, parent.rsplit("/", 1)[0])
        try:
            inside = bool(rest) and rest[0] in (RUNS, STAGING, LATEST)
            if (depth == 0 or not there or inside) and _is_output_root(spark, base):
                if inside:
                    raise InputError(
                        f"{path}: point at the output folder {base} or at one run folder "
                        f"{base}/{RUNS}/<run_id>"
                    )
                run_dir = latest_run(spark, base)
                if run_dir is None:
                    raise InputError(
                        f"{base} holds no finished run (no {LATEST}, no run with {SUCCESS} "
                        f"under {RUNS}/)"
                    )
                return Resolved(storage.join_path(run_dir, *rest), run_dir, base)
            if there and storage.exists(spark, storage.join_path(base, "run.json")):
                return Resolved(path, base, None)  # a run folder of an earlier version
        except StorageError as error:
            if depth == 0 or "denied" not in str(error):
                raise
            # A parent the credentials may not read (a policy on the input prefix only).
    return Resolved(path)


def resolve_run(spark: SparkSession, path: str) -> str:
    """The finished run folder ``path`` names (an output folder, a run folder, an old run).

    Raises
    ------
    InputError
        When ``path`` is missing or holds no finished run of this product.
    """
    resolved = resolve(spark, path)
    if resolved.run_dir is not None:
        return resolved.run_dir
    if not storage.exists(spark, path):
        raise InputError(f"input not found: {path}")
    return path.rstrip("/") or path  # an earlier version's folder, or not a run: callers check


# ------------------------------------------------------------------------------ writing


class OutputLayout:
    """The output of one command: a new run folder, or an addition to a published run.

    Parameters
    ----------
    spark
        The session (its Hadoop configuration reaches S3).
    root
        ``--output`` (a local folder or an ``s3://`` prefix), or for an addition the run folder.
    command
        The command writing (a key of :data:`ENTRIES`).
    adds_to_run
        Whether the command adds to the published run ``root`` (default: audiences and compare;
        compare with ``--output`` makes a run).
    keep_runs
        Published runs to keep after publishing (default: the manifest's ``keep_runs``
        parameter, else :data:`DEFAULT_KEEP_RUNS`).

    Examples
    --------
    >>> layout = OutputLayout(spark, "out/retail", "features")  # doctest: +SKIP
    >>> layout.check(overwrite=False)  # refuse foreign content, or a run without --overwrite
    >>> layout.clear()  # start: nothing published is touched  # doctest: +SKIP
    >>> layout.write_parquet(features, "features")  # out/retail/runs/<run_id>/features
    >>> layout.publish(manifest)  # manifest.json, _SUCCESS, then LATEST  # doctest: +SKIP
    """

    def __init__(
        self,
        spark: SparkSession,
        root: str,
        command: str,
        adds_to_run: Optional[bool] = None,
        keep_runs: Optional[int] = None,
    ) -> None:
        if command not in ENTRIES:
            raise ValueError(f"unknown command {command!r}")
        if keep_runs is not None and keep_runs < 1:
            raise ValueError("keep_runs must be at least 1")
        self.spark = spark
        self.root = root
        self.base = output_root(root)
        self.command = command
        self.entries = ENTRIES[command]
        self.adds_to_run = command in ADDING_COMMANDS if adds_to_run is None else adds_to_run
        self.keep_runs = keep_runs
        self.run_id = new_run_id()
        self.token = f"{command}-{self.run_id}"

    # -------------------------------------------------------------- where things go

    @property
    def run_dir(self) -> str:
        """The run folder written: ``runs/<run_id>`` of a new run, or the run added to."""
        if self.adds_to_run:
            return self.base
        return storage.join_path(self.base, RUNS, check_run_id(self.run_id))

    @property
    def staging(self) -> str:
        """Where an addition is written before it is published (``<run>/_staging/<token>``)."""
        return storage.join_path(self.base, STAGING, self.token)

    @property
    def marker(self) -> str:
        """The name of what is written last: ``_SUCCESS``, or the addition's manifest."""
        return f"{self.command}.manifest.json" if self.adds_to_run else SUCCESS

    def _folder(self) -> str:
        return self.staging if self.adds_to_run else self.run_dir

    def path(self, *parts: str) -> str:
        """Where an entry is written now (``layout.path("features")``); always below the root."""
        for part in parts:
            check_name(part.rstrip("/"))
        return storage.join_path(self._folder(), *parts)

    def final_path(self, *parts: str) -> str:
        """Where an entry is once published (the same as :meth:`path` for a new run)."""
        for part in parts:
            check_name(part.rstrip("/"))
        return storage.join_path(self.run_dir, *parts)

    # -------------------------------------------------------------- before writing

    def _owned(self) -> Tuple[str, ...]:
        owned = tuple(name for name in self.entries if name not in SHARED_ENTRIES)
        return (*owned, self.marker)

    def existing(self) -> Tuple[str, ...]:
        """What ``--overwrite`` would replace: the published run's id, or the addition's entries.

        Raises
        ------
        OutputExistsError
            When the output holds anything this product did not write there (``--overwrite``
            does not help): another product's files, or a run of an earlier version.
        """
        if self.adds_to_run:
            present = set(storage.list_names(self.spark, self.base))
            return tuple(name for name in sorted(self._owned()) if name in present)
        if storage.exists(self.spark, self.base) and not storage.is_directory(
            self.spark, self.base
        ):
            raise OutputExistsError(f"output {self.root} is a file, not a folder")
        folder, _, name = self.base.rpartition("/")
        if RUN_ID.match(name) and folder.rsplit("/", 1)[-1] == RUNS:
            raise OutputExistsError(
                f"output {self.root} is a run folder of the output {folder.rsplit('/', 1)[0]}: "
                "give that output folder (with --overwrite), or a new one"
            )
        names = storage.list_names(self.spark, self.base)
        foreign = [n for n in names if n not in (LATEST, RUNS) and not _ignorable(n)]
        if foreign and set(foreign) <= KNOWN_ENTRIES:
            raise OutputExistsError(
                f"output {self.root} holds the outputs of an earlier version of segmentation "
                f"({', '.join(foreign)}) at its top: move them away or choose another --output"
            )
        if foreign:
            raise OutputExistsError(
                f"output {self.root} holds {_listing(foreign)}, which segmentation did not "
                "write: choose a new or empty folder (--overwrite replaces only runs)"
            )
        runs = storage.list_names(self.spark, storage.join_path(self.base, RUNS))
        strangers = [n for n in runs if not RUN_ID.match(n) and not _ignorable(n)]
        if strangers:
            raise OutputExistsError(
                f"output {self.root} holds {_listing(strangers)} under {RUNS}/, which "
                "segmentation did not write: choose a new or empty folder"
            )
        if LATEST in names:
            pointer = read_pointer(self.spark, self.base)
            return (f"run {pointer['run_id']}",) if pointer else ()
        finished = [n for n in runs if RUN_ID.match(n) and storage.exists(
            self.spark, storage.join_path(self.base, RUNS, n, SUCCESS))]
        return (f"run {finished[-1]}",) if finished else ()

    def check(self, overwrite: bool) -> None:
        """Refuse foreign content always, and an earlier run (or addition) unless ``overwrite``.

        Raises
        ------
        OutputExistsError
            One line naming what is there.
        """
        existing = self.existing()
        if existing and not overwrite:
            raise OutputExistsError(
                f"output {self.root} already holds {', '.join(existing)}; "
                "pass --overwrite to replace"
            )
        if not self.adds_to_run:
            runs = storage.list_names(self.spark, storage.join_path(self.base, RUNS))
            greatest = max((n for n in runs if RUN_ID.match(n)), default=None)
            if greatest is not None and self.run_id <= greatest:
                self.run_id = new_run_id(after=greatest)
                self.token = f"{self.command}-{self.run_id}"

    def clear(self) -> None:
        """Start writing. Nothing published is deleted: a new run goes to a new folder.

        An addition removes what an interrupted earlier attempt left in ``_staging/``.
        """
        if self.adds_to_run:
            staging = storage.join_path(self.base, STAGING)
            for name in storage.list_names(self.spark, staging):
                if name.startswith(f"{self.command}-"):
                    storage.delete(self.spark, storage.join_path(staging, name))
            log.info("writing %s into %s, published on success", self.command, self.staging)
        else:
            log.info("writing run %s into %s", self.run_id, self.run_dir)

    # -------------------------------------------------------------- writing

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

    def write_rows(self, rows: Sequence[Sequence[Any]], schema: StructType, name: str) -> str:
        """Write a few rows held by the driver as one Parquet file in entry ``name``.

        The table is built from literals in the JVM (:func:`literal_frame`), not by
        ``spark.createDataFrame``, which starts a Python worker to decode the pickled rows (0.6 s
        the first time in a session, for a table of four rows).
        """
        return self.write_parquet(literal_frame(self.spark, rows, schema), name, partitions=1)

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
        """Entry -> published location, for the manifest (with the marker; a run's manifest)."""
        names = (*self.entries, self.marker) if self.adds_to_run else (
            *self.entries, MANIFEST, SUCCESS
        )
        return {name: self.final_path(name) for name in names}

    # -------------------------------------------------------------- publishing

    def publish(self, manifest: RunManifest) -> str:
        """Publish what was written; return the run folder.

        A new run: ``manifest.json``, ``_SUCCESS``, then ``LATEST``, then the retention. An
        addition: its marker deleted, the staged files moved into the run, the marker written.
        """
        if self.adds_to_run:
            self._publish_addition(manifest)
            log.info("published %s in %s", self.command, self.run_dir)
            return self.run_dir
        manifest.set("run", {"id": self.run_id, "folder": self.run_dir})
        document = manifest.finish()
        storage.write_json(self.spark, self.path(MANIFEST), document)
        storage.write_text(self.spark, self.path(SUCCESS), "")
        pointer = {
            "format": POINTER_FORMAT,
            "run_id": self.run_id,
            "path": f"{RUNS}/{self.run_id}",
            "command": self.command,
            "finished_at": document.get("finished_at"),
        }
        storage.write_atomic(
            self.spark, storage.join_path(self.base, LATEST),
            (json.dumps(pointer, indent=2) + "\n").encode("utf-8"),
        )
        log.info("published run %s: %s", self.run_id, self.run_dir)
        keep = self.keep_runs
        if keep is None:
            keep = int((manifest.document.get("parameters") or {}).get("keep_runs")
                       or DEFAULT_KEEP_RUNS)
        self.retain(keep)
        return self.run_dir

    def retain(self, keep: int) -> List[str]:
        """Delete finished runs beyond the ``keep`` newest and unfinished ones older than this.

        The published run is always kept, and so is any folder newer than it (a run another
        writer may still be writing). Returns the run ids deleted; a failure to delete is
        logged, not raised (the run is published already).
        """
        runs_folder = storage.join_path(self.base, RUNS)
        deleted: List[str] = []
        kept = 1
        for name in sorted(storage.list_names(self.spark, runs_folder), reverse=True):
            if not RUN_ID.match(name) or name >= self.run_id:
                continue
            folder = storage.join_path(runs_folder, name)
            finished = storage.exists(self.spark, storage.join_path(folder, SUCCESS))
            if finished and kept < keep:
                kept += 1
                continue
            try:
                storage.delete(self.spark, folder)
                deleted.append(name)
            except Exception as error:  # the run is published already: only warn
                log.warning("could not delete the old run %s: %s", folder, error)
        for name in storage.list_names(self.spark, self.base):
            if _ignorable(name) and name.startswith("."):
                storage.delete(self.spark, storage.join_path(self.base, name))
        if deleted:
            log.info("deleted %d older run(s) of %s: %s", len(deleted), self.root,
                     ", ".join(sorted(deleted)))
        return deleted

    def _publish_addition(self, manifest: RunManifest) -> None:
        marker = storage.join_path(self.base, self.marker)
        storage.delete(self.spark, marker)  # from here on the addition reads as incomplete
        for entry in self.entries:
            staged = storage.join_path(self.staging, entry)
            target = storage.join_path(self.base, entry)
            if not storage.exists(self.spark, staged):
                if entry not in SHARED_ENTRIES:
                    storage.delete(self.spark, target)
                continue
            if not storage.is_directory(self.spark, staged):
                storage.rename(self.spark, staged, target)
                continue
            if storage.exists(self.spark, target) and not storage.is_directory(
                self.spark, target
            ):
                storage.delete(self.spark, target)
            new = storage.relative_files(self.spark, staged)
            for name in new:
                storage.rename(self.spark, storage.join_path(staged, name),
                               storage.join_path(target, name))
            for name in sorted(set(storage.relative_files(self.spark, target)) - set(new)):
                storage.delete(self.spark, storage.join_path(target, name))
        storage.write_json(self.spark, marker, manifest.finish())
        storage.delete(self.spark, self.staging)
        if not storage.list_names(self.spark, storage.join_path(self.base, STAGING)):
            storage.delete(self.spark, storage.join_path(self.base, STAGING))


def literal_frame(
    spark: SparkSession, rows: Sequence[Sequence[Any]], schema: StructType
) -> DataFrame:
    """``rows`` (values in ``schema``'s field order) as a DataFrame of ``schema``, from literals.

    Built in the JVM (``inline`` of an array of struct literals, cast to the schema), so no
    Python worker decodes anything; for a few dozen rows, not for data. Without rows every
    column is nullable.
    """
    if not rows:
        return spark.range(0).select(
            *[F.lit(None).cast(f.dataType).alias(f.name) for f in schema.fields]
        )
    width = len(schema.fields)
    if any(len(row) != width for row in rows):
        raise ValueError(f"every row needs {width} values ({', '.join(schema.names)})")
    structs = [
        F.struct(*[F.lit(value).alias(f.name) for value, f in zip(row, schema.fields)])
        for row in rows
    ]
    table = F.array(*structs).cast(ArrayType(schema, containsNull=False))
    return spark.range(1).select(F.inline(table))


def _listing(names: List[str], shown: int = 5) -> str:
    """``a, b, c`` (and ``... (N in all)`` beyond ``shown``)."""
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} in all)"
