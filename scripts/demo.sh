#!/usr/bin/env bash
# Install the project, then segment (1) the shipped UCI Online Retail II sample and (2) a
# generated Avito-shaped ad-click database, printing each segment profile table.
# Outputs land in out/demo/ (see README: outputs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
seg=.venv/bin/segmentation

echo
echo "== 1/2 retail: RFM segments of 262 real customers (UCI Online Retail II sample)"
"$seg" run --source retail --input data/sample/online_retail_II_sample.csv.gz \
  --output out/demo/retail --k 3-6 --overwrite

echo
echo "== 2/2 avito: RFE segments of a generated Avito Context Ad Clicks database"
"$seg" generate avito --users 2000 --searches 40000 --format sqlite \
  --out out/demo/avito/database.sqlite
"$seg" run --source avito --input out/demo/avito/database.sqlite \
  --output out/demo/avito/segments --k 3-6 --overwrite

echo
echo "Outputs: out/demo/retail/ and out/demo/avito/segments/ (profiles.json, manifest.json, ...)"
