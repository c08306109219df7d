//! Chaos: for a bounded time, a producer writes, rewrites, renames over, moves and deletes
//! files, swaps folders (and, for a moment, a spool's root) for symlinks, and restores kept
//! files with `cp -a`, in three spools: one deletes delivered files, one archives them in
//! batches every (injected) minute, one encrypts and keeps them. An operator purges,
//! retries, and renames a spool's table with a reload; the daemon is SIGKILLed, or stopped
//! by two impatient SIGTERMs; the endpoint fails requests, loses answers to writes it
//! applied, or disappears for spells longer than the retry budget; the schedule's clock
//! jumps four years ahead and back. Then an independent check (boto3 for the objects, gpg
//! for the encrypted ones, the file system for the rest) proves the promise:
//!
//! - every file version the producer left alone is in S3 exactly once, byte-exact, under
//!   the key its row stores, and gone from its spool (deleted, or in the archive), or
//!   still there in the keeping spool;
//! - no object holds bytes the producer did not write (nothing from outside a spool);
//! - no version is in S3 twice, under two keys or twice under one (the bucket keeps every
//!   write: a second identical PUT shows); no file outside a spool changed; no multipart
//!   upload is left open; no private clean-up name is left behind.
//!
//! Seeded: `S3SPOOL_CHAOS_SEED=N` replays a run's choices, `S3SPOOL_CHAOS_SEED=random`
//! hunts with a new seed (printed), and `S3SPOOL_CHAOS_SECS=N` runs the producer longer
//! than the default (30 s). Without them, CI runs a fixed seed: the kill moments still
//! vary with timing, but a red CI is a hole to fix, not a new seed's luck.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::proxy::{FaultProxy, Mode};

const SETTLE: Duration = Duration::from_millis(500);
const SPOOLS: [&str; 3] = ["orders", "events", "sealed"];
/// The spool that encrypts and keeps its files.
const KEEPING: &str = "sealed";
/// The schedule clock's start: `events` sends at every minute of it.
const CLOCK_BASE: &str = "2026-11-30T00:00:00Z";

/// One version of one file, as the producer made it.
#[derive(Debug)]
struct Version {
    spool: &'static str,
    /// Where it is now (moves follow it).
    rel: String,
    sha: String,
    /// The producer replaced, deleted or rewrote it: it may or may not have been delivered.
    touched: bool,
    written: Instant,
}

struct Producer {
    rng: StdRng,
    seed: u64,
    roots: BTreeMap<&'static str, PathBuf>,
    outside: PathBuf,
    /// Folders (relative to the spool) still written to; swapped ones are retired.
    folders: BTreeMap<&'static str, Vec<String>>,
    versions: Vec<Version>,
    /// Index into `versions` of the version at (spool, rel), while the producer thinks
    /// it is there.
    live: HashMap<(&'static str, String), usize>,
    counter: u64,
    swaps: u64,
    log: Vec<String>,
    /// Where `cp -a` keeps a restored file for a moment.
    scratch: PathBuf,
}

impl Producer {
    fn content(&mut self) -> Vec<u8> {
        self.counter += 1;
        let mut bytes = format!("seed {} version {}\n", self.seed, self.counter).into_bytes();
        // Mostly small; now and then big enough for a multipart upload (threshold 6MiB).
        let pad = if self.rng.gen_ratio(1, 60) {
            self.rng.gen_range(6 << 20..8 << 20)
        } else {
            self.rng.gen_range(0..4000)
        };
        let fill = b'a' + (self.counter % 26) as u8;
        bytes.resize(bytes.len() + pad, fill);
        bytes
    }

    fn path(&self, spool: &str, rel: &str) -> PathBuf {
        self.roots[spool].join(rel)
    }

    fn pick_spool(&mut self) -> &'static str {
        SPOOLS[self.rng.gen_range(0..SPOOLS.len())]
    }

    /// A live file the producer may act on, if it is still on disk (the daemon deletes or
    /// archives delivered ones: those are forgotten here).
    fn pick_live(&mut self) -> Option<(&'static str, String, usize)> {
        for _ in 0..8 {
            if self.live.is_empty() {
                return None;
            }
            let n = self.rng.gen_range(0..self.live.len());
            let ((spool, rel), index) = self
                .live
                .iter()
                .nth(n)
                .map(|(k, v)| (k.clone(), *v))
                .unwrap();
            if self.path(spool, &rel).symlink_metadata().is_ok() {
                return Some((spool, rel, index));
            }
            self.live.remove(&(spool, rel));
        }
        None
    }

    fn record(&mut self, spool: &'static str, rel: String, bytes: &[u8]) {
        if let Some(old) = self.live.remove(&(spool, rel.clone())) {
            self.versions[old].touched = true;
        }
        self.versions.push(Version {
            spool,
            rel: rel.clone(),
            sha: sha256(bytes),
            touched: false,
            written: Instant::now(),
        });
        self.live.insert((spool, rel), self.versions.len() - 1);
    }

    fn act(&mut self) {
        let roll = self.rng.gen_range(0..100);
        match roll {
            0..=44 => self.write_new(),
            45..=56 => self.rename_over(),
            57..=64 => self.rewrite_young(),
            65..=79 => self.move_file(),
            80..=89 => self.delete(),
            90..=92 => self.swap_folder(),
            93..=94 => self.swap_root(),
            95..=97 => self.restore_kept(),
            _ => self.write_new(),
        }
    }

    fn write_new(&mut self) {
        let spool = self.pick_spool();
        let folders = &self.folders[spool];
        let folder = folders[self.rng.gen_range(0..folders.len())].clone();
        let rel = join(&folder, &format!("f{}.csv", self.counter + 1));
        let bytes = self.content();
        let path = self.path(spool, &rel);
        let tmp = path.with_file_name(format!(".f{}.tmp", self.counter));
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.log.push(format!("new {spool}/{rel}"));
        self.record(spool, rel, &bytes);
    }

    /// A new version renamed over a file (the well-behaved producer's rewrite).
    fn rename_over(&mut self) {
        let Some((spool, rel, _)) = self.pick_live() else {
            return self.write_new();
        };
        let bytes = self.content();
        let path = self.path(spool, &rel);
        let tmp = path.with_file_name(format!(".over{}.tmp", self.counter));
        std::fs::write(&tmp, &bytes).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        self.log.push(format!("rename over {spool}/{rel}"));
        self.record(spool, rel, &bytes);
    }

    /// A writer still writing: in place, to a file younger than half the settle time. (An
    /// in-place write to a finished file can race its clean-up; no spool can help that.)
    fn rewrite_young(&mut self) {
        let young: Vec<(&'static str, String)> = self
            .live
            .iter()
            .filter(|(_, &i)| self.versions[i].written.elapsed() < SETTLE / 2)
            .map(|(k, _)| k.clone())
            .collect();
        if young.is_empty() {
            return self.write_new();
        }
        let (spool, rel) = young[self.rng.gen_range(0..young.len())].clone();
        let bytes = self.content();
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.path(spool, &rel));
        let Ok(mut file) = opened else {
            return;
        };
        file.write_all(&bytes).unwrap();
        self.log.push(format!("rewrite {spool}/{rel}"));
        self.record(spool, rel, &bytes);
    }

    /// To another live folder of the same spool: the same version, at a new path.
    fn move_file(&mut self) {
        let Some((spool, rel, index)) = self.pick_live() else {
            return self.write_new();
        };
        let folders = &self.folders[spool];
        let folder = folders[self.rng.gen_range(0..folders.len())].clone();
        let name = rel.rsplit('/').next().unwrap().to_string();
        let to = join(&folder, &format!("m{}-{name}", self.counter));
        self.counter += 1;
        match std::fs::rename(self.path(spool, &rel), self.path(spool, &to)) {
            Ok(()) => {
                self.live.remove(&(spool, rel.clone()));
                self.versions[index].rel = to.clone();
                self.live.insert((spool, to.clone()), index);
                self.log.push(format!("move {spool}/{rel} -> {to}"));
            }
            // Delivered and cleaned up just now.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.live.remove(&(spool, rel));
            }
            Err(e) => panic!("move {rel}: {e}"),
        }
    }

    fn delete(&mut self) {
        let Some((spool, rel, index)) = self.pick_live() else {
            return self.write_new();
        };
        self.live.remove(&(spool, rel.clone()));
        if std::fs::remove_file(self.path(spool, &rel)).is_ok() {
            self.versions[index].touched = true;
            self.log.push(format!("delete {spool}/{rel}"));
        }
    }

    /// Renames a folder away and puts a symlink to the outside in its place. The files go
    /// with the folder (moved); the symlink must never lead s3spool outside.
    fn swap_folder(&mut self) {
        let spool = self.pick_spool();
        let candidates: Vec<String> = self.folders[spool]
            .iter()
            .filter(|f| !f.is_empty())
            .cloned()
            .collect();
        if candidates.is_empty() {
            return self.write_new();
        }
        let folder = candidates[self.rng.gen_range(0..candidates.len())].clone();
        self.swaps += 1;
        let away = format!("away{}", self.swaps);
        let root = self.roots[spool].clone();
        std::fs::rename(root.join(&folder), root.join(&away)).unwrap();
        std::os::unix::fs::symlink(&self.outside, root.join(&folder)).unwrap();
        let folders = self.folders.get_mut(spool).unwrap();
        folders.retain(|f| f != &folder);
        folders.push(away.clone());
        let prefix = format!("{folder}/");
        let moved: Vec<(String, usize)> = self
            .live
            .iter()
            .filter(|((s, rel), _)| *s == spool && rel.starts_with(&prefix))
            .map(|((_, rel), &i)| (rel.clone(), i))
            .collect();
        for (rel, index) in moved {
            let to = format!("{away}/{}", &rel[prefix.len()..]);
            self.live.remove(&(spool, rel));
            self.versions[index].rel = to.clone();
            self.live.insert((spool, to), index);
        }
        self.log.push(format!(
            "swap {spool}/{folder} -> symlink (files to {away})"
        ));
    }
}

impl Producer {
    /// Renames a spool's root away, puts a symlink to the outside in its place, lets the
    /// daemon look for a moment, and puts the root back. The producer writes nothing
    /// meanwhile (it would write outside).
    fn swap_root(&mut self) {
        let spool = self.pick_spool();
        let root = self.roots[spool].clone();
        let away = root.with_extension("away");
        std::fs::rename(&root, &away).unwrap();
        std::os::unix::fs::symlink(&self.outside, &root).unwrap();
        std::thread::sleep(Duration::from_millis(self.rng.gen_range(50..800)));
        std::fs::remove_file(&root).unwrap();
        std::fs::rename(&away, &root).unwrap();
        self.log.push(format!("swap root {spool} for a moment"));
    }

    /// A kept file copied out with `cp -a` and back: new inode, same bytes and mtime.
    fn restore_kept(&mut self) {
        let kept: Vec<(String, usize)> = self
            .live
            .iter()
            .filter(|((s, _), _)| *s == KEEPING)
            .map(|((_, rel), &i)| (rel.clone(), i))
            .collect();
        if kept.is_empty() {
            return self.write_new();
        }
        let (rel, _) = kept[self.rng.gen_range(0..kept.len())].clone();
        let path = self.path(KEEPING, &rel);
        let copy = self.scratch.join("restored");
        let cp = |from: &Path, to: &Path| {
            std::process::Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(to)
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = std::fs::remove_file(&copy);
        if !cp(&path, &copy) {
            return;
        }
        std::fs::remove_file(&path).unwrap();
        assert!(cp(&copy, &path), "cp -a back to {}", path.display());
        self.log.push(format!("restore {KEEPING}/{rel} with cp -a"));
    }
}

/// The keyed hash an encrypted object carries for the source of SHA-256 `sha`, under the
/// daemon's key.
fn source_tag(s: &Setup, sha: &str) -> String {
    use hmac::Mac;
    let key = std::fs::read(s.dir.path().join("state/source-tag.key")).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(sha.as_bytes());
    format!(
        "{}:{}",
        &sha256(&key)[..8],
        hex::encode(mac.finalize().into_bytes())
    )
}

/// The SHA-256 of what each encrypted object (those of the keeping spool) decrypts to,
/// with gpg and the recipient's private key.
fn decrypted(s: &Setup, gpg_home: &Path) -> HashMap<String, String> {
    let dir = s.dir.path().join("decrypted");
    std::fs::create_dir_all(&dir).unwrap();
    let saved = s.bucket.save(&dir, &format!("inbound/{KEEPING}/"));
    if saved.is_empty() {
        return HashMap::new();
    }
    let out = std::process::Command::new("gpg")
        .env("GNUPGHOME", gpg_home)
        .args(["--batch", "--yes", "--quiet", "--decrypt-files"])
        .args(saved.values())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gpg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    saved
        .into_iter()
        .map(|(key, path)| {
            let plain = std::fs::read(path.with_extension("")).unwrap();
            (key, sha256(&plain))
        })
        .collect()
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

#[test]
fn chaos_keeps_the_promise() {
    let seed: u64 = match std::env::var("S3SPOOL_CHAOS_SEED").ok().as_deref() {
        Some("random") => rand::thread_rng().gen(),
        Some(text) => text
            .parse()
            .expect("S3SPOOL_CHAOS_SEED is a number or \"random\""),
        None => 101,
    };
    let secs: u64 = std::env::var("S3SPOOL_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    eprintln!("chaos: seed {seed} ({secs}s); replay with S3SPOOL_CHAOS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let server = shared_server();
    let proxy = FaultProxy::start(server, Mode::Pass);
    let mut o = Options::new(&proxy.endpoint());
    o.settle = "500ms";
    o.key = "{spool}/{path}-{id}";
    o.max_attempts = 10;
    o.spool_extra = "after_upload = \"delete\"".into();
    let s = Setup::new(o, Bucket::create(server));
    s.bucket.enable_versioning();
    let (events, archive) = (s.dir.path().join("events"), s.dir.path().join("archive"));
    let sealed = s.dir.path().join("sealed");
    let gpg_home = tempfile::Builder::new().prefix("gpg").tempdir().unwrap();
    let public = crate::formats::gpg_key(gpg_home.path());
    s.edit_config(|text| {
        format!(
            "{text}\n[spools.events]\npath = \"{}\"\ndestination = \"lake\"\nsettle = \"500ms\"\n\
             key = \"{{spool}}/{{path}}-{{id}}\"\nafter_upload = \"archive\"\narchive_dir = \"{}\"\n\
             deliver_every = \"1m\"\nschedule_timezone = \"UTC\"\n\
             [spools.sealed]\npath = \"{}\"\ndestination = \"lake\"\nsettle = \"500ms\"\n\
             key = \"{{spool}}/{{path}}-{{id}}\"\nafter_upload = \"keep\"\nencrypt_to = \"{}\"\n",
            events.display(),
            archive.display(),
            sealed.display(),
            public.display()
        )
    });
    // The schedules' clock: `events` sends at each minute of it, which the loop moves on.
    let clock_file = s.dir.path().join("clock");
    let base = chrono::DateTime::parse_from_rfc3339(CLOCK_BASE).unwrap();
    let mut minutes = 0i64;
    let set_clock = |at: chrono::DateTime<chrono::FixedOffset>| {
        let tmp = clock_file.with_extension("tmp");
        std::fs::write(&tmp, at.to_rfc3339()).unwrap();
        std::fs::rename(&tmp, &clock_file).unwrap();
    };
    set_clock(base);
    let clock_env = [("S3SPOOL_SCHEDULE_CLOCK", clock_file.to_str().unwrap())];
    let start_daemon = || s.launch(|log| Daemon::start_env(&s.config, log, &clock_env));
    // Bait outside the spools, named like the spooled files: never read, never touched.
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let mut bait = BTreeMap::new();
    for n in 1..400 {
        let bytes = format!("outside bait {n}\n").into_bytes();
        std::fs::write(outside.join(format!("f{n}.csv")), &bytes).unwrap();
        bait.insert(format!("f{n}.csv"), sha256(&bytes));
    }
    let mut roots = BTreeMap::new();
    roots.insert("orders", s.spool.clone());
    roots.insert("events", events.clone());
    roots.insert("sealed", sealed.clone());
    let mut folders = BTreeMap::new();
    for (spool, root) in &roots {
        for f in ["a", "b", "c"] {
            std::fs::create_dir_all(root.join(f)).unwrap();
        }
        folders.insert(
            *spool,
            vec![String::new(), "a".into(), "b".into(), "c".into()],
        );
    }
    let mut producer = Producer {
        rng: StdRng::seed_from_u64(seed ^ 0x5eed),
        seed,
        roots,
        outside: outside.clone(),
        folders,
        versions: Vec::new(),
        live: HashMap::new(),
        counter: 0,
        swaps: 0,
        log: Vec::new(),
        scratch: s.dir.path().to_path_buf(),
    };

    let mut daemon = Some(start_daemon());
    let start = Instant::now();
    let mut next_kill = start + Duration::from_millis(rng.gen_range(3000..8000));
    let mut next_fault = start + Duration::from_millis(rng.gen_range(1000..4000));
    let mut next_operator = start + Duration::from_millis(rng.gen_range(2000..6000));
    let mut next_tick = start + Duration::from_millis(rng.gen_range(1000..4000));
    let (mut kills, mut outages, mut lost_bursts, mut renames, mut jumps) = (0, 0, 0, 0, 0);
    let mut renamed = false;
    while start.elapsed() < Duration::from_secs(secs) {
        producer.act();
        std::thread::sleep(Duration::from_millis(rng.gen_range(10..120)));
        let now = Instant::now();
        if now >= next_fault {
            let mode = match rng.gen_range(0..12) {
                0..=4 => Mode::Pass,
                5..=7 => Mode::Faults { one_in: 4 },
                8..=9 => {
                    lost_bursts += 1;
                    Mode::LoseAnswers {
                        one_in: rng.gen_range(1..4),
                    }
                }
                _ => {
                    outages += 1;
                    Mode::Down
                }
            };
            producer.log.push(format!("proxy {mode:?}"));
            proxy.set_mode(mode);
            // Outages last longer than the retry budget (10 attempts of 100–500 ms).
            next_fault = now + Duration::from_millis(rng.gen_range(2000..9000));
        }
        if now >= next_tick {
            // The next minute of the schedule's clock, or now and then four years ahead,
            // to come back at the next move.
            if rng.gen_ratio(1, 6) {
                jumps += 1;
                producer.log.push("clock jumps 4 years ahead".into());
                let ahead =
                    chrono::Duration::days(4 * 365 + 1) + chrono::Duration::minutes(minutes);
                set_clock(base + ahead);
            } else {
                minutes += 1;
                producer.log.push(format!("clock at minute {minutes}"));
                set_clock(base + chrono::Duration::minutes(minutes));
            }
            next_tick = Instant::now() + Duration::from_millis(rng.gen_range(1000..4000));
        }
        if now >= next_kill {
            let d = daemon.take().unwrap();
            if rng.gen_bool(0.5) {
                d.kill();
                producer.log.push("SIGKILL".into());
            } else {
                // An impatient operator: a stop, and another before the drain is over.
                d.signal_pid(libc::SIGTERM);
                std::thread::sleep(Duration::from_millis(rng.gen_range(50..400)));
                d.signal_pid(libc::SIGTERM);
                let _ = d.wait_exit(Duration::from_secs(60));
                producer.log.push("two SIGTERMs".into());
            }
            kills += 1;
            daemon = Some(start_daemon());
            next_kill = Instant::now() + Duration::from_millis(rng.gen_range(3000..9000));
        }
        if now >= next_operator && rng.gen_ratio(1, 4) {
            // The orders table renamed (and back, next time), then a reload: same folder.
            let (from, to) = if renamed {
                ("[spools.orders_b]", "[spools.orders]")
            } else {
                ("[spools.orders]", "[spools.orders_b]")
            };
            s.edit_config(|c| c.replace(from, to));
            renamed = !renamed;
            renames += 1;
            daemon.as_ref().unwrap().signal_pid(libc::SIGHUP);
            producer
                .log
                .push(format!("operator renames {from} to {to}, SIGHUP"));
            next_operator = Instant::now() + Duration::from_millis(rng.gen_range(2000..6000));
        } else if now >= next_operator {
            let args: &[&str] = if rng.gen_bool(0.5) {
                &["purge", "--done", "--older-than", "0s"]
            } else {
                &["retry", "--failed"]
            };
            let out = s.cli(args);
            assert!(
                out.status.success() || args[0] == "retry",
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            producer.log.push(format!("operator {args:?}"));
            next_operator = Instant::now() + Duration::from_millis(rng.gen_range(2000..6000));
        }
    }

    // Calm: the endpoint works, and a fresh start forgets hold-backs' long probe waits.
    proxy.set_mode(Mode::Pass);
    minutes += 1;
    set_clock(base + chrono::Duration::minutes(minutes));
    assert!(daemon.take().unwrap().stop().success());
    let daemon = start_daemon();
    let last_move = std::cell::Cell::new(Instant::now());
    let minutes = std::cell::Cell::new(minutes);
    let left_alone: Vec<&Version> = producer.versions.iter().filter(|v| !v.touched).collect();
    let diag = |producer: &Producer| -> String {
        let tail = producer.log.len().saturating_sub(60);
        format!(
            "seed {seed}: {} versions, {} left alone, {kills} kills or impatient stops, {outages} outages, \
             {lost_bursts} bursts of lost answers, {renames} renames, {jumps} clock jumps\nlast actions:\n{}",
            producer.versions.len(),
            left_alone.len(),
            producer.log[tail..].join("\n")
        )
    };
    wait_for(
        Duration::from_secs(240),
        "every version left alone delivered",
        || {
            // The batch cadence goes on: a minute of the schedule's clock every 2 s.
            if last_move.get().elapsed() > Duration::from_secs(2) {
                minutes.set(minutes.get() + 1);
                set_clock(base + chrono::Duration::minutes(minutes.get()));
                last_move.set(Instant::now());
            }
            let objects = s.bucket.objects();
            // Encrypted objects by the keyed hash of the source they say they hold
            // (checked with gpg below).
            let shas: std::collections::HashSet<&String> = objects
                .values()
                .map(|o| o.meta_source_tag.as_ref().unwrap_or(&o.sha256))
                .collect();
            s.count("pending") == 0
                && s.count("active") == 0
                && left_alone.iter().all(|v| {
                    let identity = if v.spool == KEEPING {
                        source_tag(&s, &v.sha)
                    } else {
                        v.sha.clone()
                    };
                    shas.contains(&identity)
                })
        },
    );
    // Two rescans more: nothing further may arrive.
    s.wait_past("rescan done", 2);
    assert!(daemon.stop().success(), "{}", diag(&producer));
    // Through every kill, rename and restart: each delivery copies its source, and each
    // source counts its unsettled deliveries right (queue schema 16).
    let db = rusqlite::Connection::open(s.dir.path().join("state/queue.db")).unwrap();
    let disagree: i64 = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM files AS f LEFT JOIN sources AS s ON s.id = f.source_id
                     WHERE s.id IS NULL OR f.id < s.id OR f.id >= s.id + s.deliveries
                        OR f.spool IS NOT s.spool OR f.rel_path IS NOT s.rel_path
                        OR f.path IS NOT s.path OR f.size IS NOT s.size
                        OR f.mtime_ns IS NOT s.mtime_ns OR f.inode IS NOT s.inode
                        OR f.birth_ns IS NOT s.birth_ns
                        OR f.source_finished_at IS NOT s.finished_at
                        OR f.source_outcome IS NOT s.outcome)
                  + (SELECT COUNT(*) FROM sources AS s WHERE unsettled !=
                        (SELECT COUNT(*) FROM files AS f WHERE f.source_id = s.id
                         AND f.state != 'done' AND f.superseded_by IS NULL))",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(disagree, 0, "sources and their deliveries disagree");
    drop(db);

    let objects = s.bucket.objects();
    let rows: serde_json::Value = serde_json::from_slice(
        &s.cli(&["list", "--all", "--oldest", "--limit", "0", "--json"])
            .stdout,
    )
    .unwrap();
    let row_sha: HashMap<String, String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "done")
        .filter_map(|r| {
            Some((
                r["key"].as_str()?.to_string(),
                r["sha256"].as_str()?.to_string(),
            ))
        })
        .collect();
    let written: std::collections::HashSet<&String> =
        producer.versions.iter().map(|v| &v.sha).collect();
    // What each object holds: its bytes, or for an encrypted one what gpg decrypts it to.
    let plain = decrypted(&s, gpg_home.path());
    let content: HashMap<&String, &String> = objects
        .iter()
        .map(|(key, o)| (key, plain.get(key).unwrap_or(&o.sha256)))
        .collect();
    let mut copies: HashMap<&String, Vec<&String>> = HashMap::new();
    for (key, object) in &objects {
        let held = content[key];
        assert!(
            written.contains(held),
            "{key} holds bytes the producer never wrote (from outside a spool?)\n{}",
            diag(&producer)
        );
        copies.entry(held).or_default().push(key);
        if let Some(sha) = row_sha.get(key) {
            assert_eq!(
                sha,
                &object.sha256,
                "{key} differs from its row\n{}",
                diag(&producer)
            );
        }
    }
    for (sha, keys) in &copies {
        // What the daemon and the producer did with that file's name, to tell the race.
        let story = || {
            let name = keys[0].rsplit('/').next().unwrap_or_default();
            let name = name.rsplit_once('-').map_or(name, |(n, _)| n);
            let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains(name)).collect();
            let acts: Vec<&String> = producer
                .log
                .iter()
                .filter(|l| {
                    l.contains(name)
                        || l.starts_with("swap")
                        || l.starts_with("operator")
                        || l == &"SIGKILL"
                })
                .collect();
            format!(
                "daemon log about {name}:\n{}\nproducer:\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n"),
                acts.iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        };
        assert_eq!(
            keys.len(),
            1,
            "version {sha} delivered twice: {keys:?}\n{}\n{}",
            diag(&producer),
            if keys.len() > 1 {
                story()
            } else {
                String::new()
            }
        );
    }
    // Every write the bucket kept: no key holds the same file twice (a retry that sent
    // again what a lost answer had delivered), however its bytes were made.
    for (key, versions) in s.bucket.versions() {
        let mut seen = std::collections::HashSet::new();
        for v in &versions {
            let meta = &v["meta"];
            let what = meta["source-tag"]
                .as_str()
                .or(meta["source-sha256"].as_str())
                .or(meta["sha256"].as_str())
                .or(v["etag"].as_str())
                .unwrap_or_default()
                .to_string();
            assert!(
                seen.insert(what.clone()),
                "{key} was written twice with {what}: {versions:?}\n{}",
                diag(&producer)
            );
        }
    }
    let archived: std::collections::HashSet<String> = files_under(&archive)
        .iter()
        .map(|p| sha256(&std::fs::read(p).unwrap()))
        .collect();
    for v in &left_alone {
        assert!(
            copies.contains_key(&v.sha),
            "{} {} lost\n{}",
            v.spool,
            v.rel,
            diag(&producer)
        );
        let still = producer.path(v.spool, &v.rel);
        if v.spool == KEEPING {
            assert!(
                std::fs::read(&still).is_ok_and(|b| sha256(&b) == v.sha),
                "{} {} was not kept\n{}",
                v.spool,
                v.rel,
                diag(&producer)
            );
            continue;
        }
        assert!(
            std::fs::read(&still).map_or(true, |b| sha256(&b) != v.sha),
            "{} {} delivered but not cleaned up\n{}",
            v.spool,
            v.rel,
            diag(&producer)
        );
        if v.spool == "events" {
            assert!(
                archived.contains(&v.sha),
                "{} not archived\n{}",
                v.rel,
                diag(&producer)
            );
        }
    }
    for (name, sha) in &bait {
        let bytes = std::fs::read(outside.join(name)).expect("outside file still there");
        assert_eq!(&sha256(&bytes), sha, "outside file {name} changed");
    }
    for root in [&s.spool, &events, &sealed] {
        for path in files_under(root) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(".s3spool-finishing-"),
                "a claimed source was left behind: {}\n{}",
                path.display(),
                diag(&producer)
            );
        }
    }
    let open = s.bucket.open_uploads();
    if !open.is_empty() {
        // Each upload left open, with what the queue and the daemon's log say of its key.
        let log = std::fs::read_to_string(s.dir.path().join("daemon.log")).unwrap_or_default();
        let told: Vec<String> = open
            .iter()
            .map(|u| {
                let key = u["key"].as_str().unwrap_or_default();
                let id = u["upload_id"].as_str().unwrap_or_default();
                let held: Vec<String> = rows
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["key"] == key)
                    .map(|r| r.to_string())
                    .collect();
                let name = key.rsplit('/').next().unwrap_or_default();
                let name = name.rsplit_once('-').map_or(name, |(n, _)| n);
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains(name) || l.contains(id))
                    .collect();
                format!(
                    "{key} (upload {id})\nrows: {}\nlog:\n{}",
                    held.join("\n"),
                    lines[lines.len().saturating_sub(60)..].join("\n")
                )
            })
            .collect();
        panic!(
            "multipart uploads left open:\n{}\n{}",
            told.join("\n\n"),
            diag(&producer)
        );
    }
    // s3spool's own audit agrees: every delivered row's object is where and as the queue
    // says, read back, and no object under a spool's prefix is unexplained.
    let audit = s.cli(&["verify", "--all", "--deep", "--unexplained"]);
    assert_eq!(
        audit.status.code(),
        Some(0),
        "verify:\n{}\n{}",
        output_text(&audit),
        diag(&producer)
    );
    eprintln!("chaos: {}", diag(&producer).lines().next().unwrap());
}
