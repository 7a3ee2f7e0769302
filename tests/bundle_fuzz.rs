//! Fuzzing the bundle reader with proptest: mutated valid and hostile bundles must be refused
//! (or accepted) without a panic and without any large allocation.
//!
//! `cargo test` runs 256 cases; set `JFCONNECT_FUZZ_CASES=1000000` for a long local run.
//! A counting global allocator records the largest single allocation the reader makes, which
//! must stay under the caps in [`limits`] whatever the input declares.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use jfconnect::bundle::{
    generate_keypair, read_public_key, verify_bytes, write_bundle, BundleSpec, Expectations,
    ImportState, Kind, Limits, PayloadEntry, PayloadSource, TrustedKeys,
};
use jfconnect::clock::ManualClock;
use proptest::prelude::*;

struct Counting;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwards the caller's layout unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: as for `realloc` on `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const MIB: u64 = 1 << 20;

fn limits() -> Limits {
    Limits {
        max_file_bytes: 8 * MIB,
        max_entries: 1000,
        max_directory_bytes: MIB,
        max_entry_bytes: 4 * MIB,
        max_total_bytes: 8 * MIB,
        max_manifest_bytes: MIB,
        max_sums_bytes: MIB,
        ..Limits::default()
    }
}

/// Seeds: a valid bundle signed by a fresh key, plus every hostile fixture.
fn seeds() -> (Vec<Vec<u8>>, TrustedKeys) {
    let dir = tempfile::tempdir().unwrap();
    let key = generate_keypair();
    let created = Utc.with_ymd_and_hms(2026, 5, 15, 0, 0, 0).unwrap();
    let spec = BundleSpec {
        kind: Kind::Entitlements,
        bundle_id: "fuzz".into(),
        jpd_id: "jpd-test-0001".into(),
        created,
        expires: created + Duration::days(365),
        sequence: 20,
    };
    let entries = (0..3).map(|i| PayloadEntry {
        path: format!("payload/e{i}.json"),
        source: PayloadSource::Bytes(format!("{{\"n\":{i}}}").into_bytes()),
    });
    let out = dir.path().join("ok.jfbundle");
    write_bundle(&out, &spec, entries, &key).unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut seeds = vec![std::fs::read(&out).unwrap()];
    let mut fixtures: Vec<_> = std::fs::read_dir(root.join("fixtures/bundles/bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() < 8 * 1024)
        .collect();
    fixtures.sort();
    seeds.extend(fixtures.iter().map(|p| std::fs::read(p).unwrap()));
    let vendor = read_public_key(&root.join("fixtures/keys/test-vendor.pub")).unwrap();
    (seeds, TrustedKeys::new(vec![key.public(), vendor]))
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Word(usize, u32),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u32),
        Just(0xFFFF_FFFF),
        Just(0x7FFF_FFFF),
        Just(0xFFFF),
        Just(0x0403_4b50),
        Just(0x0201_4b50),
        Just(0x0605_4b50),
        any::<u32>(),
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), interesting).prop_map(|(i, w)| Mutation::Word(i, w)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Remove(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Flip(i, b) => {
            if let Some(x) = bytes.get_mut(i % len) {
                *x ^= b;
            }
        }
        Mutation::Word(i, w) => {
            let at = i % len;
            for (k, b) in w.to_le_bytes().iter().enumerate() {
                if let Some(x) = bytes.get_mut(at + k) {
                    *x = *b;
                }
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % len),
        Mutation::Insert(i, b) => {
            let at = (i % len).min(bytes.len());
            bytes.splice(at..at, b.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let at = (i % len).min(bytes.len());
            let end = (at + n).min(bytes.len());
            bytes.drain(at..end);
        }
    }
}

fn cases() -> u32 {
    std::env::var("JFCONNECT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

#[test]
fn mutated_bundles_never_panic_or_allocate_beyond_the_caps() {
    let (seeds, trust) = seeds();
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some("jpd-test-0001".into()),
        clock: Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
        )),
        history: Some(ImportState::default()),
    };
    let limits = limits();
    let started = std::time::Instant::now();
    let config = ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 1..6));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let mut bytes = seeds[seed].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        let before = LARGEST.swap(0, Ordering::Relaxed);
        let _ = verify_bytes(&bytes, &trust, &expect, &limits);
        let largest = LARGEST.swap(before, Ordering::Relaxed);
        prop_assert!(
            largest <= 2 * MIB as usize,
            "one allocation of {largest} bytes"
        );
        Ok(())
    });
    eprintln!(
        "bundle fuzz: {} cases in {:.1?}",
        cases(),
        started.elapsed()
    );
    result.unwrap();
}

#[test]
fn the_unmutated_seed_bundle_is_accepted() {
    let (seeds, trust) = seeds();
    let expect = Expectations {
        kind: Some(Kind::Entitlements),
        jpd_id: Some("jpd-test-0001".into()),
        clock: Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
        )),
        history: Some(ImportState::default()),
    };
    verify_bytes(&seeds[0], &trust, &expect, &limits()).unwrap();
}
