//! The sequences of the bundles a JPD writes (air-gapped mode): one counter per bundle kind in
//! `jfconnect.bundle_sequences`, shared by every node, so two nodes never give two bundles one
//! number and the vendor never sees a number go back. No lease is needed: taking a number is
//! one statement, and a number taken but never used leaves a gap, which the vendor accepts.

use super::db::{Db, DbError};

/// Takes the next number of `kind` above both the shared counter and `local_last` (the
/// node's own last number, so a node that wrote bundles alone before never goes back).
pub async fn next(db: &Db, node: &str, kind: &str, local_last: u64) -> Result<u64, DbError> {
    let client = db.client().await?;
    let local = i64::try_from(local_last).unwrap_or(i64::MAX - 1);
    let row = client
        .query_one(
            "INSERT INTO jfconnect.bundle_sequences AS s (kind, last, updated_at, updated_by)
             VALUES ($1, $3::bigint + 1, clock_timestamp(), $2)
             ON CONFLICT (kind) DO UPDATE SET last = greatest(s.last, $3::bigint) + 1,
                 updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by
             RETURNING last",
            &[&kind, &node, &local],
        )
        .await
        .map_err(|e| db.fail("take the next bundle sequence", e))?;
    let last: i64 = row.get(0);
    Ok(u64::try_from(last).unwrap_or(0))
}
