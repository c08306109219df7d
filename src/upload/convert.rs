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

/// A work file ready to send: the file, its stamp, its data rows (a table), and the
/// source's SHA-256.
pub(super) type Converted = (Arc<File>, FileStamp, Option<u64>, Option<String>);

/// The hex SHA-256 of the first `len` bytes of `file`, read on this (blocking) thread.
fn sha256_of(file: &File, len: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::FileExt;
    let mut sha256 = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset)?;
        sha256.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex::encode(sha256.finalize()))
}

impl Uploader {
    /// Converts the source into the row's work file; returns it with its stamp, its data
    /// rows (for a table) and the source's SHA-256 (what the object is recognised by: the
    /// work file's own bytes may differ at every attempt). The source must not change
    /// while it is read: a changed source is `Changed`, so no object is made of a mix of
    /// versions. Input the format cannot take fails the row with `path:line: reason`.
    pub(super) async fn convert(
        &self,
        row: &FileRow,
        output: &Output,
        source: &Arc<File>,
        before: FileStamp,
    ) -> Result<Converted, Outcome> {
        let source = Arc::clone(source);
        let out = work_path(&self.state_dir, row.id, row.claim);
        let output = output.clone();
        // Conversions are CPU work, each holding up to a row group: at most one per core.
        let _slot = self.converting.acquire().await;
        let converted = tokio::task::spawn_blocking(move || {
            let source_sha256 = sha256_of(&source, before.size)?;
            let result = transcode::convert(&output, &source, &out).map(|c| (c, source_sha256));
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
            Ok((Ok((converted, source_sha256)), _)) => {
                let stamp = converted
                    .file
                    .metadata()
                    .map(|m| FileStamp::of(&m))
                    .map_err(|e| cannot(e, true))?;
                Ok((
                    Arc::new(converted.file),
                    stamp,
                    converted.rows,
                    Some(source_sha256),
                ))
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
