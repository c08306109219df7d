//! The test harness: a real S3-compatible server (moto) on 127.0.0.1, the real `s3spool`
//! binary, and boto3 (through `tests/support/s3read.py`) as an independent reader.
//!
//! Tools come from `$S3SPOOL_MOTO` / `$S3SPOOL_PYTHON`, else `.venv/` in the repo (made by
//! `scripts/test.sh`), else `PATH`.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_s3spool");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tool(env: &str, venv_name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env) {
        return PathBuf::from(path);
    }
    let venv = repo().join(".venv/bin").join(venv_name);
    if venv.exists() {
        return venv;
    }
    PathBuf::from(venv_name)
}

/// A command's stdout then stderr, as text.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The Python with boto3 (the venv's), and a script of `tests/support/`.
pub fn python_script(name: &str) -> (PathBuf, PathBuf) {
    (
        tool("S3SPOOL_PYTHON", "python3"),
        repo().join("tests/support").join(name),
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A moto server on a free port. Killed on drop, and by the kernel if the test process dies.
pub struct S3Server {
    pub port: u16,
    child: Child,
}

impl S3Server {
    pub fn start() -> S3Server {
        let port = free_port();
        let moto = tool("S3SPOOL_MOTO", "moto_server");
        let log = std::env::temp_dir().join(format!("s3spool-moto-{port}.log"));
        let mut command = Command::new(&moto);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} (run scripts/test.sh to install moto): {e}",
                moto.display()
            )
        });
        wait_for(Duration::from_secs(30), "moto to listen", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        S3Server { port, child }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One moto shared by the tests of this binary (each test uses its own bucket). It is
/// started from a thread that lives as long as the process, because the parent-death
/// signal follows the thread that spawned the child.
pub fn shared_server() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let server = S3Server::start();
            tx.send(server.endpoint()).unwrap();
            loop {
                std::thread::park();
            }
        });
        rx.recv().expect("moto did not start")
    })
}

/// An object as read back by boto3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub size: u64,
    pub sha256: String,
    pub etag: String,
    /// The `x-amz-meta-sha256` the object carries.
    pub meta_sha256: Option<String>,
    /// The `x-amz-meta-source-sha256` a converted object carries.
    pub meta_source_sha256: Option<String>,
    /// The `x-amz-meta-source-tag` an encrypted object carries.
    pub meta_source_tag: Option<String>,
    pub content_type: Option<String>,
    /// SHA-256 of the body after gunzip (Python's gzip), for gzip bodies.
    pub gunzip_sha256: Option<String>,
}

/// A fresh bucket on a server.
pub struct Bucket {
    pub name: String,
    pub endpoint: String,
}

impl Bucket {
    pub fn create(endpoint: &str) -> Bucket {
        let bucket = Bucket::named(endpoint);
        bucket.read(&["mb"]);
        bucket
    }

    /// A unique name, not created (for missing-bucket tests).
    pub fn named(endpoint: &str) -> Bucket {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Bucket {
            name,
            endpoint: endpoint.to_string(),
        }
    }

    fn read(&self, args: &[&str]) -> Value {
        let python = tool("S3SPOOL_PYTHON", "python3");
        let script = repo().join("tests/support/s3read.py");
        let out = Command::new(&python)
            .arg(&script)
            .arg(&self.endpoint)
            .arg(args[0])
            .arg(&self.name)
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        assert!(
            out.status.success(),
            "s3read {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn create_now(&self) {
        self.read(&["mb"]);
    }

    /// Every object with its size and SHA-256, read back in full.
    pub fn objects(&self) -> BTreeMap<String, Object> {
        let dump = self.read(&["dump"]);
        dump.as_object()
            .unwrap()
            .iter()
            .map(|(key, o)| {
                let object = Object {
                    size: o["size"].as_u64().unwrap(),
                    sha256: o["sha256"].as_str().unwrap().to_string(),
                    etag: o["etag"].as_str().unwrap().to_string(),
                    meta_sha256: o["meta_sha256"].as_str().map(str::to_string),
                    meta_source_sha256: o["meta_source_sha256"].as_str().map(str::to_string),
                    meta_source_tag: o["meta_source_tag"].as_str().map(str::to_string),
                    content_type: o["content_type"].as_str().map(str::to_string),
                    gunzip_sha256: o["gunzip_sha256"].as_str().map(str::to_string),
                };
                (key.clone(), object)
            })
            .collect()
    }

    /// Writes `bytes` under `key` as another writer would (no s3spool metadata).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        self.read(&["put", key, file.path().to_str().unwrap()]);
    }

    /// Deletes one object behind s3spool's back.
    pub fn remove(&self, key: &str) {
        self.read(&["rm", key]);
    }

    /// Creates an IAM user with no policy: (access key id, secret).
    pub fn iam_user(&self, name: &str) -> (String, String) {
        self.iam_user_allowed(name, &[])
    }

    /// Creates an IAM user allowed `actions` (e.g. `s3:GetObject`) on this bucket and its
    /// objects: (access key id, secret).
    pub fn iam_user_allowed(&self, name: &str, actions: &[&str]) -> (String, String) {
        let mut args = vec!["iam-user", name];
        args.extend_from_slice(actions);
        let out = self.read(&args);
        let id = out["access_key_id"].as_str().unwrap().to_string();
        (id, out["secret"].as_str().unwrap().to_string())
    }

    /// From now on the server checks signatures, keys and IAM policies.
    pub fn enforce_auth(&self) {
        self.read(&["auth-on"]);
    }

    /// Tags, metadata, storage class, SSE, content type and ACL grants of one object.
    pub fn describe(&self, key: &str) -> Value {
        self.read(&["describe", key])
    }

    /// Aborts every open multipart upload behind s3spool's back; returns how many.
    pub fn abort_all_uploads(&self) -> u64 {
        self.read(&["abort-all"]).as_u64().unwrap()
    }

    /// A Parquet or JSON-lines object read back by pyarrow or Python's json: rows, row
    /// groups, columns (name, type, nullable) and the values as JSON.
    pub fn table(&self, key: &str) -> Value {
        self.read(&["table", key])
    }

    /// Like [`Bucket::table`], with the first and last rows instead of every value.
    pub fn table_summary(&self, key: &str) -> Value {
        self.read(&["table", key, "--summary"])
    }

    /// Saves one object's bytes to `path`.
    pub fn get(&self, key: &str, path: &Path) {
        self.read(&["get", key, path.to_str().unwrap()]);
    }

    /// Saves every object under `prefix` into `dir`; returns key → file.
    pub fn save(&self, dir: &Path, prefix: &str) -> BTreeMap<String, PathBuf> {
        let saved = self.read(&["save", dir.to_str().unwrap(), prefix]);
        saved
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, path)| (key.clone(), PathBuf::from(path.as_str().unwrap())))
            .collect()
    }

    /// Turns on versioning, so every write shows: a second identical PUT to a key is a
    /// second version.
    pub fn enable_versioning(&self) {
        self.read(&["versioning"]);
    }

    /// Every version of every object (oldest first), with its metadata.
    pub fn versions(&self) -> BTreeMap<String, Vec<Value>> {
        let all = self.read(&["versions"]);
        all.as_object()
            .unwrap()
            .iter()
            .map(|(key, v)| (key.clone(), v.as_array().unwrap().clone()))
            .collect()
    }

    /// Multipart uploads still open.
    pub fn open_uploads(&self) -> Vec<Value> {
        self.read(&["uploads"]).as_array().unwrap().clone()
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (incompressible, distinct per seed).
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The auth table the tests use unless they say otherwise.
pub const STATIC_AUTH: &str =
    "mode = \"static\"\naccess_key_id = \"AKIAS3SPOOLTEST\"\nsecret_access_key = \"s3spool-test-secret-do-not-log\"";

/// A temporary working area: a spool, a state dir and a config file.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub spool: PathBuf,
    pub config: PathBuf,
    pub bucket: Bucket,
}

/// Config knobs the tests vary.
#[derive(Clone)]
pub struct Options {
    pub endpoint: String,
    pub prefix: &'static str,
    pub settle: &'static str,
    pub key: &'static str,
    /// Extra lines in the spool table.
    pub spool_extra: String,
    /// Extra lines in the upload table.
    pub upload_extra: &'static str,
    /// How often the daemon walks the spool in full (events do the rest).
    pub rescan: &'static str,
    pub max_attempts: u32,
    pub drain_timeout: &'static str,
    /// The body of `[destinations.lake.auth]`, if not the default static key.
    pub auth: Option<String>,
}

impl Options {
    pub fn new(endpoint: &str) -> Options {
        Options {
            endpoint: endpoint.to_string(),
            prefix: "inbound",
            settle: "300ms",
            key: "{spool}/{path}",
            spool_extra: String::new(),
            upload_extra: "",
            rescan: "1s",
            max_attempts: 3,
            drain_timeout: "20s",
            auth: None,
        }
    }
}

/// A setup on the shared server with a fresh bucket, `options` changed by the caller.
pub fn setup(options: impl FnOnce(&mut Options)) -> Setup {
    let endpoint = shared_server();
    let mut o = Options::new(endpoint);
    options(&mut o);
    Setup::new(o, Bucket::create(endpoint))
}

impl Setup {
    pub fn new(options: Options, bucket: Bucket) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::create_dir_all(&spool).unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            r#"
state_dir = "state"
rescan_interval = "{rescan}"
drain_timeout = "{drain_timeout}"

[destinations.lake]
bucket = "s3://{bucket}/{prefix}"
endpoint = "{endpoint}"

[destinations.lake.auth]
{auth}

[destinations.lake.upload]
multipart_threshold = "6MiB"
part_size = "5MiB"
concurrency = 4
max_attempts = {max_attempts}
backoff_initial = "100ms"
backoff_max = "500ms"
request_timeout = "30s"
{upload_extra}

[spools.orders]
path = "spool"
destination = "lake"
settle = "{settle}"
key = "{key}"
{spool_extra}
"#,
            bucket = bucket.name,
            prefix = options.prefix,
            endpoint = options.endpoint,
            upload_extra = options.upload_extra,
            settle = options.settle,
            key = options.key,
            spool_extra = options.spool_extra,
            rescan = options.rescan,
            max_attempts = options.max_attempts,
            drain_timeout = options.drain_timeout,
            auth = options.auth.as_deref().unwrap_or(STATIC_AUTH),
        );
        write_private(&config, &text);
        Setup {
            dir,
            spool,
            config,
            bucket,
        }
    }

    /// Writes a file into the spool (creating folders) and returns its bytes' SHA-256.
    pub fn drop_file(&self, rel: &str, bytes: &[u8]) -> String {
        let path = self.spool.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Write under a temporary name, then rename: how well-behaved producers deliver.
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().unwrap().to_string_lossy()
        ));
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(bytes).unwrap();
        drop(f);
        std::fs::rename(&tmp, &path).unwrap();
        sha256(bytes)
    }

    /// Rewrites the config's static keys.
    pub fn set_keys(&self, access_key_id: &str, secret: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("access_key_id = ") {
                    format!("access_key_id = {access_key_id:?}")
                } else if line.starts_with("secret_access_key = ") {
                    format!("secret_access_key = {secret:?}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        write_private(&self.config, &lines.join("\n"));
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// An operator command with these environment variables (and none of the machine's
    /// AWS or proxy settings).
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(BIN);
        for var in MACHINE_ENV {
            command.env_remove(var);
        }
        command
            .envs(env.iter().copied())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// `s3spool status --json`.
    pub fn status(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The `last_error` of every failed row, in id order.
    pub fn failed_errors(&self) -> Vec<String> {
        let out = self.cli(&["list", "--state", "failed", "--json"]);
        let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| r["last_error"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every row of the failed rows' paths, whole (`show --json`), and the daemon log's
    /// lines about them: what a failure message needs to tell the story.
    pub fn failed_story(&self) -> String {
        let all = self.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"]);
        let rows: Value = serde_json::from_slice(&all.stdout).unwrap_or(Value::Null);
        let rows = rows.as_array().cloned().unwrap_or_default();
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r["state"] == "failed")
            .filter_map(|r| r["rel_path"].as_str().map(str::to_string))
            .collect();
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let mut out = String::new();
        for path in &failed {
            out.push_str(&format!("== {path}\n"));
            for row in rows.iter().filter(|r| r["rel_path"] == path.as_str()) {
                let id = row["id"].as_i64().unwrap_or_default().to_string();
                let show = self.cli(&["show", &id, "--json"]);
                out.push_str(&String::from_utf8_lossy(&show.stdout));
            }
            let name = path.rsplit('/').next().unwrap_or(path);
            for line in log
                .lines()
                .filter(|l| l.contains(name) || l.contains("s3spool running"))
            {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    pub fn count(&self, state: &str) -> u64 {
        self.status()["counts"][state].as_u64().unwrap()
    }

    /// `s3spool show ID --json` (null while the queue cannot be read).
    pub fn show(&self, id: i64) -> Value {
        serde_json::from_slice(&self.cli(&["show", &id.to_string(), "--json"]).stdout)
            .unwrap_or_default()
    }

    /// Starts the daemon on the one file in the spool, SIGKILLs it once a part of it is
    /// recorded, calls `let_through` (e.g. a slow proxy lets requests pass), starts it
    /// again until the file is delivered and stops it. Returns the second run's log.
    pub fn kill_after_a_part_then_deliver(&self, let_through: impl FnOnce()) -> String {
        let wait = Duration::from_secs(120);
        let daemon = self.start();
        wait_for(wait, "a part recorded", || {
            self.show(1)["parts_done"].as_u64().unwrap_or(0) >= 1
        });
        daemon.kill();
        let_through();
        let daemon = self.start();
        wait_for(wait, "delivered after restart", || self.count("done") == 1);
        let log = std::fs::read_to_string(&daemon.log).unwrap();
        assert!(daemon.stop().success());
        log
    }

    /// Turns on `metrics_listen` on a free port, which it returns.
    pub fn serve_metrics(&self) -> u16 {
        let port = free_port();
        self.add_top_level(&format!("metrics_listen = \"127.0.0.1:{port}\""));
        port
    }

    /// Adds a top-level key to the config (before any table, where it belongs).
    pub fn add_top_level(&self, line: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let text = config.replacen("state_dir", &format!("{line}\nstate_dir"), 1);
        write_private(&self.config, &text);
    }

    /// How many times the daemon said it is running (starts and reloads), from its log.
    pub fn runs(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("daemon.log"))
            .unwrap_or_default()
            .matches("s3spool running")
            .count()
    }

    /// Lines of the daemon log holding `text`.
    pub fn log_lines(&self, text: &str) -> usize {
        std::fs::read_to_string(self.dir.path().join("daemon.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// Waits until the daemon logged `n` more lines holding `text` than it has now: proof
    /// that it got past that point `n` more times ("rescan done": a full rescan and its
    /// registration; "nothing due": a dispatcher turn that claimed nothing; "probe failed":
    /// a held-back destination probed and still failing). A check that something did
    /// not happen waits for this, never for a fixed time.
    pub fn wait_past(&self, text: &str, n: usize) {
        let want = self.log_lines(text) + n;
        let within = Duration::from_secs(60);
        wait_for(within, &format!("{n} more \"{text}\" in the log"), || {
            self.log_lines(text) >= want
        });
    }

    /// Rewrites the config file through `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        write_private(&self.config, &edit(text));
    }

    /// Starts the daemon and waits until it says it is running (queue open, sweep done).
    pub fn start(&self) -> Daemon {
        self.launch(|log| Daemon::start(&self.config, log))
    }

    /// Starts the daemon with `spawn` (given the log path), and waits until it says it is
    /// running (queue open, sweep done). The log is appended to across restarts: it waits
    /// for one more "running" line.
    pub fn launch(&self, spawn: impl FnOnce(&Path) -> Daemon) -> Daemon {
        let log = self.dir.path().join("daemon.log");
        let running = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("s3spool running")
                .count()
        };
        let before = running();
        let daemon = spawn(&log);
        wait_for(Duration::from_secs(60), "the daemon to be running", || {
            running() > before
        });
        daemon
    }

    /// Asserts `secret` is in none of: the daemon log at `log`, the output of the
    /// operator commands, and the files under `state/` (the queue, its WAL).
    pub fn assert_secret_nowhere(&self, secret: &str, log: &Path) {
        let log_text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!log_text.contains(secret), "secret in the daemon log");
        for args in [
            &["status"][..],
            &["status", "--json"],
            &["list", "--json"],
            &["show", "1"],
            &["check"],
            &["check", "--json"],
        ] {
            let out = self.cli(args);
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!text.contains(secret), "secret in the output of {args:?}");
        }
        for entry in std::fs::read_dir(self.dir.path().join("state"))
            .unwrap()
            .flatten()
        {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "secret in {:?}",
                entry.path()
            );
        }
    }

    /// Files left in the spool (relative paths), hidden ones included.
    pub fn spool_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.spool.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if entry.file_type().unwrap().is_dir() {
                    stack.push(path);
                } else {
                    out.push(
                        path.strip_prefix(&self.spool)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
            }
        }
        out.sort();
        out
    }
}

/// Writes a config file readable by its owner only, as s3spool requires of a file that
/// holds a secret.
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The machine's own AWS and proxy settings, which must not leak into a test.
const MACHINE_ENV: [&str; 14] = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// The real daemon as a child process.
pub struct Daemon {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        Daemon::start_in(Path::new("."), config, log)
    }

    /// Starts the daemon with `cwd` as its working directory (`config` may be relative to it).
    pub fn start_in(cwd: &Path, config: &Path, log: &Path) -> Daemon {
        Daemon::start_with(cwd, config, log, None)
    }

    /// Starts the daemon, as user `uid` (and the same gid) if given.
    pub fn start_with(cwd: &Path, config: &Path, log: &Path, uid: Option<u32>) -> Daemon {
        Daemon::spawn(cwd, config, log, uid, &[])
    }

    /// Starts the daemon as user `uid` from a copy of the binary in `dir` (which that user
    /// owns), working in `dir`: the checkout may live where that user cannot reach (a clone
    /// under `/root`, mode 0700).
    pub fn start_as(dir: &Path, config: &Path, log: &Path, uid: u32) -> Daemon {
        use std::os::unix::fs::PermissionsExt;
        let bin = dir.join("s3spool");
        if !bin.exists() {
            std::fs::copy(BIN, &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Daemon::spawn_bin(&bin, dir, config, log, Some(uid), &[])
    }

    /// Starts the daemon with these AWS environment variables (and none of the caller's).
    pub fn start_env(config: &Path, log: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(Path::new("."), config, log, None, env)
    }

    fn spawn(
        cwd: &Path,
        config: &Path,
        log: &Path,
        uid: Option<u32>,
        env: &[(&str, &str)],
    ) -> Daemon {
        Daemon::spawn_bin(Path::new(BIN), cwd, config, log, uid, env)
    }

    fn spawn_bin(
        bin: &Path,
        cwd: &Path,
        config: &Path,
        log: &Path,
        uid: Option<u32>,
        env: &[(&str, &str)],
    ) -> Daemon {
        LAST_LOG.with(|l| *l.borrow_mut() = Some(log.to_path_buf()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut command = Command::new(bin);
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        for var in MACHINE_ENV {
            command.env_remove(var);
        }
        // Debug unless the test says otherwise.
        command.env("S3SPOOL_LOG", "debug");
        command.envs(env.iter().copied());
        command
            .current_dir(cwd)
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(log_file);
        // SAFETY: as above, prctl only.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Daemon {
            child: Some(command.spawn().unwrap()),
            log: log.to_path_buf(),
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: signalling a child we started and have not reaped.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's peak resident memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let pid = self.child.as_ref().unwrap().id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    pub fn signal_pid(&self, signal: i32) {
        self.signal(signal);
    }

    pub fn kill(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.take().unwrap().wait();
    }

    pub fn wait_exit(mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

thread_local! {
    /// The log of the daemon this test thread started last, shown when a wait times out.
    static LAST_LOG: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

/// Polls `check` until it is true; panics after `timeout` naming `what`, with the tail of
/// the daemon's log.
pub fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            let tail = LAST_LOG.with(|l| l.borrow().clone()).map(|log| {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let lines: Vec<&str> = text
                    .lines()
                    .filter(|l| !l.starts_with(' ') && !l.is_empty())
                    .collect();
                lines[lines.len().saturating_sub(40)..].join("\n")
            });
            panic!(
                "timed out after {timeout:?} waiting for {what}\n--- daemon log (tail) ---\n{}",
                tail.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics`, as Prometheus would scrape it.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_string()
}

/// The value of the series written exactly as `series` (name and labels).
pub fn metric_value(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}
