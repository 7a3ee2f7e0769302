//! The pure part of scheduling: when does a job run next, given what its last run did.
//!
//! No clock, no disk, no sockets here: the scheduler feeds in "now" and the outcome, and
//! persists what comes out. That keeps the retry policy in one place and testable in
//! microseconds.
//!
//! Architecture invariant: this module does no I/O.

use super::{JobError, JobName, JobReport};
use crate::remote::ErrorClass;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Exponential backoff with full jitter: the n-th retry waits a uniform random time between
/// `floor` and `min(max, initial * 2^(n-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry.
    pub initial: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

/// No retry waits less than this, so a hard failure never spins.
pub(crate) const BACKOFF_FLOOR: Duration = Duration::from_secs(1);

impl Backoff {
    /// The ceiling of the `attempt`-th consecutive retry (1-based).
    pub(crate) fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
            .max(BACKOFF_FLOOR)
    }

    /// A jittered delay for the `attempt`-th consecutive retry.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt);
        let ms = rng.gen_range(BACKOFF_FLOOR.as_millis()..=ceiling.as_millis());
        Duration::from_millis(ms as u64)
    }
}

/// What is known about one job: persisted in `state/schedule.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSchedule {
    /// When it runs next; `None` with `blocked` means "not until restart or a license change".
    pub next_run: Option<DateTime<Utc>>,
    /// Held back after a *rejected* failure.
    #[serde(default)]
    pub blocked: bool,
    /// Consecutive failures so far.
    #[serde(default)]
    pub attempt: u32,
    /// When it last started.
    pub last_run: Option<DateTime<Utc>>,
    /// When it last succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// What the last success did.
    pub last_summary: Option<String>,
    /// Why the last run failed, if it did.
    pub last_error: Option<JobError>,
    /// How long the last run took, in milliseconds.
    #[serde(default)]
    pub last_duration_ms: Option<u64>,
    /// Runs so far.
    #[serde(default)]
    pub runs: u64,
    /// Failures so far, by class.
    #[serde(default)]
    pub failures: BTreeMap<ErrorClass, u64>,
}

impl JobSchedule {
    #[cfg(test)]
    /// True when the job should run at `now`.
    pub(crate) fn is_due(&self, now: DateTime<Utc>) -> bool {
        !self.blocked && self.next_run.is_none_or(|t| t <= now)
    }

    /// Records a run that started at `started` and ended at `now` with `outcome`, and decides
    /// the next run.
    pub fn record(
        &mut self,
        started: DateTime<Utc>,
        now: DateTime<Utc>,
        interval: Duration,
        outcome: &Result<JobReport, JobError>,
        backoff: Backoff,
        rng: &mut impl Rng,
    ) {
        self.runs += 1;
        self.last_run = Some(started);
        self.last_duration_ms = Some((now - started).num_milliseconds().max(0) as u64);
        match outcome {
            Ok(report) => {
                self.attempt = 0;
                self.blocked = false;
                self.last_success = Some(now);
                self.last_summary = Some(report.summary.clone());
                self.last_error = None;
                self.next_run = Some(add(now, interval));
            }
            Err(e) => {
                self.attempt = self.attempt.saturating_add(1);
                *self.failures.entry(e.class).or_default() += 1;
                self.last_error = Some(e.clone());
                if e.class == ErrorClass::Rejected {
                    self.blocked = true;
                    self.next_run = None;
                } else {
                    self.blocked = false;
                    self.next_run = Some(add(now, backoff.delay(self.attempt, rng)));
                }
            }
        }
    }

    /// Applies a restart: a job held back by a *rejected* failure gets one more try now; any
    /// other next-run time stands, so a restart neither skips nor repeats a run.
    pub(crate) fn on_restart(&mut self, now: DateTime<Utc>) {
        if self.blocked {
            self.unblock(now);
        }
    }

    /// Lifts a *rejected* block (restart, license change) and makes the job due at `now`.
    pub fn unblock(&mut self, now: DateTime<Utc>) {
        self.blocked = false;
        self.next_run = Some(now);
    }
}

fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(3650))
}

/// Every job's schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedules {
    /// By job.
    pub jobs: BTreeMap<JobName, JobSchedule>,
}

impl Schedules {
    /// A job's schedule, created empty (due now) if unknown.
    pub fn job(&mut self, name: JobName) -> &mut JobSchedule {
        self.jobs.entry(name).or_default()
    }

    #[cfg(test)]
    /// [`JobSchedule::on_restart`] for every job.
    pub(crate) fn on_restart(&mut self, now: DateTime<Utc>) {
        for s in self.jobs.values_mut() {
            s.on_restart(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }

    fn err(class: ErrorClass) -> Result<JobReport, JobError> {
        Err(JobError {
            class,
            message: "x".into(),
        })
    }

    #[test]
    fn backoff_ceiling_doubles_and_caps() {
        let b = backoff();
        assert_eq!(b.ceiling(1), Duration::from_secs(30));
        assert_eq!(b.ceiling(2), Duration::from_secs(60));
        assert_eq!(b.ceiling(3), Duration::from_secs(120));
        assert_eq!(b.ceiling(8), Duration::from_secs(3600));
        assert_eq!(b.ceiling(200), Duration::from_secs(3600));
    }

    #[test]
    fn jittered_delay_stays_within_floor_and_ceiling_and_varies() {
        let b = backoff();
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(4, &mut rng)).collect();
        assert!(delays
            .iter()
            .all(|d| *d >= BACKOFF_FLOOR && *d <= Duration::from_secs(240)));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "full jitter spreads retries");
    }

    #[test]
    fn success_waits_one_interval() {
        let mut s = JobSchedule::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(s.is_due(t0()));
        let day = Duration::from_secs(86400);
        s.record(
            t0(),
            t0(),
            day,
            &Ok(JobReport::default()),
            backoff(),
            &mut rng,
        );
        assert_eq!(s.next_run, Some(t0() + chrono::Duration::days(1)));
        assert!(!s.is_due(t0() + chrono::Duration::hours(23)));
        assert!(s.is_due(t0() + chrono::Duration::days(1)));
    }

    #[test]
    fn unavailable_retries_with_growing_backoff_then_resets_on_success() {
        let mut s = JobSchedule::default();
        let mut rng = StdRng::seed_from_u64(2);
        let day = Duration::from_secs(86400);
        for attempt in 1..=5u32 {
            s.record(
                t0(),
                t0(),
                day,
                &err(ErrorClass::Unavailable),
                backoff(),
                &mut rng,
            );
            assert_eq!(s.attempt, attempt);
            let wait = (s.next_run.unwrap() - t0()).to_std().unwrap();
            assert!(
                wait <= backoff().ceiling(attempt),
                "attempt {attempt}: {wait:?}"
            );
            assert!(!s.blocked);
        }
        assert_eq!(s.failures[&ErrorClass::Unavailable], 5);
        s.record(
            t0(),
            t0(),
            day,
            &Ok(JobReport::default()),
            backoff(),
            &mut rng,
        );
        assert_eq!(s.attempt, 0);
        assert!(s.last_error.is_none());
    }

    #[test]
    fn rejected_blocks_until_restart() {
        let mut all = Schedules::default();
        let mut rng = StdRng::seed_from_u64(3);
        let s = all.job(JobName::Entitlements);
        s.record(
            t0(),
            t0(),
            Duration::from_secs(3600),
            &err(ErrorClass::Rejected),
            backoff(),
            &mut rng,
        );
        assert!(s.blocked);
        assert!(!s.is_due(t0() + chrono::Duration::days(365)));
        all.on_restart(t0());
        assert!(all.job(JobName::Entitlements).is_due(t0()));
    }

    #[test]
    fn restart_keeps_pending_next_runs() {
        let mut all = Schedules::default();
        let mut rng = StdRng::seed_from_u64(4);
        all.job(JobName::Usage).record(
            t0(),
            t0(),
            Duration::from_secs(86400),
            &Ok(JobReport::default()),
            backoff(),
            &mut rng,
        );
        let before = all.clone();
        all.on_restart(t0() + chrono::Duration::hours(1));
        assert_eq!(all, before, "a restart must not make a job run early");
    }
}
