//! The connection to the shared PostgreSQL: a small pool of kept connections, TLS through rustls
//! with the system roots plus `tls.ca_file`, and one error type that tells "the database is
//! away" (retry, serve the last good copy, readiness degraded) from "the database refused this".
//!
//! Nothing here holds a session-level lock or relies on a session surviving: every statement
//! and transaction stands on its own, so a pooler in transaction mode (PgBouncer) or a failover
//! between statements changes nothing.

use super::sealing::SealError;
use crate::config::{DatabaseSettings, TlsMode};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long one connection attempt may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept per node: leases, heartbeats, state reads and writes; LISTEN has its own.
const POOL_SIZE: usize = 4;

/// A refused or failed database operation.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or dropped the connection; try again later.
    #[error("the database {url} is unreachable ({reason})")]
    Unavailable {
        /// Where (no password).
        url: String,
        /// Why, in the client's words.
        reason: String,
    },
    /// The database refused the login or does not exist: a configuration problem.
    #[error("the database {url} refused the connection: {reason}; check shared.database.url, username and password")]
    Login {
        /// Where (no password).
        url: String,
        /// The database's answer.
        reason: String,
    },
    /// The database answered but refused a statement.
    #[error("the database refused to {what}: {reason}")]
    Statement {
        /// What was being done.
        what: &'static str,
        /// The database's answer, with its SQLSTATE.
        reason: String,
        /// The database's answer.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A leaseholder write carried an epoch that is no longer current.
    #[error("{0}")]
    Fenced(#[from] super::fence::Fenced),
    /// This process was replaced under its node id (it was paused or cut off while another
    /// process joined as that node): none of its claims or marks is accepted.
    #[error(
        "node {node} may no longer {what}: another jfconnect process has joined under this node id"
    )]
    Superseded {
        /// The node id.
        node: String,
        /// What was refused.
        what: &'static str,
    },
    /// A usage ledger mark named files this node does not hold the claim of.
    #[error("node {node} may not {what}: {files} of the usage files are claimed by another node; nothing was recorded")]
    ClaimLost {
        /// The node id.
        node: String,
        /// How many files.
        files: u64,
        /// What was refused.
        what: &'static str,
    },
    /// A sealed secret did not open.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A row holds something this jfconnect cannot read.
    #[error("the database holds damaged {what} ({reason})")]
    Damaged {
        /// Which data.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The schema was made by a newer jfconnect; migrations only go forward.
    #[error("the database schema is at version {found}, newer than this jfconnect knows ({known}); upgrade jfconnect on this node")]
    SchemaTooNew {
        /// Version in the database.
        found: i32,
        /// Newest version this build knows.
        known: i32,
    },
    /// The schema has not been created yet (read-only commands never migrate).
    #[error("the database has no jfconnect schema yet; `jfconnect serve` creates it on start")]
    NoSchema,
    /// The TLS set-up for the database cannot be built.
    #[error("cannot set up TLS to the database: {0}")]
    Tls(String),
}

impl DbError {
    /// True when the database is away (as opposed to refusing): retry with backoff.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable { .. })
    }
}

/// The shared database: a pool plus what is needed to open a dedicated connection (LISTEN).
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    pg: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    url: Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Db({})", self.url)
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, DbError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped, as every TLS client does.
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let bad = |reason: String| {
            DbError::Tls(format!(
                "jfconnect.tls.ca_file {}: {reason}",
                path.display()
            ))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Db {
    /// Sets up the pool; connects lazily, so a database that is down now does not stop `serve`.
    pub fn new(
        settings: &DatabaseSettings,
        ca_file: Option<&Path>,
        node_id: &str,
    ) -> Result<Db, DbError> {
        let mut pg = tokio_postgres::Config::new();
        pg.host(&settings.host)
            .port(settings.port)
            .dbname(&settings.database)
            .user(&settings.username)
            .application_name(format!("jfconnect/{node_id}"))
            // The server's NOTICEs ("schema already exists, skipping") are not for the log.
            .options("-c client_min_messages=warning")
            .connect_timeout(CONNECT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(pw) = &settings.password {
            pg.password(pw.expose());
        }
        let tls = match settings.tls {
            TlsMode::Disable => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Disable);
                None
            }
            TlsMode::Prefer => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Prefer);
                Some(MakeRustlsConnect::new(tls_config(ca_file)?))
            }
            TlsMode::Require => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Some(MakeRustlsConnect::new(tls_config(ca_file)?))
            }
        };
        let config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(t) => Manager::from_config(pg.clone(), t.clone(), config),
            None => Manager::from_config(pg.clone(), tokio_postgres::NoTls, config),
        };
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| DbError::Tls(e.to_string()))?;
        Ok(Db {
            pool,
            pg,
            tls,
            url: settings.display_url().into(),
        })
    }

    /// The database's URL without password.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Object, DbError> {
        self.pool.get().await.map_err(|e| {
            let reason = match &e {
                deadpool_postgres::PoolError::Backend(pg) if is_login_refusal(pg) => {
                    return DbError::Login {
                        url: self.url.to_string(),
                        reason: pg
                            .as_db_error()
                            .map_or_else(|| pg.to_string(), |d| d.message().to_string()),
                    }
                }
                deadpool_postgres::PoolError::Backend(pg) => pg_reason(pg),
                deadpool_postgres::PoolError::Timeout(_) => {
                    "no connection within the timeout".to_string()
                }
                other => other.to_string(),
            };
            DbError::Unavailable {
                url: self.url.to_string(),
                reason,
            }
        })
    }

    /// A connection of its own outside the pool (for LISTEN); the caller drives `connection`.
    pub(crate) async fn dedicated(&self) -> Result<Dedicated, DbError> {
        let unavailable = |e: tokio_postgres::Error| DbError::Unavailable {
            url: self.url.to_string(),
            reason: pg_reason(&e),
        };
        match &self.tls {
            Some(tls) => {
                let (client, conn) = self.pg.connect(tls.clone()).await.map_err(unavailable)?;
                Ok(Dedicated::new(client, conn))
            }
            None => {
                let (client, conn) = self
                    .pg
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(unavailable)?;
                Ok(Dedicated::new(client, conn))
            }
        }
    }

    /// Classifies a statement's error: lost connection is `Unavailable`, the rest `Statement`.
    pub fn fail(&self, what: &'static str, e: tokio_postgres::Error) -> DbError {
        if is_connection_loss(&e) {
            DbError::Unavailable {
                url: self.url.to_string(),
                reason: pg_reason(&e),
            }
        } else {
            DbError::Statement {
                what,
                reason: pg_reason(&e),
                source: e,
            }
        }
    }
}

/// A transaction on a pooled connection, for one named step: both its start and its commit
/// fail naming that step. Dropped without [`Tx::commit`], it rolls back (a refusal, an error).
pub struct Tx<'c> {
    tx: deadpool_postgres::Transaction<'c>,
    db: Db,
    step: &'static str,
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = deadpool_postgres::Transaction<'c>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl Tx<'_> {
    /// Commits; a failure names the step.
    pub async fn commit(self) -> Result<(), DbError> {
        self.tx
            .commit()
            .await
            .map_err(|e| self.db.fail(self.step, e))
    }

    /// Classifies a statement's error inside this transaction, naming the step.
    pub fn fail(&self, e: tokio_postgres::Error) -> DbError {
        self.db.fail(self.step, e)
    }
}

impl Db {
    /// Starts the transaction of `step` ("store the entitlements", …) on `client`.
    pub async fn transaction<'c>(
        &self,
        client: &'c mut deadpool_postgres::Object,
        step: &'static str,
    ) -> Result<Tx<'c>, DbError> {
        let tx = client.transaction().await.map_err(|e| self.fail(step, e))?;
        Ok(Tx {
            tx,
            db: self.clone(),
            step,
        })
    }
}

/// A dedicated connection: its client and the messages (notifications) its connection yields.
pub(crate) struct Dedicated {
    /// The client half.
    pub client: tokio_postgres::Client,
    /// Notifications as they arrive; closed when the connection ends.
    pub notifications: tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
}

impl Dedicated {
    fn new<S, T>(
        client: tokio_postgres::Client,
        mut conn: tokio_postgres::Connection<S, T>,
    ) -> Dedicated
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(Ok(msg)) = messages.next().await {
                if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            }
        });
        Dedicated {
            client,
            notifications: rx,
        }
    }
}

// Class 28: invalid authorization; 3D000: no such database.
fn is_login_refusal(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("28") || c.code() == "3D000")
}

fn is_connection_loss(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08: connection exception; 57P01..57P03: shutdown, crash, not accepting yet.
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
        None => e.as_db_error().is_none(),
    }
}

fn pg_reason(e: &tokio_postgres::Error) -> String {
    use std::error::Error;
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    match e.source() {
        Some(inner) => format!("{e}: {inner}"),
        None => e.to_string(),
    }
}
