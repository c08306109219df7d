//! Back-pressure: when to stop taking new work. Files then stay in their spools (and
//! queued), safe, and work resumes by itself once the cause is gone:
//!
//! - `state_dir` is low on space (below `min_free_space`): no file is claimed, so nothing
//!   is converted into `state_dir/work` and the queue keeps room to record outcomes.
//! - A destination fails for every file (the bucket is gone, access is denied, the key
//!   is wrong, or it does not answer at all: refused or reset connections, DNS, TLS,
//!   timeouts, twice in a row with no success between): its files are not claimed. After a wait (5s, doubling to 5 min) one file
//!   probes it; its first success opens it again. The files are not failed: it is the
//!   destination's fault, not theirs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
// tokio's, so tests on a paused clock move it (in production it is the monotonic clock).
use tokio::time::Instant;

const FIRST_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT: Duration = Duration::from_secs(300);
/// A destination that delivered a file this recently works: an error like AccessDenied
/// is then about the file (its key), not the destination.
const RECENT_SUCCESS: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Destination {
    blocked: Option<Blocked>,
    last_success: Option<Instant>,
    /// Files that got no answer at all since the last success.
    no_answer_in_row: u32,
}

/// Files that must get no answer in a row (with no success between) before the
/// destination counts as unreachable: one lost connection is a blip, two in a row with
/// nothing getting through is an outage.
const UNREACHABLE_AFTER: u32 = 2;

/// Why a file failed in a way that may be its destination's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Always the destination's: every file would get it (NoSuchBucket, a bad key).
    Destination,
    /// AccessDenied: a policy may deny one key only, so it is the destination's only if
    /// nothing was delivered there lately.
    MaybeKey,
    /// No answer at all: the connection was refused or reset, DNS or TLS failed.
    NoAnswer,
    /// No answer in time: like [`Cause::NoAnswer`] for the destination, but a slow link
    /// may time out one big request while others go through, so for the file it counts.
    TimedOut,
}

impl Cause {
    /// No answer at all, or none in time.
    pub fn is_silence(self) -> bool {
        matches!(self, Cause::NoAnswer | Cause::TimedOut)
    }
}

#[derive(Debug)]
struct Blocked {
    reason: String,
    retry_at: Instant,
    wait: Duration,
    /// A probe file is out.
    probing: bool,
    /// Since when: a probe that never reported (its task was cut off) stops counting.
    probe_since: Instant,
}

/// A probe unheard of for this long is taken as lost.
const PROBE_DEADLINE: Duration = Duration::from_secs(600);

/// What to claim from, this turn.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Destinations working as usual.
    pub open: Vec<String>,
    /// Blocked destinations due for one probe file each.
    pub probes: Vec<String>,
}

/// How a destination-wide error is taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The destination is blocked (newly, or again after a probe): requeue the file
    /// untouched for after `wait`. `probe`: the file was the probe of a blocked
    /// destination.
    Blocked {
        wait: Duration,
        newly: bool,
        probe: bool,
    },
    /// The destination works for other files: the error may be this file's. It is
    /// retried like a transient error (counting attempts), never failed at once.
    FileOnly,
}

/// The back-pressure state, shared by the dispatcher and the delivery tasks.
#[derive(Debug, Default)]
pub struct Pressure {
    destinations: Mutex<HashMap<String, Destination>>,
    disk_low: Mutex<Option<String>>,
}

impl Pressure {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Destination>> {
        self.destinations.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Splits `names` into open destinations and blocked ones due for a probe (which are
    /// then marked as probing until their probe ends).
    pub fn plan(&self, names: &[String], now: Instant) -> Plan {
        let mut all = self.lock();
        let mut plan = Plan::default();
        for name in names {
            match all.get_mut(name).and_then(|d| d.blocked.as_mut()) {
                None => plan.open.push(name.clone()),
                Some(b)
                    if b.retry_at <= now
                        && (!b.probing || b.probe_since + PROBE_DEADLINE <= now) =>
                {
                    b.probing = true;
                    b.probe_since = now;
                    plan.probes.push(name.clone());
                }
                Some(_) => {}
            }
        }
        plan
    }

    /// The destinations open now, without starting probes (for the idle wait).
    pub fn plan_peek(&self, names: &[String], now: Instant) -> Vec<String> {
        let all = self.lock();
        names
            .iter()
            .filter(|n| {
                all.get(*n)
                    .and_then(|d| d.blocked.as_ref())
                    .is_none_or(|b| {
                        b.retry_at <= now && (!b.probing || b.probe_since + PROBE_DEADLINE <= now)
                    })
            })
            .cloned()
            .collect()
    }

    /// A probe found nothing to send: the destination may be probed again next turn.
    pub fn probe_unused(&self, name: &str) {
        if let Some(b) = self.lock().get_mut(name).and_then(|d| d.blocked.as_mut()) {
            b.probing = false;
        }
    }

    /// A file reached `name`. Returns the reason it was blocked, if this unblocked it.
    pub fn succeeded(&self, name: &str, now: Instant) -> Option<String> {
        let mut all = self.lock();
        let d = all.entry(name.to_string()).or_default();
        d.last_success = Some(now);
        d.no_answer_in_row = 0;
        d.blocked.take().map(|b| b.reason)
    }

    /// Forgets every block (on a reload: the new config may have fixed the cause; the
    /// first failure blocks again).
    pub fn reset(&self) {
        self.lock().clear();
    }

    /// A file failed at `name` with an error that may be the destination's, for `cause`.
    pub fn failed(&self, name: &str, reason: &str, cause: Cause, now: Instant) -> Verdict {
        let mut all = self.lock();
        let d = all.entry(name.to_string()).or_default();
        if cause.is_silence() {
            d.no_answer_in_row = d.no_answer_in_row.saturating_add(1);
        }
        let file_only = match cause {
            Cause::Destination => false,
            Cause::MaybeKey => d
                .last_success
                .is_some_and(|at| now.duration_since(at) < RECENT_SUCCESS),
            Cause::NoAnswer | Cause::TimedOut => d.no_answer_in_row < UNREACHABLE_AFTER,
        };
        match &mut d.blocked {
            Some(b) => {
                // A probe (or a file in flight when it blocked) failed again: wait longer.
                let probe = b.probing;
                if b.probing {
                    b.wait = (b.wait * 2).min(MAX_WAIT);
                    b.probing = false;
                }
                b.retry_at = now + b.wait;
                b.reason = reason.to_string();
                Verdict::Blocked {
                    wait: b.wait,
                    newly: false,
                    probe,
                }
            }
            None if file_only => Verdict::FileOnly,
            None => {
                d.blocked = Some(Blocked {
                    reason: reason.to_string(),
                    retry_at: now + FIRST_WAIT,
                    wait: FIRST_WAIT,
                    probing: false,
                    probe_since: now,
                });
                Verdict::Blocked {
                    wait: FIRST_WAIT,
                    newly: true,
                    probe: false,
                }
            }
        }
    }

    #[cfg(test)]
    /// Destinations blocked now, with their reasons.
    pub fn blocked(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(name, d)| Some((name.clone(), d.blocked.as_ref()?.reason.clone())))
            .collect()
    }

    /// Looks at the free space under `dir`. Returns the new state when it changed:
    /// `Some(Some(reason))` when it became low, `Some(None)` when it recovered.
    pub fn check_disk(&self, dir: &Path, min_free: u64) -> Option<Option<String>> {
        let low = match free_space(dir) {
            Ok(free) if free < min_free => Some(format!(
                "state_dir {} has {} free, below min_free_space {}",
                dir.display(),
                crate::units::format_size(free),
                crate::units::format_size(min_free)
            )),
            Ok(_) => None,
            // Unknown: do not stop work for it.
            Err(_) => None,
        };
        let mut current = self.disk_low.lock().unwrap_or_else(|p| p.into_inner());
        if current.is_some() == low.is_some() {
            if low.is_some() {
                *current = low;
            }
            return None;
        }
        *current = low.clone();
        Some(low)
    }

    pub fn disk_low(&self) -> bool {
        self.disk_low
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

/// Bytes available to this (unprivileged) process on the file system holding `dir`.
pub(crate) fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_destination_is_blocked_probed_with_backoff_and_reopened() {
        let p = Pressure::default();
        let names = vec!["lake".to_string(), "sea".to_string()];
        let t0 = Instant::now();
        assert_eq!(p.plan(&names, t0).open, names);
        assert_eq!(
            p.failed("lake", "NoSuchBucket", Cause::Destination, t0),
            Verdict::Blocked {
                wait: FIRST_WAIT,
                newly: true,
                probe: false
            }
        );
        let plan = p.plan(&names, t0 + Duration::from_secs(1));
        assert_eq!((plan.open, plan.probes), (vec!["sea".to_string()], vec![]));
        let probe_time = t0 + FIRST_WAIT;
        assert_eq!(p.plan(&names, probe_time).probes, ["lake"]);
        assert!(
            p.plan(&names, probe_time).probes.is_empty(),
            "one probe at a time"
        );
        assert_eq!(
            p.failed("lake", "NoSuchBucket", Cause::Destination, probe_time),
            Verdict::Blocked {
                wait: FIRST_WAIT * 2,
                newly: false,
                probe: true
            },
            "a failed probe doubles the wait"
        );
        assert!(p.plan(&names, probe_time + FIRST_WAIT).probes.is_empty());
        assert_eq!(p.plan(&names, probe_time + FIRST_WAIT * 2).probes, ["lake"]);
        assert_eq!(
            p.succeeded("lake", probe_time + FIRST_WAIT * 2).as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(p.plan(&names, probe_time).open, names);
        assert!(p.blocked().is_empty());
        // Working a moment ago: an AccessDenied now may be about this file's key...
        let later = probe_time + FIRST_WAIT * 3;
        assert_eq!(
            p.failed("lake", "AccessDenied", Cause::MaybeKey, later),
            Verdict::FileOnly
        );
        // ...but a missing bucket is everyone's.
        assert!(matches!(
            p.failed("lake", "NoSuchBucket", Cause::Destination, later),
            Verdict::Blocked { newly: true, .. }
        ));
        // A probe whose task was cut off is taken as lost after a while.
        let t = later + FIRST_WAIT;
        assert_eq!(p.plan(&names, t).probes, ["lake"]);
        assert!(p.plan(&names, t + Duration::from_secs(1)).probes.is_empty());
        assert_eq!(p.plan(&names, t + PROBE_DEADLINE).probes, ["lake"]);
        p.reset();
        assert_eq!(p.plan(&names, t).open, names);
    }

    #[test]
    fn a_destination_that_answers_nothing_twice_in_a_row_is_blocked() {
        let p = Pressure::default();
        let t0 = Instant::now();
        let no_answer = |t| p.failed("lake", "ConnectionFailed", Cause::NoAnswer, t);
        // One lost connection is a blip: the file retries on its own.
        assert_eq!(no_answer(t0), Verdict::FileOnly);
        // A success between two blips: still blips.
        p.succeeded("lake", t0);
        assert_eq!(no_answer(t0), Verdict::FileOnly);
        // Twice in a row with nothing getting through: an outage, files wait.
        assert!(matches!(
            no_answer(t0),
            Verdict::Blocked { newly: true, .. }
        ));
        assert!(matches!(
            no_answer(t0),
            Verdict::Blocked { newly: false, .. }
        ));
        p.succeeded("lake", t0 + FIRST_WAIT);
        assert!(p.blocked().is_empty());
        assert_eq!(no_answer(t0 + FIRST_WAIT), Verdict::FileOnly);
    }

    #[test]
    fn disk_changes_are_reported_once() {
        let p = Pressure::default();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            p.check_disk(dir.path(), 1),
            None,
            "plenty of space: no change"
        );
        let low = p.check_disk(dir.path(), u64::MAX).unwrap().unwrap();
        assert!(low.contains("below min_free_space"), "{low}");
        assert!(p.disk_low());
        assert_eq!(
            p.check_disk(dir.path(), u64::MAX),
            None,
            "still low: no change"
        );
        assert_eq!(p.check_disk(dir.path(), 1), Some(None), "recovered");
        assert!(!p.disk_low());
    }
}
