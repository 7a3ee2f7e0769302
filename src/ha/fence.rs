//! What a leaseholder's writes carry ([`Fence`]) and the refusal of a stale one ([`Fenced`]).
//! Its own file so that `db` (whose error wraps [`Fenced`]) and `lease` (which uses `db`) do not
//! import each other.

/// A granted lease: what a leaseholder's writes carry (defined with the state trait, whose
/// schedule writes carry it too).
pub use crate::state::Fence;

/// A leaseholder write refused because the lease moved on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node {} may no longer write for job {}: its lease (epoch {}) is no longer current{}", .fence.holder, .fence.job, .fence.epoch, current_text(.current))]
pub struct Fenced {
    /// The stale fence.
    pub fence: Fence,
    /// The lease as it is now: holder and epoch, if anyone holds it.
    pub current: Option<(String, i64)>,
}

fn current_text(current: &Option<(String, i64)>) -> String {
    match current {
        Some((holder, epoch)) => format!(" (node {holder} holds it at epoch {epoch})"),
        None => String::new(),
    }
}
