//! Versioned, forward-only migrations of the `jfconnect` schema.
//!
//! `serve` runs [`migrate`] on start: one transaction that first takes a transaction-scoped
//! advisory lock (released at commit, so it works behind a transaction-mode pooler, unlike a
//! session lock), creates the schema and its versions table if missing, and applies every
//! migration newer than the recorded version. Two nodes starting at once therefore apply each
//! migration once; a node that finds a newer schema than it knows refuses to start. Read-only
//! commands call [`schema_version`], which never changes anything.

use super::db::{Db, DbError};

/// Key of the transaction-scoped advisory lock that serialises migrations ("jfconnect" in hex).
const MIGRATION_LOCK: i64 = 0x6a66_636f_6e6e_6563;

/// The migrations, in order. Never edit a released one: add the next.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "shared state", V1),
    (2, "import inbox entries", V2),
    (3, "usage ledger", V3),
    (4, "schedules per JPD and per node", V4),
    (5, "refused license", V5),
];

/// Newest schema version this build knows.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

const V1: &str = r#"
CREATE TABLE jfconnect.nodes (
    node_id             text PRIMARY KEY,
    instance_id         text NOT NULL,
    started_at          timestamptz NOT NULL,
    heartbeat_at        timestamptz NOT NULL,
    address             text,
    entitlements_digest text
);
CREATE TABLE jfconnect.leases (
    job         text PRIMARY KEY,
    holder      text NOT NULL,
    epoch       bigint NOT NULL CHECK (epoch > 0),
    acquired_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE TABLE jfconnect.identity (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    jpd_id         text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    created_by     text NOT NULL,
    origin         text NOT NULL,
    key_check      bytea NOT NULL,
    signing_public text NOT NULL,
    signing_secret bytea NOT NULL,
    api_token      bytea,
    admin_token    bytea,
    license        bytea,
    license_set_at timestamptz
);
CREATE TABLE jfconnect.entitlements (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    state      bytea NOT NULL,
    digest     text NOT NULL,
    version    bigint NOT NULL,
    epoch      bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
CREATE TABLE jfconnect.schedules (
    job        text PRIMARY KEY,
    body       jsonb NOT NULL,
    epoch      bigint NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
CREATE TABLE jfconnect.import_history (
    kind           text PRIMARY KEY,
    last_sequence  bigint,
    newest_created timestamptz
);
CREATE TABLE jfconnect.imported_bundles (
    kind        text NOT NULL,
    bundle_id   text NOT NULL,
    sequence    bigint NOT NULL,
    imported_at timestamptz NOT NULL,
    imported_by text NOT NULL,
    PRIMARY KEY (kind, bundle_id)
);
CREATE TABLE jfconnect.import_inbox (
    id          bigserial PRIMARY KEY,
    sha256      text NOT NULL UNIQUE,
    bundle      bytea NOT NULL,
    received_at timestamptz NOT NULL,
    received_by text NOT NULL,
    outcome     text,
    done_at     timestamptz,
    done_by     text
);
"#;

/// Version 2: the import inbox keeps the verified payload of each import (sealed), recorded in
/// the transaction of its compare-and-set, instead of the raw bundle.
const V2: &str = r#"
ALTER TABLE jfconnect.import_inbox
    ALTER COLUMN bundle DROP NOT NULL,
    ADD COLUMN kind text,
    ADD COLUMN bundle_id text,
    ADD COLUMN sequence bigint,
    ADD COLUMN tag text,
    ADD COLUMN entry bytea;
CREATE INDEX import_inbox_kind_sequence ON jfconnect.import_inbox (kind, sequence);
"#;

/// Version 3: the usage ledger shared by every node (`ha::usage`): one row per distinct usage
/// file (SHA-256), `holder` being the node whose claim (upload or archival) is in force (an
/// upload claim lapses at `claim_expires`, an archival claim never does: its node resumes its
/// plan); each node's usage counters; the sequences of the bundles the JPD writes (one counter
/// per kind for all nodes).
const V3: &str = r#"
CREATE TABLE jfconnect.usage_files (
    sha256         text PRIMARY KEY,
    state          text NOT NULL CHECK (state IN ('uploading', 'uploaded', 'archiving', 'archived')),
    holder         text,
    claim_expires  timestamptz,
    uploaded_by    text,
    uploaded_at    timestamptz,
    archive_repo   text,
    archive_name   text,
    archive_sha256 text,
    archive_size   bigint,
    archived_by    text,
    archived_at    timestamptz,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX usage_files_by_holder ON jfconnect.usage_files (holder, state);
ALTER TABLE jfconnect.nodes ADD COLUMN usage_counts jsonb;
CREATE TABLE jfconnect.bundle_sequences (
    kind       text PRIMARY KEY,
    last       bigint NOT NULL CHECK (last > 0),
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);
"#;

/// Version 4: a schedule document belongs to the JPD (`node` empty: a leased job, written by
/// its leaseholder with its epoch) or to one node (`node` = its id: a job every node runs for
/// itself, with no lease, so no epoch). Version 1's table was never written.
const V4: &str = r#"
ALTER TABLE jfconnect.schedules
    ADD COLUMN node text NOT NULL DEFAULT '',
    ALTER COLUMN epoch DROP NOT NULL,
    DROP CONSTRAINT schedules_pkey,
    ADD PRIMARY KEY (job, node);
"#;

/// Version 5: the fingerprint of the license set through the API that JES refused, recorded
/// by the leaseholder and kept until a license is set anew, so no node registers it again.
const V5: &str = "ALTER TABLE jfconnect.identity ADD COLUMN license_refused text;";

/// Brings the schema up to [`latest`]; returns the version it found before.
pub async fn migrate(db: &Db) -> Result<i32, DbError> {
    let mut client = db.client().await?;
    let tx = db.transaction(&mut client, "migrate the schema").await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(|e| db.fail("lock for the migration", e))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS jfconnect;
         CREATE TABLE IF NOT EXISTS jfconnect.schema_versions (
             version    integer PRIMARY KEY,
             name       text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
         );",
    )
    .await
    .map_err(|e| db.fail("create the jfconnect schema", e))?;
    let found = recorded_version(db, &*tx).await?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > found) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| db.fail("apply a schema migration", e))?;
        tx.execute(
            "INSERT INTO jfconnect.schema_versions (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .map_err(|e| db.fail("record a schema migration", e))?;
        tracing::info!(version, name, "database schema migrated");
    }
    tx.commit().await?;
    Ok(found)
}

/// The schema version in the database, without changing anything; `NoSchema` when none.
pub async fn schema_version(db: &Db) -> Result<i32, DbError> {
    let client = db.client().await?;
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('jfconnect.schema_versions') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| db.fail("look for the jfconnect schema", e))?
        .get(0);
    if !exists {
        return Err(DbError::NoSchema);
    }
    recorded_version(db, &client).await
}

/// The highest version recorded in `jfconnect.schema_versions`; `SchemaTooNew` when it is
/// newer than this binary knows. One reading for the migration (inside its transaction) and for
/// the read-only check.
async fn recorded_version(
    db: &Db,
    client: &impl deadpool_postgres::GenericClient,
) -> Result<i32, DbError> {
    let found: i32 = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM jfconnect.schema_versions",
            &[],
        )
        .await
        .map_err(|e| db.fail("read the schema version", e))?
        .get(0);
    if found > latest() {
        return Err(DbError::SchemaTooNew {
            found,
            known: latest(),
        });
    }
    Ok(found)
}
