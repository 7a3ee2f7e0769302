//! Limits on the shape of a config file, checked before and while it is parsed, so a hostile
//! file is refused at once with a sentence instead of costing the parser seconds or memory: at
//! most [`MAX_DEPTH`] levels of nesting (checked on the text, before the YAML parser, whose time
//! grows with the square of the depth) and at most [`MAX_NODES`] values once aliases are
//! expanded (counted while the parser replays them, before any tree is built). A JFrog
//! `system.yaml` nests a handful of levels and holds a few hundred values.

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;

/// Deepest nesting accepted (mappings, sequences, flow collections).
pub(crate) const MAX_DEPTH: usize = 64;

/// Most values (scalars, mappings, sequences) in the document with every alias expanded.
pub(crate) const MAX_NODES: usize = 100_000;

/// Refuses `text` when it nests deeper than [`MAX_DEPTH`] or expands to more than
/// [`MAX_NODES`] values; the reason is one sentence.
pub(crate) fn check(text: &str) -> Result<(), String> {
    let depth = nesting_depth(text);
    if depth > MAX_DEPTH {
        return Err(format!(
            "the file nests more than {MAX_DEPTH} levels deep; a system.yaml needs a handful"
        ));
    }
    let budget = Cell::new(MAX_NODES);
    match Budget(&budget).deserialize(serde_yaml::Deserializer::from_str(text)) {
        Ok(()) => Ok(()),
        Err(e) if budget.get() == 0 => Err(format!(
            "the file expands to more than {MAX_NODES} values once its aliases (*name) are expanded: {e}"
        )),
        // Syntax errors are the parser's to report, with their line.
        Err(_) => Ok(()),
    }
}

/// An upper bound of the nesting depth of a YAML text, from its indentation, the block
/// sequence dashes that open a line, and flow brackets outside quotes and comments.
fn nesting_depth(text: &str) -> usize {
    let mut deepest = 0;
    // Columns of the enclosing block levels.
    let mut columns: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for line in text.lines() {
        let body = line.trim_start_matches(' ');
        let indent = line.len() - body.len();
        if flow == 0 && !body.is_empty() && !body.starts_with('#') {
            while columns.last().is_some_and(|&c| c >= indent) {
                columns.pop();
            }
            columns.push(indent);
        }
        // `- - - x` opens a sequence per dash on one line.
        let mut rest = body;
        let mut dashes = 0;
        while let Some(r) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            dashes += 1;
            rest = r.trim_start_matches(' ');
        }
        let mut line_flow = flow;
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for c in rest.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '#') if previous == ' ' => break,
                (None, '"' | '\'') if matches!(previous, ' ' | '[' | '{' | ',' | ':') => {
                    quote = Some(c)
                }
                (None, '[' | '{') => {
                    line_flow += 1;
                    deepest = deepest.max(columns.len() + dashes + line_flow);
                }
                (None, ']' | '}') => line_flow = line_flow.saturating_sub(1),
                _ => {}
            }
            previous = c;
        }
        flow = line_flow;
        deepest = deepest.max(columns.len() + dashes + flow);
    }
    deepest
}

/// Walks a document without keeping it, spending one unit of the budget per value.
#[derive(Clone, Copy)]
struct Budget<'a>(&'a Cell<usize>);

impl Budget<'_> {
    fn spend<E: serde::de::Error>(self) -> Result<(), E> {
        match self.0.get() {
            0 => Err(E::custom("too many values")),
            n => {
                self.0.set(n - 1);
                Ok(())
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.spend()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.spend()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.spend()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.spend()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.spend()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend()?;
        while map.next_key_seed(self)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess;
        let ((), variant) = data.variant_seed(self)?;
        variant.newtype_variant_seed(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_yaml_passes() {
        let text = "shared:\n  node:\n    id: a\njfconnect:\n  api:\n    token_file: t # x [\n  airgap:\n    vendor_public_keys: [a.pub, \"b[.pub\"]\n  list:\n    - - a\n      - b\n";
        assert!(nesting_depth(text) < 8, "{}", nesting_depth(text));
        check(text).unwrap();
    }

    #[test]
    fn deep_flow_block_and_dash_nesting_are_refused() {
        let flow = format!("jfconnect: {}{}", "[".repeat(100), "]".repeat(100));
        let dashes = format!("jfconnect:\n  x:\n    {}a", "- ".repeat(100));
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&format!("{}k{i}:\n", " ".repeat(i)));
        }
        for text in [flow, dashes, block] {
            let e = check(&text).unwrap_err();
            assert!(e.contains("more than 64 levels"), "{e}");
        }
    }

    #[test]
    fn alias_expansion_past_the_budget_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = check(&text).unwrap_err();
        assert!(e.contains("aliases"), "{e}");
    }
}
