#!/usr/bin/env bash
# Installs what the tests need into .venv/ (moto, which also brings boto3). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_VERSION=5.2.5
if ! .venv/bin/python -c "import moto, boto3; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
    echo "setting up .venv with moto $MOTO_VERSION" >&2
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
