//! Bundle format v1: signed zip files that carry usage out of, and entitlements into, an
//! air-gapped JPD.
//!
//! A person carries the file across the gap and must be able to check it by hand with `unzip`,
//! `sha256sum` and `minisign`, so the format is plain zip + `sha256sum` lines + a minisign
//! signature (`docs/bundle-format.md` is the normative spec). Layout of this module:
//! `kind` (what a bundle carries), `manifest` (the signed metadata, pure), `minisign` (key and signature formats, pure),
//! `keys` (key files on disk), `zipdir` (strict zip directory parser), `limits` (caps and
//! streaming adapters), `entry` (reading one entry), `names` (when two entry names are one), `zipstream` (the one
//! streaming zip writer, which the usage archives use too), `writeback` (files whose finished
//! stretches reach the disk while writing goes on), `write` (the bundle writer), `verify` (the
//! verifier), `import_state` (replay/rollback history and policy), `inspect` (unverified view).
//!
//! Architecture invariant: nothing outside `verify` hands out bundle content, and it does so
//! only after every check passed; no code here uses the `zip` crate's reader or `extract`.

mod entry;
mod error;
mod import_state;
mod inspect;
mod keys;
mod kind;
mod limits;
mod manifest;
mod minisign;
mod names;
mod ordered;
mod verify;
mod write;
mod writeback;
mod zipdir;
mod zipstream;

pub use error::{BundleError, PathProblem};

pub use import_state::{Expectations, ImportState, ImportStore};
pub use inspect::inspect_bundle;
pub use inspect::BundleSummary;
pub use keys::{
    keys_generate, load_or_generate, read_public_key, read_secret_key, read_trusted_keys,
};
pub(crate) use keys::{write_public_key, write_secret_key};
pub use kind::Kind;
pub use limits::Limits;

pub use manifest::{
    format_time, sums_line, Manifest, ManifestEntry, FORMAT_V1, MANIFEST, SIGNATURE, SUMS,
};

pub use minisign::KeyId;
pub use minisign::{generate_keypair, MinisignSignature, PublicKey, SecretKey, TrustedKeys};
pub use names::name_key;
pub(crate) use ordered::{deflate_threads, Ordered};
pub use verify::VerifiedBundle;
pub use verify::{verify_bundle, verify_bytes, verify_file_with_pubkey, verify_self_signed};
pub(crate) use write::BundleWriter;
pub use write::{
    new_bundle_id, write_bundle, BundleSpec, PayloadEntry, PayloadSource, UNTRUSTED_COMMENT,
};
pub(crate) use writeback::Writeback;
pub(crate) use zipstream::{Deflater, HashingWriter, IndexWriter, PreparedEntry, ZipStream};
