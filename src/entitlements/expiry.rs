//! Entitlements that end soon. JFrog platforms go read-only when a license ends, so an admin
//! is warned ahead (`entitlements.warn_before`, default 30 days): a WARN row in `status`, a
//! gauge per entitlement on `/metrics`, and a WARN log line at most once a day. Readiness is not
//! affected: the entitlements are still valid.

use crate::protocol::Entitlements;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// When one entitlement ends.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntitlementEnd {
    /// Product, e.g. `artifactory`.
    pub product: String,
    /// Feature, e.g. `ha`.
    pub feature: String,
    /// End of validity.
    pub valid_until: DateTime<Utc>,
}

/// The end of every entitlement that has one (lines without an end, or with an end that is not
/// RFC 3339, are left out).
pub fn ends(e: &Entitlements) -> Vec<EntitlementEnd> {
    e.entitlements
        .iter()
        .filter_map(|line| {
            let until = DateTime::parse_from_rfc3339(line.valid_until.as_deref()?).ok()?;
            Some(EntitlementEnd {
                product: line.product.clone(),
                feature: line.feature.clone(),
                valid_until: until.with_timezone(&Utc),
            })
        })
        .collect()
}

/// The entitlements still valid at `now` that end within `window`, soonest first.
pub(crate) fn ending_within(
    e: &Entitlements,
    now: DateTime<Utc>,
    window: Duration,
) -> Vec<EntitlementEnd> {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let horizon = now
        .checked_add_signed(window)
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut soon: Vec<EntitlementEnd> = ends(e)
        .into_iter()
        .filter(|end| end.valid_until > now && end.valid_until <= horizon)
        .collect();
    soon.sort_by_key(|end| end.valid_until);
    soon
}

/// Lets a warning through at most once a day.
#[derive(Debug, Default)]
pub(crate) struct DailyWarning {
    last: Mutex<Option<DateTime<Utc>>>,
}

impl DailyWarning {
    /// True (and remembered) when no warning was let through in the 24 hours before `now`.
    pub(crate) fn due(&self, now: DateTime<Utc>) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(t) if now - t < chrono::Duration::hours(24) => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Entitlement;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ents(lines: &[(&str, Option<&str>)]) -> Entitlements {
        Entitlements {
            subscription_id: "sub".into(),
            subscription_type: "enterprise".into(),
            jpd_id: "jpd".into(),
            issued_at: "2026-01-01T00:00:00Z".into(),
            entitlements: lines
                .iter()
                .map(|(f, until)| Entitlement {
                    product: "artifactory".into(),
                    feature: (*f).into(),
                    valid_from: None,
                    valid_until: until.map(String::from),
                })
                .collect(),
        }
    }

    #[test]
    fn only_entitlements_ending_inside_the_window_warn() {
        let e = ents(&[
            ("forever", None),
            ("soon", Some("2026-12-20T00:00:00Z")),
            ("sooner", Some("2026-12-05T00:00:00Z")),
            ("later", Some("2027-03-01T00:00:00Z")),
            ("gone", Some("2026-11-01T00:00:00Z")),
            ("garbled", Some("next week")),
        ]);
        let now = at("2026-12-01T00:00:00Z");
        let soon = ending_within(&e, now, Duration::from_secs(30 * 86400));
        let names: Vec<&str> = soon.iter().map(|s| s.feature.as_str()).collect();
        assert_eq!(names, ["sooner", "soon"]);
        assert_eq!(ends(&e).len(), 4, "every parseable end is a gauge");
    }

    #[test]
    fn the_daily_warning_passes_once_per_24_hours() {
        let w = DailyWarning::default();
        let t = at("2026-12-01T00:00:00Z");
        assert!(w.due(t));
        assert!(!w.due(t + chrono::Duration::hours(23)));
        assert!(w.due(t + chrono::Duration::hours(24)));
    }
}
