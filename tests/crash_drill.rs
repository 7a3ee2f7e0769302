//! The crash drill: the real binary runs `jobs run usage` and `jobs run archival` against the
//! simulator and is SIGKILLed at seeded random instants; then the jobs finish cleanly and every
//! usage file must have reached JCS, sit in exactly one verified archive, and be gone from the
//! spool, while quarantined files stay.
//!
//! Needs the `failpoints` feature (`cargo test --features failpoints --test crash_drill`).
//! `JFCONNECT_DRILL_POINTS` sets the number of kill points (default 50; run 500 locally),
//! `JFCONNECT_DRILL_SEED` the seed (printed, so a failure can be replayed).

mod process_support;
mod sim_support;

use jfconnect::pipeline::failpoint::{ALL, FAILPOINT_ENV, LEDGER_COMPACT_ENV};
use jfconnect::sim::{self, SimOptions, SimStats};
use rand::{Rng, SeedableRng};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

struct Drill {
    dir: tempfile::TempDir,
    config: PathBuf,
    valid: usize,
    bad: Vec<String>,
}

impl Drill {
    fn new(base_url: &str) -> Drill {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(p.join("license"), "JFL-0123456789").unwrap();
        fs::write(p.join("jpd.token"), "drill-token").unwrap();
        fs::create_dir_all(p.join("spool")).unwrap();
        let config = p.join("system.yaml");
        fs::write(
            &config,
            format!(
                "jfconnect:\n  data_dir: {d}/data\n  license:\n    file: {d}/license\n  jes:\n    url: {u}\n  jcs:\n    url: {u}\n  jpd:\n    url: {u}\n    token_file: {d}/jpd.token\n  usage:\n    spool_dir: {d}/spool\n    batch_size: 10\n  archival:\n    max_archive_bytes: 8192\n",
                d = p.display(),
                u = base_url
            ),
        )
        .unwrap();
        Drill {
            dir,
            config,
            valid: 0,
            bad: Vec::new(),
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn add_usage(&mut self, tag: &str, n: usize) {
        for i in 0..n {
            let body = format!(
                r#"{{"product":"{}","timestamp":"2024-04-{:02}T08:00:00Z","tag":"{tag}","i":{i}}}"#,
                ["xray", "artifactory"][i % 2],
                1 + i % 3
            );
            self.put(&format!("u-{tag}-{i}.json"), body.as_bytes());
            self.valid += 1;
        }
    }

    fn add_bad(&mut self, tag: &str) {
        let name = format!("bad-{tag}.json");
        self.put(&name, b"{not json");
        self.bad.push(name);
    }

    fn put(&self, name: &str, bytes: &[u8]) {
        let tmp = self.spool().join(format!(".{name}.tmp"));
        fs::write(&tmp, bytes).unwrap();
        let f = fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        drop(f);
        fs::rename(&tmp, self.spool().join(name)).unwrap();
    }

    fn command(&self, job: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
        c.arg("--config")
            .arg(&self.config)
            .args(["jobs", "run", job])
            .env("JFCONNECT_SPOOL_SETTLE_MS", "0")
            .env("RUST_LOG", "warn")
            // Every run that marks or forgets 10 files compacts the ledger, so kills land
            // inside compactions too.
            .env(LEDGER_COMPACT_ENV, "10")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove(FAILPOINT_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    fn run_clean(&self, job: &str) {
        let out = self.command(job).output().unwrap();
        assert!(
            out.status.success(),
            "clean {job} run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `job`, SIGKILLed after `delay` unless it ended first: how long it ran when it
    /// ended on its own, `None` when it was killed.
    fn run_or_kill(&self, job: &str, delay: Duration) -> Option<Duration> {
        process_support::run_or_kill(&mut self.command(job), delay)
    }
}

fn stats(base: &str) -> SimStats {
    let url = format!("{base}/_sim/stats");
    tokio::runtime::Handle::current().block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .no_proxy()
            .build()
            .unwrap();
        client.get(url).send().await.unwrap().json().await.unwrap()
    })
}

fn finish_and_check(drill: &Drill, base: &str, sim_dir: &Path) {
    drill.run_clean("usage");
    drill.run_clean("archival");
    let s = stats(base);
    assert_eq!(
        s.usage_received_unique, drill.valid as u64,
        "every file reached JCS"
    );
    assert_eq!(
        s.archived_usage_files, drill.valid as u64,
        "every file archived"
    );
    assert_eq!(s.archives_invalid, 0);
    let (seen, _) = sim_support::archived_usage(sim_dir);
    assert_eq!(seen.len(), drill.valid);
    assert!(seen.values().all(|n| *n == 1), "a file is in two archives");
    let left: Vec<_> = fs::read_dir(drill.spool()).unwrap().collect();
    assert!(left.is_empty(), "spool not empty: {left:?}");
    let q = drill.dir.path().join("data/quarantine");
    for b in &drill.bad {
        assert!(q.join(b).exists(), "{b} left quarantine");
    }
    println!(
        "drill: {} files, {} duplicates received by JCS, {} archives",
        drill.valid, s.usage_received_duplicate, s.archives_stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_files_survive_sigkill_at_random_instants() {
    let points: usize = std::env::var("JFCONNECT_DRILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("JFCONNECT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20241125);
    println!("crash drill: {points} kill points, seed {seed}");
    let sim_dir = tempfile::tempdir().unwrap();
    let handle = sim::spawn_for_test(SimOptions::new(sim_dir.path()))
        .await
        .unwrap();
    let base = handle.base_url();
    let mut drill = Drill::new(&base);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let setup = drill.command("entitlements").output().unwrap();
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    // Every tenth run is left to end on its own and timed; the others are killed at an
    // instant drawn up to 1.2 times the last such run's length, so the kills land inside a
    // run however fast the machine is (a fixed range let most runs end before their kill on
    // a quiet machine).
    let (mut killed, mut whole) = (0, Duration::from_millis(100));
    for round in 0..points {
        drill.add_usage(&round.to_string(), rng.gen_range(1..=12));
        if round % 10 == 3 {
            drill.add_bad(&round.to_string());
        }
        let job = if rng.gen_bool(0.5) {
            "usage"
        } else {
            "archival"
        };
        let timed = round % 10 == 9;
        // Drawn every round, timed or not, so the seed gives the same sequence of draws.
        let bound = (whole.as_millis() as u64 * 6 / 5).max(20);
        let drawn = Duration::from_millis(rng.gen_range(2..bound));
        let delay = if timed {
            Duration::from_secs(60)
        } else {
            drawn
        };
        match tokio::task::block_in_place(|| drill.run_or_kill(job, delay)) {
            None => killed += 1,
            Some(ran) if timed => whole = ran,
            Some(_) => {}
        }
    }
    println!("{killed} of {points} runs were killed mid-way (the last whole run took {whole:.0?})");
    tokio::task::block_in_place(|| finish_and_check(&drill, &base, sim_dir.path()));
    handle.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_aborting_at_each_failpoint_loses_nothing() {
    let sim_dir = tempfile::tempdir().unwrap();
    let handle = sim::spawn_for_test(SimOptions::new(sim_dir.path()))
        .await
        .unwrap();
    let base = handle.base_url();
    let mut drill = Drill::new(&base);
    tokio::task::block_in_place(|| drill.run_clean("entitlements"));
    for point in ALL {
        drill.add_usage(point, 15);
        if point.starts_with("quarantine") {
            drill.add_bad(point);
        }
        let job = if point.starts_with("usage") || point.starts_with("quarantine") {
            "usage"
        } else {
            "archival"
        };
        if job == "archival" {
            tokio::task::block_in_place(|| drill.run_clean("usage"));
        }
        let out = tokio::task::block_in_place(|| {
            drill
                .command(job)
                .env(FAILPOINT_ENV, point)
                .output()
                .unwrap()
        });
        assert!(
            !out.status.success(),
            "{point}: the run should have aborted"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    tokio::task::block_in_place(|| finish_and_check(&drill, &base, sim_dir.path()));
    handle.stop().await.unwrap();
}
