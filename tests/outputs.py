"""Test helpers to find a command's published output (see ``segmentation.layout``).

A run-making command writes ``OUT/runs/<run_id>/`` and publishes it through ``OUT/LATEST``; the
tests read a run's entries through :func:`published`, as a downstream job would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def pointer(out: Path) -> Dict[str, Any]:
    """The ``LATEST`` pointer of the output folder ``out``."""
    document: Dict[str, Any] = json.loads((out / "LATEST").read_text())
    return document


def published(out: Path) -> Path:
    """The run folder ``OUT/LATEST`` names (``OUT/runs/<run_id>``); it holds ``_SUCCESS``."""
    run = out / pointer(out)["path"]
    assert (run / "_SUCCESS").is_file(), f"{run} is published without _SUCCESS"
    return run
