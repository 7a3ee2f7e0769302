//! The client handle, its builder, and the task that keeps the cache current.

use crate::backoff::Backoff;
use crate::cache::Snapshot;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Neither a gRPC nor an HTTP address was given.
    #[error("no jfconnect address was given; set a gRPC address, an HTTP address, or both")]
    NoAddress,
    /// An address is not an `http://` or `https://` URL.
    #[error("{url:?} is not a jfconnect address: {reason}")]
    BadUrl {
        /// The address as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The token cannot be sent as a header (control characters, non-ASCII).
    #[error("the API token contains characters that cannot be sent in a header")]
    BadToken,
}

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

/// Settings of a [`Client`]; [`ClientBuilder::connect`] starts it.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) grpc: Option<String>,
    pub(crate) http: Option<String>,
    token: String,
    pub(crate) cache_file: Option<PathBuf>,
    pub(crate) backoff: Backoff,
    pub(crate) long_poll_wait: Duration,
    pub(crate) first_answer_wait: Duration,
    pub(crate) grpc_retry: Duration,
}

impl ClientBuilder {
    /// A client presenting `token` (jfconnect's API token) with no address yet.
    pub fn new(token: impl Into<String>) -> Self {
        ClientBuilder {
            grpc: None,
            http: None,
            token: token.into(),
            cache_file: None,
            backoff: Backoff::default(),
            long_poll_wait: Duration::from_secs(30),
            first_answer_wait: Duration::from_secs(5),
            grpc_retry: Duration::from_secs(300),
        }
    }

    /// jfconnect's gRPC address, e.g. `http://jfconnect:8035`.
    pub fn grpc(mut self, url: impl Into<String>) -> Self {
        self.grpc = Some(url.into());
        self
    }

    /// jfconnect's HTTP API, e.g. `http://jfconnect:8030`: long-polled when gRPC cannot be
    /// reached (or when no gRPC address is given).
    pub fn http(mut self, url: impl Into<String>) -> Self {
        self.http = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// Keeps the last good entitlements in this file (read at start, rewritten on each
    /// change), so a product restarting while jfconnect is down still knows them.
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Reconnect delays (default 200 ms doubling to 10 s, jittered).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// How long one HTTP long-poll is held (default 30 s; jfconnect caps it at 60 s).
    pub fn long_poll_wait(mut self, wait: Duration) -> Self {
        self.long_poll_wait = wait;
        self
    }

    /// How long [`ClientBuilder::connect`] waits for a first answer when it has no cached
    /// entitlements (default 5 s). It returns either way; until an answer comes every
    /// question is answered "not entitled".
    pub fn first_answer_wait(mut self, wait: Duration) -> Self {
        self.first_answer_wait = wait;
        self
    }

    /// While on the HTTP fallback, how often gRPC is tried again (default 5 min).
    pub fn grpc_retry(mut self, every: Duration) -> Self {
        self.grpc_retry = every;
        self
    }

    /// Loads the cache file, starts watching jfconnect, and waits (bounded) for a first answer
    /// when nothing is cached. Must be called inside a Tokio runtime.
    pub async fn connect(self) -> Result<Client, ClientError> {
        if self.grpc.is_none() && self.http.is_none() {
            return Err(ClientError::NoAddress);
        }
        for url in self.grpc.iter().chain(self.http.iter()) {
            check_url(url)?;
        }
        let auth: http::HeaderValue = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ClientError::BadToken)?;
        let cached = self.cache_file.as_deref().and_then(|path| {
            Snapshot::load(path).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "the entitlements cache file cannot be read; starting without it");
                None
            })
        });
        let has_cache = cached.is_some();
        let (state, _) = watch::channel(cached.map(Arc::new));
        let inner = Arc::new(Inner {
            settings: self,
            auth,
            state,
            link: Mutex::new(Link::Down),
            answers: AtomicU64::new(0),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(run(inner.clone()));
        if let Some(path) = inner.settings.cache_file.clone() {
            tasks.spawn(persist(inner.state.subscribe(), path));
        }
        let client = Client {
            inner,
            _tasks: Arc::new(tasks),
        };
        if !has_cache {
            let mut rx = client.subscribe();
            let wait = client.inner.settings.first_answer_wait;
            if tokio::time::timeout(wait, rx.wait_for(|s| s.is_some()))
                .await
                .is_err()
            {
                tracing::warn!(
                    "no entitlements from jfconnect yet; answering 'not entitled' until they come"
                );
            }
        }
        Ok(client)
    }
}

fn check_url(url: &str) -> Result<(), ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(bad("use http:// or https://")),
    }
    if uri.host().is_none() {
        return Err(bad("no host"));
    }
    Ok(())
}

/// What the background tasks share with the handle.
pub(crate) struct Inner {
    pub(crate) settings: ClientBuilder,
    pub(crate) auth: http::HeaderValue,
    state: watch::Sender<Option<Arc<Snapshot>>>,
    link: Mutex<Link>,
    answers: AtomicU64,
}

impl Inner {
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

/// An auto-updating entitlements cache; cheap to clone, all clones share one watcher, which
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _tasks: Arc<tokio::task::JoinSet<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("grpc", &self.inner.settings.grpc)
            .field("http", &self.inner.settings.http)
            .field("link", &self.link())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Watches jfconnect's gRPC address `url` (e.g. `http://jfconnect:8035`) with `token`.
    /// Use [`Client::builder`] for the HTTP fallback and a cache file.
    pub async fn connect(url: &str, token: &str) -> Result<Client, ClientError> {
        ClientBuilder::new(token).grpc(url).connect().await
    }

    /// Settings for a client presenting `token`.
    pub fn builder(token: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(token)
    }

    /// May `product` use `feature` now? Answered from memory (no I/O); `false` until
    /// entitlements are known.
    pub fn is_entitled(&self, product: &str, feature: &str) -> bool {
        let now = chrono::Utc::now();
        self.inner
            .state
            .borrow()
            .as_ref()
            .is_some_and(|s| s.is_entitled_at(product, feature, now))
    }

    /// The entitlements held, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.state.borrow().clone()
    }

    /// A receiver that sees each change of the entitlements held.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.state.subscribe()
    }

    /// How the client hears from jfconnect right now.
    pub fn link(&self) -> Link {
        *self.inner.link.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Watches until the client is dropped: gRPC first, the HTTP long-poll where gRPC fails, and
/// a jittered backoff whenever neither answers.
async fn run(inner: Arc<Inner>) {
    let mut failures: u32 = 0;
    loop {
        let before = inner.answers.load(Ordering::Relaxed);
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
        if inner.answers.load(Ordering::Relaxed) != before {
            failures = 0;
        }
        let delay = inner.settings.backoff.delay(failures, rand::random());
        failures = failures.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// Writes each new snapshot to the cache file, the latest only, in order.
async fn persist(mut rx: watch::Receiver<Option<Arc<Snapshot>>>, path: PathBuf) {
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
