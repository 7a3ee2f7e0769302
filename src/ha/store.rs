//! The shared state of one JPD in PostgreSQL: identity, entitlements, schedules, bundle import
//! history and the import inbox.
//!
//! Identity (JPD id, signing key pair, API and admin tokens, license) is created once by the
//! first node and read by every other. Entitlements and schedules are written only by the
//! job's leaseholder, through [`check_fence`], and every entitlements write raises a version and
//! notifies `jfconnect_entitlements` in the same transaction, so other nodes pick it up at
//! commit. Bundle imports may happen on any node; the sequence check is one compare-and-set in
//! the transaction that records the import and puts its verified payload in the inbox, which
//! the leaseholder's entitlements job applies (marking it applied in the transaction that
//! stores the entitlements). Every secret, and every inbox payload, is sealed with the master
//! key. [`PgStore`] is the shared one of the two `state::StateStore`s.

use super::db::{Db, DbError, Tx};
use super::lease::{check_fence, Fence};
use super::sealing::{MasterKey, SealError};
use crate::entitlements::EntitlementsState;
use crate::secret::Secret;
use crate::state::{
    ImportCommit, ImportConflict, ImportState, ScheduleChange, ScheduleDocs, StateError, StateStore,
};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The channel other nodes LISTEN on for entitlements changes (payload: the new version).
pub(crate) const ENTITLEMENTS_CHANNEL: &str = "jfconnect_entitlements";
/// The channel an import waiting in the shared inbox is announced on (payload: its kind), at
/// the commit that records it: the leaseholder applies it at once.
pub(crate) const IMPORTS_CHANNEL: &str = "jfconnect_imports";
/// The channel a license set through the API is announced on, at the commit that stores it:
/// every node takes it into its `license.api` at once.
pub(crate) const LICENSE_CHANNEL: &str = "jfconnect_license";

const KEY_CHECK: &[u8] = b"jfconnect master key check";

/// The JPD's identity, the same on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The JPD id.
    pub jpd_id: String,
    /// The JPD's bundle signing public key (minisign public key file text).
    pub signing_public: String,
    /// Its secret half (minisign secret key file text).
    pub signing_secret: Secret,
    /// Token for reading the API.
    pub api_token: Option<Secret>,
    /// Token for changing state through the API.
    pub admin_token: Option<Secret>,
    /// The license in effect, when set through the API.
    pub license: Option<Secret>,
    /// How it came to be: `created` or `imported from the data folder of node …`.
    pub origin: String,
    /// Which node made it.
    pub created_by: String,
}

/// The two API token scopes kept per JPD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenScope {
    /// `api.token_file`: reads.
    Api,
    /// `api.admin_token_file`: state changes.
    Admin,
}

impl TokenScope {
    fn column(self) -> &'static str {
        match self {
            TokenScope::Api => "api_token",
            TokenScope::Admin => "admin_token",
        }
    }
}

/// The entitlements state as stored, with its version and the digest of what is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedEntitlements {
    /// The state.
    pub state: EntitlementsState,
    /// Raised by every write.
    pub version: i64,
    /// SHA-256 of the entitlements served (hex), the same on every node.
    pub digest: String,
}

/// When the JPD's license was last set, and the fingerprint of the one JES refused since.
pub type LicenseStamp = (Option<chrono::DateTime<chrono::Utc>>, Option<String>);

/// The PostgreSQL store, used by one node.
#[derive(Clone)]
pub struct PgStore {
    db: Db,
    key: Arc<MasterKey>,
    node: String,
}

/// The digest every node reports for the entitlements it serves.
pub fn entitlements_digest(state: &EntitlementsState) -> String {
    let body = serde_json::to_vec(&state.current).unwrap_or_default();
    hex::encode(Sha256::digest(&body))
}

fn seq_i64(sequence: u64) -> Result<i64, DbError> {
    i64::try_from(sequence).map_err(|_| DbError::Damaged {
        what: "bundle sequence",
        reason: format!("{sequence} is beyond what the database stores"),
    })
}

impl PgStore {
    /// The store of node `node` on `db`, sealing secrets with `key`.
    pub fn new(db: Db, key: Arc<MasterKey>, node: &str) -> PgStore {
        PgStore {
            db,
            key,
            node: node.to_string(),
        }
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    fn seal_opt(&self, purpose: &str, s: Option<&Secret>) -> Result<Option<Vec<u8>>, SealError> {
        s.map(|s| self.key.seal_secret(purpose, s)).transpose()
    }

    fn open_opt(&self, purpose: &str, b: Option<Vec<u8>>) -> Result<Option<Secret>, SealError> {
        b.map(|b| self.key.open_secret(purpose, &b)).transpose()
    }

    /// The identity, if one was created. Refused when the master key differs from the one the
    /// identity was sealed with.
    pub async fn identity(&self) -> Result<Option<Identity>, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT jpd_id, key_check, signing_public, signing_secret, api_token,
                        admin_token, license, origin, created_by
                 FROM jfconnect.identity",
                &[],
            )
            .await
            .map_err(|e| self.db.fail("read the JPD identity", e))?;
        let Some(r) = row else { return Ok(None) };
        let check: Vec<u8> = r.get(1);
        if self.key.open("key_check", &check).ok().as_deref() != Some(KEY_CHECK) {
            return Err(SealError::WrongKeyOrDamaged {
                purpose: "secrets (this node's shared.security.masterKeyFile differs from the one the first node used)".into(),
            }
            .into());
        }
        Ok(Some(Identity {
            jpd_id: r.get(0),
            signing_public: r.get(2),
            signing_secret: self
                .key
                .open_secret("signing_secret", &r.get::<_, Vec<u8>>(3))?,
            api_token: self.open_opt("api_token", r.get(4))?,
            admin_token: self.open_opt("admin_token", r.get(5))?,
            license: self.open_opt("license", r.get(6))?,
            origin: r.get(7),
            created_by: r.get(8),
        }))
    }

    /// Stores `fresh` as the identity unless one exists, then returns the one in effect and
    /// whether it was this call that stored it. Two nodes racing both get the winner's.
    pub async fn ensure_identity(&self, fresh: &Identity) -> Result<(Identity, bool), DbError> {
        if let Some(existing) = self.identity().await? {
            return Ok((existing, false));
        }
        let client = self.db.client().await?;
        let inserted = client
            .execute(
                "INSERT INTO jfconnect.identity (jpd_id, created_by, origin, key_check,
                     signing_public, signing_secret, api_token, admin_token, license, license_set_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                         CASE WHEN $9::bytea IS NULL THEN NULL ELSE clock_timestamp() END)
                 ON CONFLICT (singleton) DO NOTHING",
                &[
                    &fresh.jpd_id,
                    &self.node,
                    &fresh.origin,
                    &self.key.seal("key_check", KEY_CHECK)?,
                    &fresh.signing_public,
                    &self.key.seal_secret("signing_secret", &fresh.signing_secret)?,
                    &self.seal_opt("api_token", fresh.api_token.as_ref())?,
                    &self.seal_opt("admin_token", fresh.admin_token.as_ref())?,
                    &self.seal_opt("license", fresh.license.as_ref())?,
                ],
            )
            .await
            .map_err(|e| self.db.fail("store the JPD identity", e))?;
        drop(client);
        let current = self.identity().await?.ok_or(DbError::Damaged {
            what: "JPD identity",
            reason: "it vanished right after it was stored".into(),
        })?;
        if inserted == 1 {
            tracing::info!(jpd_id = %current.jpd_id, origin = %current.origin, "JPD identity stored in the shared database");
        }
        Ok((current, inserted == 1))
    }

    /// Gives the JPD a generated token of one scope when its identity has none yet (an
    /// identity stored before that scope existed, or by a node with a configured token file),
    /// then answers the JPD's: `token` when it was stored, else the one another node stored.
    pub(crate) async fn fill_token(
        &self,
        scope: TokenScope,
        token: &Secret,
    ) -> Result<Secret, DbError> {
        let column = scope.column();
        let client = self.db.client().await?;
        client
            .execute(
                &format!("UPDATE jfconnect.identity SET {column} = $1 WHERE {column} IS NULL"),
                &[&self.key.seal_secret(column, token)?],
            )
            .await
            .map_err(|e| self.db.fail("store a token", e))?;
        drop(client);
        let identity = self.identity().await?;
        identity
            .and_then(|i| match scope {
                TokenScope::Api => i.api_token,
                TokenScope::Admin => i.admin_token,
            })
            .ok_or(DbError::Damaged {
                what: "JPD identity",
                reason: format!("its {column} is missing right after it was stored"),
            })
    }

    /// Sets (or clears) the license in effect for the whole JPD, and announces it on
    /// [`LICENSE_CHANNEL`] in the same transaction.
    pub async fn set_license(&self, license: Option<&Secret>) -> Result<(), DbError> {
        let sealed = self.seal_opt("license", license)?;
        let mut client = self.db.client().await?;
        let tx = self
            .db
            .transaction(&mut client, "store the license")
            .await?;
        let n = tx
            .execute(
                "UPDATE jfconnect.identity
                 SET license = $1, license_set_at = clock_timestamp(), license_refused = NULL",
                &[&sealed],
            )
            .await
            .map_err(|e| tx.fail(e))?;
        if n == 0 {
            return Err(DbError::Damaged {
                what: "JPD identity",
                reason: "there is none yet to attach the license to".into(),
            });
        }
        tx.execute("SELECT pg_notify($1, '')", &[&LICENSE_CHANNEL])
            .await
            .map_err(|e| tx.fail(e))?;
        tx.commit().await
    }

    /// When the license was last set for the whole JPD (`None`: never) and the fingerprint of
    /// the license JES refused since: a cheap look, at a notification and as the fallback poll.
    pub async fn license_stamp(&self) -> Result<LicenseStamp, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT license_set_at, license_refused FROM jfconnect.identity",
                &[],
            )
            .await
            .map_err(|e| self.db.fail("read when the license was set", e))?;
        Ok(row.map_or((None, None), |r| (r.get(0), r.get(1))))
    }

    /// Records, as leaseholder `fence`, that JES refused the license whose fingerprint is
    /// `fingerprint`: every node sets its copy aside and none registers it again until a
    /// license is set anew (which clears this). Announced on [`LICENSE_CHANNEL`].
    pub async fn refuse_license(&self, fence: &Fence, fingerprint: &str) -> Result<(), DbError> {
        let mut client = self.db.client().await?;
        let tx = self
            .db
            .transaction(&mut client, "record a refused license")
            .await?;
        check_fence(&self.db, &tx, fence).await?;
        tx.execute(
            "UPDATE jfconnect.identity SET license_refused = $1",
            &[&fingerprint],
        )
        .await
        .map_err(|e| tx.fail(e))?;
        tx.execute("SELECT pg_notify($1, '')", &[&LICENSE_CHANNEL])
            .await
            .map_err(|e| tx.fail(e))?;
        tx.commit().await
    }

    /// The stored entitlements state; `None` before the first write.
    pub async fn entitlements(&self) -> Result<Option<SharedEntitlements>, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT state, version, digest FROM jfconnect.entitlements",
                &[],
            )
            .await
            .map_err(|e| self.db.fail("read the entitlements", e))?;
        let Some(r) = row else { return Ok(None) };
        let plain = self.key.open("entitlements", &r.get::<_, Vec<u8>>(0))?;
        let state = serde_json::from_slice(&plain).map_err(|e| DbError::Damaged {
            what: "entitlements",
            reason: e.to_string(),
        })?;
        Ok(Some(SharedEntitlements {
            state,
            version: r.get(1),
            digest: r.get(2),
        }))
    }

    /// The entitlements version (0 before the first write): a cheap poll.
    pub(crate) async fn entitlements_version(&self) -> Result<i64, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt("SELECT version FROM jfconnect.entitlements", &[])
            .await
            .map_err(|e| self.db.fail("read the entitlements version", e))?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    /// Writes the entitlements state as leaseholder `fence`; refused with `Fenced` when the
    /// lease moved on. Returns the new version.
    pub async fn save_entitlements(
        &self,
        fence: &Fence,
        state: &EntitlementsState,
    ) -> Result<i64, DbError> {
        let mut client = self.db.client().await?;
        let tx = self
            .db
            .transaction(&mut client, "store the entitlements")
            .await?;
        check_fence(&self.db, &tx, fence).await?;
        let version = self.write_entitlements(&tx, fence.epoch, state).await?;
        let tag = state.current.as_ref().and_then(|c| c.etag.clone());
        // The imports these entitlements came from (and older ones) are applied: their
        // importers, waiting on another node, may answer success now.
        tx.execute(
            "UPDATE jfconnect.import_inbox
             SET outcome = 'applied', done_at = clock_timestamp(), done_by = $2
             WHERE done_at IS NULL AND kind = 'entitlements'
               AND sequence <= (SELECT max(sequence) FROM jfconnect.import_inbox
                                WHERE kind = 'entitlements' AND tag = $1)",
            &[&tag, &self.node],
        )
        .await
        .map_err(|e| tx.fail(e))?;
        tx.commit().await?;
        Ok(version)
    }

    async fn write_entitlements(
        &self,
        tx: &Tx<'_>,
        epoch: i64,
        state: &EntitlementsState,
    ) -> Result<i64, DbError> {
        let plain = serde_json::to_vec(state).map_err(|e| DbError::Damaged {
            what: "entitlements",
            reason: e.to_string(),
        })?;
        let sealed = self.key.seal("entitlements", &plain)?;
        let digest = entitlements_digest(state);
        let version: i64 = tx
            .query_one(
                "INSERT INTO jfconnect.entitlements AS e
                     (state, digest, version, epoch, updated_at, updated_by)
                 VALUES ($1, $2, 1, $3, clock_timestamp(), $4)
                 ON CONFLICT (singleton) DO UPDATE SET
                     state = EXCLUDED.state, digest = EXCLUDED.digest, version = e.version + 1,
                     epoch = EXCLUDED.epoch, updated_at = EXCLUDED.updated_at,
                     updated_by = EXCLUDED.updated_by
                 RETURNING version",
                &[&sealed, &digest, &epoch, &self.node],
            )
            .await
            .map_err(|e| self.db.fail("store the entitlements", e))?
            .get(0);
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&ENTITLEMENTS_CHANNEL, &version.to_string()],
        )
        .await
        .map_err(|e| self.db.fail("announce the entitlements", e))?;
        Ok(version)
    }

    /// Stores `state` as the shared entitlements only when none are stored yet (a former single
    /// node's data folder brought into an empty database); true when it did.
    pub(crate) async fn import_entitlements_if_empty(
        &self,
        state: &EntitlementsState,
    ) -> Result<bool, DbError> {
        let mut client = self.db.client().await?;
        let tx = self
            .db
            .transaction(&mut client, "import the data folder's entitlements")
            .await?;
        tx.execute("LOCK TABLE jfconnect.entitlements IN EXCLUSIVE MODE", &[])
            .await
            .map_err(|e| tx.fail(e))?;
        let empty = tx
            .query_opt("SELECT 1 FROM jfconnect.entitlements", &[])
            .await
            .map_err(|e| tx.fail(e))?
            .is_none();
        if empty {
            self.write_entitlements(&tx, 0, state).await?;
        }
        tx.commit().await?;
        Ok(empty)
    }

    /// The schedule documents this node reads: the JPD's (leased jobs) and its own.
    pub async fn schedules(&self) -> Result<ScheduleDocs, DbError> {
        let client = self.db.client().await?;
        let rows = client
            .query(
                "SELECT job, node, body FROM jfconnect.schedules WHERE node = '' OR node = $1",
                &[&self.node],
            )
            .await
            .map_err(|e| self.db.fail("read the schedules", e))?;
        let mut docs = ScheduleDocs::default();
        for r in rows {
            let node: String = r.get(1);
            let owner = if node.is_empty() {
                &mut docs.jpd
            } else {
                &mut docs.node
            };
            owner.insert(r.get(0), r.get(2));
        }
        Ok(docs)
    }

    /// Changes one job's schedule document in one transaction: the JPD's, as leaseholder
    /// `fence` (refused with `Fenced` when the lease moved on), or this node's own.
    pub async fn update_schedule(
        &self,
        job: &str,
        fence: Option<&Fence>,
        change: ScheduleChange<'_>,
    ) -> Result<(), DbError> {
        let mut client = self.db.client().await?;
        let tx = self.db.transaction(&mut client, "store a schedule").await?;
        let node = match fence {
            Some(f) if f.job != job => {
                return Err(DbError::Damaged {
                    what: "schedule",
                    reason: format!("the lease of job {} cannot write job {job}'s", f.job),
                })
            }
            Some(f) => {
                check_fence(&self.db, &tx, f).await?;
                ""
            }
            None => self.node.as_str(),
        };
        let stored = tx
            .query_opt(
                "SELECT body FROM jfconnect.schedules WHERE job = $1 AND node = $2 FOR UPDATE",
                &[&job, &node],
            )
            .await
            .map_err(|e| tx.fail(e))?
            .map(|r| r.get::<_, serde_json::Value>(0));
        let body = change(stored);
        tx.execute(
            "INSERT INTO jfconnect.schedules (job, node, body, epoch, updated_at, updated_by)
             VALUES ($1, $2, $3, $4, clock_timestamp(), $5)
             ON CONFLICT (job, node) DO UPDATE SET body = EXCLUDED.body, epoch = EXCLUDED.epoch,
                 updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by",
            &[&job, &node, &body, &fence.map(|f| f.epoch), &self.node],
        )
        .await
        .map_err(|e| tx.fail(e))?;
        tx.commit().await
    }

    /// The import history of one bundle kind.
    pub async fn import_history(&self, kind: &str) -> Result<ImportState, DbError> {
        let client = self.db.client().await?;
        let head = client
            .query_opt(
                "SELECT last_sequence, newest_created FROM jfconnect.import_history WHERE kind = $1",
                &[&kind],
            )
            .await
            .map_err(|e| self.db.fail("read the import history", e))?;
        let ids = client
            .query(
                "SELECT bundle_id FROM jfconnect.imported_bundles WHERE kind = $1",
                &[&kind],
            )
            .await
            .map_err(|e| self.db.fail("read the import history", e))?;
        let last: Option<i64> = head.as_ref().and_then(|r| r.get(0));
        Ok(ImportState {
            last_sequence: last.map(|s| s.max(0) as u64),
            newest_created: head.and_then(|r| r.get(1)),
            imported_ids: ids.iter().map(|r| r.get(0)).collect(),
        })
    }

    /// Records an import: refuses a bundle id seen before and any sequence not above the last
    /// one, as one compare-and-set in one transaction, together with the import's payload
    /// (sealed) in the inbox. A refusal changes nothing.
    pub async fn commit_import(
        &self,
        c: &ImportCommit<'_>,
    ) -> Result<Result<(), ImportConflict>, DbError> {
        let sequence = seq_i64(c.sequence)?;
        let entry = serde_json::to_vec(c.entry).map_err(|e| DbError::Damaged {
            what: "import inbox entry",
            reason: e.to_string(),
        })?;
        let sealed = self.key.seal("inbox_entry", &entry)?;
        let mut client = self.db.client().await?;
        let tx = self
            .db
            .transaction(&mut client, "record a bundle import")
            .await?;
        let fresh_id = tx
            .execute(
                "INSERT INTO jfconnect.imported_bundles (kind, bundle_id, sequence, imported_at, imported_by)
                 VALUES ($1, $2, $3, clock_timestamp(), $4) ON CONFLICT DO NOTHING",
                &[&c.kind, &c.bundle_id, &sequence, &self.node],
            )
            .await
            .map_err(|e| tx.fail(e))?;
        if fresh_id == 0 {
            return Ok(Err(ImportConflict::AlreadyImported(
                c.bundle_id.to_string(),
            )));
        }
        tx.execute(
            "INSERT INTO jfconnect.import_history (kind) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&c.kind],
        )
        .await
        .map_err(|e| tx.fail(e))?;
        let swapped = tx
            .execute(
                "UPDATE jfconnect.import_history
                 SET last_sequence = $2,
                     newest_created = greatest(coalesce(newest_created, $3), $3)
                 WHERE kind = $1 AND (last_sequence IS NULL OR last_sequence < $2)",
                &[&c.kind, &sequence, &c.created],
            )
            .await
            .map_err(|e| tx.fail(e))?;
        if swapped == 0 {
            let last: i64 = tx
                .query_one(
                    "SELECT last_sequence FROM jfconnect.import_history WHERE kind = $1",
                    &[&c.kind],
                )
                .await
                .map_err(|e| tx.fail(e))?
                .get(0);
            let last = last.max(0) as u64;
            return Ok(Err(if c.sequence == last {
                ImportConflict::SameSequence(last)
            } else {
                ImportConflict::OlderSequence {
                    sequence: c.sequence,
                    last,
                }
            }));
        }
        tx.execute(
            "INSERT INTO jfconnect.import_inbox
                 (sha256, received_at, received_by, kind, bundle_id, sequence, tag, entry)
             VALUES ($1, clock_timestamp(), $2, $3, $4, $5, $6, $7)",
            &[
                &c.bundle_sha256,
                &self.node,
                &c.kind,
                &c.bundle_id,
                &sequence,
                &c.tag,
                &sealed,
            ],
        )
        .await
        .map_err(|e| tx.fail(e))?;
        tx.execute("SELECT pg_notify($1, $2)", &[&IMPORTS_CHANNEL, &c.kind])
            .await
            .map_err(|e| tx.fail(e))?;
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// The payload of the newest import of `kind`, opened with the master key.
    pub async fn latest_import(&self, kind: &str) -> Result<Option<serde_json::Value>, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT entry FROM jfconnect.import_inbox
                 WHERE kind = $1 AND entry IS NOT NULL ORDER BY sequence DESC LIMIT 1",
                &[&kind],
            )
            .await
            .map_err(|e| self.db.fail("read the import inbox", e))?;
        let Some(r) = row else { return Ok(None) };
        let plain = self.key.open("inbox_entry", &r.get::<_, Vec<u8>>(0))?;
        serde_json::from_slice(&plain)
            .map(Some)
            .map_err(|e| DbError::Damaged {
                what: "import inbox entry",
                reason: e.to_string(),
            })
    }

    /// The tag of the newest import of `kind` not applied yet: what the leaseholder's
    /// entitlements job has to apply.
    pub async fn pending_import(&self, kind: &str) -> Result<Option<String>, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT tag FROM jfconnect.import_inbox
                 WHERE kind = $1 AND done_at IS NULL AND entry IS NOT NULL
                 ORDER BY sequence DESC LIMIT 1",
                &[&kind],
            )
            .await
            .map_err(|e| self.db.fail("read the import inbox", e))?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// True once the import of `bundle_id` was marked applied (in the transaction that stored
    /// its entitlements, or a newer import's).
    pub async fn import_applied(&self, kind: &str, bundle_id: &str) -> Result<bool, DbError> {
        let client = self.db.client().await?;
        let row = client
            .query_opt(
                "SELECT done_at IS NOT NULL FROM jfconnect.import_inbox
                 WHERE kind = $1 AND bundle_id = $2",
                &[&kind, &bundle_id],
            )
            .await
            .map_err(|e| self.db.fail("read the import inbox", e))?;
        Ok(row.is_some_and(|r| r.get(0)))
    }
}

impl From<DbError> for StateError {
    fn from(e: DbError) -> Self {
        if let DbError::Fenced(f) = &e {
            return StateError::Fenced(f.to_string());
        }
        StateError::Shared {
            unavailable: e.is_unavailable(),
            reason: e.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl StateStore for PgStore {
    fn shared(&self) -> bool {
        true
    }

    async fn jpd_id(&self) -> Result<Option<String>, StateError> {
        Ok(self.identity().await?.map(|i| i.jpd_id))
    }

    async fn import_history(&self, kind: &str) -> Result<ImportState, StateError> {
        Ok(PgStore::import_history(self, kind).await?)
    }

    async fn commit_import(
        &self,
        commit: &ImportCommit<'_>,
    ) -> Result<Result<(), ImportConflict>, StateError> {
        Ok(PgStore::commit_import(self, commit).await?)
    }

    async fn latest_import(&self, kind: &str) -> Result<Option<serde_json::Value>, StateError> {
        Ok(PgStore::latest_import(self, kind).await?)
    }

    async fn import_applied(&self, kind: &str, bundle_id: &str) -> Result<bool, StateError> {
        Ok(PgStore::import_applied(self, kind, bundle_id).await?)
    }

    async fn schedules(&self) -> Result<ScheduleDocs, StateError> {
        Ok(PgStore::schedules(self).await?)
    }

    async fn update_schedule(
        &self,
        job: &str,
        fence: Option<&Fence>,
        change: ScheduleChange<'_>,
    ) -> Result<(), StateError> {
        Ok(PgStore::update_schedule(self, job, fence, change).await?)
    }
}
