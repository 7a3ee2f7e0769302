//! High availability: several jfconnect nodes of one JPD share identity, registration and
//! entitlements through the JPD's PostgreSQL (see `docs/ha.md`).
//!
//! - [`sealing`]: secrets at rest sealed with the master key (AES-256-GCM).
//! - [`db`]: the connection pool and TLS; [`migrate`]: the `jfconnect` schema.
//! - [`lease`]: job leases with fencing epochs; [`nodes`]: membership and heartbeats.
//! - [`store`]: the shared state; [`watch`]: following entitlements changes.
//! - [`usage`]: the usage ledger shared by the nodes (claims and marks per SHA-256);
//!   [`sequences`]: the JPD's outgoing bundle sequences.
//!
//! Nothing here uses a session-level lock: every guarantee rests on single statements and
//! transactions, judged in database time.

pub mod cluster;
pub mod db;
pub mod fence;
pub mod keeper;
pub mod lease;
pub mod migrate;
pub mod nodes;
pub mod sealing;
pub mod sequences;
pub mod store;
pub mod usage;
pub mod watch;
