//! Configuration: nested typed sections, layered as built-in defaults < YAML file < environment,
//! then one [`Config::validate`] step.
//!
//! The file is `system.yaml`-shaped (top key `jfconnect:`). Every key can be overridden by an
//! environment variable named after its path: `jfconnect.usage.spool_dir` is
//! `JF_JFCONNECT_USAGE_SPOOL_DIR`. Unknown keys, wrong types, bad intervals, bad URLs and
//! unreadable secret files are refused with an error naming the key (and the variable, when the
//! value came from the environment). Secrets are never in the YAML, only paths to files holding
//! them, and are held as [`Secret`] once read.
//!
//! One place defines a key: its field (with its doc comment) in a section below and its default
//! in that section's `Default`. The key list, the environment names and the kind of value an
//! environment string holds are derived from those defaults ([`keys`]); a key that needs more
//! than its type's own parsing gets a check in `validate.rs`.
//!
//! Architecture invariant: this module reads files and the environment only in [`Config::load`]
//! and its helpers; everything else gets a finished `Config` (the process environment other
//! parts need, such as the standard proxy variables, travels in [`Config::env`]).

use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

mod database;
mod env;
mod keys;
mod kinds;
mod layers;
mod locate;
mod serde_forms;
mod shape;
mod shared;
mod show;
mod validate;

pub use database::{DatabaseSettings, TlsMode};
pub(crate) use env::ProcessEnv;
pub(crate) use keys::{env_name, Section};
pub use keys::{keys, Kind};
pub use layers::{Source, Sources};
pub use locate::ConfigFile;
pub(crate) use serde_forms::parse_interval;

pub use shared::{Node, Shared};

/// Prefix of every environment override.
pub(crate) const ENV_PREFIX: &str = "JF_JFCONNECT_";

/// Data folder when neither the file nor the environment names one.
const DEFAULT_DATA_DIR: &str = "jfconnect-data";

/// A refused configuration: which key, where it came from, what is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not YAML, or its top level is not `jfconnect:`.
    #[error("config file {path} is not valid: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// One key is wrong.
    #[error("config key {key}{}: {reason}", .env.as_ref().map(|e| format!(" (from environment variable {e})")).unwrap_or_default())]
    Key {
        /// Full dotted key, e.g. `jfconnect.usage.interval`.
        key: String,
        /// The environment variable the value came from, if any.
        env: Option<String>,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// The finished configuration: the `jfconnect:` section of `system.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// When false, `serve` answers ping/health, reports "disabled" and runs no job.
    pub enabled: bool,
    /// HTTP API port.
    pub port: u16,
    /// Address the HTTP API (and the gRPC port) binds to.
    pub bind: String,
    /// `grpc.*`: the gRPC port products read entitlements from.
    pub grpc: GrpcSection,
    /// Where state, keys, locks and quarantine live.
    pub data_dir: PathBuf,
    /// `license.*`
    pub license: LicenseSection,
    /// `api.*`
    pub api: ApiSection,
    /// `jes.*`: the entitlements server.
    pub jes: JesSection,
    /// `jcs.*`: the consumption server.
    pub jcs: JcsSection,
    /// `jpd.*`: the JPD's Artifactory/Access.
    pub jpd: JpdSection,
    /// `entitlements.*`
    pub entitlements: EntitlementsSection,
    /// `usage.*`
    pub usage: UsageSection,
    /// `archival.*`
    pub archival: ArchivalSection,
    /// `airgap.*`
    pub airgap: AirgapSection,
    /// `proxy.*`: an explicitly configured outbound proxy.
    pub proxy: ProxySection,
    /// `tls.*`
    pub tls: TlsSection,
    /// Logs.
    pub log: LogSection,
    /// `store.*`
    pub store: StoreSection,
    /// `http.*`: outbound timeouts.
    pub http: HttpSection,
    /// `retry.*`: backoff after an *unavailable* failure.
    pub retry: RetrySection,
    /// `ha.*`: lease timing of database mode (`shared.database` set).
    pub ha: HaSection,
    /// What other parts need from the process environment, captured once at load.
    #[serde(skip)]
    pub env: ProcessEnv,
    /// The keys read from the file's `shared:` section.
    #[serde(skip)]
    pub shared: Shared,
    /// The config file read, and how it was found (none: defaults and variables only).
    #[serde(skip)]
    pub file: Option<ConfigFile>,
    /// Where each key's value came from.
    #[serde(skip)]
    pub sources: Sources,
}

/// `jfconnect.grpc.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSection {
    /// Whether the gRPC port is served.
    pub enabled: bool,
    /// The gRPC port.
    pub port: u16,
}

impl Default for GrpcSection {
    fn default() -> Self {
        GrpcSection {
            enabled: true,
            port: 8035,
        }
    }
}

/// `jfconnect.license.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LicenseSection {
    /// File holding the JPD's license key.
    pub file: Option<PathBuf>,
}

/// `jfconnect.api.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSection {
    /// File holding the token products present (the read scope); none means "generate
    /// `<data_dir>/api.token`".
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file`.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// File holding the admin token (every state change); none means "generate
    /// `<data_dir>/admin.token`".
    pub admin_token_file: Option<PathBuf>,
    /// The token read from `admin_token_file`.
    #[serde(skip)]
    pub admin_token: Option<Secret>,
    /// Most connections served at once on each port (the API's and gRPC's); long-held watch
    /// requests count.
    pub max_connections: usize,
    /// Time a new connection gets for its TLS handshake and first request head (gRPC: its
    /// first call).
    #[serde(with = "serde_forms::interval")]
    pub header_read_timeout: Duration,
    /// Time a connection may stay idle between requests (gRPC: with no call open).
    #[serde(with = "serde_forms::interval")]
    pub idle_timeout: Duration,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            token_file: None,
            token: None,
            admin_token_file: None,
            admin_token: None,
            max_connections: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// `jfconnect.jes.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JesSection {
    /// Entitlements server.
    #[serde(deserialize_with = "serde_forms::http_url")]
    pub url: Url,
}

impl Default for JesSection {
    fn default() -> Self {
        JesSection {
            url: serde_forms::constant_url("https://jes.jfrog.io/"),
        }
    }
}

/// `jfconnect.jcs.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JcsSection {
    /// Consumption server.
    #[serde(deserialize_with = "serde_forms::http_url")]
    pub url: Url,
}

impl Default for JcsSection {
    fn default() -> Self {
        JcsSection {
            url: serde_forms::constant_url("https://jcs.jfrog.io/"),
        }
    }
}

/// `jfconnect.jpd.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JpdSection {
    /// The JPD's Artifactory/Access base URL.
    #[serde(deserialize_with = "serde_forms::http_url")]
    pub url: Url,
    /// File holding the token for the JPD.
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file`.
    #[serde(skip)]
    pub token: Option<Secret>,
}

impl Default for JpdSection {
    fn default() -> Self {
        JpdSection {
            url: serde_forms::constant_url("http://localhost:8082/"),
            token_file: None,
            token: None,
        }
    }
}

/// `jfconnect.entitlements.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntitlementsSection {
    /// How often entitlements are refreshed.
    #[serde(with = "serde_forms::interval")]
    pub interval: Duration,
    /// Entitlements ending within this are warned about (status, metrics, a daily log line).
    #[serde(with = "serde_forms::interval")]
    pub warn_before: Duration,
}

impl Default for EntitlementsSection {
    fn default() -> Self {
        EntitlementsSection {
            interval: Duration::from_secs(3600),
            warn_before: Duration::from_secs(30 * 86400),
        }
    }
}

/// `jfconnect.usage.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageSection {
    /// Folder the Observability service drops usage files into (empty in the file: the default
    /// `<data_dir>/usage/spool`, filled in by validation).
    pub spool_dir: PathBuf,
    /// How often usage is uploaded.
    #[serde(with = "serde_forms::interval")]
    pub interval: Duration,
    /// Usage files per upload request.
    pub batch_size: usize,
    /// Usage files larger than this are quarantined.
    pub max_file_bytes: u64,
    /// Most bytes of one upload request's body (a usage file whose own request is larger is
    /// sent alone).
    pub max_batch_bytes: u64,
}

/// Default of `usage.max_batch_bytes`: 8 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: u64 = 8 << 20;

impl Default for UsageSection {
    fn default() -> Self {
        UsageSection {
            spool_dir: PathBuf::new(),
            interval: Duration::from_secs(24 * 3600),
            batch_size: 500,
            max_file_bytes: 16 * 1024 * 1024,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

/// `jfconnect.archival.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ArchivalSection {
    /// How often uploaded usage is archived.
    #[serde(with = "serde_forms::interval")]
    pub interval: Duration,
    /// Artifactory repository the archives go to.
    pub repo: String,
    /// An archive is split before it would exceed this many bytes.
    pub max_archive_bytes: u64,
}

impl Default for ArchivalSection {
    fn default() -> Self {
        ArchivalSection {
            interval: Duration::from_secs(24 * 3600),
            repo: "jfrog-usage-logs".into(),
            max_archive_bytes: 512 * 1024 * 1024,
        }
    }
}

/// `jfconnect.airgap.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AirgapSection {
    /// Air-gapped mode: bundles instead of HTTPS to JES/JCS.
    pub enabled: bool,
    /// Where outgoing bundles are written (empty in the file: the default `<data_dir>/outbox`,
    /// filled in by validation).
    pub outbox_dir: PathBuf,
    /// Trusted vendor public keys (minisign format files).
    pub vendor_public_keys: Vec<PathBuf>,
    /// A usage bundle is split before it would exceed this many bytes.
    pub max_bundle_bytes: u64,
}

/// Default of `airgap.max_bundle_bytes`: 1 GiB.
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 1 << 30;

impl Default for AirgapSection {
    fn default() -> Self {
        AirgapSection {
            enabled: false,
            outbox_dir: PathBuf::new(),
            vendor_public_keys: Vec::new(),
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
        }
    }
}

/// `jfconnect.proxy.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// Proxy URL, `http://host:port`; none: the standard proxy variables apply.
    #[serde(deserialize_with = "serde_forms::optional_http_url")]
    pub url: Option<Url>,
    /// User name for basic auth.
    pub username: Option<String>,
    /// File holding the password for basic auth.
    pub password_file: Option<PathBuf>,
    /// The password read from `password_file`.
    #[serde(skip)]
    pub password: Option<Secret>,
    /// Hosts, `.domains` and CIDRs that bypass the proxy.
    pub no_proxy: Option<String>,
}

/// `jfconnect.tls.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Extra trusted CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// HTTPS on the ports jfconnect serves.
    pub server: TlsServerSection,
}

/// `jfconnect.tls.server.*`: set both to serve HTTPS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsServerSection {
    /// The server certificate chain (PEM, leaf first).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, RSA or SEC1).
    pub key_file: Option<PathBuf>,
}

/// `jfconnect.log.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `text` (JFrog's line format) or `json` (JSON lines with the same fields).
    pub format: crate::logging::LogFormat,
    /// Folder for `jfconnect-service.log` and `jfconnect-request.log` (written by `serve`);
    /// none: the service log goes to stderr only and no request log is kept.
    pub dir: Option<PathBuf>,
    /// A log file is rotated once it passes this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept per log; older ones are deleted.
    pub max_files: usize,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: crate::logging::LogFormat::Text,
            dir: None,
            max_bytes: crate::logging::DEFAULT_MAX_BYTES,
            max_files: crate::logging::DEFAULT_MAX_FILES,
        }
    }
}

/// `jfconnect.store.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// JFrog Store URL for the store proxy.
    #[serde(deserialize_with = "serde_forms::optional_http_url")]
    pub url: Option<Url>,
}

/// `jfconnect.http.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Connect timeout of every outbound call.
    #[serde(with = "serde_forms::interval")]
    pub connect_timeout: Duration,
    /// Whole-request timeout of every outbound call.
    #[serde(with = "serde_forms::interval")]
    pub request_timeout: Duration,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

/// `jfconnect.ha.*`: how long a job's lease lasts without renewal (judged in database time),
/// and how often its holder renews it. Used only in database mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaSection {
    /// Lease TTL: a holder silent this long loses the lease.
    #[serde(with = "serde_forms::interval")]
    pub lease_ttl: Duration,
    /// How often the holder renews its lease (and every node heartbeats).
    #[serde(with = "serde_forms::interval")]
    pub lease_renew: Duration,
}

impl Default for HaSection {
    fn default() -> Self {
        HaSection {
            lease_ttl: Duration::from_secs(15),
            lease_renew: Duration::from_secs(5),
        }
    }
}

/// `jfconnect.retry.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrySection {
    /// First retry delay after an *unavailable* failure.
    #[serde(with = "serde_forms::interval")]
    pub initial: Duration,
    /// Largest retry delay.
    #[serde(with = "serde_forms::interval")]
    pub max: Duration,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }
}

impl Default for Config {
    /// The built-in defaults, before validation fills in the paths derived from `data_dir`.
    fn default() -> Self {
        Config {
            enabled: true,
            port: 8030,
            bind: "0.0.0.0".into(),
            grpc: GrpcSection::default(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            license: LicenseSection::default(),
            api: ApiSection::default(),
            jes: JesSection::default(),
            jcs: JcsSection::default(),
            jpd: JpdSection::default(),
            entitlements: EntitlementsSection::default(),
            usage: UsageSection::default(),
            archival: ArchivalSection::default(),
            airgap: AirgapSection::default(),
            proxy: ProxySection::default(),
            tls: TlsSection::default(),
            store: StoreSection::default(),
            http: HttpSection::default(),
            retry: RetrySection::default(),
            ha: HaSection::default(),
            log: LogSection::default(),
            env: ProcessEnv::default(),
            shared: Shared::default(),
            file: None,
            sources: Sources::default(),
        }
    }
}

impl Config {
    /// Built-in defaults, rooted at `data_dir`, with an empty process environment.
    pub fn defaults(data_dir: PathBuf) -> Config {
        let mut c = Config {
            data_dir,
            ..Config::default()
        };
        c.fill_derived_paths();
        c
    }

    /// Loads the configuration: defaults < the config file < the process environment. The
    /// file is `explicit` (`--config`), else found as [`ConfigFile::locate`] says.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env = ProcessEnv::capture();
        let file = ConfigFile::locate(explicit, &env)?;
        Config::load_with(file, env)
    }

    /// Loads `file` (if any) with an explicit environment and no lookup (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        Config::load_with(
            file.map(ConfigFile::given),
            ProcessEnv::from_vars(env.clone()),
        )
    }

    fn load_with(file: Option<ConfigFile>, env: ProcessEnv) -> Result<Config, ConfigError> {
        let layered = layers::layered_tree(file.as_ref().map(|f| f.path.as_path()), &env)?;
        if !layered.ignored.is_empty() {
            tracing::debug!(
                sections = %layered.ignored.join(", "),
                "ignoring other services' sections of the config file"
            );
        }
        let sources = layered.sources;
        let (mut jfconnect, mut shared) = (layered.jfconnect, layered.shared);
        kinds::check(Section::Jfconnect, &mut jfconnect, &sources)?;
        kinds::check(Section::Shared, &mut shared, &sources)?;
        let mut config: Config = layers::deserialize(Section::Jfconnect, jfconnect, &sources)?;
        config.shared = layers::deserialize(Section::Shared, shared, &sources)?;
        config.env = env;
        config.file = file;
        config.validate(&sources)?;
        config.sources = sources;
        Ok(config)
    }

    /// When the file or environment turns the service off (read leniently, so that a disabled
    /// service starts even when other keys are wrong): the defaults, with the port, bind
    /// address and data folder taken from the file or environment where they are valid on
    /// their own, so health checks answer where the operator expects them. `None` when the
    /// service is not disabled.
    pub(crate) fn disabled_fallback(explicit: Option<&Path>) -> Option<Config> {
        let env = ProcessEnv::capture();
        let file = ConfigFile::locate(explicit, &env).ok()?;
        let tree = layers::layered_tree(file.as_ref().map(|f| f.path.as_path()), &env)
            .ok()?
            .jfconnect;
        if !matches!(
            layers::lookup(&tree, "enabled"),
            Some(serde_yaml::Value::Bool(false))
        ) {
            return None;
        }
        let data_dir = layers::lookup(&tree, "data_dir")
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or(DEFAULT_DATA_DIR);
        let mut c = Config::defaults(PathBuf::from(data_dir));
        c.enabled = false;
        c.env = env;
        c.file = file;
        if let Some(p) = layers::lookup(&tree, "port")
            .and_then(serde_yaml::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        {
            c.port = p;
        }
        if let Some(b) = layers::lookup(&tree, "bind")
            .and_then(serde_yaml::Value::as_str)
            .filter(|b| b.parse::<std::net::IpAddr>().is_ok())
        {
            c.bind = b.to_string();
        }
        if let Some(serde_yaml::Value::Bool(false)) = layers::lookup(&tree, "grpc.enabled") {
            c.grpc.enabled = false;
        }
        if let Some(p) = layers::lookup(&tree, "grpc.port")
            .and_then(serde_yaml::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        {
            c.grpc.port = p;
        }
        Some(c)
    }

    /// The config file in use, and how it was found, as `status` and `serve` print it.
    pub(crate) fn file_description(&self) -> String {
        match &self.file {
            Some(f) => f.to_string(),
            None => "none (built-in defaults and environment variables)".into(),
        }
    }

    /// Path of the state folder.
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }

    /// The folder of the audit log (`jfconnect-audit.log`): `log.dir`, else `<data_dir>/logs`
    /// (state changes are recorded even when no other log file is kept).
    pub(crate) fn audit_log_dir(&self) -> PathBuf {
        self.log
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("logs"))
    }

    /// Fills the paths whose defaults live under `data_dir`, where they are not set.
    fn fill_derived_paths(&mut self) {
        if self.usage.spool_dir.as_os_str().is_empty() {
            self.usage.spool_dir = self.data_dir.join("usage").join("spool");
        }
        if self.airgap.outbox_dir.as_os_str().is_empty() {
            self.airgap.outbox_dir = self.data_dir.join("outbox");
        }
    }
}

#[cfg(test)]
mod tests;
