//! What has been imported before, and the checks that depend on it and on the clock.
//!
//! Replay and rollback protection needs memory: the last sequence accepted, the newest
//! `created` time seen, and every bundle id imported. [`check_policy`] is a pure function of
//! the manifest, the expectations and that history; [`ImportStore::commit`] changes a history file
//! (the rule is `state::store::next_history`, which the import's state store applies too), and
//! the caller runs it only after it applied the bundle, so a refused (or failed) import leaves
//! the disk as it was. [`ImportState`] itself lives in `state`, beside the stores that keep it.

use std::path::{Path, PathBuf};

use chrono::Duration;

use super::error::BundleError;
use super::kind::Kind;
use super::manifest::{format_time, Manifest};
use crate::clock::SharedClock;

/// Allowed clock skew for the rollback guard.
pub(crate) const CLOCK_SKEW: Duration = Duration::minutes(5);

pub use crate::state::ImportState;

/// What the importing side expects of a bundle.
#[derive(Clone)]
pub struct Expectations {
    /// Kind expected here; `None` accepts any (e.g. `bundle verify`).
    pub kind: Option<Kind>,
    /// This JPD's id; `None` accepts any (e.g. the vendor side).
    pub jpd_id: Option<String>,
    /// "Now", for expiry and the rollback guard.
    pub clock: SharedClock,
    /// Import history; `None` skips the sequence and replay checks (verification only).
    pub history: Option<ImportState>,
}

/// Checks kind, JPD, expiry, clock rollback, replay and sequence, in that order.
pub(crate) fn check_policy(m: &Manifest, expect: &Expectations) -> Result<(), BundleError> {
    if let Some(kind) = expect.kind.filter(|k| *k != m.kind) {
        return Err(BundleError::WrongKind {
            expected: kind,
            actual: m.kind,
        });
    }
    if let Some(jpd) = expect.jpd_id.as_ref().filter(|j| **j != m.jpd_id) {
        return Err(BundleError::WrongJpd {
            expected: jpd.clone(),
            actual: m.jpd_id.clone(),
        });
    }
    let now = expect.clock.now();
    let expires = m.expires()?;
    if now >= expires {
        return Err(BundleError::Expired {
            expires: m.expires.clone(),
        });
    }
    // A clock earlier than a time already seen (in history or in this very bundle) means the
    // clock was set back, which would let expired bundles in again.
    let created = m.created()?;
    let history = expect.history.as_ref();
    let seen = history
        .and_then(|h| h.newest_created)
        .map_or(created, |h| h.max(created));
    if now < seen - CLOCK_SKEW {
        return Err(BundleError::ClockRollback {
            now: format_time(now),
            seen: format_time(seen),
        });
    }
    if let Some(h) = history {
        if h.imported_ids.contains(&m.bundle_id) {
            return Err(BundleError::AlreadyImported(m.bundle_id.clone()));
        }
        match h.last_sequence {
            Some(last) if m.sequence < last => {
                return Err(BundleError::OlderSequence {
                    sequence: m.sequence,
                    last,
                })
            }
            Some(last) if m.sequence == last => return Err(BundleError::SameSequence(last)),
            _ => {}
        }
    }
    Ok(())
}

/// The import history file (e.g. `<data_dir>/state/bundle-import-entitlements.json`).
#[derive(Debug, Clone)]
pub struct ImportStore {
    path: PathBuf,
}

impl ImportStore {
    /// The history kept at `path`.
    pub fn new(path: impl Into<PathBuf>) -> ImportStore {
        ImportStore { path: path.into() }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current history (empty if none yet). A damaged file is an error, never "empty":
    /// forgetting the history would re-open replay.
    pub fn load(&self) -> Result<ImportState, BundleError> {
        Ok(crate::state::load(&self.path)?.unwrap_or_default())
    }

    /// Records `m` as imported, after re-checking replay and sequence against the history on
    /// disk now (another import may have committed meanwhile). Durable when it returns.
    pub fn commit(&self, m: &Manifest) -> Result<(), BundleError> {
        let next = crate::state::store::next_history(
            self.load()?,
            &m.bundle_id,
            m.sequence,
            m.created()?,
        )?;
        crate::state::save(&self.path, &next)?;
        Ok(())
    }
}
