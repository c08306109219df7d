//! The "is it finished?" policy: a file is finished once its size, mtime and inode have not
//! changed for the spool's `settle` period.
//!
//! The quiet period is measured from the later of the file's own mtime and the last time we
//! saw it change, so a backlog found at start-up (old mtimes) is finished at once, while a
//! file being written keeps moving its mtime and waits. A file is only declared finished on
//! a fresh look whose stamp matches the previous one, or whose mtime is already older than
//! `settle`. Time is passed in, so the policy tests without sleeping.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::scan::Seen;

#[derive(Debug)]
struct Candidate {
    seen: Seen,
    /// When the file last changed, as far as we know.
    quiet_since: SystemTime,
    /// The full walk that last saw it.
    walk: u64,
}

/// Files seen but not yet finished, for one spool.
#[derive(Debug)]
pub struct Settler {
    settle: Duration,
    candidates: HashMap<PathBuf, Candidate>,
    /// The full walk under way (or the last one): a candidate it did not see is gone.
    /// Counting walks, rather than keeping what a walk saw, keeps a rescan's memory to
    /// the candidates, however many files the spool holds.
    walk: u64,
}

impl Settler {
    pub fn new(settle: Duration) -> Self {
        Settler {
            settle,
            candidates: HashMap::new(),
            walk: 0,
        }
    }

    /// Records a fresh look at a file. Returns it when it is finished; it is then
    /// forgotten here (the queue owns it from now on).
    pub fn observe(&mut self, seen: Seen, now: SystemTime) -> Option<Seen> {
        // An mtime in the future (clock skew) must not delay the file forever.
        let mtime = seen.mtime.min(now);
        let quiet_since = match self.candidates.get(&seen.path) {
            // Same stamp means same mtime: the quiet period simply goes on.
            Some(known) if known.seen.stamp == seen.stamp => known.quiet_since,
            Some(_) => now,
            None => mtime,
        };
        if now.duration_since(quiet_since).unwrap_or_default() >= self.settle {
            self.candidates.remove(&seen.path);
            return Some(seen);
        }
        let walk = self.walk;
        self.candidates.insert(
            seen.path.clone(),
            Candidate {
                seen,
                quiet_since,
                walk,
            },
        );
        None
    }

    /// Forgets a file that is gone or no longer wanted.
    pub fn forget(&mut self, path: &std::path::Path) {
        self.candidates.remove(path);
    }

    /// When the next candidate may be finished.
    pub fn next_due(&self) -> Option<SystemTime> {
        self.candidates
            .values()
            .map(|c| c.quiet_since + self.settle)
            .min()
    }

    /// The candidates whose quiet period has run out by `now`: look at them again.
    pub fn due(&self, now: SystemTime) -> Vec<PathBuf> {
        self.candidates
            .iter()
            .filter(|(_, c)| c.quiet_since + self.settle <= now)
            .map(|(path, _)| path.clone())
            .collect()
    }

    /// A full walk of the spool begins: what it sees is marked as seen by it.
    pub fn begin_walk(&mut self) {
        self.walk += 1;
    }

    /// The full walk ended: every candidate it did not see is gone, and forgotten.
    pub fn end_walk(&mut self) {
        let walk = self.walk;
        self.candidates.retain(|_, c| c.walk == walk);
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::FileStamp;

    const T0: u64 = 1_800_000_000;

    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0) + Duration::from_secs_f64(secs)
    }

    fn seen(size: u64, mtime: f64) -> Seen {
        Seen {
            path: "/spool/a.csv".into(),
            rel: "a.csv".into(),
            utf8: true,
            stamp: FileStamp {
                size,
                mtime_ns: (mtime * 1e9) as i64,
                inode: 1,
            },
            mtime: at(mtime),
            birth_ns: None,
            seen_at_ms: 0,
        }
    }

    #[test]
    fn an_old_file_is_finished_at_first_sight() {
        let mut s = Settler::new(Duration::from_secs(5));
        assert!(s.observe(seen(10, 0.0), at(60.0)).is_some());
        assert!(s.is_empty());
    }

    #[test]
    fn a_full_walk_forgets_the_candidates_it_did_not_see() {
        let mut s = Settler::new(Duration::from_secs(5));
        let mut other = seen(10, 0.0);
        other.path = "/spool/b.csv".into();
        assert!(s.observe(seen(10, 0.0), at(1.0)).is_none());
        assert!(s.observe(other.clone(), at(1.0)).is_none());
        s.begin_walk();
        // The walk sees a.csv only: b.csv is gone.
        assert!(s.observe(seen(10, 0.0), at(2.0)).is_none());
        s.end_walk();
        assert_eq!(s.due(at(9.0)), [PathBuf::from("/spool/a.csv")]);
        // A walk that saw nothing leaves nothing.
        s.begin_walk();
        s.end_walk();
        assert!(s.is_empty());
    }

    #[test]
    fn a_fresh_file_waits_for_the_quiet_period() {
        let mut s = Settler::new(Duration::from_secs(5));
        assert!(s.observe(seen(10, 0.0), at(1.0)).is_none());
        assert_eq!(s.next_due(), Some(at(5.0)));
        assert!(s.due(at(4.9)).is_empty());
        assert_eq!(s.due(at(5.0)).len(), 1);
        assert!(s.observe(seen(10, 0.0), at(5.0)).is_some());
    }

    #[test]
    fn a_file_still_being_written_keeps_waiting() {
        let mut s = Settler::new(Duration::from_secs(5));
        assert!(s.observe(seen(10, 0.0), at(0.5)).is_none());
        // It grew at 4s: the quiet period starts again.
        assert!(s.observe(seen(20, 4.0), at(5.0)).is_none());
        assert_eq!(s.next_due(), Some(at(10.0)));
        assert!(s.observe(seen(20, 4.0), at(9.0)).is_none());
        assert!(s.observe(seen(20, 4.0), at(10.0)).is_some());
    }

    #[test]
    fn a_change_that_keeps_the_old_mtime_still_restarts_the_wait() {
        // e.g. `cp -p` or a writer that sets mtime itself: size changed, mtime did not.
        let mut s = Settler::new(Duration::from_secs(5));
        assert!(s.observe(seen(10, 0.0), at(1.0)).is_none());
        assert!(s.observe(seen(30, 0.0), at(5.5)).is_none());
        assert_eq!(s.next_due(), Some(at(10.5)));
    }

    #[test]
    fn an_mtime_in_the_future_does_not_block_forever() {
        let mut s = Settler::new(Duration::from_secs(5));
        assert!(s.observe(seen(10, 3600.0), at(0.0)).is_none());
        assert!(s.observe(seen(10, 3600.0), at(5.0)).is_some());
    }
}
