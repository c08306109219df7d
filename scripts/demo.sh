#!/usr/bin/env bash
# The one-command demo (README "Try it"): installs a local S3-compatible server (moto, in
# .venv/), starts it on 127.0.0.1, creates a bucket, builds s3spool, writes demo/config.toml
# and runs the daemon in the foreground on the spool demo/spool. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${DEMO_PORT:-9000}"
ENDPOINT="http://127.0.0.1:$PORT"

scripts/test-env.sh
cargo build --release --locked

mkdir -p demo/spool demo/state
if ! .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null; then
    .venv/bin/moto_server -H 127.0.0.1 -p "$PORT" > demo/moto.log 2>&1 &
    MOTO_PID=$!
    trap 'kill $MOTO_PID 2>/dev/null' EXIT
    for _ in $(seq 100); do
        .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 1)" 2>/dev/null && break
        sleep 0.1
    done
fi
.venv/bin/python tests/support/s3read.py "$ENDPOINT" mb demo > /dev/null

cat > demo/config.toml <<TOML
# Written by scripts/demo.sh: a local spool delivering to a local moto server.
state_dir = "state"
rescan_interval = "10s"

[destinations.local]
bucket = "s3://demo/inbound"
endpoint = "$ENDPOINT"

[destinations.local.auth]
mode = "static"
access_key_id = "AKIADEMODEMODEMO"
secret_access_key = "demo-secret"

[spools.drop]
path = "spool"
destination = "local"
settle = "1s"
key = "{spool}/{yyyy}/{mm}/{dd}/{stem}-{timestamp}-{id}.{ext}"
after_upload = "delete"
TOML
chmod 600 demo/config.toml   # it holds a secret: s3spool refuses it readable by others

cat <<MSG
s3spool demo: spool $(pwd)/demo/spool → s3://demo/inbound at $ENDPOINT
  drop a file:    echo 'id,name' > demo/spool/hello.csv
  see objects:    .venv/bin/python tests/support/s3read.py $ENDPOINT ls demo
  queue status:   target/release/s3spool --config demo/config.toml status
Ctrl-C stops the daemon and the server.
MSG
target/release/s3spool --config demo/config.toml check
target/release/s3spool --config demo/config.toml run
