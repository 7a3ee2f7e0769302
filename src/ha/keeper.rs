//! Keeps one job's lease: tries to take it, renews it while held, and steps down when it is
//! lost, when it could not be renewed before its TTL ran out (local deadline, measured from
//! before the renewal was sent, so never later than the database's), or when a fenced write was
//! refused. Whoever runs the job asks [`LeaseHandle::current`] first and passes the fence with
//! every write; the database has the last word either way.

use super::db::Db;
use super::lease::{self, Fence, LeaseTiming};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{watch, Notify};
use tokio::time::Sleep;

/// The handle of one job's lease keeper.
pub struct LeaseHandle {
    job: String,
    current: watch::Receiver<Option<Fence>>,
    step_down: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl LeaseHandle {
    /// The job.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The lease this node holds now, if any.
    pub fn current(&self) -> Option<Fence> {
        self.current.borrow().clone()
    }

    /// A receiver that changes whenever the lease is taken or lost.
    pub fn subscribe(&self) -> watch::Receiver<Option<Fence>> {
        self.current.clone()
    }

    /// Forgets the lease at once after the database refused a write with it (the caller logged
    /// why); the keeper tries to take it again only once it is free.
    pub(crate) fn step_down(&self) {
        self.step_down.notify_one();
    }

    /// Stops keeping the lease and releases it, so another node need not wait for the TTL.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }

    /// Stops without releasing (as a crash would); for tests of takeover.
    pub fn abandon(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

/// Starts keeping `job`'s lease for `node`.
pub fn keep(db: Db, job: &str, node: &str, timing: LeaseTiming) -> LeaseHandle {
    let (tx, rx) = watch::channel(None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let step_down = Arc::new(Notify::new());
    let task = tokio::spawn(run(
        db,
        job.to_string(),
        node.to_string(),
        timing,
        tx,
        stop_rx,
        step_down.clone(),
    ));
    LeaseHandle {
        job: job.to_string(),
        current: rx,
        step_down,
        stop: stop_tx,
        task: std::sync::Mutex::new(Some(task)),
    }
}

async fn run(
    db: Db,
    job: String,
    node: String,
    timing: LeaseTiming,
    tx: watch::Sender<Option<Fence>>,
    mut stop: watch::Receiver<bool>,
    step_down: Arc<Notify>,
) {
    let mut held: Option<Fence> = None;
    let mut deadline: Option<Pin<Box<Sleep>>> = None;
    let mut last_error: Option<String> = None;
    // The local deadline ends a margin before the database's expiry.
    let local_ttl = timing.ttl.saturating_sub(timing.renew_every / 2);
    loop {
        if *stop.borrow() {
            break;
        }
        let candidate = Box::pin(tokio::time::sleep(local_ttl));
        match lease::acquire_or_renew(&db, &job, &node, held.as_ref().map(|f| f.epoch), timing.ttl)
            .await
        {
            Ok(Some(fence)) => {
                if held.as_ref().map(|f| f.epoch) != Some(fence.epoch) {
                    tracing::info!(job = %job, epoch = fence.epoch, "took the lease; this node runs the job");
                }
                last_error = None;
                held = Some(fence);
                deadline = Some(candidate);
                tx.send_if_modified(|c| set(c, held.clone()));
            }
            Ok(None) => {
                if let Some(old) = held.take() {
                    tracing::warn!(job = %job, epoch = old.epoch, "lost the lease to another node; stepping down");
                }
                deadline = None;
                last_error = None;
                tx.send_if_modified(|c| set(c, None));
            }
            Err(e) => {
                let reason = e.to_string();
                if last_error.as_deref() != Some(&reason) {
                    tracing::warn!(job = %job, error = %reason, "cannot take or renew the lease; retrying");
                    last_error = Some(reason);
                }
            }
        }
        let expiry = async {
            match deadline.as_mut() {
                Some(d) => d.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(timing.renew_every) => {}
            _ = expiry => {
                if let Some(old) = held.take() {
                    tracing::warn!(job = %job, epoch = old.epoch, "could not renew the lease before it expired; stepping down");
                }
                deadline = None;
                tx.send_if_modified(|c| set(c, None));
            }
            _ = step_down.notified() => {
                if let Some(old) = held.take() {
                    tracing::warn!(job = %job, epoch = old.epoch, "the database refused a write with this lease; stepping down");
                }
                deadline = None;
                tx.send_if_modified(|c| set(c, None));
            }
            _ = stop.changed() => {}
        }
    }
    if let Some(fence) = held.take() {
        tx.send_if_modified(|c| set(c, None));
        if let Err(e) = lease::release(&db, &fence).await {
            tracing::warn!(job = %job, error = %e, "could not release the lease; it expires on its own");
        }
    }
}

fn set(slot: &mut Option<Fence>, value: Option<Fence>) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}
