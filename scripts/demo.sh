#!/usr/bin/env bash
# Install the project, then segment (1) the shipped UCI Online Retail II sample (with audience
# lists per RFM segment) and (2) a generated Avito-shaped ad-click database, printing each
# segment profile table; each run writes an HTML report.
# Outputs land in out/demo/ (see README: outputs): each --output holds runs/<run_id>/ and a LATEST
# pointer to the published run; the paths printed at the end are those of the published runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
seg=.venv/bin/segmentation

# The published run folder of an output: OUTPUT/<path of OUTPUT/LATEST>.
published() {
  .venv/bin/python -c 'import json, sys; print(sys.argv[1] + "/" + json.load(open(sys.argv[1] + "/LATEST"))["path"])' "$1"
}
# The demo owns out/demo/: outputs an earlier version wrote there (entries at the top, no
# LATEST) would be refused, so they are removed first.
for old in out/demo/retail out/demo/avito/segments; do
  if [ -e "$old/_SUCCESS" ] && [ ! -e "$old/LATEST" ]; then rm -rf "$old"; fi
done

echo
echo "== 1/2 retail: RFM segments of 262 real customers (UCI Online Retail II sample)"
"$seg" run --source retail --input data/sample/online_retail_II_sample.csv.gz \
  --output out/demo/retail --k 3-6 --overwrite
"$seg" audiences --run out/demo/retail --by rfm_segment --overwrite

echo
echo "== 2/2 avito: RFE segments of a generated Avito Context Ad Clicks database"
"$seg" generate avito --users 2000 --searches 40000 --format sqlite \
  --out out/demo/avito/database.sqlite
"$seg" run --source avito --input out/demo/avito/database.sqlite \
  --output out/demo/avito/segments --k 3-6 --overwrite

retail=$(published out/demo/retail)
avito=$(published out/demo/avito/segments)
echo
echo "Published runs: $retail/ and $avito/ (assignments, profiles.json, run.json, ...)"
echo "Reports: $retail/report/report.html, $avito/report/report.html"
echo "Audiences (one CSV of customer ids per RFM segment): $retail/audiences/"
