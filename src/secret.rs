//! Secrets (license keys, tokens, passwords) wrapped so they cannot leak by accident.
//!
//! A `Secret` prints as `***` through both `Debug` and `Display`, so a secret that ends up in a
//! `tracing` field, an error message or a `{:?}` dump shows nothing. The value is reachable only
//! through [`Secret::expose`], which makes every place that really needs it easy to find.
//!
//! Files that hold secrets, keys, CA bundles and the config are read through one function,
//! [`read_limited`]: it opens without blocking (a FIFO cannot hang it), accepts only a regular
//! file (a socket, a device such as `/dev/zero` or a folder is refused) and reads at most a cap
//! (an endless or huge file cannot exhaust memory).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// Largest secret or key file read: tokens, passwords, licenses, minisign keys.
pub(crate) const MAX_SECRET_FILE: u64 = 64 * 1024;

/// Largest CA bundle or config file read.
pub(crate) const MAX_TEXT_FILE: u64 = 1024 * 1024;

/// Why a small file could not be read. Its sentence does not name the file: the caller does,
/// together with the setting that pointed at it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The path is something other than a regular file.
    #[error("it is {0}, not a regular file")]
    NotRegular(&'static str),
    /// The file is over the cap.
    #[error("it is larger than {0} bytes, the limit for this kind of file")]
    TooLarge(u64),
    /// The disk refused (absent, no permission, ...).
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl FileError {
    /// True when the file does not exist.
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// Reads a whole small file: non-blocking open, regular file only (checked on the open
/// descriptor), at most `cap` bytes.
pub(crate) fn read_limited(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // open(2) answers ENXIO for a Unix socket; name what is there instead.
            Some(libc::ENXIO) => match std::fs::metadata(path) {
                Ok(m) => FileError::NotRegular(kind_of(&m.file_type())),
                Err(_) => FileError::Io(e),
            },
            _ => FileError::Io(e),
        })?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular(kind_of(&meta.file_type())));
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge(cap));
    }
    read_capped(file, cap)
}

fn read_capped(file: File, cap: u64) -> Result<Vec<u8>, FileError> {
    let mut bytes = Vec::new();
    // One byte more than the cap tells a file that grew past it after the size check.
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge(cap));
    }
    Ok(bytes)
}

/// Like [`read_limited`], as UTF-8 text.
pub(crate) fn read_limited_text(path: &Path, cap: u64) -> Result<String, FileError> {
    String::from_utf8(read_limited(path, cap)?).map_err(|_| {
        FileError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is not UTF-8 text",
        ))
    })
}

/// What a file that is not a regular file is, in words ("a FIFO", "a socket", ...).
pub(crate) fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a special file"
    }
}

/// A secret string: printed as `***`, compared in constant time.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Reads a secret from a file (through [`read_limited`], capped at [`MAX_SECRET_FILE`]),
    /// trimming surrounding white space (a trailing newline is the usual shape of a token file).
    pub(crate) fn from_file(path: &Path) -> Result<Self, FileError> {
        let text = read_limited_text(path, MAX_SECRET_FILE)?;
        Ok(Secret(text.trim().to_string()))
    }

    /// The value itself. Call only where the secret must leave the process (an HTTP header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares with `other` in time independent of where they differ.
    pub(crate) fn ct_eq(&self, other: &str) -> bool {
        use subtle::ConstantTimeEq;
        let a = self.0.as_bytes();
        let b = other.as_bytes();
        // Length is not secret for tokens of fixed shape; content is.
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }

    /// A short, non-reversible fingerprint (first 16 hex digits of the SHA-256), used to notice
    /// that a license changed without storing or printing the license itself.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(&other.0)
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints_its_value() {
        let s = Secret::new("LICENSE-KEY-123");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(s.expose(), "LICENSE-KEY-123");
    }

    #[test]
    fn constant_time_compare_matches_only_equal_values() {
        let s = Secret::new("abc");
        assert!(s.ct_eq("abc"));
        assert!(!s.ct_eq("abd"));
        assert!(!s.ct_eq("ab"));
    }

    #[test]
    fn special_files_and_oversized_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_limited(&fifo, 10),
            Err(FileError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            read_limited(Path::new("/dev/zero"), 10),
            Err(FileError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_limited(dir.path(), 10),
            Err(FileError::NotRegular("a folder"))
        ));
        let sock = dir.path().join("sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(matches!(
            read_limited(&sock, 10),
            Err(FileError::NotRegular("a socket"))
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, [b'x'; 11]).unwrap();
        assert!(matches!(
            read_limited(&big, 10),
            Err(FileError::TooLarge(10))
        ));
        assert_eq!(read_limited(&big, 11).unwrap().len(), 11);
        assert!(read_limited(&dir.path().join("absent"), 10)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn fingerprint_changes_with_value() {
        assert_ne!(
            Secret::new("a").fingerprint(),
            Secret::new("b").fingerprint()
        );
        assert_eq!(
            Secret::new("a").fingerprint(),
            Secret::new("a").fingerprint()
        );
    }
}
