//! Every node follows the shared entitlements: LISTEN for the commit-time notification, with a
//! cheap version poll as the fallback (a notification lost to a dropped connection is caught
//! by the next poll). The last good copy stays in memory while the database is away, and the
//! watcher says so, so readiness can report "degraded" instead of serving nothing.
//!
//! The same connection LISTENs for an import waiting in the shared inbox and for a license set
//! through the API; the watcher only counts those announcements ([`Followed::imports`],
//! [`Followed::license`]) and whoever acts on them reads the database itself.

use super::db::DbError;
use super::store::{
    PgStore, SharedEntitlements, ENTITLEMENTS_CHANNEL, IMPORTS_CHANNEL, LICENSE_CHANNEL,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What the watcher publishes.
#[derive(Debug, Clone, Default)]
pub struct Followed {
    /// The newest entitlements seen (kept while the database is away).
    pub current: Option<Arc<SharedEntitlements>>,
    /// True while the database answers.
    pub connected: bool,
    /// Why the database is not answering, in one sentence.
    pub last_error: Option<String>,
    /// Raised by every announced import, and at every (re)connection (one may have been
    /// announced while the connection was down).
    pub imports: u64,
    /// Raised by every announced license, and at every (re)connection.
    pub license: u64,
}

/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Follows the shared entitlements until `shutdown` turns true; `poll_every` bounds how late a
/// change is seen when notifications are lost.
pub fn follow(
    store: PgStore,
    poll_every: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Followed> {
    let (tx, rx) = watch::channel(Followed::default());
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let outcome = tokio::select! {
                r = follow_once(&store, poll_every, &tx, &mut backoff) => r,
                _ = shutdown.changed() => return,
            };
            if let Err(e) = outcome {
                let reason = e.to_string();
                tx.send_if_modified(|f| {
                    let changed = f.connected || f.last_error.as_deref() != Some(&reason);
                    if f.connected {
                        tracing::warn!(error = %reason, "lost the shared database; serving the last good entitlements");
                    }
                    f.connected = false;
                    f.last_error = Some(reason.clone());
                    changed
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    rx
}

async fn follow_once(
    store: &PgStore,
    poll_every: Duration,
    tx: &watch::Sender<Followed>,
    backoff: &mut Duration,
) -> Result<(), DbError> {
    let mut conn = store.db().dedicated().await?;
    conn.client
        .batch_execute(&format!(
            "LISTEN {ENTITLEMENTS_CHANNEL}; LISTEN {IMPORTS_CHANNEL}; LISTEN {LICENSE_CHANNEL}"
        ))
        .await
        .map_err(|e| store.db().fail("listen for entitlements changes", e))?;
    let mut known = refresh(store, tx, None).await?;
    if !tx.borrow().connected {
        tracing::info!("following the shared entitlements");
    }
    tx.send_modify(|f| {
        f.connected = true;
        f.last_error = None;
        f.imports += 1;
        f.license += 1;
    });
    *backoff = Duration::from_millis(200);
    let mut tick = tokio::time::interval(poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            n = conn.notifications.recv() => {
                let Some(n) = n else {
                    return Err(DbError::Unavailable {
                        url: store.db().url().to_string(),
                        reason: "the connection listening for changes closed".into(),
                    });
                };
                match n.channel() {
                    IMPORTS_CHANNEL => {
                        tx.send_modify(|f| f.imports += 1);
                        continue;
                    }
                    LICENSE_CHANNEL => {
                        tx.send_modify(|f| f.license += 1);
                        continue;
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {}
        }
        known = refresh(store, tx, known).await?;
    }
}

/// Loads the entitlements when their version moved past `known`; returns the version now held.
async fn refresh(
    store: &PgStore,
    tx: &watch::Sender<Followed>,
    known: Option<i64>,
) -> Result<Option<i64>, DbError> {
    let version = store.entitlements_version().await?;
    if known == Some(version) {
        return Ok(known);
    }
    let loaded = store.entitlements().await?;
    let now = loaded.as_ref().map(|e| e.version);
    tx.send_modify(|f| f.current = loaded.map(Arc::new));
    Ok(now.or(Some(0)))
}
