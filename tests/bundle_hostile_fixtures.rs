//! Every hostile bundle in `fixtures/bundles/bad/` is refused with its own error, and the
//! import history on disk is byte-identical afterwards.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use jfconnect::bundle::{
    read_public_key, verify_bundle, BundleError as E, Expectations, ImportState, ImportStore, Kind,
    Limits, PathProblem, TrustedKeys,
};
use jfconnect::clock::ManualClock;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The importing JPD's situation for every fixture: it has imported sequence 10 (created
/// 2026-05-01, id `replayed-bundle`) and its clock says 2026-06-01.
fn scenario(dir: &Path) -> (TrustedKeys, Expectations, ImportStore) {
    let trust = TrustedKeys::new(vec![read_public_key(
        &root().join("fixtures/keys/test-vendor.pub"),
    )
    .unwrap()]);
    let store = ImportStore::new(dir.join("state/bundle-import.json"));
    let history = ImportState {
        last_sequence: Some(10),
        newest_created: Some(Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap()),
        imported_ids: BTreeSet::from(["replayed-bundle".to_string()]),
    };
    jfconnect::state::save(store.path(), &history).unwrap();
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some("jpd-test-0001".into()),
        clock: Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
        )),
        history: Some(store.load().unwrap()),
    };
    (trust, expect, store)
}

fn expected(name: &str, e: &E) -> bool {
    use PathProblem as P;
    match name {
        "tampered-payload" => matches!(e, E::HashMismatch(p) if p == "payload/entitlements.json"),
        "tampered-manifest" => matches!(e, E::HashMismatch(p) if p == "manifest.json"),
        "truncated" => matches!(e, E::Truncated),
        "not-a-zip" => matches!(e, E::NotAZip(_)),
        "zip-slip" => matches!(
            e,
            E::UnsafePath {
                problem: P::DotSegment,
                ..
            }
        ),
        "absolute-path" => matches!(
            e,
            E::UnsafePath {
                problem: P::Absolute,
                ..
            }
        ),
        "backslash-path" => matches!(
            e,
            E::UnsafePath {
                problem: P::Backslash,
                ..
            }
        ),
        "drive-letter-path" => matches!(
            e,
            E::UnsafePath {
                problem: P::DriveLetter,
                ..
            }
        ),
        "duplicate-name" => matches!(e, E::DuplicateName(_)),
        "equivalent-names-nfc-nfd" => {
            equivalent(e, "payload/caf\u{e9}.json", "payload/cafe\u{301}.json")
        }
        "equivalent-names-case" => equivalent(e, "payload/A.json", "payload/a.json"),
        "equivalent-names-ligature" => {
            equivalent(e, "payload/\u{fb01}le.json", "payload/file.json")
        }
        "equivalent-names-kelvin" => equivalent(e, "payload/\u{212a}.json", "payload/k.json"),
        "equivalent-names-sharp-s" => {
            equivalent(e, "payload/stra\u{df}e.json", "payload/STRASSE.json")
        }
        "central-local-mismatch" => matches!(e, E::LocalHeaderMismatch { .. }),
        "overlapping-entries" => matches!(e, E::OverlappingEntries(..)),
        "symlink" => matches!(e, E::Symlink(_)),
        "fifo-special-mode" => matches!(e, E::SpecialFileMode { mode: 0o010644, .. }),
        "setuid-special-mode" => matches!(e, E::SpecialFileMode { mode: 0o104755, .. }),
        "encrypted-entry" => matches!(e, E::EncryptedEntry(_)),
        "unsupported-compression" => matches!(e, E::UnsupportedCompression { method: 12, .. }),
        "unlisted-entry" => matches!(e, E::UnlistedEntry(p) if p == "payload/extra.json"),
        "missing-entry" => matches!(e, E::MissingEntry(p) if p == "payload/b.json"),
        "unsigned" => matches!(e, E::Unsigned),
        "legacy-signature" => matches!(e, E::LegacySignature),
        "foreign-key" => matches!(e, E::UnknownKey(_)),
        "bad-signature" => matches!(e, E::BadSignature),
        "edited-trusted-comment" => matches!(e, E::BadTrustedCommentSignature),
        "trusted-comment-mismatch" => matches!(e, E::TrustedCommentMismatch { .. }),
        "malformed-trusted-comment" => matches!(e, E::MalformedTrustedComment(_)),
        "signing-key-mismatch" => matches!(e, E::SigningKeyMismatch { .. }),
        "sums-incomplete" => matches!(e, E::SumsMismatch(_)),
        "malformed-manifest" => matches!(e, E::MalformedManifest(_)),
        "unsupported-format" => matches!(e, E::UnsupportedFormat(_)),
        "size-mismatch" => matches!(e, E::SizeMismatch { .. }),
        "wrong-kind" => matches!(
            e,
            E::WrongKind {
                actual: Kind::Usage,
                ..
            }
        ),
        "wrong-jpd" => matches!(e, E::WrongJpd { .. }),
        "expired" => matches!(e, E::Expired { .. }),
        "clock-rollback" => matches!(e, E::ClockRollback { .. }),
        "rollback-older-sequence" => matches!(
            e,
            E::OlderSequence {
                sequence: 5,
                last: 10
            }
        ),
        "same-sequence" => matches!(e, E::SameSequence(10)),
        "replay" => matches!(e, E::AlreadyImported(_)),
        "zip-bomb" => matches!(e, E::EntryTooLarge { .. }),
        "ratio-bomb" => matches!(e, E::CompressionRatio { .. }),
        "inflates-beyond-declared-size" => matches!(e, E::InflatesBeyondDeclaredSize { .. }),
        "huge-manifest" => matches!(e, E::MetadataTooLarge { .. }),
        "too-many-entries" => matches!(e, E::TooManyEntries { .. }),
        other => panic!("fixture {other} has no expected refusal in this test; add one"),
    }
}

/// Refused for the pair `a`, `b` (in either order), at the zip directory, before anything
/// in the bundle was read.
fn equivalent(e: &E, a: &str, b: &str) -> bool {
    matches!(e, E::EquivalentNames { first, second }
        if (first == a && second == b) || (first == b && second == a))
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_hostile_fixture_is_refused_with_its_own_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (trust, expect, _store) = scenario(dir.path());
    let before = snapshot(dir.path());
    let mut names = Vec::new();
    for f in fs::read_dir(root().join("fixtures/bundles/bad")).unwrap() {
        let path = f.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        match verify_bundle(&path, &trust, &expect, &Limits::default()) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => assert!(
                expected(&name, &e),
                "{name} refused with the wrong error: {e:?}"
            ),
        }
        names.push(name);
    }
    assert!(names.len() >= 20, "only {} hostile fixtures", names.len());
    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused bundle changed the disk"
    );
}

#[test]
fn every_refusal_message_is_one_sentence_without_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let (trust, expect, _store) = scenario(dir.path());
    for f in fs::read_dir(root().join("fixtures/bundles/bad")).unwrap() {
        let path = f.unwrap().path();
        let msg = verify_bundle(&path, &trust, &expect, &Limits::default())
            .unwrap_err()
            .to_string();
        assert!(
            !msg.contains('\n') && msg.len() < 400,
            "{}: {msg}",
            path.display()
        );
    }
}

#[test]
#[ignore = "prints each refusal; run with --ignored --nocapture to read them"]
fn print_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let (trust, expect, _store) = scenario(dir.path());
    let mut all: Vec<_> = fs::read_dir(root().join("fixtures/bundles/bad"))
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    all.sort();
    for path in all {
        let e = verify_bundle(&path, &trust, &expect, &Limits::default()).unwrap_err();
        println!("{:32} {e}", path.file_stem().unwrap().to_string_lossy());
    }
}
