//! How values that are not plain YAML scalars are written in the file: intervals (`30s`, `24h`)
//! and `http(s)://` URLs. Each refusal is a sentence that the caller prefixes with the key.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serializer};
use std::time::Duration;
use url::Url;

/// Parses an interval such as `30s`, `15m`, `24h`, `7d` (a whole number and one unit).
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let hint = "use a whole number and a unit, e.g. 30s, 15m, 24h";
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit; {hint}"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an interval; {hint}"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} has an unknown unit {unit:?}; {hint}")),
    };
    if n == 0 {
        return Err(format!("{s:?} is zero; an interval must be positive"));
    }
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Writes an interval in the largest unit that divides it (`86400s` is `1d`).
pub(crate) fn format_interval(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, n) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if secs > 0 && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// `#[serde(with)]` form of an interval.
pub(crate) mod interval {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_interval(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_interval(&s).map_err(D::Error::custom)
    }
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Url, D::Error> {
    let s = String::deserialize(d)?;
    check_http_url(&s).map_err(D::Error::custom)
}

/// Like [`http_url`], for a key that may be unset.
pub(crate) fn optional_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Url>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) => check_http_url(&s).map(Some).map_err(D::Error::custom),
    }
}

fn check_http_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("{s:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} must start with http:// or https://"));
    }
    if url.host_str().is_none() {
        return Err(format!("{s:?} has no host"));
    }
    Ok(url)
}

/// A URL written in the code.
pub(crate) fn constant_url(s: &str) -> Url {
    Url::parse(s).unwrap_or_else(|_| unreachable!("constant URL {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_written_in_their_largest_unit() {
        assert_eq!(format_interval(Duration::from_secs(86400)), "1d");
        assert_eq!(format_interval(Duration::from_secs(3600)), "1h");
        assert_eq!(format_interval(Duration::from_secs(90)), "90s");
        assert_eq!(format_interval(Duration::from_secs(120)), "2m");
        for s in ["30s", "15m", "24h", "7d"] {
            let d = parse_interval(s).unwrap();
            assert_eq!(parse_interval(&format_interval(d)).unwrap(), d);
        }
    }
}
