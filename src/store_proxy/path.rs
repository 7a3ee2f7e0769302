//! The check every store path passes before a byte goes upstream.
//!
//! The store proxy appends the caller's path to `store.url`, so a path that climbs out of it
//! (`..`), smuggles a separator past us (`%2f`, `\`), hides behind an encoding layer that some
//! server further on decodes again (`%252e%252e`), or uses a quirk of a particular server
//! (`..;` in Tomcat, trailing dots and spaces in IIS, full-width dots) could reach a resource
//! the store never meant to serve. Rather than normalise such paths (and guess how every server
//! behind the store reads them), we refuse them: real store paths never need them.
//!
//! The check works on the RAW path of the request, as it arrived, and looks at every decoding
//! layer of every segment. Architecture invariant: pure, no I/O; the proxy forwards a path only
//! after [`check_store_path`] accepted it, and forwards it byte for byte as it arrived.

/// How many extra decoding layers are inspected after the first one. A segment that still
/// changes after that many layers is refused as deliberately obfuscated.
const EXTRA_DECODING_LAYERS: usize = 3;

/// Characters that some servers or file systems read as `.`, `/` or `\`.
const LOOKALIKES: [char; 10] = [
    '\u{FF0E}', // FULLWIDTH FULL STOP
    '\u{FE52}', // SMALL FULL STOP
    '\u{2024}', // ONE DOT LEADER
    '\u{2025}', // TWO DOT LEADER
    '\u{FF0F}', // FULLWIDTH SOLIDUS
    '\u{2215}', // DIVISION SLASH
    '\u{2044}', // FRACTION SLASH
    '\u{FF3C}', // FULLWIDTH REVERSE SOLIDUS
    '\u{2216}', // SET MINUS
    '\u{FE68}', // SMALL REVERSE SOLIDUS
];

/// Why a store path was refused. Each message is one sentence for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StorePathError {
    /// The path does not start with `/` (an absolute-form or otherwise odd target).
    #[error("the store path must start with '/'")]
    NotRooted,
    /// An empty segment (`//`), which also makes scheme-relative URLs such as `//evil.com/x`.
    #[error(
        "the store path holds an empty segment ('//'); scheme-relative URLs are not forwarded"
    )]
    EmptySegment,
    /// The first segment looks like a URL scheme or a drive (`http:`, `c:`).
    #[error("the store path starts with a URL scheme or drive ('{0}'); only paths below the store URL are forwarded")]
    Scheme(String),
    /// A `.` or `..` segment, raw or behind any encoding layer (also `...` and dots with
    /// trailing spaces, which some servers read as `..`).
    #[error("the store path holds a dot segment ('.' or '..', possibly percent-encoded); paths may not climb out of the store")]
    DotSegment,
    /// A `/` or `\` hidden behind percent-encoding.
    #[error("the store path holds an encoded '/' or '\\' ('%2f', '%5c'); separators must not be encoded")]
    EncodedSeparator,
    /// A raw backslash.
    #[error("the store path holds a backslash; use '/' between segments")]
    Backslash,
    /// A `;` path parameter (raw or encoded), as in `..;/`.
    #[error("the store path holds a ';' path parameter; path parameters are not forwarded")]
    PathParameter,
    /// NUL or another control character, raw or encoded (`%00`, `%0a`).
    #[error("the store path holds a NUL or control character (raw or percent-encoded)")]
    ControlCharacter,
    /// A `%` not followed by two hex digits.
    #[error(
        "the store path holds a malformed percent-encoding (a '%' not followed by two hex digits)"
    )]
    BadEscape,
    /// Percent-encoded bytes that are not UTF-8 (overlong forms such as `%c0%ae` among them).
    #[error("the store path decodes to bytes that are not UTF-8")]
    NotUtf8,
    /// A Unicode character that some servers read as `.`, `/` or `\`.
    #[error("the store path holds a Unicode look-alike of '.', '/' or '\\' ({0:?})")]
    Lookalike(char),
    /// A raw character outside what RFC 3986 allows in a path segment.
    #[error("the store path holds the character {0:?}, which must be percent-encoded")]
    Disallowed(char),
    /// A segment that still decodes to something new after several layers.
    #[error("the store path is percent-encoded too many times over")]
    TooDeeplyEncoded,
}

/// Checks the raw path of a store request (the part after `/api/v1/store`, e.g. `/api/x`).
///
/// An empty path or `/` is accepted (it addresses the store URL itself).
pub(crate) fn check_store_path(raw: &str) -> Result<(), StorePathError> {
    if raw.is_empty() {
        return Ok(());
    }
    let Some(body) = raw.strip_prefix('/') else {
        return Err(StorePathError::NotRooted);
    };
    for c in raw.chars() {
        check_raw_char(c)?;
    }
    if body.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = body.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            // A trailing slash is fine; an empty segment anywhere else is not.
            if i == last {
                continue;
            }
            return Err(StorePathError::EmptySegment);
        }
        check_segment(segment, i == 0)?;
    }
    Ok(())
}

fn check_raw_char(c: char) -> Result<(), StorePathError> {
    match c {
        '\\' => Err(StorePathError::Backslash),
        ';' => Err(StorePathError::PathParameter),
        c if c.is_control() => Err(StorePathError::ControlCharacter),
        'A'..='Z' | 'a'..='z' | '0'..='9' => Ok(()),
        '-' | '.' | '_' | '~' | '!' | '$' | '&' | '\'' | '(' | ')' | '*' | '+' | ',' | '=' => {
            Ok(())
        }
        ':' | '@' | '%' | '/' => Ok(()),
        other => Err(StorePathError::Disallowed(other)),
    }
}

/// Checks one segment as it arrived and after every decoding layer.
fn check_segment(raw: &str, first: bool) -> Result<(), StorePathError> {
    check_layer(raw, first)?;
    let mut layer = decode(raw.as_bytes(), true)?;
    let mut text = utf8(&layer)?;
    check_layer(&text, first)?;
    for _ in 0..EXTRA_DECODING_LAYERS {
        let next = decode(&layer, false)?;
        if next == layer {
            return Ok(());
        }
        layer = next;
        text = utf8(&layer)?;
        check_layer(&text, first)?;
    }
    if decode(&layer, false)? == layer {
        Ok(())
    } else {
        Err(StorePathError::TooDeeplyEncoded)
    }
}

fn utf8(bytes: &[u8]) -> Result<String, StorePathError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StorePathError::NotUtf8)
}

/// The rules every decoding layer of a segment must pass.
fn check_layer(segment: &str, first: bool) -> Result<(), StorePathError> {
    for c in segment.chars() {
        match c {
            '/' => return Err(StorePathError::EncodedSeparator),
            '\\' => return Err(StorePathError::EncodedSeparator),
            ';' => return Err(StorePathError::PathParameter),
            c if c.is_control() => return Err(StorePathError::ControlCharacter),
            c if LOOKALIKES.contains(&c) => return Err(StorePathError::Lookalike(c)),
            _ => {}
        }
    }
    if segment.contains('.') && segment.chars().all(|c| c == '.' || c.is_whitespace()) {
        return Err(StorePathError::DotSegment);
    }
    if first {
        if let Some(scheme) = scheme_prefix(segment) {
            return Err(StorePathError::Scheme(scheme.to_string()));
        }
    }
    Ok(())
}

/// `http:` in `http:evil`, `c:` in `c:windows`: RFC 3986 scheme syntax followed by `:`.
fn scheme_prefix(segment: &str) -> Option<&str> {
    let colon = segment.find(':')?;
    let scheme = &segment[..colon];
    let mut chars = scheme.chars();
    let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (starts_with_letter && rest_ok).then(|| &segment[..=colon])
}

/// One layer of percent-decoding. `strict`: a `%` without two hex digits is an error;
/// otherwise it stays as it is (a literal `%` revealed by the layer before).
fn decode(input: &[u8], strict: bool) -> Result<Vec<u8>, StorePathError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).and_then(|b| hex_value(*b));
            let lo = input.get(i + 2).and_then(|b| hex_value(*b));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            if strict {
                return Err(StorePathError::BadEscape);
            }
        }
        out.push(input[i]);
        i += 1;
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
