"""spark-submit entry point: `segmentation audiences`.

Run with the package on the Python path (a wheel or zip in ``--py-files``)::

    spark-submit --py-files segmentation.zip jobs/audiences.py --help

Flags are exactly those of ``segmentation audiences`` (one parser, one code path).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from segmentation.cli import main as cli_main


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse flags, build the session, run ``audiences``, stop; return the exit status."""
    return cli_main(["audiences", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
