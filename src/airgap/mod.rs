//! Air-gapped mode: the same jobs with no network to JES or JCS; signed bundle files carried
//! across the gap by a person instead.
//!
//! Why a module of its own: the bundle *format* (`crate::bundle`) knows nothing of usage,
//! registration or entitlements, and the jobs must not know which transport they hold. This
//! module joins the two: [`AirGappedTransport`] is the second `Transport` (registration and
//! usage leave as bundles in `airgap.outbox_dir`), [`import`] brings an entitlements bundle in,
//! [`export`] runs the usage job once for `jfconnect bundle export`, [`vendor`] plays the
//! vendor portal for `jfconnect sim answer`, and [`demo`] runs the whole round trip.
//!
//! Code map: [`payload`] (pure: payload JSON shapes, bundle file names), [`outbox`] (durable
//! sequence counters and writing signed bundles), [`transport`], [`import`], [`export`],
//! [`vendor`], [`commands`] (the CLI's air-gapped subcommands), [`demo`].
//!
//! Architecture invariant: nothing here reads bundle content except through
//! `crate::bundle::verify_bundle`, with one exception in [`vendor`]: the trust-on-first-use
//! read of `payload/registration.json` from a structure-checked bundle, to learn the key it
//! must then verify with.

pub mod commands;
pub mod demo;
mod error;
pub mod export;
pub mod import;
pub mod outbox;
pub mod payload;
pub mod transport;
pub mod vendor;

pub use error::AirgapError;
pub use export::{export_bundle, ExportOutcome};
pub use import::{import_entitlements, ImportOutcome};
pub use outbox::{Outbox, WrittenBundle};
pub use payload::{RegistrationRecord, ENTITLEMENTS_PATH, REGISTRATION_PATH};
pub use transport::{AirGappedTransport, OFFLINE_TOKEN};
pub use vendor::{answer_bundle, AnswerOutcome};
