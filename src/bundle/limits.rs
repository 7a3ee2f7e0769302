//! Size caps, and the reader adapters that enforce them while streaming.
//!
//! A bundle comes from the other side of an air gap and is untrusted until verified, so every
//! byte read from it passes through a cap (tough's `MaxSizeAdapter`) and, for payload, a SHA-256
//! check that fails at end of stream on a mismatch (tough's `DigestAdapter`). The caps bound the
//! memory and time a hostile bundle can cost, whatever it declares.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// Every limit a reader applies; see `docs/bundle-format.md` for the defaults' reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest bundle file, bytes.
    pub max_file_bytes: u64,
    /// Most zip entries (the three fixed files included).
    pub max_entries: u64,
    /// Largest zip central directory, bytes.
    pub max_directory_bytes: u64,
    /// Largest uncompressed size of one entry, bytes.
    pub max_entry_bytes: u64,
    /// Largest sum of uncompressed sizes, bytes.
    pub max_total_bytes: u64,
    /// Largest uncompressed/compressed ratio of an entry...
    pub max_ratio: u64,
    /// ...applied to entries larger than this many bytes uncompressed.
    pub ratio_floor_bytes: u64,
    /// Largest `manifest.json`, bytes.
    pub max_manifest_bytes: u64,
    /// Largest `SHA256SUMS`, bytes.
    pub max_sums_bytes: u64,
    /// Largest `SHA256SUMS.minisig`, bytes.
    pub max_signature_bytes: u64,
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_bytes: 2 * GIB,
            max_entries: 200_000,
            max_directory_bytes: 64 * MIB,
            max_entry_bytes: 2 * GIB,
            max_total_bytes: 4 * GIB,
            max_ratio: 100,
            ratio_floor_bytes: MIB,
            max_manifest_bytes: 32 * MIB,
            max_sums_bytes: 32 * MIB,
            max_signature_bytes: 16 * 1024,
        }
    }
}

/// Fails with `InvalidData` as soon as more than `limit` bytes come through.
pub(crate) struct MaxSizeAdapter<R> {
    inner: R,
    limit: u64,
    seen: u64,
}

/// Marker carried inside the `io::Error` when a [`MaxSizeAdapter`] trips.
#[derive(Debug, thiserror::Error)]
#[error("more than {0} bytes")]
pub(crate) struct OverLimit(pub u64);

impl<R: Read> MaxSizeAdapter<R> {
    /// Caps `inner` at `limit` bytes.
    pub fn new(inner: R, limit: u64) -> Self {
        MaxSizeAdapter {
            inner,
            limit,
            seen: 0,
        }
    }
}

impl<R: Read> Read for MaxSizeAdapter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte beyond the limit so that an overflow is seen, not silently cut.
        let room = self.limit.saturating_sub(self.seen).saturating_add(1);
        let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.seen += n as u64;
        if self.seen > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                OverLimit(self.limit),
            ));
        }
        Ok(n)
    }
}

/// Marker carried inside the `io::Error` when a [`DigestAdapter`] ends on a mismatch.
#[derive(Debug, thiserror::Error)]
#[error("SHA-256 or size does not match")]
pub(crate) struct DigestMismatch;

/// Hashes what passes through; at end of stream fails unless size and SHA-256 are as expected.
pub(crate) struct DigestAdapter<R> {
    inner: R,
    hasher: Sha256,
    expected_sha256: [u8; 32],
    expected_size: u64,
    seen: u64,
    checked: bool,
}

impl<R: Read> DigestAdapter<R> {
    /// Checks `inner` against `expected_sha256` and `expected_size`.
    pub fn new(inner: R, expected_sha256: [u8; 32], expected_size: u64) -> Self {
        DigestAdapter {
            inner,
            hasher: Sha256::new(),
            expected_sha256,
            expected_size,
            seen: 0,
            checked: false,
        }
    }
}

impl<R: Read> Read for DigestAdapter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        self.seen += n as u64;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            return Ok(n);
        }
        if !self.checked {
            let digest: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if digest != self.expected_sha256 || self.seen != self.expected_size {
                return Err(io::Error::new(io::ErrorKind::InvalidData, DigestMismatch));
            }
            self.checked = true;
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_size_adapter_fails_one_byte_past_the_cap() {
        let mut ok = MaxSizeAdapter::new(&[0u8; 10][..], 10);
        assert_eq!(io::copy(&mut ok, &mut io::sink()).unwrap(), 10);
        let mut over = MaxSizeAdapter::new(&[0u8; 11][..], 10);
        let err = io::copy(&mut over, &mut io::sink()).unwrap_err();
        assert!(err.get_ref().unwrap().is::<OverLimit>());
    }

    #[test]
    fn digest_adapter_fails_at_end_on_mismatch() {
        let good: [u8; 32] = Sha256::digest(b"abc").into();
        let mut r = DigestAdapter::new(&b"abc"[..], good, 3);
        assert_eq!(io::copy(&mut r, &mut io::sink()).unwrap(), 3);
        let mut r = DigestAdapter::new(&b"abd"[..], good, 3);
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
    }
}
