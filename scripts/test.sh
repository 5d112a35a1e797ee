#!/usr/bin/env bash
# Install the project with its test tools, then lint, type-check and run the test suite.
# The default run leaves out the tests marked `slow` (fault injection that starts several JVMs);
# `--all` (what CI runs) includes them. Other arguments go to pytest (`scripts/test.sh -k rfm`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev

echo "== ruff" >&2
.venv/bin/ruff check segmentation jobs tests benchmarks scripts
echo "== mypy" >&2
.venv/bin/mypy
echo "== vermin (job code must run on Python 3.9, EMR 7's python3)" >&2
.venv/bin/vermin --no-tips --violations --eval-annotations -t=3.9- segmentation jobs
bash scripts/install_browser.sh  # Debian chromium for the report's browser test
select=(-m "not slow")
if [ "${1:-}" = "--all" ]; then
  select=()
  shift
fi
echo "== pytest ${select[*]:-(all tests)}" >&2
.venv/bin/python -m pytest "${select[@]}" "$@"
