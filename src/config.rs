//! Configuration: one typed struct, layered as built-in defaults < YAML file < environment.
//!
//! The file is `system.yaml`-shaped (top key `jfconnect:`). Every key can be overridden by an
//! environment variable named after its path: `jfconnect.usage.spool_dir` is
//! `JF_JFCONNECT_USAGE_SPOOL_DIR`. Unknown keys, wrong types, bad intervals, bad URLs and
//! unreadable secret files are refused with an error naming the key (and the variable, when the
//! value came from the environment). Secrets are never in the YAML, only paths to files holding
//! them, and are held as [`Secret`] once read.
//!
//! Architecture invariant: this module reads files and the environment only in [`Config::load`]
//! and its helpers; everything else gets a finished `Config`.

use crate::secret::Secret;
use serde::Deserialize;
use serde_yaml::{Mapping, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "JF_JFCONNECT_";

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

/// The kind of value a key holds; drives how an environment string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Number,
    List,
}

/// Every key jfconnect knows, under `jfconnect.`, with its kind. DESIGN.md fixes these names.
const KEYS: &[(&str, Kind)] = &[
    ("enabled", Kind::Bool),
    ("port", Kind::Number),
    ("bind", Kind::Text),
    ("data_dir", Kind::Text),
    ("license.file", Kind::Text),
    ("api.token_file", Kind::Text),
    ("jes.url", Kind::Text),
    ("jcs.url", Kind::Text),
    ("jpd.url", Kind::Text),
    ("jpd.token_file", Kind::Text),
    ("entitlements.interval", Kind::Text),
    ("usage.spool_dir", Kind::Text),
    ("usage.interval", Kind::Text),
    ("usage.batch_size", Kind::Number),
    ("usage.max_file_bytes", Kind::Number),
    ("archival.interval", Kind::Text),
    ("archival.repo", Kind::Text),
    ("archival.max_archive_bytes", Kind::Number),
    ("airgap.enabled", Kind::Bool),
    ("airgap.outbox_dir", Kind::Text),
    ("airgap.vendor_public_keys", Kind::List),
    ("proxy.url", Kind::Text),
    ("proxy.username", Kind::Text),
    ("proxy.password_file", Kind::Text),
    ("proxy.no_proxy", Kind::Text),
    ("tls.ca_file", Kind::Text),
    ("store.url", Kind::Text),
    ("http.connect_timeout", Kind::Text),
    ("http.request_timeout", Kind::Text),
    ("retry.initial", Kind::Text),
    ("retry.max", Kind::Text),
];

/// The environment variable that overrides `key` (a path under `jfconnect.`).
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

/// The finished configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// When false, `serve` answers ping/health, reports "disabled" and runs no job.
    pub enabled: bool,
    /// HTTP API port (default 8030).
    pub port: u16,
    /// Address the HTTP API binds to (default `0.0.0.0`).
    pub bind: String,
    /// Where state, keys, locks and quarantine live.
    pub data_dir: PathBuf,
    /// File holding the JPD's license key.
    pub license_file: Option<PathBuf>,
    /// Token products present to the API; `None` means "generate `<data_dir>/api.token`".
    pub api_token: Option<Secret>,
    /// Where `api_token` came from (for messages).
    pub api_token_file: Option<PathBuf>,
    /// Entitlements server.
    pub jes_url: Url,
    /// Consumption server.
    pub jcs_url: Url,
    /// The JPD's Artifactory/Access base URL.
    pub jpd_url: Url,
    /// Token for the JPD.
    pub jpd_token: Option<Secret>,
    /// How often entitlements are refreshed.
    pub entitlements_interval: Duration,
    /// Folder the Observability service drops usage files into.
    pub usage_spool_dir: PathBuf,
    /// How often usage is uploaded.
    pub usage_interval: Duration,
    /// Usage files per upload request.
    pub usage_batch_size: usize,
    /// Usage files larger than this are quarantined.
    pub usage_max_file_bytes: u64,
    /// How often uploaded usage is archived.
    pub archival_interval: Duration,
    /// Artifactory repository the archives go to.
    pub archival_repo: String,
    /// An archive is split before it would exceed this many bytes.
    pub archival_max_archive_bytes: u64,
    /// Air-gapped mode: bundles instead of HTTPS to JES/JCS.
    pub airgap_enabled: bool,
    /// Where outgoing bundles are written.
    pub airgap_outbox_dir: PathBuf,
    /// Trusted vendor public keys (minisign format files).
    pub airgap_vendor_public_keys: Vec<PathBuf>,
    /// Outbound proxy.
    pub proxy: Option<ProxyConfig>,
    /// Hosts, `.domains` and CIDRs that bypass the proxy.
    pub no_proxy: Option<String>,
    /// Extra trusted CA certificates (PEM).
    pub tls_ca_file: Option<PathBuf>,
    /// JFrog Store URL for the store proxy.
    pub store_url: Option<Url>,
    /// Connect timeout of every outbound call.
    pub connect_timeout: Duration,
    /// Whole-request timeout of every outbound call.
    pub request_timeout: Duration,
    /// First retry delay after an *unavailable* failure.
    pub retry_initial: Duration,
    /// Largest retry delay.
    pub retry_max: Duration,
}

/// An explicitly configured outbound proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Proxy URL, `http://host:port`.
    pub url: Url,
    /// User name for basic auth.
    pub username: Option<String>,
    /// Password for basic auth.
    pub password: Option<Secret>,
}

impl Config {
    /// Built-in defaults, rooted at `data_dir`.
    pub fn defaults(data_dir: PathBuf) -> Config {
        let parse = |s: &str| Url::parse(s).unwrap_or_else(|_| unreachable!("constant URL"));
        Config {
            enabled: true,
            port: 8030,
            bind: "0.0.0.0".into(),
            usage_spool_dir: data_dir.join("usage").join("spool"),
            airgap_outbox_dir: data_dir.join("outbox"),
            data_dir,
            license_file: None,
            api_token: None,
            api_token_file: None,
            jes_url: parse("https://jes.jfrog.io/"),
            jcs_url: parse("https://jcs.jfrog.io/"),
            jpd_url: parse("http://localhost:8082/"),
            jpd_token: None,
            entitlements_interval: Duration::from_secs(3600),
            usage_interval: Duration::from_secs(24 * 3600),
            usage_batch_size: 500,
            usage_max_file_bytes: 16 * 1024 * 1024,
            archival_interval: Duration::from_secs(24 * 3600),
            archival_repo: "jfrog-usage-logs".into(),
            archival_max_archive_bytes: 512 * 1024 * 1024,
            airgap_enabled: false,
            airgap_vendor_public_keys: Vec::new(),
            proxy: None,
            no_proxy: None,
            tls_ca_file: None,
            store_url: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
        }
    }

    /// Loads the configuration: defaults < `file` (if any) < the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_from(file, &process_env())
    }

    /// Like [`Config::load`] with an explicit environment (for tests).
    pub fn load_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let (tree, from_env) = layered_tree(file, env)?;
        let raw = deserialize_raw(tree, &from_env)?;
        build(raw, &from_env)
    }

    /// When the file or environment turns the service off (read leniently, so that a disabled
    /// service starts even when other keys are wrong): the defaults, with the port, bind
    /// address and data folder taken from the file or environment where they are valid on
    /// their own, so health checks answer where the operator expects them. `None` when the
    /// service is not disabled.
    pub fn disabled_fallback(file: Option<&Path>) -> Option<Config> {
        let (tree, _) = layered_tree(file, &process_env()).ok()?;
        if !matches!(lookup(&tree, "enabled"), Some(Value::Bool(false))) {
            return None;
        }
        let data_dir = lookup(&tree, "data_dir")
            .and_then(Value::as_str)
            .unwrap_or("jfconnect-data");
        let mut c = Config::defaults(PathBuf::from(data_dir));
        c.enabled = false;
        if let Some(p) = lookup(&tree, "port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
        {
            c.port = p;
        }
        if let Some(b) = lookup(&tree, "bind")
            .and_then(Value::as_str)
            .filter(|b| b.parse::<std::net::IpAddr>().is_ok())
        {
            c.bind = b.to_string();
        }
        Some(c)
    }

    /// Path of the state folder.
    pub fn state_dir(&self) -> PathBuf {
        self.data_dir.join("state")
    }
}

/// The `JF_JFCONNECT_*` variables of this process.
fn process_env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect()
}

/// Reads the file (if any) into a YAML tree under `jfconnect`, then lays the environment over
/// it. Answers the tree and the set of keys whose value came from the environment.
fn layered_tree(
    file: Option<&Path>,
    env: &BTreeMap<String, String>,
) -> Result<(Value, HashSet<String>), ConfigError> {
    let mut root = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let syntax = |reason: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                reason,
            };
            let doc: Value = serde_yaml::from_str(&text).map_err(|e| syntax(e.to_string()))?;
            match doc {
                Value::Null => Value::Mapping(Mapping::new()),
                Value::Mapping(mut m) => {
                    let inner = m
                        .remove("jfconnect")
                        .ok_or_else(|| syntax("the top-level key must be `jfconnect:`".into()))?;
                    if let Some((k, _)) = m.into_iter().next() {
                        return Err(syntax(format!(
                            "unknown top-level key {}; only `jfconnect:` is read",
                            yaml_key(&k)
                        )));
                    }
                    match inner {
                        Value::Null => Value::Mapping(Mapping::new()),
                        v @ Value::Mapping(_) => v,
                        _ => return Err(syntax("`jfconnect:` must hold a mapping of keys".into())),
                    }
                }
                _ => {
                    return Err(syntax(
                        "the top level must be a mapping with `jfconnect:`".into(),
                    ))
                }
            }
        }
        None => Value::Mapping(Mapping::new()),
    };

    let mut from_env = HashSet::new();
    for (name, value) in env {
        let Some((key, kind)) = KEYS.iter().find(|(k, _)| env_name(k) == *name) else {
            return Err(ConfigError::Key {
                key: name.trim_start_matches(ENV_PREFIX).to_lowercase(),
                env: Some(name.clone()),
                reason: "no such setting; see docs/configuration in README.md".into(),
            });
        };
        let v = env_value(value, *kind).map_err(|reason| ConfigError::Key {
            key: format!("jfconnect.{key}"),
            env: Some(name.clone()),
            reason,
        })?;
        set_path(&mut root, key, v);
        from_env.insert(key.to_string());
    }
    Ok((root, from_env))
}

fn yaml_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}

fn env_value(s: &str, kind: Kind) -> Result<Value, String> {
    match kind {
        Kind::Text => Ok(Value::String(s.to_string())),
        Kind::Bool => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(Value::Bool(true)),
            "false" | "0" | "no" => Ok(Value::Bool(false)),
            _ => Err(format!("{s:?} is not true or false")),
        },
        Kind::Number => s
            .trim()
            .parse::<u64>()
            .map(|n| Value::Number(n.into()))
            .map_err(|_| format!("{s:?} is not a whole number")),
        Kind::List => Ok(Value::Sequence(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Value::String(p.to_string()))
                .collect(),
        )),
    }
}

fn set_path(root: &mut Value, key: &str, value: Value) {
    let mut node = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !matches!(node, Value::Mapping(_)) {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else { return };
        let k = Value::String((*part).to_string());
        if i + 1 == parts.len() {
            map.insert(k, value);
            return;
        }
        node = map.entry(k).or_insert(Value::Mapping(Mapping::new()));
    }
}

fn lookup<'a>(root: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(root, |node, part| node.get(part))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    enabled: Option<bool>,
    port: Option<u16>,
    bind: Option<String>,
    data_dir: Option<PathBuf>,
    license: Option<RawLicense>,
    api: Option<RawApi>,
    jes: Option<RawUrl>,
    jcs: Option<RawUrl>,
    jpd: Option<RawJpd>,
    entitlements: Option<RawInterval>,
    usage: Option<RawUsage>,
    archival: Option<RawArchival>,
    airgap: Option<RawAirgap>,
    proxy: Option<RawProxy>,
    tls: Option<RawTls>,
    store: Option<RawUrl>,
    http: Option<RawHttp>,
    retry: Option<RawRetry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLicense {
    file: Option<PathBuf>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    token_file: Option<PathBuf>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJpd {
    url: Option<String>,
    token_file: Option<PathBuf>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterval {
    interval: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsage {
    spool_dir: Option<PathBuf>,
    interval: Option<String>,
    batch_size: Option<u32>,
    max_file_bytes: Option<u64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchival {
    interval: Option<String>,
    repo: Option<String>,
    max_archive_bytes: Option<u64>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAirgap {
    enabled: Option<bool>,
    outbox_dir: Option<PathBuf>,
    vendor_public_keys: Option<Vec<PathBuf>>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    url: Option<String>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    no_proxy: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    connect_timeout: Option<String>,
    request_timeout: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    initial: Option<String>,
    max: Option<String>,
}

fn deserialize_raw(tree: Value, from_env: &HashSet<String>) -> Result<Raw, ConfigError> {
    serde_path_to_error::deserialize::<_, Raw>(tree).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_yaml appends its own location, which points into a tree we built.
        let reason = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let (key, reason) = if let Some(field) = unknown_field(&reason) {
            let key = if path == "." || path.is_empty() {
                field.to_string()
            } else {
                // serde_path_to_error points at the field itself for unknown fields.
                path.clone()
            };
            (key, format!("unknown key `{field}`"))
        } else {
            (path, reason)
        };
        let key = key.trim_start_matches('.').to_string();
        ConfigError::Key {
            env: from_env.contains(&key).then(|| env_name(&key)),
            key: format!("jfconnect.{key}"),
            reason,
        }
    })
}

fn unknown_field(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// Parses an interval such as `30s`, `15m`, `24h`, `7d` (a whole number and one unit).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let hint = "use a whole number and a unit, e.g. 30s, 15m, 24h";
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit; {hint}"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an interval; {hint}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} has an unknown unit {unit:?}; {hint}")),
    };
    if n == 0 {
        return Err(format!("{s:?} is zero; an interval must be positive"));
    }
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

struct Builder<'a> {
    from_env: &'a HashSet<String>,
}

impl Builder<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            key: format!("jfconnect.{key}"),
            env: self.from_env.contains(key).then(|| env_name(key)),
            reason: reason.into(),
        }
    }

    fn interval(
        &self,
        key: &str,
        v: Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => parse_interval(&s).map_err(|r| self.err(key, r)),
        }
    }

    fn url(&self, key: &str, v: Option<String>) -> Result<Option<Url>, ConfigError> {
        let Some(s) = v else { return Ok(None) };
        let url =
            Url::parse(s.trim()).map_err(|e| self.err(key, format!("{s:?} is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(self.err(key, format!("{s:?} must start with http:// or https://")));
        }
        if url.host_str().is_none() {
            return Err(self.err(key, format!("{s:?} has no host")));
        }
        Ok(Some(url))
    }

    fn secret(&self, key: &str, path: Option<PathBuf>) -> Result<Option<Secret>, ConfigError> {
        let Some(path) = path else { return Ok(None) };
        let secret = Secret::from_file(&path).map_err(|e| {
            self.err(
                key,
                format!("cannot read secret file {}: {e}", path.display()),
            )
        })?;
        if secret.is_empty() {
            return Err(self.err(key, format!("secret file {} is empty", path.display())));
        }
        Ok(Some(secret))
    }

    fn readable(&self, key: &str, path: &Path) -> Result<(), ConfigError> {
        std::fs::File::open(path)
            .map(drop)
            .map_err(|e| self.err(key, format!("cannot read {}: {e}", path.display())))
    }
}

fn build(raw: Raw, from_env: &HashSet<String>) -> Result<Config, ConfigError> {
    let b = Builder { from_env };
    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from("jfconnect-data"));
    let mut c = Config::defaults(data_dir);
    c.enabled = raw.enabled.unwrap_or(true);
    if let Some(p) = raw.port {
        if p == 0 {
            return Err(b.err("port", "0 is not a port; use 1-65535"));
        }
        c.port = p;
    }
    if let Some(bind) = raw.bind {
        bind.parse::<std::net::IpAddr>()
            .map_err(|_| b.err("bind", format!("{bind:?} is not an IP address")))?;
        c.bind = bind;
    }
    if let Some(l) = raw.license.and_then(|l| l.file) {
        b.readable("license.file", &l)?;
        c.license_file = Some(l);
    }
    if let Some(path) = raw.api.and_then(|a| a.token_file) {
        c.api_token = b.secret("api.token_file", Some(path.clone()))?;
        c.api_token_file = Some(path);
    }
    if let Some(u) = b.url("jes.url", raw.jes.and_then(|j| j.url))? {
        c.jes_url = u;
    }
    if let Some(u) = b.url("jcs.url", raw.jcs.and_then(|j| j.url))? {
        c.jcs_url = u;
    }
    if let Some(jpd) = raw.jpd {
        if let Some(u) = b.url("jpd.url", jpd.url)? {
            c.jpd_url = u;
        }
        c.jpd_token = b.secret("jpd.token_file", jpd.token_file)?;
    }
    if let Some(e) = raw.entitlements {
        c.entitlements_interval =
            b.interval("entitlements.interval", e.interval, c.entitlements_interval)?;
    }
    if let Some(u) = raw.usage {
        if let Some(d) = u.spool_dir {
            c.usage_spool_dir = d;
        }
        c.usage_interval = b.interval("usage.interval", u.interval, c.usage_interval)?;
        if let Some(n) = u.batch_size {
            if n == 0 {
                return Err(b.err("usage.batch_size", "must be at least 1"));
            }
            c.usage_batch_size = n as usize;
        }
        if let Some(n) = u.max_file_bytes {
            if n == 0 {
                return Err(b.err("usage.max_file_bytes", "must be at least 1"));
            }
            c.usage_max_file_bytes = n;
        }
    }
    if let Some(a) = raw.archival {
        c.archival_interval = b.interval("archival.interval", a.interval, c.archival_interval)?;
        if let Some(repo) = a.repo {
            let ok = !repo.is_empty()
                && repo
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
                && !repo.starts_with('.');
            if !ok {
                return Err(b.err(
                    "archival.repo",
                    format!("{repo:?} is not a repository key (letters, digits, - _ .)"),
                ));
            }
            c.archival_repo = repo;
        }
        if let Some(n) = a.max_archive_bytes {
            if n < 1024 {
                return Err(b.err("archival.max_archive_bytes", "must be at least 1024"));
            }
            c.archival_max_archive_bytes = n;
        }
    }
    if let Some(a) = raw.airgap {
        c.airgap_enabled = a.enabled.unwrap_or(false);
        if let Some(d) = a.outbox_dir {
            c.airgap_outbox_dir = d;
        }
        if let Some(keys) = a.vendor_public_keys {
            for k in &keys {
                b.readable("airgap.vendor_public_keys", k)?;
            }
            c.airgap_vendor_public_keys = keys;
        }
    }
    if let Some(p) = raw.proxy {
        let username = p.username.filter(|u| !u.is_empty());
        let password = b.secret("proxy.password_file", p.password_file)?;
        if let Some(url) = b.url("proxy.url", p.url)? {
            c.proxy = Some(ProxyConfig {
                url,
                username,
                password,
            });
        } else if username.is_some() || password.is_some() {
            return Err(b.err(
                "proxy.url",
                "proxy.username or proxy.password_file is set but proxy.url is not",
            ));
        }
        c.no_proxy = p.no_proxy;
    }
    if let Some(ca) = raw.tls.and_then(|t| t.ca_file) {
        b.readable("tls.ca_file", &ca)?;
        c.tls_ca_file = Some(ca);
    }
    c.store_url = b.url("store.url", raw.store.and_then(|s| s.url))?;
    if let Some(h) = raw.http {
        c.connect_timeout =
            b.interval("http.connect_timeout", h.connect_timeout, c.connect_timeout)?;
        c.request_timeout =
            b.interval("http.request_timeout", h.request_timeout, c.request_timeout)?;
    }
    if let Some(r) = raw.retry {
        c.retry_initial = b.interval("retry.initial", r.initial, c.retry_initial)?;
        c.retry_max = b.interval("retry.max", r.max, c.retry_max)?;
    }
    if c.retry_max < c.retry_initial {
        return Err(b.err("retry.max", "must not be shorter than retry.initial"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests;
