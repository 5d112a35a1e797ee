"""Build the driver JVM's class-data archive (Java AppCDS) by running the jobs once.

``scripts/setup.sh`` runs this when the archive is missing. It segments the shipped retail
sample and a small generated Avito SQLite database in one JVM started with
``-XX:ArchiveClassesAtExit``, ends that JVM, and moves the archive it wrote into place
(``segmentation.session.default_class_archive()``, or the path given). Later runs that start a
local-mode JVM map it (``segmentation.session.local_driver_java_conf``): see README "Performance".

Usage: ``.venv/bin/python scripts/build_class_archive.py [ARCHIVE]``
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample" / "online_retail_II_sample.csv.gz"


def main(argv: List[str]) -> int:
    """Build the archive at ``argv[0]`` (default: the user's cache); return the exit code."""
    from segmentation.cli import main as segmentation
    from segmentation.session import (
        CLASS_ARCHIVE_ENV,
        class_archive_conf,
        class_archive_key,
        default_class_archive,
        stale_class_archives,
        stop_driver_jvm,
    )

    target = Path(argv[0] if argv else default_class_archive()).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    os.environ[CLASS_ARCHIVE_ENV] = "off"  # build from the jars, not from an older archive
    conf = [f"--conf={key}={value}" for key, value in class_archive_conf(str(partial)).items()]
    started = time.monotonic()
    logging.disable(logging.INFO)  # the runs' progress is not what setup reports
    with tempfile.TemporaryDirectory(prefix="class-archive-") as work:
        database = os.path.join(work, "avito.sqlite")
        runs = [
            ["run", "--source", "retail", "--input", str(SAMPLE), "--output",
             os.path.join(work, "retail"), "--k", "3-4", *conf],
            ["generate", "avito", "--users", "300", "--searches", "3000", "--format", "sqlite",
             "--out", database],
            ["run", "--source", "avito", "--input", database, "--output",
             os.path.join(work, "avito"), "--k", "3-4", *conf],
        ]
        for run in runs:
            with contextlib.redirect_stdout(io.StringIO()):  # the profile tables
                code = segmentation(run)
            if code != 0:
                print(f"build_class_archive: `segmentation {' '.join(run[:3])}` exited {code}",
                      file=sys.stderr)
                return code
        stop_driver_jvm()
    if not partial.is_file():
        print("build_class_archive: the JVM wrote no archive", file=sys.stderr)
        return 1
    os.replace(partial, target)
    target.with_name(target.name + ".json").write_text(json.dumps(class_archive_key()) + "\n")
    print(f"class-data archive {target} ({target.stat().st_size / 1e6:.0f} MB) built in "
          f"{time.monotonic() - started:.0f} s", file=sys.stderr)
    for stale in stale_class_archives(str(target.parent)):  # of deleted or recreated .venvs
        for path in (stale, stale + ".json"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        print(f"removed the stale class-data archive {stale}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
