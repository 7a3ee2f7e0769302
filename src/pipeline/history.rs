//! What the usage pipeline did, kept for people to read (the console's usage page): usage files
//! acknowledged per day and per product, and the archives written to the JPD.
//!
//! `<data_dir>/usage/history.json` is a state file (temp, fsync, rename) written once per
//! usage run and once per archive done. It is a record, not a ledger: no decision reads it, and
//! a crash between a run's ledger records and this file leaves that run out of the chart (the
//! counters and the ledger stay exact). It stays small whatever the data: [`KEEP_DAYS`] days,
//! [`MAX_PRODUCTS`] products a day (the rest counted as [`OTHER`]) and the last
//! [`KEEP_ARCHIVES`] archives.

use super::{Layout, PipelineError};
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Days of per-product counts kept.
pub(crate) const KEEP_DAYS: i64 = 90;
/// Products kept per day; further ones are added to [`OTHER`].
pub(crate) const MAX_PRODUCTS: usize = 32;
/// Archives kept in the list.
pub(crate) const KEEP_ARCHIVES: usize = 100;
/// The product name under which products past [`MAX_PRODUCTS`] are counted.
pub(crate) const OTHER: &str = "(other products)";

/// One archive written to the JPD and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveRecord {
    /// Path in the repository.
    pub name: String,
    /// The repository.
    pub repo: String,
    /// Usage files in it.
    pub files: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256, as read back from the JPD.
    pub sha256: String,
    /// When its originals were deleted.
    pub done_at: DateTime<Utc>,
}

/// The record on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageHistory {
    /// Usage files acknowledged (by JCS or into a bundle), by the day of their own timestamp
    /// (UTC) and product.
    pub days: BTreeMap<NaiveDate, BTreeMap<String, u64>>,
    /// The newest archives, oldest first.
    pub archives: Vec<ArchiveRecord>,
}

impl UsageHistory {
    /// Counts one acknowledged usage file.
    pub fn count(&mut self, day: NaiveDate, product: &str) {
        self.add(day, product, 1);
    }

    /// Counts `n` acknowledged usage files.
    fn add(&mut self, day: NaiveDate, product: &str, n: u64) {
        let products = self.days.entry(day).or_default();
        let key = if products.contains_key(product) || products.len() < MAX_PRODUCTS {
            product
        } else {
            OTHER
        };
        *products.entry(key.to_string()).or_default() += n;
    }

    /// Adds `other`'s counts into this one.
    pub(crate) fn merge_counts(&mut self, other: &UsageHistory) {
        for (day, products) in &other.days {
            for (product, n) in products {
                self.add(*day, product, *n);
            }
        }
    }

    /// Drops days older than [`KEEP_DAYS`] before `today` and archives past [`KEEP_ARCHIVES`].
    fn trim(&mut self, today: NaiveDate) {
        let oldest = today - chrono::Duration::days(KEEP_DAYS);
        self.days.retain(|d, _| *d >= oldest);
        let extra = self.archives.len().saturating_sub(KEEP_ARCHIVES);
        self.archives.drain(..extra);
    }

    /// The counts of the `days` days ending with `today`, one entry per day, oldest first
    /// (days with nothing are empty maps).
    pub(crate) fn last_days(
        &self,
        today: NaiveDate,
        days: i64,
    ) -> Vec<(NaiveDate, BTreeMap<String, u64>)> {
        (0..days)
            .rev()
            .map(|back| {
                let d = today - chrono::Duration::days(back);
                (d, self.days.get(&d).cloned().unwrap_or_default())
            })
            .collect()
    }
}

fn path(layout: &Layout) -> PathBuf {
    layout.root.join("history.json")
}

/// Reads the record of `config`'s data folder; an absent or unreadable one reads as empty (it
/// is informational).
pub fn load(config: &crate::config::Config) -> UsageHistory {
    crate::state::load(&path(&Layout::new(config)))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// Adds a run's counts (the caller holds the pipeline lock).
pub(crate) fn record_counts(
    layout: &Layout,
    run: &UsageHistory,
    now: DateTime<Utc>,
) -> Result<(), PipelineError> {
    if run.days.is_empty() {
        return Ok(());
    }
    update(layout, now, |h| h.merge_counts(run))
}

/// Adds one archive (the caller holds the pipeline lock).
pub(crate) fn record_archive(layout: &Layout, archive: ArchiveRecord) -> Result<(), PipelineError> {
    let now = archive.done_at;
    update(layout, now, |h| {
        if !h
            .archives
            .iter()
            .any(|a| a.name == archive.name && a.sha256 == archive.sha256)
        {
            h.archives.push(archive);
        }
    })
}

fn update(
    layout: &Layout,
    now: DateTime<Utc>,
    change: impl FnOnce(&mut UsageHistory),
) -> Result<(), PipelineError> {
    let p = path(layout);
    let mut h: UsageHistory = crate::state::load(&p).ok().flatten().unwrap_or_default();
    change(&mut h);
    h.trim(now.date_naive());
    Ok(crate::state::save(&p, &h)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, d).unwrap()
    }

    #[test]
    fn products_past_the_cap_are_counted_together() {
        let mut h = UsageHistory::default();
        for i in 0..MAX_PRODUCTS + 5 {
            h.count(day(1), &format!("p{i}"));
        }
        h.count(day(1), "p0");
        let d = &h.days[&day(1)];
        assert_eq!(d.len(), MAX_PRODUCTS + 1);
        assert_eq!(d["p0"], 2);
        assert_eq!(d[OTHER], 5);
    }

    #[test]
    fn merging_adds_and_old_days_are_dropped() {
        let mut a = UsageHistory::default();
        a.count(day(1), "xray");
        let mut run = UsageHistory::default();
        for _ in 0..3 {
            run.count(day(1), "xray");
        }
        run.count(day(2), "artifactory");
        a.merge_counts(&run);
        assert_eq!(a.days[&day(1)]["xray"], 4);
        assert_eq!(a.days[&day(2)]["artifactory"], 1);
        a.trim(day(2) + chrono::Duration::days(KEEP_DAYS));
        assert!(!a.days.contains_key(&day(1)));
        assert!(a.days.contains_key(&day(2)));
        let last = a.last_days(day(3), 3);
        assert_eq!(
            last.iter().map(|(d, _)| *d).collect::<Vec<_>>(),
            [day(1), day(2), day(3)]
        );
        assert!(last[0].1.is_empty());
    }

    #[test]
    fn an_archive_is_listed_once_and_the_list_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout {
            spool: dir.path().join("spool"),
            quarantine: dir.path().join("q"),
            root: dir.path().to_path_buf(),
        };
        let rec = |i: usize| ArchiveRecord {
            name: format!("a{i}.zip"),
            repo: "r".into(),
            files: 1,
            bytes: 10,
            sha256: "00".repeat(32),
            done_at: chrono::DateTime::UNIX_EPOCH,
        };
        record_archive(&layout, rec(0)).unwrap();
        record_archive(&layout, rec(0)).unwrap();
        for i in 1..KEEP_ARCHIVES + 3 {
            record_archive(&layout, rec(i)).unwrap();
        }
        let h: UsageHistory = crate::state::load(&path(&layout)).unwrap().unwrap();
        assert_eq!(h.archives.len(), KEEP_ARCHIVES);
        assert_eq!(
            h.archives.last().unwrap().name,
            format!("a{}.zip", KEEP_ARCHIVES + 2)
        );
    }
}
