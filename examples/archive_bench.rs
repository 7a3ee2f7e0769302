//! Archive benchmark: N usage files of ~1 KiB, archived by jfconnect (plan + zip, then the whole
//! archival job) and by Info-ZIP `zip -q -r` over the same folder, in the same run.
//!
//! `cargo run --release --example archive_bench -- 100000 [work-dir]`
//!
//! Prints wall times, the ratio to zip, output sizes and this process's peak RSS (VmHWM); then
//! the time the archival job takes to delete the originals (the job resumed after its
//! read-back check) beside `find DIR -type f -delete` on a copy of the same files (`cp -a`,
//! made before anything ran), and a last `BENCH_RESULT {json}` line for `scripts/bench`.

use jfconnect::config::Config;
use jfconnect::jpd::memory::MemoryJpd;
use jfconnect::pipeline::failpoint::Failpoints;
use jfconnect::pipeline::ledger::Ledger;
use jfconnect::pipeline::progress::NoProgress;
use jfconnect::pipeline::{archive_uploaded_with, Layout, RunOptions};

use std::process::Command;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let base = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let work = tempfile::tempdir_in(&base).expect("work dir");
    let mut config = Config::defaults(work.path().join("data"));
    config.usage.spool_dir = work.path().join("spool");
    let layout = Layout::new(&config);
    std::fs::create_dir_all(&layout.spool).expect("spool");

    let t = Instant::now();
    make_files(&layout, n);
    println!("created {n} usage files in {:.2?}", t.elapsed());
    let rss_after_setup = vm_hwm_kib();
    let copy = work.path().join("spool-copy");
    let t = Instant::now();
    let status = Command::new("cp")
        .arg("-a")
        .arg(&layout.spool)
        .arg(&copy)
        .status()
        .expect("run cp");
    assert!(status.success(), "cp -a failed");
    println!("copied the spool for find -delete in {:.2?}", t.elapsed());
    // Usage files are archived a day after they were written, long after the kernel wrote
    // them back; without this the setup's ~200 MB of dirty pages are written back during the
    // timed runs and every fsync waits behind them.
    let t = Instant::now();
    let status = Command::new("sync").status().expect("run sync");
    assert!(status.success(), "sync failed");
    println!("wrote the setup back to disk (sync) in {:.2?}", t.elapsed());

    let zip_out = work.path().join("infozip.zip");
    let cpu0 = cpu_ticks();
    let t = Instant::now();
    let status = Command::new("zip")
        .arg("-q")
        .arg("-r")
        .arg(&zip_out)
        .arg("spool")
        .current_dir(work.path())
        .status()
        .expect("run zip");
    assert!(status.success(), "zip failed");
    let zip_time = t.elapsed();
    let zip_cpu = cpu_ticks().1 - cpu0.1;
    let zip_size = std::fs::metadata(&zip_out).map(|m| m.len()).unwrap_or(0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let jpd = MemoryJpd::discarding();
    // Plan + write the archive, stopping right after it was fsynced.
    let stop = RunOptions {
        settle: Duration::ZERO,
        failpoint: Failpoints::error_at("after-archive-write"),
        clock: std::sync::Arc::new(jfconnect::clock::SystemClock),
        ledger: None,
    };
    let cpu1 = cpu_ticks();
    let t = Instant::now();
    let _ = rt.block_on(archive_uploaded_with(&config, &jpd, &NoProgress, &stop));
    let ours_time = t.elapsed();
    let ours_cpu = cpu_ticks().0 - cpu1.0;
    let ours_size = std::fs::read_dir(layout.tmp_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0);
    // Deploy and read-back check, stopping right before the originals are deleted.
    let verified = RunOptions {
        settle: Duration::ZERO,
        failpoint: Failpoints::error_at("after-verify"),
        clock: std::sync::Arc::new(jfconnect::clock::SystemClock),
        ledger: None,
    };
    let t = Instant::now();
    let _ = rt.block_on(archive_uploaded_with(&config, &jpd, &NoProgress, &verified));
    let deploy_time = t.elapsed();
    // The rest of the job: resumes that plan and deletes the originals.
    let go = RunOptions {
        settle: Duration::ZERO,
        failpoint: Failpoints::off(),
        clock: std::sync::Arc::new(jfconnect::clock::SystemClock),
        ledger: None,
    };
    let t = Instant::now();
    let out = rt
        .block_on(archive_uploaded_with(&config, &jpd, &NoProgress, &go))
        .expect("archival");
    let delete_time = t.elapsed();
    assert_eq!(out.files(), n as u64, "every file archived");
    let t = Instant::now();
    let status = Command::new("find")
        .arg(&copy)
        .args(["-type", "f", "-delete"])
        .status()
        .expect("run find");
    assert!(status.success(), "find -delete failed");
    let find_time = t.elapsed();

    println!(
        "zip -q -r:              {:>8.2?}  {:>11} bytes",
        zip_time, zip_size
    );
    println!(
        "jfconnect plan+archive: {:>8.2?}  {:>11} bytes",
        ours_time, ours_size
    );
    println!("jfconnect deploy to in-memory JPD + read-back check: {deploy_time:.2?}");
    println!(
        "jfconnect delete originals: {delete_time:.2?}; find -type f -delete on a copy: {find_time:.2?} ({:.2}x)",
        delete_time.as_secs_f64() / find_time.as_secs_f64()
    );
    println!(
        "ratio vs zip: time {:.2}x, size {:.3}x",
        ours_time.as_secs_f64() / zip_time.as_secs_f64(),
        ours_size as f64 / zip_size as f64
    );
    println!(
        "CPU time (user+sys): zip {:.2}s, jfconnect plan+archive {:.2}s (on {} cores)",
        zip_cpu as f64 / 100.0,
        ours_cpu as f64 / 100.0,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "peak RSS (VmHWM): {} KiB (after creating files: {} KiB)",
        vm_hwm_kib(),
        rss_after_setup
    );
    let result = serde_json::json!({
        "files": n,
        "zip_s": zip_time.as_secs_f64(),
        "zip_bytes": zip_size,
        "zip_cpu_s": zip_cpu as f64 / 100.0,
        "archive_s": ours_time.as_secs_f64(),
        "archive_bytes": ours_size,
        "archive_cpu_s": ours_cpu as f64 / 100.0,
        "deploy_verify_s": deploy_time.as_secs_f64(),
        "delete_s": delete_time.as_secs_f64(),
        "find_delete_s": find_time.as_secs_f64(),
        "hwm_kib": vm_hwm_kib(),
    });
    println!("BENCH_RESULT {result}");
}

/// Writes `n` ~1 KiB usage files and marks them uploaded, in batches (memory stays flat).
fn make_files(layout: &Layout, n: usize) {
    let ledger = Ledger::open(&layout.root).expect("ledger");
    let products = [
        "artifactory",
        "xray",
        "distribution",
        "pipelines",
        "catalog",
    ];
    let mut shas = Vec::with_capacity(1000);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..n {
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut body = format!(
            r#"{{"product":"{}","timestamp":"2024-03-{:02}T{:02}:{:02}:00Z","jpd_id":"jpd-0123456789abcdef","events":["#,
            products[i % products.len()],
            1 + (i % 28),
            i % 24,
            i % 60
        );
        let mut k = 0;
        while body.len() < 960 {
            if k > 0 {
                body.push(',');
            }
            body.push_str(&format!(
                r#"{{"metric":"m{}","value":{},"repo":"repo-{:x}"}}"#,
                rnd() % 20,
                rnd() % 100_000,
                rnd() % 4096
            ));
            k += 1;
        }
        body.push_str("]}");
        let name = format!("usage-{i:08}.json");
        std::fs::write(layout.spool.join(&name), body.as_bytes()).expect("write");
        shas.push(jfconnect::protocol::sha256_hex(body.as_bytes()));
        if shas.len() == 1000 {
            ledger
                .mark_uploaded(shas.iter().map(String::as_str))
                .expect("ledger");
            shas.clear();
        }
    }
    ledger
        .mark_uploaded(shas.iter().map(String::as_str))
        .expect("ledger");
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (this process's, its waited-for children's) user+sys CPU time in clock ticks (1/100 s).
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the command name: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let get = |i: usize| f.get(i - 3).copied().unwrap_or(0);
    (get(14) + get(15), get(16) + get(17))
}
