//! Why a delivery attempt did not deliver, typed: what S3 said ([`StoreError`]) is one
//! cause among the others of a transfer (the file to send, the queue, the claim), and
//! control flow looks at the variant, never at a code string.

use std::fmt;

use crate::pressure::Cause;
use crate::queue::{Failure, QueueError};
use crate::s3::{ErrorClass, StoreError};

/// A failed delivery attempt.
#[derive(Debug)]
pub enum TransferError {
    /// S3 refused the request, or gave no answer.
    Store(StoreError),
    /// The file to send (the source or its work file) cannot be opened or read.
    Source {
        /// What could not be done, naming the file where known.
        message: String,
        /// Trying again may work: the file shrank under a read, the host is out of
        /// descriptors or memory, the disk is full or failing.
        passing: bool,
    },
    /// The source is not at its path (deleted, moved, or its way runs through a symlink
    /// now): the row fails as vanished, and the file found again in the spool takes it.
    Vanished(String),
    /// The source changed while it was read; a multipart upload of it was aborted.
    SourceChanged,
    /// The row is no longer this worker's (its lease ran out): touch nothing.
    ClaimLost,
    /// The queue could not record progress.
    Queue(QueueError),
    /// S3 confirmed other bytes than the ones sent.
    ETagMismatch {
        operation: &'static str,
        stored: String,
        sent: String,
    },
    /// The spool's delivery window closed between two parts of a multipart upload: the
    /// parts sent are kept, and the upload goes on when the window opens.
    OutsideWindow,
    /// The file cannot be delivered as it is, whatever is tried: bad input for its
    /// format, too large for S3, its spool or destination gone from the config.
    Refused(String),
    /// The spool's folder was replaced (its path names another folder): nothing of it is
    /// touched until it is back or the config is fixed and reloaded.
    SpoolStopped(crate::beneath::RootMoved),
}

impl TransferError {
    /// A file that cannot be read. A short read means it shrank under us: the next
    /// attempt sees the change.
    pub fn read(e: std::io::Error) -> TransferError {
        TransferError::Source {
            passing: e.kind() == std::io::ErrorKind::UnexpectedEof,
            message: format!("ReadSource failed: SourceUnreadable: {e}"),
        }
    }

    /// Whether trying again can help.
    pub fn class(&self) -> ErrorClass {
        match self {
            TransferError::Store(e) => e.class,
            TransferError::Source { passing: true, .. } => ErrorClass::Transient,
            TransferError::Source { passing: false, .. } => ErrorClass::Permanent,
            TransferError::SourceChanged
            | TransferError::Queue(_)
            | TransferError::ETagMismatch { .. }
            | TransferError::OutsideWindow
            | TransferError::SpoolStopped(_) => ErrorClass::Transient,
            TransferError::ClaimLost | TransferError::Refused(_) | TransferError::Vanished(_) => {
                ErrorClass::Permanent
            }
        }
    }

    /// Why the row fails if this error fails it for good.
    pub fn failure(&self) -> Failure {
        match self {
            TransferError::Vanished(_) => Failure::Vanished,
            _ => Failure::Refused,
        }
    }

    /// Set when the failure may be the destination's rather than the file's: then the
    /// destination's files are held back instead of failing one by one.
    pub fn hold_cause(&self) -> Option<Cause> {
        let TransferError::Store(e) = self else {
            return None;
        };
        if e.class == ErrorClass::Permanent && e.is_destination_wide() {
            Some(if e.is_access_denied() {
                Cause::MaybeKey
            } else {
                Cause::Destination
            })
        } else if e.is_no_answer() {
            Some(if e.is_timeout() {
                Cause::TimedOut
            } else {
                Cause::NoAnswer
            })
        } else {
            None
        }
    }
}

/// Worded as before the errors were typed (`OPERATION failed: CODE: message`): these texts
/// are in queues and logs operators already search.
impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::Store(e) => e.fmt(f),
            TransferError::Source { message, .. }
            | TransferError::Refused(message)
            | TransferError::Vanished(message) => f.write_str(message),
            TransferError::SourceChanged => f.write_str(
                "CompleteMultipartUpload failed: SourceChanged: the source changed during the upload; the upload was aborted",
            ),
            TransferError::ClaimLost => f.write_str(
                "RecordProgress failed: ClaimLost: the queue row is no longer held by this worker",
            ),
            TransferError::Queue(e) => write!(f, "RecordProgress failed: QueueError: {e}"),
            TransferError::SpoolStopped(moved) => write!(
                f,
                "ReadSource paused: SpoolStopped: the spool folder {moved}; nothing is read until it is back"
            ),
            TransferError::OutsideWindow => f.write_str(
                "UploadPart paused: OutsideWindow: the spool's delivery window closed; the upload goes on when it opens",
            ),
            TransferError::ETagMismatch {
                operation,
                stored,
                sent,
            } => write!(
                f,
                "{operation} failed: ETagMismatch: S3 stored ETag {stored} but the data sent has {sent}"
            ),
        }
    }
}

impl std::error::Error for TransferError {}

impl From<StoreError> for TransferError {
    fn from(e: StoreError) -> Self {
        TransferError::Store(e)
    }
}

impl From<QueueError> for TransferError {
    fn from(e: QueueError) -> Self {
        TransferError::Queue(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> TransferError {
        StoreError::from_response("PutObject", status, Some(code.into()), String::new()).into()
    }

    #[test]
    fn destination_wide_errors_hold_back_and_others_do_not() {
        assert_eq!(
            answer(403, "AccessDenied").hold_cause(),
            Some(Cause::MaybeKey)
        );
        assert_eq!(
            answer(404, "NoSuchBucket").hold_cause(),
            Some(Cause::Destination)
        );
        assert_eq!(answer(503, "SlowDown").hold_cause(), None);
        assert_eq!(answer(400, "KeyTooLongError").hold_cause(), None);
        let refused = StoreError::transport("PutObject", "ConnectionFailed", "refused".into());
        assert_eq!(
            TransferError::from(refused).hold_cause(),
            Some(Cause::NoAnswer)
        );
        let slow = StoreError::transport("PutObject", "Timeout", "no answer".into());
        assert_eq!(
            TransferError::from(slow).hold_cause(),
            Some(Cause::TimedOut)
        );
        assert_eq!(TransferError::SourceChanged.hold_cause(), None);
    }

    #[test]
    fn classes() {
        let short = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(TransferError::read(short).class(), ErrorClass::Transient);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(TransferError::read(denied).class(), ErrorClass::Permanent);
        assert_eq!(TransferError::ClaimLost.class(), ErrorClass::Permanent);
        assert_eq!(answer(500, "InternalError").class(), ErrorClass::Transient);
        let mismatch = TransferError::ETagMismatch {
            operation: "PutObject",
            stored: "a".into(),
            sent: "b".into(),
        };
        assert_eq!(mismatch.class(), ErrorClass::Transient);
        assert_eq!(
            mismatch.to_string(),
            "PutObject failed: ETagMismatch: S3 stored ETag a but the data sent has b"
        );
    }
}
