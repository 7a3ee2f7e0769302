//! Writing a signed bundle, streaming, durably: the one zip writer of jfconnect
//! ([`super::zipstream`]), which also writes the usage archives.
//!
//! Payload entries are deflated (usage files on every core by the caller, through a
//! [`Deflater`] each) and written one at a time; their manifest rows and `SHA256SUMS` lines
//! are deflated into temp files as they come (the manifest's head is known from the start),
//! so a bundle of 100,000 usage files never holds them in memory and its end does not wait
//! for tens of MB of metadata to be deflated on one thread.
//! The file is written under a temp name, fsynced, renamed and the folder fsynced: a bundle
//! that exists under its final name is whole (promise 1 in docs/architecture.md counts it as
//! the receipt of the usage it holds).

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use blake2::Blake2b512;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::error::BundleError;
use super::kind::Kind;
use super::limits::Limits;
use super::manifest::{
    check_path, format_time, sums_line, valid_id, Manifest, ManifestEntry, FORMAT_V1, MANIFEST,
    MAX_SEQUENCE, PAYLOAD_PREFIX, SIGNATURE, SUMS,
};
use super::minisign::SecretKey;
use super::writeback::Writeback;
use super::zipstream::{Deflater, PreparedEntry, SpilledEntry, ZipStream};

/// Untrusted comment written on every bundle signature.
pub const UNTRUSTED_COMMENT: &str = "jfconnect bundle signature (check the trusted comment)";

/// The header fields of a bundle to write.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// What it carries.
    pub kind: Kind,
    /// Unique id; see [`new_bundle_id`].
    pub bundle_id: String,
    /// The JPD it is from or for.
    pub jpd_id: String,
    /// Creation time.
    pub created: DateTime<Utc>,
    /// Expiry time.
    pub expires: DateTime<Utc>,
    /// Strictly increasing per signer and kind.
    pub sequence: u64,
}

/// Where a payload entry's bytes come from.
pub enum PayloadSource {
    /// A file on disk, opened when its turn comes.
    File(PathBuf),
    /// Bytes in memory (small entries: entitlements, registration request).
    Bytes(Vec<u8>),
    /// Any reader.
    Reader(Box<dyn Read + Send>),
}

/// One payload entry to write.
pub struct PayloadEntry {
    /// Path inside the bundle; must start with `payload/`.
    pub path: String,
    /// Its content.
    pub source: PayloadSource,
}

/// A fresh random bundle id (32 hex digits).
pub fn new_bundle_id() -> String {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    hex::encode(b)
}

fn check_spec(spec: &BundleSpec) -> Result<(), BundleError> {
    let bad = |m: &str| Err(BundleError::InvalidSpec(m.to_string()));
    if !valid_id(&spec.bundle_id) {
        return bad("the bundle id is not a valid id (1-128 of A-Z a-z 0-9 . _ - : @)");
    }
    if !valid_id(&spec.jpd_id) {
        return bad("the JPD id is not a valid id (1-128 of A-Z a-z 0-9 . _ - : @)");
    }
    if spec.sequence > MAX_SEQUENCE {
        return bad("the sequence is larger than 2^53-1");
    }
    if spec.expires <= spec.created {
        return bad("expires must be after created");
    }
    Ok(())
}

/// Writes a signed bundle to `out` and returns its manifest (with every entry's SHA-256).
/// The manifest's entries are kept in memory for the answer: for small bundles
/// (entitlements, registration); usage bundles go through [`BundleWriter`].
pub fn write_bundle(
    out: &Path,
    spec: &BundleSpec,
    payload: impl IntoIterator<Item = PayloadEntry>,
    key: &SecretKey,
) -> Result<Manifest, BundleError> {
    let mut w = BundleWriter::create(out, spec.clone(), key)?;
    let mut manifest = w.head.clone();
    for item in payload {
        let e = w.add_source(&item.path, item.source)?;
        manifest.entries.push(e);
    }
    w.finish(key)?;
    Ok(manifest)
}

/// Bytes a payload entry adds to a bundle's `manifest.json` at most: its pretty-printed
/// object (150 bytes with a 20-digit size, the separator and the SHA-256) and its path as a
/// JSON string.
fn manifest_row_cost(path: &str) -> u64 {
    let escaped: u64 = path
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8() as u64,
        })
        .sum();
    150 + escaped
}

/// A bundle being written entry by entry; see the module doc. Nothing exists under the
/// final name until [`BundleWriter::finish`] returns.
pub struct BundleWriter {
    out: PathBuf,
    dir: PathBuf,
    tmp: tempfile::NamedTempFile,
    zip: ZipStream<BufWriter<Writeback>>,
    /// The manifest's head (`trusted_comment` is signed).
    head: Manifest,
    /// `manifest.json`, deflated as it is written, and its SHA-256.
    manifest: MetaSpill,
    rows_len: u64,
    /// `SHA256SUMS` but its first line (the manifest's), deflated as it is written; its bytes
    /// are also kept raw, because the signature's BLAKE2b must hash the first line first.
    sums: MetaSpill,
    sums_raw: BufWriter<File>,
    sums_len: u64,
    entries: u64,
    names: super::names::NameSet,
    deflater: Deflater,
    limits: Limits,
}

impl BundleWriter {
    /// Starts a bundle that will be `out` (its temp file and spills beside it), to be signed
    /// by `key` in [`BundleWriter::finish`].
    pub fn create(out: &Path, spec: BundleSpec, key: &SecretKey) -> Result<Self, BundleError> {
        check_spec(&spec)?;
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."))
            .to_path_buf();
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-bundle-")
            .tempfile_in(&dir)
            .map_err(|e| BundleError::io("create a temp file in", &dir, e))?;
        let spill = || {
            tempfile::tempfile_in(&dir)
                .map_err(|e| BundleError::io("create a temp file in", &dir, e))
        };
        let file = tmp
            .as_file()
            .try_clone()
            .map_err(|e| BundleError::io("write", tmp.path(), e))?;
        let head = Manifest {
            format: FORMAT_V1.into(),
            kind: spec.kind,
            bundle_id: spec.bundle_id.clone(),
            jpd_id: spec.jpd_id.clone(),
            created: format_time(spec.created),
            expires: format_time(spec.expires),
            sequence: spec.sequence,
            signing_key_id: key.id.to_string(),
            entries: Vec::new(),
        };
        // `serde_json::to_vec_pretty` of the whole manifest: its head now, the rows as they
        // come, the end in `finish`.
        let werr = |e: io::Error| BundleError::io("write", tmp.path(), e);
        let text = serde_json::to_vec_pretty(&head).map_err(|e| werr(io::Error::other(e)))?;
        let open = text
            .strip_suffix(b"[]\n}")
            .ok_or_else(|| werr(io::Error::other("unexpected manifest shape")))?;
        let mut manifest = MetaSpill::new(spill()?);
        manifest.write_all(open).map_err(werr)?;
        Ok(BundleWriter {
            zip: ZipStream::new(
                BufWriter::with_capacity(1 << 20, Writeback::new(file)),
                spill()?,
            ),
            head,
            manifest,
            sums: MetaSpill::new(spill()?),
            sums_raw: BufWriter::with_capacity(META_BUFFER, spill()?),
            out: out.to_path_buf(),
            dir,
            tmp,
            rows_len: 0,
            sums_len: 0,
            entries: 0,
            names: super::names::NameSet::default(),
            deflater: Deflater::new(),
            limits: Limits::default(),
        })
    }

    fn werr(&self, e: io::Error) -> BundleError {
        BundleError::io("write", self.tmp.path(), e)
    }

    /// True when an entry at `path` of `stored` bytes still fits under `max_bytes` and under
    /// every cap a reader applies (`Limits`' defaults: entries, directory, manifest, sums),
    /// with room for the three metadata files. The first entry always fits.
    pub fn fits(&self, path: &str, stored: u64, max_bytes: u64) -> bool {
        if self.entries == 0 {
            return true;
        }
        let l = &self.limits;
        let p = path.len() as u64;
        // Metadata: the manifest's head, the manifest's own sums line, the signature, and
        // each one's headers; bounded generously.
        let meta = 4096;
        let manifest = self.rows_len + manifest_row_cost(path) + 1024;
        let sums = self.sums_len + 64 + 3 + p + 100;
        self.entries + 1 + 3 <= l.max_entries
            && self.zip.central_len() + 46 + 12 + p + 3 * 100 <= l.max_directory_bytes
            && manifest <= l.max_manifest_bytes
            && sums <= l.max_sums_bytes
            && self.zip.offset()
                + 30
                + p
                + stored
                + self.zip.central_len()
                + 58
                + p
                + manifest
                + sums
                + meta
                <= max_bytes
    }

    /// Adds one payload entry already deflated (`e.path` its path, `sha256` the hex SHA-256 of
    /// its uncompressed bytes).
    pub fn add_prepared(&mut self, e: &PreparedEntry, sha256: &str) -> Result<(), BundleError> {
        if self.add_prepared_once(e, sha256)? {
            return Ok(());
        }
        Err(repeated(&e.path))
    }

    /// [`BundleWriter::add_prepared`], unless an entry of that very path is in the bundle
    /// already: then nothing is written and the answer is false (identical usage files, named
    /// by their SHA-256, are one).
    pub fn add_prepared_once(
        &mut self,
        e: &PreparedEntry,
        sha256: &str,
    ) -> Result<bool, BundleError> {
        if !self.name_is_new(&e.path)? {
            return Ok(false);
        }
        self.zip.add(e).map_err(|err| self.werr(err))?;
        self.listed(&e.path, e.size, sha256)?;
        Ok(true)
    }

    fn check_name(&mut self, path: &str) -> Result<(), BundleError> {
        if self.name_is_new(path)? {
            return Ok(());
        }
        Err(repeated(path))
    }

    /// Checks `path` and adds it to the bundle's names; false when it is there already.
    fn name_is_new(&mut self, path: &str) -> Result<bool, BundleError> {
        let path = check_path(path.as_bytes())?;
        if !path.starts_with(PAYLOAD_PREFIX) {
            return Err(BundleError::InvalidSpec(format!(
                "payload path {path} does not start with {PAYLOAD_PREFIX}"
            )));
        }
        // Never write a pair of names that a reader refuses (bundle-format §1).
        match self.names.insert(path) {
            Ok(()) => Ok(true),
            Err(BundleError::DuplicateName(_)) => Ok(false),
            Err(e) => Err(BundleError::InvalidSpec(format!(
                "payload entry names: {e}"
            ))),
        }
    }

    fn listed(&mut self, path: &str, size: u64, sha256: &str) -> Result<(), BundleError> {
        let row = ManifestEntry {
            path: path.to_string(),
            size,
            sha256: sha256.to_string(),
        };
        let mut text = Vec::with_capacity(200);
        let mut ser = serde_json::Serializer::with_formatter(
            &mut text,
            serde_json::ser::PrettyFormatter::with_indent(b"  "),
        );
        serde::Serialize::serialize(&row, &mut ser).map_err(|e| self.werr(io::Error::other(e)))?;
        // Rows sit two levels deep in the pretty manifest.
        let text = indent(&text, b"    ");
        let sep: &[u8] = if self.entries > 0 { b",\n" } else { b"[\n" };
        self.manifest
            .write_all(sep)
            .and_then(|()| self.manifest.write_all(&text))
            .map_err(|e| self.werr(e))?;
        self.rows_len += (if self.entries > 0 { 2 } else { 0 }) + text.len() as u64;
        let line = sums_line(sha256, path);
        self.sums
            .write_all(line.as_bytes())
            .and_then(|()| self.sums_raw.write_all(line.as_bytes()))
            .map_err(|e| self.werr(e))?;
        self.sums_len += line.len() as u64;
        self.entries += 1;
        Ok(())
    }

    /// Adds one payload entry from `source`, deflated here; answers its manifest row.
    pub fn add_source(
        &mut self,
        path: &str,
        source: PayloadSource,
    ) -> Result<ManifestEntry, BundleError> {
        let (size, sha256) = match source {
            PayloadSource::Bytes(b) => {
                let sha = hex::encode(Sha256::digest(&b));
                let e = self
                    .deflater
                    .prepare(path.to_string(), &b)
                    .map_err(|err| self.werr(err))?;
                self.add_prepared(&e, &sha)?;
                return Ok(ManifestEntry {
                    path: e.path,
                    size: e.size,
                    sha256: sha,
                });
            }
            PayloadSource::File(p) => {
                let mut f = File::open(&p).map_err(|e| BundleError::io("read", &p, e))?;
                self.check_name(path)?;
                self.spill_entry(path, &mut f)
                    .map_err(|e| BundleError::io("copy", &p, e))?
            }
            PayloadSource::Reader(mut r) => {
                self.check_name(path)?;
                self.spill_entry(path, &mut r).map_err(|e| self.werr(e))?
            }
        };
        self.listed(path, size, &sha256)?;
        Ok(ManifestEntry {
            path: path.to_string(),
            size,
            sha256,
        })
    }

    /// Deflates `r` into a spill file beside the bundle, then appends it: for entries of any
    /// size, in bounded memory.
    fn spill_entry(&mut self, path: &str, r: &mut dyn Read) -> io::Result<(u64, String)> {
        let mut spill = SpilledEntry::new(tempfile::tempfile_in(&self.dir)?);
        let mut hasher = Sha256::new();
        pump(r, |b| {
            hasher.update(b);
            spill.write_all(b)
        })?;
        let size = spill.size();
        spill.append_to(path, &mut self.zip)?;
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// Writes `manifest.json`, `SHA256SUMS` and its signature by `key` (the key the bundle
    /// was started with), fsyncs the file, renames it to its final name and fsyncs the folder.
    pub fn finish(self, key: &SecretKey) -> Result<(), BundleError> {
        if key.id.to_string() != self.head.signing_key_id {
            return Err(BundleError::InvalidSpec(
                "the bundle is signed with another key than the one it was started with".into(),
            ));
        }
        let BundleWriter {
            mut zip,
            tmp,
            out,
            dir,
            head,
            manifest,
            sums,
            sums_raw,
            entries,
            mut deflater,
            ..
        } = self;
        let werr = |e: io::Error| BundleError::io("write", tmp.path(), e);
        let meta = Metadata {
            head: &head,
            empty: entries == 0,
            manifest,
            sums,
            sums_raw,
        };
        meta.append_to(&mut zip, &mut deflater, key).map_err(werr)?;
        let buffered = zip.finish().map_err(werr)?;
        buffered.into_inner().map_err(|e| werr(e.into_error()))?;
        // A bundle is meant to be carried and read by others; the temp file starts owner-only.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(|e| BundleError::io("set permissions of", tmp.path(), e))?;
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| BundleError::io("fsync", tmp.path(), e))?;
        tmp.persist(&out)
            .map_err(|e| BundleError::io("rename into place", &out, e.error))?;
        crate::state::sync_dir(&dir).map_err(|e| BundleError::io("fsync", &dir, e))?;
        Ok(())
    }
}

/// What the three metadata entries are made of when the payload is written.
struct Metadata<'a> {
    head: &'a Manifest,
    /// No payload entry.
    empty: bool,
    manifest: MetaSpill,
    sums: MetaSpill,
    sums_raw: BufWriter<File>,
}

impl Metadata<'_> {
    /// Appends the three metadata entries: the ends of the manifest and of `SHA256SUMS`
    /// (deflated as their rows came), then the signature of `SHA256SUMS`.
    fn append_to<W: Write>(
        mut self,
        zip: &mut ZipStream<W>,
        deflater: &mut Deflater,
        key: &SecretKey,
    ) -> io::Result<()> {
        let end: &[u8] = if self.empty {
            b"[]\n}\n"
        } else {
            b"\n  ]\n}\n"
        };
        self.manifest.write_all(end)?;
        let (manifest, manifest_sha) = self.manifest.finish()?;
        manifest.append_to(MANIFEST, zip)?;

        let first = sums_line(&manifest_sha, MANIFEST);
        let mut blake = Blake2b512::new();
        blake.update(first.as_bytes());
        let mut lines = rewind(&mut self.sums_raw)?;
        pump(&mut lines, |b| {
            blake.update(b);
            Ok(())
        })?;
        let (sums, _) = self.sums.finish()?;
        sums.append_after(SUMS, first.as_bytes(), zip)?;
        let trusted = self.head.trusted_comment();
        let signature = key
            .sign_digest(&blake.finalize().into(), UNTRUSTED_COMMENT, &trusted)
            .map_err(io::Error::other)?;
        zip.add(&deflater.prepare(SIGNATURE.to_string(), signature.as_bytes())?)
    }
}

/// Bytes of metadata gathered before they are hashed and deflated: deflating a few hundred
/// bytes at a time costs more than deflating them in one go.
const META_BUFFER: usize = 256 * 1024;

/// A metadata entry (`manifest.json`, `SHA256SUMS`) deflated into a temp file as it is
/// written, in [`META_BUFFER`] pieces, with the SHA-256 of its bytes.
struct MetaSpill {
    buf: Vec<u8>,
    spill: SpilledEntry,
    sha: Sha256,
}

impl MetaSpill {
    fn new(spill: File) -> Self {
        MetaSpill {
            buf: Vec::with_capacity(META_BUFFER),
            spill: SpilledEntry::new(spill),
            sha: Sha256::new(),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= META_BUFFER {
            self.drain()?;
        }
        Ok(())
    }

    fn drain(&mut self) -> io::Result<()> {
        self.sha.update(&self.buf);
        self.spill.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// The entry, ready to append, and the hex SHA-256 of its bytes.
    fn finish(mut self) -> io::Result<(SpilledEntry, String)> {
        self.drain()?;
        Ok((self.spill, hex::encode(self.sha.finalize())))
    }
}

/// The refusal of a payload path given twice.
fn repeated(path: &str) -> BundleError {
    let e = BundleError::DuplicateName(path.to_string());
    BundleError::InvalidSpec(format!("payload entry names: {e}"))
}

/// Hands everything `r` reads to `each`, a buffer at a time.
fn pump(r: &mut dyn Read, mut each: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => each(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The spill behind `w`, flushed and read from its start.
fn rewind(w: &mut BufWriter<File>) -> io::Result<io::BufReader<File>> {
    w.flush()?;
    let mut f = w.get_ref().try_clone()?;
    f.seek(SeekFrom::Start(0))?;
    Ok(io::BufReader::with_capacity(256 * 1024, f))
}

/// `text` with `pad` after every line break (and before the first line).
fn indent(text: &[u8], pad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 4 * pad.len());
    let mut start = true;
    for &b in text {
        if start && b != b'\n' {
            out.extend_from_slice(pad);
            start = false;
        }
        out.push(b);
        if b == b'\n' {
            start = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{generate_keypair, verify_file_with_pubkey};

    fn spec() -> BundleSpec {
        let created = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        BundleSpec {
            kind: Kind::Usage,
            bundle_id: "b-1".into(),
            jpd_id: "jpd-1".into(),
            created,
            expires: created + chrono::Duration::days(36_500),
            sequence: 7,
        }
    }

    fn entry(dir: &Path, name: &str) -> Vec<u8> {
        let mut zip = zip::ZipArchive::new(File::open(dir.join("b.jfbundle")).unwrap()).unwrap();
        let mut bytes = Vec::new();
        zip.by_name(name).unwrap().read_to_end(&mut bytes).unwrap();
        bytes
    }

    #[test]
    fn the_streamed_manifest_is_the_pretty_json_of_the_whole_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_keypair();
        let payload = [
            ("payload/a.json", &b"{\"a\":1}"[..]),
            ("payload/q\"uote.json", b"x"),
            ("payload/\u{e9}t\u{e9}.json", b""),
        ];
        let manifest = write_bundle(
            &dir.path().join("b.jfbundle"),
            &spec(),
            payload.iter().map(|(p, b)| PayloadEntry {
                path: p.to_string(),
                source: PayloadSource::Bytes(b.to_vec()),
            }),
            &key,
        )
        .unwrap();
        let mut expected = serde_json::to_vec_pretty(&manifest).unwrap();
        expected.push(b'\n');
        assert_eq!(
            String::from_utf8(entry(dir.path(), MANIFEST)).unwrap(),
            String::from_utf8(expected.clone()).unwrap()
        );
        let mut sums = sums_line(&hex::encode(Sha256::digest(&expected)), MANIFEST);
        for e in &manifest.entries {
            sums.push_str(&sums_line(&e.sha256, &e.path));
        }
        assert_eq!(entry(dir.path(), SUMS), sums.into_bytes());
        std::fs::write(dir.path().join("k.pub"), key.public().to_file_string()).unwrap();
        let m = verify_file_with_pubkey(&dir.path().join("b.jfbundle"), &dir.path().join("k.pub"))
            .unwrap();
        assert_eq!(m, manifest);
    }

    #[test]
    fn a_bundle_with_no_payload_has_an_empty_entry_list() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_keypair();
        let manifest =
            write_bundle(&dir.path().join("b.jfbundle"), &spec(), Vec::new(), &key).unwrap();
        let mut expected = serde_json::to_vec_pretty(&manifest).unwrap();
        expected.push(b'\n');
        assert_eq!(entry(dir.path(), MANIFEST), expected);
    }

    #[test]
    fn manifest_and_sums_larger_than_their_buffers_are_whole_and_signed() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_keypair();
        // About 190 bytes of manifest and 130 of sums a file: several META_BUFFER pieces.
        let payload = (0..4000).map(|i| PayloadEntry {
            path: format!("payload/usage/{:064x}.json", i),
            source: PayloadSource::Bytes(format!("{{\"n\":{i}}}").into_bytes()),
        });
        let manifest =
            write_bundle(&dir.path().join("b.jfbundle"), &spec(), payload, &key).unwrap();
        let mut expected = serde_json::to_vec_pretty(&manifest).unwrap();
        expected.push(b'\n');
        assert!(expected.len() > 2 * META_BUFFER);
        assert!(entry(dir.path(), MANIFEST) == expected);
        std::fs::write(dir.path().join("k.pub"), key.public().to_file_string()).unwrap();
        let m = verify_file_with_pubkey(&dir.path().join("b.jfbundle"), &dir.path().join("k.pub"))
            .unwrap();
        assert_eq!(m.entries.len(), 4000);
    }

    #[test]
    fn a_bundle_is_signed_only_with_the_key_it_was_started_with() {
        let dir = tempfile::tempdir().unwrap();
        let w = BundleWriter::create(&dir.path().join("b.jfbundle"), spec(), &generate_keypair())
            .unwrap();
        let err = w.finish(&generate_keypair()).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
        assert!(!dir.path().join("b.jfbundle").exists());
    }

    #[test]
    fn a_path_given_twice_ignoring_case_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_keypair();
        let twice = ["payload/A.json", "payload/a.json"].map(|p| PayloadEntry {
            path: p.into(),
            source: PayloadSource::Bytes(b"1".to_vec()),
        });
        let err = write_bundle(&dir.path().join("b.jfbundle"), &spec(), twice, &key).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("payload/A.json") && text.contains("payload/a.json"),
            "{text}"
        );
        assert!(!dir.path().join("b.jfbundle").exists());
    }

    #[test]
    fn a_bundle_is_full_before_it_passes_its_size_or_a_readers_caps() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate_keypair();
        let mut w = BundleWriter::create(&dir.path().join("b.jfbundle"), spec(), &key).unwrap();
        let path = format!("payload/usage/{}.json", "0".repeat(64));
        assert!(
            w.fits(&path, 10_000_000, 1 << 20),
            "the first entry always fits"
        );
        w.add_source("payload/one.json", PayloadSource::Bytes(vec![b'x'; 1000]))
            .unwrap();
        assert!(w.fits(&path, 1000, 1 << 20));
        assert!(!w.fits(&path, 1 << 20, 1 << 20));
        w.entries = Limits::default().max_entries - 3;
        assert!(
            !w.fits(&path, 1, 1 << 30),
            "the entry cap counts the metadata files"
        );
        w.entries = 1;
        w.rows_len = Limits::default().max_manifest_bytes - 1024;
        assert!(!w.fits(&path, 1, 1 << 30), "the manifest cap");
    }
}
