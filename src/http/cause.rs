//! What a failed send's typed `source()` chain says: the facts the sentences of
//! [`super::classify_send_error`] and [`super::Outbound::send_error`] are chosen from.
//!
//! Each link is downcast to the type that made it: `std::io::Error` (its kind, and the error it
//! wraps, which `io::Error::source` skips), `rustls::Error`, `hyper::Error`,
//! `hyper_util::client::legacy::Error` and `reqwest::Error`. Two failures come from types that
//! hyper-util keeps in private modules and that cannot be named, so not downcast: see
//! [`unnameable`], the one place that reads an error's text.
//!
//! Architecture invariant: no I/O.

use std::error::Error;
use std::io;

/// How a TLS handshake failed, as the sentence names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsWhy {
    UnknownIssuer,
    NameMismatch,
    Expired,
    Handshake,
}

/// How a proxy answered a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tunnel {
    /// It asked for credentials (HTTP 407).
    AuthRequired,
    /// It answered with another status than 200.
    Refused,
    /// No tunnel: the proxy could not be reached or closed before answering.
    NotOpened,
}

/// The facts read from one failed send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cause {
    /// The request or the connect phase ran out of time.
    pub timeout: bool,
    /// It failed while connecting (before a request was written).
    pub connect: bool,
    /// The TLS handshake failed, and why.
    pub tls: Option<TlsWhy>,
    /// A proxy's CONNECT failed, and how.
    pub tunnel: Option<Tunnel>,
    /// The host name could not be resolved.
    pub dns: bool,
    /// The peer refused the TCP connection.
    pub refused: bool,
    /// The connection was reset or closed before a whole answer.
    pub cut: bool,
    /// The chain as text, outermost first, for logs.
    pub chain: String,
}

/// The links of `err`'s chain, outermost first, including the errors that `io::Error`s wrap.
fn links<'a>(err: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out = Vec::new();
    let mut next = Some(err);
    // Bounded: a chain is a handful of links; a cycle would be a bug elsewhere.
    while let Some(e) = next.filter(|_| out.len() < 32) {
        out.push(e);
        next = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            // `io::Error::source` answers the wrapped error's source, skipping the wrapped error.
            Some(inner) => Some(inner as &(dyn Error + 'static)),
            None => e.source(),
        };
    }
    out
}

/// Reads the typed chain of a failed send, by either client (`reqwest::Error` or
/// hyper-util's legacy client error at the top).
pub(crate) fn of(err: &(dyn Error + 'static)) -> Cause {
    let mut c = Cause::default();
    let all = links(err);
    c.chain = all
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    for link in all {
        if let Some(e) = link.downcast_ref::<io::Error>() {
            match e.kind() {
                io::ErrorKind::TimedOut => c.timeout = true,
                io::ErrorKind::ConnectionRefused => c.refused = true,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => c.cut = true,
                _ => {}
            }
        } else if let Some(e) = link.downcast_ref::<rustls::Error>() {
            c.tls = Some(tls_why(e));
        } else if let Some(e) = link.downcast_ref::<hyper::Error>() {
            if e.is_timeout() {
                c.timeout = true;
            }
            if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
                c.cut = true;
            }
        } else if let Some(e) = link.downcast_ref::<hyper_util::client::legacy::Error>() {
            c.connect |= e.is_connect();
        } else if let Some(e) = link.downcast_ref::<reqwest::Error>() {
            c.timeout |= e.is_timeout();
            c.connect |= e.is_connect();
        } else {
            match unnameable(link) {
                Some(Unnameable::Tunnel(t)) => c.tunnel = Some(t),
                Some(Unnameable::Dns) => c.dns = true,
                None => {}
            }
        }
    }
    c
}

fn tls_why(e: &rustls::Error) -> TlsWhy {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => TlsWhy::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsWhy::NameMismatch,
            C::Expired | C::ExpiredContext { .. } => TlsWhy::Expired,
            _ => TlsWhy::Handshake,
        },
        _ => TlsWhy::Handshake,
    }
}

enum Unnameable {
    Tunnel(Tunnel),
    Dns,
}

/// The two failures whose types cannot be named, read from their text.
///
/// reqwest opens a proxy tunnel with hyper-util's `Tunnel`, whose error type `TunnelError`
/// lives in the private module `hyper_util::client::legacy::connect::proxy::tunnel`; likewise a
/// failed name lookup is wrapped in the private `ConnectError` of
/// `hyper_util::client::legacy::connect::http`. Neither can be downcast, so each is recognised
/// by the text hyper-util gives it (`"tunnel error: <what>"`, `"dns error"`) — the whole link's
/// own text, never a search through the lower-cased chain. If hyper-util ever makes the types
/// public, downcast them here instead. Nothing else in jfconnect reads an error's text.
fn unnameable(link: &(dyn Error + 'static)) -> Option<Unnameable> {
    let text = link.to_string();
    if let Some(what) = text.strip_prefix("tunnel error: ") {
        return Some(Unnameable::Tunnel(match what {
            "proxy authorization required" => Tunnel::AuthRequired,
            "unsuccessful" => Tunnel::Refused,
            _ => Tunnel::NotOpened,
        }));
    }
    (text == "dns error").then_some(Unnameable::Dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(io::Error);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("outer")
        }
    }
    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_error_an_io_error_wraps_is_visited() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let outer = Outer(io::Error::new(io::ErrorKind::InvalidData, tls));
        let l = links(&outer);
        assert_eq!(l.len(), 3, "outer, the io::Error, the rustls error");
        assert!(l[2].downcast_ref::<rustls::Error>().is_some());
    }

    #[test]
    fn certificate_errors_name_their_reason() {
        let why = |c| tls_why(&rustls::Error::InvalidCertificate(c));
        assert_eq!(
            why(rustls::CertificateError::UnknownIssuer),
            TlsWhy::UnknownIssuer
        );
        assert_eq!(
            why(rustls::CertificateError::NotValidForName),
            TlsWhy::NameMismatch
        );
        assert_eq!(why(rustls::CertificateError::Expired), TlsWhy::Expired);
        assert_eq!(
            tls_why(&rustls::Error::HandshakeNotComplete),
            TlsWhy::Handshake
        );
    }
}
