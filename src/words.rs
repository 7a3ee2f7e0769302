//! How a count is written in a sentence a person reads: "1 batch", "2 batches", "0 files", so
//! that no summary says "1 batches".
//!
//! Architecture invariant: pure functions, no I/O.

/// `n` with its noun: `one` for exactly 1, `many` otherwise.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_takes_the_singular_and_every_other_count_the_plural() {
        assert_eq!(count(0, "batch", "batches"), "0 batches");
        assert_eq!(count(1, "batch", "batches"), "1 batch");
        assert_eq!(count(2, "usage file", "usage files"), "2 usage files");
    }
}
