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
# 3.3.1, not Spark 3.5.6's Hadoop 3.3.4: no registry these machines reach (PyPI, npm, Debian)
# carries hadoop-aws 3.3.4 / aws-java-sdk-bundle 1.12.262 (checked 2026-11-23, see README "S3");
# the pair is tested for every S3A operation the jobs use (tests/test_s3.py). The docker image
# and `--packages org.apache.hadoop:hadoop-aws:3.3.4` (with internet) use the matching 3.3.4.
jars_dir=${SEGMENTATION_JARS_DIR:-.jars}
if [ ! -f "$jars_dir/hadoop-aws-3.3.1.jar" ] || [ ! -f "$jars_dir/aws-java-sdk-bundle-1.11.901.jar" ]; then
  echo "setup: fetching the S3 jars into $jars_dir (a 182 MB download, once)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "sagemaker-pyspark==1.4.5 --hash=sha256:05ca2d5081d7138ce29a8fb0a9cba077f28c825288ed07aed46a82e63c0bf1fb" \
    > "$tmp/requirements.txt"
  .venv/bin/python -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    --require-hashes -r "$tmp/requirements.txt" -d "$tmp" 2>&1 \
    | grep -v "^WARNING: Location 'file://" >&2 || true
  # Extract the two jars, check them against their pinned hashes, then move them in place.
  .venv/bin/python - "$tmp/sagemaker_pyspark-1.4.5.tar.gz" "$jars_dir" <<'PY' \
    || { echo "setup: could not get the S3 jars from sagemaker-pyspark 1.4.5 (PyPI)" >&2; exit 1; }
import hashlib, os, sys, tarfile
sdist, target = sys.argv[1], sys.argv[2]
pinned = {
    "hadoop-aws-3.3.1.jar": "6be50ad8a8b445d2802381b085b2a3ede5c29d353450a6a21f16b2fefa962b6e",
    "aws-java-sdk-bundle-1.11.901.jar":
        "b87175b32a16544cc1b37cf40390eb375833e62bed67f8ce6cde4b7ad6429ead",
}
os.makedirs(target, exist_ok=True)
with tarfile.open(sdist) as archive:
    for name, sha256 in pinned.items():
        data = archive.extractfile(f"sagemaker_pyspark-1.4.5/deps/jars/{name}").read()
        if hashlib.sha256(data).hexdigest() != sha256:
            sys.exit(f"setup: {name}: checksum mismatch")
        partial = os.path.join(target, name + ".part")
        with open(partial, "wb") as out:
            out.write(data)
        os.replace(partial, os.path.join(target, name))
PY
  echo "setup: S3 jars in $jars_dir" >&2
fi
command -v java >/dev/null || { echo "setup: Java 8/11/17 is required by Spark (apt-get install openjdk-17-jre-headless)" >&2; exit 1; }
# The driver JVM's class-data archive (Java AppCDS, ~170 MB in ~/.cache/segmentation): the
# classes one run of the jobs loads, parsed and verified once, mapped by every later local run
# (a few seconds less start-up per command; README "Performance"). Built once, in about a minute.
archive=$(.venv/bin/python -c 'from segmentation.session import default_class_archive as a; print(a())')
if [ "${SEGMENTATION_CLASS_ARCHIVE:-}" != "off" ] && [ ! -f "$archive" ]; then
  echo "setup: building the JVM class-data archive $archive (once, about a minute)" >&2
  .venv/bin/python scripts/build_class_archive.py "$archive" 2>"${TMPDIR:-/tmp}/class-archive.log" \
    || echo "setup: WARNING: no class-data archive (runs start slower); see ${TMPDIR:-/tmp}/class-archive.log" >&2
fi
# The SQLite page decoder's loops (numba), compiled once into ~/.cache/segmentation/numba
# (segmentation/io/sqlite/pages.py), so that no task of a first run compiles them (~6 s).
.venv/bin/python -c 'from segmentation.io.sqlite.pages import load_kernels as k; import sys; sys.exit(0 if not isinstance(k(), str) else 1)' \
  || echo "setup: WARNING: the SQLite page decoder is unavailable; SQLite is read through SQL only" >&2
echo "setup: ready ($(.venv/bin/python -c 'import pyspark; print("pyspark", pyspark.__version__)'))" >&2
