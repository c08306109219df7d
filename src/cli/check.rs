//! `s3spool check`: the config is valid, and every destination allows each action the
//! daemon needs. One row per action; each runs on its own where it can, so a single run
//! shows every missing permission, with the IAM policy line that grants it.
//!
//! `--offline` stops after the config (for `ExecStartPre=`); `--challenge` also writes an
//! object `s3spool-challenge-<uuid>` under the prefix and leaves it, to prove write access
//! to whoever owns the bucket; `--json` prints one object for scripts.

use bytes::Bytes;
use serde::Serialize;
use std::process::ExitCode;

use crate::config::{Config, Destination};
use crate::s3::probe::{self, ActionResult, Probed, ACTIONS};
use crate::s3::Auth;
use crate::s3::StoreError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only validate the config; touch no network.
    #[arg(long)]
    offline: bool,
    /// Also write a challenge object `s3spool-challenge-<uuid>` and leave it in place.
    #[arg(long, conflicts_with = "offline")]
    challenge: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub(super) json: bool,
}

#[derive(Serialize)]
struct Report {
    config: String,
    ok: bool,
    /// The key each spool gives a sample file, as the daemon would render it.
    example_keys: Vec<super::example_key::ExampleKey>,
    destinations: Vec<DestinationReport>,
}

#[derive(Serialize)]
struct DestinationReport {
    name: String,
    bucket: String,
    prefix: String,
    endpoint: Option<String>,
    /// The proxy requests to the endpoint go through (`http://host:port`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<String>,
    /// Where the proxy was configured: `proxy`, or the environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy_from: Option<&'static str>,
    /// The proxy STS requests go through, when it is not the endpoint's.
    #[serde(skip_serializing_if = "Option::is_none")]
    sts_proxy: Option<String>,
    /// Proxy settings of the environment that are ignored, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    network_notes: Vec<String>,
    checks: Vec<Check>,
    #[serde(skip_serializing_if = "Option::is_none")]
    challenge_key: Option<String>,
}

#[derive(Serialize)]
struct Check {
    action: &'static str,
    /// `true` ok, `false` failed, absent when skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// What to add to the IAM policy, when access was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    grant: Option<String>,
    /// Only `check` itself needs this action: a failure is a warning.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    optional: bool,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    if args.offline {
        let example_keys = super::example_key::example_keys(&config);
        if args.json {
            super::print_json(&Report {
                config: config.source.display().to_string(),
                ok: true,
                example_keys,
                destinations: Vec::new(),
            })?;
        } else {
            println!(
                "config {}: ok (offline: no destination was contacted)",
                config.source.display()
            );
            super::example_key::print(&example_keys);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let destinations: Vec<DestinationReport> = config
        .destinations
        .values()
        .map(|d| runtime.block_on(probe_destination(d, args.challenge)))
        .collect();
    let ok = destinations
        .iter()
        .all(|d| d.checks.iter().all(|c| c.ok != Some(false) || c.optional));
    let report = Report {
        config: config.source.display().to_string(),
        ok,
        example_keys: super::example_key::example_keys(&config),
        destinations,
    };
    if args.json {
        super::print_json(&report)?;
    } else {
        print_human(&config, &report);
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_human(config: &Config, report: &Report) {
    println!("config {}: ok", report.config);
    for spool in config.spools.values() {
        let state = if spool.path.is_dir() {
            "exists"
        } else {
            "missing; the daemon will create it"
        };
        println!(
            "spool {} → {}: {} ({state})",
            spool.name,
            spool.only_route().destination,
            spool.path.display()
        );
    }
    super::example_key::print(&report.example_keys);
    for d in &report.destinations {
        let uri = if d.prefix.is_empty() {
            format!("s3://{}", d.bucket)
        } else {
            format!("s3://{}/{}", d.bucket, d.prefix)
        };
        let route = match (&d.proxy, d.proxy_from) {
            (Some(proxy), Some(from)) => format!(", through proxy {proxy} from {from}"),
            _ => String::new(),
        };
        println!(
            "destination {} ({uri} at {}{route}):",
            d.name,
            d.endpoint.as_deref().unwrap_or("AWS")
        );
        if let Some(proxy) = &d.sts_proxy {
            println!("  STS requests go through {proxy}");
        }
        for note in &d.network_notes {
            println!("  note: {note}");
        }
        for c in &d.checks {
            match (c.ok, &c.error) {
                (Some(true), _) => println!("  {:<22} ok", c.action),
                (Some(false), Some(e)) if c.optional => println!("  {:<22} WARNING: {e}", c.action),
                (Some(false), Some(e)) => println!("  {:<22} FAILED: {e}", c.action),
                (None, Some(why)) => println!("  {:<22} skipped ({why})", c.action),
                _ => println!("  {:<22} skipped", c.action),
            }
            if let Some(grant) = &c.grant {
                println!("  {:<22}   → add to the IAM policy: {grant}", "");
            }
        }
        if let Some(key) = &d.challenge_key {
            println!("  challenge object left in place: {key}");
        }
    }
    if report.ok {
        println!("all destinations ok");
    } else {
        println!("some checks failed: see above");
    }
}

/// The policy statement that allows `action`, for the hint on an AccessDenied row.
fn grant(d: &Destination, action: &str) -> String {
    let objects = format!("arn:aws:s3:::{}/{}*", d.bucket, d.key_prefix());
    match action {
        "sts:AssumeRole" => match &d.auth {
            Auth::AssumeRole(role) => format!(
                "sts:AssumeRole on {} for the identity that calls STS, and a trust policy on the role that allows it{}",
                role.role_arn,
                if role.external_id.is_some() { " with the condition sts:ExternalId" } else { "" }
            ),
            _ => String::new(),
        },
        "HeadObject" => format!("s3:GetObject on {objects}"),
        "DeleteObject" => format!("s3:DeleteObject on {objects} (only `check` needs it, to remove its probe)"),
        "ListParts" => format!("s3:ListMultipartUploadParts on {objects}"),
        "AbortMultipartUpload" => format!("s3:AbortMultipartUpload on {objects}"),
        "ListMultipartUploads" => format!("s3:ListBucketMultipartUploads on arn:aws:s3:::{}", d.bucket),
        _ => format!("s3:PutObject on {objects}"),
    }
}

fn row(d: &Destination, action: &'static str, result: Result<(), StoreError>) -> Check {
    match result {
        Ok(()) => Check {
            action,
            ok: Some(true),
            error: None,
            grant: None,
            optional: false,
        },
        Err(e) => {
            let denied = e.is_denied();
            Check {
                action,
                ok: Some(false),
                error: Some(e.reason()),
                grant: denied.then(|| grant(d, action)),
                optional: false,
            }
        }
    }
}

/// A probed action as a row, with the policy line that grants it where S3 denied it.
fn probed(d: &Destination, probed: ActionResult) -> Check {
    let mut check = match probed.outcome {
        Probed::Allowed => row(d, probed.action, Ok(())),
        Probed::Refused(e) => row(d, probed.action, Err(e)),
        Probed::Skipped(why) => skipped(probed.action, why),
    };
    check.optional = probed.optional;
    check
}

fn skipped(action: &'static str, why: &str) -> Check {
    Check {
        action,
        ok: None,
        error: Some(why.to_string()),
        grant: None,
        optional: false,
    }
}

async fn probe_destination(d: &Destination, challenge: bool) -> DestinationReport {
    let route = d.network.route(&d.endpoint_url());
    let sts_proxy = d.sts_url().and_then(|sts| {
        let sts_route = d.network.route(&sts);
        (sts_route != route).then(|| {
            sts_route.map_or("no proxy (direct)".to_string(), |p| {
                format!("proxy {} from {}", p.url, p.source)
            })
        })
    });
    let mut report = DestinationReport {
        name: d.name.clone(),
        bucket: d.bucket.clone(),
        prefix: d.prefix.clone(),
        endpoint: d.endpoint.clone(),
        proxy: route.map(|p| p.url.to_string()),
        proxy_from: route.map(|p| p.source),
        sts_proxy,
        network_notes: d.network.ignored.clone(),
        checks: Vec::new(),
        challenge_key: None,
    };
    // The probe's objects are a few bytes: no bandwidth limit.
    let unlimited = std::sync::Arc::new(crate::bandwidth::Throttle::default());
    let store = match crate::s3::connect(&d.s3_spec(), unlimited) {
        Ok(store) => store,
        Err(e) => {
            report.checks.push(row(d, "Connect", Err(e)));
            return report;
        }
    };
    let credentials_row = if matches!(d.auth, Auth::AssumeRole(_)) {
        "sts:AssumeRole"
    } else {
        "Credentials"
    };
    let credentials = store.verify_credentials().await;
    let have_credentials = credentials.is_ok();
    report.checks.push(row(d, credentials_row, credentials));
    if !have_credentials {
        for action in ACTIONS {
            report.checks.push(skipped(action, "no credentials"));
        }
        return report;
    }
    let probed_actions = probe::probe_actions(store.as_ref(), &d.key_prefix()).await;
    report
        .checks
        .extend(probed_actions.into_iter().map(|p| probed(d, p)));
    if challenge {
        let key = format!(
            "{}s3spool-challenge-{}",
            d.key_prefix(),
            uuid::Uuid::new_v4()
        );
        let body = Bytes::from(format!(
            "s3spool challenge object, written by `s3spool check --challenge` for destination {}\n",
            d.name
        ));
        let result = probe::put(store.as_ref(), &key, body).await;
        if result.is_ok() {
            report.challenge_key = Some(key);
        }
        report.checks.push(row(d, "PutObject (challenge)", result));
    }
    report
}
