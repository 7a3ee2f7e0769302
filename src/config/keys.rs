//! The list of keys, derived from the typed sections: the built-in defaults are serialized and
//! every leaf of the resulting tree is a key. Its environment name and the kind of value an
//! environment string must hold come from the same walk, so a new field is a new key with a new
//! variable without touching this file.

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

/// One key under `jfconnect.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// Dotted path under `jfconnect.`, e.g. `usage.spool_dir`.
    pub path: String,
    /// The environment variable that overrides it, e.g. `JF_JFCONNECT_USAGE_SPOOL_DIR`.
    pub env: String,
    /// What it holds.
    pub kind: Kind,
}

/// The environment variable that overrides `key` (a path under `jfconnect.`).
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

/// Every key jfconnect reads under `jfconnect.`, in declaration order.
pub fn keys() -> &'static [Key] {
    static KEYS: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut out = Vec::new();
        // Serializing plain defaults cannot fail; an empty list would fail every config test.
        if let Ok(tree) = serde_yaml::to_value(Config::default()) {
            walk("", &tree, &mut out);
        }
        out
    })
}

/// The key whose variable is `name`.
pub(crate) fn by_env(name: &str) -> Option<&'static Key> {
    keys().iter().find(|k| k.env == name)
}

fn walk(prefix: &str, node: &Value, out: &mut Vec<Key>) {
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
                walk(&path, v, out);
                continue;
            }
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::Sequence(_) => Kind::List,
            // Strings, and optional keys whose default is unset (paths, URLs, names).
            _ => Kind::Text,
        };
        out.push(Key {
            env: env_name(&path),
            path,
            kind,
        });
    }
}
