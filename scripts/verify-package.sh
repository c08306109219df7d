#!/usr/bin/env bash
# Installs the package scripts/package.sh built, checks what it put where, then removes it
# (run by .ci/run, as root: dpkg changes the machine). Fails on the first thing amiss.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t target/debian/s3spool_*.deb | head -n 1)
if [ -n "$(dpkg-query -W -f='${Status}' s3spool 2>/dev/null | grep -v 'not-installed')" ]; then
    echo "s3spool is installed on this machine (or its config is left): not touching it" >&2
    exit 1
fi
fail() { echo "verify-package: $*" >&2; exit 1; }
trap 'dpkg --purge s3spool >/dev/null 2>&1 || true' EXIT

echo "installing $deb"
dpkg -i "$deb"
for path in /usr/bin/s3spool /usr/lib/systemd/system/s3spool.service \
    /usr/lib/sysusers.d/s3spool.conf /usr/lib/tmpfiles.d/s3spool.conf \
    /usr/share/man/man1/s3spool.1.gz /usr/share/man/man1/s3spool-run.1.gz \
    /usr/share/man/man1/s3spool-status.1.gz \
    /usr/share/bash-completion/completions/s3spool /usr/share/zsh/vendor-completions/_s3spool \
    /usr/share/fish/vendor_completions.d/s3spool.fish \
    /usr/share/doc/s3spool/config.example.toml /usr/share/doc/s3spool/README.md \
    /etc/s3spool/config.toml; do
    [ -e "$path" ] || fail "missing $path"
done
dpkg-query -W -f='${Conffiles}\n' s3spool | grep -q /etc/s3spool/config.toml \
    || fail "/etc/s3spool/config.toml is not a conffile"
/usr/bin/s3spool --version
if readelf -S /usr/bin/s3spool | grep -q '\.debug_info'; then fail "/usr/bin/s3spool is not stripped"; fi
getent passwd s3spool >/dev/null || fail "no user s3spool"
[ "$(stat -c '%U %a' /etc/s3spool/config.toml)" = "s3spool 600" ] \
    || fail "config is $(stat -c '%U %a' /etc/s3spool/config.toml), not s3spool 600"
[ "$(stat -c '%U %G %a' /var/spool/s3spool)" = "s3spool s3spool 750" ] \
    || fail "/var/spool/s3spool is $(stat -c '%U %G %a' /var/spool/s3spool)"
# Installed, not enabled, not started.
[ ! -e /etc/systemd/system/multi-user.target.wants/s3spool.service ] || fail "the unit is enabled"
# With man(1) installed, verify also finds the Documentation= pages the package put there.
if command -v man >/dev/null 2>&1; then
    systemd-analyze verify /usr/lib/systemd/system/s3spool.service
else
    systemd-analyze verify --man=no /usr/lib/systemd/system/s3spool.service
fi
# The unit's ExecStartPre (as the service user) refuses the config as installed, naming
# what to fill in.
set +e
refusal=$(runuser -u s3spool -- /usr/bin/s3spool --config /etc/s3spool/config.toml check --offline 2>&1)
code=$?
set -e
echo "$refusal"
[ "$code" = 78 ] || fail "check --offline on the installed config exited $code, not 78"
for key in destinations.main.bucket destinations.main.region; do
    grep -q "$key" <<<"$refusal" || fail "the refusal does not name $key"
done
MANPAGER=cat man s3spool-run 2>/dev/null | grep -q "EXIT STATUS" || echo "(man not installed: page not rendered)"

echo "removing"
dpkg -r s3spool
[ ! -e /usr/bin/s3spool ] || fail "/usr/bin/s3spool left after dpkg -r"
[ ! -e /usr/lib/systemd/system/s3spool.service ] || fail "unit left after dpkg -r"
[ -e /etc/s3spool/config.toml ] || fail "dpkg -r removed the conffile (only purge should)"
dpkg --purge s3spool
[ ! -e /etc/s3spool/config.toml ] || fail "conffile left after purge"
echo "package verified: installed, checked and removed"
