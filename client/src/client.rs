//! The client handle and its builder.

use crate::backoff::Backoff;
use crate::cache::Snapshot;
use crate::inner::{Inner, Link, Settings};
use crate::watcher;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// The CA given to [`ClientBuilder::ca_pem`] holds no PEM certificate.
    #[error("the CA given to the jfconnect client holds no PEM certificate")]
    BadCa,
}

/// Settings of a [`Client`]; [`ClientBuilder::connect`] starts it.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    settings: Settings,
    token: String,
}

impl ClientBuilder {
    /// A client presenting `token` (jfconnect's API token) with no address yet.
    pub fn new(token: impl Into<String>) -> Self {
        ClientBuilder {
            settings: Settings {
                grpc: None,
                http: None,
                cache_file: None,
                backoff: Backoff::default(),
                long_poll_wait: Duration::from_secs(30),
                first_answer_wait: Duration::from_secs(5),
                grpc_retry: Duration::from_secs(300),
                ca_pem: None,
            },
            token: token.into(),
        }
    }

    /// jfconnect's gRPC address, e.g. `http://jfconnect:8035`.
    pub fn grpc(mut self, url: impl Into<String>) -> Self {
        self.settings.grpc = Some(url.into());
        self
    }

    /// jfconnect's HTTP API, e.g. `http://jfconnect:8030`: long-polled when gRPC cannot be
    /// reached (or when no gRPC address is given).
    pub fn http(mut self, url: impl Into<String>) -> Self {
        self.settings.http = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// Keeps the last good entitlements in this file (read at start, rewritten on each
    /// change), so a product restarting while jfconnect is down still knows them.
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.settings.cache_file = Some(path.into());
        self
    }

    /// Reconnect delays (default 200 ms doubling to 10 s, jittered).
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// How long one HTTP long-poll is held (default 30 s; jfconnect caps it at 60 s).
    pub fn long_poll_wait(mut self, wait: Duration) -> Self {
        self.settings.long_poll_wait = wait;
        self
    }

    /// How long [`ClientBuilder::connect`] waits for a first answer when it has no cached
    /// entitlements (default 5 s). It returns either way; until an answer comes every
    /// question is answered "not entitled".
    pub fn first_answer_wait(mut self, wait: Duration) -> Self {
        self.settings.first_answer_wait = wait;
        self
    }

    /// While on the HTTP fallback, how often gRPC is tried again (default 5 min).
    pub fn grpc_retry(mut self, every: Duration) -> Self {
        self.settings.grpc_retry = every;
        self
    }

    /// For `https://` addresses (jfconnect with `tls.server.*` set, on both ports): trust only
    /// the CA in this PEM text, the one that signed jfconnect's certificate, instead of the
    /// system's roots.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.settings.ca_pem = Some(pem.into());
        self
    }

    /// Loads the cache file, starts watching jfconnect, and waits (bounded) for a first answer
    /// when nothing is cached. Must be called inside a Tokio runtime.
    pub async fn connect(self) -> Result<Client, ClientError> {
        let settings = self.settings;
        if settings.grpc.is_none() && settings.http.is_none() {
            return Err(ClientError::NoAddress);
        }
        for url in settings.grpc.iter().chain(settings.http.iter()) {
            check_url(url)?;
        }
        if let Some(pem) = &settings.ca_pem {
            let ca = reqwest::Certificate::from_pem_bundle(pem).map_err(|_| ClientError::BadCa)?;
            if ca.is_empty() {
                return Err(ClientError::BadCa);
            }
        }
        let auth: http::HeaderValue = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ClientError::BadToken)?;
        let cached = settings.cache_file.as_deref().and_then(|path| {
            Snapshot::load(path).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "the entitlements cache file cannot be read; starting without it");
                None
            })
        });
        let has_cache = cached.is_some();
        let inner = Arc::new(Inner::new(settings, auth, cached));
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(watcher::run(inner.clone()));
        if let Some(path) = inner.settings.cache_file.clone() {
            tasks.spawn(watcher::persist(inner.subscribe(), path));
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
            .snapshot()
            .is_some_and(|s| s.is_entitled_at(product, feature, now))
    }

    /// The entitlements held, if any.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.inner.snapshot()
    }

    /// A receiver that sees each change of the entitlements held.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.inner.subscribe()
    }

    /// How the client hears from jfconnect right now.
    pub fn link(&self) -> Link {
        self.inner.link()
    }
}
