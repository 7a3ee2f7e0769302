//! The simulated JES's book: the registrations (tokens kept only as their SHA-256) and the
//! subscription it serves, persisted in `<data>/jes/state.json`.

use super::SimError;
use crate::protocol::{sha256_hex, Entitlement};
use crate::state::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// The subscription JES serves to every registered JPD (the JPD id is filled in per request).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub subscription_id: String,
    pub subscription_type: String,
    pub issued_at: String,
    pub entitlements: Vec<Entitlement>,
}

impl Default for Subscription {
    fn default() -> Self {
        let line = |product: &str, feature: &str| Entitlement {
            product: product.into(),
            feature: feature.into(),
            valid_from: None,
            valid_until: None,
        };
        Subscription {
            subscription_id: "sub-sim-0001".into(),
            subscription_type: "enterprise_plus".into(),
            issued_at: "2024-01-01T00:00:00Z".into(),
            entitlements: vec![
                line("artifactory", "ha"),
                line("artifactory", "federation"),
                line("xray", "scan"),
                line("distribution", "edge"),
            ],
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Book {
    /// SHA-256 of each registration token → the JPD it was issued to.
    pub tokens: HashMap<String, String>,
    pub subscription: Subscription,
}

/// Registrations and the served subscription, persisted in `<data>/jes/state.json`.
pub(crate) struct JesBook {
    file: PathBuf,
    pub book: Mutex<Book>,
}

impl JesBook {
    /// Reads the book back, or starts an empty one.
    pub fn load(dir: &Path) -> Result<JesBook, SimError> {
        let file = dir.join("state.json");
        let book = match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SimError::Corrupt {
                path: file.clone(),
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(SimError::io("read", &file, e)),
        };
        Ok(JesBook {
            file,
            book: Mutex::new(book),
        })
    }

    /// The JPD a token was issued to.
    pub(crate) async fn jpd_of(&self, token: &str) -> Option<String> {
        self.book
            .lock()
            .await
            .tokens
            .get(&sha256_hex(token.as_bytes()))
            .cloned()
    }

    /// Applies `change` to the book and writes it to disk (while still holding the lock, so
    /// writes land in order).
    pub async fn update<T>(
        &self,
        change: impl FnOnce(&mut Book) -> T,
    ) -> Result<T, std::io::Error> {
        let mut book = self.book.lock().await;
        let out = change(&mut book);
        let bytes = serde_json::to_vec_pretty(&*book).map_err(std::io::Error::other)?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || write_atomic(&file, &bytes))
            .await
            .map_err(std::io::Error::other)??;
        Ok(out)
    }
}
