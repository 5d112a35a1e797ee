#!/usr/bin/env bash
# Run the pipeline under Python 3.9 (EMR 7's python3): install into .venv39 and segment the
# shipped retail sample and a small generated Avito database. Needs a python3.9 on the machine
# (e.g. pyenv's); PYTHON39=/path/to/python3.9 overrides the lookup.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON39:-}
if [ -z "$py" ]; then
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.9*/bin/python python3.9; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 9)' 2>/dev/null; then
      py=$candidate; break
    fi
  done
fi
[ -n "$py" ] || { echo "check_py39: no Python 3.9 found (set PYTHON39)" >&2; exit 1; }
[ -x .venv39/bin/python ] || "$py" -m venv .venv39
.venv39/bin/python -m pip install --disable-pip-version-check -q . 2>&1 \
  | grep -v "^WARNING: Location 'file://" >&2 || true
seg=.venv39/bin/segmentation
echo "check_py39: $(.venv39/bin/python --version)" >&2
"$seg" run --source retail --input data/sample/online_retail_II_sample.csv.gz \
  --output out/py39/retail --k 2-4 --overwrite
"$seg" generate avito --users 300 --searches 3000 --out out/py39/avito.sqlite
"$seg" run --source avito --input out/py39/avito.sqlite --output out/py39/avito --k 2-3 --overwrite
echo "check_py39: ok" >&2
