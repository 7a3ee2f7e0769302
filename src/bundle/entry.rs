//! Streaming one zip entry's bytes out of a bundle, decompressed and capped.
//!
//! Each entry is read on its own from its checked data range (never with the `zip` crate's
//! `extract`, whose symlink handling had an escape CVE), inflated, and cut off one byte past its
//! declared size, so a lying entry cannot inflate without bound.

use std::io::{self, Read};

use flate2::read::DeflateDecoder;
use sha2::{Digest, Sha256};

use super::error::BundleError;
use super::limits::{DigestAdapter, DigestMismatch, MaxSizeAdapter, OverLimit};
use super::zipdir::{Source, ZipEntry};

/// Reads `[pos, end)` of a [`Source`].
struct RangeReader<'a> {
    src: &'a dyn Source,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if n == 0 {
            return Ok(0);
        }
        self.src.read_exact_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// The decompressed bytes of `entry`, failing past its declared size.
pub(crate) fn open<'a>(
    src: &'a dyn Source,
    entry: &ZipEntry,
) -> MaxSizeAdapter<Box<dyn Read + Send + 'a>> {
    let raw = RangeReader {
        src,
        pos: entry.data_offset,
        end: entry.data_offset + entry.compressed_size,
    };
    let inner: Box<dyn Read + Send + 'a> = if entry.method == 8 {
        Box::new(DeflateDecoder::new(raw))
    } else {
        Box::new(raw)
    };
    MaxSizeAdapter::new(inner, entry.size)
}

/// Turns a read error of `entry` into the refusal it stands for.
pub(crate) fn read_error(entry: &ZipEntry, expected: u64, e: io::Error) -> BundleError {
    if e.get_ref().is_some_and(|i| i.is::<OverLimit>()) {
        BundleError::InflatesBeyondDeclaredSize {
            path: entry.path.clone(),
            declared: entry.size,
        }
    } else if e.get_ref().is_some_and(|i| i.is::<DigestMismatch>()) {
        BundleError::HashMismatch(entry.path.clone())
    } else if e.kind() == io::ErrorKind::UnexpectedEof && expected == entry.size {
        BundleError::MalformedZip(format!("entry {} is cut short", entry.path))
    } else {
        BundleError::MalformedZip(format!("entry {} does not decompress: {e}", entry.path))
    }
}

/// Reads a whole small entry (already capped by the directory checks) into memory.
pub(crate) fn read_all(src: &dyn Source, entry: &ZipEntry) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::with_capacity(usize::try_from(entry.size.min(1 << 20)).unwrap_or(0));
    let mut r = open(src, entry);
    r.read_to_end(&mut out)
        .map_err(|e| read_error(entry, entry.size, e))?;
    if out.len() as u64 != entry.size {
        return Err(BundleError::SizeMismatch {
            path: entry.path.clone(),
            expected: entry.size,
            actual: out.len() as u64,
        });
    }
    Ok(out)
}

/// A reader of `entry` that fails at its end unless size and SHA-256 are the signed ones.
pub(crate) fn open_checked<'a>(
    src: &'a dyn Source,
    entry: &ZipEntry,
    sha256: [u8; 32],
) -> DigestAdapter<MaxSizeAdapter<Box<dyn Read + Send + 'a>>> {
    DigestAdapter::new(open(src, entry), sha256, entry.size)
}

/// Streams `entry` through its size and SHA-256 checks, discarding the bytes; `buf` is the
/// scratch buffer, shared across entries.
pub(crate) fn check(
    src: &dyn Source,
    entry: &ZipEntry,
    sha256: [u8; 32],
    buf: &mut [u8],
) -> Result<(), BundleError> {
    let mut r = open_checked(src, entry, sha256);
    loop {
        match r.read(buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(entry, entry.size, e)),
        }
    }
}

/// SHA-256 of bytes, as an array.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
