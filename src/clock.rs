//! Wall-clock time in the queue's unit (unix milliseconds). A leaf: imported by everyone,
//! importing nothing of the crate.

/// Wall-clock now in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
