#!/bin/bash
# EMR bootstrap action: the Python packages the segmentation jobs import, on every node.
#
# Runs as the hadoop user on each node before YARN starts. EMR 7.x runs PySpark on the system
# Python 3.9 (/usr/bin/python3, PYSPARK_PYTHON in emr/cluster.json). pyspark itself is NOT
# installed here: EMR provides its own Spark 3.5.6 build and a pip-installed pyspark would shadow
# it. The pins below are pyproject.toml's [project].dependencies without pyspark
# (tests/test_emr.py checks they stay equal).
set -euo pipefail

PYTHON=/usr/bin/python3

if ! sudo "$PYTHON" -m pip --version >/dev/null 2>&1; then
    sudo dnf install -y python3-pip
fi

sudo "$PYTHON" -m pip install --no-cache-dir \
    'numpy>=1.21,<2' \
    'pyarrow>=12,<21' \
    'pandas>=1.5,<2.3' \
    'adbc-driver-manager>=1.0' \
    'adbc-driver-sqlite>=1.0' \
    'matplotlib>=3.7' \
    'jinja2>=3.1'

# Fail the bootstrap (and the cluster start) now rather than the first task later.
"$PYTHON" -c 'import numpy, pyarrow, pandas, adbc_driver_sqlite.dbapi, matplotlib, jinja2; print("numpy", numpy.__version__, "pyarrow", pyarrow.__version__, "pandas", pandas.__version__)'
