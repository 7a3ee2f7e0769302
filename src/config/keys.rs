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
