#!/usr/bin/env python3
"""s3spool side by side with rclone and awscli, on one local S3 server, in one run.

Run it through `bench/run` (which sets up its tools). Every figure is measured here, now:
files/s or MiB/s, each client's CPU-seconds (from /proc or wait4) and peak RSS, and the
server's CPU, so each figure reads against what the machine has. The results go to
bench/RESULTS.md (or --out). Nothing here asserts a time: this is a measurement.

Scenarios (counts for the full run; --quick shrinks them so CI keeps the script working):
  small     10,000 x 4 KiB files dropped into a spool, until all are in S3 (loopback)
  wan       the same through a relay adding a round trip (--rtt-ms, default 20)
  large     one 2 GiB file
  intake    100,000 files registered by the start-up scan with the spool paused
  latency   drop-to-readable time of single files (settle = 0s)
  idle      CPU of a daemon watching 10 empty spools
  waiting   1,000,000 files waiting in a paused spool: peak RSS, status and list
  history   10,000,000 delivered rows (made with SQL): intake, sending and status
            against the same on an empty queue, three rounds each, taking turns
  soak      30 minutes of producers, faults, SIGHUPs and an operator; writes counted at
            the fault relay (and versions, on moto); history = "1h", so a run longer
            than 70 minutes shows the queue file once history is reached
Every tool gets fresh random bytes: garage deduplicates identical blocks.
"""
import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig

REPO = Path(__file__).resolve().parent.parent
CLK = os.sysconf("SC_CLK_TCK")
KEY_ID = "GK0123456789abcdef01234567"
SECRET = "b" * 64
BUCKET = "bench"


# --- measuring processes -------------------------------------------------------------

def cpu_seconds(pid):
    """User + system CPU of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def peak_rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"bench: {what} did not listen on 127.0.0.1:{port}")


def run_measured(cmd, env=None):
    """Runs a peer to its end; returns (seconds, cpu seconds, peak RSS MiB)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - started
    err = proc.stderr.read().decode(errors="replace")
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(map(str, cmd))} failed ({proc.returncode}):\n{err[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


# --- the server ----------------------------------------------------------------------

class Server:
    """garage (real SigV4, multipart, block store) or moto (for --quick without garage)."""

    def __init__(self, kind, work, garage_bin, venv):
        self.kind = kind
        self.port = free_port()
        self.dir = work / "server"
        self.dir.mkdir()
        log = open(self.dir / "server.log", "w")
        if kind == "garage":
            rpc = free_port()
            admin = free_port()
            conf = self.dir / "garage.toml"
            conf.write_text(f"""
metadata_dir = "{self.dir}/meta"
data_dir = "{self.dir}/data"
db_engine = "lmdb"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{os.urandom(32).hex()}"
[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:{self.port}"
root_domain = ".s3.garage.localhost"
[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{os.urandom(16).hex()}"
""")
            conf.chmod(0o600)
            env = dict(os.environ, GARAGE_DEFAULT_ACCESS_KEY=KEY_ID,
                       GARAGE_DEFAULT_SECRET_KEY=SECRET, GARAGE_DEFAULT_BUCKET=BUCKET)
            self.proc = subprocess.Popen(
                [garage_bin, "-c", conf, "server", "--single-node", "--default-bucket"],
                env=env, stdout=log, stderr=log)
        else:
            env = dict(os.environ, S3_UPLOAD_PART_MIN_SIZE=str(5 << 20))
            self.proc = subprocess.Popen(
                [REPO / ".venv/bin/moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env, stdout=log, stderr=log)
        wait_port(self.port, kind)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET,
            config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 10}))
        if kind == "moto":
            self.s3.create_bucket(Bucket=BUCKET)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.s3.list_objects_v2(Bucket=BUCKET, MaxKeys=1)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def count(self, prefix):
        n = 0
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            n += page.get("KeyCount", 0)
        return n

    def version(self):
        if self.kind == "moto":
            return "moto 5.2.5"
        out = subprocess.run([GARAGE_BIN[0], "--version"], capture_output=True, text=True)
        return out.stdout.strip().splitlines()[0] if out.stdout else "garage"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


GARAGE_BIN = [None]


class Relay:
    """bench/relay.py in front of the server: `rtt_ms` more per round trip."""

    def __init__(self, server, rtt_ms, venv_python):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [venv_python, REPO / "bench/relay.py", str(self.port), f"127.0.0.1:{server.port}", str(rtt_ms)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.proc.stdout.readline()
        wait_port(self.port, "relay")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


# --- data ------------------------------------------------------------------------------

def make_files(folder, count, size, depth=0):
    """`count` files of `size` fresh random bytes (nested `depth` folders deep)."""
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(size * min(count, 1024) + 64)
    for i in range(count):
        sub = folder / f"d{i % 50}" if depth else folder
        if depth:
            sub.mkdir(exist_ok=True)
        start = random.randrange(0, len(block) - size)
        # Each file also carries its own random head: no two files share a block.
        (sub / f"f{i:06d}.bin").write_bytes(os.urandom(16) + block[start:start + size - 16])


def make_big(path, size):
    chunk = 64 << 20
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


# --- s3spool ---------------------------------------------------------------------------

class Spool:
    """An s3spool daemon on its own state dir and spools, delivering to `endpoint`."""

    def __init__(self, work, name, endpoint, prefix, spools=1, settle="0s", extra="", dest_extra=""):
        self.dir = work / f"s3spool-{name}"
        self.dir.mkdir()
        self.spools = [self.dir / f"spool{i}" for i in range(spools)]
        for s in self.spools:
            s.mkdir()
        spool_tables = "".join(f"""
[spools.s{i}]
path = "{s}"
destination = "bench"
settle = "{settle}"
key = "{{spool}}/{{path}}"
""" for i, s in enumerate(self.spools))
        self.config = self.dir / "config.toml"
        self.config.write_text(f"""
state_dir = "{self.dir}/state"
rescan_interval = "60s"
[destinations.bench]
bucket = "s3://{BUCKET}/{prefix}"
endpoint = "{endpoint}"
{dest_extra}
[destinations.bench.auth]
mode = "static"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
{extra}
{spool_tables}""")
        self.config.chmod(0o600)
        self.proc = None

    def cli(self, *args):
        subprocess.run([S3SPOOL, "--config", self.config, *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        self.log = open(self.dir / "daemon.log", "w")
        cmd = [S3SPOOL, "--config", self.config, "run"]
        # S3SPOOL_BENCH_PERF=DIR: every daemon runs under `perf record` (for profiles;
        # its CPU figures are then perf's, not s3spool's).
        perf = os.environ.get("S3SPOOL_BENCH_PERF")
        if perf:
            # S3SPOOL_BENCH_PERF_DELAY=MS: leave the start out of the profile.
            delay = ["-D", os.environ["S3SPOOL_BENCH_PERF_DELAY"]] if os.environ.get("S3SPOOL_BENCH_PERF_DELAY") else []
            cmd = ["perf", "record", "-F", "499", *delay, "--call-graph", "dwarf,16384", "-o", f"{perf}/{self.dir.name}.data", "--"] + cmd
        # The default log level, as deployed: per-file lines are part of the cost.
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        deadline = time.monotonic() + 60
        db = self.dir / "state/queue.db"
        while not db.exists() or "s3spool running" not in (self.dir / "daemon.log").read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"bench: s3spool did not start:\n{(self.dir / 'daemon.log').read_text()[-3000:]}")
            time.sleep(0.02)

    def counts(self):
        db = sqlite3.connect(f"file:{self.dir}/state/queue.db?mode=ro", uri=True, timeout=10)
        try:
            # The tallies (schema 14): a count of ten million rows every 20 ms would take
            # the cores from the daemon measured.
            return dict(db.execute("SELECT state, SUM(files) FROM tallies GROUP BY state").fetchall())
        finally:
            db.close()

    def wait(self, state, n, timeout):
        deadline = time.monotonic() + timeout
        while True:
            c = self.counts()
            if c.get(state, 0) >= n:
                return time.monotonic()
            if c.get("failed"):
                sys.exit(f"bench: s3spool failed files: {c}\n{(self.dir / 'daemon.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                sys.exit(f"bench: s3spool did not reach {n} {state} in {timeout}s: {c}")
            time.sleep(0.02)

    def wait_registered(self, n, timeout):
        """When the n-th row of a fresh queue is in: a look-up of the newest id, not a count
        (counting 100,000 rows every 20 ms would take a core from the daemon measured)."""
        deadline = time.monotonic() + timeout
        while True:
            db = sqlite3.connect(f"file:{self.dir}/state/queue.db?mode=ro", uri=True, timeout=10)
            try:
                newest = db.execute("SELECT IFNULL(MAX(id), 0) FROM files").fetchone()[0]
            finally:
                db.close()
            if newest >= n:
                return time.monotonic()
            if time.monotonic() > deadline:
                sys.exit(f"bench: s3spool registered {newest} of {n} files in {timeout}s")
            time.sleep(0.02)

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def rss(self):
        return peak_rss_mib(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        self.log.close()


S3SPOOL = None


def drop_all(staging, spool):
    """Renames every file of `staging` into `spool` (what producers do); returns the count."""
    n = 0
    for entry in os.scandir(staging):
        if entry.is_dir():
            (spool / entry.name).mkdir(exist_ok=True)
            for f in os.scandir(entry.path):
                os.rename(f.path, spool / entry.name / f.name)
                n += 1
        else:
            os.rename(entry.path, spool / entry.name)
            n += 1
    return n


# --- peers -----------------------------------------------------------------------------

def rclone_conf(work, endpoint, name):
    conf = work / f"rclone-{name}.conf"
    conf.write_text(f"""[bench]
type = s3
provider = Other
env_auth = false
access_key_id = {KEY_ID}
secret_access_key = {SECRET}
region = us-east-1
endpoint = {endpoint}
force_path_style = true
""")
    return conf


def rclone(conf, src, prefix, transfers, extra=()):
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    cmd = ["rclone", "--config", str(conf), "copy", "--s3-no-check-bucket",
           "--transfers", str(transfers), *extra, str(src), f"bench:{BUCKET}/{prefix}/"]
    return run_measured(cmd, env)


def awscli(aws, endpoint, src, prefix, recursive=True):
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_DEFAULT_REGION="us-east-1")
    env.pop("AWS_CA_BUNDLE", None)
    cmd = [aws, "--endpoint-url", endpoint, "s3", "cp", "--only-show-errors"]
    cmd += ["--recursive", str(src), f"s3://{BUCKET}/{prefix}/"] if recursive else [str(src), f"s3://{BUCKET}/{prefix}/{Path(src).name}"]
    return run_measured(cmd, env)


# --- scenarios -------------------------------------------------------------------------

class Results:
    def __init__(self):
        self.rows = []  # (scenario, tool, figure, unit, cpu, rss, note)
        self.notes = []

    def add(self, scenario, tool, figure, unit, cpu=None, rss=None, server_cpu=None, note=""):
        self.rows.append(dict(scenario=scenario, tool=tool, figure=figure, unit=unit,
                              cpu=cpu, rss=rss, server_cpu=server_cpu, note=note))
        cpu_s = f" cpu {cpu:.2f}s" if cpu is not None else ""
        rss_s = f" rss {rss:.0f}MiB" if rss is not None else ""
        print(f"  {scenario:8} {tool:28} {figure:10.1f} {unit}{cpu_s}{rss_s} {note}", flush=True)


def small_files(res, args, work, server, endpoint, scenario, count, transfers_list, aws, relay=None):
    """`count` 4 KiB files through s3spool (defaults), rclone and (loopback) awscli."""
    size = 4096
    run_id = f"{scenario}-{int(time.time())}"
    # s3spool: files renamed into a running daemon's spool, until all are done.
    staging = work / f"{run_id}-s3spool"
    make_files(staging, count, size, depth=1)
    sp = Spool(work, run_id, endpoint, f"{run_id}/s3spool")
    sp.start()
    cpu0, scpu0 = sp.cpu(), server.cpu()
    rcpu0 = relay.cpu() if relay else 0
    t0 = time.monotonic()
    drop_all(staging, sp.spools[0])
    t1 = sp.wait("done", count, timeout=3600)
    cpu, scpu = sp.cpu() - cpu0, server.cpu() - scpu0
    rss = sp.rss()
    sp.stop()
    assert server.count(f"{run_id}/s3spool/") == count, "s3spool: objects missing"
    res.add(scenario, "s3spool (defaults)", count / (t1 - t0), "files/s", cpu / count * 1000, rss,
            scpu / count * 1000, relay_note(relay, rcpu0, count))
    if scenario == "small":
        # The audit of what was just delivered (listing pages; a HEAD for any they miss).
        scpu0 = server.cpu()
        elapsed, vcpu, vrss = run_measured(
            [S3SPOOL, "--config", sp.config, "verify", "--all", "--json"])
        res.add("verify", "s3spool verify --all", count / elapsed, "rows/s", vcpu / count * 1000,
                vrss, (server.cpu() - scpu0) / count * 1000, f"{count:,} delivered rows, by listing pages")
    # rclone at each --transfers.
    conf = rclone_conf(work, endpoint, run_id)
    for transfers in transfers_list:
        src = work / f"{run_id}-rclone{transfers}"
        make_files(src, count, size, depth=1)
        scpu0 = server.cpu()
        rcpu0 = relay.cpu() if relay else 0
        elapsed, cpu, rss = rclone(conf, src, f"{run_id}/rclone{transfers}", transfers)
        scpu = server.cpu() - scpu0
        assert server.count(f"{run_id}/rclone{transfers}/") == count, "rclone: objects missing"
        res.add(scenario, f"rclone --transfers {transfers}", count / elapsed, "files/s",
                cpu / count * 1000, rss, scpu / count * 1000, relay_note(relay, rcpu0, count))
        shutil.rmtree(src)
    if aws:
        src = work / f"{run_id}-aws"
        make_files(src, count, size, depth=1)
        scpu0 = server.cpu()
        elapsed, cpu, rss = awscli(aws, endpoint, src, f"{run_id}/aws")
        scpu = server.cpu() - scpu0
        res.add(scenario, "awscli s3 cp --recursive", count / elapsed, "files/s",
                cpu / count * 1000, rss, scpu / count * 1000)
        shutil.rmtree(src)
    shutil.rmtree(staging, ignore_errors=True)


def relay_note(relay, cpu_before, count):
    """The relay shares the cores too: its CPU says when it, not the link, set the pace."""
    if not relay:
        return ""
    return f"relay CPU {(relay.cpu() - cpu_before) / count * 1000:.2f} s per 1,000 files"


def large_file(res, args, work, server, size, aws):
    mib = size / (1 << 20)
    run_id = f"large-{int(time.time())}"
    # Defaults (the SHA-256 goes into the object's metadata, so the file is read twice),
    # then each byte read once (large_file_sha256 = "manifest").
    for label, extra in (("s3spool (defaults)", ""),
                         ("s3spool (large_file_sha256 = manifest)",
                          "[destinations.bench.upload]\nlarge_file_sha256 = \"manifest\"")):
        name = f"{run_id}-{'once' if extra else 'default'}"
        staging = work / f"{name}-staging"
        staging.mkdir()
        make_big(staging / "big.bin", size)
        sp = Spool(work, name, server.endpoint, f"{name}/s3spool", extra=extra)
        sp.start()
        cpu0, scpu0 = sp.cpu(), server.cpu()
        t0 = time.monotonic()
        drop_all(staging, sp.spools[0])
        t1 = sp.wait("done", 1, timeout=3600)
        cpu, scpu = sp.cpu() - cpu0, server.cpu() - scpu0
        rss = sp.rss()
        sp.stop()
        res.add("large", label, mib / (t1 - t0), "MiB/s", cpu, rss, scpu)
        shutil.rmtree(staging, ignore_errors=True)
    conf = rclone_conf(work, server.endpoint, run_id)
    for transfers in (4,):
        src = work / f"{run_id}-rclone"
        src.mkdir()
        make_big(src / "big.bin", size)
        scpu0 = server.cpu()
        elapsed, cpu, rss = rclone(conf, src, f"{run_id}/rclone", transfers)
        res.add("large", f"rclone --transfers {transfers}", mib / elapsed, "MiB/s", cpu, rss,
                server.cpu() - scpu0)
        shutil.rmtree(src)
    if aws:
        src = work / f"{run_id}-aws"
        src.mkdir()
        make_big(src / "big.bin", size)
        scpu0 = server.cpu()
        elapsed, cpu, rss = awscli(aws, server.endpoint, src / "big.bin", f"{run_id}/aws", recursive=False)
        res.add("large", "awscli s3 cp", mib / elapsed, "MiB/s", cpu, rss, server.cpu() - scpu0)
        shutil.rmtree(src)


def bwlimit(res, args, work, server, size, limit_mib):
    """One file under `bwlimit`: the rate achieved against the limit (issue 15: within
    10 %), beside rclone's --bwlimit at the same limit."""
    mib = size / (1 << 20)
    run_id = f"bwlimit-{int(time.time())}"
    staging = work / f"{run_id}-staging"
    staging.mkdir()
    make_big(staging / "big.bin", size)
    # Read once (no SHA-256 pass before sending): the time measured is the time sending.
    sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool",
               dest_extra=f'bwlimit = "{limit_mib}MiB/s"',
               extra='[destinations.bench.upload]\nlarge_file_sha256 = "manifest"')
    sp.start()
    cpu0, scpu0 = sp.cpu(), server.cpu()
    t0 = time.monotonic()
    drop_all(staging, sp.spools[0])
    t1 = sp.wait("done", 1, timeout=3600)
    cpu, rss = sp.cpu() - cpu0, sp.rss()
    sp.stop()
    rate = mib / (t1 - t0)
    res.add("bwlimit", f"s3spool (bwlimit {limit_mib}MiB/s, read once)", rate, "MiB/s", cpu, rss,
            server.cpu() - scpu0, note=f"{rate / limit_mib:.3f} of the limit")
    shutil.rmtree(staging, ignore_errors=True)
    conf = rclone_conf(work, server.endpoint, run_id)
    src = work / f"{run_id}-rclone"
    src.mkdir()
    make_big(src / "big.bin", size)
    scpu0 = server.cpu()
    elapsed, cpu, rss = rclone(conf, src, f"{run_id}/rclone", 4, ("--bwlimit", f"{limit_mib}M"))
    rate = mib / elapsed
    res.add("bwlimit", f"rclone --bwlimit {limit_mib}M", rate, "MiB/s", cpu, rss,
            server.cpu() - scpu0, note=f"{rate / limit_mib:.3f} of the limit")
    shutil.rmtree(src)


def intake(res, args, work, server, count):
    run_id = f"intake-{int(time.time())}"
    sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool")
    # A first start makes the queue, so the spool can be paused before the files come.
    sp.start()
    sp.stop()
    sp.cli("pause", "s0")
    make_files(sp.spools[0], count, 16, depth=1)
    t0 = time.monotonic()
    sp.start()
    t1 = sp.wait_registered(count, timeout=3600)
    cpu, rss = sp.cpu(), sp.rss()
    if sp.counts().get("pending", 0) != count:
        sys.exit(f"bench: intake registered {sp.counts()}, not {count} pending")
    sp.stop()
    res.add("intake", "s3spool start-up scan", count / (t1 - t0), "files/s", cpu, rss,
            note=f"{count:,} files registered, spool paused")


def waiting(res, args, work, server, count):
    """A destination down for a day on a busy host: `count` files waiting in a paused
    spool, in 1,000 folders. The start-up scan and two rescans, then `status` and `list`:
    the daemon's peak RSS must not grow with the files waiting."""
    run_id = f"waiting-{int(time.time())}"
    sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool")
    sp.config.write_text(sp.config.read_text().replace('rescan_interval = "60s"', 'rescan_interval = "5s"'))
    sp.start()
    sp.stop()
    sp.cli("pause", "s0")
    folders = 1000 if count >= 100_000 else 100
    for i in range(count):
        sub = sp.spools[0] / f"d{i % folders:04d}"
        if i < folders:
            sub.mkdir()
        (sub / f"f{i:07d}").write_bytes(b"x")
    sp.start()
    t0 = time.monotonic()
    sp.wait_registered(count, timeout=7200)
    t1 = time.monotonic()
    # Two full rescans after intake at least (rescan_interval is 5 s; each walks every
    # file again and looks each up in the queue). Their log line is debug-level: timed.
    time.sleep(max(15.0, (t1 - t0) * 2))
    rss = sp.rss()
    cpu = sp.cpu()
    ts = time.monotonic()
    subprocess.run([S3SPOOL, "--config", sp.config, "status"], check=True, stdout=subprocess.DEVNULL)
    status_s = time.monotonic() - ts
    ts = time.monotonic()
    subprocess.run([S3SPOOL, "--config", sp.config, "list"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    list_s = time.monotonic() - ts
    size = sum(f.stat().st_size for f in (sp.dir / "state").glob("queue.db*"))
    sp.stop()
    res.add("waiting", "s3spool, files waiting", rss, "MiB peak RSS", cpu, rss,
            note=f"{count:,} files in {folders} folders; intake {count / (t1 - t0):,.0f} files/s; "
                 f"status {status_s:.2f} s, list {list_s:.2f} s; queue {size / 2**20:.0f} MiB")


def latency(res, args, work, server, drops):
    run_id = f"latency-{int(time.time())}"
    sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool")
    sp.start()
    staging = work / f"{run_id}-staging"
    staging.mkdir()
    waits = []
    for i in range(drops):
        name = f"l{i:04d}.bin"
        (staging / name).write_bytes(os.urandom(4096))
        key = f"{run_id}/s3spool/s0/{name}"
        t0 = time.monotonic()
        os.rename(staging / name, sp.spools[0] / name)
        while True:
            try:
                server.s3.head_object(Bucket=BUCKET, Key=key)
                break
            except server.s3.exceptions.ClientError:
                if time.monotonic() - t0 > 60:
                    sys.exit(f"bench: {key} not readable after 60 s")
                time.sleep(0.001)
        waits.append((time.monotonic() - t0) * 1000)
        time.sleep(0.05)
    sp.stop()
    waits.sort()
    p50 = statistics.median(waits)
    p99 = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
    res.add("latency", "s3spool drop to readable", p50, "ms p50", note=f"p99 {p99:.0f} ms, settle 0s, {drops} drops")


def idle(res, args, work, server, seconds):
    run_id = f"idle-{int(time.time())}"
    sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool", spools=10)
    sp.start()
    time.sleep(2)
    cpu0, t0 = sp.cpu(), time.monotonic()
    time.sleep(seconds)
    cpu, elapsed = sp.cpu() - cpu0, time.monotonic() - t0
    sp.stop()
    res.add("idle", "s3spool, 10 spools", cpu / elapsed * 100, "% of a core", note=f"over {seconds:.0f} s")


def history(res, args, work, server, rows, count, rounds=3):
    """A queue that keeps a long history: `rows` delivered rows (made with SQL, not real
    files) against an empty queue, each taking `count` files by the start-up scan and
    sending them, `rounds` times, the two queues taking turns (the first one first in odd
    rounds): the server fills as the run goes, and whichever queue always went second
    would meet a fuller server. Medians; the history must not slow intake or claims."""
    queues = {}
    for held in (0, rows):
        run_id = f"history{held}-{int(time.time())}"
        sp = Spool(work, run_id, server.endpoint, f"{run_id}/s3spool")
        sp.start()
        sp.stop()
        sp.cli("pause", "s0")
        if held:
            t = time.monotonic()
            db = sqlite3.connect(sp.dir / "state/queue.db")
            now_ms = int(time.time() * 1000)
            # Ids after any the queue holds; each row its own source (queue schema 16).
            base = db.execute("SELECT IFNULL(MAX(id), 0) FROM files").fetchone()[0]
            # Delivered within the default `history` (30 days): the daemon keeps them.
            db.execute("""
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                INSERT INTO sources (id, spool, rel_path, path, size, mtime_ns, inode, queued_at,
                    finished_at, outcome, unsettled)
                SELECT ?4 + i, 's0', 'old/f' || i, ?2 || '/old/f' || i, 4096, 1, i,
                    ?3 - ?1 + i, ?3 - ?1 + i, 'deleted', 0 FROM n""",
                       (held, str(sp.spools[0]), now_ms - 86_400_000, base))
            db.execute("""
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
                INSERT INTO files (id, source_id, spool, rel_path, path, destination, bucket, key,
                    state, size, mtime_ns, inode, next_attempt_at, queued_at, updated_at, done_at,
                    source_finished_at, etag, sha256, source_outcome, object_size, format)
                SELECT ?5 + i, ?5 + i, 's0', 'old/f' || i, ?2 || '/old/f' || i, 'bench', ?3,
                    'old/f' || i, 'done', 4096, 1, i, 0, ?4 - ?1 + i, ?4 - ?1 + i, ?4 - ?1 + i,
                    ?4 - ?1 + i, '"e"', 'sha', 'deleted', 4096, 'raw' FROM n""",
                       (held, str(sp.spools[0]), BUCKET, now_ms - 86_400_000, base))
            db.commit()
            db.close()
            print(f"  history: {held:,} delivered rows made in {time.monotonic() - t:.0f} s", flush=True)
        queues[held] = dict(sp=sp, rounds=[])
    for n in range(rounds):
        for held in ((0, rows) if n % 2 == 0 else (rows, 0)):
            q = queues[held]
            sp = q["sp"]
            before = held + n * count
            make_files(sp.spools[0] / f"r{n}", count, 4096, depth=1)
            ts = time.monotonic()
            sp.start()
            # The scan's rate from the daemon's "running" line: a fixed start-up cost would
            # otherwise weigh on the files as if each were slower. The start is its own figure.
            t0, start_cpu = time.monotonic(), sp.cpu()
            start_s = t0 - ts
            t1 = sp.wait_registered(before + count, timeout=3600)
            intake_cpu = sp.cpu() - start_cpu
            cpu0 = sp.cpu()
            t2 = time.monotonic()
            sp.cli("resume", "s0")
            t3 = sp.wait("done", before + count, timeout=3600)
            send_cpu = sp.cpu() - cpu0
            sp.cli("pause", "s0")
            ts = time.monotonic()
            subprocess.run([S3SPOOL, "--config", sp.config, "status"], check=True, stdout=subprocess.DEVNULL)
            status_s = time.monotonic() - ts
            rss = sp.rss()
            sp.stop()
            size = sum(f.stat().st_size for f in (sp.dir / "state").glob("queue.db*"))
            q["rounds"].append(dict(intake=count / (t1 - t0), send=count / (t3 - t2), status=status_s,
                                    start=start_s, intake_cpu=intake_cpu / count * 1000,
                                    send_cpu=send_cpu / count * 1000, rss=rss, size=size))
    for held in (0, rows):
        r = queues[held]["rounds"]
        med = {k: statistics.median(x[k] for x in r) for k in r[0]}
        what = f"{held:,} rows delivered before" if held else "an empty queue"
        each = lambda k, fmt: ", ".join(format(x[k], fmt) for x in r)
        res.add("history", f"intake, {what}", med["intake"], "files/s", med["intake_cpu"], max(x["rss"] for x in r),
                note=f"median of {rounds} rounds ({each('intake', ',.0f')}) of {count:,} files by the start-up "
                     f"scan, after a start of {med['start']:.2f} s; queue {r[-1]['size'] / 2**20:,.0f} MiB")
        res.add("history", f"sent, {what}", med["send"], "files/s", med["send_cpu"], max(x["rss"] for x in r),
                note=f"median of {rounds} rounds ({each('send', ',.0f')}); status {med['status']:.2f} s")


class Sampler:
    """The daemon's RSS, open descriptors, WAL and queue file sizes every `every` seconds."""

    def __init__(self, sp, every=2.0):
        self.sp, self.every, self.samples = sp, every, []
        self.stop_flag = False
        import threading
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        wal = self.sp.dir / "state/queue.db-wal"
        db = self.sp.dir / "state/queue.db"
        while not self.stop_flag:
            pid = self.sp.proc.pid
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                rss = int(next(l for l in status.splitlines() if l.startswith("VmRSS:")).split()[1]) / 1024
                fds = len(os.listdir(f"/proc/{pid}/fd"))
                self.samples.append((time.monotonic(), rss, fds, wal.stat().st_size / 2**20 if wal.exists() else 0,
                                     db.stat().st_size / 2**20))
            except (OSError, StopIteration):
                pass
            time.sleep(self.every)

    def stop(self):
        self.stop_flag = True
        self.thread.join()

    def thirds(self, column):
        """The highest value of `column` (1 RSS, 2 fds, 3 WAL, 4 queue file) in the first and
        last third."""
        n = len(self.samples)
        third = max(1, n // 3)
        first = max(s[column] for s in self.samples[:third])
        last = max(s[column] for s in self.samples[-third:])
        return first, last

    def halves_after(self, t, column):
        """The highest value of `column` in the first and second half of the samples taken
        after `t` (monotonic), or None when there are too few."""
        after = [s for s in self.samples if s[0] >= t]
        if len(after) < 10:
            return None
        half = len(after) // 2
        return max(s[column] for s in after[:half]), max(s[column] for s in after[half:])


# The soak's history, and how late its first rows are forgotten: the daemon looks every
# 10 minutes (dispatch/history.rs), so the queue reaches its steady size by 70 minutes.
SOAK_HISTORY = 3600
HISTORY_ROUND = 600


def soak(res, args, work, seconds):
    """Producers write small and multipart-sized files into a raw and a gzip spool for
    `seconds`, through a relay that cuts 2 % of requests or their answers and counts every
    write the server accepted; a SIGHUP every minute (every 5 s in the quick run); an
    operator runs `status` and `list` every few seconds. Then: every file written once
    (the relay's count; on moto also one version each in a versioned bucket) and intact,
    read back by boto3; RSS, descriptors, WAL and queue file flat."""
    import concurrent.futures
    import gzip
    import hashlib
    import threading
    soak_dir = work / "soak"
    soak_dir.mkdir()
    # A server of its own: garage keeps objects on disk; moto (quick run without garage)
    # keeps them in memory, which 30 minutes grew to 17.5 GiB.
    server = Server(args.server, soak_dir, args.garage, None)
    try:
        if server.kind == "moto":
            server.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        counts_file = soak_dir / "faults.json"
        fport = free_port()
        faults = subprocess.Popen(
            [sys.executable, REPO / "bench/faults.py", str(fport), f"127.0.0.1:{server.port}", "2", counts_file],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        faults.stdout.readline()
        wait_port(fport, "faults")
        run_id = f"soak-{int(time.time())}"
        prefix = f"{run_id}/s3spool"
        sp = Spool(soak_dir, run_id, f"http://127.0.0.1:{fport}", prefix, spools=2,
                   extra='[destinations.bench.upload]\nmultipart_threshold = "5MiB"\npart_size = "5MiB"')
        # The second spool gzips what it sends (under the source's name: {path}); the
        # history is the shortest allowed, so a long soak reaches it.
        config = sp.config.read_text().replace("\nrescan_interval", f'\nhistory = "{SOAK_HISTORY // 3600}h"\nrescan_interval', 1)
        sp.config.write_text(config + 'format = "gzip"\n')
        sp.start()
        sampler = Sampler(sp)
        produced = {}  # key -> (sha256 of the source, gzip?)
        stop = threading.Event()
        lock = threading.Lock()

        def produce(spool_index):
            staging = soak_dir / f"staging{spool_index}"
            staging.mkdir()
            spool = sp.spools[spool_index]
            i, last_big = 0, time.monotonic()
            while not stop.is_set():
                i += 1
                big = time.monotonic() - last_big > (60 if not args.quick else 10)
                if big:
                    last_big = time.monotonic()
                folder = f"d{i % 10}"
                if spool_index == 0:
                    name = f"f{i:07d}.bin"
                    data = os.urandom(11 << 20 if big else random.randint(1, 8192))
                    key = f"{prefix}/s0/{folder}/{name}"
                else:
                    name = f"f{i:07d}.csv"
                    n = 200_000 if big else random.randint(1, 50)
                    data = "".join(f"{i},{j},{random.random()}\n" for j in range(n)).encode()
                    key = f"{prefix}/s1/{folder}/{name}"
                (staging / name).write_bytes(data)
                (spool / folder).mkdir(exist_ok=True)
                os.rename(staging / name, spool / folder / name)
                with lock:
                    produced[key] = (hashlib.sha256(data).hexdigest(), spool_index == 1)
                time.sleep(0.05)

        refused = []
        operator_calls = [0]

        def operate():
            while not stop.is_set():
                for cmd in (["status"], ["list", "--limit", "20"]):
                    out = subprocess.run([S3SPOOL, "--config", sp.config, *cmd], capture_output=True, text=True)
                    operator_calls[0] += 1
                    if out.returncode != 0:
                        refused.append(f"{' '.join(cmd)}: {out.returncode} {out.stderr.strip()[:200]}")
                time.sleep(3)

        threads = [threading.Thread(target=produce, args=(k,)) for k in (0, 1)]
        threads.append(threading.Thread(target=operate))
        for t in threads:
            t.start()
        cpu0 = sp.cpu()
        t0 = time.monotonic()
        hups = 0
        hup_every = 5 if args.quick else 60
        while time.monotonic() - t0 < seconds:
            time.sleep(hup_every)
            sp.proc.send_signal(signal.SIGHUP)
            hups += 1
            if not args.quick and hups % 10 == 0:
                # The figures as the run goes: a long soak's queue file is read off these.
                now = sampler.samples[-1] if sampler.samples else None
                seen = (f", RSS {now[1]:.0f} MiB, fds {now[2]}, WAL {now[3]:.1f} MiB, "
                        f"queue file {now[4]:.1f} MiB") if now else ""
                print(f"bench: soak {hups} min, {len(produced):,} files{seen}", flush=True)
        stop.set()
        for t in threads:
            t.join()
        total = len(produced)
        # Every file in the bucket and nothing left waiting (counting `done` rows would
        # not do: `history` forgets the oldest as the run goes).
        deadline = time.monotonic() + 600
        while True:
            c = sp.counts()
            if c.get("failed"):
                sys.exit(f"bench: s3spool failed files: {c}\n{(sp.dir / 'daemon.log').read_text()[-3000:]}")
            if not c.get("pending") and not c.get("active") and server.count(prefix) >= total:
                break
            if time.monotonic() > deadline:
                sys.exit(f"bench: the soak's files did not all arrive in 600 s: {c}")
            time.sleep(1)
        cpu = sp.cpu() - cpu0
        elapsed = time.monotonic() - t0
        sampler.stop()
        rss = sp.rss()
        sp.stop()
        faults.terminate()
        faults.wait(10)
        fault_counts = json.loads(counts_file.read_text())

        # The independent reader: every object under the prefix, the writes the relay let
        # through to the server (and every version, where the server keeps them).
        listed = set()
        for page in server.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            listed.update(o["Key"] for o in page.get("Contents", []))
        problems = []
        if fault_counts["unreadable_answers"]:
            problems.append(f"{fault_counts['unreadable_answers']} answers the relay could not read: writes uncounted")
        writes = {k: v for k, v in fault_counts["writes"].items() if k.startswith(prefix + "/")}
        for key, seen in writes.items():
            # Completing one upload twice writes nothing new; each PUT and each upload does.
            distinct = [w for w in seen if w == "put"] + sorted({w for w in seen if w.startswith("complete ")})
            if "delete" in seen or len(distinct) != 1:
                problems.append(f"written {len(distinct)} times{' and deleted' if 'delete' in seen else ''}: {key} ({seen})")
        versions = {}
        if server.kind == "moto":
            for page in server.s3.get_paginator("list_object_versions").paginate(Bucket=BUCKET, Prefix=prefix):
                for v in page.get("Versions", []):
                    versions.setdefault(v["Key"], []).append(v)
            problems += [f"{len(vs)} versions: {k}" for k, vs in versions.items() if len(vs) > 1]
        problems += [f"missing: {k}" for k in produced if k not in listed]
        problems += [f"no write counted: {k}" for k in produced if k in listed and k not in writes]
        problems += [f"no file made it: {k}" for k in listed if k not in produced]

        def intact(item):
            key, (sha, gzipped) = item
            body = server.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            if gzipped:
                body = gzip.decompress(body)
            return None if hashlib.sha256(body).hexdigest() == sha else f"bytes differ: {key}"

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            problems += [p for p in pool.map(intact, [i for i in produced.items() if i[0] in listed]) if p]
        if problems or refused:
            sys.exit("bench: the soak found problems:\n" + "\n".join(problems[:50] + refused[:20]))
        (r1, r2), (f1, f2), (w1, w2), (q1, q2) = (sampler.thirds(c) for c in (1, 2, 3, 4))
        settled = sampler.halves_after(t0 + SOAK_HISTORY + HISTORY_ROUND, 4)
        queue_note = (f"; once history was reached, queue file {settled[0]:.1f} -> {settled[1]:.1f} MiB "
                      f"(first half -> second half of the minutes after {(SOAK_HISTORY + HISTORY_ROUND) // 60})"
                      if settled else f"; queue file {q1:.1f} -> {q2:.1f} MiB (history of 1 h not reached)")
        twice_completed = sum(1 for seen in writes.values() if len([w for w in seen if w != "put"]) > 1)
        res.add("soak", "s3spool, raw and gzip spools", total / elapsed, "files/s", cpu / total * 1000, rss,
                note=f"{elapsed / 60:.0f} min on {server.kind}, {total:,} files each written once and intact "
                     f"({sum(len(v) for v in writes.values()):,} writes counted at the relay"
                     f"{f', {twice_completed} uploads completed again after a lost answer' if twice_completed else ''}"
                     f"{', one version each' if versions else ''}); "
                     f"{fault_counts['cut_requests']} requests cut and "
                     f"{fault_counts['lost_answers']} answers lost of {fault_counts['requests']:,}; "
                     f"{hups} SIGHUPs; {operator_calls[0]} operator calls, none refused; "
                     f"RSS {r1:.0f} -> {r2:.0f} MiB, fds {f1} -> {f2}, WAL {w1:.1f} -> {w2:.1f} MiB "
                     f"(first third -> last third, highest){queue_note}")
        res.soak = dict(rss=(r1, r2), fds=(f1, f2), wal=(w1, w2))
        if settled:
            res.soak["queue file"] = settled
    finally:
        server.stop()


# --- report ----------------------------------------------------------------------------

def machine():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return f"{os.cpu_count()} cores ({model}), {int(mem) // (1 << 20)} GiB, Linux {platform.release()}"


def tool_versions(server, aws):
    v = [subprocess.run([S3SPOOL, "--version"], capture_output=True, text=True).stdout.strip(),
         subprocess.run(["rclone", "version"], capture_output=True, text=True).stdout.splitlines()[0],
         server.version()]
    if aws:
        out = subprocess.run([aws, "--version"], capture_output=True, text=True)
        v.append((out.stdout or out.stderr).split()[0])
    return v


def ratio_lines(res):
    """s3spool against the best peer, per scenario."""
    lines = []
    by = {}
    for r in res.rows:
        by.setdefault(r["scenario"], []).append(r)
    for scenario, rows in by.items():
        ours = [r for r in rows if r["tool"].startswith("s3spool")]
        peers = [r for r in rows if not r["tool"].startswith("s3spool")]
        if not ours or not peers:
            continue
        best = max(peers, key=lambda r: r["figure"])
        for o in ours:
            line = f"- **{scenario}**: {o['tool']} {o['figure'] / best['figure']:.2f}x the best peer ({best['tool']})"
            if o["cpu"] and best["cpu"]:
                line += f"; client CPU {o['cpu'] / best['cpu']:.2f}x"
            if o["rss"] and best["rss"]:
                line += f"; peak RSS {o['rss']:.0f} vs {best['rss']:.0f} MiB"
            lines.append(line)
    return lines


def target_lines(res):
    """Each target of issue 12, met or missed by how much, from this run's figures."""
    def row(scenario, tool_prefix):
        return next((r for r in res.rows if r["scenario"] == scenario and r["tool"].startswith(tool_prefix)), None)

    def best(scenario, prefix):
        rows = [r for r in res.rows if r["scenario"] == scenario and r["tool"].startswith(prefix)]
        return max(rows, key=lambda r: r["figure"]) if rows else None

    out = []

    def check(what, value, target, ok, unit=""):
        mark = "met" if ok else "missed"
        out.append(f"- {what}: {value}{unit} (target {target}{unit}): **{mark}**")

    ours, peer = row("small", "s3spool"), best("small", "rclone")
    if ours and peer:
        check("small files, files/s against rclone", f"{ours['figure'] / peer['figure']:.2f}", ">= 1.30", ours["figure"] >= 1.3 * peer["figure"], "x")
        check("small files, client CPU per file against rclone", f"{ours['cpu'] / peer['cpu']:.2f}", "<= 0.50", ours["cpu"] <= 0.5 * peer["cpu"], "x")
    ours, peer = row("wan", "s3spool"), best("wan", "rclone")
    if ours and peer:
        check("over the relay, files/s against rclone's best", f"{ours['figure'] / peer['figure']:.2f}", ">= 2.00", ours["figure"] >= 2 * peer["figure"], "x")
    ours, peer = row("large", "s3spool"), best("large", "rclone")
    if ours and peer:
        check("2 GiB file, MiB/s against rclone", f"{ours['figure'] / peer['figure']:.2f}", ">= 1.20", ours["figure"] >= 1.2 * peer["figure"], "x")
        check("2 GiB file, client CPU against rclone", f"{ours['cpu'] / peer['cpu']:.2f}", "<= 1.00", ours["cpu"] <= peer["cpu"], "x")
        check("2 GiB file, peak RSS", f"{ours['rss']:.0f}", "<= 192 (64 + the 128 MiB budget)", ours["rss"] <= 192, " MiB")
    once = row("large", "s3spool (large_file_sha256")
    if once and peer:
        check("2 GiB file read once, MiB/s against rclone", f"{once['figure'] / peer['figure']:.2f}", ">= 1.20", once["figure"] >= 1.2 * peer["figure"], "x")
        check("2 GiB file read once, client CPU against rclone", f"{once['cpu'] / peer['cpu']:.2f}", "<= 1.00", once["cpu"] <= peer["cpu"], "x")
        check("2 GiB file read once, peak RSS", f"{once['rss']:.0f}", "<= 192 (64 + the 128 MiB budget)", once["rss"] <= 192, " MiB")
    r = row("bwlimit", "s3spool")
    if r:
        ratio = float(r["note"].split()[0])
        check("bwlimit, achieved rate against the limit", f"{ratio:.3f}", "0.90 to 1.10", 0.9 <= ratio <= 1.1, "x")
    r = row("verify", "s3spool")
    if r:
        check("verify", f"{r['figure']:,.0f}", ">= 2,000", r["figure"] >= 2_000, " rows/s")
    r = row("waiting", "s3spool")
    if r:
        check("peak RSS with files waiting", f"{r['figure']:.0f}", "<= 128", r["figure"] <= 128, " MiB")
    rows_h = [r for r in res.rows if r["scenario"] == "history"]
    for what in ("intake", "sent"):
        pair = [r for r in rows_h if r["tool"].startswith(what)]
        if len(pair) == 2:
            base, full = (pair[0], pair[1]) if "empty" in pair[0]["tool"] else (pair[1], pair[0])
            check(f"{what} with a long history, against an empty queue", f"{full['figure'] / base['figure']:.2f}",
                  ">= 0.90", full["figure"] >= 0.9 * base["figure"], "x")
    soak_figures = getattr(res, "soak", None)
    if soak_figures:
        for what, unit, slack in (("rss", " MiB", 8), ("fds", "", 4), ("wal", " MiB", 4)):
            first, last = soak_figures[what]
            check(f"soak, highest {what.upper()} in the last third against the first", f"{first:.0f} -> {last:.0f}",
                  f"<= first x 1.2 + {slack}", last <= first * 1.2 + slack, unit)
        if "queue file" in soak_figures:
            first, last = soak_figures["queue file"]
            check("soak, queue file once history was reached (highest, second half against first)",
                  f"{first:.1f} -> {last:.1f}", "<= first x 1.1 + 1", last <= first * 1.1 + 1, " MiB")
    r = row("intake", "s3spool")
    if r:
        check("intake", f"{r['figure']:,.0f}", ">= 50,000", r["figure"] >= 50_000, " files/s")
    r = row("latency", "s3spool")
    if r:
        check("drop to readable, p50", f"{r['figure']:.0f}", "<= settle + 100 = 100", r["figure"] <= 100, " ms")
    r = row("idle", "s3spool")
    if r:
        check("idle CPU, 10 spools", f"{r['figure']:.2f}", "<= 0.10", r["figure"] <= 0.1, "% of a core")
    return out


def write_report(res, args, server, aws, out, started):
    lines = [
        "# s3spool benchmark",
        "",
        f"Written by `bench/run{' --quick' if args.quick else ''}` on {started:%Y-%m-%d %H:%M} UTC"
        f" ({time.monotonic() - T0:.0f} s). Machine: {machine()}.",
        f"Server: {server.kind} on 127.0.0.1, sharing the cores with the clients. Tools: "
        + ", ".join(tool_versions(server, aws)) + ".",
        f"WAN: a relay adding {args.rtt_ms:g} ms per round trip (bench/relay.py)." if not args.skip_wan else "",
        "s3spool runs with its defaults except `settle = \"0s\"` (rclone has no settle time) and",
        "a key template of `{spool}/{path}`.",
        "",
        "| scenario | tool | figure | unit | client CPU | peak RSS MiB | server CPU | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res.rows:
        cpu = "" if r["cpu"] is None else f"{r['cpu']:.2f}"
        rss = "" if r["rss"] is None else f"{r['rss']:.0f}"
        scpu = "" if r["server_cpu"] is None else f"{r['server_cpu']:.2f}"
        lines.append(f"| {r['scenario']} | {r['tool']} | {r['figure']:.1f} | {r['unit']} | {cpu} | {rss} | {scpu} | {r['note']} |")
    lines += ["", "CPU columns: seconds per 1,000 files for the small-file scenarios, seconds for the",
              "large file and intake.", "", "## s3spool against the best peer", ""]
    lines += ratio_lines(res)
    lines += [""] + res.notes
    lines += ["", "## Targets (issue 12)", ""] + target_lines(res)
    lines += ["", "What the profiles show, and what is next: bench/PROFILE.md."]
    out.write_text("\n".join(l for l in lines if l is not None) + "\n")
    print(f"bench: wrote {out}")


T0 = time.monotonic()


def main():
    global S3SPOOL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small counts (CI)")
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--server", choices=["garage", "moto"], default="garage")
    p.add_argument("--garage", help="the garage binary")
    p.add_argument("--s3spool", required=True, help="the s3spool binary")
    p.add_argument("--aws", help="the aws binary (awscli); without it awscli is left out")
    p.add_argument("--out", default=str(REPO / "bench/RESULTS.md"))
    p.add_argument("--only", help="comma-separated scenarios: small,wan,large,bwlimit,intake,latency,idle,waiting,history,soak")
    p.add_argument("--skip-wan", action="store_true")
    p.add_argument("--soak-seconds", type=int,
                   help="the soak's length (default 1800; moto keeps every object in memory: "
                        "30 minutes grew it to 17.5 GiB)")
    args = p.parse_args()
    S3SPOOL = args.s3spool
    GARAGE_BIN[0] = args.garage
    q = args.quick
    counts = dict(small=300 if q else 10_000, wan=200 if q else 2_000, large=(64 << 20) if q else (2 << 30),
                  intake=3_000 if q else 100_000, latency=10 if q else 100, idle=3 if q else 60,
                  waiting=20_000 if q else 1_000_000,
                  history=100_000 if q else 10_000_000, soak=args.soak_seconds or (60 if q else 1800),
                  bwlimit=(16 << 20) if q else (256 << 20))
    only = set(args.only.split(",")) if args.only else set(counts)
    if args.skip_wan:
        only.discard("wan")
    started = datetime.datetime.now(datetime.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="s3spool-bench-"))
    res = Results()
    server = Server(args.server, work, args.garage, None)
    relay = None
    try:
        print(f"bench: {args.server} at {server.endpoint}; work in {work}", flush=True)
        if "small" in only:
            small_files(res, args, work, server, server.endpoint, "small", counts["small"], [16], args.aws)
        if "wan" in only:
            relay = Relay(server, args.rtt_ms, sys.executable)
            small_files(res, args, work, server, relay.endpoint, "wan", counts["wan"], [16, 64], None, relay)
            relay.stop()
            relay = None
        if "large" in only:
            large_file(res, args, work, server, counts["large"], args.aws)
        if "bwlimit" in only:
            bwlimit(res, args, work, server, counts["bwlimit"], 8 if q else 32)
        if "intake" in only:
            intake(res, args, work, server, counts["intake"])
        if "latency" in only:
            latency(res, args, work, server, counts["latency"])
        if "waiting" in only:
            waiting(res, args, work, server, counts["waiting"])
        if "idle" in only:
            idle(res, args, work, server, counts["idle"])
        if "history" in only:
            history(res, args, work, server, counts["history"], 500 if q else 10_000)
        if "soak" in only:
            soak(res, args, work, counts["soak"])
        small_rows = [r for r in res.rows if r["scenario"] == "small" and r["server_cpu"]]
        if small_rows:
            per_put = statistics.median(r["server_cpu"] for r in small_rows) / 1000
            res.notes.append(
                f"Server ceiling: {server.kind} spends {per_put * 1000:.2f} ms of CPU per small PUT, so on "
                f"{os.cpu_count()} cores with no client at all it could take at most "
                f"{os.cpu_count() / per_put:,.0f} files/s.")
        write_report(res, args, server, args.aws, Path(args.out), started)
    finally:
        try:
            if relay:
                relay.stop()
            server.stop()
        finally:
            if os.environ.get("S3SPOOL_BENCH_KEEP"):
                print(f"bench: kept {work}", flush=True)
            else:
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
