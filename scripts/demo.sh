#!/usr/bin/env bash
# Install the project, then segment (1) the shipped UCI Online Retail II sample (with audience
# lists per RFM segment) and (2) a generated Avito-shaped ad-click database, printing each
# segment profile table; each run writes an HTML report.
# Outputs land in out/demo/ (see README: outputs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
seg=.venv/bin/segmentation

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

echo
echo "Outputs: out/demo/retail/ and out/demo/avito/segments/ (assignments, profiles.json, run.json, ...)"
echo "Reports: out/demo/retail/report/report.html, out/demo/avito/segments/report/report.html"
echo "Audiences (one CSV of customer ids per RFM segment): out/demo/retail/audiences/"
