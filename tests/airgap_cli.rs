//! The air-gapped round trip through the real binary: register → vendor answer → import →
//! usage export → vendor answer, checked by hand with unzip, minisign and sha256sum; and the
//! refusals: hostile bundles, replay, a JPD whose key changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn jfconnect(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jfconnect"));
    c.current_dir(dir)
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .env_remove("JFCONNECT_FAILPOINT")
        .env("JFCONNECT_SPOOL_SETTLE_MS", "0");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    jfconnect(dir).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// An air-gapped JPD in `dir/jpd<n>` trusting `vendor_pub`; answers its config file.
fn jpd(dir: &Path, name: &str, vendor_pub: &Path) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("license"), "JFL-AIRGAP-TEST-0001").unwrap();
    let cfg = d.join("system.yaml");
    std::fs::write(
        &cfg,
        format!(
            "jfconnect:\n  data_dir: {data}\n  license:\n    file: {lic}\n  usage:\n    spool_dir: {spool}\n  airgap:\n    enabled: true\n    outbox_dir: {outbox}\n    vendor_public_keys:\n      - {vendor}\n",
            data = d.join("data").display(),
            lic = d.join("license").display(),
            spool = d.join("spool").display(),
            outbox = d.join("outbox").display(),
            vendor = vendor_pub.display()
        ),
    )
    .unwrap();
    cfg
}

fn with_config(cfg: &Path, args: &[&str]) -> Vec<String> {
    let mut v = vec!["--config".to_string(), cfg.display().to_string()];
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

fn run_cfg(dir: &Path, cfg: &Path, args: &[&str]) -> Output {
    jfconnect(dir)
        .args(with_config(cfg, args))
        .output()
        .unwrap()
}

fn outbox(cfg: &Path, kind: &str) -> Vec<PathBuf> {
    let dir = cfg.parent().unwrap().join("outbox");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(&format!("{kind}-"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn write_usage(cfg: &Path, n: usize) {
    let spool = cfg.parent().unwrap().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    for i in 0..n {
        std::fs::write(
            spool.join(format!("u-{i}.json")),
            format!("{{\"product\":\"artifactory\",\"timestamp\":\"2026-11-01T00:00:{i:02}Z\",\"n\":{i}}}"),
        )
        .unwrap();
    }
}

/// Files the data folder's ledger holds as uploaded (and not archived).
fn uploaded_markers(cfg: &Path) -> u64 {
    let root = cfg.parent().unwrap().join("data/usage");
    jfconnect::pipeline::ledger::Ledger::open(&root)
        .unwrap()
        .uploaded_count()
}

/// Every file under `dir` by relative path, with the SHA-256 of its content.
fn tree_hash(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel.clone(), "dir".into());
                walk(base, &p, out);
            } else {
                out.insert(rel, hex::encode(Sha256::digest(std::fs::read(&p).unwrap())));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn manual_check(bundle: &Path, pubkey: &Path) -> Output {
    let work = bundle.parent().unwrap().join("manual-check");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(bundle, work.join("b.jfbundle")).unwrap();
    std::fs::copy(pubkey, work.join("jpd.pub")).unwrap();
    Command::new("sh")
        .arg("-c")
        .arg("unzip -q b.jfbundle -d x && cd x && minisign -Vm SHA256SUMS -p ../jpd.pub && sha256sum -c SHA256SUMS")
        .current_dir(&work)
        .output()
        .unwrap()
}

/// A vendor key pair `dir/vendor.{pub,key}` and the JPD `dir/jpd1` trusting it, whose
/// entitlements job has run once: with no JES it wrote a registration bundle and failed
/// *unavailable* (exit 1). Answers the config file and that run's output.
fn registered_jpd(dir: &Path) -> (PathBuf, Output) {
    let o = run(dir, &["keys", "generate", "--out", "vendor"]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = jpd(dir, "jpd1", &dir.join("vendor.pub"));
    let o = run_cfg(dir, &cfg, &["jobs", "run", "entitlements"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    (cfg, o)
}

#[test]
fn full_air_gapped_round_trip_through_the_binary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Register: no JES, so a registration bundle and a sentence saying what to carry, with
    // its full path; the expected outcome, so exit 0 (`set -e` scripts go on).
    let (cfg, o) = registered_jpd(dir);
    let reg = outbox(&cfg, "registration");
    assert_eq!(reg.len(), 1);
    assert!(reg[0].is_absolute());
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l == reg[0].display().to_string()),
        "the path alone on a line, for copy and paste: {}",
        text(&o)
    );
    assert!(
        text(&o).contains(&reg[0].display().to_string()),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("jfconnect bundle import"), "{}", text(&o));
    let summary = std::fs::read_to_string(&reg[0]).is_err(); // binary zip, not text
    assert!(summary);

    // The vendor answers; the JPD imports; a replay is refused.
    let vs = dir.join("vendor-state");
    let vs_s = vs.display().to_string();
    let reg_s = reg[0].display().to_string();
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            &reg_s,
            "--key",
            "vendor.key",
            "--out",
            "ent1.jfbundle",
            "--state",
            &vs_s,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("first contact"), "{}", text(&o));
    let o = run_cfg(dir, &cfg, &["bundle", "import", "ent1.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 entitlements"), "{}", text(&o));
    let o = run_cfg(dir, &cfg, &["bundle", "import", "ent1.jfbundle"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already imported"), "{}", text(&o));
    // The import ran the entitlements job: the store holds the bundle's entitlements at once,
    // the job's last error is gone, and nothing speaks of JES in air-gapped mode.
    let o = run_cfg(dir, &cfg, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v.to_string().contains("sub-airgap-0001"), "{v}");
    let source = v["entitlements"]["source"].as_str().unwrap_or_default();
    assert!(source.starts_with("entitlements bundle bundle-1-"), "{v}");
    let job = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "entitlements")
        .unwrap();
    assert!(job["last_error"].is_null(), "{job}");
    let o = run_cfg(dir, &cfg, &["status"]);
    assert!(!text(&o).contains("JES"), "{}", text(&o));
    let o = run_cfg(dir, &cfg, &["jobs", "run", "entitlements"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("no new entitlements bundle since sequence 1"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("JES"), "{}", text(&o));

    // Usage out: the export is the usage job through the bundle transport.
    write_usage(&cfg, 5);
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "usage.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("5 usage files"), "{}", text(&o));
    assert_eq!(uploaded_markers(&cfg), 5);
    let usage = dir.join("usage.jfbundle");
    let jpd_pub = cfg.parent().unwrap().join("data/keys/jpd.pub");
    let o = run(
        dir,
        &[
            "bundle",
            "verify",
            "usage.jfbundle",
            "--pubkey",
            &jpd_pub.display().to_string(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("VERIFIED: usage bundle"), "{}", text(&o));
    let o = run(dir, &["bundle", "inspect", "usage.jfbundle"]);
    assert!(text(&o).contains("NOT VERIFIED"), "{}", text(&o));
    let o = run(dir, &["bundle", "inspect", "usage.jfbundle", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verified"], false);
    assert_eq!(
        v["unverified_manifest"]["entries"]
            .as_array()
            .unwrap()
            .len(),
        6
    );

    // Checked by hand with the standard tools.
    let o = manual_check(&usage, &jpd_pub);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Signature and comment signature verified"));

    // The vendor records the usage once; the same bundle again counts as duplicates.
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            "usage.jfbundle",
            "--key",
            "vendor.key",
            "--out",
            "ent2.jfbundle",
            "--state",
            &vs_s,
        ],
    );
    assert!(text(&o).contains("5 unique, 0 duplicate"), "{}", text(&o));
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            "usage.jfbundle",
            "--key",
            "vendor.key",
            "--out",
            "ent3.jfbundle",
            "--state",
            &vs_s,
        ],
    );
    assert!(text(&o).contains("0 unique, 5 duplicate"), "{}", text(&o));
    let o = run_cfg(dir, &cfg, &["bundle", "import", "ent3.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    // An older sequence after a newer one is a rollback.
    let o = run_cfg(dir, &cfg, &["bundle", "import", "ent2.jfbundle"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));

    // Nothing pending: the export carries a fresh registration request instead.
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "again.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("registration bundle"), "{}", text(&o));
}

/// A JPD's own bundles given to `bundle import` are named for what they are (they are carried
/// to the vendor, not imported), never blamed on an untrusted key.
#[test]
fn import_names_a_usage_or_registration_bundle_instead_of_an_untrusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cfg, _) = registered_jpd(dir);
    // Refused with exit 2, named for its kind, and not blamed on an untrusted key.
    let refused_as = |file: &str, kind: &str| {
        let o = run_cfg(dir, &cfg, &["bundle", "import", file]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let said = text(&o);
        assert!(
            said.contains(&format!("this bundle says it is a {kind} bundle"))
                && said.contains("`bundle import` takes entitlements bundles"),
            "{said}"
        );
        assert!(!said.contains("trusted keys"), "{said}");
    };
    let reg = outbox(&cfg, "registration");
    refused_as(&reg[0].display().to_string(), "registration");

    let vs = dir.join("vendor-state").display().to_string();
    let reg_s = reg[0].display().to_string();
    let answer = ["sim", "answer", "--in", &reg_s, "--key", "vendor.key"];
    let o = run(
        dir,
        &[&answer[..], &["--out", "ent1.jfbundle", "--state", &vs]].concat(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run_cfg(dir, &cfg, &["bundle", "import", "ent1.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    write_usage(&cfg, 2);
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "usage.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    refused_as("usage.jfbundle", "usage");
}

/// `bundle export --out FILE` never replaces a file silently, and `bundle import` of a file
/// that is not there is bad input.
#[test]
fn export_keeps_an_existing_file_unless_forced_and_import_of_a_missing_file_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cfg, _) = registered_jpd(dir);
    let o = run_cfg(dir, &cfg, &["bundle", "import", "no-such.jfbundle"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("no-such.jfbundle"), "{}", text(&o));

    std::fs::write(dir.join("taken.jfbundle"), "keep me").unwrap();
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "taken.jfbundle"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("taken.jfbundle exists") && text(&o).contains("--force"),
        "{}",
        text(&o)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("taken.jfbundle")).unwrap(),
        "keep me"
    );
    let o = run_cfg(
        dir,
        &cfg,
        &["bundle", "export", "--out", "taken.jfbundle", "--force"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(
        std::fs::read(dir.join("taken.jfbundle")).unwrap(),
        b"keep me"
    );
}

#[test]
fn export_writes_one_bundle_and_splits_only_past_max_bundle_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cfg, _) = registered_jpd(dir);
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{yaml}    max_bundle_bytes: 1048576\n")).unwrap();
    // 700 files of 4 KiB hex each: about 1.5 MB deflated, so past 1 MiB once.
    let spool = cfg.parent().unwrap().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut seed = Sha256::digest(b"split");
    for i in 0..700 {
        let mut noise = String::new();
        while noise.len() < 4096 {
            seed = Sha256::digest(seed);
            noise.push_str(&hex::encode(seed));
        }
        std::fs::write(
            spool.join(format!("u-{i}.json")),
            format!("{{\"product\":\"xray\",\"timestamp\":\"2026-11-01T00:00:00Z\",\"noise\":\"{noise}\"}}"),
        )
        .unwrap();
    }
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "usage.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(uploaded_markers(&cfg), 700);
    assert_eq!(outbox(&cfg, "usage").len(), 2, "{}", text(&o));
    let jpd_pub = cfg.parent().unwrap().join("data/keys/jpd.pub");
    let mut files = 0;
    for name in ["usage.jfbundle", "usage-2.jfbundle"] {
        let path = dir.join(name);
        assert!(std::fs::metadata(&path).unwrap().len() <= 1 << 20, "{name}");
        let o = run(
            dir,
            &[
                "bundle",
                "verify",
                name,
                "--pubkey",
                &jpd_pub.display().to_string(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let o = run(dir, &["bundle", "inspect", name, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let entries = v["unverified_manifest"]["entries"].as_array().unwrap();
        files += entries.len() - 1; // and the registration record
    }
    assert_eq!(files, 700);
    assert!(!dir.join("usage-3.jfbundle").exists());
}

/// Needs the `failpoints` feature (`cargo test --features failpoints`, as scripts/test runs).
#[cfg(feature = "failpoints")]
#[test]
fn usage_becomes_uploaded_only_after_its_bundle_exists() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, &["keys", "generate", "--out", "vendor"]);
    let cfg = jpd(dir, "jpd1", &dir.join("vendor.pub"));
    write_usage(&cfg, 4);

    // Killed right after the bundle was written, before the ledger: the bundle exists and
    // not one file is marked uploaded.
    let o = jfconnect(dir)
        .args(with_config(
            &cfg,
            &["bundle", "export", "--out", "u.jfbundle"],
        ))
        .env("JFCONNECT_FAILPOINT", "usage-after-upload")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert_eq!(outbox(&cfg, "usage").len(), 1);
    assert_eq!(uploaded_markers(&cfg), 0);

    // The outbox cannot be written: no bundle, so nothing is marked.
    let outbox_dir = cfg.parent().unwrap().join("outbox");
    std::fs::rename(&outbox_dir, dir.join("outbox-away")).unwrap();
    std::fs::write(&outbox_dir, "not a folder").unwrap();
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "u.jfbundle"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(uploaded_markers(&cfg), 0);
    std::fs::remove_file(&outbox_dir).unwrap();
    std::fs::rename(dir.join("outbox-away"), &outbox_dir).unwrap();

    // The retry finds the files already in the killed run's bundle: no second bundle (a
    // usage file is in one bundle only); they are uploaded now, and that bundle is the one
    // handed out.
    let o = run_cfg(dir, &cfg, &["bundle", "export", "--out", "u.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(outbox(&cfg, "usage").len(), 1);
    assert_eq!(uploaded_markers(&cfg), 4);
    assert_eq!(
        std::fs::read(dir.join("u.jfbundle")).unwrap(),
        std::fs::read(&outbox(&cfg, "usage")[0]).unwrap()
    );
    let vs = dir.join("vs").display().to_string();
    let first = outbox(&cfg, "usage")[0].display().to_string();
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            &first,
            "--key",
            "vendor.key",
            "--out",
            "a.jfbundle",
            "--state",
            &vs,
        ],
    );
    assert!(text(&o).contains("4 unique, 0 duplicate"), "{}", text(&o));
}

#[test]
fn vendor_refuses_a_known_jpd_that_presents_another_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(dir, &["keys", "generate", "--out", "vendor"]);
    let a = jpd(dir, "a", &dir.join("vendor.pub"));
    let b = jpd(dir, "b", &dir.join("vendor.pub"));
    // Both claim the same JPD id; b has its own key.
    std::fs::create_dir_all(b.parent().unwrap().join("data")).unwrap();
    run_cfg(dir, &a, &["bundle", "export", "--out", "a.jfbundle"]);
    let id = std::fs::read_to_string(a.parent().unwrap().join("data/jpd_id")).unwrap();
    std::fs::write(b.parent().unwrap().join("data/jpd_id"), &id).unwrap();
    let o = run_cfg(dir, &b, &["bundle", "export", "--out", "b.jfbundle"]);
    assert!(o.status.success(), "{}", text(&o));
    let vs = dir.join("vs").display().to_string();
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            "a.jfbundle",
            "--key",
            "vendor.key",
            "--out",
            "x.jfbundle",
            "--state",
            &vs,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let pins = std::fs::read(dir.join("vs/pins.json")).unwrap();
    let o = run(
        dir,
        &[
            "sim",
            "answer",
            "--in",
            "b.jfbundle",
            "--key",
            "vendor.key",
            "--out",
            "y.jfbundle",
            "--state",
            &vs,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is pinned to key"), "{}", text(&o));
    assert!(!dir.join("y.jfbundle").exists());
    assert_eq!(std::fs::read(dir.join("vs/pins.json")).unwrap(), pins);
}

#[test]
fn hostile_bundles_are_refused_by_import_with_their_sentence_and_nothing_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = jpd(dir, "jpd", &root().join("fixtures/keys/test-vendor.pub"));
    let data = cfg.parent().unwrap().join("data");
    std::fs::create_dir_all(data.join("state")).unwrap();
    std::fs::write(data.join("jpd_id"), "jpd-test-0001").unwrap();
    let before = tree_hash(cfg.parent().unwrap());
    let trust =
        jfconnect::bundle::read_trusted_keys(&[root().join("fixtures/keys/test-vendor.pub")])
            .unwrap();
    let cases = [
        ("zip-slip", "'..' segment"),
        ("symlink", "symbolic link"),
        ("unsigned", "is not signed"),
        ("legacy-signature", "legacy"),
        ("foreign-key", "not one of the trusted keys"),
        ("tampered-manifest", "manifest.json"),
        ("duplicate-name", "two entries"),
        (
            "equivalent-names-sharp-s",
            "Unicode normalisation and case folding",
        ),
        (
            "equivalent-names-nfc-nfd",
            "Unicode normalisation and case folding",
        ),
        ("wrong-kind", "usage"),
        ("wrong-jpd", "jpd-other-9999"),
        ("zip-bomb", "zip bomb"),
    ];
    for (name, phrase) in cases {
        let file = root().join(format!("fixtures/bundles/bad/{name}.jfbundle"));
        let o = run_cfg(
            dir,
            &cfg,
            &["bundle", "import", &file.display().to_string()],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        assert!(
            err.to_lowercase().contains(&phrase.to_lowercase()),
            "{name}: expected {phrase:?} in {err}"
        );
        // The sentence is the bundle library's own refusal, word for word.
        let expect = jfconnect::bundle::Expectations {
            kind: Some(jfconnect::bundle::Kind::Entitlements),
            jpd_id: Some("jpd-test-0001".into()),
            clock: std::sync::Arc::new(jfconnect::clock::SystemClock),
            history: Some(Default::default()),
        };
        let library = jfconnect::bundle::verify_bundle(
            &file,
            &trust,
            &expect,
            &jfconnect::bundle::Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.trim_end(), format!("jfconnect: {library}"), "{name}");
        assert_eq!(
            tree_hash(cfg.parent().unwrap()),
            before,
            "{name} changed the data folder"
        );
    }
}

/// Two `bundle import` processes at once, with sequences N and N+1, end in one consistent
/// state: the history's last sequence is the newest import that succeeded, the store holds
/// exactly that bundle's entitlements, and an import that reports a refusal changed nothing.
/// (Before imports took the entitlements job's lock, the store could end at N while the
/// history ended at N+1.)
#[test]
fn concurrent_imports_never_roll_entitlements_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (cfg, _) = registered_jpd(dir);
    let reg = outbox(&cfg, "registration").remove(0);
    let vs = dir.join("vendor-state").display().to_string();
    let rounds = 6;
    let mut answers = Vec::new();
    for n in 1..=2 * rounds {
        let out = format!("ent{n}.jfbundle");
        let o = run(
            dir,
            &[
                "sim",
                "answer",
                "--in",
                &reg.display().to_string(),
                "--key",
                "vendor.key",
                "--out",
                &out,
                "--state",
                &vs,
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        answers.push(out);
    }
    let history = cfg
        .parent()
        .unwrap()
        .join("data/state/bundle-import-entitlements.json");
    for pair in answers.chunks(2) {
        // Start the newer one first, so the older one often verifies against a history that
        // is about to move past it.
        let spawn = |f: &str| {
            jfconnect(dir)
                .args(with_config(&cfg, &["bundle", "import", f]))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let newer = spawn(&pair[1]);
        let older = spawn(&pair[0]);
        let (newer, older) = (
            newer.wait_with_output().unwrap(),
            older.wait_with_output().unwrap(),
        );
        assert!(newer.status.success(), "{}", text(&newer));
        assert!(
            older.status.success() || older.status.code() == Some(2),
            "{}",
            text(&older)
        );
        let o = run_cfg(dir, &cfg, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let text_history = std::fs::read_to_string(&history).unwrap();
        let newest: u64 = pair[1]
            .trim_start_matches("ent")
            .trim_end_matches(".jfbundle")
            .parse()
            .unwrap();
        assert!(
            text_history.contains(&format!("\"last_sequence\": {newest}"))
                || text_history.contains(&format!("\"last_sequence\":{newest}")),
            "history must end at the newest bundle: {text_history}"
        );
        let source = v["entitlements"]["source"].as_str().unwrap_or_default();
        assert!(
            source.starts_with(&format!("entitlements bundle bundle-{newest}-")),
            "the store must hold the newest bundle's entitlements: {v}"
        );
    }
}
