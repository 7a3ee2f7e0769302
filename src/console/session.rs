//! Console sessions and the per-address login throttle, in memory.
//!
//! A session is made when the admin token is presented at the login page; the browser holds
//! only a random id in an `HttpOnly`, `SameSite=Strict` cookie, and the server keeps the id's
//! SHA-256 with the session's CSRF token, its one-shot message and the bundle waiting for
//! "Apply". Sessions end after [`IDLE`] without a request or [`MAX_AGE`] after login, and at
//! most [`MAX_SESSIONS`] live at once (the oldest goes first). Times are monotonic readings of
//! the app's clock, so a wall-clock jump neither ends nor extends a session.
//!
//! Architecture invariant: this module does no I/O; a waiting bundle's temp file is removed
//! when its session is dropped (the temp path does it).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after login, whatever happens.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions alive at once.
pub(crate) const MAX_SESSIONS: usize = 32;
/// Failed logins from one address before it has to wait.
pub const MAX_FAILURES: u32 = 5;
/// How long failures from one address are remembered (and the wait once over the limit).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most addresses the throttle remembers.
const MAX_ADDRESSES: usize = 4096;

/// A message shown once on the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    /// `ok`, `warn` or `bad`.
    pub tone: &'static str,
    /// The sentence.
    pub text: String,
}

impl Flash {
    /// A success.
    pub fn ok(text: impl Into<String>) -> Self {
        Flash {
            tone: "ok",
            text: text.into(),
        }
    }
    /// Something to notice.
    pub fn warn(text: impl Into<String>) -> Self {
        Flash {
            tone: "warn",
            text: text.into(),
        }
    }
    /// A refusal or failure.
    pub fn bad(text: impl Into<String>) -> Self {
        Flash {
            tone: "bad",
            text: text.into(),
        }
    }
}

/// An uploaded entitlements bundle that passed the checks and waits for Apply or Cancel.
#[derive(Debug)]
pub(crate) struct PendingBundle {
    /// The uploaded file (removed when dropped).
    pub file: tempfile::TempPath,
    /// The name the browser gave it.
    pub name: String,
    /// A random id the Apply and Cancel forms carry, so a stale page cannot apply a newer upload.
    pub id: String,
}

/// One logged-in browser.
#[derive(Debug)]
pub(crate) struct Session {
    /// The token every state-changing form carries.
    pub csrf: String,
    /// Shown once on the next page.
    pub flash: Option<Flash>,
    /// The bundle waiting for Apply.
    pub pending: Option<PendingBundle>,
    created: Duration,
    last_seen: Duration,
}

/// The live sessions, by the SHA-256 of their cookie.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    by_hash: HashMap<String, Session>,
}

fn hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A fresh random token (256 bits, hex).
pub(crate) fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// Starts a session at `now`; answers the cookie value.
    pub fn start(&mut self, now: Duration) -> String {
        self.expire(now);
        while self.by_hash.len() >= MAX_SESSIONS {
            let oldest = self
                .by_hash
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.by_hash.remove(&k),
                None => break,
            };
        }
        let id = random_token();
        self.by_hash.insert(
            hash(&id),
            Session {
                csrf: random_token(),
                flash: None,
                pending: None,
                created: now,
                last_seen: now,
            },
        );
        id
    }

    /// The live session of cookie `id`, its idle time restarted; `None` once it has ended.
    pub fn touch(&mut self, id: &str, now: Duration) -> Option<&mut Session> {
        self.expire(now);
        let s = self.by_hash.get_mut(&hash(id))?;
        s.last_seen = now;
        Some(s)
    }

    /// Ends the session of cookie `id`.
    pub fn end(&mut self, id: &str) {
        self.by_hash.remove(&hash(id));
    }

    fn expire(&mut self, now: Duration) {
        self.by_hash.retain(|_, s| {
            now.saturating_sub(s.last_seen) < IDLE && now.saturating_sub(s.created) < MAX_AGE
        });
    }
}

/// Failed logins per address.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    failures: HashMap<IpAddr, (u32, Duration)>,
}

impl Throttle {
    /// `Err(wait)` when `addr` failed [`MAX_FAILURES`] times within the window.
    pub fn check(&mut self, addr: IpAddr, now: Duration) -> Result<(), Duration> {
        match self.failures.get(&addr) {
            Some(&(n, since)) if now.saturating_sub(since) < FAILURE_WINDOW => {
                if n >= MAX_FAILURES {
                    Err(FAILURE_WINDOW - now.saturating_sub(since))
                } else {
                    Ok(())
                }
            }
            Some(_) => {
                self.failures.remove(&addr);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a failed login from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now: Duration) {
        if self.failures.len() >= MAX_ADDRESSES {
            self.failures
                .retain(|_, (_, since)| now.saturating_sub(*since) < FAILURE_WINDOW);
        }
        if self.failures.len() >= MAX_ADDRESSES && !self.failures.contains_key(&addr) {
            // Full of recent failures: forget the oldest rather than grow.
            if let Some(oldest) = self
                .failures
                .iter()
                .min_by_key(|(_, v)| v.1)
                .map(|(k, _)| *k)
            {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(addr).or_insert((0, now));
        if now.saturating_sub(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Forgets `addr`'s failures after a successful login.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.failures.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_session_ends_when_idle_or_too_old_and_only_its_cookie_finds_it() {
        let mut s = Sessions::default();
        let id = s.start(S(0));
        assert!(s.touch("not-the-cookie", S(1)).is_none());
        assert!(s.touch(&id, S(IDLE.as_secs() - 1)).is_some());
        // Kept alive by requests, but not past its maximum age.
        let mut t = IDLE.as_secs() - 1;
        while t + IDLE.as_secs() / 2 < MAX_AGE.as_secs() {
            t += IDLE.as_secs() / 2;
            assert!(s.touch(&id, S(t)).is_some(), "at {t}s");
        }
        assert!(s.touch(&id, S(MAX_AGE.as_secs())).is_none());
        let id = s.start(S(0));
        assert!(s.touch(&id, S(IDLE.as_secs())).is_none(), "idle too long");
        let id = s.start(S(0));
        s.end(&id);
        assert!(s.touch(&id, S(1)).is_none());
    }

    #[test]
    fn sessions_are_capped_and_the_oldest_goes() {
        let mut s = Sessions::default();
        let first = s.start(S(0));
        for i in 1..=MAX_SESSIONS as u64 {
            s.start(S(i));
        }
        assert!(s.touch(&first, S(100)).is_none());
        assert_eq!(s.by_hash.len(), MAX_SESSIONS);
    }

    #[test]
    fn an_address_waits_after_too_many_failures_and_others_do_not() {
        let mut t = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for i in 0..MAX_FAILURES {
            assert!(t.check(a, S(i as u64)).is_ok());
            t.failed(a, S(i as u64));
        }
        let wait = t.check(a, S(10)).unwrap_err();
        assert_eq!(wait, FAILURE_WINDOW - S(10));
        assert!(t.check(b, S(10)).is_ok());
        assert!(
            t.check(a, FAILURE_WINDOW + S(1)).is_ok(),
            "the window passed"
        );
        t.failed(a, FAILURE_WINDOW + S(1));
        t.succeeded(a);
        assert!(t.failures.is_empty());
    }
}
