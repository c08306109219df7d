//! `s3spool show ID`: everything the queue knows about one file.

use std::process::ExitCode;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The queue id (see `s3spool list`).
    id: i64,
    /// Print a JSON object.
    #[arg(long)]
    pub(super) json: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let queue = super::open_queue_read_only(config)?;
    let Some(row) = queue.get(args.id)? else {
        anyhow::bail!("no queue row with id {}", args.id);
    };
    let history = queue.attempts_of(row.id)?;
    if args.json {
        let progress = queue.progress(&row)?;
        let mut value = serde_json::to_value(&row)?;
        value["parts_done"] = progress.map(|p| p.0).into();
        value["parts_total"] = progress.map(|p| p.1).into();
        value["history"] = serde_json::to_value(&history)?;
        super::print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let fmt = super::format_ms;
    println!("id            {}", row.id);
    println!("state         {}", row.state.as_str());
    println!("spool         {}", row.spool);
    println!("source        {}", row.path.display());
    println!("destination   {} (bucket {})", row.destination, row.bucket);
    println!("key           {}", row.key.as_deref().unwrap_or("-"));
    println!("size          {} bytes", row.stamp.size);
    println!("attempts      {}", row.attempts);
    if let Some((done, total)) = queue.progress(&row)? {
        println!("multipart     {done} of {total} parts uploaded");
    }
    if row.state == crate::queue::State::Pending {
        println!("next attempt  {}", fmt(row.next_attempt_at));
    }
    println!("last error    {}", row.last_error.as_deref().unwrap_or("-"));
    println!("etag          {}", row.etag.as_deref().unwrap_or("-"));
    println!("sha256        {}", row.sha256.as_deref().unwrap_or("-"));
    if let Some(size) = row.object_size {
        println!("object size   {size} bytes");
    }
    if let Some(rows) = row.rows {
        println!("rows          {rows}");
    }
    if let Some(format) = &row.format {
        println!("format        {format}");
    }
    println!("queued        {}", fmt(row.queued_at));
    println!("updated       {}", fmt(row.updated_at));
    println!(
        "done          {}",
        row.done_at.map(fmt).unwrap_or_else(|| "-".into())
    );
    if !history.is_empty() {
        println!("history");
        for h in &history {
            let error = h
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            println!(
                "  {}  attempt {}  {}{error}",
                fmt(h.ended_at),
                h.attempt,
                h.outcome
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
