//! Interoperability with the real tools an operator uses by hand: `unzip`, `sha256sum -c`,
//! `minisign` (and Info-ZIP `zip`). CI installs them; a missing tool fails the test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::{Duration, Utc};
use jfconnect::bundle::{
    keys_generate, read_public_key, read_secret_key, sums_line, verify_bundle,
    verify_file_with_pubkey, write_bundle, BundleSpec, Expectations, Kind, Limits, Manifest,
    ManifestEntry, MinisignSignature, PayloadEntry, PayloadSource, PublicKey, TrustedKeys,
    FORMAT_V1,
};
use jfconnect::clock::SystemClock;
use sha2::{Digest, Sha256};

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("`{cmd}` is needed for this test (CI installs it): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?} failed: {text}");
    text
}

fn spec(kind: Kind) -> BundleSpec {
    BundleSpec {
        kind,
        bundle_id: jfconnect::bundle::new_bundle_id(),
        jpd_id: "jpd-interop".into(),
        created: Utc::now(),
        expires: Utc::now() + Duration::days(7),
        sequence: 1,
    }
}

fn any_expectations() -> Expectations {
    Expectations {
        kind: None,
        jpd_id: None,
        clock: Arc::new(SystemClock),
        history: None,
    }
}

#[test]
fn our_bundle_passes_the_manual_check_with_unzip_minisign_and_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = keys_generate(&d.join("vendor")).unwrap();
    let payload = vec![
        PayloadEntry {
            path: "payload/entitlements.json".into(),
            source: PayloadSource::Bytes(b"{\"entitlements\":[]}\n".to_vec()),
        },
        PayloadEntry {
            path: "payload/usage/a b.json".into(),
            source: PayloadSource::Bytes(b"{}".to_vec()),
        },
    ];
    write_bundle(
        &d.join("b.jfbundle"),
        &spec(Kind::Entitlements),
        payload,
        &key,
    )
    .unwrap();
    run(d, "unzip", &["-q", "b.jfbundle", "-d", "x"]);
    let x = d.join("x");
    let out = run(
        &x,
        "minisign",
        &["-Vm", "SHA256SUMS", "-p", "../vendor.pub"],
    );
    assert!(out.contains("kind=entitlements"), "{out}");
    let out = run(&x, "sha256sum", &["-c", "SHA256SUMS"]);
    assert_eq!(out.matches(": OK").count(), 3, "{out}");
}

#[test]
fn bundle_zipped_by_info_zip_and_signed_by_minisign_with_its_own_key_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, "minisign", &["-G", "-W", "-p", "m.pub", "-s", "m.key"]);
    let pk = read_public_key(&d.join("m.pub")).unwrap();
    let x = d.join("x");
    std::fs::create_dir_all(x.join("payload")).unwrap();
    let body = b"{\"entitlements\":[]}\n";
    std::fs::write(x.join("payload/entitlements.json"), body).unwrap();
    let now = Utc::now();
    let manifest = Manifest {
        format: FORMAT_V1.into(),
        kind: Kind::Entitlements,
        bundle_id: "made-by-hand".into(),
        jpd_id: "jpd-interop".into(),
        created: jfconnect::bundle::format_time(now),
        expires: jfconnect::bundle::format_time(now + Duration::days(1)),
        sequence: 3,
        signing_key_id: pk.id.to_string(),
        entries: vec![ManifestEntry {
            path: "payload/entitlements.json".into(),
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(body)),
        }],
    };
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    std::fs::write(x.join("manifest.json"), &mbytes).unwrap();
    let sums = sums_line(&hex::encode(Sha256::digest(&mbytes)), "manifest.json")
        + &sums_line(&manifest.entries[0].sha256, "payload/entitlements.json");
    std::fs::write(x.join("SHA256SUMS"), sums).unwrap();
    let tc = manifest.trusted_comment();
    run(
        &x,
        "minisign",
        &["-S", "-s", "../m.key", "-m", "SHA256SUMS", "-t", &tc],
    );
    run(&x, "zip", &["-q", "-D", "-r", "../hand.jfbundle", "."]);
    let trust = TrustedKeys::new(vec![pk]);
    let v = verify_bundle(
        &d.join("hand.jfbundle"),
        &trust,
        &any_expectations(),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(v.read_entry("payload/entitlements.json").unwrap(), body);
    let m = verify_file_with_pubkey(&d.join("hand.jfbundle"), &d.join("m.pub")).unwrap();
    assert_eq!(m.sequence, 3);
}

#[test]
fn minisign_signs_with_our_secret_key_and_we_verify_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ours = keys_generate(&d.join("ours")).unwrap();
    std::fs::write(d.join("data"), b"some data\n").unwrap();
    run(
        d,
        "minisign",
        &["-S", "-s", "ours.key", "-m", "data", "-t", "hello there"],
    );
    run(d, "minisign", &["-Vm", "data", "-p", "ours.pub"]);
    let sig = MinisignSignature::parse(&std::fs::read_to_string(d.join("data.minisig")).unwrap())
        .unwrap();
    assert_eq!(sig.trusted_comment, "hello there");
    sig.verify(&ours.public(), b"some data\n").unwrap();
}

#[test]
fn minisign_made_keys_load_and_legacy_signatures_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    run(d, "minisign", &["-G", "-W", "-p", "m.pub", "-s", "m.key"]);
    let sk = read_secret_key(&d.join("m.key")).unwrap();
    let pk = read_public_key(&d.join("m.pub")).unwrap();
    assert_eq!(sk.public(), pk);
    let text = std::fs::read_to_string(d.join("m.pub")).unwrap();
    assert_eq!(PublicKey::parse(&text).unwrap().to_file_string(), text);
    std::fs::write(d.join("data"), b"x").unwrap();
    run(d, "minisign", &["-S", "-l", "-s", "m.key", "-m", "data"]);
    let legacy = std::fs::read_to_string(d.join("data.minisig")).unwrap();
    assert!(matches!(
        MinisignSignature::parse(&legacy),
        Err(jfconnect::bundle::BundleError::LegacySignature)
    ));
    // And a signature by our own writer verifies with minisign's public key file format.
    let ours: PathBuf = d.join("ours");
    let k = keys_generate(&ours).unwrap();
    std::fs::write(d.join("data.minisig"), k.sign(b"x", "c", "t").unwrap()).unwrap();
    run(d, "minisign", &["-Vm", "data", "-p", "ours.pub"]);
}
