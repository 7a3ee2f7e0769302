//! The tasks behind a client: the watch of jfconnect (gRPC, then the HTTP long-poll, with a
//! jittered backoff) and the writer of the cache file.

use crate::cache::Snapshot;
use crate::inner::{Inner, Link};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Watches until the client is dropped: gRPC first, the HTTP long-poll where gRPC fails, and
/// a jittered backoff whenever neither answers.
pub(crate) async fn run(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    loop {
        let before = inner.answers();
        let mut grpc_failed = true;
        if let Some(url) = inner.settings.grpc.clone() {
            match crate::grpc::watch(&inner, &url).await {
                Ok(()) => grpc_failed = false,
                Err(e) => {
                    tracing::warn!(address = %url, error = %e, "gRPC watch of jfconnect ended")
                }
            }
        }
        if grpc_failed {
            if let Some(url) = inner.settings.http.clone() {
                let session = crate::long_poll::watch(&inner, &url);
                let result = if inner.settings.grpc.is_some() {
                    // Give gRPC another chance now and then.
                    tokio::time::timeout(inner.settings.grpc_retry, session)
                        .await
                        .unwrap_or(Ok(()))
                } else {
                    session.await
                };
                if let Err(e) = result {
                    tracing::warn!(address = %url, error = %e, "HTTP watch of jfconnect ended");
                }
            }
        }
        inner.set_link(Link::Down);
        if inner.answers() != before {
            failures = 0;
        }
        let delay = inner.settings.backoff.delay(failures, rand::random());
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// Writes each new snapshot to the cache file, the latest only, in order.
pub(crate) async fn persist(mut rx: watch::Receiver<Option<Arc<Snapshot>>>, path: PathBuf) {
    rx.mark_unchanged();
    while rx.changed().await.is_ok() {
        let Some(snapshot) = rx.borrow_and_update().clone() else {
            continue;
        };
        let p = path.clone();
        match tokio::task::spawn_blocking(move || snapshot.save(&p)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the entitlements cache file")
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "writing the entitlements cache file failed")
            }
        }
    }
}
