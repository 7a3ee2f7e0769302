//! The entitlements as products see them, one immutable snapshot per change, shared by the
//! HTTP API and the gRPC service through a `tokio::sync::watch` channel.
//!
//! A snapshot's `version` is the SHA-256 of what a product is told (subscription and the
//! entitlements valid now, and their source), so equal versions mean equal answers, across
//! restarts and across the two APIs; it is the strong `ETag` of `GET /api/v1/entitlements`.
//! When the source merely confirms the same entitlements the snapshot is replaced (its
//! `confirmed_at` moves) but its version stays, so watchers are not woken.
//!
//! The snapshot shapes ([`Feed`], [`Served`], [`feed_of`]) are pure;
//! [`EntitlementsFeed`] keeps the channel current: every reader refreshes it when the store
//! changed, and `serve` runs [`EntitlementsFeed::follow`] so that watchers are woken at once
//! (and when a validity window opens or closes) even when no one reads.

use super::{EntitlementsState, EntitlementsStore};
use crate::clock::SharedClock;
use crate::protocol::{Entitlement, Entitlements};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where the entitlements came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Fetched from JES over the network.
    Connected,
    /// Imported from a signed entitlements bundle.
    AirGapped,
}

/// One version of the entitlements, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    /// Strong ETag of the content, without quotes.
    pub version: String,
    /// Where they came from.
    pub source: Source,
    /// The JPD.
    pub jpd_id: String,
    /// Subscription, tier and the entitlements valid at the snapshot's time.
    pub entitlements: Entitlements,
    /// When they were last received changed.
    pub fetched_at: DateTime<Utc>,
    /// When their source last confirmed them.
    pub confirmed_at: DateTime<Utc>,
}

/// What products are told right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feed {
    /// `jfconnect.enabled: false`: nothing is served.
    Disabled,
    /// No entitlements have been received yet.
    Empty,
    /// Entitlements to serve.
    Served(Served),
}

/// The shared handle: the latest snapshot, and a way to wait for the next.
pub(crate) type FeedReceiver = tokio::sync::watch::Receiver<Arc<Feed>>;

/// The answer to "may `product` use `feature` now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnswer {
    /// Entitled now.
    pub entitled: bool,
    /// End of validity, when entitled and it has one.
    pub valid_until: Option<String>,
}

/// Largest product or feature name a check accepts.
pub(crate) const MAX_NAME: usize = 256;

impl Feed {
    /// The version, when there are entitlements.
    pub fn version(&self) -> Option<&str> {
        match self {
            Feed::Served(s) => Some(&s.version),
            _ => None,
        }
    }
}

impl Served {
    /// Builds the snapshot of `stored` as served at `now` (validity windows applied).
    pub fn new(
        source: Source,
        jpd_id: &str,
        stored: &Entitlements,
        fetched_at: DateTime<Utc>,
        confirmed_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Served {
        let entitlements = crate::entitlements::valid_at(stored, now);
        Served {
            version: version_of(source, jpd_id, &entitlements),
            source,
            jpd_id: jpd_id.to_string(),
            entitlements,
            fetched_at,
            confirmed_at,
        }
    }

    /// Seconds since the source last confirmed these entitlements.
    pub fn age_seconds(&self, now: DateTime<Utc>) -> i64 {
        (now - self.confirmed_at).num_seconds().max(0)
    }

    /// May `product` use `feature` now? Windows are checked against `now` too, so an
    /// entitlement that ended since the snapshot was made is not answered yes.
    pub fn check(&self, product: &str, feature: &str, now: DateTime<Utc>) -> CheckAnswer {
        let found = crate::entitlements::valid_at(&self.entitlements, now)
            .entitlements
            .into_iter()
            .find(|e| e.product == product && e.feature == feature);
        CheckAnswer {
            entitled: found.is_some(),
            valid_until: found.and_then(|e| e.valid_until),
        }
    }
}

fn version_of(source: Source, jpd_id: &str, served: &Entitlements) -> String {
    #[derive(Serialize)]
    struct Identity<'a> {
        source: Source,
        jpd_id: &'a str,
        subscription_id: &'a str,
        subscription_type: &'a str,
        entitlements: &'a [Entitlement],
    }
    let identity = Identity {
        source,
        jpd_id,
        subscription_id: &served.subscription_id,
        subscription_type: &served.subscription_type,
        entitlements: &served.entitlements,
    };
    // Serializing plain structs and strings cannot fail; an empty input still hashes.
    let bytes = serde_json::to_vec(&identity).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..16])
}

/// The next instant after `now` at which a validity window of `stored` opens or closes, i.e.
/// when the served set changes without any new input.
pub(crate) fn next_boundary(stored: &Entitlements, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    stored
        .entitlements
        .iter()
        .flat_map(|e| [e.valid_from.as_deref(), e.valid_until.as_deref()])
        .flatten()
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t > now)
        .min()
}

/// What products are told, from the store's state at `now`, and when that answer changes by
/// itself (a validity window opening or closing).
pub(crate) fn feed_of(
    state: &EntitlementsState,
    source: Source,
    jpd_id: &str,
    now: DateTime<Utc>,
) -> (Feed, Option<DateTime<Utc>>) {
    match &state.current {
        None => (Feed::Empty, None),
        Some(c) => (
            Feed::Served(Served::new(
                source,
                jpd_id,
                &c.entitlements,
                c.fetched_at,
                c.confirmed_at,
                now,
            )),
            next_boundary(&c.entitlements, now),
        ),
    }
}

/// The live feed over an [`EntitlementsStore`].
pub struct EntitlementsFeed {
    store: Arc<EntitlementsStore>,
    clock: SharedClock,
    jpd_id: String,
    source: Source,
    enabled: bool,
    tx: watch::Sender<Arc<Feed>>,
    /// Store version and next window boundary the current snapshot was made for.
    made_for: Mutex<(u64, Option<DateTime<Utc>>)>,
    closing: watch::Sender<bool>,
}

impl EntitlementsFeed {
    /// A feed of `store`'s entitlements, or of nothing when the service is disabled.
    pub fn new(
        store: Arc<EntitlementsStore>,
        clock: SharedClock,
        jpd_id: &str,
        source: Source,
        enabled: bool,
    ) -> Self {
        let feed = EntitlementsFeed {
            tx: watch::Sender::new(Arc::new(Feed::Disabled)),
            made_for: Mutex::new((u64::MAX, None)),
            closing: watch::Sender::new(false),
            store,
            clock,
            jpd_id: jpd_id.to_string(),
            source,
            enabled,
        };
        feed.refresh();
        feed
    }

    /// The latest snapshot (refreshed first if the store changed or a window moved).
    pub fn current(&self) -> Arc<Feed> {
        self.refresh();
        self.tx.borrow().clone()
    }

    /// A receiver of every new snapshot.
    pub fn subscribe(&self) -> FeedReceiver {
        self.tx.subscribe()
    }

    /// How many receivers (held long-polls, watch streams, the gRPC server) hold the feed.
    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Rebuilds the snapshot when the store changed since the last one or a validity window
    /// boundary has passed; watchers are woken only when the snapshot differs.
    pub(crate) fn refresh(&self) {
        if !self.enabled {
            return;
        }
        let now = self.clock.now();
        let mut made_for = self.made_for.lock().unwrap_or_else(|e| e.into_inner());
        let version = self.store.version();
        let boundary_passed = made_for.1.is_some_and(|b| b <= now);
        if made_for.0 == version && !boundary_passed {
            return;
        }
        let (feed, next) = feed_of(&self.store.snapshot(), self.source, &self.jpd_id, now);
        *made_for = (version, next);
        self.tx.send_if_modified(|held| {
            if **held == feed {
                return false;
            }
            *held = Arc::new(feed);
            true
        });
    }

    /// Keeps the feed current until `stop` flips: on each store change at once, and at each
    /// window boundary. Then tells long-polls to answer ([`EntitlementsFeed::closing`]).
    pub async fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut changes = self.store.changes();
        loop {
            self.refresh();
            let next = self.made_for.lock().unwrap_or_else(|e| e.into_inner()).1;
            // Windows are checked at least hourly, in case the clock jumped.
            let wait = next
                .and_then(|b| (b - self.clock.now()).to_std().ok())
                .unwrap_or(std::time::Duration::ZERO)
                .min(std::time::Duration::from_secs(3600))
                .max(std::time::Duration::from_millis(10));
            let wait = if next.is_none() {
                std::time::Duration::from_secs(3600)
            } else {
                wait
            };
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        self.close();
    }

    /// Marks the feed as shutting down: held long-polls answer now.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// A receiver that turns true when the service shuts down.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

/// Checks a product or feature name from a request: non-empty, at most [`MAX_NAME`] bytes.
pub(crate) fn check_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is required"));
    }
    if value.len() > MAX_NAME {
        return Err(format!("{what} is longer than {MAX_NAME} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ent(product: &str, feature: &str, from: Option<&str>, until: Option<&str>) -> Entitlement {
        Entitlement {
            product: product.into(),
            feature: feature.into(),
            valid_from: from.map(Into::into),
            valid_until: until.map(Into::into),
        }
    }

    fn stored(entitlements: Vec<Entitlement>) -> Entitlements {
        Entitlements {
            subscription_id: "sub".into(),
            subscription_type: "enterprise_plus".into(),
            jpd_id: "jpd-1".into(),
            issued_at: "2026-01-01T00:00:00Z".into(),
            entitlements,
        }
    }

    fn served(e: &Entitlements, now: &str) -> Served {
        let t = at("2026-01-01T00:00:00Z");
        Served::new(Source::Connected, "jpd-1", e, t, t, at(now))
    }

    #[test]
    fn version_names_the_content_not_the_confirmation_time() {
        let e = stored(vec![ent("xray", "scan", None, None)]);
        let a = served(&e, "2026-02-01T00:00:00Z");
        let mut b = served(&e, "2026-03-01T00:00:00Z");
        b.confirmed_at = at("2026-03-01T00:00:00Z");
        assert_eq!(a.version, b.version);
        assert_eq!(a.version.len(), 32);
        let c = served(
            &stored(vec![ent("xray", "sca", None, None)]),
            "2026-02-01T00:00:00Z",
        );
        assert_ne!(a.version, c.version);
        let airgapped = Served::new(
            Source::AirGapped,
            "jpd-1",
            &e,
            a.fetched_at,
            a.fetched_at,
            a.fetched_at,
        );
        assert_ne!(a.version, airgapped.version);
    }

    #[test]
    fn a_window_closing_changes_the_version() {
        let e = stored(vec![
            ent("xray", "scan", None, None),
            ent("artifactory", "ha", None, Some("2026-06-01T00:00:00Z")),
        ]);
        let before = served(&e, "2026-05-31T23:59:59Z");
        let after = served(&e, "2026-06-01T00:00:00Z");
        assert_ne!(before.version, after.version);
        assert_eq!(after.entitlements.entitlements.len(), 1);
        assert_eq!(
            next_boundary(&e, at("2026-05-01T00:00:00Z")),
            Some(at("2026-06-01T00:00:00Z"))
        );
        assert_eq!(next_boundary(&e, at("2026-06-01T00:00:00Z")), None);
    }

    #[test]
    fn check_answers_with_the_window_end() {
        let e = stored(vec![
            ent("xray", "scan", None, None),
            ent("artifactory", "ha", None, Some("2026-06-01T00:00:00Z")),
        ]);
        let s = served(&e, "2026-05-01T00:00:00Z");
        let now = at("2026-05-01T00:00:00Z");
        assert_eq!(
            s.check("artifactory", "ha", now),
            CheckAnswer {
                entitled: true,
                valid_until: Some("2026-06-01T00:00:00Z".into())
            }
        );
        assert!(s.check("xray", "scan", now).entitled);
        assert!(!s.check("xray", "nope", now).entitled);
        assert!(
            !s.check("artifactory", "ha", at("2026-06-02T00:00:00Z"))
                .entitled
        );
        assert_eq!(s.age_seconds(now), (now - s.confirmed_at).num_seconds());
    }

    #[test]
    fn names_are_required_and_bounded() {
        assert!(check_name("product", "xray").is_ok());
        assert!(check_name("product", "").is_err());
        assert!(check_name("feature", &"x".repeat(MAX_NAME + 1)).is_err());
    }
}
