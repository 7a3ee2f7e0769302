//! Entry names that a disk folding names takes for one (bundle-format §1): the writer never
//! writes such a pair, and the names jfconnect derives stay distinct after folding. The
//! reader's refusal is checked on the hostile fixtures (`equivalent-names-*`).

use std::path::Path;

use chrono::{TimeZone, Utc};
use icu_normalizer::{ComposingNormalizer, DecomposingNormalizer};
use jfconnect::bundle::{
    generate_keypair, name_key, write_bundle, BundleError, BundleSpec, Kind, PayloadEntry,
    PayloadSource,
};
use jfconnect::protocol::sha256_hex;
use jfconnect::transport::payload::usage_path;

const PAIRS: &[(&str, &str)] = &[
    ("payload/caf\u{e9}.json", "payload/cafe\u{301}.json"),
    ("payload/A.json", "payload/a.json"),
    ("payload/\u{fb01}le.json", "payload/file.json"),
    ("payload/\u{212a}.json", "payload/k.json"),
    ("payload/stra\u{df}e.json", "payload/STRASSE.json"),
];

fn spec() -> BundleSpec {
    BundleSpec {
        kind: Kind::Usage,
        bundle_id: "names-test".into(),
        jpd_id: "jpd-test-0001".into(),
        created: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        expires: Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        sequence: 1,
    }
}

fn entry(path: &str, bytes: &[u8]) -> PayloadEntry {
    PayloadEntry {
        path: path.into(),
        source: PayloadSource::Bytes(bytes.to_vec()),
    }
}

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn the_writer_refuses_every_pair_the_reader_refuses_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    for (a, b) in PAIRS {
        let out = dir.path().join("out.jfbundle");
        let err = write_bundle(&out, &spec(), [entry(a, b"1"), entry(b, b"2")], &key)
            .expect_err("an equivalent pair was written");
        assert!(
            matches!(&err, BundleError::InvalidSpec(m) if m.contains(a) && m.contains(b)
                && m.contains("Unicode normalisation and case folding")),
            "{a:?} {b:?}: {err}"
        );
        assert_eq!(files_in(dir.path()), 0, "{a:?} {b:?} left a file");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..Default::default()
    })]

    /// Every normalisation form of a name, and its ASCII upper case, has the name's key.
    #[test]
    fn every_form_of_a_name_has_its_key(s in "[a-zA-Z\u{e9}\u{df}\u{fb01}\u{212a}\u{c5}\u{212b}\u{1e9e}\u{301}\u{2460}.\\PC]{1,12}") {
        let key = name_key(&s).into_owned();
        let forms = [
            DecomposingNormalizer::new_nfd().normalize(&s).into_owned(),
            DecomposingNormalizer::new_nfkd().normalize(&s).into_owned(),
            ComposingNormalizer::new_nfc().normalize(&s).into_owned(),
            ComposingNormalizer::new_nfkc().normalize(&s).into_owned(),
            s.to_ascii_uppercase(),
        ];
        for f in forms {
            proptest::prop_assert_eq!(name_key(&f), key.as_str(), "{:?} {:?}", s, f);
        }
    }

    /// Usage payload names (`payload/usage/<sha256>.json`) of distinct files stay distinct
    /// after folding, so an export never writes an equivalent pair.
    #[test]
    fn usage_payload_names_stay_distinct_after_folding(
        a in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        b in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        proptest::prop_assume!(a != b);
        let (pa, pb) = (usage_path(&sha256_hex(&a)), usage_path(&sha256_hex(&b)));
        proptest::prop_assert_ne!(name_key(&pa), name_key(&pb));
    }
}
