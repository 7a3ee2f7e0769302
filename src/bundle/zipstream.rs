//! The one streaming zip writer, for usage archives and bundles: entries are deflated in
//! parallel in small batches (a [`Deflater`] per worker) and written in order; the central
//! directory and large metadata entries (`index.json`, `manifest.json`, `SHA256SUMS`) are
//! spilled to temporary files, so memory stays flat whatever the number of entries.
//!
//! The output is deterministic — the same entries give the same bytes, hence the same SHA-256 —
//! so a re-run after a crash produces the very archive it may already have deployed. Every
//! entry carries a fixed timestamp (1980-01-01), UTF-8 names, and zip64 end records when there
//! are 65,535 entries or more or offsets pass 4 GiB. Standard tools (`unzip -t`, the `zip`
//! crate) read it.
//!
//! An archive's `index.json` is `{"format":1,"entries":[{"path","size","sha256"}...]}`, one object per
//! usage file actually written, in archive order; it is the last entry.

use flate2::write::DeflateEncoder;
use flate2::{Compress, Compression, FlushCompress, Status};
use serde::Serialize;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};

/// Name of the index entry.
pub const INDEX_NAME: &str = "index.json";

const DOS_DATE: u16 = (1 << 5) | 1; // 1980-01-01
const DOS_TIME: u16 = 0;
const FLAG_UTF8: u16 = 0x0800;
const METHOD_STORED: u16 = 0;
const METHOD_DEFLATE: u16 = 8;
const MADE_BY_UNIX: u16 = (3 << 8) | 45;
const U32_MAX: u64 = 0xFFFF_FFFF;

/// Deflate level. zlib-rs's level 2 (its "fast" strategy) against level 6 (Info-ZIP's default,
/// "medium"), archiving 100,000 usage files of 1 KiB: 16 % less CPU (3.33 s against 3.98 s)
/// for 2 % more bytes (1.066x `zip -q -r`'s size against 1.046x). Usage JSON repeats itself
/// within a file, so the longer match search of the higher levels finds little more.
pub const LEVEL: u32 = 2;

/// One entry, compressed and ready to be written.
#[derive(Debug, Clone)]
pub struct PreparedEntry {
    /// Path inside the archive.
    pub path: String,
    /// CRC-32 of the uncompressed bytes.
    pub crc32: u32,
    /// Uncompressed size.
    pub size: u64,
    /// The bytes as stored (deflated, or raw when deflate did not help).
    pub data: Vec<u8>,
    /// Zip compression method.
    pub method: u16,
}

/// Deflates `content` (or keeps it raw when that is smaller).
#[cfg(test)]
fn prepare(path: String, content: &[u8]) -> io::Result<PreparedEntry> {
    Deflater::new().prepare(path, content)
}

/// A reusable deflate state: allocating one per entry would cost more than compressing a
/// 1 KiB usage file, so each worker thread keeps one and resets it between entries.
pub struct Deflater(Compress);

impl Default for Deflater {
    fn default() -> Self {
        Deflater::new()
    }
}

impl Deflater {
    /// A raw-deflate compressor at [`LEVEL`].
    pub fn new() -> Self {
        Deflater(Compress::new(Compression::new(LEVEL), false))
    }

    /// Deflates `content` (or keeps it raw when that is smaller).
    pub fn prepare(&mut self, path: String, content: &[u8]) -> io::Result<PreparedEntry> {
        self.0.reset();
        let mut out = Vec::with_capacity(content.len() + content.len() / 8 + 64);
        loop {
            let done = (self.0.total_in() as usize).min(content.len());
            let status = self
                .0
                .compress_vec(&content[done..], &mut out, FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        let (data, method) = if out.len() < content.len() {
            (out, METHOD_DEFLATE)
        } else {
            (content.to_vec(), METHOD_STORED)
        };
        Ok(PreparedEntry {
            path,
            crc32: crc32fast::hash(content),
            size: content.len() as u64,
            data,
            method,
        })
    }
}

/// Writes a zip archive entry by entry.
pub struct ZipStream<W: Write> {
    out: W,
    offset: u64,
    central: BufWriter<File>,
    central_len: u64,
    entries: u64,
}

impl<W: Write> ZipStream<W> {
    /// A writer onto `out`, spilling the central directory to `spill` (an empty temp file).
    pub fn new(out: W, spill: File) -> Self {
        ZipStream {
            out,
            offset: 0,
            central: BufWriter::new(spill),
            central_len: 0,
            entries: 0,
        }
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes of central directory so far.
    pub fn central_len(&self) -> u64 {
        self.central_len
    }

    /// Adds one prepared entry.
    pub fn add(&mut self, e: &PreparedEntry) -> io::Result<()> {
        let mut data = e.data.as_slice();
        self.add_raw(
            &e.path,
            e.crc32,
            e.size,
            e.data.len() as u64,
            e.method,
            &mut data,
        )
    }

    /// Adds an entry whose stored bytes come from `data` (exactly `csize` of them).
    pub fn add_raw(
        &mut self,
        path: &str,
        crc32: u32,
        size: u64,
        csize: u64,
        method: u16,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        if size >= U32_MAX || csize >= U32_MAX {
            return Err(io::Error::other(format!(
                "{path} is 4 GiB or larger, too large for a usage archive"
            )));
        }
        let name = path.as_bytes();
        let name_len = u16::try_from(name.len())
            .map_err(|_| io::Error::other(format!("entry name too long: {path}")))?;
        let local_offset = self.offset;
        let mut h = Vec::with_capacity(30 + name.len());
        put32(&mut h, 0x0403_4b50);
        put16(&mut h, 20);
        put16(&mut h, FLAG_UTF8);
        put16(&mut h, method);
        put16(&mut h, DOS_TIME);
        put16(&mut h, DOS_DATE);
        put32(&mut h, crc32);
        put32(&mut h, csize as u32);
        put32(&mut h, size as u32);
        put16(&mut h, name_len);
        put16(&mut h, 0);
        h.extend_from_slice(name);
        self.out.write_all(&h)?;
        let copied = io::copy(&mut data.take(csize), &mut self.out)?;
        if copied != csize {
            return Err(io::Error::other(format!("{path}: short entry data")));
        }
        self.offset += h.len() as u64 + csize;

        let zip64 = local_offset >= U32_MAX;
        let mut c = Vec::with_capacity(46 + name.len() + 12);
        put32(&mut c, 0x0201_4b50);
        put16(&mut c, MADE_BY_UNIX);
        put16(&mut c, if zip64 { 45 } else { 20 });
        put16(&mut c, FLAG_UTF8);
        put16(&mut c, method);
        put16(&mut c, DOS_TIME);
        put16(&mut c, DOS_DATE);
        put32(&mut c, crc32);
        put32(&mut c, csize as u32);
        put32(&mut c, size as u32);
        put16(&mut c, name_len);
        put16(&mut c, if zip64 { 12 } else { 0 });
        put16(&mut c, 0);
        put16(&mut c, 0);
        put16(&mut c, 0);
        put32(&mut c, 0o100644 << 16);
        put32(
            &mut c,
            if zip64 {
                U32_MAX as u32
            } else {
                local_offset as u32
            },
        );
        c.extend_from_slice(name);
        if zip64 {
            put16(&mut c, 0x0001);
            put16(&mut c, 8);
            put64(&mut c, local_offset);
        }
        self.central.write_all(&c)?;
        self.central_len += c.len() as u64;
        self.entries += 1;
        Ok(())
    }

    /// Writes the central directory and end records; answers the output.
    pub fn finish(mut self) -> io::Result<W> {
        let cd_offset = self.offset;
        let mut spill = self.central.into_inner().map_err(|e| e.into_error())?;
        spill.seek(SeekFrom::Start(0))?;
        let copied = io::copy(&mut spill, &mut self.out)?;
        if copied != self.central_len {
            return Err(io::Error::other("central directory spill is short"));
        }
        let cd_size = self.central_len;
        let n = self.entries;
        let mut t = Vec::with_capacity(98);
        if n >= 0xFFFF || cd_offset >= U32_MAX || cd_size >= U32_MAX {
            let z = cd_offset + cd_size;
            put32(&mut t, 0x0606_4b50);
            put64(&mut t, 44);
            put16(&mut t, MADE_BY_UNIX);
            put16(&mut t, 45);
            put32(&mut t, 0);
            put32(&mut t, 0);
            put64(&mut t, n);
            put64(&mut t, n);
            put64(&mut t, cd_size);
            put64(&mut t, cd_offset);
            put32(&mut t, 0x0706_4b50);
            put32(&mut t, 0);
            put64(&mut t, z);
            put32(&mut t, 1);
        }
        put32(&mut t, 0x0605_4b50);
        put16(&mut t, 0);
        put16(&mut t, 0);
        put16(&mut t, n.min(0xFFFF) as u16);
        put16(&mut t, n.min(0xFFFF) as u16);
        put32(&mut t, cd_size.min(U32_MAX) as u32);
        put32(&mut t, cd_offset.min(U32_MAX) as u32);
        put16(&mut t, 0);
        self.out.write_all(&t)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}
fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

#[derive(Serialize)]
struct IndexLine<'a> {
    path: &'a str,
    size: u64,
    sha256: &'a str,
}

/// One entry deflated into a temp file as its bytes come (any size, bounded memory), then
/// appended to a zip: `index.json` of an archive, `manifest.json` and `SHA256SUMS` of a
/// bundle, large bundle payloads.
pub struct SpilledEntry {
    enc: DeflateEncoder<BufWriter<File>>,
    crc: crc32fast::Hasher,
    size: u64,
}

impl SpilledEntry {
    /// An entry spilled into `spill` (an empty temp file).
    pub fn new(spill: File) -> Self {
        SpilledEntry {
            enc: DeflateEncoder::new(BufWriter::new(spill), Compression::new(LEVEL)),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// Uncompressed bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Closes the entry and appends it to `zip` as `name`.
    pub fn append_to<W: Write>(self, name: &str, zip: &mut ZipStream<W>) -> io::Result<()> {
        self.append_after(name, b"", zip)
    }

    /// Closes the entry and appends it to `zip` as `name`, its content preceded by `first`,
    /// bytes known only now (`SHA256SUMS`' first line names the manifest's SHA-256, which is
    /// complete only at the end, while the other lines are deflated as they come).
    ///
    /// `first` is deflated on its own and ended with a sync flush: non-final blocks ending on
    /// a byte boundary, after which the spilled stream, deflated independently and never
    /// referring back before its own start, continues as one valid deflate stream (the way
    /// `pigz` joins its pieces).
    pub fn append_after<W: Write>(
        self,
        name: &str,
        first: &[u8],
        zip: &mut ZipStream<W>,
    ) -> io::Result<()> {
        let mut file = self
            .enc
            .finish()?
            .into_inner()
            .map_err(|e| e.into_error())?;
        let rest_csize = file.stream_position()?;
        file.seek(SeekFrom::Start(0))?;
        let mut head = Vec::new();
        let mut crc = crc32fast::Hasher::new();
        if !first.is_empty() {
            let mut c = Compress::new(Compression::new(LEVEL), false);
            head.reserve(first.len() + 64);
            loop {
                let done = (c.total_in() as usize).min(first.len());
                c.compress_vec(&first[done..], &mut head, FlushCompress::Sync)
                    .map_err(io::Error::other)?;
                // Done once all input is in and the flush left spare room in the output.
                if c.total_in() as usize == first.len() && head.len() < head.capacity() {
                    break;
                }
                head.reserve(head.capacity().max(64));
            }
            crc.update(first);
        }
        crc.combine(&self.crc);
        let csize = head.len() as u64 + rest_csize;
        let size = first.len() as u64 + self.size;
        let mut data = io::Read::chain(
            io::Cursor::new(head),
            io::BufReader::with_capacity(256 * 1024, file),
        );
        zip.add_raw(name, crc.finalize(), size, csize, METHOD_DEFLATE, &mut data)
    }
}

impl Write for SpilledEntry {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.enc.write_all(buf)?;
        self.crc.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Builds `index.json` deflated into a temp file while the entries are written.
pub struct IndexWriter {
    spill: SpilledEntry,
    first: bool,
}

impl IndexWriter {
    /// An index spilled into `spill` (an empty temp file).
    pub fn new(spill: File) -> io::Result<Self> {
        let mut w = IndexWriter {
            spill: SpilledEntry::new(spill),
            first: true,
        };
        w.spill.write_all(br#"{"format":1,"entries":["#)?;
        Ok(w)
    }

    /// Lists one entry.
    pub fn add(&mut self, path: &str, size: u64, sha256: &str) -> io::Result<()> {
        let mut line = Vec::with_capacity(path.len() + 100);
        if !self.first {
            line.push(b',');
        }
        self.first = false;
        serde_json::to_writer(&mut line, &IndexLine { path, size, sha256 })?;
        self.spill.write_all(&line)
    }

    /// Closes the index and appends it to `zip` as [`INDEX_NAME`].
    pub fn append_to<W: Write>(mut self, zip: &mut ZipStream<W>) -> io::Result<()> {
        self.spill.write_all(b"]}")?;
        self.spill.append_to(INDEX_NAME, zip)
    }
}

/// A writer that counts and hashes what passes through it.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: sha2::Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
            len: 0,
        }
    }

    /// The inner writer, the hex SHA-256 and the length of everything written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = <sha2::Sha256 as sha2::Digest>::finalize(self.hasher);
        (self.inner, hex::encode(digest), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(n: usize) -> Vec<u8> {
        let spill = tempfile::tempfile().unwrap();
        let mut z = ZipStream::new(Vec::new(), spill);
        let mut index = IndexWriter::new(tempfile::tempfile().unwrap()).unwrap();
        for i in 0..n {
            let body = format!("{{\"product\":\"x\",\"n\":{i}}}").repeat(i % 5 + 1);
            let path = format!("2024-01-01/x/f{i}.json");
            let e = prepare(path.clone(), body.as_bytes()).unwrap();
            z.add(&e).unwrap();
            index
                .add(&path, e.size, &crate::protocol::sha256_hex(body.as_bytes()))
                .unwrap();
        }
        index.append_to(&mut z).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn archives_are_readable_by_the_zip_crate_with_their_index() {
        let bytes = build(30);
        let mut a = zip::ZipArchive::new(io::Cursor::new(bytes)).unwrap();
        assert_eq!(a.len(), 31);
        let mut f = a.by_name("2024-01-01/x/f7.json").unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, r#"{"product":"x","n":7}"#.repeat(3));
        drop(f);
        let mut idx = String::new();
        a.by_name(INDEX_NAME)
            .unwrap()
            .read_to_string(&mut idx)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&idx).unwrap();
        assert_eq!(v["format"], 1);
        assert_eq!(v["entries"].as_array().unwrap().len(), 30);
        assert_eq!(v["entries"][7]["path"], "2024-01-01/x/f7.json");
    }

    #[test]
    fn the_same_entries_give_the_same_bytes() {
        assert_eq!(build(10), build(10));
    }

    /// [`build`] through the pipeline, deflating on `workers` threads.
    fn build_in_parallel(n: usize, workers: usize) -> Vec<u8> {
        let mut z = ZipStream::new(Vec::new(), tempfile::tempfile().unwrap());
        let mut index = IndexWriter::new(tempfile::tempfile().unwrap()).unwrap();
        let mut at = 0;
        super::super::Ordered {
            next: || {
                let chunk: Vec<usize> = (at..n.min(at + 13)).collect();
                at += chunk.len();
                Ok((!chunk.is_empty()).then_some(chunk))
            },
            init: Deflater::new,
            work: |d: &mut Deflater, i: usize| {
                let body = format!("{{\"product\":\"x\",\"n\":{i}}}").repeat(i % 5 + 1);
                let sha = crate::protocol::sha256_hex(body.as_bytes());
                d.prepare(format!("2024-01-01/x/f{i}.json"), body.as_bytes())
                    .map(|e| (e, sha))
            },
            on_panic: || Err(io::Error::other("a worker panicked")),
        }
        .run(
            workers,
            |chunk| {
                for e in chunk {
                    let (e, sha) = e?;
                    z.add(&e)?;
                    index.add(&e.path, e.size, &sha)?;
                }
                Ok(())
            },
            || io::Error::other("lost"),
        )
        .unwrap();
        index.append_to(&mut z).unwrap();
        z.finish().unwrap()
    }

    #[test]
    fn deflating_on_many_threads_gives_the_bytes_of_one() {
        let one = build(500);
        for workers in [1, 2, 4] {
            assert!(build_in_parallel(500, workers) == one, "{workers} workers");
        }
    }

    #[test]
    fn bytes_known_last_can_open_an_entry_deflated_before_them() {
        // The first line is deflated after the rest and joined in front of it, as
        // `SHA256SUMS` is; zip readers inflate and CRC-check one entry.
        for (first, n) in [
            (&b"3f2a  manifest.json\n"[..], 60_000),
            (&b""[..], 10),
            (b"x", 0),
        ] {
            let mut rest = Vec::new();
            let mut spilled = SpilledEntry::new(tempfile::tempfile().unwrap());
            for i in 0..n {
                let line = format!("{:064x}  payload/usage/{:064x}.json\n", i * 7919, i);
                spilled.write_all(line.as_bytes()).unwrap();
                rest.extend_from_slice(line.as_bytes());
            }
            let mut z = ZipStream::new(Vec::new(), tempfile::tempfile().unwrap());
            spilled.append_after("SUMS", first, &mut z).unwrap();
            let bytes = z.finish().unwrap();
            let mut a = zip::ZipArchive::new(io::Cursor::new(bytes)).unwrap();
            let mut got = Vec::new();
            a.by_name("SUMS").unwrap().read_to_end(&mut got).unwrap();
            assert!(got == [first, &rest[..]].concat(), "{} lines", n);
        }
    }

    #[test]
    fn more_than_65535_entries_use_zip64_end_records() {
        let spill = tempfile::tempfile().unwrap();
        let mut z = ZipStream::new(Vec::new(), spill);
        let stored = PreparedEntry {
            path: String::new(),
            crc32: crc32fast::hash(b"x"),
            size: 1,
            data: b"x".to_vec(),
            method: METHOD_STORED,
        };
        for i in 0..70_000u32 {
            let e = PreparedEntry {
                path: format!("f{i}"),
                ..stored.clone()
            };
            z.add(&e).unwrap();
        }
        let bytes = z.finish().unwrap();
        let a = zip::ZipArchive::new(io::Cursor::new(bytes)).unwrap();
        assert_eq!(a.len(), 70_000);
    }
}
