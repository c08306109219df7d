//! `s3spool retry ID…` / `s3spool retry --failed`: make files due again.

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["ids", "failed"]))]
pub struct Args {
    /// Queue ids to retry.
    ids: Vec<i64>,
    /// Retry every failed file.
    #[arg(long, conflicts_with = "ids")]
    failed: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let mut queue = super::open_queue(config)?;
    let now = crate::clock::now_ms();
    let reset = if args.failed {
        queue.retry_failed(now)?
    } else {
        queue.retry(Some(&args.ids), now)?
    };
    println!("{} file(s) queued again{}", reset.len(), list(&reset));
    let skipped: Vec<i64> = args
        .ids
        .iter()
        .copied()
        .filter(|id| !reset.contains(id))
        .collect();
    for id in &skipped {
        let why = match queue.get(*id)? {
            None => "no such row".to_string(),
            Some(row) if row.key.is_none() => {
                "it has no object key (see `s3spool show`); rename the file instead".into()
            }
            Some(row) if row.superseded_by.is_some() => format!(
                "a newer file at its path is row {}",
                row.superseded_by.unwrap_or_default()
            ),
            Some(row) => format!("it is {}", row.state.as_str()),
        };
        eprintln!("s3spool: row {id} not retried: {why}");
    }
    Ok(if skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn list(ids: &[i64]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown: Vec<String> = ids.iter().take(20).map(i64::to_string).collect();
    let more = if ids.len() > 20 { ", …" } else { "" };
    format!(": {}{more}", shown.join(", "))
}
