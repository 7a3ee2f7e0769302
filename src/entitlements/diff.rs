//! What an entitlements change would do, for a person to read before it happens (the
//! console's preview of an entitlements bundle): features added, removed, or with a changed
//! validity window, per product.
//!
//! Architecture invariant: this module does no I/O; it compares two values.

use crate::protocol::{Entitlement, Entitlements};
use std::collections::BTreeMap;

/// A validity window as written in the entitlements (RFC 3339 or absent).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    /// Start; absent means "now".
    pub valid_from: Option<String>,
    /// End; absent means "no end".
    pub valid_until: Option<String>,
}

impl Window {
    fn of(e: &Entitlement) -> Window {
        Window {
            valid_from: e.valid_from.clone(),
            valid_until: e.valid_until.clone(),
        }
    }
}

/// One feature's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureChange {
    /// Served after the change, not before.
    Added {
        /// The feature.
        feature: String,
        /// Its windows after.
        after: Vec<Window>,
    },
    /// Served before the change, not after.
    Removed {
        /// The feature.
        feature: String,
        /// Its windows before.
        before: Vec<Window>,
    },
    /// Served before and after, with other validity windows.
    Validity {
        /// The feature.
        feature: String,
        /// Its windows before.
        before: Vec<Window>,
        /// Its windows after.
        after: Vec<Window>,
    },
}

/// The changes of one product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDiff {
    /// The product.
    pub product: String,
    /// Its changed features, by name.
    pub changes: Vec<FeatureChange>,
    /// Features left as they are.
    pub unchanged: usize,
}

/// What replacing `before` with `after` changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementsDiff {
    /// Subscription and tier before, if any entitlements were held.
    pub subscription_before: Option<(String, String)>,
    /// Subscription and tier after.
    pub subscription_after: (String, String),
    /// Every product of either side, by name.
    pub products: Vec<ProductDiff>,
}

impl EntitlementsDiff {
    /// True when the change would change nothing a product sees.
    pub fn is_empty(&self) -> bool {
        self.subscription_before.as_ref() == Some(&self.subscription_after)
            && self.products.iter().all(|p| p.changes.is_empty())
    }

    /// Counts of (added, removed, validity changed) features.
    pub(crate) fn totals(&self) -> (usize, usize, usize) {
        let mut t = (0, 0, 0);
        for c in self.products.iter().flat_map(|p| &p.changes) {
            match c {
                FeatureChange::Added { .. } => t.0 += 1,
                FeatureChange::Removed { .. } => t.1 += 1,
                FeatureChange::Validity { .. } => t.2 += 1,
            }
        }
        t
    }
}

type ByProduct = BTreeMap<String, BTreeMap<String, Vec<Window>>>;

fn group(e: Option<&Entitlements>) -> ByProduct {
    let mut out = ByProduct::new();
    for line in e.map(|e| e.entitlements.as_slice()).unwrap_or_default() {
        out.entry(line.product.clone())
            .or_default()
            .entry(line.feature.clone())
            .or_default()
            .push(Window::of(line));
    }
    for windows in out.values_mut().flat_map(|f| f.values_mut()) {
        windows.sort();
    }
    out
}

/// Compares the entitlements held (`None` when none are) with those a bundle brings.
pub fn diff(before: Option<&Entitlements>, after: &Entitlements) -> EntitlementsDiff {
    let (old, new) = (group(before), group(Some(after)));
    let products: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let empty = BTreeMap::new();
    let products = products
        .into_iter()
        .map(|product| {
            let (o, n) = (
                old.get(product).unwrap_or(&empty),
                new.get(product).unwrap_or(&empty),
            );
            let features: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            let mut changes = Vec::new();
            let mut unchanged = 0;
            for feature in features {
                let feature_name = feature.clone();
                match (o.get(feature), n.get(feature)) {
                    (None, Some(after)) => changes.push(FeatureChange::Added {
                        feature: feature_name,
                        after: after.clone(),
                    }),
                    (Some(before), None) => changes.push(FeatureChange::Removed {
                        feature: feature_name,
                        before: before.clone(),
                    }),
                    (Some(before), Some(after)) if before != after => {
                        changes.push(FeatureChange::Validity {
                            feature: feature_name,
                            before: before.clone(),
                            after: after.clone(),
                        })
                    }
                    _ => unchanged += 1,
                }
            }
            ProductDiff {
                product: product.clone(),
                changes,
                unchanged,
            }
        })
        .collect();
    EntitlementsDiff {
        subscription_before: before
            .map(|b| (b.subscription_id.clone(), b.subscription_type.clone())),
        subscription_after: (
            after.subscription_id.clone(),
            after.subscription_type.clone(),
        ),
        products,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product: &str, feature: &str, until: Option<&str>) -> Entitlement {
        Entitlement {
            product: product.into(),
            feature: feature.into(),
            valid_from: None,
            valid_until: until.map(Into::into),
        }
    }

    fn ents(lines: Vec<Entitlement>) -> Entitlements {
        Entitlements {
            subscription_id: "sub".into(),
            subscription_type: "pro".into(),
            jpd_id: "jpd".into(),
            issued_at: "2026-01-01T00:00:00Z".into(),
            entitlements: lines,
        }
    }

    #[test]
    fn added_removed_and_changed_features_are_told_apart_per_product() {
        let before = ents(vec![
            line("artifactory", "ha", None),
            line("artifactory", "federation", Some("2027-01-01T00:00:00Z")),
            line("xray", "scan", None),
        ]);
        let after = ents(vec![
            line("artifactory", "ha", None),
            line("artifactory", "federation", Some("2028-01-01T00:00:00Z")),
            line("distribution", "edge", None),
        ]);
        let d = diff(Some(&before), &after);
        assert_eq!(d.totals(), (1, 1, 1));
        assert!(!d.is_empty());
        let names: Vec<&str> = d.products.iter().map(|p| p.product.as_str()).collect();
        assert_eq!(names, ["artifactory", "distribution", "xray"]);
        assert_eq!(d.products[0].unchanged, 1);
        assert!(matches!(
            &d.products[0].changes[0],
            FeatureChange::Validity { feature, .. } if feature == "federation"
        ));
        assert!(matches!(
            &d.products[2].changes[0],
            FeatureChange::Removed { .. }
        ));
    }

    #[test]
    fn nothing_held_means_everything_is_added_and_the_same_set_is_empty() {
        let after = ents(vec![line("xray", "scan", None), line("xray", "scan", None)]);
        let d = diff(None, &after);
        assert_eq!(d.totals(), (1, 0, 0));
        assert_eq!(d.subscription_before, None);
        assert!(diff(Some(&after), &after).is_empty());
    }
}
