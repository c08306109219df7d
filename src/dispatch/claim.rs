//! The claim: which due rows the dispatcher takes now, in one queue transaction. A file
//! the daemon died with runs alone, first (for a held-back destination it is the probe);
//! else one file probes each held-back destination that is due, and the open ones fill
//! the free slots — each spool as far as its gate lets through, none of a spool whose
//! folder was replaced.

use super::gates::Gates;
use super::Dispatcher;
use crate::clock::now_ms;
use crate::queue::{Eligible, FileRow, QueueError};
use crate::upload::LEASE;

/// What a claim took: the rows, the held-back destinations whose probe found no file,
/// and what other processes had committed when it looked (for the idle wait).
pub(super) type Claimed = (Vec<FileRow>, Vec<String>, Option<i64>);

impl Dispatcher {
    /// Claims up to `want` rows (more when probes add theirs) under `gates`.
    pub(super) async fn claim(&self, want: usize, gates: &Gates) -> Result<Claimed, QueueError> {
        let plan = self
            .pressure
            .plan(&self.destinations, tokio::time::Instant::now());
        let open = self.eligible(&plan.open, gates);
        let suspect_scope =
            self.eligible(&[plan.open.clone(), plan.probes.clone()].concat(), gates);
        let probes: Vec<(String, Eligible)> = plan
            .probes
            .iter()
            .map(|d| (d.clone(), self.eligible(std::slice::from_ref(d), gates)))
            .collect();
        let now = now_ms();
        self.queue
            .grouped(move |q| {
                // What other processes had committed when this claim looked (for the
                // idle wait: a change after it is news).
                let seen = q.changes_by_others().ok();
                // A file the daemon died with runs alone, before anything else; for a
                // blocked destination it is the probe.
                let suspect = q.claim_suspect(now, LEASE, &suspect_scope)?;
                if let Some(row) = suspect.first() {
                    let unused = probes
                        .iter()
                        .map(|(d, _)| d.clone())
                        .filter(|d| *d != row.destination)
                        .collect();
                    return Ok((suspect, unused, seen));
                }
                let mut rows = Vec::new();
                let mut unused = Vec::new();
                // One file probes each blocked destination that is due.
                for (destination, eligible) in &probes {
                    let probe = q.claim_for(1, now, LEASE, eligible)?;
                    if probe.is_empty() {
                        unused.push(destination.clone());
                    }
                    rows.extend(probe);
                }
                if rows.len() < want {
                    rows.extend(q.claim_for(want - rows.len(), now, LEASE, &open)?);
                }
                Ok((rows, unused, seen))
            })
            .await
    }

    /// The rows of this config's spools bound for `destinations`, as far as each spool's
    /// window and cadence let through.
    pub(super) fn eligible(&self, destinations: &[String], gates: &Gates) -> Eligible {
        // A spool whose folder was replaced is stopped: none of its rows is claimed.
        let spools: Vec<&str> = self
            .spools
            .keys()
            .filter(|s| !self.roots.get(*s).is_some_and(|root| root.is_moved()))
            .map(String::as_str)
            .collect();
        let destinations: Vec<&str> = destinations.iter().map(String::as_str).collect();
        Eligible::gated(&spools, &destinations, gates.by_spool.clone())
    }
}
