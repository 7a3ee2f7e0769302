//! The `no_proxy` rule, as curl and reqwest read it: comma-separated host names (matching the
//! host and its subdomains; a leading dot is the same), IP addresses, CIDR ranges, and `*`.
//!
//! The one matcher: the client routes with it (`reqwest::Proxy::custom` in [`super::build`]),
//! and the same decision answers "did this request go through the proxy?" so that an error can
//! say whether the proxy or the origin failed. (reqwest's own `NoProxy` read some lists
//! differently, e.g. `*` did not cover IP addresses, so the two could disagree.)
//!
//! Architecture invariant: no I/O.

use std::net::IpAddr;

/// A parsed `no_proxy` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NoProxyRule {
    all: bool,
    domains: Vec<String>,
    nets: Vec<(IpAddr, u8)>,
}

impl NoProxyRule {
    /// Parses a comma-separated list; entries that are neither names nor addresses are kept
    /// as names (they then match nothing real).
    pub fn parse(list: &str) -> NoProxyRule {
        let mut rule = NoProxyRule::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                rule.all = true;
            } else if let Some((ip, bits)) = entry.split_once('/') {
                if let (Ok(ip), Ok(bits)) = (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
                    let max = if ip.is_ipv4() { 32 } else { 128 };
                    rule.nets.push((ip, bits.min(max)));
                }
            } else if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                rule.nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            } else {
                rule.domains
                    .push(entry.trim_start_matches('.').to_ascii_lowercase());
            }
        }
        rule
    }

    /// True when requests to `host` bypass the proxy.
    pub fn bypasses(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_matches(['[', ']']).to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self.nets.iter().any(|(net, bits)| in_net(ip, *net, *bits));
        }
        self.domains
            .iter()
            .any(|d| host == *d || host.ends_with(&format!(".{d}")))
    }
}

fn in_net(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_host_and_subdomains() {
        let r = NoProxyRule::parse("jpd.local, .corp.example.com");
        assert!(r.bypasses("jpd.local"));
        assert!(r.bypasses("a.jpd.local"));
        assert!(r.bypasses("corp.example.com"));
        assert!(r.bypasses("x.corp.example.com"));
        assert!(!r.bypasses("notjpd.local"));
        assert!(!r.bypasses("example.com"));
    }

    #[test]
    fn addresses_and_cidr_ranges_match() {
        let r = NoProxyRule::parse("10.0.0.0/8,192.168.1.7,::1");
        assert!(r.bypasses("10.20.30.40"));
        assert!(!r.bypasses("11.0.0.1"));
        assert!(r.bypasses("192.168.1.7"));
        assert!(!r.bypasses("192.168.1.8"));
        assert!(r.bypasses("[::1]"));
    }

    #[test]
    fn star_matches_everything_and_empty_nothing() {
        assert!(NoProxyRule::parse("*").bypasses("anything.example"));
        assert!(!NoProxyRule::parse("").bypasses("127.0.0.1"));
    }
}
