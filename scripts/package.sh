#!/usr/bin/env bash
# Builds the Debian package: target/debian/s3spool_<version>-1_<arch>.deb (cargo-deb; the
# metadata is in Cargo.toml). The release binary first, then what it generates about
# itself (man pages, completions) and the unit pointed at /usr/bin, then the package.
set -euo pipefail
cd "$(dirname "$0")/.."
# Pinned: asset handling differs between cargo-deb versions.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$CARGO_DEB_VERSION" ]; then
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi
cargo build --release --locked --quiet
# `--prepare`: only what takes time (the tool and the release build), so CI can run it
# beside the tests; a later run without it makes the package.
if [ "${1:-}" = --prepare ]; then exit 0; fi
bin=target/release/s3spool
out=target/package
rm -rf "$out"
mkdir -p "$out/man" "$out/completions"
"$bin" man --dir "$out/man" >/dev/null
gzip -9n "$out"/man/*.1
"$bin" completions bash >"$out/completions/s3spool.bash"
"$bin" completions zsh >"$out/completions/_s3spool"
"$bin" completions fish >"$out/completions/s3spool.fish"
sed 's|/usr/local/bin/s3spool|/usr/bin/s3spool|g' systemd/s3spool.service >"$out/s3spool.service"
# Stripped: the release profile keeps line tables for the benchmarks' profiles.
cargo deb --no-build --locked --strip --quiet
ls target/debian/s3spool_*.deb
