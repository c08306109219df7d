#!/usr/bin/env bash
# Installs what the tests need into .venv/: moto (which also brings boto3), pyarrow to
# read Parquet output back independently, and logfmt to read the log lines back. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION=5.2.5
PYARROW_VERSION=26.0.1
LOGFMT_VERSION=0.4
if ! .venv/bin/python -c "import moto, boto3, pyarrow, logfmt, importlib.metadata as m; assert moto.__version__ == '$MOTO_VERSION'; assert pyarrow.__version__ == '$PYARROW_VERSION'; assert m.version('logfmt') == '$LOGFMT_VERSION'" 2>/dev/null; then
    echo "setting up .venv with moto $MOTO_VERSION, pyarrow $PYARROW_VERSION and logfmt $LOGFMT_VERSION" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" "pyarrow==$PYARROW_VERSION" "logfmt==$LOGFMT_VERSION"
fi
