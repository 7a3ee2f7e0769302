//! Leases with fencing: which node runs a job, and proof that a node that lost its lease can no
//! longer write.
//!
//! A lease is one row (job, holder node, epoch, expiry). Taking and renewing it is a single
//! conditional statement evaluated by the database against its own clock, so node clocks never
//! matter: the row changes hands only when it has expired, and every change of hands raises the
//! epoch. A leaseholder's writes run in a transaction that first locks its lease row and checks
//! holder, epoch and expiry ([`check_fence`]); a node that was paused past its TTL and wakes up
//! finds a higher epoch and is refused with [`Fenced`]. Because the check holds a share lock
//! until commit, a successor cannot take the lease while a write of the old epoch is in flight.
//!
//! No advisory or session lock is involved, so this holds behind a transaction-mode pooler and
//! across a database failover.

use super::db::{Db, DbError};
pub use super::fence::{Fence, Fenced};
use std::time::Duration;

/// Lease timing. Defaults: TTL 15 s, renewed every 5 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease lasts without renewal (database time).
    pub ttl: Duration,
    /// How often the holder renews it.
    pub renew_every: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }
}

/// A lease as seen by `GET /api/v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LeaseView {
    /// The job.
    pub job: String,
    /// Its holder.
    pub holder: String,
    /// Its epoch.
    pub epoch: i64,
    /// Milliseconds until it expires (negative: expired that long ago).
    pub expires_in_ms: i64,
}

/// Takes `job`'s lease for `node` if it is free or expired, or renews it if `node` holds it at
/// epoch `held`. One statement, judged in database time. `None`: someone else holds it.
/// A returned epoch different from `held` means the lease was (re)taken: writes of the old
/// epoch are refused from now on.
pub async fn acquire_or_renew(
    db: &Db,
    job: &str,
    node: &str,
    held: Option<i64>,
    ttl: Duration,
) -> Result<Option<Fence>, DbError> {
    let client = db.client().await?;
    let ttl_secs = ttl.as_secs_f64();
    let row = client
        .query_opt(
            "INSERT INTO jfconnect.leases AS l (job, holder, epoch, acquired_at, expires_at)
             VALUES ($1, $2, 1, clock_timestamp(), clock_timestamp() + make_interval(secs => $3))
             ON CONFLICT (job) DO UPDATE SET
                 holder = EXCLUDED.holder,
                 epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.epoch = $4
                                   AND l.expires_at > clock_timestamp()
                              THEN l.epoch ELSE l.epoch + 1 END,
                 acquired_at = CASE WHEN l.holder = EXCLUDED.holder AND l.epoch = $4
                                         AND l.expires_at > clock_timestamp()
                                    THEN l.acquired_at ELSE EXCLUDED.acquired_at END,
                 expires_at = EXCLUDED.expires_at
             WHERE (l.holder = EXCLUDED.holder AND l.epoch = $4 AND l.expires_at > clock_timestamp())
                OR l.expires_at <= clock_timestamp()
             RETURNING l.epoch",
            &[&job, &node, &ttl_secs, &held],
        )
        .await
        .map_err(|e| db.fail("take or renew a lease", e))?;
    Ok(row.map(|r| Fence {
        job: job.to_string(),
        holder: node.to_string(),
        epoch: r.get(0),
    }))
}

/// Gives the lease up at once (on shutdown) so another node need not wait for the TTL. The
/// epoch stays; the next holder raises it.
pub async fn release(db: &Db, fence: &Fence) -> Result<(), DbError> {
    let client = db.client().await?;
    client
        .execute(
            "UPDATE jfconnect.leases SET expires_at = clock_timestamp()
             WHERE job = $1 AND holder = $2 AND epoch = $3",
            &[&fence.job, &fence.holder, &fence.epoch],
        )
        .await
        .map_err(|e| db.fail("release a lease", e))?;
    Ok(())
}

/// Inside a leaseholder's write transaction: locks the lease row until commit and refuses the
/// write unless `fence` is still the live lease.
pub(crate) async fn check_fence(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    fence: &Fence,
) -> Result<(), DbError> {
    let row = tx
        .query_opt(
            "SELECT holder, epoch, expires_at > clock_timestamp()
             FROM jfconnect.leases WHERE job = $1 FOR SHARE",
            &[&fence.job],
        )
        .await
        .map_err(|e| db.fail("check a lease", e))?;
    match row {
        Some(r) => {
            let holder: String = r.get(0);
            let epoch: i64 = r.get(1);
            let live: bool = r.get(2);
            if holder == fence.holder && epoch == fence.epoch && live {
                Ok(())
            } else {
                Err(Fenced {
                    fence: fence.clone(),
                    current: (live || holder != fence.holder || epoch != fence.epoch)
                        .then_some((holder, epoch)),
                }
                .into())
            }
        }
        None => Err(Fenced {
            fence: fence.clone(),
            current: None,
        }
        .into()),
    }
}

/// Every lease with its holder, epoch and remaining time.
pub async fn leases(db: &Db) -> Result<Vec<LeaseView>, DbError> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT job, holder, epoch,
                    (extract(epoch FROM (expires_at - clock_timestamp())) * 1000)::bigint
             FROM jfconnect.leases ORDER BY job",
            &[],
        )
        .await
        .map_err(|e| db.fail("read the leases", e))?;
    Ok(rows
        .iter()
        .map(|r| LeaseView {
            job: r.get(0),
            holder: r.get(1),
            epoch: r.get(2),
            expires_in_ms: r.get(3),
        })
        .collect())
}
