//! The kill -9 drill for `bundle import` and `bundle export`: the real binary is SIGKILLed at
//! seeded random instants, then the same command is run again to the end, and after each
//! round the data folder must be consistent:
//! - import: the import history, the inbox and the entitlements store name the same bundle
//!   (never one bundle's history with another's entitlements), and a refused import (an
//!   older bundle offered again) changed nothing;
//! - export: every usage file put in the spool is in exactly one usage bundle of the outbox
//!   (none lost, none in two), every bundle's sequence is its own, and the outbox's durable
//!   sequence is at least the newest bundle's.
//!
//! Runs with the other crash tests (`cargo test --features failpoints --test
//! bundle_kill_drill`); the kills are real SIGKILLs, no failpoint is armed. `JFCONNECT_DRILL_POINTS` sets the kill points per command (default 50; run
//! 500 locally), `JFCONNECT_DRILL_SEED` the seed (printed, so a failure can be replayed).

mod process_support;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chrono::{TimeZone, Utc};
use jfconnect::bundle::{
    keys_generate, read_secret_key, verify_file_with_pubkey, write_bundle, BundleSpec, Kind,
    PayloadEntry, PayloadSource,
};
use jfconnect::protocol::{sha256_hex, Entitlement, Entitlements};
use rand::{Rng, SeedableRng};

fn points() -> usize {
    std::env::var("JFCONNECT_DRILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

fn seed() -> u64 {
    std::env::var("JFCONNECT_DRILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261201)
}

/// An air-gapped JPD in a temp folder, trusting a vendor key made for the drill.
struct Jpd {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Jpd {
    fn new() -> Jpd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        keys_generate(&d.join("vendor")).unwrap();
        fs::write(d.join("license"), "JFL-DRILL-0001").unwrap();
        fs::create_dir_all(d.join("spool")).unwrap();
        let config = d.join("system.yaml");
        fs::write(
            &config,
            format!(
                "jfconnect:\n  data_dir: {d}/data\n  license:\n    file: {d}/license\n  usage:\n    spool_dir: {d}/spool\n  airgap:\n    enabled: true\n    outbox_dir: {d}/outbox\n    vendor_public_keys:\n      - {d}/vendor.pub\n",
                d = d.display()
            ),
        )
        .unwrap();
        let jpd = Jpd { dir, config };
        // Registers offline (writes a registration bundle); exit 0 without entitlements.
        let o = jpd
            .command(&["jobs", "run", "entitlements"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        jpd
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
        c.current_dir(self.dir.path())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("JFCONNECT_SPOOL_SETTLE_MS", "0")
            .env("RUST_LOG", "warn")
            .env("JF_JFCONNECT_GRPC_ENABLED", "false")
            .env_remove("HTTPS_PROXY")
            .env_remove("HTTP_PROXY")
            .env_remove("JFCONNECT_FAILPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Starts `args` and SIGKILLs it after `delay` unless it ended first; answers whether it
    /// was killed.
    fn kill_after(&self, args: &[&str], delay: Duration) -> bool {
        process_support::kill_after(&mut self.command(args), delay)
    }

    fn state(&self, name: &str) -> Option<serde_json::Value> {
        jfconnect::state::load(&self.path(&format!("data/state/{name}"))).unwrap()
    }

    fn jpd_id(&self) -> String {
        fs::read_to_string(self.path("data/jpd_id"))
            .unwrap()
            .trim()
            .to_string()
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An entitlements bundle for `jpd` with sequence `seq`, signed by the drill's vendor key;
/// its one entitlement names the sequence (`feature: s<seq>`), so the store shows which
/// bundle it holds.
fn entitlements_bundle(jpd: &Jpd, seq: u64) -> PathBuf {
    let key = read_secret_key(&jpd.path("vendor.key")).unwrap();
    let created =
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::minutes(seq as i64);
    let e = Entitlements {
        subscription_id: "sub-drill".into(),
        subscription_type: "enterprise_plus".into(),
        jpd_id: jpd.jpd_id(),
        issued_at: jfconnect::bundle::format_time(created),
        entitlements: vec![Entitlement {
            product: "artifactory".into(),
            feature: format!("s{seq}"),
            valid_from: None,
            valid_until: None,
        }],
    };
    let out = jpd.path(&format!("ent-{seq}.jfbundle"));
    let spec = BundleSpec {
        kind: Kind::Entitlements,
        bundle_id: format!("drill-{seq}"),
        jpd_id: jpd.jpd_id(),
        created,
        expires: Utc.with_ymd_and_hms(2126, 1, 1, 0, 0, 0).unwrap(),
        sequence: seq,
    };
    let payload = vec![PayloadEntry {
        path: "payload/entitlements.json".into(),
        source: PayloadSource::Bytes(serde_json::to_vec(&e).unwrap()),
    }];
    write_bundle(&out, &spec, payload, &key).unwrap();
    out
}

/// (history's last sequence, inbox's sequence, the sequence the store's entitlements carry).
fn import_view(jpd: &Jpd) -> (Option<u64>, Option<u64>, Option<u64>) {
    let history = jpd
        .state("bundle-import-entitlements.json")
        .and_then(|h| h["last_sequence"].as_u64());
    let inbox = jpd
        .state("inbox-entitlements.json")
        .and_then(|i| i["sequence"].as_u64());
    let stored = jpd.state("entitlements.json").and_then(|s| {
        let feature = s["current"]["entitlements"]["entitlements"][0]["feature"]
            .as_str()?
            .to_string();
        feature.strip_prefix('s')?.parse().ok()
    });
    (history, inbox, stored)
}

/// The state files an import may change, byte for byte.
fn import_files(jpd: &Jpd) -> BTreeMap<String, Option<Vec<u8>>> {
    [
        "bundle-import-entitlements.json",
        "inbox-entitlements.json",
        "entitlements.json",
    ]
    .iter()
    .map(|n| {
        (
            n.to_string(),
            fs::read(jpd.path(&format!("data/state/{n}"))).ok(),
        )
    })
    .collect()
}

#[test]
fn bundle_import_killed_at_random_instants_keeps_history_and_store_together() {
    let (points, seed) = (points(), seed());
    println!("import drill: {points} kill points, seed {seed}");
    let jpd = Jpd::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let (mut killed, mut refused) = (0, 0);
    let mut last = 0u64;
    // Kill instants spread over a whole run: up to 1.2 times the last clean run's length.
    let mut span = Duration::from_millis(300);
    for round in 0..points {
        let seq = last + rng.gen_range(1..=2);
        let file = entitlements_bundle(&jpd, seq);
        let f = file.display().to_string();
        let delay = span.mul_f64(rng.gen_range(0.0..1.2));
        if jpd.kill_after(&["bundle", "import", &f], delay) {
            killed += 1;
        }
        // The rerun: the bundle is imported, or was already (the killed run committed it).
        let t = Instant::now();
        let o = jpd.command(&["bundle", "import", &f]).output().unwrap();
        span = t.elapsed();
        let view = import_view(&jpd);
        assert_eq!(
            view,
            (Some(seq), Some(seq), Some(seq)),
            "round {round} (seed {seed}): history, inbox and store differ after a kill and a rerun of sequence {seq}: {}",
            text(&o)
        );
        last = seq;
        // Now and then an older bundle comes again: refused, nothing changes.
        if round % 5 == 2 && seq > 1 {
            let old = entitlements_bundle(&jpd, seq - 1);
            let before = import_files(&jpd);
            let o = jpd
                .command(&["bundle", "import", &old.display().to_string()])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "round {round}: {}", text(&o));
            assert_eq!(
                import_files(&jpd),
                before,
                "round {round}: a refusal changed state"
            );
            refused += 1;
        }
        let _ = fs::remove_file(&file);
    }
    println!(
        "import drill: {killed} of {points} runs killed mid-way, {refused} refusals checked, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The usage bundles in the outbox by file name, each checked with the JPD's key: its
/// sequence and the SHA-256 of every usage file in it. `known` keeps those read before.
fn usage_bundles(jpd: &Jpd, known: &mut BTreeMap<String, (u64, Vec<String>)>) {
    let key = jpd.path("data/keys/jpd.pub");
    for e in fs::read_dir(jpd.path("outbox")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("usage-") || known.contains_key(&name) {
            continue;
        }
        let m = verify_file_with_pubkey(&e.path(), &key)
            .unwrap_or_else(|err| panic!("outbox bundle {name} does not verify: {err}"));
        let shas = m
            .entries
            .iter()
            .filter_map(|x| jfconnect::transport::payload::usage_sha_of(&x.path))
            .map(str::to_string)
            .collect();
        known.insert(name, (m.sequence, shas));
    }
}

#[test]
fn bundle_export_killed_at_random_instants_loses_and_doubles_no_usage_file() {
    let (points, seed) = (points(), seed() ^ 0x5eed);
    println!("export drill: {points} kill points, seed {seed}");
    let jpd = Jpd::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut killed = 0;
    let mut put: Vec<String> = Vec::new();
    let mut bundles = BTreeMap::new();
    let mut span = Duration::from_millis(300);
    for round in 0..points {
        for i in 0..rng.gen_range(1..=6) {
            let body = format!(
                r#"{{"product":"artifactory","timestamp":"2026-11-01T00:00:00Z","round":{round},"i":{i}}}"#
            );
            let tmp = jpd.path(&format!("spool/.u-{round}-{i}.tmp"));
            fs::write(&tmp, &body).unwrap();
            let f = fs::File::options().write(true).open(&tmp).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(10))
                .unwrap();
            drop(f);
            fs::rename(&tmp, jpd.path(&format!("spool/u-{round}-{i}.json"))).unwrap();
            put.push(sha256_hex(body.as_bytes()));
        }
        let out = jpd
            .path(&format!("out-{round}.jfbundle"))
            .display()
            .to_string();
        let args = ["bundle", "export", "--out", out.as_str(), "--force"];
        let delay = span.mul_f64(rng.gen_range(0.0..1.2));
        if jpd.kill_after(&args, delay) {
            killed += 1;
        }
        let t = Instant::now();
        let o = jpd.command(&args).output().unwrap();
        span = t.elapsed();
        assert!(
            o.status.success(),
            "round {round} (seed {seed}) rerun: {}",
            text(&o)
        );

        usage_bundles(&jpd, &mut bundles);
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, shas) in bundles.values() {
            for s in shas {
                *count.entry(s.as_str()).or_default() += 1;
            }
        }
        for sha in &put {
            match count.get(sha.as_str()) {
                Some(1) => {}
                Some(n) => {
                    panic!("round {round} (seed {seed}): usage file {sha} is in {n} bundles")
                }
                None => panic!("round {round} (seed {seed}): usage file {sha} is in no bundle"),
            }
        }
        let mut seqs: Vec<u64> = bundles.values().map(|(s, _)| *s).collect();
        let n = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), n, "round {round}: two bundles share a sequence");
        let durable = jpd
            .state("bundle-sequence-usage.json")
            .and_then(|s| s["last"].as_u64())
            .unwrap_or(0);
        assert!(
            seqs.last().is_none_or(|newest| *newest <= durable),
            "round {round}: the outbox's sequence {durable} is behind its newest bundle {seqs:?}"
        );
    }
    println!(
        "export drill: {killed} of {points} runs killed mid-way, {} usage files in {} bundles, {:.1} s",
        put.len(),
        bundles.len(),
        started.elapsed().as_secs_f64()
    );
}
