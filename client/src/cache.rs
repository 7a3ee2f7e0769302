//! The entitlements a client holds: the last good answer from jfconnect, indexed for fast
//! local questions, and its file form.

use crate::proto;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Where jfconnect got the entitlements from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// Not said (an older jfconnect).
    #[default]
    Unknown,
    /// Fetched from the entitlements server over the network.
    Connected,
    /// Imported from a signed entitlements bundle.
    AirGapped,
}

impl From<i32> for Source {
    fn from(v: i32) -> Self {
        match proto::Source::try_from(v) {
            Ok(proto::Source::Connected) => Source::Connected,
            Ok(proto::Source::AirGapped) => Source::AirGapped,
            _ => Source::Unknown,
        }
    }
}

/// One product feature with its validity window (RFC 3339; `None` means open).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entitlement {
    /// Product, e.g. `xray`.
    pub product: String,
    /// Feature, e.g. `scan`.
    pub feature: String,
    /// Start of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// End of validity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
}

/// Validity window in Unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Option<i64>,
    until: Option<i64>,
}

/// The entitlements as jfconnect last served them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// jfconnect's version (strong ETag without quotes) of these entitlements.
    #[serde(default)]
    pub version: String,
    /// Where jfconnect got them.
    #[serde(default)]
    pub source: Source,
    /// The JPD they belong to.
    #[serde(default)]
    pub jpd_id: String,
    /// The subscription.
    #[serde(default)]
    pub subscription_id: String,
    /// Its tier.
    #[serde(default)]
    pub subscription_type: String,
    /// The entitlements.
    pub entitlements: Vec<Entitlement>,
    /// When jfconnect last received them changed (RFC 3339).
    #[serde(default)]
    pub fetched_at: String,
    /// When their source last confirmed them (RFC 3339).
    #[serde(default)]
    pub confirmed_at: String,
    #[serde(skip)]
    index: HashMap<String, HashMap<String, Window>>,
}

fn millis(t: &Option<String>) -> Option<i64> {
    t.as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp_millis())
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Snapshot {
    /// Builds the lookup index; call after filling the fields.
    fn indexed(mut self) -> Self {
        let mut index: HashMap<String, HashMap<String, Window>> = HashMap::new();
        for e in &self.entitlements {
            let window = Window {
                from: millis(&e.valid_from),
                until: millis(&e.valid_until),
            };
            index
                .entry(e.product.clone())
                .or_default()
                .insert(e.feature.clone(), window);
        }
        self.index = index;
        self
    }

    /// From a gRPC reply.
    pub fn from_reply(r: proto::EntitlementsReply) -> Self {
        Snapshot {
            version: r.version,
            source: Source::from(r.source),
            jpd_id: r.jpd_id,
            subscription_id: r.subscription_id,
            subscription_type: r.subscription_type,
            entitlements: r
                .entitlements
                .into_iter()
                .map(|e| Entitlement {
                    product: e.product,
                    feature: e.feature,
                    valid_from: non_empty(e.valid_from),
                    valid_until: non_empty(e.valid_until),
                })
                .collect(),
            fetched_at: r.fetched_at,
            confirmed_at: r.confirmed_at,
            index: HashMap::new(),
        }
        .indexed()
    }

    /// From the body of `GET /api/v1/entitlements` and its `ETag`.
    pub fn from_http(etag: &str, body: &[u8]) -> Result<Self, serde_json::Error> {
        let mut s: Snapshot = serde_json::from_slice(body)?;
        s.version = etag.trim_start_matches("W/").trim_matches('"').to_string();
        Ok(s.indexed())
    }

    /// Reads a file written by [`Snapshot::save`]; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> std::io::Result<Option<Self>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let s: Snapshot = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        Ok(Some(s.indexed()))
    }

    /// Writes the snapshot to `path` atomically and durably (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".jfconnect-cache-")
            .tempfile_in(dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// Is `product`'s `feature` entitled at `now`? A lookup in memory.
    pub fn is_entitled_at(&self, product: &str, feature: &str, now: DateTime<Utc>) -> bool {
        let now = now.timestamp_millis();
        self.index
            .get(product)
            .and_then(|features| features.get(feature))
            .is_some_and(|w| w.from.is_none_or(|f| f <= now) && w.until.is_none_or(|u| now < u))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot::from_http(
            "\"v1\"",
            br#"{"jpd_id":"j","subscription_id":"s","subscription_type":"pro",
                 "entitlements":[
                   {"product":"xray","feature":"scan"},
                   {"product":"artifactory","feature":"ha","valid_until":"2030-01-01T00:00:00Z"},
                   {"product":"artifactory","feature":"later","valid_from":"2029-01-01T00:00:00Z"}],
                 "fetched_at":"2026-01-01T00:00:00Z","confirmed_at":"2026-01-01T00:00:00Z",
                 "age_seconds":3,"source":"air-gapped"}"#,
        )
        .unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn answers_from_the_index_with_validity_windows() {
        let s = sample();
        assert_eq!(s.version, "v1");
        assert_eq!(s.source, Source::AirGapped);
        let now = at("2028-06-01T00:00:00Z");
        assert!(s.is_entitled_at("xray", "scan", now));
        assert!(s.is_entitled_at("artifactory", "ha", now));
        assert!(!s.is_entitled_at("artifactory", "ha", at("2030-01-01T00:00:00Z")));
        assert!(!s.is_entitled_at("artifactory", "later", now));
        assert!(s.is_entitled_at("artifactory", "later", at("2029-01-01T00:00:00Z")));
        assert!(!s.is_entitled_at("xray", "nope", now));
        assert!(!s.is_entitled_at("nope", "scan", now));
    }

    #[test]
    fn saved_snapshot_loads_back_with_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        sample().save(&path).unwrap();
        let back = Snapshot::load(&path).unwrap().unwrap();
        assert_eq!(back.version, "v1");
        assert!(back.is_entitled_at("xray", "scan", at("2028-01-01T00:00:00Z")));
        assert!(Snapshot::load(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn damaged_cache_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, b"{not json").unwrap();
        let err = Snapshot::load(&path).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
