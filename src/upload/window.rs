//! Whether a file's delivery window is open while it is sent: a multipart upload stops
//! between parts when its spool's windows close (the dispatcher decides when it starts).

use crate::schedule;

/// Whether the windows a file's spool sends within are all open: a multipart upload
/// stops between parts when they close, unless the file was rushed.
pub struct WindowCheck<'a> {
    windows: Vec<&'a schedule::Windows>,
    rushed: bool,
}

impl<'a> WindowCheck<'a> {
    pub fn new(windows: Vec<&'a schedule::Windows>, rushed: bool) -> WindowCheck<'a> {
        WindowCheck { windows, rushed }
    }

    /// Never closes.
    pub fn always() -> WindowCheck<'static> {
        WindowCheck {
            windows: Vec::new(),
            rushed: false,
        }
    }

    pub fn closed(&self) -> bool {
        if self.rushed || self.windows.is_empty() {
            return false;
        }
        let now = crate::clock::schedule_now();
        !self.windows.iter().all(|w| w.is_open(now))
    }
}
