//! The grouping rule, as pure functions: which archive each uploaded usage file goes into and
//! under which path. No I/O here, so the rule is tested without disks.
//!
//! **Rule.** One run makes one archive, named
//! `<origin>/<YYYY-MM-DD>/usage-<first 12 hex of the first file's SHA-256>-<n>.zip` (origin is
//! the host name, the date is the run's UTC date, `n` counts from 1). Each file is stored at
//! `<YYYY-MM-DD>/<product>/<file name>`, the date being the UTC date of its `timestamp`; an
//! `index.json` lists every entry's path, size and SHA-256. When adding a file could make the
//! archive larger than `archival.max_archive_bytes` (counted pessimistically: the file stored
//! uncompressed plus its headers and index line), the archive is closed and `n + 1` begins. A
//! single file larger than the limit goes alone into its own archive.
//!
//! **Names.** Product names keep `[A-Za-z0-9._-]` (others become `_`, leading dots are
//! dropped, at most 64 characters, `unknown` when nothing is left). File names are encoded
//! reversibly, so two spool names never give one entry, not even after case folding or Unicode
//! normalisation: `[a-z0-9._-]` stay (a leading `.` does not), every other byte of the UTF-8
//! name becomes `%XX` (upper-case hex). An encoding longer than 255 bytes is cut at 190 bytes
//! and ends in `~` plus the SHA-256 of the whole spool name (64 hex); `~` appears nowhere
//! else. [`EntryNames`] refuses a path twice in one archive before it is written.
//!
//! Architecture invariant: this module does no I/O.

use super::spool::{Identity, UsageHead};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::hash::{BuildHasher, RandomState};

/// Bytes reserved per archive for `index.json`'s headers and the end records.
pub(crate) const ARCHIVE_OVERHEAD: u64 = 1024;

/// One file's place in a plan: a line of a plan's entries file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanEntry {
    /// Name in the spool.
    pub spool_name: String,
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// What the file looked like when planned; checked again before it is deleted.
    pub ident: Identity,
}

/// One archive of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArchiveSpec {
    /// Path in the Artifactory repository.
    pub name: String,
    /// Number of usage files in it.
    pub entries: u64,
    /// Upper bound of its size in bytes.
    pub estimated_bytes: u64,
    /// SHA-256 of its entries file, checked (with `entries`) before the archive is assembled
    /// and before any original is deleted. Absent only in plans of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_sha256: Option<String>,
}

/// A file as the planner needs it.
#[derive(Debug, Clone)]
pub(crate) struct PlanInput<'a> {
    /// Name in the spool.
    pub name: &'a str,
    /// SHA-256 of its bytes.
    pub sha256: &'a str,
    /// Its path in the archive: [`entry_path`] of its head and name, made once per file.
    pub path: &'a str,
    /// Size, mtime, inode.
    pub ident: Identity,
}

/// Keeps `[A-Za-z0-9._-]`, replaces anything else with `_`, drops leading dots, caps at
/// `max` characters.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    cleaned.trim_start_matches('.').chars().take(max).collect()
}

/// The product folder name.
pub(crate) fn product_dir(product: &str) -> String {
    let s = sanitize(product, 64);
    if s.is_empty() {
        "unknown".into()
    } else {
        s
    }
}

/// Longest entry file name (`NAME_MAX` of common file systems, so the archive extracts).
pub(crate) const MAX_ENTRY_NAME: usize = 255;

/// The file name inside the archive: the reversible encoding of the module docs.
pub fn entry_file_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, b) in name.bytes().enumerate() {
        let keep = b.is_ascii_lowercase()
            || b.is_ascii_digit()
            || matches!(b, b'_' | b'-')
            || (b == b'.' && i > 0);
        if keep {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    if out.len() > MAX_ENTRY_NAME {
        let mut cut = 190;
        // Never cut an escape in two.
        while out.as_bytes()[cut - 1] == b'%' || out.as_bytes()[cut - 2] == b'%' {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('~');
        out.push_str(&hex::encode(Sha256::digest(name.as_bytes())));
    }
    out
}

/// `YYYY-MM-DD/<product>/<encoded file name>` of one usage file.
pub(crate) fn entry_path(head: &UsageHead, name: &str) -> String {
    let mut path = day_folder(head.timestamp.date_naive());
    path.push('/');
    path.push_str(&product_dir(&head.product));
    path.push('/');
    path.push_str(&entry_file_name(name));
    path
}

/// `YYYY-MM-DD` of `day`, as chrono's `%Y-%m-%d` writes it; by hand for the years a usage
/// file's RFC 3339 timestamp can hold (chrono's formatter cost 2 % of an archival run).
pub(crate) fn day_folder(day: NaiveDate) -> String {
    use chrono::Datelike;
    let (y, m, d) = (day.year(), day.month(), day.day());
    if (0..=9999).contains(&y) {
        let mut s = String::with_capacity(10);
        let _ = write!(s, "{y:04}-{m:02}-{d:02}");
        s
    } else {
        day.format("%Y-%m-%d").to_string()
    }
}

/// Bits of [`EntryNames`]' filter: 4 MiB, whatever the number of files.
const NAME_FILTER_BITS: usize = 1 << 25;
/// Bits set per path.
const NAME_FILTER_PROBES: u64 = 7;

/// The entry paths of one archive so far, compared after case folding, in a Bloom filter of
/// fixed size ([`NAME_FILTER_BITS`]), so a plan's memory stays flat however many files it
/// holds. It never answers "new" for a path already in; it may answer "twice" for a new path,
/// which only leaves that file for the next plan: the odds are about 6·10⁻⁹ per file at the
/// ~330,000 entries of one archive of 1 KiB files under the default 512 MiB cap, and 8·10⁻⁶ at
/// a million entries.
#[derive(Debug)]
pub(crate) struct EntryNames {
    bits: Vec<u64>,
    keys: RandomState,
    /// The folded path being looked up, kept to spare an allocation per file.
    folded: String,
}

impl Default for EntryNames {
    fn default() -> Self {
        EntryNames {
            bits: vec![0; NAME_FILTER_BITS / 64],
            keys: RandomState::new(),
            folded: String::new(),
        }
    }
}

impl EntryNames {
    /// Records `path`; false when the archive may already hold it.
    pub fn insert(&mut self, path: &str) -> bool {
        let folded = &mut self.folded;
        folded.clear();
        if path.is_ascii() {
            folded.push_str(path);
            folded.make_ascii_lowercase();
        } else {
            folded.push_str(&path.to_lowercase());
        }
        let h1 = self.keys.hash_one(&*folded);
        let h2 = self.keys.hash_one((&*folded, 1u8)) | 1;
        let mut new = false;
        for i in 0..NAME_FILTER_PROBES {
            let bit = (h1.wrapping_add(i.wrapping_mul(h2)) % NAME_FILTER_BITS as u64) as usize;
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            if let Some(w) = self.bits.get_mut(word) {
                new |= *w & mask == 0;
                *w |= mask;
            }
        }
        new
    }
}

/// The repository path of archive `n` (from 1) of a plan made on `day`.
pub(crate) fn archive_name(origin: &str, day: NaiveDate, first_sha256: &str, n: usize) -> String {
    let origin = match sanitize(origin, 64) {
        s if s.is_empty() => "jfconnect".to_string(),
        s => s,
    };
    format!(
        "{origin}/{}/usage-{}-{n}.zip",
        day_folder(day),
        &first_sha256[..12.min(first_sha256.len())]
    )
}

/// Upper bound of the bytes one entry adds to an archive: data stored at worst uncompressed,
/// local and central headers (with a zip64 offset), and its `index.json` line with every
/// character escaped.
pub(crate) fn entry_cost(path: &str, size: u64) -> u64 {
    let p = path.len() as u64;
    size + (30 + p) + (46 + p + 12) + (64 + 60 + 6 * p)
}

/// Places files into archives one at a time, holding only the archive list.
#[derive(Debug, Clone)]
pub(crate) struct Planner {
    origin: String,
    day: NaiveDate,
    max_bytes: u64,
    archives: Vec<ArchiveSpec>,
}

impl Planner {
    /// A planner for a run on `day` from host `origin`, with archives up to `max_bytes`.
    pub fn new(origin: &str, day: NaiveDate, max_bytes: u64) -> Self {
        Planner {
            origin: origin.to_string(),
            day,
            max_bytes,
            archives: Vec::new(),
        }
    }

    /// Places one file; answers the index of its archive and its plan entry.
    pub fn place(&mut self, f: &PlanInput<'_>) -> (usize, PlanEntry) {
        let cost = entry_cost(f.path, f.ident.size);
        let fits = self
            .archives
            .last()
            .is_some_and(|a| a.estimated_bytes + cost <= self.max_bytes);
        if !fits {
            let n = self.archives.len() + 1;
            self.archives.push(ArchiveSpec {
                name: archive_name(&self.origin, self.day, f.sha256, n),
                entries: 0,
                estimated_bytes: ARCHIVE_OVERHEAD,
                entries_sha256: None,
            });
        }
        let k = self.archives.len() - 1;
        let a = &mut self.archives[k];
        a.entries += 1;
        a.estimated_bytes += cost;
        let entry = PlanEntry {
            spool_name: f.name.to_string(),
            path: f.path.to_string(),
            size: f.ident.size,
            sha256: f.sha256.to_string(),
            ident: f.ident,
        };
        (k, entry)
    }

    /// The finished list of archives.
    pub(crate) fn into_archives(self) -> Vec<ArchiveSpec> {
        self.archives
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn the_name_filter_finds_every_repeat_in_fixed_memory() {
        let mut names = EntryNames::default();
        let words = names.bits.len();
        let n = 200_000;
        let new = (0..n)
            .filter(|i| names.insert(&format!("2024-03-01/xray/usage-{i:08}.json")))
            .count();
        // A false "twice" has odds of about 10^-12 per path at this size.
        assert!(
            new >= n - 1,
            "only {new} of {n} distinct paths were taken as new"
        );
        assert!((0..n).all(|i| !names.insert(&format!("2024-03-01/xray/usage-{i:08}.json"))));
        assert!(
            !names.insert("2024-03-01/XRAY/USAGE-00000007.JSON"),
            "case folding"
        );
        assert!(names.insert("2024-03-02/xray/usage-00000007.json"));
        assert_eq!(names.bits.len(), words, "the filter never grows");
    }

    fn head(product: &str, ts: &str) -> UsageHead {
        UsageHead {
            product: product.into(),
            timestamp: chrono::DateTime::parse_from_rfc3339(ts)
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    fn ident(size: u64) -> Identity {
        Identity {
            size,
            mtime_ns: 0,
            ino: 1,
            dev: 1,
            ctime_ns: 0,
        }
    }

    fn day() -> NaiveDate {
        Utc.with_ymd_and_hms(2024, 5, 6, 0, 0, 0)
            .unwrap()
            .date_naive()
    }

    #[test]
    fn the_day_folder_is_what_chrono_writes() {
        for (y, m, d) in [
            (2024, 3, 2),
            (1, 1, 1),
            (0, 12, 31),
            (9999, 12, 31),
            (10_000, 1, 1),
            (-1, 6, 15),
            (999, 10, 9),
        ] {
            let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            assert_eq!(day_folder(day), day.format("%Y-%m-%d").to_string());
        }
    }

    #[test]
    fn entries_are_filed_by_utc_date_of_their_timestamp_and_product() {
        let sha = "0123456789abcdef".repeat(4);
        let h = head("xray", "2024-03-01T23:30:00-02:00");
        let _ = sha;
        assert_eq!(entry_path(&h, "u1.json"), "2024-03-02/xray/u1.json");
    }

    #[test]
    fn hostile_product_and_file_names_cannot_escape_their_folder() {
        let sha = "abcdef0123456789".repeat(4);
        let h = head("../../etc", "2024-01-01T00:00:00Z");
        let _ = sha;
        let p = entry_path(&h, "a b\\c.json");
        assert_eq!(p, "2024-01-01/_.._etc/a%20b%5Cc.json");
        assert_eq!(product_dir(".."), "unknown");
        assert_eq!(product_dir("Jfrog Xray/2"), "Jfrog_Xray_2");
        assert_eq!(entry_file_name("ok-1.json"), "ok-1.json");
        assert_eq!(entry_file_name("../x"), "%2E.%2Fx");
        assert_eq!(entry_file_name("Caf\u{e9}"), "%43af%C3%A9");
        let long = entry_file_name(&"\u{e9}".repeat(200));
        assert_eq!(long.len(), 189 + 1 + 64, "{long}");
        assert!(!long[..189].contains('~'));
    }

    #[test]
    fn archive_names_are_deterministic() {
        let sha = "fedcba9876543210".repeat(4);
        assert_eq!(
            archive_name("host-1", day(), &sha, 1),
            "host-1/2024-05-06/usage-fedcba987654-1.zip"
        );
        assert_eq!(
            archive_name("", day(), &sha, 2),
            "jfconnect/2024-05-06/usage-fedcba987654-2.zip"
        );
    }

    #[test]
    fn one_run_makes_one_archive_when_everything_fits() {
        let mut p = Planner::new("h", day(), 1 << 20);
        let h = head("a", "2024-01-01T00:00:00Z");
        for i in 0..100 {
            let sha = format!("{i:064x}");
            let name = format!("f{i}");
            let (k, e) = p.place(&PlanInput {
                name: &name,
                sha256: &sha,
                path: &entry_path(&h, &name),
                ident: ident(1000),
            });
            assert_eq!(k, 0);
            assert_eq!(e.path, format!("2024-01-01/a/f{i}"));
        }
        let a = p.into_archives();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].entries, 100);
        assert!(a[0]
            .name
            .ends_with(&format!("usage-{}-1.zip", "0".repeat(12))));
    }

    #[test]
    fn archives_split_before_they_would_exceed_the_limit() {
        let max = 10_000;
        let mut p = Planner::new("h", day(), max);
        let h = head("a", "2024-01-01T00:00:00Z");
        let mut per = [0u64; 10];
        for i in 0..20 {
            let sha = format!("{:064x}", i + 1);
            let name = format!("f{i}");
            let (k, _) = p.place(&PlanInput {
                name: &name,
                sha256: &sha,
                path: &entry_path(&h, &name),
                ident: ident(2000),
            });
            per[k] += 1;
        }
        let a = p.into_archives();
        assert!(a.len() > 1);
        for spec in &a {
            assert!(spec.estimated_bytes <= max, "{spec:?}");
        }
        assert_eq!(a.iter().map(|s| s.entries).sum::<u64>(), 20);
        assert!(a[1].name.ends_with("-2.zip"));
    }

    #[test]
    fn a_file_larger_than_the_limit_goes_alone() {
        let mut p = Planner::new("h", day(), 5000);
        let h = head("a", "2024-01-01T00:00:00Z");
        let sha = "1".repeat(64);
        let (s, b) = (entry_path(&h, "s"), entry_path(&h, "b"));
        let small = PlanInput {
            name: "s",
            sha256: &sha,
            path: &s,
            ident: ident(10),
        };
        let big = PlanInput {
            name: "b",
            sha256: &sha,
            path: &b,
            ident: ident(50_000),
        };
        assert_eq!(p.place(&small).0, 0);
        assert_eq!(p.place(&big).0, 1);
        assert_eq!(p.place(&small).0, 2);
    }
}
