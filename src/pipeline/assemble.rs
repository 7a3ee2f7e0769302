//! Builds the zip file of one archive of a plan from the spool: entries are read, checked
//! against the plan's SHA-256, deflated on every core in bounded chunks while the zip is being
//! written (`bundle::Ordered`), and written in plan order to a temp file that is fsynced before anyone relies on it.
//!
//! A planned file that vanished or changed since it was planned is left out (and listed as
//! dropped, so it is never deleted on the strength of this archive). On any error the temp file
//! is removed; a full disk is reported with the folder's name.

use super::failpoint::Failpoints;
use super::plan::PlanEntry;
use super::{plan_store, Layout, PipelineError};
use crate::bundle::{
    deflate_threads, Deflater, HashingWriter, IndexWriter, Ordered, PreparedEntry, Writeback,
    ZipStream,
};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};

/// Most entries in one chunk of the pipeline.
const BATCH_ENTRIES: usize = 256;
/// Most input bytes in one chunk (a single larger file goes alone).
const BATCH_BYTES: u64 = 8 * 1024 * 1024;

/// A finished, fsynced archive file.
#[derive(Debug)]
pub(crate) struct Assembled {
    /// The temp file.
    pub path: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Usage files written into it.
    pub files: u64,
    /// Spool names of planned files left out.
    pub dropped: Vec<String>,
}

enum Prepared {
    Entry(PreparedEntry, String),
    Dropped(String),
}

/// Writes archive `k` of the active plan into `<data_dir>/usage/archival/tmp/`.
pub fn assemble(
    layout: &Layout,
    k: usize,
    failpoint: &Failpoints,
) -> Result<Assembled, PipelineError> {
    let out = archive_temp_path(layout, k);
    let result = write(layout, k, &out, failpoint);
    if result.is_err() {
        let _ = fs::remove_file(&out);
    }
    result
}

fn write(
    layout: &Layout,
    k: usize,
    out: &Path,
    failpoint: &Failpoints,
) -> Result<Assembled, PipelineError> {
    let mut builder = ArchiveBuilder::create(layout, out)?;
    let mut entries = plan_store::entries(layout, k)?;
    let spool = &layout.spool;
    let failed = || PipelineError::io("deflate", spool, io::Error::other("a worker thread failed"));
    Ordered {
        next: || {
            let mut batch = Vec::new();
            let mut bytes = 0u64;
            for e in entries.by_ref() {
                let e = e?;
                bytes += e.size;
                batch.push(e);
                if batch.len() >= BATCH_ENTRIES || bytes >= BATCH_BYTES {
                    break;
                }
            }
            Ok((!batch.is_empty()).then_some(batch))
        },
        init: Deflater::new,
        work: |d: &mut Deflater, e: PlanEntry| prepare_one(spool, &e, d),
        on_panic: || Err(failed()),
    }
    .run(
        deflate_threads(),
        |prepared| {
            for p in prepared {
                match p? {
                    Prepared::Entry(entry, sha) => builder.add(&entry, &sha, failpoint)?,
                    Prepared::Dropped(name) => builder.dropped.push(name),
                }
            }
            Ok(())
        },
        failed,
    )?;
    builder.finish()
}

/// One archive being written: the zip, its index, and what went in.
pub(crate) struct ArchiveBuilder {
    out: PathBuf,
    zip: ZipStream<HashingWriter<BufWriter<Writeback>>>,
    index: IndexWriter,
    files: u64,
    dropped: Vec<String>,
}

impl ArchiveBuilder {
    /// Starts an archive at `out` (in the tmp folder of `layout`).
    pub fn create(layout: &Layout, out: &Path) -> Result<Self, PipelineError> {
        let tmp = layout.tmp_dir();
        fs::create_dir_all(&tmp).map_err(|e| PipelineError::io("create", &tmp, e))?;
        let werr = |e: io::Error| PipelineError::io("write the archive", out, e);
        let file = File::create(out).map_err(werr)?;
        let spill = tempfile::tempfile_in(&tmp).map_err(werr)?;
        let index_spill = tempfile::tempfile_in(&tmp).map_err(werr)?;
        let sink = HashingWriter::new(BufWriter::with_capacity(1 << 20, Writeback::new(file)));
        Ok(ArchiveBuilder {
            out: out.to_path_buf(),
            zip: ZipStream::new(sink, spill),
            index: IndexWriter::new(index_spill).map_err(werr)?,
            files: 0,
            dropped: Vec::new(),
        })
    }

    fn werr(&self, e: io::Error) -> PipelineError {
        PipelineError::io("write the archive", &self.out, e)
    }

    /// Appends one deflated usage file whose bytes have SHA-256 `sha256`. The plan never lists
    /// an entry path twice in one archive (`plan_store::PlanWriter` refuses it, and a saved
    /// plan is read back only when its digest matches), so no second name check runs here.
    pub fn add(
        &mut self,
        entry: &PreparedEntry,
        sha256: &str,
        failpoint: &Failpoints,
    ) -> Result<(), PipelineError> {
        let r = failpoint
            .io("archive-enospc")
            .and_then(|()| self.zip.add(entry))
            .and_then(|()| self.index.add(&entry.path, entry.size, sha256));
        r.map_err(|e| self.werr(e))?;
        self.files += 1;
        Ok(())
    }

    /// Writes the index and end records and fsyncs the file.
    pub fn finish(self) -> Result<Assembled, PipelineError> {
        let ArchiveBuilder {
            out,
            mut zip,
            index,
            files,
            dropped,
        } = self;
        let werr = |e: io::Error| PipelineError::io("write the archive", &out, e);
        index.append_to(&mut zip).map_err(werr)?;
        let sink = zip.finish().map_err(werr)?;
        let (buf, sha256, size) = sink.finish();
        let file = buf.into_inner().map_err(|e| werr(e.into_error()))?;
        file.into_file()
            .sync_all()
            .map_err(|e| PipelineError::fsync(&out, e))?;
        Ok(Assembled {
            path: out,
            sha256,
            size,
            files,
            dropped,
        })
    }
}

/// Where archive `k` of a plan is written.
pub(crate) fn archive_temp_path(layout: &Layout, k: usize) -> PathBuf {
    layout.tmp_dir().join(format!("archive-{k:04}.zip.part"))
}

fn prepare_one(
    spool: &Path,
    e: &PlanEntry,
    deflater: &mut Deflater,
) -> Result<Prepared, PipelineError> {
    let path = spool.join(&e.spool_name);
    let mut content = Vec::with_capacity(e.size as usize);
    let read = match super::spool::open_regular(&path) {
        Ok(Ok((f, _))) => f.take(e.size + 1).read_to_end(&mut content).map(Some),
        Ok(Err(reason)) => {
            tracing::warn!(file = %e.spool_name, %reason, "planned usage file was replaced; left out of the archive");
            Ok(None)
        }
        Err(err) => Err(err),
    };
    match read {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(Prepared::Dropped(e.spool_name.clone())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(file = %e.spool_name, "planned usage file vanished; left out of the archive");
            return Ok(Prepared::Dropped(e.spool_name.clone()));
        }
        Err(err) => return Err(PipelineError::io("read", &path, err)),
    }
    let sha = hex::encode(Sha256::digest(&content));
    if content.len() as u64 != e.size || sha != e.sha256 {
        tracing::warn!(file = %e.spool_name, "planned usage file changed; left out of the archive");
        return Ok(Prepared::Dropped(e.spool_name.clone()));
    }
    let entry = deflater
        .prepare(e.path.clone(), &content)
        .map_err(|err| PipelineError::io("deflate", &path, err))?;
    Ok(Prepared::Entry(entry, sha))
}
