"""The run manifest: what a job read, dropped, chose and wrote, with timings and versions."""

from __future__ import annotations

import datetime as dt
import logging
import platform
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Sequence

from segmentation import __version__

log = logging.getLogger(__name__)


#: ``--conf`` keys whose values are never recorded (Spark's default ``spark.redaction.regex``).
_SECRET_SETTING = re.compile(r"(?i)secret|password|token|access[.]key")

REDACTED = "*********(redacted)"


def _redacted_setting(setting: str) -> str:
    key, sep, _ = setting.partition("=")
    return f"{key}={REDACTED}" if sep and _SECRET_SETTING.search(key) else setting


def redact_arguments(argv: Sequence[str]) -> List[str]:
    """``argv`` with the values of secret ``--conf KEY=VALUE`` settings replaced.

    >>> redact_arguments(["--conf", "spark.hadoop.fs.s3a.secret.key=s", "--k", "2"])
    ['--conf', 'spark.hadoop.fs.s3a.secret.key=*********(redacted)', '--k', '2']
    """
    out: List[str] = []
    for i, arg in enumerate(argv):
        if i > 0 and argv[i - 1] == "--conf":
            out.append(_redacted_setting(arg))
        elif arg.startswith("--conf="):
            out.append("--conf=" + _redacted_setting(arg[len("--conf="):]))
        else:
            out.append(arg)
    return out


def _versions() -> Dict[str, str]:
    import pyarrow
    import pyspark

    return {
        "segmentation": __version__,
        "pyspark": pyspark.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


class RunManifest:
    """Collects ``manifest.json`` while a job runs.

    Examples
    --------
    >>> manifest = RunManifest("features", ["--source", "retail"])
    >>> with manifest.stage("read"):
    ...     pass
    >>> sorted(manifest.document["timings_seconds"])
    ['read']
    """

    def __init__(self, command: str, argv: Optional[Sequence[str]] = None) -> None:
        self._started = time.monotonic()
        self.document: Dict[str, Any] = {
            "command": command,
            "arguments": redact_arguments(argv if argv is not None else sys.argv[1:]),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "timings_seconds": {},
        }

    def set(self, key: str, value: Any) -> None:
        """Record ``value`` under ``key`` at the top level."""
        self.document[key] = value

    @contextmanager
    def stage(self, name: str, concurrent_with: Optional[str] = None) -> Iterator[None]:
        """Time a stage, log its start and end, and record its seconds.

        ``concurrent_with`` names the stage this one runs beside (from another thread): it is
        recorded under ``concurrent_stages``, so that a reader does not add overlapping seconds.
        """
        log.info("%s ...", name)
        if concurrent_with is not None:
            self.document.setdefault("concurrent_stages", {})[name] = concurrent_with
        started = time.monotonic()
        yield
        seconds = round(time.monotonic() - started, 3)
        self.document["timings_seconds"][name] = seconds
        log.info("%s done in %.1f s", name, seconds)

    def finish(self) -> Dict[str, Any]:
        """Stamp the end time and the total duration; return the document."""
        self.document["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"
        )
        self.document["timings_seconds"]["total"] = round(time.monotonic() - self._started, 3)
        return self.document
