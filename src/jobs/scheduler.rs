//! Runs the jobs when their persisted schedule says so, one task per job.
//!
//! The schedules live in the state store (`state::StateStore`) and are re-read before every
//! decision and changed in one step each: for a single node that is `state/schedule.json` under
//! `locks/schedule.lock`, so a `jfconnect jobs run` in another process and the service agree on
//! what ran last; in database mode a leased job's schedule is the JPD's (one document for all
//! nodes, written only by the leaseholder with its epoch) and every other job's is the node's.
//! A lock file per job keeps two runs of one job apart, across processes.

use super::schedule::{Backoff, JobSchedule, Schedules};
use super::{JobError, JobName, JobReport};
use crate::clock::SharedClock;
use crate::state::{self, Fence, LockFile, StateError, StateStore};
use std::collections::{BTreeSet, HashMap};
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

/// Database mode: the jobs one node per JPD runs, under a lease. Such a job's schedule is the
/// JPD's; this node runs it, and writes its schedule, only while it holds the lease.
pub(crate) trait JobLeases: Send + Sync {
    /// True when `job` runs under a lease.
    fn leased(&self, job: JobName) -> bool;
    /// `job`'s lease as this node holds it (`None` inside: not held), changing when it is
    /// taken or lost; `None` while this process takes no part in the leases.
    fn watch(&self, job: JobName) -> Option<watch::Receiver<Option<Fence>>>;
    /// Gives the lease up at once after the database refused a write with it.
    fn step_down(&self, job: JobName);
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
    store: Arc<dyn StateStore>,
    leases: Option<Arc<dyn JobLeases>>,
    lock_dir: PathBuf,
    guard: tokio::sync::Mutex<()>,
    jobs: HashMap<JobName, Arc<dyn Job>>,
    wake: HashMap<JobName, Arc<Notify>>,
    running: Mutex<HashMap<JobName, bool>>,
    setup_told: std::sync::atomic::AtomicBool,
    /// Jobs whose rejected block a restart still has to lift (a leased one once this node
    /// holds its lease).
    restart_pending: Mutex<BTreeSet<JobName>>,
    clock: SharedClock,
    backoff: Backoff,
}

/// The longest the scheduler sleeps before looking at the clock again, so a clock that jumps
/// (suspend, NTP) is noticed within a minute.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long a job's loop waits after its schedule could not be read (the database away).
const READ_RETRY: Duration = Duration::from_secs(5);

/// What a job's loop may do now.
enum Turn {
    /// Run it when due: a job without a lease, or a leased one this node holds (`Some`).
    Mine(Option<Fence>, Option<watch::Receiver<Option<Fence>>>),
    /// Another node holds the lease (or none yet): wait for it to change hands.
    Elsewhere(Option<watch::Receiver<Option<Fence>>>),
}

impl Scheduler {
    /// Opens the schedule under `data_dir` (a single node's `state/schedule.json`). With
    /// `restart` true, jobs held back by a rejected failure get one more try (a restart is what
    /// lifts that block), at once.
    pub fn open(
        data_dir: &Path,
        jobs: Vec<Arc<dyn Job>>,
        clock: SharedClock,
        backoff: Backoff,
        restart: bool,
    ) -> Result<Scheduler, StateError> {
        let store = crate::state::FileStore::new(data_dir);
        if restart {
            let now = clock.now();
            let names: Vec<&str> = jobs.iter().map(|j| j.name().as_str()).collect();
            store.update_schedules_blocking(&names, |stored| {
                let mut s = stored.map_or_else(JobSchedule::default, |doc| {
                    serde_json::from_value(doc).unwrap_or_default()
                });
                s.on_restart(now);
                serde_json::to_value(&s).unwrap_or_default()
            })?;
        }
        Ok(Scheduler::open_on(
            Arc::new(store),
            None,
            data_dir,
            jobs,
            clock,
            backoff,
            false,
        ))
    }

    /// [`Scheduler::open`] on `store`, with `leases` in database mode. Reads nothing yet: a
    /// restart's lifting of blocks happens before the first run or look at the schedules.
    pub(crate) fn open_on(
        store: Arc<dyn StateStore>,
        leases: Option<Arc<dyn JobLeases>>,
        data_dir: &Path,
        jobs: Vec<Arc<dyn Job>>,
        clock: SharedClock,
        backoff: Backoff,
        restart: bool,
    ) -> Scheduler {
        Scheduler {
            store,
            leases,
            lock_dir: data_dir.join("locks"),
            guard: tokio::sync::Mutex::new(()),
            wake: jobs
                .iter()
                .map(|j| (j.name(), Arc::new(Notify::new())))
                .collect(),
            running: Mutex::new(HashMap::new()),
            setup_told: std::sync::atomic::AtomicBool::new(false),
            restart_pending: Mutex::new(if restart {
                jobs.iter().map(|j| j.name()).collect()
            } else {
                BTreeSet::new()
            }),
            jobs: jobs.into_iter().map(|j| (j.name(), j)).collect(),
            clock,
            backoff,
        }
    }

    /// True when `job` runs under a lease (database mode).
    fn leased(&self, job: JobName) -> bool {
        self.leases.as_ref().is_some_and(|l| l.leased(job))
    }

    /// The lease `job` is run and recorded under: `Ok(None)` for a job without a lease,
    /// `Err` when this node does not hold it.
    fn fence(&self, job: JobName) -> Result<Option<Fence>, ()> {
        match self.turn(job) {
            Turn::Mine(fence, _) => Ok(fence),
            Turn::Elsewhere(_) => Err(()),
        }
    }

    fn turn(&self, job: JobName) -> Turn {
        let Some(leases) = self.leases.as_ref().filter(|l| l.leased(job)) else {
            return Turn::Mine(None, None);
        };
        let Some(mut rx) = leases.watch(job) else {
            return Turn::Elsewhere(None);
        };
        let held = rx.borrow_and_update().clone();
        match held {
            Some(fence) => Turn::Mine(Some(fence), Some(rx)),
            None => Turn::Elsewhere(Some(rx)),
        }
    }

    /// Reads the schedules this node runs by: a leased job's is the JPD's, every other job's
    /// this node's. A damaged document reads as empty (the job becomes due, which is safe).
    pub async fn snapshot(&self) -> Result<Schedules, StateError> {
        self.lift_after_restart().await;
        let docs = self.store.schedules().await?;
        let mut all = Schedules::default();
        for name in JobName::ALL {
            let owner = if self.leased(name) {
                &docs.jpd
            } else {
                &docs.node
            };
            if let Some(doc) = owner.get(name.as_str()) {
                all.jobs.insert(name, parse_schedule(name, doc.clone()));
            }
        }
        Ok(all)
    }

    /// A restart lifts rejected blocks: once per job, before its first run or the first look
    /// at the schedules, a leased one once this node holds it.
    async fn lift_after_restart(&self) {
        let pending: Vec<JobName> = self
            .restart_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect();
        for name in pending {
            let Ok(fence) = self.fence(name) else {
                continue;
            };
            let now = self.clock.now();
            let lifted = self
                .mutate(name, fence.as_ref(), |s| s.on_restart(now))
                .await;
            if lifted.is_ok() {
                self.restart_pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&name);
            }
        }
    }

    /// Changes `name`'s schedule in one step of the store (this process's changes in order);
    /// a leased job's with its `fence`.
    async fn mutate<T: Send>(
        &self,
        name: JobName,
        fence: Option<&Fence>,
        change: impl FnOnce(&mut JobSchedule) -> T + Send,
    ) -> Result<T, StateError> {
        let _in_process = self.guard.lock().await;
        let mut out = None;
        let slot = &mut out;
        self.store
            .update_schedule(
                name.as_str(),
                fence,
                Box::new(move |stored| {
                    let mut s =
                        stored.map_or_else(JobSchedule::default, |doc| parse_schedule(name, doc));
                    *slot = Some(change(&mut s));
                    serde_json::to_value(&s).unwrap_or_default()
                }),
            )
            .await?;
        out.ok_or_else(|| StateError::Shared {
            reason: format!("the store did not apply the change of the {name} schedule"),
            unavailable: false,
        })
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
        let Ok(fence) = self.fence(name) else {
            return Ok(JobReport {
                summary: format!(
                    "another node holds the {name} lease and runs it; this node serves its results"
                ),
            });
        };
        // A restart's lifting applies to what was stored before this run, never after it.
        self.lift_after_restart().await;
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
            .mutate(name, fence.as_ref(), |s| {
                s.record(
                    started,
                    now,
                    interval,
                    &outcome,
                    backoff,
                    &mut rand::thread_rng(),
                )
            })
            .await;
        match recorded {
            Ok(()) => {}
            Err(StateError::Fenced(reason)) => {
                tracing::warn!(job = %name, error = %reason, "stepping down: another node took the lease while this one ran");
                if let Some(l) = &self.leases {
                    l.step_down(name);
                }
            }
            Err(e) => tracing::error!(job = %name, error = %e, "cannot record the job's outcome"),
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
        let all = self.snapshot().await?;
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

    /// Lifts a rejected block on `name` (license changed) and runs it now. A leased job this
    /// node does not hold is left to its leaseholder (whose license changed too).
    pub async fn unblock(&self, name: JobName) -> Result<(), StateError> {
        let Ok(fence) = self.fence(name) else {
            return Ok(());
        };
        let now = self.clock.now();
        self.mutate(name, fence.as_ref(), |s| s.unblock(now))
            .await?;
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
        let mut unreadable = false;
        loop {
            if *stop.borrow() {
                return;
            }
            let lease = match self.turn(name) {
                Turn::Mine(_, lease) => lease,
                Turn::Elsewhere(lease) => {
                    // Another node runs it. A wake-up meanwhile is spent here, so it cannot
                    // make this node run the job at once when it takes the lease later: then
                    // the JPD's schedule alone decides. One that comes as this node takes the
                    // lease (an import waiting for a leaseholder) runs it.
                    let lease_changed = async {
                        let changed = match lease {
                            Some(mut l) => l.changed().await.is_ok(),
                            None => false,
                        };
                        // Not joined yet, or the keeper stopped (shutting down).
                        if !changed {
                            tokio::time::sleep(READ_RETRY).await;
                        }
                    };
                    tokio::select! {
                        _ = lease_changed => {}
                        _ = tokio::time::sleep(MAX_SLEEP) => {}
                        _ = wake.notified() => {
                            if matches!(self.turn(name), Turn::Mine(..)) {
                                self.run_in_loop(name, stop).await;
                            }
                        }
                        _ = stop.changed() => return,
                    }
                    continue;
                }
            };
            let now = self.clock.now();
            let (due, wait) = match self.snapshot().await {
                Ok(all) => {
                    unreadable = false;
                    match all.jobs.get(&name) {
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
                    }
                }
                Err(e) => {
                    if !unreadable {
                        tracing::error!(job = %name, error = %e, "cannot read the schedule; trying again");
                    }
                    unreadable = true;
                    (false, READ_RETRY)
                }
            };
            if due {
                self.run_in_loop(name, stop).await;
                continue;
            }
            let lease_lost = async {
                let changed = match lease {
                    Some(mut l) => l.changed().await.is_ok(),
                    None => false,
                };
                if !changed {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = wake.notified() => self.run_in_loop(name, stop).await,
                _ = lease_lost => {}
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

/// A stored schedule document as the scheduler reads it; a damaged one reads as empty (the job
/// becomes due, which is safe), with a warning.
fn parse_schedule(name: JobName, doc: serde_json::Value) -> JobSchedule {
    serde_json::from_value(doc).unwrap_or_else(|e| {
        tracing::warn!(job = %name, error = %e, "the job's stored schedule is damaged; the job is due now");
        JobSchedule::default()
    })
}

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
