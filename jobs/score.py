"""spark-submit entry point: `segmentation score`.

Run with the package on the Python path (a wheel or zip in ``--py-files``)::

    spark-submit --py-files segmentation.zip jobs/score.py --help

Flags are exactly those of ``segmentation score`` (one parser, one code path).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from segmentation.cli import main as cli_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse flags, build the session, run ``score``, stop; return the exit status."""
    return cli_main(["score", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
