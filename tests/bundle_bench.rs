//! Throughput and memory of verification, against `sha256sum` over the same bytes.
//!
//! Ignored by default (it writes a 1 GiB file): run with
//! `cargo test --test bundle_bench -- --ignored --nocapture` (set `JFCONNECT_BENCH_MIB` to change
//! the size). Peak RSS is read from `/proc/self/status` after resetting it through
//! `/proc/self/clear_refs`, so each figure covers one phase only.

use std::io::Read;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use jfconnect::bundle::{
    generate_keypair, verify_bundle, write_bundle, BundleError, BundleSpec, Expectations, Kind,
    Limits, PayloadEntry, PayloadSource, TrustedKeys,
};
use jfconnect::clock::SystemClock;

/// Incompressible bytes, generated while read.
struct Noise {
    x: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.left as usize) / 8 * 8;
        for chunk in buf[..n].chunks_exact_mut(8) {
            self.x ^= self.x << 13;
            self.x ^= self.x >> 7;
            self.x ^= self.x << 17;
            chunk.copy_from_slice(&self.x.to_le_bytes());
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

fn spec() -> BundleSpec {
    BundleSpec {
        kind: Kind::Usage,
        bundle_id: "bench".into(),
        jpd_id: "jpd-bench".into(),
        created: Utc::now(),
        expires: Utc::now() + Duration::days(1),
        sequence: 1,
    }
}

fn expect() -> Expectations {
    Expectations {
        kind: None,
        jpd_id: None,
        clock: Arc::new(SystemClock),
        history: None,
    }
}

#[test]
#[ignore = "writes a 1 GiB bundle; run explicitly"]
fn verify_throughput_and_memory_against_sha256sum() {
    let mib: u64 = std::env::var("JFCONNECT_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let out = dir.path().join("big.jfbundle");
    let payload = vec![PayloadEntry {
        path: "payload/big.bin".into(),
        source: PayloadSource::Reader(Box::new(Noise {
            x: 0x9E37_79B9_7F4A_7C15,
            left: mib << 20,
        })),
    }];
    reset_peak_rss();
    let t = Instant::now();
    write_bundle(&out, &spec(), payload, &key).unwrap();
    let size = std::fs::metadata(&out).unwrap().len();
    eprintln!(
        "write: {mib} MiB in {:.1?}, peak RSS {} MiB",
        t.elapsed(),
        peak_rss_mib()
    );
    // Warm the page cache for both readers alike.
    Command::new("cat")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    let t = Instant::now();
    let ok = Command::new("sha256sum").arg(&out).output().unwrap();
    assert!(ok.status.success());
    let sha = t.elapsed();
    let trust = TrustedKeys::new(vec![key.public()]);
    let limits = Limits {
        max_file_bytes: size + 1,
        ..Limits::default()
    };
    reset_peak_rss();
    let t = Instant::now();
    verify_bundle(&out, &trust, &expect(), &limits).unwrap();
    let ours = t.elapsed();
    let mbps = |d: std::time::Duration| size as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "verify: {:.0} MB/s, sha256sum: {:.0} MB/s, ratio {:.2}, peak RSS {} MiB",
        mbps(ours),
        mbps(sha),
        sha.as_secs_f64() / ours.as_secs_f64(),
        peak_rss_mib()
    );
    // One machine-readable line for scripts/bench.
    eprintln!(
        "BENCH_RESULT {}",
        serde_json::json!({
            "bytes": size,
            "verify_mbps": mbps(ours),
            "sha256sum_mbps": mbps(sha),
            "verify_s": ours.as_secs_f64(),
            "peak_rss_kib": peak_rss_mib() * 1024,
        })
    );
}

#[test]
#[ignore = "inflates up to 1 GiB; run explicitly"]
fn refusing_a_one_gib_zip_bomb_stays_small() {
    // 1 GiB of zeros, deflated to about 1 MiB, declared honestly: refused by the ratio cap
    // before a byte is inflated. Then the same with the ratio cap lifted and a lying declared
    // size: refused after inflating just past the declared size.
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let out = dir.path().join("bomb.jfbundle");
    let zeros = PayloadEntry {
        path: "payload/zeros.bin".into(),
        source: PayloadSource::Reader(Box::new(std::io::repeat(0).take(1 << 30))),
    };
    write_bundle(&out, &spec(), vec![zeros], &key).unwrap();
    eprintln!(
        "bomb file: {} bytes",
        std::fs::metadata(&out).unwrap().len()
    );
    let trust = TrustedKeys::new(vec![key.public()]);
    reset_peak_rss();
    let t = Instant::now();
    let err = verify_bundle(&out, &trust, &expect(), &Limits::default()).unwrap_err();
    assert!(
        matches!(err, BundleError::CompressionRatio { .. }),
        "{err:?}"
    );
    eprintln!(
        "ratio refusal in {:.1?}, peak RSS {} MiB",
        t.elapsed(),
        peak_rss_mib()
    );
    let no_ratio = Limits {
        max_ratio: u64::MAX,
        ..Limits::default()
    };
    reset_peak_rss();
    let t = Instant::now();
    let v = verify_bundle(&out, &trust, &expect(), &no_ratio);
    assert!(v.is_ok(), "honest sizes inflate fully: {v:?}");
    eprintln!(
        "full 1 GiB inflate+hash (ratio cap lifted) in {:.1?}, peak RSS {} MiB",
        t.elapsed(),
        peak_rss_mib()
    );
}
