"""Benchmark: `segmentation run` end to end, seconds per stage from the run manifests.

Runs the real UCI Online Retail II 2009-2010 file (../shared/data) and a generated Avito dataset
(Parquet tables, so the timing is Spark's, not SQLite's) and prints one line per stage.

    .venv/bin/python benchmarks/pipeline.py --searches 2000000 --users 200000 --workdir /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from segmentation.cli import main as segmentation
from segmentation.generate import generate_avito

REPO = Path(__file__).resolve().parents[1]
RETAIL = REPO.parent / "shared" / "data" / "online_retail_II_2009-2010.csv.gz"


def report(name: str, manifest: Dict[str, Any], wall: float) -> None:
    rows = manifest.get("rows", {})
    print(
        f"{name}: {rows.get('read', 0):,} {rows.get('unit', 'rows')} read, "
        f"{manifest['customers']['kept']:,} customers, k={manifest['clustering']['chosen_k']}, "
        f"wall {wall:.1f} s"
    )
    for stage, seconds in manifest["timings_seconds"].items():
        print(f"  {stage:<20} {seconds:8.1f} s")


def run(name: str, argv: List[str], output: Path) -> None:
    started = time.monotonic()
    status = segmentation([*argv, "--output", str(output), "--overwrite"])
    if status != 0:
        sys.exit(status)
    report(name, json.loads((output / "manifest.json").read_text()), time.monotonic() - started)


def main() -> None:
    """Parse flags and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=2_000_000, help="Avito searches")
    parser.add_argument("--users", type=int, default=200_000, help="Avito users")
    parser.add_argument("--k", default="2-8", help="k range of the sweeps")
    parser.add_argument("--sample-fraction", default=None, help="sweep sample fraction")
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/segmentation-bench"))
    args = parser.parse_args()
    common = ["--k", args.k, "--master", args.master]
    if args.sample_fraction:
        common += ["--sample-fraction", args.sample_fraction]

    run("retail (UCI Online Retail II 2009-2010)",
        ["run", "--source", "retail", "--input", str(RETAIL), *common],
        args.workdir / "retail")

    tables = args.workdir / "avito-tables"
    summary = generate_avito(str(tables), users=args.users, searches=args.searches,
                             fmt="parquet", seed=1)
    print(f"generated {summary.searches:,} searches, {summary.stream_rows:,} stream rows, "
          f"{summary.users:,} users in {summary.seconds:.1f} s")
    run(f"avito ({summary.stream_rows:,} stream rows, Parquet)",
        ["run", "--source", "avito", "--input", str(tables), *common],
        args.workdir / "avito")


if __name__ == "__main__":
    main()
