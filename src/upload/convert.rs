//! The conversion step of a delivery: the source into its work file, on a blocking thread,
//! at most one per core. Bad input fails the file with `path:line: reason`; a source that
//! changed meanwhile is `Changed`; a full or failing disk is transient.

use std::fs::File;
use std::io;
use std::sync::Arc;

use super::deliver::Outcome;
use super::error::TransferError;
use super::Uploader;
use crate::queue::{FileRow, FileStamp};
use crate::transcode::{self, work_path, ConvertError, Output};

impl Uploader {
    /// Converts the source into the row's work file. The source must not change while it
    /// is read: a changed source is `Changed`, so no object is made of a mix of versions.
    /// Input the format cannot take fails the row with `path:line: reason`.
    pub(super) async fn convert(
        &self,
        row: &FileRow,
        output: &Output,
        source: &Arc<File>,
        before: FileStamp,
    ) -> Result<(Arc<File>, FileStamp, Option<u64>), Outcome> {
        let source = Arc::clone(source);
        let out = work_path(&self.config.state_dir, row.id, row.claim);
        let output = output.clone();
        // Conversions are CPU work, each holding up to a row group: at most one per core.
        let _slot = self.converting.acquire().await;
        let converted = tokio::task::spawn_blocking(move || {
            let result = transcode::convert(&output, &source, &out);
            // Asked even when conversion failed: a bad row in a file still being written
            // is a change, not bad input.
            let now = FileStamp::of(&source.metadata()?);
            Ok::<_, io::Error>((result, now))
        })
        .await;
        let path = row.path.display();
        let converted = match converted {
            Ok(converted) => converted,
            // A bug, and the same input would hit it again: fail the file rather than
            // retry forever.
            Err(join) if join.is_panic() => {
                return Err(Outcome::Failed(TransferError::Refused(format!(
                    "converting {path} crashed (a bug in s3spool: please report it)"
                ))))
            }
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        };
        let cannot = |e: io::Error, passing| {
            Outcome::Failed(TransferError::Source {
                message: format!("cannot convert {path}: {e}"),
                passing,
            })
        };
        match converted {
            Err(e) => Err(cannot(e, true)),
            Ok((_, now)) if now != before => Err(Outcome::Changed { stamp: now }),
            Ok((Ok(converted), _)) => {
                let stamp = converted
                    .file
                    .metadata()
                    .map(|m| FileStamp::of(&m))
                    .map_err(|e| cannot(e, true))?;
                Ok((Arc::new(converted.file), stamp, converted.rows))
            }
            Ok((Err(ConvertError::BadInput { line, reason }), _)) => Err(Outcome::Failed(
                TransferError::Refused(format!("{path}:{line}: {reason}")),
            )),
            // A full or failing disk under state_dir passes; a file that cannot be read
            // will not.
            Ok((Err(ConvertError::Io(e)), _))
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EIO) | Some(libc::EDQUOT)
                ) =>
            {
                Err(cannot(e, true))
            }
            Ok((Err(ConvertError::Io(e)), _)) => Err(cannot(e, false)),
        }
    }
}
