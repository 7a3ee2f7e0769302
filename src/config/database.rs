//! `shared.database.*` turned into where and how to connect: JFrog's JDBC URL
//! (`jdbc:postgresql://host:5432/db`) or a `postgres://…` URL, the login, and TLS use. Only
//! PostgreSQL is accepted; `driver` names a JDBC driver class and is ignored. Checked by
//! [`resolve`] during validation, so a finished `Config` carries settings that parse.

use super::shared::{Database, Shared};
use crate::secret::Secret;

/// always verified against the system roots and `tls.ca_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `sslmode=disable`: plain TCP.
    Disable,
    /// `sslmode=prefer` (the default): TLS when the server offers it.
    Prefer,
    /// `sslmode=require`, `verify-ca` or `verify-full`: TLS or no connection.
    Require,
}

/// Where the shared PostgreSQL is and how to log in.
#[derive(Clone)]
pub struct DatabaseSettings {
    /// Host name or address.
    pub host: String,
    /// Port (5432 unless the URL says otherwise).
    pub port: u16,
    /// Database name.
    pub database: String,
    /// Login.
    pub username: String,
    /// Password, from `password`, `password_file` or the URL.
    pub password: Option<Secret>,
    /// TLS use.
    pub tls: TlsMode,
    /// True when the password was written in the YAML file itself (worth a warning).
    pub plaintext_password_in_file: bool,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.display_url())
    }
}

impl DatabaseSettings {
    /// The URL without the password, for logs and `status`.
    pub(crate) fn display_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.username, self.host, self.port, self.database
        )
    }
}

/// Checks `shared.database` and `shared.security.masterKeyFile`; `Ok(None)` without a database.
/// A refusal names the key under `shared.` and says what is expected.
pub(crate) fn resolve(shared: &Shared) -> Result<Option<DatabaseSettings>, (&'static str, String)> {
    let db: &Database = &shared.database;
    if db.kind.is_none() && db.url.is_none() {
        return Ok(None);
    }
    if let Some(kind) = &db.kind {
        if !kind.eq_ignore_ascii_case("postgresql") {
            return Err((
                "database.type",
                format!("jfconnect keeps its shared state only in PostgreSQL; type {kind:?} is not supported (use postgresql)"),
            ));
        }
    }
    let Some(url) = &db.url else {
        return Err((
            "database.url",
            "is required when shared.database is set (e.g. jdbc:postgresql://host:5432/artifactory)".into(),
        ));
    };
    let parsed = parse_url(url).map_err(|r| ("database.url", r))?;
    let username = match db.username.clone().filter(|u| !u.is_empty()) {
        Some(u) => u,
        None => parsed.username.clone().ok_or((
            "database.username",
            "is required (or give the user in the URL)".to_string(),
        ))?,
    };
    // validate() has already read password_file into `password`; both set in the file is
    // ambiguous.
    let plaintext = db.password.is_some() && db.password_file.is_none();
    let password = db.password.clone().or(parsed.password.clone());
    let node = &shared.node.id;
    let node_ok = !node.is_empty()
        && node.len() <= 128
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !node_ok {
        return Err((
            "node.id",
            format!("{node:?}: expected 1 to 128 letters, digits, '-', '_' or '.'"),
        ));
    }
    // Only required here: the file is read when `serve` starts (a read-only command such as
    // `config check` on another machine must not fail on it).
    if shared.security.master_key_file.is_none() {
        return Err((
            "security.masterKeyFile",
            "is required when shared.database is set: the secrets kept in the database are sealed with it (use the same master.key as Artifactory on every node)".into(),
        ));
    }
    Ok(Some(DatabaseSettings {
        host: parsed.host,
        port: parsed.port,
        database: parsed.database,
        username,
        password,
        tls: parsed.tls,
        plaintext_password_in_file: plaintext,
    }))
}

#[derive(Debug, PartialEq, Eq)]
struct ParsedUrl {
    host: String,
    port: u16,
    database: String,
    username: Option<String>,
    password: Option<Secret>,
    tls: TlsMode,
}

/// Reads `jdbc:postgresql://host[:port]/db[?sslmode=…]` or `postgres[ql]://[user[:pw]@]host…`.
fn parse_url(text: &str) -> Result<ParsedUrl, String> {
    let rest = text.strip_prefix("jdbc:").unwrap_or(text);
    let url = url::Url::parse(rest).map_err(|e| {
        format!(
            "expected jdbc:postgresql://host:5432/database or postgres://host:5432/database ({e})"
        )
    })?;
    if !matches!(url.scheme(), "postgresql" | "postgres") {
        return Err(format!(
            "scheme {:?} is not PostgreSQL; expected jdbc:postgresql://host:5432/database",
            url.scheme()
        ));
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("names no host")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let database = url.path().trim_start_matches('/').to_string();
    if database.is_empty() || database.contains('/') {
        return Err("names no database (expected …/database after the host)".into());
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut tls = TlsMode::Prefer;
    for (k, v) in url.query_pairs() {
        match (k.as_ref(), v.as_ref()) {
            ("sslmode" | "ssl_mode", "disable") => tls = TlsMode::Disable,
            ("sslmode" | "ssl_mode", "allow" | "prefer") => tls = TlsMode::Prefer,
            ("sslmode" | "ssl_mode", "require" | "verify-ca" | "verify-full") => {
                tls = TlsMode::Require
            }
            ("ssl", "true") => tls = TlsMode::Require,
            ("sslmode" | "ssl_mode", other) => {
                return Err(format!(
                "sslmode {other:?} is not known (disable, prefer, require, verify-ca, verify-full)"
            ))
            }
            // Other JDBC parameters (timeouts, application name) concern the JDBC driver.
            _ => {}
        }
    }
    Ok(ParsedUrl {
        host,
        port: url.port().unwrap_or(5432),
        database,
        username: Some(url.username()).filter(|u| !u.is_empty()).map(decode),
        password: url.password().map(|p| Secret::new(decode(p))),
        tls,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, TlsMode};
    use std::collections::BTreeMap;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("master.key"),
            "00112233445566778899aabbccddeeff\n",
        )
        .unwrap();
        let yaml = yaml.replace(
            "KEYFILE",
            &dir.path().join("master.key").display().to_string(),
        );
        let p = dir.path().join("system.yaml");
        std::fs::write(&p, yaml).unwrap();
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_from(Some(&p), &env)
    }

    const JFROG: &str = "jfconnect: {}\nshared:\n  node:\n    id: art-1\n  database:\n    type: postgresql\n    driver: org.postgresql.Driver\n    url: jdbc:postgresql://db.example:5433/artifactory?sslmode=require\n    username: artifactory\n    password: pw\n  security:\n    masterKeyFile: KEYFILE\n";

    #[test]
    fn jfrog_system_yaml_database_section_is_read() {
        let c = load(JFROG, &[]).unwrap();
        let db = c.shared.database.settings.unwrap();
        assert_eq!(
            (db.host.as_str(), db.port, db.database.as_str()),
            ("db.example", 5433, "artifactory")
        );
        assert_eq!(db.username, "artifactory");
        assert_eq!(db.password.unwrap().expose(), "pw");
        assert!(db.plaintext_password_in_file);
        assert_eq!(db.tls, TlsMode::Require);
    }

    #[test]
    fn without_a_database_nothing_is_required() {
        let c = load("jfconnect: {}\nshared:\n  node:\n    id: n\n", &[]).unwrap();
        assert!(c.shared.database.settings.is_none());
    }

    #[test]
    fn a_database_needs_the_master_key_file() {
        let err = load(
            &JFROG.replace("  security:\n    masterKeyFile: KEYFILE\n", ""),
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("shared.security.masterKeyFile") && err.contains("is required"),
            "{err}"
        );
    }

    #[test]
    fn environment_overrides_the_url() {
        let c = load(JFROG, &[("JF_SHARED_DATABASE_URL", "postgres://b:2/y")]).unwrap();
        let db = c.shared.database.settings.unwrap();
        assert_eq!(
            (db.host.as_str(), db.port, db.database.as_str()),
            ("b", 2, "y")
        );
        assert_eq!(db.tls, TlsMode::Prefer);
    }

    #[test]
    fn another_database_type_and_bad_urls_are_refused_naming_the_key() {
        let err = load(&JFROG.replace("type: postgresql", "type: derby"), &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("shared.database.type") && err.contains("derby"),
            "{err}"
        );
        for url in [
            "jdbc:mysql://h:3306/d",
            "postgres://h:5432/",
            "not a url",
            "postgres://h/d?sslmode=sometimes",
        ] {
            let yaml = JFROG.replace(
                "jdbc:postgresql://db.example:5433/artifactory?sslmode=require",
                &format!("\"{url}\""),
            );
            let err = load(&yaml, &[]).unwrap_err().to_string();
            assert!(err.contains("shared.database.url"), "{url}: {err}");
        }
    }

    #[test]
    fn user_and_password_may_come_from_the_url_and_never_print() {
        let yaml = JFROG
            .replace("    username: artifactory\n    password: pw\n", "")
            .replace(
                "jdbc:postgresql://db.example:5433/artifactory?sslmode=require",
                "postgres://me:p%40ss@h/d?sslmode=disable",
            );
        let db = load(&yaml, &[]).unwrap().shared.database.settings.unwrap();
        assert_eq!(db.username, "me");
        assert_eq!(db.password.as_ref().unwrap().expose(), "p@ss");
        assert_eq!(db.tls, TlsMode::Disable);
        let shown = format!("{db:?} {}", db.display_url());
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
    }

    #[test]
    fn node_id_must_be_a_plain_name_with_a_database() {
        let err = load(&JFROG.replace("id: art-1", "id: \"a b\""), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("shared.node.id"), "{err}");
    }
}
