//! When two entry names are one name to a disk.
//!
//! A bundle is read entry by entry, but a person checks it by hand with `unzip`, and disks
//! fold names: macOS stores `é` decomposed and ignores case, Windows ignores case. Two entries
//! whose names such a disk takes for one would be extracted one over the other, so no bundle
//! may hold them (`docs/bundle-format.md` §1). The test is Unicode's compatibility caseless
//! match (Unicode §3.13, D146): two names are the same when
//! `NFKD(fold(NFKD(fold(NFD(name)))))` is equal, `fold` being full case folding (`ß` and `SS`
//! both fold to `ss`). It covers canonical equivalence (NFC and NFD `é`), compatibility forms
//! (`ﬁ` and `fi`, the Kelvin sign and `K`) and case (`A.json` and `a.json`).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use icu_casemap::CaseMapper;
use icu_normalizer::DecomposingNormalizer;

use super::error::BundleError;

/// The key under which `name` is compared with the other entry names of its bundle: two
/// names with the same key are one name (see the module doc). ASCII names are their
/// lower-case form.
pub fn name_key(name: &str) -> Cow<'_, str> {
    if name.is_ascii() {
        return if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
    }
    let nfd = DecomposingNormalizer::new_nfd();
    let nfkd = DecomposingNormalizer::new_nfkd();
    let fold = CaseMapper::new();
    let once = nfkd
        .normalize(&fold.fold_string(&nfd.normalize(name)))
        .into_owned();
    Cow::Owned(nfkd.normalize(&fold.fold_string(&once)).into_owned())
}

/// The entry names of one bundle seen so far, by [`name_key`]; refuses a name that is one of
/// them.
#[derive(Debug, Default)]
pub(crate) struct NameSet {
    /// Key → the name it came from, when that name is not the key itself.
    seen: HashMap<String, Option<String>>,
    /// Keys that name a usage file (`payload/usage/<64 lower-case hex>.json`, every entry but
    /// one of a usage bundle), kept as the 32 bytes they name: a usage bundle of 100,000 files
    /// holds 3 MiB of them instead of 15 MiB of strings.
    usage: HashSet<[u8; 32]>,
    /// The name such a key came from, when it was not the key itself.
    usage_names: HashMap<[u8; 32], String>,
}

/// The 32 bytes a key of the form `payload/usage/<64 lower-case hex>.json` names.
fn usage_digest(key: &str) -> Option<[u8; 32]> {
    let hex = key.strip_prefix("payload/usage/")?.strip_suffix(".json")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex, &mut d).ok()?;
    Some(d)
}

impl NameSet {
    /// Adds `name`; `DuplicateName` if it was seen byte for byte, `EquivalentNames` if another
    /// name with its key was.
    pub(crate) fn insert(&mut self, name: &str) -> Result<(), BundleError> {
        let key = name_key(name);
        if let Some(d) = usage_digest(&key) {
            if self.usage.insert(d) {
                if key != name {
                    self.usage_names.insert(d, name.to_string());
                }
                return Ok(());
            }
            let first = self.usage_names.get(&d).map_or(&*key, String::as_str);
            return Err(repeat(first, name));
        }
        let original = (key != name).then(|| name.to_string());
        match self.seen.entry(key.into_owned()) {
            Entry::Vacant(v) => {
                v.insert(original);
                Ok(())
            }
            Entry::Occupied(o) => Err(repeat(o.get().as_deref().unwrap_or(o.key()), name)),
        }
    }
}

/// The refusal of `name`, whose key `first` already had.
fn repeat(first: &str, name: &str) -> BundleError {
    if first == name {
        BundleError::DuplicateName(name.to_string())
    } else {
        BundleError::EquivalentNames {
            first: first.to_string(),
            second: name.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{name_key, NameSet};
    use crate::bundle::BundleError;

    #[test]
    fn a_name_set_tells_a_repeat_from_an_equivalent_name() {
        let mut set = NameSet::default();
        set.insert("payload/Stra\u{df}e.json").unwrap();
        set.insert("payload/b.json").unwrap();
        assert!(matches!(
            set.insert("payload/b.json"),
            Err(BundleError::DuplicateName(n)) if n == "payload/b.json"
        ));
        assert!(matches!(
            set.insert("payload/Stra\u{df}e.json"),
            Err(BundleError::DuplicateName(_))
        ));
        assert!(matches!(
            set.insert("payload/strasse.json"),
            Err(BundleError::EquivalentNames { first, second })
                if first == "payload/Stra\u{df}e.json" && second == "payload/strasse.json"
        ));
        assert!(matches!(
            set.insert("payload/B.json"),
            Err(BundleError::EquivalentNames { first, .. }) if first == "payload/b.json"
        ));
    }

    #[test]
    fn usage_file_names_are_told_apart_like_any_other() {
        let sha = "ab".repeat(32);
        let name = format!("payload/usage/{sha}.json");
        let upper = format!("payload/usage/{}.json", sha.to_uppercase());
        let mut set = NameSet::default();
        set.insert(&upper).unwrap();
        set.insert(&format!("payload/usage/{}.json", "cd".repeat(32)))
            .unwrap();
        assert!(matches!(
            set.insert(&name),
            Err(BundleError::EquivalentNames { first, second }) if first == upper && second == name
        ));
        assert!(matches!(
            set.insert(&upper),
            Err(BundleError::DuplicateName(n)) if n == upper
        ));
        let mut set = NameSet::default();
        set.insert(&name).unwrap();
        assert!(matches!(
            set.insert(&name),
            Err(BundleError::DuplicateName(n)) if n == name
        ));
        assert!(matches!(
            set.insert(&upper),
            Err(BundleError::EquivalentNames { first, second }) if first == name && second == upper
        ));
        // Not 64 hex digits: an ordinary name.
        set.insert("payload/usage/ab.json").unwrap();
        assert!(set.insert("payload/usage/AB.json").is_err());
    }

    #[test]
    fn names_a_disk_takes_for_one_have_one_key() {
        for (a, b) in [
            ("payload/caf\u{e9}.json", "payload/cafe\u{301}.json"),
            ("payload/A.json", "payload/a.json"),
            ("payload/\u{fb01}le.json", "payload/file.json"),
            ("payload/\u{212a}.json", "payload/k.json"),
            ("payload/stra\u{df}e.json", "payload/STRASSE.json"),
            ("payload/\u{1e9e}.json", "payload/ss.json"),
            ("payload/\u{2460}.json", "payload/1.json"),
        ] {
            assert_eq!(name_key(a), name_key(b), "{a:?} {b:?}");
        }
    }

    #[test]
    fn different_names_keep_different_keys() {
        for (a, b) in [
            ("payload/a.json", "payload/b.json"),
            ("payload/caf\u{e9}.json", "payload/cafe.json"),
            ("payload/\u{131}.json", "payload/i.json"),
        ] {
            assert_ne!(name_key(a), name_key(b), "{a:?} {b:?}");
        }
    }
}
