//! Every "now" of the crate: the wall clock (the queue's unix milliseconds, the same
//! instant as a date, or as a `SystemTime` to compare with file times) and the schedule
//! clock that windows, cadences and timed limits are read at. A leaf: imported by
//! everyone, importing nothing of the crate. Outside this file no production code reads
//! the system's time (the architecture test greps for it); tokio's monotonic `Instant`
//! (timers, leases of a task) and rusoto's request signing keep their own.
//!
//! In unit tests the wall clock follows tokio's clock, so a test on a paused clock
//! (`#[tokio::test(start_paused = true)]`) moves the queue's "now" together with its
//! timers: a backoff of minutes passes at once, and nothing waits on real time.

use std::time::SystemTime;

use chrono::{DateTime, Utc};

/// Wall-clock now in unix milliseconds.
pub fn now_ms() -> i64 {
    #[cfg(not(test))]
    {
        Utc::now().timestamp_millis()
    }
    #[cfg(test)]
    {
        test_time::now_ms()
    }
}

/// Wall-clock now as a date (a key's `{time}`, a log line's time, an expiry compared).
pub fn now() -> DateTime<Utc> {
    #[cfg(not(test))]
    {
        Utc::now()
    }
    #[cfg(test)]
    {
        DateTime::from_timestamp_millis(test_time::now_ms()).unwrap_or_default()
    }
}

/// Wall-clock now as a `SystemTime`, the unit of a file's mtime (how long a file has
/// been still). Real time in unit tests too: the kernel writes the mtimes it is
/// compared with.
pub fn now_system() -> SystemTime {
    SystemTime::now()
}

/// The time schedules are read at: the wall clock. A test of the daemon may set
/// `S3SPOOL_SCHEDULE_CLOCK` to a file holding an RFC 3339 time, re-read at every look, so
/// it can move the schedules' clock through a day without waiting for one. Nothing else
/// follows that file: leases, backoffs, the queue's times and request signing keep the
/// wall clock.
pub fn schedule_now() -> DateTime<Utc> {
    static FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let file = FILE.get_or_init(|| std::env::var_os("S3SPOOL_SCHEDULE_CLOCK").map(Into::into));
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        match DateTime::parse_from_rfc3339(text.trim()) {
            Ok(at) => return at.with_timezone(&Utc),
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "S3SPOOL_SCHEDULE_CLOCK: cannot read a time there; using the real clock"),
        }
    }
    now()
}

#[cfg(test)]
mod test_time {
    use std::sync::OnceLock;

    /// The wall clock and tokio's clock, read together once.
    static START: OnceLock<(i64, std::time::Instant)> = OnceLock::new();

    pub fn now_ms() -> i64 {
        let (wall, at) = *START.get_or_init(|| {
            (
                chrono::Utc::now().timestamp_millis(),
                std::time::Instant::now(),
            )
        });
        // Outside a runtime, or on one that is not paused, this is the real time.
        let now = tokio::time::Instant::now().into_std();
        wall + now.saturating_duration_since(at).as_millis() as i64
    }
}
