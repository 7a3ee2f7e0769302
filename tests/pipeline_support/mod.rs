//! Shared set-up for the pipeline tests: a data folder, a spool, usage files that look settled,
//! and a checker that opens every archive the fake JPD holds and verifies its index.
#![allow(dead_code)]

use jfconnect::clock::SystemClock;
use jfconnect::config::Config;
use jfconnect::jpd::memory::MemoryJpd;
use jfconnect::pipeline::failpoint::Failpoints;
use jfconnect::pipeline::RunOptions;
use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::defaults(dir.path().join("data"));
        config.usage.spool_dir = dir.path().join("spool");
        config.usage.batch_size = 7;
        fs::create_dir_all(&config.usage.spool_dir).unwrap();
        Env { dir, config }
    }

    pub fn spool(&self) -> &Path {
        &self.config.usage.spool_dir
    }

    pub fn quarantine(&self) -> PathBuf {
        self.config.data_dir.join("quarantine")
    }

    /// Writes a valid usage file that is old enough to be settled; answers its SHA-256.
    pub fn usage(&self, name: &str, product: &str, day: u32, n: usize) -> String {
        let body = format!(
            r#"{{"product":"{product}","timestamp":"2024-03-{day:02}T10:00:00Z","n":{n},"pad":"{}"}}"#,
            "x".repeat(n % 50)
        );
        self.raw(name, body.as_bytes())
    }

    /// Writes any bytes, settled; answers their SHA-256.
    pub fn raw(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.spool().join(name);
        fs::write(&p, bytes).unwrap();
        settle(&p);
        jfconnect::protocol::sha256_hex(bytes)
    }

    /// Names of the files left in the spool, sorted.
    pub fn spool_names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.spool())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Sets a file's mtime 10 s in the past so the settle window has passed.
pub fn settle(p: &Path) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(10))
        .unwrap();
}

pub fn opts() -> RunOptions {
    RunOptions {
        settle: Duration::from_secs(1),
        failpoint: Failpoints::off(),
        clock: Arc::new(SystemClock),
        ledger: None,
    }
}

#[cfg(feature = "failpoints")]
pub fn failing_at(name: &str) -> RunOptions {
    RunOptions {
        settle: Duration::from_secs(1),
        failpoint: Failpoints::error_at(name),
        clock: Arc::new(SystemClock),
        ledger: None,
    }
}

/// Opens every archive, checks each entry against index.json (size, SHA-256, nothing
/// unlisted), and answers how many times each usage file's SHA-256 appears across archives.
pub fn archived_shas(jpd: &MemoryJpd) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for (_repo, _path, bytes) in jpd.artifacts() {
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut index = String::new();
        zip.by_name("index.json")
            .unwrap()
            .read_to_string(&mut index)
            .unwrap();
        let index: serde_json::Value = serde_json::from_str(&index).unwrap();
        assert_eq!(index["format"], 1);
        let entries = index["entries"].as_array().unwrap();
        assert_eq!(entries.len() + 1, zip.len(), "unlisted entries");
        for e in entries {
            let mut body = Vec::new();
            zip.by_name(e["path"].as_str().unwrap())
                .unwrap()
                .read_to_end(&mut body)
                .unwrap();
            assert_eq!(body.len() as u64, e["size"].as_u64().unwrap());
            let sha = jfconnect::protocol::sha256_hex(&body);
            assert_eq!(sha, e["sha256"].as_str().unwrap());
            *seen.entry(sha).or_insert(0) += 1;
        }
    }
    seen
}
