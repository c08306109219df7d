//! `s3spool check`: the config is valid, and every destination accepts a write, a read of
//! the metadata and a delete under its prefix.

use std::process::ExitCode;

use crate::config::Config;
use crate::s3::{ObjectStore, PutBody};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config: Config, _args: Args) -> anyhow::Result<ExitCode> {
    println!("config {}: ok", config.source.display());
    for spool in config.spools.values() {
        let state = if spool.path.is_dir() {
            "exists"
        } else {
            "missing; the daemon will create it"
        };
        println!(
            "spool {} → {}: {} ({state})",
            spool.name,
            spool.destination,
            spool.path.display()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut all_ok = true;
    for destination in config.destinations.values() {
        let at = destination.endpoint.as_deref().unwrap_or("AWS");
        let uri = if destination.prefix.is_empty() {
            format!("s3://{}", destination.bucket)
        } else {
            format!("s3://{}/{}", destination.bucket, destination.prefix)
        };
        println!(
            "destination {} ({uri} at {at}, region {}):",
            destination.name, destination.region
        );
        let store = match crate::s3::connect(destination) {
            Ok(store) => store,
            Err(e) => {
                println!("  {:<14} FAILED: {}", "Connect", e.reason());
                all_ok = false;
                continue;
            }
        };
        let key = probe_key(&destination.prefix);
        let steps = runtime.block_on(probe(store.as_ref(), &key));
        for (step, result) in steps {
            match result {
                Some(Ok(())) => println!("  {step:<14} ok"),
                Some(Err(e)) => {
                    all_ok = false;
                    println!("  {step:<14} FAILED: {e}");
                }
                None => println!("  {step:<14} skipped"),
            }
        }
    }
    if all_ok {
        println!("all destinations ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("some destinations failed: see above");
        Ok(ExitCode::FAILURE)
    }
}

fn probe_key(prefix: &str) -> String {
    let name = format!("s3spool-check-{}", uuid::Uuid::new_v4());
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

type Step = (&'static str, Option<Result<(), String>>);

/// PUT, HEAD, DELETE a small object; a failed step skips the ones after it.
async fn probe(store: &dyn ObjectStore, key: &str) -> Vec<Step> {
    use md5::{Digest, Md5};
    let body = bytes::Bytes::from_static(b"s3spool connection check\n");
    let md5: [u8; 16] = Md5::digest(&body).into();
    let sha256 = hex::encode(sha2::Sha256::digest(&body));
    let mut steps: Vec<Step> = vec![
        ("PutObject", None),
        ("HeadObject", None),
        ("DeleteObject", None),
    ];
    let put = store
        .put_object(key, PutBody::Memory(body.clone()), md5, &sha256)
        .await;
    steps[0].1 = Some(put.map(drop).map_err(|e| e.reason()));
    if matches!(steps[0].1, Some(Err(_))) {
        return steps;
    }
    let head = match store.head_object(key).await {
        Ok(Some(h)) if h.size == body.len() as u64 => Ok(()),
        Ok(Some(h)) => Err(format!(
            "object has {} bytes, {} were written",
            h.size,
            body.len()
        )),
        Ok(None) => Err("the object just written is not there".into()),
        Err(e) => Err(e.reason()),
    };
    steps[1].1 = Some(head);
    let delete = store.delete_object(key).await;
    steps[2].1 = Some(
        delete.map_err(|e| format!("{} (the probe object {key} was left behind)", e.reason())),
    );
    steps
}
