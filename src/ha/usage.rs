//! The usage ledger shared by the nodes of a JPD: one row per distinct usage file (SHA-256) in
//! `jfconnect.usage_files`, so a file whose bytes sit in two nodes' spools is uploaded once and
//! archived once.
//!
//! A row moves `uploading` → `uploaded` → `archiving` → `archived`. A node *claims* a file
//! before it uploads it (a claim lapses after a TTL, so a node that dies mid-upload does not
//! hold it for ever) and before it puts it in an archive plan (that claim never lapses: the node
//! resumes its plan after a crash, and a second archive of the same file is never made). Every
//! statement runs in a transaction that first reads this node's membership row `FOR SHARE`
//! and checks its instance: a process that was replaced under its node id (it was paused or
//! cut off long enough for a new process to join) has every claim and mark refused by the
//! database, like a leaseholder with a stale epoch. A mark is refused, and nothing is marked,
//! when any of its files is not claimed by this node.

use super::db::{Db, DbError};
use super::nodes::Member;
use std::collections::HashMap;
use std::time::Duration;

/// An archive holding usage files, as recorded when its checksum was read back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ArchiveRef {
    /// The repository.
    pub repo: String,
    /// Its path in the repository.
    pub name: String,
    /// Its SHA-256, as read back from the JPD.
    pub sha256: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Where a usage file stands for archival, as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveClaim {
    /// This node holds the archival claim: it goes in this node's plan.
    Mine,
    /// Not acknowledged by JCS yet.
    NotUploaded,
    /// Another node holds the archival claim (its copy goes in its archive).
    Elsewhere(String),
    /// Already in a verified archive; a copy of it may be deleted once this node has read the
    /// archive's checksum back.
    Archived(ArchiveRef),
}

fn sorted_unique(shas: &[String]) -> Vec<String> {
    let mut v = shas.to_vec();
    v.sort();
    v.dedup();
    v
}

/// Opens a transaction after checking, under a share lock on this node's membership row, that
/// this process is still the node's member.
async fn fenced<'a>(
    db: &Db,
    client: &'a mut deadpool_postgres::Object,
    me: &Member,
    what: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>, DbError> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| db.fail("start a transaction", e))?;
    let row = tx
        .query_opt(
            "SELECT instance_id FROM jfconnect.nodes WHERE node_id = $1 FOR SHARE",
            &[&me.node_id],
        )
        .await
        .map_err(|e| db.fail("read this node's membership", e))?;
    let current: Option<String> = row.map(|r| r.get(0));
    if current.as_deref() != Some(me.instance_id.as_str()) {
        return Err(DbError::Superseded {
            node: me.node_id.clone(),
            what,
        });
    }
    Ok(tx)
}

/// Claims the files this node should upload now: those nobody acknowledged yet and nobody else
/// is uploading (a claim of another node older than `ttl` has lapsed). Answers the claimed ones.
pub async fn claim_uploads(
    db: &Db,
    me: &Member,
    shas: &[String],
    ttl: Duration,
) -> Result<Vec<String>, DbError> {
    let shas = sorted_unique(shas);
    let mut client = db.client().await?;
    let tx = fenced(db, &mut client, me, "claim usage files for upload").await?;
    let rows = tx
        .query(
            "INSERT INTO jfconnect.usage_files AS u (sha256, state, holder, claim_expires, updated_at)
             SELECT s, 'uploading', $1, clock_timestamp() + make_interval(secs => $3), clock_timestamp()
             FROM unnest($2::text[]) AS s
             ON CONFLICT (sha256) DO UPDATE SET
                 holder = EXCLUDED.holder, claim_expires = EXCLUDED.claim_expires,
                 updated_at = EXCLUDED.updated_at
             WHERE u.state = 'uploading'
               AND (u.holder = EXCLUDED.holder OR u.claim_expires < clock_timestamp())
             RETURNING sha256",
            &[&me.node_id, &shas, &ttl.as_secs_f64()],
        )
        .await
        .map_err(|e| db.fail("claim usage files for upload", e))?;
    tx.commit()
        .await
        .map_err(|e| db.fail("commit an upload claim", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Records that JCS acknowledged these files. Refused (nothing recorded) when one of them is
/// being uploaded under another node's claim; a file already recorded stays as it is.
pub async fn mark_uploaded(db: &Db, me: &Member, shas: &[String]) -> Result<(), DbError> {
    let shas = sorted_unique(shas);
    let mut client = db.client().await?;
    let tx = fenced(db, &mut client, me, "record usage files as uploaded").await?;
    let lost: i64 = tx
        .query_one(
            "SELECT count(*) FROM jfconnect.usage_files
             WHERE sha256 = ANY($2) AND state = 'uploading' AND holder IS DISTINCT FROM $1",
            &[&me.node_id, &shas],
        )
        .await
        .map_err(|e| db.fail("check upload claims", e))?
        .get(0);
    if lost > 0 {
        return Err(DbError::ClaimLost {
            node: me.node_id.clone(),
            files: lost as u64,
            what: "record them as uploaded",
        });
    }
    tx.execute(
        "INSERT INTO jfconnect.usage_files AS u (sha256, state, uploaded_by, uploaded_at, updated_at)
         SELECT s, 'uploaded', $1, clock_timestamp(), clock_timestamp() FROM unnest($2::text[]) AS s
         ON CONFLICT (sha256) DO UPDATE SET
             state = 'uploaded', holder = NULL, claim_expires = NULL,
             uploaded_by = EXCLUDED.uploaded_by, uploaded_at = EXCLUDED.uploaded_at,
             updated_at = EXCLUDED.updated_at
         WHERE u.state = 'uploading'",
        &[&me.node_id, &shas],
    )
    .await
    .map_err(|e| db.fail("record usage files as uploaded", e))?;
    tx.commit()
        .await
        .map_err(|e| db.fail("commit uploaded usage files", e))?;
    Ok(())
}

/// Claims for this node's next archive plan every file that is uploaded and unclaimed (or
/// already claimed by this node), and answers where each of `shas` stands.
pub async fn claim_archival(
    db: &Db,
    me: &Member,
    shas: &[String],
) -> Result<HashMap<String, ArchiveClaim>, DbError> {
    let shas = sorted_unique(shas);
    let mut client = db.client().await?;
    let tx = fenced(db, &mut client, me, "claim usage files for archival").await?;
    tx.execute(
        "UPDATE jfconnect.usage_files SET state = 'archiving', holder = $1, claim_expires = NULL,
             updated_at = clock_timestamp()
         WHERE sha256 = ANY($2) AND state = 'uploaded'",
        &[&me.node_id, &shas],
    )
    .await
    .map_err(|e| db.fail("claim usage files for archival", e))?;
    let rows = tx
        .query(
            "SELECT sha256, state, holder, archive_repo, archive_name, archive_sha256, archive_size
             FROM jfconnect.usage_files WHERE sha256 = ANY($1)",
            &[&shas],
        )
        .await
        .map_err(|e| db.fail("read usage files", e))?;
    tx.commit()
        .await
        .map_err(|e| db.fail("commit an archival claim", e))?;
    let mut out: HashMap<String, ArchiveClaim> = shas
        .iter()
        .map(|s| (s.clone(), ArchiveClaim::NotUploaded))
        .collect();
    for r in rows {
        let sha: String = r.get(0);
        let state: &str = r.get(1);
        let holder: Option<String> = r.get(2);
        let claim = match state {
            "archiving" if holder.as_deref() == Some(me.node_id.as_str()) => ArchiveClaim::Mine,
            "archiving" => ArchiveClaim::Elsewhere(holder.unwrap_or_default()),
            "archived" => {
                let size: Option<i64> = r.get(6);
                match (r.get(3), r.get(4), r.get(5), size) {
                    (Some(repo), Some(name), Some(sha256), Some(size)) => {
                        ArchiveClaim::Archived(ArchiveRef {
                            repo,
                            name,
                            sha256,
                            size: u64::try_from(size).unwrap_or(0),
                        })
                    }
                    _ => {
                        return Err(DbError::Damaged {
                            what: "usage ledger row",
                            reason: format!("{sha} is archived without its archive"),
                        })
                    }
                }
            }
            _ => ArchiveClaim::NotUploaded,
        };
        out.insert(sha, claim);
    }
    Ok(out)
}

/// Records that these files are in `archive`, whose checksum was read back. Refused (nothing
/// recorded) unless every one is claimed by this node or already recorded in that archive.
pub async fn mark_archived(
    db: &Db,
    me: &Member,
    shas: &[String],
    archive: &ArchiveRef,
) -> Result<(), DbError> {
    let shas = sorted_unique(shas);
    let mut client = db.client().await?;
    let tx = fenced(db, &mut client, me, "record usage files as archived").await?;
    let size = i64::try_from(archive.size).unwrap_or(i64::MAX);
    let n = tx
        .execute(
            "UPDATE jfconnect.usage_files SET state = 'archived', holder = NULL,
                 archive_repo = $3, archive_name = $4, archive_sha256 = $5, archive_size = $6,
                 archived_by = $1, archived_at = clock_timestamp(), updated_at = clock_timestamp()
             WHERE sha256 = ANY($2) AND state = 'archiving' AND holder = $1",
            &[
                &me.node_id,
                &shas,
                &archive.repo,
                &archive.name,
                &archive.sha256,
                &size,
            ],
        )
        .await
        .map_err(|e| db.fail("record usage files as archived", e))?;
    let recorded: i64 = tx
        .query_one(
            "SELECT count(*) FROM jfconnect.usage_files
             WHERE sha256 = ANY($1) AND state = 'archived' AND archive_repo = $2
               AND archive_name = $3",
            &[&shas, &archive.repo, &archive.name],
        )
        .await
        .map_err(|e| db.fail("check archived usage files", e))?
        .get(0);
    let missing = shas.len() as i64 - recorded;
    if missing > 0 {
        return Err(DbError::ClaimLost {
            node: me.node_id.clone(),
            files: missing as u64,
            what: "record them as archived",
        });
    }
    tx.commit()
        .await
        .map_err(|e| db.fail("commit archived usage files", e))?;
    tracing::debug!(files = n, archive = %archive.name, "usage files recorded as archived");
    Ok(())
}

/// Gives back archival claims of files this node's plan left out (they vanished or changed), so
/// a copy on another node can be archived.
pub async fn release(db: &Db, me: &Member, shas: &[String]) -> Result<(), DbError> {
    let shas = sorted_unique(shas);
    let mut client = db.client().await?;
    let tx = fenced(db, &mut client, me, "give back archival claims").await?;
    tx.execute(
        "UPDATE jfconnect.usage_files SET state = 'uploaded', holder = NULL,
             updated_at = clock_timestamp()
         WHERE sha256 = ANY($2) AND state = 'archiving' AND holder = $1",
        &[&me.node_id, &shas],
    )
    .await
    .map_err(|e| db.fail("give back archival claims", e))?;
    tx.commit()
        .await
        .map_err(|e| db.fail("commit released claims", e))?;
    Ok(())
}
