//! The manifest's JSON: what one batch delivered. Built only from the queue's rows, so the
//! same batch always gives the same bytes (a rewrite after a crash changes nothing).
//!
//! Field names follow Adobe's delivery manifests where they overlap: `batch` plays the part
//! of `flowRunId`, `closed_at` of `scheduledTime`, and each file's `sink_path`, `name` and
//! `size` are theirs.

use serde::Serialize;

use crate::queue::{Batch, FileRow};

#[derive(Serialize)]
struct Manifest<'a> {
    batch: &'a str,
    spool: &'a str,
    destination: &'a str,
    bucket: &'a str,
    host: &'a str,
    opened_at: String,
    closed_at: String,
    files: Vec<Entry<'a>>,
    totals: Totals,
}

#[derive(Serialize)]
struct Entry<'a> {
    sink_path: String,
    name: &'a str,
    size: u64,
    sha256: &'a str,
    format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    source_path: String,
    source_mtime: String,
}

#[derive(Serialize)]
struct Totals {
    files: u64,
    bytes: u64,
    rows: u64,
}

fn time_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp(
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
    .unwrap_or_default()
    .format("%Y-%m-%dT%H:%M:%S%.9fZ")
    .to_string()
}

/// The manifest of `batch`, listing `files` (its delivered rows).
pub fn render(batch: &Batch, files: &[FileRow]) -> Vec<u8> {
    let entries: Vec<Entry<'_>> = files
        .iter()
        .map(|f| {
            let key = f.key.as_deref().unwrap_or_default();
            Entry {
                sink_path: format!("s3://{}/{key}", f.bucket),
                name: key.rsplit('/').next().unwrap_or(key),
                size: f.object_size.unwrap_or(f.stamp.size),
                sha256: f.sha256.as_deref().unwrap_or_default(),
                format: f.format.as_deref().unwrap_or("raw"),
                rows: f.rows,
                source_path: f.path.display().to_string(),
                source_mtime: time_ns(f.stamp.mtime_ns),
            }
        })
        .collect();
    let totals = Totals {
        files: entries.len() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
        rows: entries.iter().filter_map(|e| e.rows).sum(),
    };
    let manifest = Manifest {
        batch: &batch.name,
        spool: &batch.spool,
        destination: &batch.destination,
        bucket: &batch.bucket,
        host: &batch.host,
        opened_at: time_ms(batch.opened_at),
        closed_at: time_ms(batch.closed_at.unwrap_or(batch.opened_at)),
        files: entries,
        totals,
    };
    let mut out = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
    out.push(b'\n');
    out
}
