//! A spool is its folder, not its name in the config.
//!
//! Rows carry their spool's name (readable in `sqlite3`, `list`, `status`), and the table
//! `spool_folders` says which folder (canonical path) each name stands for. At start and at
//! each reload the daemon hands the configured spools to [`Queue::adopt_folders`]:
//!
//! - a folder the queue knows under another name: the table was renamed in the config,
//!   and its rows, paused state, batches and ticks carry the new name from now on;
//! - a name the queue knows for another folder, given to this one: the rows of the other
//!   folder are *orphaned* and carry `NAME@FOLDER` instead (a name no config can give:
//!   names are letters, digits, `-` and `_`), so they are never taken for this folder's;
//! - the same `path` as written in the config, resolving to another folder than last time
//!   (the folder or one on its way was replaced by a symlink): refused. The spool stops
//!   until the config names the folder meant.
//!
//! Rows whose spool (or destination) the running config does not have are orphaned: they
//! wait, are listed by `status`, and `retry` and `purge --orphaned` act on them. Queues made
//! before this table took every spool's rows for the folder its name has at the first
//! start since.

use rusqlite::{params, Connection};
use serde::Serialize;
use std::collections::HashMap;

use super::*;

/// One configured spool, as the queue learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFolder {
    pub name: String,
    /// The folder's canonical path.
    pub root: String,
    /// `spools.NAME.path` as the config says it (made absolute, not resolved).
    pub configured: String,
}

/// What adopting the configured folders changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderChange {
    /// The folder's rows carried another name: they carry the configured one now.
    Renamed { from: String, to: String },
    /// Another folder took the name: that folder's rows are orphaned under `as_name`.
    Orphaned {
        name: String,
        root: String,
        as_name: String,
    },
    /// `configured` resolved to `root` last time and to another folder now: the spool
    /// stops, its rows untouched.
    Refused {
        name: String,
        was: String,
        now: String,
        configured: String,
    },
}

/// Names as a JSON array, for `json_each`.
fn json_list(names: &[String]) -> String {
    serde_json::to_string(names).expect("strings serialise")
}

/// The name the rows of `root` carry while another folder has their spool's name.
pub fn orphan_name(name: &str, root: &str) -> String {
    format!("{name}@{root}")
}

/// Tables whose rows name a spool, and the column (`files` holds copies of its sources'
/// column, which follow them).
const SPOOL_COLUMNS: [(&str, &str); 5] = [
    ("sources", "spool"),
    ("batches", "spool"),
    ("paused", "spool"),
    ("ticks", "spool"),
    ("rush_requests", "spool"),
];

/// Rows that wait for a spool or destination the running config does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphans {
    pub spool: String,
    pub destination: String,
    /// Which of the two the config lacks.
    pub gone: Gone,
    /// Rows waiting, in flight (a previous config's) or failed.
    pub files: u64,
    /// Unix milliseconds.
    pub oldest_queued_at: Option<i64>,
}

/// What an orphaned row's config lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Gone {
    Spool,
    Destination,
    Both,
}

impl Queue {
    /// The orphaned rows (see the module doc), by spool and destination: those not done
    /// whose spool is not in `spools` or whose destination is not in `destinations`.
    pub fn orphans(&self, spools: &[String], destinations: &[String]) -> Result<Vec<Orphans>> {
        let mut found: Vec<Orphans> = Vec::new();
        for t in self.tallies()? {
            let gone = match (
                !spools.contains(&t.spool),
                !destinations.contains(&t.destination),
            ) {
                _ if t.state == State::Done => continue,
                (true, true) => Gone::Both,
                (true, false) => Gone::Spool,
                (false, true) => Gone::Destination,
                (false, false) => continue,
            };
            match found
                .iter_mut()
                .find(|o| o.spool == t.spool && o.destination == t.destination)
            {
                Some(o) => o.files += t.files,
                None => found.push(Orphans {
                    spool: t.spool,
                    destination: t.destination,
                    gone,
                    files: t.files,
                    oldest_queued_at: None,
                }),
            }
        }
        // Rare, and each a range of the (state, spool) index.
        for o in &mut found {
            o.oldest_queued_at = self
                .conn
                .query_row(
                    "SELECT MIN(queued_at) FROM files
                     WHERE state IN ('pending', 'active', 'failed') AND spool = ?1
                       AND destination = ?2 AND superseded_by IS NULL",
                    params![o.spool, o.destination],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
        }
        Ok(found)
    }

    /// When the oldest row waiting or in flight for a configured spool and destination was
    /// queued: what a monitoring check's age is about (orphans wait for no one).
    pub fn oldest_waiting_of(
        &self,
        spools: &[String],
        destinations: &[String],
    ) -> Result<Option<i64>> {
        let mut oldest: Option<i64> = None;
        for spool in spools {
            if let Some(at) = self.oldest_waiting_in(spool, Some(destinations))? {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        Ok(oldest)
    }

    /// Records the spools and destinations the daemon runs with now (see
    /// [`Queue::running_names`]).
    pub fn record_running_names(
        &mut self,
        spools: &[String],
        destinations: &[String],
    ) -> Result<()> {
        self.in_transaction(|tx| {
            tx.execute("DELETE FROM running_names", [])?;
            let mut insert =
                tx.prepare("INSERT OR IGNORE INTO running_names (kind, name) VALUES (?1, ?2)")?;
            for name in spools {
                insert.execute(params!["spool", name])?;
            }
            for name in destinations {
                insert.execute(params!["destination", name])?;
            }
            Ok(())
        })
    }

    /// The spools and destinations the daemon last started or reloaded with.
    pub fn running_names(&self) -> Result<(Vec<String>, Vec<String>)> {
        let names = |kind: &str| {
            self.select(
                "SELECT name FROM running_names WHERE kind = ?1 ORDER BY name",
                [kind],
                |r| r.get(0),
            )
        };
        Ok((names("spool")?, names("destination")?))
    }

    /// Drops the orphaned rows (not done) of `spools` and `destinations` as
    /// [`Queue::orphans`] finds them; their multipart uploads are listed for aborting.
    /// Rows in flight are never dropped, and rows that may already be in S3 (`maybe_sent`:
    /// an answer was lost) only with `force`: kept, they finish without a second copy if
    /// their spool comes back. With `dry_run`, only counts. Returns how many were (or would
    /// be) dropped, and how many were kept as maybe sent.
    pub fn purge_orphans(
        &mut self,
        spools: &[String],
        destinations: &[String],
        force: bool,
        dry_run: bool,
        now_ms: i64,
    ) -> Result<(usize, usize)> {
        let (spools, destinations) = (json_list(spools), json_list(destinations));
        const ORPHAN: &str = "state IN ('pending', 'failed') AND superseded_by IS NULL
               AND (spool NOT IN (SELECT value FROM json_each(?1))
                    OR destination NOT IN (SELECT value FROM json_each(?2)))";
        let orphaned = if force {
            ORPHAN.to_string()
        } else {
            format!("{ORPHAN} AND maybe_sent = 0")
        };
        let orphaned = orphaned.as_str();
        self.in_transaction(|tx| {
            let kept = if force {
                0
            } else {
                tx.query_row(
                    &format!("SELECT COUNT(*) FROM files WHERE {ORPHAN} AND maybe_sent = 1"),
                    params![spools, destinations],
                    |r| r.get::<_, i64>(0).map(|n| n as usize),
                )?
            };
            if dry_run {
                let dropped = tx.query_row(
                    &format!("SELECT COUNT(*) FROM files WHERE {orphaned}"),
                    params![spools, destinations],
                    |r| r.get::<_, i64>(0).map(|n| n as usize),
                )?;
                return Ok((dropped, kept));
            }
            tx.execute(
                &format!(
                    "INSERT OR IGNORE INTO abandoned_uploads (upload_id, destination, bucket, key)
                     SELECT upload_id, destination, bucket, key FROM files
                     WHERE {orphaned} AND upload_id IS NOT NULL AND key IS NOT NULL"
                ),
                params![spools, destinations],
            )?;
            // Their keys stay known to the sweep for a while (see `purged_keys`).
            tx.execute(
                &format!(
                    "INSERT OR REPLACE INTO purged_keys (destination, key, purged_at)
                     SELECT destination, key, ?3 FROM files WHERE {orphaned} AND key IS NOT NULL"
                ),
                params![spools, destinations, now_ms],
            )?;
            tx.execute(
                &format!(
                    "DELETE FROM parts WHERE file_id IN (SELECT id FROM files WHERE {orphaned})"
                ),
                params![spools, destinations],
            )?;
            let dropped = tx.execute(
                &format!("DELETE FROM files WHERE {orphaned}"),
                params![spools, destinations],
            )?;
            Ok((dropped, kept))
        })
    }

    /// Gives up the multipart uploads of orphaned rows untouched since `before` (unix ms):
    /// listed for aborting, forgotten by their rows (which start over if their spool
    /// comes back). Returns how many.
    pub fn abandon_orphan_uploads(
        &mut self,
        spools: &[String],
        destinations: &[String],
        before: i64,
    ) -> Result<usize> {
        let (spools, destinations) = (json_list(spools), json_list(destinations));
        self.in_transaction(|tx| {
            let ids: Vec<i64> = tx
                .prepare(
                    "SELECT id FROM files
                     WHERE state IN ('pending', 'failed') AND upload_id IS NOT NULL
                       AND updated_at < ?3
                       AND (spool NOT IN (SELECT value FROM json_each(?1))
                            OR destination NOT IN (SELECT value FROM json_each(?2)))",
                )?
                .query_map(params![spools, destinations, before], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for &id in &ids {
                tx.execute(
                    "INSERT OR IGNORE INTO abandoned_uploads (upload_id, destination, bucket, key)
                     SELECT upload_id, destination, bucket, key FROM files
                     WHERE id = ?1 AND key IS NOT NULL",
                    [id],
                )?;
                tx.execute(
                    "UPDATE files SET upload_id = NULL, part_size = NULL WHERE id = ?1",
                    [id],
                )?;
                tx.execute("DELETE FROM parts WHERE file_id = ?1", [id])?;
            }
            Ok(ids.len())
        })
    }

    /// Learns the configured spools' folders, carrying rows over to a spool's new name,
    /// orphaning the rows of a folder whose name another folder took, and refusing a spool
    /// whose unchanged `path` leads to another folder now (see the module doc). Returns
    /// what changed; the refused spools must not run.
    pub fn adopt_folders(
        &mut self,
        folders: &[SpoolFolder],
        now_ms: i64,
    ) -> Result<Vec<FolderChange>> {
        self.in_transaction(|tx| adopt(tx, folders, now_ms))
    }

    /// The folder (canonical path) the queue knows for spool `name`, if it knows one.
    pub fn folder_of(&self, name: &str) -> Result<Option<String>> {
        let found = self.select(
            "SELECT root FROM spool_folders WHERE spool = ?1",
            [name],
            |r| r.get(0),
        )?;
        Ok(found.into_iter().next())
    }

    /// The folders the queue knows, by the name their rows carry: `(name, root)`.
    #[cfg(test)]
    pub fn spool_folders(&self) -> Result<Vec<(String, String)>> {
        self.select(
            "SELECT spool, root FROM spool_folders ORDER BY spool",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
    }
}

fn adopt(
    tx: &Connection,
    folders: &[SpoolFolder],
    now_ms: i64,
) -> rusqlite::Result<Vec<FolderChange>> {
    // What the queue knew: root → (name, configured).
    let recorded: HashMap<String, (String, String)> = tx
        .prepare("SELECT root, spool, configured FROM spool_folders")?
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
        .collect::<rusqlite::Result<_>>()?;
    let root_named = |name: &str| {
        recorded
            .iter()
            .find(|(_, (n, _))| n == name)
            .map(|(root, (_, configured))| (root.clone(), configured.clone()))
    };
    let mut changes = Vec::new();
    let mut accepted: HashMap<&str, &SpoolFolder> = HashMap::new();
    // A folder the queue knows, configured with these very words, other than this one.
    let same_words_elsewhere = |folder: &SpoolFolder| {
        recorded
            .iter()
            .find(|(root, (_, configured))| {
                *configured == folder.configured && **root != folder.root
            })
            .map(|(root, (_, configured))| (root.clone(), configured.clone()))
    };
    for folder in folders {
        let known = match root_named(&folder.name) {
            Some((was, configured)) if was != folder.root && configured == folder.configured => {
                Some((was, configured))
            }
            // A name the queue does not know for that folder (a table renamed back, while
            // the path was swapped) must not make the swap look like a new spool.
            _ => same_words_elsewhere(folder),
        };
        match known {
            // The same words in the config, another folder on disk: the file system
            // changed under the config, not the operator's mind. Even (above all) when
            // the folder it leads to now is one the queue knows: another spool's.
            Some((was, configured)) => {
                changes.push(FolderChange::Refused {
                    name: folder.name.clone(),
                    was,
                    now: folder.root.clone(),
                    configured,
                });
            }
            None => {
                accepted.insert(folder.root.as_str(), folder);
            }
        }
    }
    let taken: std::collections::HashSet<&str> =
        accepted.values().map(|f| f.name.as_str()).collect();
    // Each known folder's name from now on.
    let mut renames: Vec<(String, String)> = Vec::new();
    for (root, (name, _)) in &recorded {
        let to = match accepted.get(root.as_str()) {
            Some(folder) => folder.name.clone(),
            None if taken.contains(name.as_str()) => {
                let as_name = orphan_name(name, root);
                changes.push(FolderChange::Orphaned {
                    name: name.clone(),
                    root: root.clone(),
                    as_name: as_name.clone(),
                });
                as_name
            }
            None => name.clone(),
        };
        if &to != name {
            if accepted.contains_key(root.as_str()) {
                changes.push(FolderChange::Renamed {
                    from: name.clone(),
                    to: to.clone(),
                });
            }
            renames.push((name.clone(), to));
        }
    }
    // Through names of their own first: two spools may swap names.
    for (step, (from, _)) in renames.iter().enumerate() {
        rename(tx, from, &format!("\u{0}renaming-{step}"))?;
    }
    for (step, (_, to)) in renames.iter().enumerate() {
        rename(tx, &format!("\u{0}renaming-{step}"), to)?;
    }
    for folder in accepted.values() {
        tx.execute(
            "INSERT INTO spool_folders (root, spool, configured, seen_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (root) DO UPDATE SET spool = excluded.spool,
                 configured = excluded.configured, seen_at = excluded.seen_at",
            params![folder.root, folder.name, folder.configured, now_ms],
        )?;
    }
    Ok(changes)
}

/// Every row naming spool `from` names `to` instead, `spool_folders` too. A leftover row
/// of a small table already naming `to` (a pause of a name never adopted) gives way.
fn rename(tx: &Connection, from: &str, to: &str) -> rusqlite::Result<()> {
    for (table, column) in SPOOL_COLUMNS {
        tx.execute(
            &format!("UPDATE OR REPLACE {table} SET {column} = ?2 WHERE {column} = ?1"),
            params![from, to],
        )?;
    }
    tx.execute(
        "UPDATE spool_folders SET spool = ?2 WHERE spool = ?1",
        params![from, to],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::file;

    fn open() -> (tempfile::TempDir, Queue) {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(&dir.path().join("queue.db")).unwrap();
        (dir, queue)
    }

    fn folder(name: &str, root: &str) -> SpoolFolder {
        SpoolFolder {
            name: name.into(),
            root: root.into(),
            configured: root.into(),
        }
    }

    /// Queues `rel` in spool `spool`; returns its id.
    fn queued(q: &mut Queue, spool: &str, rel: &str) -> i64 {
        let mut f = file(rel, 1);
        f.spool = spool.into();
        match q
            .register(
                &[f],
                SpoolRules::default(),
                1,
                |f, id| Ok(format!("{}-{id}", f.rel_path)),
                |_, _, _| false,
            )
            .unwrap()[..]
        {
            [Registered::Queued(id)] => id,
            ref other => panic!("{other:?}"),
        }
    }

    fn spool_of(q: &Queue, id: i64) -> String {
        q.get(id).unwrap().unwrap().spool
    }

    #[test]
    fn a_table_renamed_in_the_config_keeps_its_folders_rows() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "orders", "a");
        assert_eq!(
            q.adopt_folders(&[folder("orders", "/srv/o")], 1).unwrap(),
            []
        );
        q.pause("orders", 2).unwrap();
        let changes = q
            .adopt_folders(&[folder("orders_eu", "/srv/o")], 3)
            .unwrap();
        assert_eq!(
            changes,
            [FolderChange::Renamed {
                from: "orders".into(),
                to: "orders_eu".into()
            }]
        );
        assert_eq!(spool_of(&q, a), "orders_eu");
        assert_eq!(
            q.paused().unwrap(),
            [("orders_eu".to_string(), 2)],
            "paused stays paused"
        );
        // A file seen again under the new name is the same row.
        let mut again = file("a", 1);
        again.spool = "orders_eu".into();
        let seen = q
            .register(
                &[again],
                SpoolRules::default(),
                4,
                |f, id| Ok(format!("{}-{id}", f.rel_path)),
                |_, _, _| false,
            )
            .unwrap();
        assert_eq!(seen, [Registered::AlreadyQueued(a)]);
    }

    #[test]
    fn two_spools_may_swap_names() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "a", "x");
        let b = queued(&mut q, "b", "y");
        q.adopt_folders(&[folder("a", "/A"), folder("b", "/B")], 1)
            .unwrap();
        q.adopt_folders(&[folder("b", "/A"), folder("a", "/B")], 2)
            .unwrap();
        assert_eq!((spool_of(&q, a), spool_of(&q, b)), ("b".into(), "a".into()));
        assert_eq!(
            q.spool_folders().unwrap(),
            [
                ("a".to_string(), "/B".to_string()),
                ("b".into(), "/A".into())
            ]
        );
    }

    #[test]
    fn a_name_given_to_another_folder_orphans_the_old_folders_rows_and_back_again() {
        let (_d, mut q) = open();
        let old = queued(&mut q, "orders", "a");
        q.adopt_folders(&[folder("orders", "/old")], 1).unwrap();
        // The operator points the spool at another folder (the config's words changed).
        let changes = q.adopt_folders(&[folder("orders", "/new")], 2).unwrap();
        assert_eq!(
            changes,
            [FolderChange::Orphaned {
                name: "orders".into(),
                root: "/old".into(),
                as_name: "orders@/old".into()
            }]
        );
        assert_eq!(spool_of(&q, old), "orders@/old");
        let new = queued(&mut q, "orders", "a");
        assert_ne!(new, old, "a file of the new folder is not the old folder's");
        // Back to the old folder: its rows are the spool's again, the new folder's orphaned.
        q.adopt_folders(&[folder("orders", "/old")], 3).unwrap();
        assert_eq!(spool_of(&q, old), "orders");
        assert_eq!(spool_of(&q, new), "orders@/new");
    }

    #[test]
    fn the_same_path_leading_to_another_folder_is_refused_and_nothing_moves() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "orders", "a");
        q.adopt_folders(&[folder("orders", "/srv/out")], 1).unwrap();
        // `path = "/srv/out"` as before, but it resolves elsewhere now (a symlink put there).
        let swapped = SpoolFolder {
            name: "orders".into(),
            root: "/home/eve/loot".into(),
            configured: "/srv/out".into(),
        };
        let changes = q.adopt_folders(&[swapped], 2).unwrap();
        assert_eq!(
            changes,
            [FolderChange::Refused {
                name: "orders".into(),
                was: "/srv/out".into(),
                now: "/home/eve/loot".into(),
                configured: "/srv/out".into()
            }]
        );
        assert_eq!(spool_of(&q, a), "orders");
        assert_eq!(
            q.spool_folders().unwrap(),
            [("orders".to_string(), "/srv/out".to_string())]
        );
    }

    #[test]
    fn the_same_path_leading_to_a_folder_the_queue_knows_is_refused_too() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "orders", "a");
        let b = queued(&mut q, "events", "b");
        q.adopt_folders(&[folder("orders", "/srv/a"), folder("events", "/srv/b")], 1)
            .unwrap();
        // events left the config; /srv/a is now a symlink to its old folder.
        let swapped = SpoolFolder {
            name: "orders".into(),
            root: "/srv/b".into(),
            configured: "/srv/a".into(),
        };
        let changes = q.adopt_folders(&[swapped], 2).unwrap();
        assert!(
            matches!(&changes[..], [FolderChange::Refused { now, .. }] if now == "/srv/b"),
            "{changes:?}"
        );
        assert_eq!(
            (spool_of(&q, a), spool_of(&q, b)),
            ("orders".into(), "events".into())
        );
    }

    #[test]
    fn the_same_path_under_a_name_the_queue_does_not_know_for_it_is_refused_too() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "orders", "a");
        q.adopt_folders(&[folder("orders", "/srv/out")], 1).unwrap();
        // The table renamed (same path): the folder carries the new name.
        q.adopt_folders(&[folder("orders_b", "/srv/out")], 2)
            .unwrap();
        assert_eq!(spool_of(&q, a), "orders_b");
        // Renamed back while the path leads elsewhere for a moment: `orders` is a name
        // the queue knows for no folder now, but these words name /srv/out.
        let swapped = SpoolFolder {
            name: "orders".into(),
            root: "/home/eve/loot".into(),
            configured: "/srv/out".into(),
        };
        let changes = q.adopt_folders(&[swapped], 3).unwrap();
        assert_eq!(
            changes,
            [FolderChange::Refused {
                name: "orders".into(),
                was: "/srv/out".into(),
                now: "/home/eve/loot".into(),
                configured: "/srv/out".into()
            }]
        );
        assert_eq!(
            q.spool_folders().unwrap(),
            [("orders_b".to_string(), "/srv/out".to_string())]
        );
        // Back in place, the rename back is taken.
        q.adopt_folders(&[folder("orders", "/srv/out")], 4).unwrap();
        assert_eq!(spool_of(&q, a), "orders");
    }

    #[test]
    fn a_queue_from_before_takes_each_spools_rows_for_its_folder_now() {
        let (_d, mut q) = open();
        let a = queued(&mut q, "orders", "a");
        assert_eq!(q.adopt_folders(&[folder("orders", "/o")], 1).unwrap(), []);
        assert_eq!(spool_of(&q, a), "orders");
        // A spool removed from the config keeps its name while no folder takes it.
        q.adopt_folders(&[folder("events", "/e")], 2).unwrap();
        assert_eq!(spool_of(&q, a), "orders");
    }

    #[test]
    fn orphans_are_listed_purged_and_give_up_their_uploads_after_a_while() {
        let (_d, mut q) = open();
        let kept = queued(&mut q, "orders", "a");
        let orphan = queued(&mut q, "gone", "b");
        q.conn
            .execute(
                "UPDATE files SET upload_id = 'up-1', part_size = 5, updated_at = 100 WHERE id = ?1",
                [orphan],
            )
            .unwrap();
        let (spools, destinations) = (vec!["orders".to_string()], vec!["lake".to_string()]);
        let found = q.orphans(&spools, &destinations).unwrap();
        assert_eq!(
            found,
            [Orphans {
                spool: "gone".into(),
                destination: "lake".into(),
                gone: Gone::Spool,
                files: 1,
                oldest_queued_at: Some(1),
            }]
        );
        let no_lake = q.orphans(&spools, &[]).unwrap();
        assert_eq!(no_lake.len(), 2);
        assert_eq!(
            (no_lake[0].gone, no_lake[1].gone),
            (Gone::Both, Gone::Destination)
        );
        // Orphans have no age a check should raise.
        assert_eq!(
            q.oldest_waiting_of(&spools, &destinations).unwrap(),
            Some(1)
        );
        // Left alone since 100: not given up before then, given up after.
        assert_eq!(
            q.abandon_orphan_uploads(&spools, &destinations, 100)
                .unwrap(),
            0
        );
        assert_eq!(
            q.abandon_orphan_uploads(&spools, &destinations, 101)
                .unwrap(),
            1
        );
        assert_eq!(q.get(orphan).unwrap().unwrap().upload_id, None);
        assert_eq!(q.abandoned_uploads(10).unwrap().len(), 1);
        // Purged: counted first, then gone; the configured spool's row stays.
        assert_eq!(
            q.purge_orphans(&spools, &destinations, false, true, 0)
                .unwrap(),
            (1, 0)
        );
        assert!(q.get(orphan).unwrap().is_some());
        assert_eq!(
            q.purge_orphans(&spools, &destinations, false, false, 0)
                .unwrap(),
            (1, 0)
        );
        assert!(q.get(orphan).unwrap().is_none());
        assert!(q.get(kept).unwrap().is_some());
    }

    #[test]
    fn a_purge_of_orphans_spares_rows_in_flight_and_without_force_rows_maybe_in_s3() {
        let (_d, mut q) = open();
        let in_flight = queued(&mut q, "gone", "a");
        let maybe_sent = queued(&mut q, "gone", "b");
        let waiting = queued(&mut q, "gone", "c");
        q.conn
            .execute(
                "UPDATE files SET state = 'active' WHERE id = ?1",
                [in_flight],
            )
            .unwrap();
        q.conn
            .execute(
                "UPDATE files SET maybe_sent = 1 WHERE id = ?1",
                [maybe_sent],
            )
            .unwrap();
        let (spools, destinations) = (vec!["orders".to_string()], vec!["lake".to_string()]);
        assert_eq!(
            q.purge_orphans(&spools, &destinations, false, false, 0)
                .unwrap(),
            (1, 1)
        );
        assert!(q.get(waiting).unwrap().is_none());
        assert!(q.get(maybe_sent).unwrap().is_some());
        assert_eq!(
            q.purge_orphans(&spools, &destinations, true, false, 0)
                .unwrap(),
            (1, 0)
        );
        assert!(q.get(maybe_sent).unwrap().is_none());
        assert!(q.get(in_flight).unwrap().is_some(), "never a row in flight");
    }

    #[test]
    fn the_names_the_daemon_runs_with_are_recorded_whole() {
        let (_d, mut q) = open();
        assert_eq!(q.running_names().unwrap(), (vec![], vec![]));
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        q.record_running_names(&names(&["b", "a"]), &names(&["lake"]))
            .unwrap();
        q.record_running_names(&names(&["a"]), &names(&["lake", "cold"]))
            .unwrap();
        assert_eq!(
            q.running_names().unwrap(),
            (names(&["a"]), names(&["cold", "lake"]))
        );
    }
}
