//! Runs the jobs when their persisted schedule says so, one task per job.
//!
//! `state/schedule.json` is the source of truth and is re-read before every change, so a
//! `jfconnect jobs run` in another process and the service agree on what ran last. A lock file
//! per job keeps two runs of one job apart, across processes.

use super::schedule::{Backoff, Schedules};
use super::{JobError, JobName, JobReport};
use crate::clock::SharedClock;
use crate::state::{self, LockFile, StateError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

/// One job the scheduler can run.
#[async_trait::async_trait]
pub trait Job: Send + Sync + 'static {
    /// Which job this is.
    fn name(&self) -> JobName;
    /// How long to wait after a success.
    fn interval(&self) -> Duration;
    /// Does the work once.
    async fn run(&self) -> Result<JobReport, JobError>;
}

/// Why [`Scheduler::run_now_prepared`] failed: in the caller's step, or in the job.
#[derive(Debug)]
pub(crate) enum Prepared<E> {
    /// The step run under the lock before the job refused; the job did not run.
    Prepare(E),
    /// The job failed (or could not start).
    Job(JobError),
}

/// The scheduler: persisted schedules, job locks, and wake-ups for "run now".
pub struct Scheduler {
    path: PathBuf,
    lock_dir: PathBuf,
    guard: tokio::sync::Mutex<()>,
    jobs: HashMap<JobName, Arc<dyn Job>>,
    wake: HashMap<JobName, Arc<Notify>>,
    running: Mutex<HashMap<JobName, bool>>,
    setup_told: std::sync::atomic::AtomicBool,
    clock: SharedClock,
    backoff: Backoff,
}

/// The longest the scheduler sleeps before looking at the clock again, so a clock that jumps
/// (suspend, NTP) is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);

impl Scheduler {
    /// Opens the schedule under `data_dir`. With `restart` true, jobs held back by a rejected
    /// failure get one more try (a restart is what lifts that block).
    pub fn open(
        data_dir: &Path,
        jobs: Vec<Arc<dyn Job>>,
        clock: SharedClock,
        backoff: Backoff,
        restart: bool,
    ) -> Result<Scheduler, StateError> {
        let path = data_dir.join("state").join("schedule.json");
        let s = Scheduler {
            lock_dir: data_dir.join("locks"),
            guard: tokio::sync::Mutex::new(()),
            wake: jobs
                .iter()
                .map(|j| (j.name(), Arc::new(Notify::new())))
                .collect(),
            running: Mutex::new(HashMap::new()),
            setup_told: std::sync::atomic::AtomicBool::new(false),
            jobs: jobs.into_iter().map(|j| (j.name(), j)).collect(),
            path,
            clock,
            backoff,
        };
        if restart {
            let now = s.clock.now();
            s.mutate_at_open(|all| all.on_restart(now))?;
        }
        Ok(s)
    }

    /// Reads the schedules (a damaged file is set aside: every job becomes due, which is safe).
    pub fn snapshot(&self) -> Result<Schedules, StateError> {
        Ok(state::load_or_set_aside(&self.path)?.unwrap_or_default())
    }

    /// Load, change, save, under the cross-process `schedule.lock` (an in-process mutex keeps
    /// this process's changes in order). Waits for another process's change without holding
    /// up an async worker, bounded by [`SCHEDULE_LOCK_WAIT`].
    async fn mutate<T>(&self, change: impl FnOnce(&mut Schedules) -> T) -> Result<T, StateError> {
        let _in_process = self.guard.lock().await;
        let path = self.schedule_lock_path();
        let lock = state::wait_for_lock(&path, SCHEDULE_LOCK_WAIT).await;
        self.change_locked(path, lock, change)
    }

    /// [`Scheduler::mutate`] for [`Scheduler::open`], which runs before anything is served.
    fn mutate_at_open<T>(&self, change: impl FnOnce(&mut Schedules) -> T) -> Result<T, StateError> {
        let path = self.schedule_lock_path();
        let lock = state::wait_for_lock_blocking(&path, SCHEDULE_LOCK_WAIT);
        self.change_locked(path, lock, change)
    }

    fn schedule_lock_path(&self) -> PathBuf {
        self.lock_dir.join("schedule.lock")
    }

    fn change_locked<T>(
        &self,
        path: PathBuf,
        lock: std::io::Result<Option<LockFile>>,
        change: impl FnOnce(&mut Schedules) -> T,
    ) -> Result<T, StateError> {
        let held_by = |path: &Path| {
            let who = LockFile::holder(path).map_or("another process".to_string(), |pid| {
                format!("process {pid}")
            });
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!("{who} held it for over {} s", SCHEDULE_LOCK_WAIT.as_secs()),
            )
        };
        let _lock = match lock {
            Ok(Some(l)) => l,
            Ok(None) => {
                let source = held_by(&path);
                return Err(StateError::Io {
                    action: "lock",
                    path,
                    source,
                });
            }
            Err(source) => {
                return Err(StateError::Io {
                    action: "lock",
                    path,
                    source,
                })
            }
        };
        let mut all = self.snapshot()?;
        let out = change(&mut all);
        state::save(&self.path, &all)?;
        Ok(out)
    }

    /// True while `name` runs in this process.
    pub(crate) fn is_running(&self, name: JobName) -> bool {
        *self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .unwrap_or(&false)
    }

    /// Takes the lock of `name` (waiting up to `wait` for another run to end), or says who
    /// holds it.
    async fn lock(
        &self,
        name: JobName,
        wait: Duration,
    ) -> Result<(Arc<dyn Job>, LockFile), StartError> {
        let job = self
            .jobs
            .get(&name)
            .ok_or(StartError::Unavailable { job: name })?
            .clone();
        let path = self.lock_dir.join(format!("{name}.lock"));
        match state::wait_for_lock(&path, wait).await {
            Ok(Some(l)) => Ok((job, l)),
            Ok(None) => {
                let holder = match LockFile::holder(&path) {
                    _ if self.is_running(name) => Holder::ThisProcess(std::process::id()),
                    Some(pid) if pid == std::process::id() => Holder::ThisProcess(pid),
                    Some(pid) => Holder::Process(pid),
                    None => Holder::Unknown,
                };
                Err(StartError::Running {
                    job: name,
                    holder,
                    path,
                })
            }
            Err(source) => Err(StartError::Lock { path, source }),
        }
    }

    /// Runs `name` now, whatever its schedule, and records the outcome. Fails at once when
    /// another process holds the job's lock.
    pub async fn run_now(&self, name: JobName) -> Result<JobReport, JobError> {
        self.run_now_prepared(name, Duration::ZERO, || async { Ok::<(), JobError>(()) })
            .await
            .map_err(|e| match e {
                Prepared::Prepare(e) | Prepared::Job(e) => e,
            })
    }

    /// Takes `name`'s lock (waiting up to `wait` for another run to end), runs `prepare` under
    /// it, then runs the job and records the outcome, still under the lock. A `prepare` that
    /// fails ends there: the job does not run and nothing is recorded. This is how an import
    /// hands the entitlements job its input without a second writer of the store.
    pub(crate) async fn run_now_prepared<E, F>(
        &self,
        name: JobName,
        wait: Duration,
        prepare: impl FnOnce() -> F,
    ) -> Result<JobReport, Prepared<E>>
    where
        F: std::future::Future<Output = Result<(), E>>,
    {
        let (job, lock) = self
            .lock(name, wait)
            .await
            .map_err(|e| Prepared::Job(JobError::local(e.to_string())))?;
        prepare().await.map_err(Prepared::Prepare)?;
        self.run_locked(name, job, lock)
            .await
            .map_err(Prepared::Job)
    }

    /// Starts `name` in the background if nobody runs it now; answers at once. `Ok` means it
    /// really started (its lock is taken); a running job is refused with its holder.
    pub async fn start(self: &Arc<Self>, name: JobName) -> Result<(), StartError> {
        let (job, lock) = self.lock(name, Duration::ZERO).await?;
        self.set_running(name, true);
        let me = self.clone();
        tokio::spawn(async move {
            let _ = me.run_locked(name, job, lock).await;
        });
        Ok(())
    }

    async fn run_locked(
        &self,
        name: JobName,
        job: Arc<dyn Job>,
        _lock: LockFile,
    ) -> Result<JobReport, JobError> {
        self.set_running(name, true);
        let started = self.clock.now();
        let span = crate::logging::trace_span(name.as_str(), &crate::logging::new_trace_id());
        let outcome = async {
            tracing::debug!(job = %name, "job started");
            let outcome = job.run().await;
            match &outcome {
                Ok(r) => tracing::info!(job = %name, summary = %r.summary, "job succeeded"),
                Err(e) if e.is_setup_pending() => self.log_setup_pending(name, e),
                Err(e) => {
                    tracing::warn!(job = %name, class = %e.class, error = %e.message, "job failed")
                }
            }
            outcome
        }
        .instrument(span)
        .await;
        self.set_running(name, false);
        let now = self.clock.now();
        let interval = job.interval();
        let backoff = self.backoff;
        let recorded = self
            .mutate(|all| {
                all.job(name).record(
                    started,
                    now,
                    interval,
                    &outcome,
                    backoff,
                    &mut rand::thread_rng(),
                )
            })
            .await;
        if let Err(e) = recorded {
            tracing::error!(job = %name, error = %e, "cannot record the job's outcome");
        }
        outcome
    }

    /// The expected state of a first start (no license yet, so nothing registered): one INFO
    /// line saying what is missing and how to set it, then DEBUG; never a WARN.
    fn log_setup_pending(&self, name: JobName, e: &JobError) {
        if self
            .setup_told
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::debug!(job = %name, reason = %e.message, "waiting for a license");
        } else {
            tracing::info!("{}", super::SETUP_PENDING_HINT);
        }
    }

    fn set_running(&self, name: JobName, on: bool) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, on);
    }

    #[cfg(test)]
    /// Runs every job that is due at the clock's "now", in a fixed order; answers what ran.
    pub(crate) async fn run_due(
        &self,
    ) -> Result<Vec<(JobName, Result<JobReport, JobError>)>, StateError> {
        let now = self.clock.now();
        let all = self.snapshot()?;
        let mut names: Vec<JobName> = self.jobs.keys().copied().collect();
        names.sort();
        let mut ran = Vec::new();
        for name in names {
            let due = all.jobs.get(&name).is_none_or(|s| s.is_due(now));
            if due {
                ran.push((name, self.run_now(name).await));
            }
        }
        Ok(ran)
    }

    /// Asks the task of `name` to run it now.
    pub(crate) fn trigger(&self, name: JobName) -> bool {
        match self.wake.get(&name) {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Lifts a rejected block on `name` (license changed) and runs it now.
    pub async fn unblock(&self, name: JobName) -> Result<(), StateError> {
        let now = self.clock.now();
        self.mutate(|all| all.job(name).unblock(now)).await?;
        self.trigger(name);
        Ok(())
    }

    /// The jobs this scheduler runs.
    pub(crate) fn job_names(&self) -> Vec<JobName> {
        let mut v: Vec<JobName> = self.jobs.keys().copied().collect();
        v.sort();
        v
    }

    /// Runs every job on its schedule until `shutdown` turns true. A job that is running when
    /// shutdown comes gets `grace` to finish; the pipeline is crash-safe, so one cut short
    /// resumes from its checkpoint next time.
    pub(crate) async fn run_forever(
        self: Arc<Self>,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for name in self.job_names() {
            let me = self.clone();
            let mut stop = shutdown.clone();
            tasks.spawn(async move { me.job_loop(name, &mut stop).await });
        }
        let mut stop = shutdown.clone();
        let _ = stop.wait_for(|s| *s).await;
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = &mut deadline => {
                    tracing::warn!("jobs still running at shutdown were stopped; they resume from their checkpoint");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    async fn job_loop(&self, name: JobName, stop: &mut watch::Receiver<bool>) {
        let Some(wake) = self.wake.get(&name).cloned() else {
            return;
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let now = self.clock.now();
            let (due, wait) = match self.snapshot() {
                Ok(all) => match all.jobs.get(&name) {
                    None => (true, Duration::ZERO),
                    Some(s) if s.blocked => (false, MAX_SLEEP),
                    Some(s) => match s.next_run {
                        None => (true, Duration::ZERO),
                        Some(t) if t <= now => (true, Duration::ZERO),
                        Some(t) => (
                            false,
                            (t - now).to_std().unwrap_or(MAX_SLEEP).min(MAX_SLEEP),
                        ),
                    },
                },
                Err(e) => {
                    tracing::error!(job = %name, error = %e, "cannot read the schedule");
                    (false, MAX_SLEEP)
                }
            };
            if due {
                self.run_in_loop(name, stop).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => self.run_in_loop(name, stop).await,
                _ = stop.changed() => return,
            }
        }
    }

    /// One run from the job's own loop; when someone else holds the job (a CLI `jobs run`, an
    /// API request), waits a little instead of spinning on the lock.
    async fn run_in_loop(&self, name: JobName, stop: &mut watch::Receiver<bool>) {
        match self.lock(name, Duration::ZERO).await {
            Ok((job, lock)) => {
                let _ = self.run_locked(name, job, lock).await;
            }
            Err(e) => {
                tracing::debug!(job = %name, reason = %e, "not running now");
                tokio::select! {
                    _ = tokio::time::sleep(BUSY_RETRY) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// The longest a change of the schedule waits for another process's change (each holds
/// `schedule.lock` for one load and save).
const SCHEDULE_LOCK_WAIT: Duration = Duration::from_secs(30);

/// How long a job's loop waits when someone else holds the job's lock.
const BUSY_RETRY: Duration = Duration::from_secs(5);

/// Who holds a job's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// This process (its PID).
    ThisProcess(u32),
    /// Another process, by the PID its lock file records.
    Process(u32),
    /// Another process that recorded no PID.
    Unknown,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Holder::ThisProcess(pid) => write!(f, "in this process (PID {pid})"),
            Holder::Process(pid) => write!(f, "in another jfconnect process (PID {pid})"),
            Holder::Unknown => f.write_str("in another jfconnect process"),
        }
    }
}

/// Why a job could not start now.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Someone runs it already.
    #[error("the {job} job is already running {holder} (lock {})", path.display())]
    Running {
        /// The job.
        job: JobName,
        /// Who runs it.
        holder: Holder,
        /// Its lock file.
        path: PathBuf,
    },
    /// This mode has no such job.
    #[error("the {job} job is not available in this mode")]
    Unavailable {
        /// The job.
        job: JobName,
    },
    /// The lock file could not be used.
    #[error("cannot take the lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests;
