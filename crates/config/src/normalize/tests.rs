use super::*;
use proptest::prelude::*;

fn defaults() -> PathNormalization {
    PathNormalization::default()
}

fn with(f: impl FnOnce(&mut PathNormalization)) -> PathNormalization {
    let mut o = defaults();
    f(&mut o);
    o
}

fn norm(p: &str, o: &PathNormalization) -> Result<String, PathError> {
    normalize(p, o).map(|n| n.path.into_owned())
}

#[test]
fn the_default_settings_table() {
    use PathError::*;
    let o = defaults();
    let cases: &[(&str, Result<&str, PathError>)] = &[
        ("/", Ok("/")),
        ("/api/users/42", Ok("/api/users/42")),
        ("/api/users/", Ok("/api/users/")),
        // Dot-segments, raw and encoded (RFC 3986 §5.2.4 after §6.2.2.2 decoding).
        ("/x/../admin", Ok("/admin")),
        ("/x/%2e%2e/admin", Ok("/admin")),
        ("/x/%2E%2E/admin", Ok("/admin")),
        ("/x/.%2e/admin", Ok("/admin")),
        ("/./admin", Ok("/admin")),
        ("/%2e/admin", Ok("/admin")),
        ("/../../admin", Ok("/admin")),
        ("/a/b/..", Ok("/a/")),
        ("/a/b/.", Ok("/a/b/")),
        ("/..", Ok("/")),
        ("/a/...", Ok("/a/...")),
        ("/a/..b", Ok("/a/..b")),
        // Unreserved characters decoded, the rest upper-cased.
        ("/%61dmin", Ok("/admin")),
        ("/%41%7e%2D%5f", Ok("/A~-_")),
        ("/a%40b", Ok("/a%40b")),
        ("/a%2bb", Ok("/a%2Bb")),
        ("/a%25b", Ok("/a%25b")),
        ("/a%252e%252e/b", Ok("/a%252e%252e/b")),
        ("/caf%c3%a9", Ok("/caf%C3%A9")),
        // Characters a URI may not hold raw are encoded.
        ("/caf\u{e9}", Ok("/caf%C3%A9")),
        ("/a\"b", Ok("/a%22b")),
        ("/a{b}", Ok("/a%7Bb%7D")),
        ("/a|b^c`d", Ok("/a%7Cb%5Ec%60d")),
        // Repeated slashes merged (Istio CVE-2021-31920).
        ("//admin", Ok("/admin")),
        ("/a//b///c", Ok("/a/b/c")),
        ("/admin//", Ok("/admin/")),
        // Encoded slashes refused by default (Traefik CVE-2025-32431 style).
        ("/%2fadmin", Err(EscapedSlash)),
        ("/admin%2f", Err(EscapedSlash)),
        ("/x%2f..%2fadmin", Err(EscapedSlash)),
        ("/x%5cadmin", Err(EscapedSlash)),
        // Encoded delimiters a decoding backend would read as query, fragment or parameters
        // (Traefik CVE-2025-66490).
        ("/admin%3f", Err(EscapedDelimiter)),
        ("/admin%23", Err(EscapedDelimiter)),
        ("/admin%3B", Err(EscapedDelimiter)),
        ("/admin?", Err(EscapedDelimiter)),
        // Raw backslash, path parameters, controls, bad escapes.
        ("/x\\..\\admin", Err(Backslash)),
        ("/admin;x=1", Err(PathParameter)),
        ("/x/..;/admin", Err(PathParameter)),
        ("/a%00b", Err(ControlCharacter)),
        ("/a%0ab", Err(ControlCharacter)),
        ("/a%7fb", Err(ControlCharacter)),
        ("/a\u{1}b", Err(ControlCharacter)),
        ("/a%zz", Err(BadEncoding)),
        ("/a%2", Err(BadEncoding)),
        ("/a%", Err(BadEncoding)),
        ("*", Err(NotOriginForm)),
        ("", Err(NotOriginForm)),
        ("admin", Err(NotOriginForm)),
    ];
    for (input, want) in cases {
        let got = norm(input, &o);
        assert_eq!(got.as_deref().map_err(|e| *e), *want, "{input:?}");
    }
}

#[test]
fn escaped_slash_actions() {
    let keep_delims = with(|o| o.escaped_delimiters = EscapedDelimiters::Keep);
    assert_eq!(
        norm("/a%3fb%23c%3b", &keep_delims).unwrap(),
        "/a%3Fb%23c%3B"
    );
    let keep = with(|o| o.escaped_slashes = EscapedSlashes::Keep);
    assert_eq!(norm("/x%2f..%2fadmin", &keep).unwrap(), "/x%2F..%2Fadmin");
    assert_eq!(norm("/a%5cb", &keep).unwrap(), "/a%5Cb");
    let decode = with(|o| o.escaped_slashes = EscapedSlashes::Decode);
    assert_eq!(norm("/x%2f..%2fadmin", &decode).unwrap(), "/admin");
    assert_eq!(norm("/%2fadmin", &decode).unwrap(), "/admin");
    assert_eq!(norm("/a%5cb", &decode).unwrap(), "/a/b");
    let n = normalize("/x%2f..%2fadmin", &decode).unwrap();
    assert!(!n.redirect);
    let redirect = with(|o| o.escaped_slashes = EscapedSlashes::Redirect);
    let n = normalize("/x%2f..%2fadmin", &redirect).unwrap();
    assert_eq!((n.path.as_ref(), n.redirect), ("/admin", true));
}

#[test]
fn other_settings() {
    let keep_slashes = with(|o| o.merge_slashes = false);
    assert_eq!(norm("//admin", &keep_slashes).unwrap(), "//admin");
    assert_eq!(norm("/a//../b", &keep_slashes).unwrap(), "/a/b");
    assert_eq!(norm("/a//.", &keep_slashes).unwrap(), "/a//");
    let backslash = with(|o| o.backslash = Backslash::Separator);
    assert_eq!(norm("/x\\..\\admin", &backslash).unwrap(), "/admin");
    let seg = with(|o| o.path_parameters = PathParameters::Segment);
    assert_eq!(norm("/admin;x=1", &seg).unwrap(), "/admin;x=1");
    // Tomcat reads `..;/` as `../` (the classic bypass): so does the normalizer.
    assert_eq!(norm("/x/..;/admin", &seg).unwrap(), "/admin");
    assert_eq!(norm("/x/.;a=b/admin", &seg).unwrap(), "/x/admin");
    // A segment that is only parameters is an empty segment to a servlet container.
    assert_eq!(norm("/;x/admin", &seg), Err(PathError::PathParameter));
    assert_eq!(
        without_parameters("/admin;x=1/y;z", &seg).as_deref(),
        Some("/admin/y")
    );
    assert_eq!(without_parameters("/admin/y", &seg), None);
    assert_eq!(without_parameters("/admin;x", &defaults()), None);
}

#[test]
fn a_normal_path_is_borrowed() {
    let o = defaults();
    for p in ["/", "/api/v1/users/42", "/a-b_c~d.e/f:g@h!$&'()*+,=", "/a/"] {
        let n = normalize(p, &o).unwrap();
        assert!(!n.changed(), "{p}");
        assert!(matches!(n.path, Cow::Borrowed(_)), "{p}");
    }
    assert!(normalize("/%61", &o).unwrap().changed());
}

fn settings() -> impl Strategy<Value = PathNormalization> {
    (
        any::<bool>(),
        prop_oneof![
            Just(EscapedSlashes::Keep),
            Just(EscapedSlashes::Reject),
            Just(EscapedSlashes::Decode),
            Just(EscapedSlashes::Redirect)
        ],
        prop_oneof![Just(Backslash::Reject), Just(Backslash::Separator)],
        prop_oneof![Just(PathParameters::Reject), Just(PathParameters::Segment)],
        prop_oneof![
            Just(EscapedDelimiters::Reject),
            Just(EscapedDelimiters::Keep)
        ],
    )
        .prop_map(
            |(merge_slashes, escaped_slashes, backslash, path_parameters, escaped_delimiters)| {
                PathNormalization {
                    merge_slashes,
                    escaped_slashes,
                    escaped_delimiters,
                    backslash,
                    path_parameters,
                    redirect: false,
                }
            },
        )
}

/// Paths built from the pieces that matter: dots, slashes, escapes (good and bad), `;`, `\`.
fn paths() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5C".to_string()),
        Just("%41".to_string()),
        Just("%7e".to_string()),
        Just("%3b".to_string()),
        Just("%3F".to_string()),
        Just("%23".to_string()),
        Just("?".to_string()),
        Just("#".to_string()),
        Just("%25".to_string()),
        Just("%".to_string()),
        Just(";".to_string()),
        Just("\\".to_string()),
        Just("a".to_string()),
        Just("admin".to_string()),
        Just("\u{e9}".to_string()),
        "[a-z0-9{}|^\"]{1,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn invariants(p in paths(), o in settings()) {
        if let Ok(n) = normalize(&p, &o) {
            let out = n.path.as_ref();
            prop_assert!(out.starts_with('/'), "{p:?} -> {out:?}");
            for seg in out.split('/') {
                let name = match o.path_parameters {
                    PathParameters::Segment => seg.split(';').next().unwrap_or_default(),
                    PathParameters::Reject => seg,
                };
                prop_assert!(name != "." && name != "..", "{p:?} -> {out:?}");
            }
            if o.merge_slashes {
                prop_assert!(!out.contains("//"), "{p:?} -> {out:?}");
            }
            let again = normalize(out, &o);
            prop_assert!(again.is_ok(), "{p:?} -> {out:?} -> {again:?}");
            let again = again.unwrap();
            prop_assert_eq!(again.path.as_ref(), out, "not idempotent for {:?}", p);
            prop_assert!(!again.changed());
            // Only the characters of an RFC 3986 path are left, and no lower-case hex.
            prop_assert!(out.bytes().all(|c| c == b'/' || c == b'%' || c == b';' || NORMAL[c as usize]));
            let b = out.as_bytes();
            for (i, c) in b.iter().enumerate() {
                if *c == b'%' {
                    let h = &b[i + 1..i + 3];
                    prop_assert!(h.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
                    let v = u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap();
                    prop_assert!(!is_unreserved(v), "{p:?} -> {out:?}");
                }
            }
        }
    }

    #[test]
    fn never_panics_on_any_string(p in "/\\PC{0,40}", o in settings()) {
        let _ = normalize(&p, &o);
    }
}
