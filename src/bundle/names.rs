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
use std::collections::HashMap;

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
}

impl NameSet {
    /// Adds `name`; `DuplicateName` if it was seen byte for byte, `EquivalentNames` if another
    /// name with its key was.
    pub(crate) fn insert(&mut self, name: &str) -> Result<(), BundleError> {
        let key = name_key(name);
        let original = (key != name).then(|| name.to_string());
        match self.seen.entry(key.into_owned()) {
            Entry::Vacant(v) => {
                v.insert(original);
                Ok(())
            }
            Entry::Occupied(o) => {
                let first = o.get().as_deref().unwrap_or(o.key());
                if first == name {
                    Err(BundleError::DuplicateName(name.to_string()))
                } else {
                    Err(BundleError::EquivalentNames {
                        first: first.to_string(),
                        second: name.to_string(),
                    })
                }
            }
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
