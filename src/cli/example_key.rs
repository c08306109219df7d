//! The key each spool will give a file, rendered as the daemon renders it, for `check`: an
//! operator sees what sanitising and shortening do before the first delivery.

use serde::Serialize;

use crate::config::Config;
use crate::key::KeyInput;

/// A file name with what downstream tools refuse: spaces, brackets, `#`, UTF-8.
pub const SAMPLE: &str = "reports/Q3 sales (final) #1 é.csv";
/// The queue id the sample is shown with.
const SAMPLE_ID: i64 = 42;

#[derive(Serialize)]
pub struct ExampleKey {
    pub spool: String,
    pub source: &'static str,
    /// `s3://bucket/key`, or why no key can be made for the sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn example_keys(config: &Config) -> Vec<ExampleKey> {
    let host = crate::host::hostname();
    config
        .spools
        .values()
        .filter_map(|spool| {
            let route = spool.only_route();
            let destination = config.destinations.get(&route.destination)?;
            let input = KeyInput {
                spool: &spool.name,
                host: &host,
                rel_path: SAMPLE,
                id: SAMPLE_ID,
                uuid: uuid::Uuid::new_v4(),
                time: crate::clock::now(),
                ext: route.output.ext_rule(),
            };
            let rendered = route.key.render(&destination.prefix, &input);
            Some(ExampleKey {
                spool: spool.name.clone(),
                source: SAMPLE,
                object: rendered
                    .as_ref()
                    .ok()
                    .map(|key| format!("s3://{}/{key}", destination.bucket)),
                error: rendered.err().map(|e| e.to_string()),
            })
        })
        .collect()
}

/// The text lines of `check`.
pub fn print(examples: &[ExampleKey]) {
    if examples.is_empty() {
        return;
    }
    println!("example keys, for a file {SAMPLE:?} queued now as id {SAMPLE_ID}:");
    for e in examples {
        match (&e.object, &e.error) {
            (Some(object), _) => println!("  spool {}: {object}", e.spool),
            (_, Some(error)) => println!("  spool {}: no key: {error}", e.spool),
            _ => {}
        }
    }
}
