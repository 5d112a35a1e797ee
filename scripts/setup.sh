#!/usr/bin/env bash
# Create .venv and install the project into it. `scripts/setup.sh --dev` adds the test tools.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev,emr]"
echo "setup: installing segmentation${extras} into .venv (pyspark 3.5.6 is ~320 MB the first time)" >&2
# pip's index warnings about absent local mirrors are noise on these machines.
.venv/bin/python -m pip install --disable-pip-version-check -q -e ".${extras}" 2>&1 \
  | grep -v "^WARNING: Location 'file://" >&2 || true
.venv/bin/python -c "import pyspark, pyarrow, adbc_driver_sqlite" \
  || { echo "setup: installation failed" >&2; exit 1; }
command -v java >/dev/null || { echo "setup: Java 8/11/17 is required by Spark (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
echo "setup: ready ($(.venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'))" >&2
