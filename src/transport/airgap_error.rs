//! Errors of air-gapped mode: each one sentence a person at either side of the gap can act on.

use std::path::PathBuf;

use crate::bundle::BundleError;
use crate::state::StateError;

/// Why an air-gapped operation (import, export, answer, outbox write) failed.
#[derive(Debug, thiserror::Error)]
pub enum AirgapError {
    /// The bundle was refused, or a key could not be read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The disk refused a read or write.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The JPD's shared bundle sequence (database mode) could not be taken.
    #[error("cannot take the next bundle sequence from the shared database ({0}); no bundle was written")]
    Sequence(String),
    /// Import needs trusted vendor keys and none are configured.
    #[error("no vendor public key is configured, so no entitlements bundle can be trusted; list the vendor's minisign public key files in jfconnect.airgap.vendor_public_keys")]
    NoVendorKeys,
    /// The command needs air-gapped mode.
    #[error("{0} needs air-gapped mode; set jfconnect.airgap.enabled: true")]
    NotAirGapped(&'static str),
    /// This JPD has no id yet.
    #[error("this JPD has no id yet ({0} is missing); start jfconnect once (jfconnect status) so it makes one")]
    NoJpdId(PathBuf),
    /// No license is configured, so there is nothing to register.
    #[error("{0}")]
    NoLicense(String),
    /// A verified payload file is not what its kind promises.
    #[error("the bundle's {path} is not valid: {reason}")]
    Payload {
        /// The payload entry.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The vendor side was given a bundle it does not answer.
    #[error("the vendor portal answers usage and registration bundles; this one is a {0} bundle")]
    NotAnswerable(crate::bundle::Kind),
    /// A JPD presented another key than the one pinned on first contact.
    #[error("JPD {jpd_id} is pinned to key {pinned} since its first bundle, but this bundle names key {presented}; refused (if the JPD's key really changed, remove its entry from {pins} after checking out of band)")]
    KeyChanged {
        /// The JPD.
        jpd_id: String,
        /// The pinned key id.
        pinned: String,
        /// The key id the bundle names.
        presented: String,
        /// The pin file.
        pins: PathBuf,
    },
    /// Another process holds the outbox or import lock for too long.
    #[error("another jfconnect process holds {0}; try again when it is done")]
    Busy(PathBuf),
    /// `bundle export --out FILE` would replace a file.
    #[error("{} exists; choose another --out, or pass --force to replace it", .0.display())]
    OutExists(PathBuf),
    /// A step that runs a job failed.
    #[error("{0}")]
    Job(String),
}

impl AirgapError {
    /// Builds an [`AirgapError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AirgapError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// True when the input (a bundle, a key, the configuration) is at fault rather than this
    /// machine: the CLI exits 2 and the HTTP API answers 400.
    pub(crate) fn is_bad_input(&self) -> bool {
        match self {
            // A bundle file that is not there was named wrongly.
            AirgapError::Bundle(BundleError::Io { source, .. }) => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            AirgapError::Bundle(_) => true,
            AirgapError::Payload { .. }
            | AirgapError::NotAnswerable(_)
            | AirgapError::KeyChanged { .. }
            | AirgapError::NoVendorKeys
            | AirgapError::NotAirGapped(_)
            | AirgapError::NoLicense(_)
            | AirgapError::OutExists(_) => true,
            AirgapError::State(_)
            | AirgapError::Io { .. }
            | AirgapError::NoJpdId(_)
            | AirgapError::Busy(_)
            | AirgapError::Sequence(_)
            | AirgapError::Job(_) => false,
        }
    }
}
