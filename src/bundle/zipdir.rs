//! A strict reader of the zip directory, written by hand rather than with the `zip` crate.
//!
//! Hostile zips exploit the gap between what the central directory says and what the bytes
//! are: a local header naming another file, entries sharing bytes, sizes that lie. So this
//! module parses the end record, the central directory and every local header itself, from raw
//! file offsets, applies the structural checks and size caps before any entry is decompressed,
//! and hands back plain [`ZipEntry`] records. It reads through [`Source`] (positioned reads),
//! so the checks are tested over byte slices without a disk.

use std::io;

use super::error::BundleError;
use super::limits::Limits;
use super::manifest::{check_path, MANIFEST, SIGNATURE, SUMS};
use super::names::NameSet;

/// Positioned, read-only access to the bundle's bytes.
pub trait Source: Sync {
    /// Total length.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the range is past the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

/// A bundle held in memory.
pub(crate) struct SliceSource<'a>(pub &'a [u8]);

impl Source for SliceSource<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl Source for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }
}

/// One checked zip entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ZipEntry {
    /// The entry name, checked safe.
    pub path: String,
    /// 0 stored, 8 deflate.
    pub method: u16,
    /// Compressed size.
    pub compressed_size: u64,
    /// Declared uncompressed size.
    pub size: u64,
    /// Where the local header starts.
    pub header_offset: u64,
    /// Where the compressed bytes start.
    pub data_offset: u64,
}

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// Little-endian field reader over a byte slice that never panics.
struct Fields<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(b: &'a [u8]) -> Self {
        Fields { b, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], BundleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| malformed("a record is cut short"))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, BundleError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, BundleError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, BundleError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
}

fn malformed(m: &str) -> BundleError {
    BundleError::MalformedZip(m.to_string())
}

fn read_at(src: &dyn Source, offset: u64, len: u64) -> Result<Vec<u8>, BundleError> {
    let end = offset.checked_add(len).filter(|&e| e <= src.len());
    end.ok_or_else(|| malformed("a record points past the end of the file"))?;
    let mut buf = vec![0u8; usize::try_from(len).map_err(|_| malformed("record too large"))?];
    src.read_exact_at(&mut buf, offset)
        .map_err(|e| BundleError::MalformedZip(format!("cannot read it: {e}")))?;
    Ok(buf)
}

/// Where the central directory is and how many entries it declares.
struct Directory {
    offset: u64,
    size: u64,
    count: u64,
}

fn find_directory(src: &dyn Source, limits: &Limits) -> Result<Directory, BundleError> {
    let len = src.len();
    let looks_like_zip = || {
        let mut head = [0u8; 4];
        src.read_exact_at(&mut head, 0).is_ok() && u32::from_le_bytes(head) == LOCAL_SIG
    };
    let no_end = || {
        if looks_like_zip() {
            BundleError::Truncated
        } else {
            BundleError::NotAZip("no zip end record".into())
        }
    };
    if len < 22 {
        return Err(no_end());
    }
    let tail_len = len.min(22 + 0xFFFF);
    let tail = read_at(src, len - tail_len, tail_len)?;
    // The end record must end the file exactly (its comment reaching the last byte).
    let eocd_at = (0..=tail.len() - 22)
        .rev()
        .find(|&i| {
            tail[i..i + 4] == EOCD_SIG.to_le_bytes()
                && i + 22 + usize::from(u16::from_le_bytes([tail[i + 20], tail[i + 21]]))
                    == tail.len()
        })
        .ok_or_else(no_end)?;
    let mut f = Fields::new(&tail[eocd_at + 4..]);
    let (disk, cd_disk) = (f.u16()?, f.u16()?);
    let (on_disk, total) = (f.u16()?, f.u16()?);
    let (size, offset) = (f.u32()?, f.u32()?);
    if disk != 0 || cd_disk != 0 || on_disk != total {
        return Err(malformed("multi-disk archives are not bundles"));
    }
    let eocd_pos = len - tail_len + eocd_at as u64;
    let mut dir = Directory {
        offset: offset.into(),
        size: size.into(),
        count: total.into(),
    };
    let mut dir_end_limit = eocd_pos;
    if total == 0xFFFF || size == 0xFFFF_FFFF || offset == 0xFFFF_FFFF {
        let loc_pos = eocd_pos
            .checked_sub(20)
            .ok_or_else(|| malformed("zip64 locator missing"))?;
        let loc = read_at(src, loc_pos, 20)?;
        let mut f = Fields::new(&loc);
        if f.u32()? != ZIP64_LOCATOR_SIG {
            return Err(malformed("zip64 locator missing"));
        }
        let _disk = f.u32()?;
        let z64_pos = f.u64()?;
        if z64_pos.checked_add(56).is_none_or(|e| e > loc_pos) {
            return Err(malformed("zip64 end record out of place"));
        }
        let rec = read_at(src, z64_pos, 56)?;
        let mut f = Fields::new(&rec);
        if f.u32()? != ZIP64_EOCD_SIG {
            return Err(malformed("zip64 end record missing"));
        }
        f.take(8 + 2 + 2 + 4 + 4)?;
        let (on_disk, total) = (f.u64()?, f.u64()?);
        if on_disk != total {
            return Err(malformed("multi-disk archives are not bundles"));
        }
        dir = Directory {
            count: total,
            size: f.u64()?,
            offset: f.u64()?,
        };
        dir_end_limit = z64_pos;
    }
    if dir.count > limits.max_entries {
        return Err(BundleError::TooManyEntries {
            count: dir.count,
            limit: limits.max_entries,
        });
    }
    if dir.size > limits.max_directory_bytes {
        return Err(malformed("the central directory is larger than its limit"));
    }
    if dir.offset.checked_add(dir.size) != Some(dir_end_limit) {
        return Err(malformed(
            "the central directory is not where the end record says",
        ));
    }
    Ok(dir)
}

/// A central directory record before its local header is read.
struct Central {
    name: Vec<u8>,
    entry: ZipEntry,
}

fn parse_central(f: &mut Fields<'_>, limits: &Limits) -> Result<Central, BundleError> {
    if f.u32()? != CENTRAL_SIG {
        return Err(malformed("a central directory record has a bad signature"));
    }
    let made_by = f.u16()?;
    let _needed = f.u16()?;
    let flags = f.u16()?;
    let method = f.u16()?;
    f.take(4 + 4)?; // time, date, crc: the SHA-256 checks content instead
    let (mut csize, mut usize_) = (u64::from(f.u32()?), u64::from(f.u32()?));
    let (name_len, extra_len, comment_len) = (f.u16()?, f.u16()?, f.u16()?);
    let _disk = f.u16()?;
    let _internal = f.u16()?;
    let external = f.u32()?;
    let mut offset = u64::from(f.u32()?);
    let name = f.take(name_len.into())?.to_vec();
    let extra = f.take(extra_len.into())?;
    f.take(comment_len.into())?;
    let mut x = Fields::new(extra);
    while x.pos + 4 <= extra.len() {
        let (id, len) = (x.u16()?, x.u16()?);
        let body = x.take(len.into())?;
        if id == 0x0001 {
            let mut z = Fields::new(body);
            if usize_ == 0xFFFF_FFFF {
                usize_ = z.u64()?;
            }
            if csize == 0xFFFF_FFFF {
                csize = z.u64()?;
            }
            if offset == 0xFFFF_FFFF {
                offset = z.u64()?;
            }
        }
    }
    let path = check_path(&name)?.to_string();
    if flags & 0x0041 != 0 || method == 99 {
        return Err(BundleError::EncryptedEntry(path));
    }
    if made_by >> 8 == 3 {
        let mode = external >> 16;
        match mode & 0o170000 {
            0o120000 => return Err(BundleError::Symlink(path)),
            0 | 0o100000 if mode & 0o7000 == 0 => {}
            _ => return Err(BundleError::SpecialFileMode { path, mode }),
        }
    }
    if external & 0x10 != 0 {
        return Err(BundleError::SpecialFileMode {
            path,
            mode: 0o040000,
        });
    }
    if method != 0 && method != 8 {
        return Err(BundleError::UnsupportedCompression { path, method });
    }
    check_entry_size(&path, method, csize, usize_, limits)?;
    Ok(Central {
        name,
        entry: ZipEntry {
            path,
            method,
            compressed_size: csize,
            size: usize_,
            header_offset: offset,
            data_offset: 0,
        },
    })
}

fn check_entry_size(
    path: &str,
    method: u16,
    csize: u64,
    size: u64,
    limits: &Limits,
) -> Result<(), BundleError> {
    if size > limits.max_entry_bytes {
        return Err(BundleError::EntryTooLarge {
            path: path.into(),
            size,
            limit: limits.max_entry_bytes,
        });
    }
    let meta_limit = match path {
        MANIFEST => Some(limits.max_manifest_bytes),
        SUMS => Some(limits.max_sums_bytes),
        SIGNATURE => Some(limits.max_signature_bytes),
        _ => None,
    };
    if let Some(limit) = meta_limit.filter(|&l| size > l) {
        return Err(BundleError::MetadataTooLarge {
            path: path.into(),
            size,
            limit,
        });
    }
    if method == 0 && csize != size {
        return Err(malformed("a stored entry's sizes differ"));
    }
    if size > limits.ratio_floor_bytes && size / csize.max(1) > limits.max_ratio {
        return Err(BundleError::CompressionRatio {
            path: path.into(),
            ratio: size / csize.max(1),
            limit: limits.max_ratio,
        });
    }
    Ok(())
}

/// Reads and checks the whole directory: end record, central records, local headers, overlaps.
pub(crate) fn read_entries(
    src: &dyn Source,
    limits: &Limits,
) -> Result<Vec<ZipEntry>, BundleError> {
    let dir = find_directory(src, limits)?;
    let cd = read_at(src, dir.offset, dir.size)?;
    let mut f = Fields::new(&cd);
    let mut names = NameSet::default();
    let mut total: u64 = 0;
    let mut centrals = Vec::new();
    for _ in 0..dir.count {
        let c = parse_central(&mut f, limits)?;
        names.insert(&c.entry.path)?;
        total = total.saturating_add(c.entry.size);
        centrals.push(c);
    }
    if f.pos != cd.len() {
        return Err(malformed(
            "the central directory has bytes beyond its entries",
        ));
    }
    if total > limits.max_total_bytes {
        return Err(BundleError::TotalTooLarge {
            size: total,
            limit: limits.max_total_bytes,
        });
    }
    let mut entries = Vec::with_capacity(centrals.len());
    for c in centrals {
        entries.push(check_local(src, c, dir.offset)?);
    }
    let mut by_offset: Vec<&ZipEntry> = entries.iter().collect();
    by_offset.sort_by_key(|e| e.header_offset);
    for w in by_offset.windows(2) {
        if w[0].data_offset + w[0].compressed_size > w[1].header_offset {
            return Err(BundleError::OverlappingEntries(
                w[0].path.clone(),
                w[1].path.clone(),
            ));
        }
    }
    Ok(entries)
}

fn check_local(src: &dyn Source, c: Central, dir_offset: u64) -> Result<ZipEntry, BundleError> {
    let Central { name, mut entry } = c;
    if entry
        .header_offset
        .checked_add(30)
        .is_none_or(|e| e > dir_offset)
    {
        return Err(malformed("a local header is outside the file's data area"));
    }
    let head = read_at(src, entry.header_offset, 30)?;
    let mut f = Fields::new(&head);
    if f.u32()? != LOCAL_SIG {
        return Err(malformed("a local header has a bad signature"));
    }
    let _needed = f.u16()?;
    let flags = f.u16()?;
    let method = f.u16()?;
    f.take(4 + 4 + 4 + 4)?;
    let (name_len, extra_len) = (f.u16()?, f.u16()?);
    let local = read_at(src, entry.header_offset + 30, name_len.into())?;
    if local != name {
        return Err(BundleError::LocalHeaderMismatch {
            central: entry.path,
            local: String::from_utf8_lossy(&local).into_owned(),
        });
    }
    if flags & 0x0041 != 0 {
        return Err(BundleError::EncryptedEntry(entry.path));
    }
    if method != entry.method {
        return Err(malformed("a local header's compression method differs"));
    }
    entry.data_offset = entry.header_offset + 30 + u64::from(name_len) + u64::from(extra_len);
    let end = entry.data_offset.checked_add(entry.compressed_size);
    if end.is_none_or(|e| e > dir_offset) {
        return Err(malformed("an entry's data runs into the central directory"));
    }
    Ok(entry)
}
