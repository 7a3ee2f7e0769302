//! `jfconnect config check --show`: the effective configuration, one key a line, with where
//! each value came from (default, file:line, variable); secrets print as `***`.

use super::keys::{all_keys, Section};
use super::Config;
use serde_yaml::Value;

/// Keys holding a secret itself rather than the path of a file holding it.
const SECRET_KEYS: &[&str] = &["shared.database.password"];

impl Config {
    /// The effective configuration as text, one key a line.
    pub fn show(&self) -> String {
        let jfconnect = serde_yaml::to_value(self).unwrap_or(Value::Null);
        let shared = serde_yaml::to_value(&self.shared).unwrap_or(Value::Null);
        let rows: Vec<(String, String, String)> = all_keys()
            .map(|k| {
                let tree = match k.section {
                    Section::Jfconnect => &jfconnect,
                    Section::Shared => &shared,
                };
                let full = k.full();
                let value = super::layers::lookup(tree, &k.path);
                let shown = match value {
                    None | Some(Value::Null) => "(unset)".to_string(),
                    Some(_) if SECRET_KEYS.contains(&full.as_str()) => "***".into(),
                    Some(v) => scalar(v),
                };
                let source = self.sources.source(&full).to_string();
                (full, shown, source)
            })
            .collect();
        let kw = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let vw = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).min(48);
        rows.iter()
            .map(|(k, v, s)| format!("{k:<kw$}  {v:<vw$}  {s}\n"))
            .collect()
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Sequence(items) if items.is_empty() => "(none)".into(),
        Value::Sequence(items) => items.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
    }
}
