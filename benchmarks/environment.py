"""The machine, the library versions and the code state a benchmark ran on."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[1]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"') + f" (kernel {platform.release()})"
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def machine() -> Dict[str, object]:
    """Cores, RAM, CPU model and OS of this machine."""
    import psutil

    return {
        "cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": _cpu_model(),
        "os": _os_name(),
    }


def _java_version() -> str:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = (done.stderr or done.stdout).splitlines()
    return lines[0].strip() if lines else "unknown"


def versions() -> Dict[str, str]:
    """Versions of Python, Java and the libraries the systems use."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "java": _java_version()}
    for package in ("pyspark", "duckdb", "scikit-learn", "pandas", "numpy", "pyarrow",
                    "segmentation"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def load_average() -> Optional[float]:
    """The 1-minute load average (how busy the shared machine was)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def code_state() -> Dict[str, object]:
    """The commit, and a digest of uncommitted changes under ``segmentation/`` (if any)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                                  timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    diff = git("diff", "HEAD", "--", "segmentation", "jobs")
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip() or "unknown",
        "segmentation_uncommitted": (
            hashlib.sha1(diff.encode()).hexdigest()[:10] if diff.strip() else None
        ),
    }
