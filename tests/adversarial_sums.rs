//! `SHA256SUMS` forms that `sha256sum -c` would not read as docs/bundle-format.md §3 writes them
//! (CRLF, a lone CR, one or three spaces, the binary-mode `*`, a tab, upper-case hex, a BOM, a
//! blank line, trailing white space, no final newline) are refused as malformed, even when
//! correctly signed: the signature covers the bytes, and the bytes are not the format.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use jfconnect::bundle::{
    generate_keypair, verify_bytes, write_bundle, BundleError, BundleSpec, Expectations, Kind,
    Limits, Manifest, PayloadEntry, PayloadSource, SecretKey, TrustedKeys, MANIFEST, SIGNATURE,
    SUMS, UNTRUSTED_COMMENT,
};
use jfconnect::clock::ManualClock;

fn spec() -> BundleSpec {
    let created = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    BundleSpec {
        kind: Kind::Usage,
        bundle_id: "sums-1".into(),
        jpd_id: "jpd-a".into(),
        created,
        expires: created + Duration::days(30),
        sequence: 1,
    }
}

fn expect() -> Expectations {
    Expectations {
        kind: Some(Kind::Usage),
        jpd_id: Some("jpd-a".into()),
        clock: Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap(),
        )),
        history: None,
    }
}

/// A valid bundle's entries, in zip order.
fn valid_entries(dir: &Path, key: &SecretKey) -> Vec<(String, Vec<u8>)> {
    let out = dir.join("ok.jfbundle");
    let payload = vec![
        PayloadEntry {
            path: "payload/usage/a.json".into(),
            source: PayloadSource::Bytes(br#"{"product":"xray"}"#.to_vec()),
        },
        PayloadEntry {
            path: "payload/usage/b.json".into(),
            source: PayloadSource::Bytes(br#"{"product":"artifactory"}"#.to_vec()),
        },
    ];
    write_bundle(&out, &spec(), payload, key).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&out).unwrap()).unwrap();
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).unwrap();
            (f.name().to_string(), bytes)
        })
        .collect()
}

/// The same bundle with `SHA256SUMS` replaced by `sums`, signed again by `key` with the
/// trusted comment the manifest asks for: only the form of `SHA256SUMS` is wrong.
fn with_sums(entries: &[(String, Vec<u8>)], sums: &[u8], key: &SecretKey) -> Vec<u8> {
    let manifest_bytes = &entries.iter().find(|(n, _)| n == MANIFEST).unwrap().1;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).unwrap();
    let sig = key
        .sign(sums, UNTRUSTED_COMMENT, &manifest.trusted_comment())
        .unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in entries {
            let bytes: &[u8] = match name.as_str() {
                n if n == SUMS => sums,
                n if n == SIGNATURE => sig.as_bytes(),
                _ => bytes,
            };
            w.start_file(name.as_str(), opts).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap();
    }
    out.into_inner()
}

/// The hostile forms, each made from the valid text.
fn variants(valid: &str) -> Vec<(&'static str, Vec<u8>)> {
    let lines: Vec<&str> = valid.lines().collect();
    let join = |ls: Vec<String>| ls.concat().into_bytes();
    let each = |f: &dyn Fn(&str) -> String| join(lines.iter().map(|l| f(l)).collect());
    let first_only = |f: &dyn Fn(&str) -> String| {
        join(
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| if i == 0 { f(l) } else { format!("{l}\n") })
                .collect(),
        )
    };
    vec![
        ("crlf", each(&|l| format!("{l}\r\n"))),
        ("lone cr", first_only(&|l| format!("{l}\r\n"))),
        (
            "one space",
            each(&|l| format!("{}\n", l.replacen("  ", " ", 1))),
        ),
        (
            "three spaces",
            each(&|l| format!("{}\n", l.replacen("  ", "   ", 1))),
        ),
        (
            "binary mode",
            each(&|l| format!("{}\n", l.replacen("  ", " *", 1))),
        ),
        ("tab", each(&|l| format!("{}\n", l.replacen("  ", "\t", 1)))),
        (
            "upper-case hex",
            each(&|l| format!("{}{}\n", l[..64].to_uppercase(), &l[64..])),
        ),
        ("bom", {
            let mut b = "\u{feff}".as_bytes().to_vec();
            b.extend_from_slice(valid.as_bytes());
            b
        }),
        ("blank line", {
            let mut b = valid.as_bytes().to_vec();
            b.push(b'\n');
            b
        }),
        ("trailing space", each(&|l| format!("{l} \n"))),
        (
            "no final newline",
            valid.trim_end_matches('\n').as_bytes().to_vec(),
        ),
    ]
}

#[test]
fn sums_forms_other_than_the_documented_one_are_refused_as_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let entries = valid_entries(dir.path(), &key);
    let valid =
        String::from_utf8(entries.iter().find(|(n, _)| n == SUMS).unwrap().1.clone()).unwrap();
    // The control: the valid text, re-signed the same way, verifies.
    let ok = with_sums(&entries, valid.as_bytes(), &key);
    verify_bytes(&ok, &trust, &expect(), &Limits::default()).unwrap();

    let mut accepted = Vec::new();
    for (name, sums) in variants(&valid) {
        let bundle = with_sums(&entries, &sums, &key);
        match verify_bytes(&bundle, &trust, &expect(), &Limits::default()) {
            Err(BundleError::MalformedSums(reason)) => {
                assert!(!reason.is_empty(), "{name}");
            }
            other => accepted.push(format!("{name}: {other:?}")),
        }
    }
    assert!(
        accepted.is_empty(),
        "not refused as malformed:\n{}",
        accepted.join("\n")
    );
}

#[test]
fn duplicate_sums_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let trust = TrustedKeys::new(vec![key.public()]);
    let entries = valid_entries(dir.path(), &key);
    let valid =
        String::from_utf8(entries.iter().find(|(n, _)| n == SUMS).unwrap().1.clone()).unwrap();
    let last = valid.lines().last().unwrap();
    let doubled = format!("{valid}{last}\n");
    let bundle = with_sums(&entries, doubled.as_bytes(), &key);
    assert!(matches!(
        verify_bytes(&bundle, &trust, &expect(), &Limits::default()),
        Err(BundleError::MalformedSums(_))
    ));
}
