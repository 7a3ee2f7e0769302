//! The path check, trick by trick: every refusal names its reason, and ordinary store paths
//! (including encoded characters that are harmless) pass.

use super::{check_store_path, StorePathError as E};

fn refused(path: &str) -> E {
    match check_store_path(path) {
        Err(e) => e,
        Ok(()) => panic!("{path:?} was accepted"),
    }
}

#[test]
fn ordinary_store_paths_are_accepted() {
    for path in [
        "",
        "/",
        "/api/v1/products",
        "/api/v1/products/",
        "/api/v1/products/xray/plans",
        "/files/plugin-1.2.3.jar",
        "/a/b.c/d..e/.hidden",
        "/search/name%20with%20spaces",
        "/q/caf%C3%A9",
        "/percent/100%25",
        "/at/user@example.com",
        "/colon/later:segment",
        "/sub-delims/!$&'()*+,=",
        "/tilde/~user",
        "/literal-percent-that-stays/%2541",
        "/dots-inside/a.b..c",
    ] {
        assert_eq!(check_store_path(path), Ok(()), "{path:?}");
    }
}

#[test]
fn raw_dot_segments_are_refused() {
    for path in [
        "/..",
        "/../etc/passwd",
        "/a/../b",
        "/a/..",
        "/.",
        "/a/./b",
        "/a/.../b",
    ] {
        assert_eq!(refused(path), E::DotSegment, "{path:?}");
    }
}

#[test]
fn percent_encoded_dot_segments_are_refused_in_any_case_mix() {
    for path in [
        "/%2e%2e/x",
        "/%2E%2E/x",
        "/%2e./x",
        "/.%2e/x",
        "/%2E./x",
        "/a/%2e",
        "/a/%2e%2e",
    ] {
        assert_eq!(refused(path), E::DotSegment, "{path:?}");
    }
}

#[test]
fn double_and_triple_encoded_dot_segments_are_refused() {
    for path in [
        "/%252e%252e/x",
        "/%252E%252E/x",
        "/%25252e%25252e/x",
        "/a/%252e/b",
        "/%2525252e%2525252e/x",
    ] {
        assert_eq!(refused(path), E::DotSegment, "{path:?}");
    }
}

#[test]
fn dots_with_trailing_spaces_are_refused_as_dot_segments() {
    for path in ["/..%20/x", "/%20../x", "/.%09./x"] {
        let e = refused(path);
        assert!(
            matches!(e, E::DotSegment | E::ControlCharacter),
            "{path:?} gave {e:?}"
        );
    }
}

#[test]
fn encoded_slashes_and_backslashes_are_refused_at_every_layer() {
    for path in [
        "/a%2fb",
        "/a%2Fb",
        "/..%2f..%2fetc",
        "/a%5cb",
        "/a%5Cb",
        "/a%252fb",
        "/a%255cb",
        "/%2f%2fevil.com/x",
        "/http%3a%2f%2fevil.com",
    ] {
        assert_eq!(refused(path), E::EncodedSeparator, "{path:?}");
    }
}

#[test]
fn raw_backslashes_are_refused() {
    for path in ["/a\\b", "/..\\..\\windows", "/\\evil.com"] {
        assert_eq!(refused(path), E::Backslash, "{path:?}");
    }
}

#[test]
fn path_parameters_are_refused_raw_or_encoded() {
    for path in [
        "/..;/admin",
        "/a;jsessionid=1",
        "/a/..;x=y/b",
        "/a%3bb",
        "/..%3B/admin",
        "/a%253bb",
    ] {
        assert_eq!(refused(path), E::PathParameter, "{path:?}");
    }
}

#[test]
fn scheme_relative_urls_and_empty_segments_are_refused() {
    for path in ["//evil.com/x", "//evil.com", "/a//b", "///x"] {
        assert_eq!(refused(path), E::EmptySegment, "{path:?}");
    }
}

#[test]
fn absolute_urls_and_drive_letters_are_refused() {
    for (path, scheme) in [
        ("/http://evil.com/x", "http:"),
        ("/https:evil.com", "https:"),
        ("/http:", "http:"),
        ("/c:/windows", "c:"),
        ("/file:etc", "file:"),
        ("/http%3aevil.com", "http:"),
        ("/HTTP%3A", "HTTP:"),
    ] {
        assert_eq!(refused(path), E::Scheme(scheme.into()), "{path:?}");
    }
}

#[test]
fn paths_that_do_not_start_with_a_slash_are_refused() {
    for path in ["http://evil.com/x", "evil", "*"] {
        assert_eq!(refused(path), E::NotRooted, "{path:?}");
    }
}

#[test]
fn nul_and_control_characters_are_refused_raw_or_encoded() {
    for path in [
        "/a\0b",
        "/a\nb",
        "/a\rb",
        "/a\tb",
        "/a\u{7f}b",
        "/a%00b",
        "/a%0ab",
        "/a%0D%0AX-Injected:1",
        "/a%7fb",
        "/a%2500b",
        "/a%c2%85b",
        "/..%00/x",
    ] {
        assert_eq!(refused(path), E::ControlCharacter, "{path:?}");
    }
}

#[test]
fn malformed_percent_encodings_are_refused() {
    for path in ["/a%", "/a%2", "/a%zz", "/a%2g", "/%%32%65"] {
        assert_eq!(refused(path), E::BadEscape, "{path:?}");
    }
}

#[test]
fn overlong_and_invalid_utf8_encodings_are_refused() {
    for path in [
        "/%c0%ae%c0%ae/x",
        "/%c0%af",
        "/%e0%80%ae",
        "/%ff",
        "/%25c0%25ae",
    ] {
        assert_eq!(refused(path), E::NotUtf8, "{path:?}");
    }
}

#[test]
fn unicode_lookalikes_of_dots_and_slashes_are_refused() {
    for (path, c) in [
        ("/%EF%BC%8E%EF%BC%8E/x", '\u{FF0E}'),
        ("/a%EF%BC%8Fb", '\u{FF0F}'),
        ("/a%E2%88%95b", '\u{2215}'),
        ("/a%EF%BC%BCb", '\u{FF3C}'),
        ("/%E2%80%A5/x", '\u{2025}'),
    ] {
        assert_eq!(refused(path), E::Lookalike(c), "{path:?}");
    }
}

#[test]
fn raw_characters_outside_rfc3986_path_segments_are_refused() {
    for (path, c) in [
        ("/a b", ' '),
        ("/a\"b", '"'),
        ("/a<b", '<'),
        ("/a{b}", '{'),
        ("/a|b", '|'),
        ("/a^b", '^'),
        ("/a`b", '`'),
        ("/a[0]", '['),
        ("/a#b", '#'),
        ("/a?b", '?'),
        ("/caf\u{e9}", '\u{e9}'),
        ("/\u{FF0E}\u{FF0E}", '\u{FF0E}'),
    ] {
        assert_eq!(refused(path), E::Disallowed(c), "{path:?}");
    }
}

#[test]
fn segments_encoded_beyond_the_inspected_layers_are_refused() {
    // Each layer turns "%25" into "%"; five layers still leave an escape to decode.
    assert_eq!(refused("/a%252525252541"), E::TooDeeplyEncoded);
}

#[test]
fn every_refusal_is_one_sentence_without_a_trailing_period() {
    let errors = [
        refused("x"),
        refused("//e"),
        refused("/http:"),
        refused("/.."),
        refused("/%2f"),
        refused("/\\"),
        refused("/;"),
        refused("/%00"),
        refused("/%"),
        refused("/%ff"),
        refused("/%EF%BC%8E"),
        refused("/ "),
        refused("/a%252525252541"),
    ];
    for e in errors {
        let text = e.to_string();
        assert!(text.starts_with("the store path"), "{text}");
        assert!(!text.ends_with('.') && !text.contains('\n'), "{text}");
    }
}
