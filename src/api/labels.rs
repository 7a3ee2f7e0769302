//! Label values of the Prometheus text format, shared by `/metrics` and its cluster part.

/// A label value as the text format wants it: backslash, quote and newline escaped.
pub(crate) fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
