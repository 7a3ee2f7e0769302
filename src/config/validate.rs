//! The one validation step: what a key's type alone cannot refuse (a zero port, an unreadable
//! file, a proxy user without a proxy), the secrets read once into [`Secret`], and the paths
//! whose defaults live under `data_dir`.

use super::layers::Sources;
use super::{Config, ConfigError};
use crate::secret::{Secret, MAX_SECRET_FILE, MAX_TEXT_FILE};
use std::path::Path;

impl Config {
    /// Checks the deserialized configuration and finishes it; every refusal names its key.
    pub(crate) fn validate(&mut self, sources: &Sources) -> Result<(), ConfigError> {
        let err = |key: &str, reason: String| sources.error(&format!("jfconnect.{key}"), reason);
        if self.port == 0 {
            return Err(err("port", format!("{}, not 0", super::kinds::PORT_RANGE)));
        }
        if self.grpc.port == 0 {
            return Err(err(
                "grpc.port",
                format!("{}, not 0", super::kinds::PORT_RANGE),
            ));
        }
        if self.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(err("bind", format!("{:?} is not an IP address", self.bind)));
        }
        if let Some(l) = &self.license.file {
            readable(l, MAX_SECRET_FILE).map_err(|r| err("license.file", r))?;
        }
        self.api.token =
            secret(self.api.token_file.as_deref()).map_err(|r| err("api.token_file", r))?;
        self.api.admin_token = secret(self.api.admin_token_file.as_deref())
            .map_err(|r| err("api.admin_token_file", r))?;
        if let (Some(read), Some(admin)) = (&self.api.token, &self.api.admin_token) {
            if read == admin {
                return Err(err(
                    "api.admin_token_file",
                    "holds the same token as api.token_file; give the admin scope its own token"
                        .into(),
                ));
            }
        }
        self.jpd.token =
            secret(self.jpd.token_file.as_deref()).map_err(|r| err("jpd.token_file", r))?;
        match (&self.tls.server.cert_file, &self.tls.server.key_file) {
            (Some(_), None) => {
                return Err(err(
                    "tls.server.key_file",
                    "is needed with tls.server.cert_file (both or neither)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(err(
                    "tls.server.cert_file",
                    "is needed with tls.server.key_file (both or neither)".into(),
                ))
            }
            (Some(c), Some(k)) => {
                readable(c, MAX_TEXT_FILE).map_err(|r| err("tls.server.cert_file", r))?;
                readable(k, MAX_SECRET_FILE).map_err(|r| err("tls.server.key_file", r))?;
            }
            (None, None) => {}
        }
        if self.api.max_connections == 0 {
            return Err(err("api.max_connections", "must be at least 1".into()));
        }
        if self.log.max_bytes == 0 {
            return Err(err("log.max_bytes", "must be at least 1".into()));
        }
        if self.log.max_files == 0 {
            return Err(err("log.max_files", "must be at least 1".into()));
        }
        if self.usage.batch_size == 0 {
            return Err(err("usage.batch_size", "must be at least 1".into()));
        }
        if self.usage.max_file_bytes == 0 {
            return Err(err("usage.max_file_bytes", "must be at least 1".into()));
        }
        if self.usage.max_batch_bytes == 0 {
            return Err(err("usage.max_batch_bytes", "must be at least 1".into()));
        }
        let repo = &self.archival.repo;
        let repo_ok = !repo.is_empty()
            && repo
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
            && !repo.starts_with('.');
        if !repo_ok {
            return Err(err(
                "archival.repo",
                format!("{repo:?} is not a repository key (letters, digits, - _ .)"),
            ));
        }
        if self.archival.max_archive_bytes < 1024 {
            return Err(err(
                "archival.max_archive_bytes",
                "must be at least 1024".into(),
            ));
        }
        // A bundle larger than a reader's cap (2 GiB) could not be imported at the vendor.
        if !(1 << 20..=2 << 30).contains(&self.airgap.max_bundle_bytes) {
            return Err(err(
                "airgap.max_bundle_bytes",
                "must be between 1048576 (1 MiB) and 2147483648 (2 GiB)".into(),
            ));
        }
        for k in &self.airgap.vendor_public_keys {
            readable(k, MAX_SECRET_FILE).map_err(|r| err("airgap.vendor_public_keys", r))?;
        }
        let proxy = &mut self.proxy;
        proxy.username = proxy.username.take().filter(|u| !u.is_empty());
        proxy.password =
            secret(proxy.password_file.as_deref()).map_err(|r| err("proxy.password_file", r))?;
        if proxy.url.is_none() && (proxy.username.is_some() || proxy.password.is_some()) {
            return Err(err(
                "proxy.url",
                "proxy.username or proxy.password_file is set but proxy.url is not".into(),
            ));
        }
        if let Some(ca) = &self.tls.ca_file {
            readable(ca, MAX_TEXT_FILE).map_err(|r| err("tls.ca_file", r))?;
        }
        if self.retry.max < self.retry.initial {
            return Err(err(
                "retry.max",
                "must not be shorter than retry.initial".into(),
            ));
        }
        if self.ha.lease_renew >= self.ha.lease_ttl {
            return Err(err(
                "ha.lease_renew",
                format!(
                    "must be shorter than ha.lease_ttl ({}), or a holder loses its lease between two renewals",
                    super::serde_forms::format_interval(self.ha.lease_ttl)
                ),
            ));
        }
        let shared_err =
            |key: &str, reason: String| sources.error(&format!("shared.{key}"), reason);
        if let Some(p) = &self.shared.database.password_file {
            self.shared.database.password =
                secret(Some(p)).map_err(|r| shared_err("database.password_file", r))?;
        }
        if self.shared.node.id.trim().is_empty() {
            self.shared.node.id = host_name(&self.env);
        }
        self.shared.database.settings =
            super::database::resolve(&self.shared).map_err(|(k, r)| shared_err(k, r))?;
        self.fill_derived_paths();
        Ok(())
    }
}

/// Reads the secret file at `path`, if one is named; refuses an unreadable or empty one.
fn secret(path: Option<&Path>) -> Result<Option<Secret>, String> {
    let Some(path) = path else { return Ok(None) };
    let secret = Secret::from_file(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if secret.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(Some(secret))
}

/// Checks now that `path` is a regular file under `cap` that can be read, so a FIFO, a device or
/// a huge file is refused at startup naming the key, not met later by a job.
fn readable(path: &Path, cap: u64) -> Result<(), String> {
    crate::secret::read_limited(path, cap)
        .map(drop)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// This machine's host name: `$HOSTNAME`, else the kernel's, else `localhost`.
fn host_name(env: &super::ProcessEnv) -> String {
    env.var("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
