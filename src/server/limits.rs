//! The limits every port jfconnect serves puts on its connections, in one place so the API
//! port (with or without TLS) and the gRPC port keep the same rules.
//!
//! A peer that opens a connection and sends nothing, or sends a request head one byte at a time
//! (slowloris), or a head of megabytes, must cost bounded memory and time, with no token:
//! - `header_read_timeout`: a new connection's TLS handshake and first request head must be
//!   complete within this time of the accept;
//! - `idle_timeout`: once a response has ended, the next request head must be complete within
//!   this time, or the connection is closed (keep-alive idle);
//! - `max_connections`: at most this many connections at once; at the cap the oldest connection
//!   that has not yet sent a whole request head is closed for the newcomer, and when every
//!   connection is serving requests the listener waits (a warning says so once per episode),
//!   so long-held watches keep their connections;
//! - [`MAX_HEAD_BYTES`] and [`MAX_REQUEST_LINE_BYTES`]: caps on the request head and on its
//!   first line, answered 431 and 414.

use std::time::Duration;

/// Largest request head (request line and headers), bytes; 431 beyond it.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Largest request line (method, target, version), bytes; 414 beyond it.
pub(crate) const MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;

/// The limits of one listening port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenerLimits {
    /// Most connections served at once.
    pub max_connections: usize,
    /// Time for the TLS handshake and the first complete request head, from the accept.
    pub header_read_timeout: Duration,
    /// Time for the next complete request head once a response has ended.
    pub idle_timeout: Duration,
}

impl ListenerLimits {
    /// The limits `jfconnect.api.*` sets.
    pub fn from_config(api: &crate::config::ApiSection) -> Self {
        ListenerLimits {
            max_connections: api.max_connections,
            header_read_timeout: api.header_read_timeout,
            idle_timeout: api.idle_timeout,
        }
    }
}

/// Raises the soft open-file limit towards the hard one so `max_connections` connections, plus
/// a margin for files and outbound calls, fit; warns when the hard limit is too low.
pub fn raise_fd_limit(max_connections: usize) {
    let want = max_connections as u64 + 512;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 || lim.rlim_cur >= want {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: as above.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) };
    if set != 0 || raised.rlim_cur < want {
        tracing::warn!(
            "the open-file limit ({}) is below jfconnect.api.max_connections ({max_connections}) plus a margin of 512; raise it (LimitNOFILE=) or lower the key",
            lim.rlim_max
        );
    }
}
