#!/bin/bash
# EMR bootstrap action: the Python packages the segmentation jobs import, on every node.
#
# Runs as the hadoop user on each node before YARN starts. EMR 7.x runs PySpark on the system
# Python 3.9 (/usr/bin/python3, PYSPARK_PYTHON in emr/cluster.json). pyspark itself is NOT
# installed here: EMR provides its own Spark 3.5.6 build and a pip-installed pyspark would shadow
# it. The pins below are pyproject.toml's [project].dependencies without pyspark
# (tests/test_emr.py checks they stay equal).
#
# Optional first argument: the cluster's maximum runtime in minutes (`segmentation emr submit
# --max-minutes N`, passed through ${MAX_MINUTES} in emr/cluster.json). On the primary node a
# detached guard then terminates the cluster N minutes later, whatever runs and even when the
# machine that submitted it is gone: TerminateJobFlows with the instance profile (the
# MaxRuntimeGuard statement of emr/iam/instance-profile-policy.json), and if that call fails, a
# shutdown of the primary node, which a cluster with one primary node does not survive.
set -euo pipefail

PYTHON=/usr/bin/python3
MAX_MINUTES=${1:-}
EMR_INFO=${EMR_INFO:-/mnt/var/lib/info}   # EMR's description of the node and the cluster

# --- max runtime guard (tests/test_emr.py runs this part with stand-in commands) ---
case "$MAX_MINUTES" in
    '') ;;
    *[!0-9]*) echo "bootstrap: the maximum runtime must be whole minutes, not '$MAX_MINUTES'" >&2
              exit 1 ;;
    *) if grep -q '"isMaster": *true' "$EMR_INFO/instance.json" 2>/dev/null; then
           cluster_id=$(sed -n 's/.*"jobFlowId": *"\([^"]*\)".*/\1/p' "$EMR_INFO/job-flow.json" \
               2>/dev/null || true)
           token=$(curl -sS -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' \
               http://169.254.169.254/latest/api/token || true)
           region=$(curl -sS -H "X-aws-ec2-metadata-token: $token" \
               http://169.254.169.254/latest/meta-data/placement/region || true)
           # setsid + nohup: the guard outlives this script (EMR waits for the script only).
           setsid nohup bash -c "sleep $((MAX_MINUTES * 60)); \
               echo \"\$(date -u +%FT%TZ) max runtime of $MAX_MINUTES minutes reached\"; \
               aws emr terminate-clusters --region '$region' --cluster-ids '$cluster_id' \
               || sudo shutdown -h now" >/tmp/segmentation-max-runtime.log 2>&1 < /dev/null &
           echo "bootstrap: cluster ${cluster_id:-?} terminates after $MAX_MINUTES minutes"
       fi ;;
esac
# --- end of the max runtime guard ---

if ! sudo "$PYTHON" -m pip --version >/dev/null 2>&1; then
    sudo dnf install -y python3-pip
fi

sudo "$PYTHON" -m pip install --no-cache-dir \
    'numpy>=1.21,<2' \
    'pyarrow>=12,<21' \
    'pandas>=1.5,<2.3' \
    'adbc-driver-manager>=1.0' \
    'adbc-driver-sqlite>=1.0' \
    'numba>=0.59' \
    'matplotlib>=3.7' \
    'jinja2>=3.1' \
    'ckwrap>=1.2'

# Fail the bootstrap (and the cluster start) now rather than the first task later.
"$PYTHON" -c 'import numpy, pyarrow, pandas, adbc_driver_sqlite.dbapi, numba, matplotlib, jinja2, ckwrap; print("numpy", numpy.__version__, "pyarrow", pyarrow.__version__, "pandas", pandas.__version__)'
