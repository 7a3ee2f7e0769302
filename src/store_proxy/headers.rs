//! Which headers cross the store proxy, in each direction.
//!
//! Content headers (type, length, encoding, ranges, validators, `Accept*`) pass untouched so
//! caching, resumable downloads and compression work end to end. Hop-by-hop headers belong to
//! one connection and are dropped both ways, together with any header the `Connection` header
//! names. Our API's credentials (`Authorization`, `Cookie`) never leave the process, and
//! `Set-Cookie` from the store is dropped since its cookies could never come back. Architecture
//! invariant: pure, no I/O.

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::fmt::Write as _;
use std::net::IpAddr;

/// Headers that describe one connection, never the message (RFC 9110 section 7.6.1), plus
/// the de-facto `Proxy-Connection` and `Keep-Alive`.
/// Names, not strings: removing by a string parses it into a name first, on every request.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Request headers we never forward: our own credentials, the `Host` of our API (the client
/// sets the store's), `Expect` (the proxy answers `100-continue` itself), and the forwarding
/// headers we rebuild.
const REQUEST_DROPPED: [HeaderName; 6] = [
    header::AUTHORIZATION,
    header::COOKIE,
    header::HOST,
    header::EXPECT,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The headers to send upstream for a request that arrived with `incoming` from `client_ip`
/// (when known) over plain HTTP; `incoming` is edited in place, nothing is copied.
///
/// `X-Forwarded-For` keeps any chain the caller sent and appends the caller's address;
/// `X-Forwarded-Proto` is always ours.
pub(crate) fn upstream_request_headers(
    incoming: HeaderMap,
    client_ip: Option<IpAddr>,
) -> HeaderMap {
    let mut out = end_to_end(incoming);
    let mut chain = String::new();
    for sent in out.get_all(&X_FORWARDED_FOR) {
        let Ok(v) = sent.to_str() else { continue };
        let v = v.trim();
        if !v.is_empty() {
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(v);
        }
    }
    remove_all(&mut out, &REQUEST_DROPPED);
    if let Some(ip) = client_ip {
        if !chain.is_empty() {
            chain.push_str(", ");
        }
        let _ = write!(chain, "{ip}");
    }
    if !chain.is_empty() {
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(chain)) {
            out.insert(X_FORWARDED_FOR, value);
        }
    }
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    out
}

/// The headers to send back to the caller for an answer that arrived with `upstream`, edited
/// in place.
pub(crate) fn downstream_response_headers(upstream: HeaderMap) -> HeaderMap {
    let mut out = end_to_end(upstream);
    remove_all(&mut out, std::slice::from_ref(&header::SET_COOKIE));
    out
}

/// `headers` without the hop-by-hop ones and without any header that `Connection` names.
fn end_to_end(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    remove_all(&mut headers, &HOP_BY_HOP);
    for name in &named {
        headers.remove(name.as_str());
    }
    headers
}

/// Removes every header named in `names` from `headers`. A message carries a handful of
/// headers and rarely any of these, so one pass comparing names comes first: removing by name
/// hashes the name, for each name, on every request.
fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    if headers.keys().any(|k| names.contains(k)) {
        for name in names {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn content_headers_pass_upstream_untouched() {
        let incoming = map(&[
            ("content-type", "application/json"),
            ("content-length", "42"),
            ("accept", "application/json"),
            ("accept-encoding", "gzip, br"),
            ("range", "bytes=0-99"),
            ("if-none-match", "\"abc\""),
            ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ("user-agent", "artifactory/7"),
            ("x-custom", "one"),
            ("x-custom", "two"),
        ]);
        let out = upstream_request_headers(incoming.clone(), None);
        for (name, value) in &incoming {
            assert!(out.get_all(name).iter().any(|v| v == value), "{name} lost");
        }
        assert_eq!(out.get_all("x-custom").iter().count(), 2);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped_upstream() {
        let incoming = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-other-hop", "1"),
            ("x-kept", "1"),
        ]);
        let out = upstream_request_headers(incoming.clone(), None);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["x-forwarded-proto", "x-kept"]);
    }

    #[test]
    fn our_credentials_and_host_never_go_upstream() {
        let incoming = map(&[
            ("authorization", "Bearer api-token"),
            ("cookie", "session=1"),
            ("host", "jfconnect:8030"),
            ("expect", "100-continue"),
        ]);
        let out = upstream_request_headers(incoming.clone(), None);
        assert!(out.get("authorization").is_none());
        assert!(out.get("cookie").is_none());
        assert!(out.get("host").is_none());
        assert!(out.get("expect").is_none());
    }

    #[test]
    fn forwarded_headers_name_the_caller_and_our_scheme() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        let out = upstream_request_headers(map(&[("x-forwarded-proto", "https")]), Some(ip));
        assert_eq!(out["x-forwarded-for"], "10.1.2.3");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out.get_all("x-forwarded-proto").iter().count(), 1);
    }

    #[test]
    fn forwarded_for_chain_is_kept_and_extended() {
        let ip: IpAddr = "::1".parse().unwrap();
        let incoming = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "198.51.100.1"),
        ]);
        let out = upstream_request_headers(incoming.clone(), Some(ip));
        assert_eq!(out["x-forwarded-for"], "203.0.113.7, 198.51.100.1, ::1");
        assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn unknown_caller_address_is_skipped_without_an_empty_header() {
        let out = upstream_request_headers(HeaderMap::new(), None);
        assert!(out.get("x-forwarded-for").is_none());
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_and_cookies_but_keep_content_headers() {
        let upstream = map(&[
            ("connection", "close, x-hop"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "store=1"),
            ("content-type", "application/octet-stream"),
            ("content-length", "1024"),
            ("content-encoding", "gzip"),
            ("etag", "\"v1\""),
            ("content-range", "bytes 0-1023/2048"),
            ("location", "/elsewhere"),
        ]);
        let out = downstream_response_headers(upstream);
        let mut names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-encoding",
                "content-length",
                "content-range",
                "content-type",
                "etag",
                "location"
            ]
        );
    }
}
