//! The published example bundles verify with the published test keys, and the JSON Schema
//! names exactly the manifest's fields.

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use jfconnect::bundle::{
    inspect_bundle, read_trusted_keys, verify_bundle, verify_file_with_pubkey, Expectations,
    ImportState, Kind, Limits,
};
use jfconnect::clock::ManualClock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn each_example_bundle_verifies_with_its_test_key() {
    for (file, kind, key) in [
        ("usage", Kind::Usage, "test-jpd.pub"),
        ("registration", Kind::Registration, "test-jpd.pub"),
        ("entitlements", Kind::Entitlements, "test-vendor.pub"),
    ] {
        let path = root().join(format!("bundles/examples/{file}.jfbundle"));
        let trust = read_trusted_keys(&[root().join("fixtures/keys").join(key)]).unwrap();
        let expect = Expectations {
            kind: Some(kind),
            jpd_id: Some("jpd-test-0001".into()),
            clock: Arc::new(ManualClock::new(
                Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
            )),
            history: Some(ImportState::default()),
        };
        let v = verify_bundle(&path, &trust, &expect, &Limits::default()).unwrap();
        assert_eq!(v.manifest().kind, kind);
        verify_file_with_pubkey(&path, &root().join("fixtures/keys").join(key)).unwrap();
        assert_eq!(
            inspect_bundle(&path).unwrap().unverified_manifest.kind,
            kind
        );
    }
}

#[test]
fn entitlements_signed_by_the_jpd_key_are_refused_as_unknown_key() {
    let path = root().join("bundles/examples/entitlements.jfbundle");
    let err = verify_file_with_pubkey(&path, &root().join("fixtures/keys/test-jpd.pub"));
    assert!(matches!(
        err,
        Err(jfconnect::bundle::BundleError::UnknownKey(_))
    ));
}

#[test]
fn manifest_schema_requires_exactly_the_manifest_fields() {
    let schema: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root().join("bundles/manifest.schema.json")).unwrap(),
    )
    .unwrap();
    let v = verify_file_with_pubkey(
        &root().join("bundles/examples/usage.jfbundle"),
        &root().join("fixtures/keys/test-jpd.pub"),
    )
    .unwrap();
    let json = serde_json::to_value(&v).unwrap();
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    fields.sort();
    required.sort();
    assert_eq!(fields, required);
}

#[test]
fn example_registration_and_usage_bundles_are_answered_by_the_vendor_portal() {
    let dir = tempfile::tempdir().unwrap();
    for (i, example) in ["registration", "usage"].iter().enumerate() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jfconnect"))
            .args(["sim", "answer", "--in"])
            .arg(format!("bundles/examples/{example}.jfbundle"))
            .args(["--key", "fixtures/keys/test-vendor.key", "--out"])
            .arg(dir.path().join(format!("answer-{i}.jfbundle")))
            .arg("--state")
            .arg(dir.path().join("vendor"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(dir.path().join(format!("answer-{i}.jfbundle")).exists());
    }
}
