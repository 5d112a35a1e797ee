#!/usr/bin/env bash
# Install the project with its test tools, then lint, type-check and run the test suite.
# Extra arguments go to pytest (e.g. `scripts/test.sh -k rfm`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev

echo "== ruff" >&2
.venv/bin/ruff check segmentation jobs tests benchmarks
echo "== mypy" >&2
.venv/bin/mypy
echo "== vermin (job code must run on Python 3.9, EMR 7's python3)" >&2
.venv/bin/vermin --no-tips --violations --eval-annotations -t=3.9- segmentation jobs
bash scripts/install_browser.sh  # Debian chromium for the report's browser test
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
