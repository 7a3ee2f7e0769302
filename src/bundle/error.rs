//! Every way a bundle, a key or a signature can be refused.
//!
//! Each refusal is its own variant so that callers (CLI exit codes, HTTP status, tests of the
//! hostile fixtures) can branch on *what* is wrong, and each message is one sentence a person
//! carrying the file across the gap can act on. Messages never include secret key material.

use std::path::PathBuf;

use super::kind::Kind;

/// Why a path inside the zip is unsafe to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Starts with `/`.
    Absolute,
    /// Has a `..` or `.` segment.
    DotSegment,
    /// Contains a backslash.
    Backslash,
    /// Starts with a drive letter such as `C:`.
    DriveLetter,
    /// Empty, or has an empty segment (`a//b`, trailing `/`).
    EmptySegment,
    /// Has control characters, or is not UTF-8.
    BadCharacters,
    /// Longer than the 512-byte limit.
    TooLong,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathProblem::Absolute => "it is absolute",
            PathProblem::DotSegment => "it has a '.' or '..' segment",
            PathProblem::Backslash => "it contains a backslash",
            PathProblem::DriveLetter => "it starts with a drive letter",
            PathProblem::EmptySegment => "it is empty or has an empty segment",
            PathProblem::BadCharacters => "it has control characters or is not UTF-8",
            PathProblem::TooLong => "it is longer than 512 bytes",
        })
    }
}

/// A bundle, key or signature was refused, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The disk refused a read or write.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bundle file is larger than the limit.
    #[error("the bundle file is {size} bytes, over the {limit}-byte limit; it was not opened")]
    FileTooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The file is not a zip archive at all.
    #[error("the file is not a bundle: it is not a zip archive ({0})")]
    NotAZip(String),
    /// The file starts like a zip but its end (the zip directory) is missing.
    #[error("the bundle is truncated: it ends before its zip directory; copy it again")]
    Truncated,
    /// The zip structure is damaged or uses features bundles never use.
    #[error("the bundle's zip structure is damaged: {0}")]
    MalformedZip(String),
    /// More entries than the limit.
    #[error("the bundle declares {count} entries, over the limit of {limit}")]
    TooManyEntries {
        /// Declared count.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// One entry declares more uncompressed bytes than the limit.
    #[error("entry {path} declares {size} bytes, over the per-entry limit of {limit} (zip bomb?)")]
    EntryTooLarge {
        /// The entry.
        path: String,
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// All entries together declare more uncompressed bytes than the limit.
    #[error("the bundle's entries add up to {size} bytes uncompressed, over the limit of {limit} (zip bomb?)")]
    TotalTooLarge {
        /// Declared total.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// `manifest.json`, `SHA256SUMS` or `SHA256SUMS.minisig` is larger than its limit.
    #[error("{path} declares {size} bytes, over its limit of {limit}")]
    MetadataTooLarge {
        /// The file.
        path: String,
        /// Declared size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry compresses suspiciously well.
    #[error("entry {path} would expand {ratio}x, over the compression ratio limit of {limit}x (zip bomb?)")]
    CompressionRatio {
        /// The entry.
        path: String,
        /// Its ratio, rounded down.
        ratio: u64,
        /// The limit.
        limit: u64,
    },
    /// An entry inflates to more bytes than it declared.
    #[error("entry {path} inflates beyond its declared {declared} bytes (zip bomb?)")]
    InflatesBeyondDeclaredSize {
        /// The entry.
        path: String,
        /// The declared size.
        declared: u64,
    },
    /// Two entries share a name, byte for byte.
    #[error("the bundle has two entries named {0}")]
    DuplicateName(String),
    /// Two entries' names differ, but only by Unicode normalisation or letter case (one name
    /// to a disk that folds names; `docs/bundle-format.md` §1).
    #[error("the bundle has entries {first} and {second}, one name after Unicode normalisation and case folding: a disk that folds names would extract one over the other")]
    EquivalentNames {
        /// The name seen first.
        first: String,
        /// The name that is the same as `first` after folding.
        second: String,
    },
    /// The local file header names a different file than the zip directory.
    #[error("entry {central} is named {local} in its local header; the zip was tampered with")]
    LocalHeaderMismatch {
        /// Name in the central directory.
        central: String,
        /// Name in the local header.
        local: String,
    },
    /// Two entries' bytes overlap in the file.
    #[error("entries {0} and {1} overlap in the file; the zip was crafted")]
    OverlappingEntries(String, String),
    /// An entry is encrypted.
    #[error("entry {0} is encrypted; bundles never are")]
    EncryptedEntry(String),
    /// An entry uses a compression method other than stored or deflate.
    #[error(
        "entry {path} uses compression method {method}; bundles use only stored (0) or deflate (8)"
    )]
    UnsupportedCompression {
        /// The entry.
        path: String,
        /// The zip method number.
        method: u16,
    },
    /// An entry name is unsafe as a path.
    #[error("entry name {path:?} is unsafe: {problem}")]
    UnsafePath {
        /// The name (lossy).
        path: String,
        /// What is wrong.
        problem: PathProblem,
    },
    /// An entry is a symbolic link.
    #[error("entry {0} is a symbolic link; bundles hold only regular files")]
    Symlink(String),
    /// An entry is a directory, device, FIFO, socket or has setuid/setgid/sticky bits.
    #[error("entry {path} has special file mode {mode:o}; bundles hold only regular files")]
    SpecialFileMode {
        /// The entry.
        path: String,
        /// Its unix mode.
        mode: u32,
    },
    /// `SHA256SUMS.minisig` is absent.
    #[error("the bundle is not signed: it has no SHA256SUMS.minisig")]
    Unsigned,
    /// `manifest.json` or `SHA256SUMS` is absent.
    #[error("the bundle has no {0}")]
    MissingMetadata(&'static str),
    /// The signature file does not follow minisign's format.
    #[error("SHA256SUMS.minisig is not a minisign signature: {0}")]
    MalformedSignature(String),
    /// The signature uses minisign's legacy algorithm.
    #[error("the signature uses minisign's legacy 'Ed' algorithm, which leaves the algorithm unsigned; re-sign with the prehashed 'ED' algorithm (minisign 0.11 or later does by default)")]
    LegacySignature,
    /// A bundle a JPD makes for the vendor (usage, registration) was given where entitlements
    /// bundles are imported. The kind is what the bundle's signature comment claims, unverified:
    /// it only names the mistake, it is refused all the same.
    #[error("this bundle says it is a {claimed} bundle, which a JPD makes to carry to the vendor; `bundle import` takes entitlements bundles, the vendor's answer to one")]
    NotForImport {
        /// The kind the bundle claims.
        claimed: String,
    },
    /// Signed by a key that is not trusted here.
    #[error("the bundle is signed by key {0}, which is not one of the trusted keys here")]
    UnknownKey(String),
    /// The signature does not match `SHA256SUMS`.
    #[error("the signature does not match SHA256SUMS; the bundle was altered after signing")]
    BadSignature,
    /// The signature over the trusted comment does not match.
    #[error("the signature does not match its trusted comment; the signature file was altered")]
    BadTrustedCommentSignature,
    /// The trusted comment is not in the bundle format.
    #[error("the signature's trusted comment is not a jfconnect bundle comment: {0:?}")]
    MalformedTrustedComment(String),
    /// The trusted comment disagrees with `manifest.json`.
    #[error(
        "the signature's trusted comment {signed:?} disagrees with manifest.json ({manifest:?})"
    )]
    TrustedCommentMismatch {
        /// What the signature says.
        signed: String,
        /// What the manifest implies.
        manifest: String,
    },
    /// `SHA256SUMS` is not in `sha256sum` format.
    #[error("SHA256SUMS is malformed: {0}")]
    MalformedSums(String),
    /// `manifest.json` is not a valid v1 manifest.
    #[error("manifest.json is malformed: {0}")]
    MalformedManifest(String),
    /// The manifest's format is not v1.
    #[error("the bundle format {0:?} is not supported; this version reads jfconnect-bundle/v1")]
    UnsupportedFormat(String),
    /// The manifest names another signing key than the signature.
    #[error("manifest.json says it is signed by key {manifest}, but the signature is by key {signature}")]
    SigningKeyMismatch {
        /// Key id in the manifest.
        manifest: String,
        /// Key id in the signature.
        signature: String,
    },
    /// `SHA256SUMS` does not list exactly the manifest and the payload entries.
    #[error("SHA256SUMS does not match the manifest's entry list: {0}")]
    SumsMismatch(String),
    /// A zip entry is not in the manifest.
    #[error("entry {0} is not listed in manifest.json")]
    UnlistedEntry(String),
    /// A manifest entry is not in the zip.
    #[error("manifest.json lists {0}, but the bundle does not contain it")]
    MissingEntry(String),
    /// An entry's size differs from the manifest.
    #[error("entry {path} is {actual} bytes, but manifest.json says {expected}")]
    SizeMismatch {
        /// The entry.
        path: String,
        /// Signed size.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// An entry's SHA-256 differs from the signed one.
    #[error("entry {0} does not match its signed SHA-256; the bundle was altered")]
    HashMismatch(String),
    /// The bundle is of another kind than expected here.
    #[error("this is a {actual} bundle, but the bundle expected here is of kind {expected}")]
    WrongKind {
        /// Expected kind.
        expected: Kind,
        /// Kind of the bundle.
        actual: Kind,
    },
    /// The bundle is for another JPD.
    #[error("this bundle is for JPD {actual}, not for this JPD ({expected})")]
    WrongJpd {
        /// This JPD.
        expected: String,
        /// The bundle's JPD.
        actual: String,
    },
    /// The bundle has expired.
    #[error("the bundle expired at {expires}; ask for a new one")]
    Expired {
        /// Its expiry (RFC 3339).
        expires: String,
    },
    /// The system clock is earlier than it can be.
    #[error("the system clock ({now}) is earlier than {seen} (less 5 minutes of skew), a time already seen in a bundle; fix the clock before importing")]
    ClockRollback {
        /// The clock's time.
        now: String,
        /// The newest creation time seen.
        seen: String,
    },
    /// Sequence older than the last imported one.
    #[error("the bundle's sequence {sequence} is older than the last imported sequence {last}; it is a rollback to an older bundle")]
    OlderSequence {
        /// This bundle's sequence.
        sequence: u64,
        /// Last imported.
        last: u64,
    },
    /// Sequence equal to the last imported one (but another bundle).
    #[error("the bundle's sequence {0} equals the last imported one; a newer bundle is needed")]
    SameSequence(u64),
    /// The very same bundle was imported before.
    #[error("bundle {0} was already imported")]
    AlreadyImported(String),
    /// A key file is malformed or of an unsupported kind.
    #[error("key file {path} is unusable: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A value given to the writer is invalid.
    #[error("cannot write the bundle: {0}")]
    InvalidSpec(String),
    /// The import history file could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

impl From<crate::state::ImportConflict> for BundleError {
    fn from(c: crate::state::ImportConflict) -> Self {
        use crate::state::ImportConflict as C;
        match c {
            C::AlreadyImported(id) => BundleError::AlreadyImported(id),
            C::OlderSequence { sequence, last } => BundleError::OlderSequence { sequence, last },
            C::SameSequence(last) => BundleError::SameSequence(last),
        }
    }
}

impl BundleError {
    /// Builds an [`BundleError::Io`].
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        BundleError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
