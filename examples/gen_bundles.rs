//! Regenerates the published bundle fixtures: the TEST-ONLY keys in `fixtures/keys/` (kept if
//! present), the signed examples in `bundles/examples/`, and the hostile bundles in
//! `fixtures/bundles/bad/`, each named after what is wrong with it.
//!
//! Run with `scripts/gen-bad-bundles` (or `cargo run --example gen_bundles -- <repo root>`).
//! Hostile bundles are assembled here byte by byte with a tiny zip builder, because the point
//! is to make zips that no well-behaved writer would make. `tests/bundle_hostile_fixtures.rs`
//! holds the expected refusal of each; adding a fixture here without a row there fails it.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use flate2::write::DeflateEncoder;
use flate2::Compression;
use jfconnect::bundle::{
    format_time, load_or_generate, sums_line, write_bundle, BundleSpec, Kind, Manifest,
    ManifestEntry, PayloadEntry, PayloadSource, SecretKey, FORMAT_V1, UNTRUSTED_COMMENT,
};
use sha2::{Digest, Sha256};
use std::io::Write;

/// The JPD id every fixture targets.
const JPD: &str = "jpd-test-0001";

fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0)
        .single()
        .expect("valid date")
}

/// One zip entry as the hostile builder writes it.
#[derive(Clone)]
struct Part {
    name: Vec<u8>,
    local_name: Option<Vec<u8>>,
    data: Vec<u8>,
    deflate: bool,
    mode: u32,
    flags: u16,
    method: Option<u16>,
    declared_size: Option<u32>,
}

fn part(name: &str, data: &[u8]) -> Part {
    Part {
        name: name.as_bytes().to_vec(),
        local_name: None,
        data: data.to_vec(),
        deflate: false,
        mode: 0o100644,
        flags: 0,
        method: None,
        declared_size: None,
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).expect("in memory");
    e.finish().expect("in memory")
}

fn local_header(p: &Part, stored: &[u8], method: u16, size: u32) -> Vec<u8> {
    let name = p.local_name.as_ref().unwrap_or(&p.name);
    let mut h = Vec::new();
    h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
    h.extend_from_slice(&20u16.to_le_bytes());
    h.extend_from_slice(&p.flags.to_le_bytes());
    h.extend_from_slice(&method.to_le_bytes());
    h.extend_from_slice(&[0, 0, 0x21, 0]); // time, date (1980-01-01)
    h.extend_from_slice(&crc32(&p.data).to_le_bytes());
    h.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&(name.len() as u16).to_le_bytes());
    h.extend_from_slice(&0u16.to_le_bytes());
    h.extend_from_slice(name);
    h
}

/// Builds a zip: local headers and data, central directory, end record. `at` overrides where
/// the central record of entry `i` says its local header is.
fn assemble(parts: &[Part], at: &[(usize, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let stored = if p.deflate {
            deflate(&p.data)
        } else {
            p.data.clone()
        };
        let method = p.method.unwrap_or(if p.deflate { 8 } else { 0 });
        let size = p.declared_size.unwrap_or(p.data.len() as u32);
        let offset = at
            .iter()
            .find(|(j, _)| *j == i)
            .map_or(out.len() as u32, |(_, o)| *o);
        out.extend_from_slice(&local_header(p, &stored, method, size));
        out.extend_from_slice(&stored);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&(0x0300u16 | 20).to_le_bytes()); // made by unix
        central.extend_from_slice(&20u16.to_le_bytes());
        central.extend_from_slice(&p.flags.to_le_bytes());
        central.extend_from_slice(&method.to_le_bytes());
        central.extend_from_slice(&[0, 0, 0x21, 0]);
        central.extend_from_slice(&crc32(&p.data).to_le_bytes());
        central.extend_from_slice(&(stored.len() as u32).to_le_bytes());
        central.extend_from_slice(&size.to_le_bytes());
        central.extend_from_slice(&(p.name.len() as u16).to_le_bytes());
        central.extend_from_slice(&[0; 8]); // extra, comment, disk, internal attrs
        central.extend_from_slice(&(p.mode << 16).to_le_bytes());
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(&p.name);
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(parts.len() as u16).to_le_bytes());
    out.extend_from_slice(&(parts.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A signed bundle's parts, to be varied before assembly.
struct Bundle {
    manifest: Manifest,
    payload: Vec<(String, Vec<u8>)>,
}

const ENTITLEMENTS: &[u8] = br#"{"subscription":"test","entitlements":[{"product":"artifactory","valid_from":"2026-01-01T00:00:00Z","valid_until":"2127-01-01T00:00:00Z"}]}
"#;

fn base(name: &str, key: &SecretKey) -> Bundle {
    let payload = vec![(
        "payload/entitlements.json".to_string(),
        ENTITLEMENTS.to_vec(),
    )];
    Bundle {
        manifest: Manifest {
            format: FORMAT_V1.into(),
            kind: Kind::Entitlements,
            bundle_id: format!("fixture-{name}"),
            jpd_id: JPD.into(),
            created: format_time(t(2026, 5, 15)),
            expires: format_time(t(2126, 1, 1)),
            sequence: 11,
            signing_key_id: key.id.to_string(),
            entries: vec![],
        },
        payload,
    }
}

impl Bundle {
    fn entries(&self) -> Vec<ManifestEntry> {
        self.payload
            .iter()
            .map(|(p, d)| ManifestEntry {
                path: p.clone(),
                size: d.len() as u64,
                sha256: hex::encode(Sha256::digest(d)),
            })
            .collect()
    }

    /// manifest.json, SHA256SUMS, SHA256SUMS.minisig bytes for this bundle, signed by `key`.
    fn metadata(&self, key: &SecretKey) -> (Vec<u8>, String, String) {
        let mut m = self.manifest.clone();
        if m.entries.is_empty() {
            m.entries = self.entries();
        }
        let mbytes = serde_json::to_vec_pretty(&m).expect("serializable");
        let mut sums = sums_line(&hex::encode(Sha256::digest(&mbytes)), "manifest.json");
        for e in &m.entries {
            sums.push_str(&sums_line(&e.sha256, &e.path));
        }
        let sig = key
            .sign(sums.as_bytes(), UNTRUSTED_COMMENT, &m.trusted_comment())
            .expect("printable comment");
        (mbytes, sums, sig)
    }

    fn parts(&self, key: &SecretKey) -> Vec<Part> {
        let (m, sums, sig) = self.metadata(key);
        let mut parts: Vec<Part> = self.payload.iter().map(|(p, d)| part(p, d)).collect();
        parts.push(part("manifest.json", &m));
        parts.push(part("SHA256SUMS", sums.as_bytes()));
        parts.push(part("SHA256SUMS.minisig", sig.as_bytes()));
        parts
    }
}

fn find<'a>(parts: &'a mut [Part], name: &str) -> &'a mut Part {
    parts
        .iter_mut()
        .find(|p| p.name == name.as_bytes())
        .expect("part exists")
}

fn replace_line(text: &str, idx: usize, f: impl Fn(&str) -> String) -> String {
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| if i == idx { f(l) } else { l.to_string() })
        .collect();
    lines.join("\n") + "\n"
}

fn hostile(key: &SecretKey, foreign: &SecretKey) -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let good = |n: &str| base(n, key);
    let simple = |n: &str, f: &dyn Fn(&mut Bundle)| {
        let mut b = base(n, key);
        f(&mut b);
        assemble(&b.parts(key), &[])
    };
    let with_parts = |n: &str, f: &dyn Fn(&mut Vec<Part>)| {
        let mut parts = base(n, key).parts(key);
        f(&mut parts);
        assemble(&parts, &[])
    };

    out.push((
        "tampered-payload",
        with_parts("tp", &|p| {
            find(p, "payload/entitlements.json").data[2] = b'X';
        }),
    ));
    out.push((
        "tampered-manifest",
        with_parts("tm", &|p| {
            let m = find(p, "manifest.json");
            m.data = String::from_utf8_lossy(&m.data)
                .replace("\"sequence\": 11", "\"sequence\": 12")
                .into_bytes();
        }),
    ));
    let whole = assemble(&good("truncated").parts(key), &[]);
    out.push(("truncated", whole[..whole.len() / 2].to_vec()));
    out.push(("not-a-zip", b"this is not a bundle\n".to_vec()));
    for (name, path) in [
        ("zip-slip", "payload/../../../tmp/evil"),
        ("absolute-path", "/tmp/evil"),
        ("backslash-path", "payload\\..\\evil"),
        ("drive-letter-path", "C:/evil"),
    ] {
        out.push((
            name,
            with_parts(name, &|p| p.insert(0, part(path, b"evil"))),
        ));
    }
    out.push((
        "duplicate-name",
        with_parts("dup", &|p| {
            p.insert(0, part("payload/entitlements.json", b"{}"));
        }),
    ));
    // Pairs of names a disk that folds names takes for one (bundle-format §1): each bundle is
    // signed and lists both, so only the name rule refuses it.
    for (name, first, second) in [
        (
            "equivalent-names-nfc-nfd",
            "payload/caf\u{e9}.json",
            "payload/cafe\u{301}.json",
        ),
        ("equivalent-names-case", "payload/A.json", "payload/a.json"),
        (
            "equivalent-names-ligature",
            "payload/\u{fb01}le.json",
            "payload/file.json",
        ),
        (
            "equivalent-names-kelvin",
            "payload/\u{212a}.json",
            "payload/k.json",
        ),
        (
            "equivalent-names-sharp-s",
            "payload/stra\u{df}e.json",
            "payload/STRASSE.json",
        ),
    ] {
        out.push((
            name,
            simple(name, &|b| {
                b.payload
                    .push((first.into(), b"{\"first\":true}\n".to_vec()));
                b.payload
                    .push((second.into(), b"{\"second\":true}\n".to_vec()));
            }),
        ));
    }
    out.push((
        "central-local-mismatch",
        with_parts("clm", &|p| {
            find(p, "payload/entitlements.json").local_name =
                Some(b"payload/entitlementz.json".to_vec());
        }),
    ));
    {
        // Entry B's local header lies inside entry A's data.
        let mut b = good("overlap");
        b.payload.push(("payload/b.json".into(), b"{}".to_vec()));
        let mut parts = b.parts(key);
        let inner = local_header(&parts[1], &parts[1].data, 0, 2);
        let a_data_at = local_header(&parts[0], &[], 0, 0).len() as u32;
        parts[0].data = [inner, parts[1].data.clone()].concat();
        out.push(("overlapping-entries", assemble(&parts, &[(1, a_data_at)])));
    }
    out.push((
        "symlink",
        with_parts("symlink", &|p| {
            let mut l = part("payload/link", b"/etc/passwd");
            l.mode = 0o120777;
            p.insert(0, l);
        }),
    ));
    out.push((
        "fifo-special-mode",
        with_parts("fifo", &|p| {
            find(p, "payload/entitlements.json").mode = 0o010644;
        }),
    ));
    out.push((
        "setuid-special-mode",
        with_parts("setuid", &|p| {
            find(p, "payload/entitlements.json").mode = 0o104755;
        }),
    ));
    out.push((
        "encrypted-entry",
        with_parts("enc", &|p| {
            find(p, "payload/entitlements.json").flags = 1;
        }),
    ));
    out.push((
        "unsupported-compression",
        with_parts("bzip", &|p| {
            find(p, "payload/entitlements.json").method = Some(12);
        }),
    ));
    out.push((
        "unlisted-entry",
        with_parts("unlisted", &|p| {
            p.insert(0, part("payload/extra.json", b"{}"));
        }),
    ));
    {
        let mut b = good("missing");
        b.payload.push(("payload/b.json".into(), b"{}".to_vec()));
        let mut parts = b.parts(key);
        parts.retain(|p| p.name != b"payload/b.json");
        out.push(("missing-entry", assemble(&parts, &[])));
    }
    out.push((
        "unsigned",
        with_parts("unsigned", &|p| {
            p.retain(|x| x.name != b"SHA256SUMS.minisig");
        }),
    ));
    out.push((
        "legacy-signature",
        with_parts("legacy", &|p| {
            // The legacy form differs in its algorithm tag ("Ed" instead of "ED").
            let s = find(p, "SHA256SUMS.minisig");
            let text = String::from_utf8_lossy(&s.data).into_owned();
            s.data = replace_line(&text, 1, |l| {
                use base64::Engine;
                let e = base64::engine::general_purpose::STANDARD;
                let mut raw = e.decode(l).expect("our own base64");
                raw[1] = b'd';
                e.encode(raw)
            })
            .into_bytes();
        }),
    ));
    {
        let mut b = good("foreign");
        b.manifest.signing_key_id = foreign.id.to_string();
        out.push(("foreign-key", assemble(&b.parts(foreign), &[])));
    }
    out.push((
        "bad-signature",
        with_parts("badsig", &|p| {
            let s = find(p, "SHA256SUMS");
            s.data = String::from_utf8_lossy(&s.data)
                .replacen('0', "1", 1)
                .into_bytes();
        }),
    ));
    out.push((
        "edited-trusted-comment",
        with_parts("editedtc", &|p| {
            let s = find(p, "SHA256SUMS.minisig");
            s.data = String::from_utf8_lossy(&s.data)
                .replace("sequence=11", "sequence=99")
                .into_bytes();
        }),
    ));
    for (name, comment) in [
        ("trusted-comment-mismatch", "jfconnect-bundle/v1 bundle_id=fixture-tcm kind=entitlements jpd_id=jpd-test-0001 sequence=99"),
        ("malformed-trusted-comment", "timestamp:1700000000 file:SHA256SUMS hashed"),
    ] {
        out.push((name, with_parts("tcm", &|p| {
            let sums = find(p, "SHA256SUMS").data.clone();
            find(p, "SHA256SUMS.minisig").data =
                key.sign(&sums, UNTRUSTED_COMMENT, comment).expect("printable").into_bytes();
        })));
    }
    out.push((
        "signing-key-mismatch",
        simple("skm", &|b| {
            b.manifest.signing_key_id = "0123456789ABCDEF".into();
        }),
    ));
    {
        let b = good("sums-incomplete");
        let (m, sums, _) = b.metadata(key);
        let short = sums.lines().next().unwrap_or_default().to_string() + "\n";
        let mut man: Manifest = serde_json::from_slice(&m).expect("ours");
        man.entries = b.entries();
        let sig = key
            .sign(short.as_bytes(), UNTRUSTED_COMMENT, &man.trusted_comment())
            .expect("ok");
        let parts = vec![
            part("payload/entitlements.json", ENTITLEMENTS),
            part("manifest.json", &m),
            part("SHA256SUMS", short.as_bytes()),
            part("SHA256SUMS.minisig", sig.as_bytes()),
        ];
        out.push(("sums-incomplete", assemble(&parts, &[])));
    }
    out.push((
        "malformed-manifest",
        with_parts("mm", &|p| {
            let bad = b"{\"format\":\"jfconnect-bundle/v1\",\"kind\":7}".to_vec();
            let sums = sums_line(&hex::encode(Sha256::digest(&bad)), "manifest.json");
            let sig = key
                .sign(sums.as_bytes(), UNTRUSTED_COMMENT, "jfconnect-bundle/v1 x")
                .expect("ok");
            find(p, "manifest.json").data = bad;
            find(p, "SHA256SUMS").data = sums.into_bytes();
            find(p, "SHA256SUMS.minisig").data = sig.into_bytes();
        }),
    ));
    out.push((
        "unsupported-format",
        simple("fmt", &|b| b.manifest.format = "jfconnect-bundle/v2".into()),
    ));
    out.push((
        "size-mismatch",
        simple("size", &|b| {
            let mut e = b.entries();
            e[0].size += 1;
            b.manifest.entries = e;
        }),
    ));
    out.push((
        "wrong-kind",
        simple("kind", &|b| b.manifest.kind = Kind::Usage),
    ));
    out.push((
        "wrong-jpd",
        simple("jpd", &|b| b.manifest.jpd_id = "jpd-other-9999".into()),
    ));
    out.push((
        "expired",
        simple("expired", &|b| {
            b.manifest.expires = format_time(t(2026, 5, 20))
        }),
    ));
    out.push((
        "clock-rollback",
        simple("clock", &|b| {
            b.manifest.created = format_time(t(2099, 1, 1));
            b.manifest.sequence = 12;
        }),
    ));
    out.push((
        "rollback-older-sequence",
        simple("older", &|b| b.manifest.sequence = 5),
    ));
    out.push((
        "same-sequence",
        simple("same", &|b| b.manifest.sequence = 10),
    ));
    out.push((
        "replay",
        simple("replay", &|b| {
            b.manifest.bundle_id = "replayed-bundle".into();
            b.manifest.sequence = 12;
        }),
    ));
    out.push((
        "zip-bomb",
        with_parts("bomb", &|p| {
            find(p, "payload/entitlements.json").declared_size = Some(0xF000_0000);
        }),
    ));
    {
        let mut b = good("ratio");
        b.payload = vec![("payload/zeros.bin".into(), vec![0u8; 2 << 20])];
        let mut parts = b.parts(key);
        find(&mut parts, "payload/zeros.bin").deflate = true;
        out.push(("ratio-bomb", assemble(&parts, &[])));
    }
    {
        // Declares 1000 bytes everywhere (signed), inflates to 1 MiB.
        let mut b = good("inflate");
        let small = vec![b'a'; 1000];
        b.payload = vec![("payload/a.bin".into(), small)];
        let mut parts = b.parts(key);
        let p = find(&mut parts, "payload/a.bin");
        p.data = vec![b'a'; 1 << 20];
        p.deflate = true;
        p.declared_size = Some(1000);
        out.push(("inflates-beyond-declared-size", assemble(&parts, &[])));
    }
    out.push((
        "huge-manifest",
        with_parts("huge", &|p| {
            let m = find(p, "manifest.json");
            m.data.resize(33 << 20, b' ');
            m.deflate = true;
        }),
    ));
    {
        // A zip64 end record declaring a billion entries.
        let mut zip = assemble(&good("many").parts(key), &[]);
        let eocd = zip.len() - 22;
        let cd_size = u64::from(u32::from_le_bytes(
            zip[eocd + 12..eocd + 16].try_into().expect("4"),
        ));
        let cd_off = u64::from(u32::from_le_bytes(
            zip[eocd + 16..eocd + 20].try_into().expect("4"),
        ));
        zip.truncate(eocd);
        let z64_at = zip.len() as u64;
        zip.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        zip.extend_from_slice(&44u64.to_le_bytes());
        zip.extend_from_slice(&[45, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        zip.extend_from_slice(&1_000_000_000u64.to_le_bytes());
        zip.extend_from_slice(&1_000_000_000u64.to_le_bytes());
        zip.extend_from_slice(&cd_size.to_le_bytes());
        zip.extend_from_slice(&cd_off.to_le_bytes());
        zip.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        zip.extend_from_slice(&0u32.to_le_bytes());
        zip.extend_from_slice(&z64_at.to_le_bytes());
        zip.extend_from_slice(&1u32.to_le_bytes());
        zip.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        zip.extend_from_slice(&[0; 4]);
        zip.extend_from_slice(&[0xFF; 4]);
        zip.extend_from_slice(&[0xFF; 8]);
        zip.extend_from_slice(&0u16.to_le_bytes());
        out.push(("too-many-entries", zip));
    }
    out
}

fn examples(root: &Path, vendor: &SecretKey, jpd: &SecretKey) {
    let dir = root.join("bundles/examples");
    fs::create_dir_all(&dir).expect("create bundles/examples");
    let spec = |kind, id: &str, seq| BundleSpec {
        kind,
        bundle_id: id.into(),
        jpd_id: JPD.into(),
        created: t(2026, 1, 1),
        expires: t(2126, 1, 1),
        sequence: seq,
    };
    // Payloads in the shapes of docs/bundle-format.md §9: usage files named by their SHA-256,
    // and the registration record every outgoing bundle carries.
    let usage = |n: u32| {
        let bytes = format!(
            "{{\"product\":\"artifactory\",\"timestamp\":\"2026-01-0{n}T00:00:00Z\",\"storage_bytes\":{}}}\n",
            n * 1000
        )
        .into_bytes();
        PayloadEntry {
            path: format!(
                "payload/usage/{}.json",
                jfconnect::protocol::sha256_hex(&bytes)
            ),
            source: PayloadSource::Bytes(bytes),
        }
    };
    let record = jfconnect::transport::payload::RegistrationRecord::new(
        JPD,
        &jfconnect::secret::Secret::new("JFL-EXAMPLE-LICENSE-0001").fingerprint(),
        &jpd.public(),
        t(2026, 1, 1),
    );
    let mut registration = serde_json::to_vec_pretty(&record).expect("registration record");
    registration.push(b'\n');
    let registration_entry = || PayloadEntry {
        path: "payload/registration.json".into(),
        source: PayloadSource::Bytes(registration.clone()),
    };
    let w = |name: &str, spec: BundleSpec, payload: Vec<PayloadEntry>, key: &SecretKey| {
        write_bundle(&dir.join(name), &spec, payload, key).expect("write example");
    };
    w(
        "usage.jfbundle",
        spec(Kind::Usage, "example-usage-1", 1),
        vec![registration_entry(), usage(1), usage(2)],
        jpd,
    );
    w(
        "registration.jfbundle",
        spec(Kind::Registration, "example-registration-1", 1),
        vec![registration_entry()],
        jpd,
    );
    w(
        "entitlements.jfbundle",
        spec(Kind::Entitlements, "example-entitlements-1", 1),
        vec![PayloadEntry {
            path: "payload/entitlements.json".into(),
            source: PayloadSource::Bytes(ENTITLEMENTS.to_vec()),
        }],
        vendor,
    );
}

fn main() {
    let root = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let keys = root.join("fixtures/keys");
    let vendor = load_or_generate(&keys.join("test-vendor")).expect("vendor test key");
    let jpd = load_or_generate(&keys.join("test-jpd")).expect("jpd test key");
    let foreign = load_or_generate(&keys.join("test-foreign")).expect("foreign test key");
    examples(&root, &vendor, &jpd);
    let bad = root.join("fixtures/bundles/bad");
    if bad.exists() {
        fs::remove_dir_all(&bad).expect("clear old fixtures");
    }
    fs::create_dir_all(&bad).expect("create fixtures/bundles/bad");
    let all = hostile(&vendor, &foreign);
    for (name, bytes) in &all {
        fs::write(bad.join(format!("{name}.jfbundle")), bytes).expect("write fixture");
    }
    println!("wrote {} hostile bundles to {}", all.len(), bad.display());
}
