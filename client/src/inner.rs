//! What the background tasks share with the client handle: the settings, the entitlements
//! held and how jfconnect is heard. Its own file, below the handle and the two watchers, so
//! that none of them imports another in a loop.

use crate::backoff::Backoff;
use crate::cache::Snapshot;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How the client currently hears from jfconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet, or reconnecting; answers come from the last good entitlements.
    Down,
    /// A gRPC watch stream is open.
    Grpc,
    /// HTTP long-polls are answered (gRPC is unreachable or not configured).
    Http,
}

/// The settings a [`crate::ClientBuilder`] collects.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) grpc: Option<String>,
    pub(crate) http: Option<String>,
    pub(crate) cache_file: Option<PathBuf>,
    pub(crate) backoff: Backoff,
    pub(crate) long_poll_wait: Duration,
    pub(crate) first_answer_wait: Duration,
    pub(crate) grpc_retry: Duration,
    pub(crate) ca_pem: Option<Vec<u8>>,
}

/// What the background tasks share with the handle.
pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) auth: http::HeaderValue,
    state: watch::Sender<Option<Arc<Snapshot>>>,
    link: Mutex<Link>,
    answers: AtomicU64,
}

impl Inner {
    /// Starts with `cached` entitlements (from the cache file), if any, and the link down.
    pub(crate) fn new(
        settings: Settings,
        auth: http::HeaderValue,
        cached: Option<Snapshot>,
    ) -> Self {
        let (state, _) = watch::channel(cached.map(Arc::new));
        Inner {
            settings,
            auth,
            state,
            link: Mutex::new(Link::Down),
            answers: AtomicU64::new(0),
        }
    }

    /// The entitlements held, if any.
    pub(crate) fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.state.borrow().clone()
    }

    /// A receiver that sees each change of the entitlements held.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.state.subscribe()
    }

    /// How many times jfconnect answered so far.
    pub(crate) fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    /// How the client hears from jfconnect right now.
    pub(crate) fn link(&self) -> Link {
        *self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version of the entitlements held, if any.
    pub(crate) fn version(&self) -> Option<String> {
        self.state.borrow().as_ref().map(|s| s.version.clone())
    }

    /// Takes new entitlements (ignored when the version is the one held).
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.answered();
        self.state.send_if_modified(|held| {
            if held.as_ref().is_some_and(|h| h.version == snapshot.version) {
                return false;
            }
            tracing::info!(version = %snapshot.version, "entitlements updated");
            *held = Some(Arc::new(snapshot));
            true
        });
    }

    /// Records that jfconnect answered (a change, an unchanged, or an open stream).
    pub(crate) fn answered(&self) {
        self.answers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn set_link(&self, link: Link) {
        *self.link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }
}
