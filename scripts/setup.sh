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
# S3 outside EMR: hadoop-aws and the AWS SDK bundle it was built against, taken from PyPI's
# sagemaker-pyspark 1.4.5 source distribution (PyPI is reachable where Maven Central may not be).
# Pinned by hash; extracted into .jars/ (git-ignored), where segmentation/session.py finds them.
jars_dir=${SEGMENTATION_JARS_DIR:-.jars}
jars="hadoop-aws-3.3.1.jar aws-java-sdk-bundle-1.11.901.jar"
if [ ! -f "$jars_dir/hadoop-aws-3.3.1.jar" ] || [ ! -f "$jars_dir/aws-java-sdk-bundle-1.11.901.jar" ]; then
  echo "setup: fetching the S3 jars into $jars_dir (a 182 MB download, once)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "sagemaker-pyspark==1.4.5 --hash=sha256:05ca2d5081d7138ce29a8fb0a9cba077f28c825288ed07aed46a82e63c0bf1fb" \
    > "$tmp/requirements.txt"
  .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp" 2>&1 \
    | grep -v "^WARNING: Location 'file://" >&2 || true
  mkdir -p "$tmp/jars" "$jars_dir"
  tar -xzf "$tmp/sagemaker_pyspark-1.4.5.tar.gz" -C "$tmp/jars" --strip-components=3 \
    $(for jar in $jars; do echo "sagemaker_pyspark-1.4.5/deps/jars/$jar"; done) \
    || { echo "setup: could not fetch sagemaker-pyspark 1.4.5 from PyPI for the S3 jars" >&2; exit 1; }
  (cd "$tmp/jars" && sha256sum -c --quiet) >&2 <<'SUMS' || { echo "setup: S3 jar checksum mismatch" >&2; exit 1; }
6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e  hadoop-aws-3.3.1.jar
b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead  aws-java-sdk-bundle-1.11.901.jar
SUMS
  for jar in $jars; do mv "$tmp/jars/$jar" "$jars_dir/$jar"; done
fi
command -v java >/dev/null || { echo "setup: Java 8/11/17 is required by Spark (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
echo "setup: ready ($(.venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'))" >&2
