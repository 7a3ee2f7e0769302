use super::*;
use crate::clock::ManualClock;
use crate::remote::ErrorClass;
use std::sync::atomic::{AtomicU32, Ordering};

struct CountingJob {
    name: JobName,
    runs: AtomicU32,
    fail_with: Mutex<Vec<ErrorClass>>,
}

#[async_trait::async_trait]
impl Job for CountingJob {
    fn name(&self) -> JobName {
        self.name
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(86400)
    }
    async fn run(&self) -> Result<JobReport, JobError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match self.fail_with.lock().unwrap().pop() {
            Some(class) => Err(JobError {
                class,
                message: "scripted".into(),
            }),
            None => Ok(JobReport {
                summary: "ok".into(),
            }),
        }
    }
}

fn job(name: JobName, failures: Vec<ErrorClass>) -> Arc<CountingJob> {
    Arc::new(CountingJob {
        name,
        runs: AtomicU32::new(0),
        fail_with: Mutex::new(failures),
    })
}

fn backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(30),
        max: Duration::from_secs(3600),
    }
}

/// Opens the scheduler over `dir` with the one job `j`, as a (re)start of the service does.
fn restart(dir: &tempfile::TempDir, j: &Arc<CountingJob>, clock: &ManualClock) -> Scheduler {
    let jobs: Vec<Arc<dyn Job>> = vec![j.clone()];
    Scheduler::open(dir.path(), jobs, Arc::new(clock.clone()), backoff(), true).unwrap()
}

fn start() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
        .unwrap()
        .into()
}

#[tokio::test]
async fn a_week_of_daily_schedule_runs_seven_times() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Usage, vec![]);
    let s = restart(&dir, &j, &clock);
    for _ in 0..(7 * 24) {
        s.run_due().await.unwrap();
        clock.advance(Duration::from_secs(3600));
    }
    assert_eq!(j.runs.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn restart_neither_skips_nor_repeats_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Usage, vec![]);
    {
        let s = restart(&dir, &j, &clock);
        s.run_due().await.unwrap();
    }
    assert_eq!(j.runs.load(Ordering::SeqCst), 1);
    clock.advance(Duration::from_secs(3600));
    // Restart an hour later: not due yet.
    let s = restart(&dir, &j, &clock);
    s.run_due().await.unwrap();
    assert_eq!(j.runs.load(Ordering::SeqCst), 1, "no repeat after restart");
    // Restart after the service was down for 30 hours: the missed run happens once.
    clock.advance(Duration::from_secs(30 * 3600));
    let s = restart(&dir, &j, &clock);
    s.run_due().await.unwrap();
    s.run_due().await.unwrap();
    assert_eq!(
        j.runs.load(Ordering::SeqCst),
        2,
        "the missed run is not skipped, and runs once"
    );
}

#[tokio::test]
async fn unavailable_failure_is_retried_with_backoff_not_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Entitlements, vec![ErrorClass::Unavailable]);
    let s = restart(&dir, &j, &clock);
    s.run_due().await.unwrap();
    s.run_due().await.unwrap();
    assert_eq!(j.runs.load(Ordering::SeqCst), 1, "no immediate retry");
    clock.advance(Duration::from_secs(31));
    s.run_due().await.unwrap();
    assert_eq!(
        j.runs.load(Ordering::SeqCst),
        2,
        "retried within the first backoff ceiling"
    );
    let snap = s.snapshot().await.unwrap();
    assert_eq!(snap.jobs[&JobName::Entitlements].attempt, 0);
    assert_eq!(
        snap.jobs[&JobName::Entitlements].failures[&ErrorClass::Unavailable],
        1
    );
}

#[tokio::test]
async fn rejected_failure_waits_for_unblock() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Entitlements, vec![ErrorClass::Rejected]);
    let s = restart(&dir, &j, &clock);
    s.run_due().await.unwrap();
    for _ in 0..48 {
        clock.advance(Duration::from_secs(3600));
        s.run_due().await.unwrap();
    }
    assert_eq!(
        j.runs.load(Ordering::SeqCst),
        1,
        "no retry for two days after a 400"
    );
    s.unblock(JobName::Entitlements).await.unwrap();
    s.run_due().await.unwrap();
    assert_eq!(j.runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn two_runs_of_one_job_are_kept_apart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Usage, vec![]);
    let s = restart(&dir, &j, &clock);
    let lock = dir.path().join("locks").join("usage.lock");
    let _held = crate::state::LockFile::try_acquire(&lock).unwrap().unwrap();
    // As another process would have recorded itself.
    std::fs::write(&lock, "4242").unwrap();
    let e = s.run_now(JobName::Usage).await.unwrap_err();
    assert!(
        e.message.contains("another jfconnect process (PID 4242)"),
        "{}",
        e.message
    );
    assert_eq!(j.runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn damaged_schedule_is_set_aside_and_jobs_become_due() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/schedule.json"),
        b"{\"format\":1,\"sha",
    )
    .unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Usage, vec![]);
    let s = restart(&dir, &j, &clock);
    s.run_due().await.unwrap();
    assert_eq!(j.runs.load(Ordering::SeqCst), 1);
    assert!(dir.path().join("state/schedule.corrupt").exists());
}

/// While another process holds `schedule.lock`, recording a change waits for it without
/// holding up the runtime: a current-thread runtime keeps serving a 10 ms timer meanwhile.
#[test]
fn waiting_for_the_schedule_lock_does_not_block_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Entitlements, vec![]);
    let s = restart(&dir, &j, &clock);
    let held = crate::state::LockFile::try_acquire(&dir.path().join("locks/schedule.lock"))
        .unwrap()
        .unwrap();
    // The other holder lets go after 300 ms, from its own thread.
    let other = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let ticks = Arc::new(AtomicU32::new(0));
    let counted = ticks.clone();
    rt.block_on(async move {
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::task::yield_now().await;
        s.unblock(JobName::Entitlements).await.unwrap();
        ticker.abort();
    });
    other.join().unwrap();
    let n = ticks.load(Ordering::SeqCst);
    assert!(n >= 10, "the timer ticked {n} times in 300 ms of waiting");
}

#[tokio::test]
async fn a_restart_lifts_a_block_stored_before_it_never_one_recorded_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(start());
    let j = job(JobName::Entitlements, vec![ErrorClass::Rejected]);
    let s = restart(&dir, &j, &clock);
    s.run_now(JobName::Entitlements).await.unwrap_err();
    let blocked = |all: Schedules| all.jobs[&JobName::Entitlements].blocked;
    assert!(
        blocked(s.snapshot().await.unwrap()),
        "the 400 after start holds"
    );
    let s = restart(&dir, &j, &clock);
    assert!(!blocked(s.snapshot().await.unwrap()), "a restart lifts it");
}
