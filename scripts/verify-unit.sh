#!/usr/bin/env bash
# Checks systemd/s3spool.service with `systemd-analyze verify` (run by .ci/run) and prints
# its `systemd-analyze security` exposure score. The unit names /usr/local/bin/s3spool;
# the check points it at the binary cargo built, which verify requires to exist.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked --quiet
bin="$PWD/target/debug/s3spool"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/s3spool|$bin|g" systemd/s3spool.service >"$dir/s3spool.service"
# --man=no: the Documentation= pages are installed by the package, not here.
systemd-analyze verify --man=no "$dir/s3spool.service"
systemd-analyze security --offline=true "$dir/s3spool.service" | tail -n 1
