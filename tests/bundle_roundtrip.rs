//! A bundle written by `write_bundle` verifies, streams back byte for byte, and is recorded in
//! the import history only by an explicit commit.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use jfconnect::bundle::{
    generate_keypair, inspect_bundle, verify_bundle, verify_self_signed, write_bundle, BundleError,
    BundleSpec, Expectations, ImportStore, Kind, Limits, PayloadEntry, PayloadSource, SecretKey,
    TrustedKeys,
};
use jfconnect::clock::ManualClock;

fn spec(id: &str, seq: u64) -> BundleSpec {
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    BundleSpec {
        kind: Kind::Usage,
        bundle_id: id.into(),
        jpd_id: "jpd-a".into(),
        created,
        expires: created + Duration::days(30),
        sequence: seq,
    }
}

fn expect(store: &ImportStore, days_after: i64) -> Expectations {
    let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::days(days_after);
    Expectations {
        kind: Some(Kind::Usage),
        jpd_id: Some("jpd-a".into()),
        clock: Arc::new(ManualClock::new(now)),
        history: Some(store.load().unwrap()),
    }
}

fn payload(dir: &Path) -> Vec<PayloadEntry> {
    let on_disk = dir.join("u1.json");
    std::fs::write(
        &on_disk,
        br#"{"product":"xray","timestamp":"2026-03-01T00:00:00Z"}"#,
    )
    .unwrap();
    vec![
        PayloadEntry {
            path: "payload/usage/u1.json".into(),
            source: PayloadSource::File(on_disk),
        },
        PayloadEntry {
            path: "payload/usage/u2.json".into(),
            source: PayloadSource::Bytes(b"{}".to_vec()),
        },
        PayloadEntry {
            path: "payload/usage/big.bin".into(),
            source: PayloadSource::Reader(Box::new(std::io::Cursor::new(noise(1 << 20)))),
        },
    ]
}

/// Incompressible bytes (a highly compressible entry over 1 MiB is refused as a zip bomb).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn write(dir: &Path, key: &SecretKey, id: &str, seq: u64) -> std::path::PathBuf {
    let out = dir.join(format!("{id}.jfbundle"));
    write_bundle(&out, &spec(id, seq), payload(dir), key).unwrap();
    out
}

#[test]
fn written_bundle_verifies_and_streams_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = write(dir.path(), &key, "b1", 1);
    let v = verify_bundle(&out, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    assert_eq!(v.manifest().entries.len(), 3);
    assert_eq!(v.read_entry("payload/usage/u2.json").unwrap(), b"{}");
    let mut big = Vec::new();
    v.open_entry("payload/usage/big.bin")
        .unwrap()
        .read_to_end(&mut big)
        .unwrap();
    assert_eq!(big, noise(1 << 20));
    assert!(matches!(
        v.read_entry("payload/nope"),
        Err(BundleError::MissingEntry(_))
    ));
}

#[test]
fn history_changes_only_on_commit_and_then_refuses_a_replay() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = write(dir.path(), &key, "b1", 1);
    let v = verify_bundle(&out, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    assert!(!store.path().exists(), "verification alone wrote history");
    v.commit(&store).unwrap();
    let again = verify_bundle(&out, &trust, &expect(&store, 1), &Limits::default());
    assert!(matches!(again, Err(BundleError::AlreadyImported(id)) if id == "b1"));
    let newer = write(dir.path(), &key, "b2", 2);
    verify_bundle(&newer, &trust, &expect(&store, 1), &Limits::default())
        .unwrap()
        .commit(&store)
        .unwrap();
    let state = store.load().unwrap();
    assert_eq!(state.last_sequence, Some(2));
    assert_eq!(state.imported_ids.len(), 2);
}

#[test]
fn a_second_commit_of_a_stale_verification_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let b2 = write(dir.path(), &key, "b2", 2);
    let b3 = write(dir.path(), &key, "b3", 3);
    let v2 = verify_bundle(&b2, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    let v3 = verify_bundle(&b3, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    v3.commit(&store).unwrap();
    assert!(matches!(
        v2.commit(&store),
        Err(BundleError::OlderSequence { .. })
    ));
}

#[test]
fn clock_set_back_before_an_accepted_bundle_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let mut s = spec("late", 5);
    s.created += Duration::days(10);
    s.expires += Duration::days(10);
    let late = dir.path().join("late.jfbundle");
    write_bundle(&late, &s, payload(dir.path()), &key).unwrap();
    verify_bundle(&late, &trust, &expect(&store, 11), &Limits::default())
        .unwrap()
        .commit(&store)
        .unwrap();
    // A later, valid bundle; but the clock now reads 9 days after 2026-03-01.
    let b = write(dir.path(), &key, "after", 6);
    let err = verify_bundle(&b, &trust, &expect(&store, 9), &Limits::default()).unwrap_err();
    assert!(matches!(err, BundleError::ClockRollback { .. }), "{err:?}");
}

#[test]
fn payload_changed_on_disk_after_verification_fails_when_streamed() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = dir.path().join("s.jfbundle");
    let spec = spec("stored", 1);
    // Stored (incompressible) content so that an in-place byte change still inflates.
    let noise = noise(4096);
    let entry = PayloadEntry {
        path: "payload/noise.bin".into(),
        source: PayloadSource::Bytes(noise.clone()),
    };
    write_bundle(&out, &spec, vec![entry], &key).unwrap();
    let v = verify_bundle(&out, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    let mut bytes = std::fs::read(&out).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == &noise[100..116])
        .expect("stored somewhere");
    bytes[at] ^= 0xFF;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
    assert!(v.read_entry("payload/noise.bin").is_err());
}

#[test]
fn tight_limits_refuse_big_files_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = write(dir.path(), &key, "b1", 1);
    let e = expect(&store, 1);
    let small_file = Limits {
        max_file_bytes: 100,
        ..Limits::default()
    };
    assert!(matches!(
        verify_bundle(&out, &trust, &e, &small_file),
        Err(BundleError::FileTooLarge { .. })
    ));
    let small_total = Limits {
        max_total_bytes: 1 << 20,
        ..Limits::default()
    };
    assert!(matches!(
        verify_bundle(&out, &trust, &e, &small_total),
        Err(BundleError::TotalTooLarge { .. })
    ));
    let few = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    assert!(matches!(
        verify_bundle(&out, &trust, &e, &few),
        Err(BundleError::TooManyEntries { count: 6, limit: 3 })
    ));
}

#[test]
fn inspect_shows_claims_marked_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let out = write(dir.path(), &key, "b1", 1);
    let s = inspect_bundle(&out).unwrap();
    assert!(!s.verified);
    assert_eq!(s.unverified_manifest.bundle_id, "b1");
    assert_eq!(s.unverified_signing_key_id, Some(key.id.to_string()));
    assert!(s.to_string().starts_with("NOT VERIFIED"));
}

#[test]
fn writer_refuses_paths_outside_payload_and_bad_ids() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let out = dir.path().join("x.jfbundle");
    let bad = PayloadEntry {
        path: "manifest.json".into(),
        source: PayloadSource::Bytes(vec![]),
    };
    assert!(matches!(
        write_bundle(&out, &spec("x", 1), vec![bad], &key),
        Err(BundleError::InvalidSpec(_))
    ));
    assert!(write_bundle(&out, &spec("a b", 1), vec![], &key).is_err());
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temp file left behind"
    );
}

#[test]
fn bundle_with_more_entries_than_plain_zip_allows_uses_zip64_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = dir.path().join("many.jfbundle");
    let entries = (0..66_000u32).map(|i| PayloadEntry {
        path: format!("payload/usage/{i}.json"),
        source: PayloadSource::Bytes(format!("{{\"i\":{i}}}").into_bytes()),
    });
    let started = std::time::Instant::now();
    write_bundle(&out, &spec("many", 1), entries, &key).unwrap();
    eprintln!("66k-entry bundle written in {:.1?}", started.elapsed());
    let v = verify_bundle(&out, &trust, &expect(&store, 1), &Limits::default()).unwrap();
    assert_eq!(v.manifest().entries.len(), 66_000);
    assert_eq!(
        v.read_entry("payload/usage/65999.json").unwrap(),
        b"{\"i\":65999}"
    );
    eprintln!(
        "66k-entry bundle written and verified in {:.1?}",
        started.elapsed()
    );
}

/// A bundle that names its own key: the named entry (capped) locates the key, and the bundle
/// must then verify with it; a key that did not sign it, a missing entry and an entry over the
/// cap are refused.
#[test]
fn a_self_signed_bundle_verifies_only_with_the_key_its_entry_names() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let store = ImportStore::new(dir.path().join("state/import.json"));
    let out = write(dir.path(), &key, "b1", 1);
    let entry = "payload/usage/u2.json";
    let limits = Limits::default();

    let mut seen = None;
    let v = verify_self_signed(
        &out,
        entry,
        64,
        |bytes| {
            seen = bytes.map(<[u8]>::to_vec);
            Ok::<_, BundleError>(key.public())
        },
        &expect(&store, 1),
        &limits,
    )
    .unwrap();
    assert_eq!(
        seen.as_deref(),
        Some(&b"{}"[..]),
        "the locator read the entry"
    );
    assert_eq!(v.manifest().entries.len(), 3);

    let other = generate_keypair();
    let e = verify_self_signed(
        &out,
        entry,
        64,
        |_| Ok::<_, BundleError>(other.public()),
        &expect(&store, 1),
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::UnknownKey(_)), "{e}");

    let e = verify_self_signed(
        &out,
        "payload/registration.json",
        64,
        |bytes| {
            assert!(bytes.is_none());
            Err(BundleError::MissingEntry(
                "payload/registration.json".into(),
            ))
        },
        &expect(&store, 1),
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::MissingEntry(_)), "{e}");

    let e = verify_self_signed(
        &out,
        "payload/usage/big.bin",
        1024,
        |_| -> Result<_, BundleError> { panic!("an entry over the cap is never read") },
        &expect(&store, 1),
        &limits,
    )
    .unwrap_err();
    assert!(matches!(e, BundleError::MetadataTooLarge { .. }), "{e}");
}
