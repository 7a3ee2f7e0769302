//! The list of keys, derived from the typed sections: the built-in defaults are serialized and
//! every leaf of the resulting tree is a key. Its environment name and the kind of value an
//! environment string must hold come from the same walk, so a new field is a new key with a new
//! variable without touching this file.

use super::shared::{Shared, SHARED_ENV_PREFIX};
use super::{Config, ENV_PREFIX};
use serde_yaml::Value;
use std::sync::OnceLock;

/// The kind of value a key holds; drives how an environment string is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string, path, URL or interval.
    Text,
    /// `true` or `false`.
    Bool,
    /// A whole number.
    Number,
    /// A list; in the environment, comma-separated.
    List,
}

/// The top-level section a key lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `jfconnect:`, variables `JF_JFCONNECT_*`.
    Jfconnect,
    /// `shared:` (the keys jfconnect reads of it), variables `JF_SHARED_*`.
    Shared,
}

impl Section {
    /// The section's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Section::Jfconnect => "jfconnect",
            Section::Shared => "shared",
        }
    }
}

/// One key jfconnect reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Its top-level section.
    pub section: Section,
    /// Dotted path under the section, e.g. `usage.spool_dir`.
    pub path: String,
    /// The environment variable that overrides it, e.g. `JF_JFCONNECT_USAGE_SPOOL_DIR`.
    pub env: String,
    /// What it holds.
    pub kind: Kind,
}

/// The environment variable that overrides `key` (a path under `jfconnect.`).
pub(crate) fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

impl Key {
    /// The full dotted name, e.g. `jfconnect.usage.spool_dir`.
    pub fn full(&self) -> String {
        format!("{}.{}", self.section.name(), self.path)
    }
}

/// Every key jfconnect reads under `jfconnect.`, in declaration order.
pub fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| derive(Section::Jfconnect, serde_yaml::to_value(Config::default())))
}

/// The keys jfconnect reads under `shared.`.
pub(crate) fn shared_keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| derive(Section::Shared, serde_yaml::to_value(Shared::default())))
}

/// Every key of both sections.
pub(crate) fn all_keys() -> impl Iterator<Item = &'static Key> {
    keys().iter().chain(shared_keys())
}

fn derive(section: Section, defaults: Result<Value, serde_yaml::Error>) -> Vec<Key> {
    let mut out = Vec::new();
    // Serializing plain defaults cannot fail; an empty list would fail every config test.
    if let Ok(tree) = defaults {
        let prefix = match section {
            Section::Jfconnect => ENV_PREFIX,
            Section::Shared => SHARED_ENV_PREFIX,
        };
        walk(section, prefix, "", &tree, &mut out);
    }
    out
}

/// The key whose variable is `name`.
pub(crate) fn by_env(name: &str) -> Option<&'static Key> {
    all_keys().find(|k| k.env == name)
}

fn walk(section: Section, env_prefix: &str, prefix: &str, node: &Value, out: &mut Vec<Key>) {
    let Value::Mapping(map) = node else { return };
    for (k, v) in map {
        let Some(name) = k.as_str() else { continue };
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let kind = match v {
            Value::Mapping(_) => {
                walk(section, env_prefix, &path, v, out);
                continue;
            }
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::Sequence(_) => Kind::List,
            // Strings, and optional keys whose default is unset (paths, URLs, names).
            _ => Kind::Text,
        };
        out.push(Key {
            section,
            env: format!("{env_prefix}{}", path.replace('.', "_").to_uppercase()),
            path,
            kind,
        });
    }
}

/// The section of the README that lists every key.
pub(crate) const README_KEYS: &str = "see the Configuration section of README.md";

/// The known key closest to the mistyped `full_key`, when one is close enough to be meant.
pub(crate) fn nearest_key(full_key: &str) -> Option<String> {
    all_keys()
        .map(|k| k.full())
        .map(|k| (strsim::jaro_winkler(full_key, &k), k))
        .filter(|(score, _)| *score >= 0.9)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// The reason given for a key jfconnect does not read: a near key if there is one, and where
/// every key is listed.
pub(crate) fn unknown_key(full_key: &str, what: &str) -> String {
    match nearest_key(full_key) {
        Some(near) => format!("{what} (did you mean {near}?); {README_KEYS}"),
        None => format!("{what}; {README_KEYS}"),
    }
}

#[cfg(test)]
mod near_key_tests {
    use super::*;

    #[test]
    fn a_near_key_is_suggested_and_a_far_one_is_not() {
        assert_eq!(
            nearest_key("jfconnect.prot").as_deref(),
            Some("jfconnect.port")
        );
        assert_eq!(
            nearest_key("jfconnect.usage.intreval").as_deref(),
            Some("jfconnect.usage.interval")
        );
        assert_eq!(nearest_key("jfconnect.colour_scheme"), None);
    }
}
