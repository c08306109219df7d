//! Wall-clock time in the queue's unit (unix milliseconds). A leaf: imported by everyone,
//! importing nothing of the crate.
//!
//! In unit tests the time follows tokio's clock, so a test on a paused clock
//! (`#[tokio::test(start_paused = true)]`) moves the queue's "now" together with its
//! timers: a backoff of minutes passes at once, and nothing waits on real time.

/// Wall-clock now in unix milliseconds.
pub fn now_ms() -> i64 {
    #[cfg(not(test))]
    {
        chrono::Utc::now().timestamp_millis()
    }
    #[cfg(test)]
    {
        test_time::now_ms()
    }
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
