#!/usr/bin/env bash
# The test command (README "Run the tests"): installs the local S3 server for the tests,
# then runs every unit and integration test. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh
cargo test --locked "$@"
# Measurements the tests wrote (peak memory of a large conversion), for the log.
for report in target/tmp/*.txt; do
    if [ -f "$report" ]; then echo "report ${report##*/}: $(cat "$report")"; fi
done
