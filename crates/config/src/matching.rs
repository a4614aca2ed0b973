//! The match conditions beyond host, path and method: how a header or query parameter value is
//! matched (`ValueMatch`), regular expressions (anchored, size-limited), client address ranges,
//! and their checks.
//!
//! A value condition is written as a string (exact) or `{exact | prefix | regex | present,
//! invert}`. A header or parameter that occurs more than once matches only when every occurrence
//! does: a request that could be read two ways is not routed as either one's special case.

use serde::{Deserialize, Serialize};

/// How much memory one compiled regular expression may use. A config cannot blow up the
/// gateway with `(a{1000}){1000}`: such a pattern is refused by `gatehouse check`.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;

/// Compiles `pattern` anchored at both ends (it must match the whole value), with the size
/// limit. The error is one line a user can act on.
pub fn anchored_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| regex_error(pattern, e))
}

/// [`anchored_regex`] over bytes (header and query values need not be UTF-8).
pub fn anchored_bytes_regex(pattern: &str) -> Result<regex::bytes::Regex, String> {
    regex::bytes::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| regex_error(pattern, e))
}

fn regex_error(pattern: &str, e: regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => format!(
            "regex {pattern:?} is too big: compiled it needs more than {} KiB; simplify it (fewer or smaller repetitions)",
            REGEX_SIZE_LIMIT / 1024
        ),
        e => {
            let msg = e.to_string();
            // The crate's message spans lines with a caret diagram; keep its last line.
            let last = msg.lines().rfind(|l| !l.trim().is_empty()).unwrap_or("");
            format!("invalid regex {pattern:?}: {}", last.trim().trim_start_matches("error: "))
        }
    }
}

/// A condition on a header or query-parameter value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ValueMatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Anchored: it must match the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: present with any value; `false`: absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Match when the condition does not hold (an absent value does not hold `exact`,
    /// `prefix` or `regex`, so `{exact: beta, invert: true}` matches an absent header too).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub invert: bool,
}

impl ValueMatch {
    pub fn exact(v: &str) -> Self {
        ValueMatch {
            exact: Some(v.to_string()),
            ..ValueMatch::default()
        }
    }

    /// The value's exact text when that is the whole condition (the common case).
    pub fn as_exact(&self) -> Option<&str> {
        match self {
            ValueMatch {
                exact: Some(e),
                prefix: None,
                regex: None,
                present: None,
                invert: false,
            } => Some(e),
            _ => None,
        }
    }

    /// How many of exact, prefix, regex and present are given (one is valid).
    pub fn kinds(&self) -> usize {
        usize::from(self.exact.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.regex.is_some())
            + usize::from(self.present.is_some())
    }

    /// Problems with this condition at `at` (`routes[0].match.headers.x-v`).
    pub fn check(&self, at: &str, out: &mut Vec<(String, String)>) {
        if self.kinds() != 1 {
            out.push((
                at.to_string(),
                "give exactly one of exact, prefix, regex and present".into(),
            ));
        }
        if let Some(r) = &self.regex {
            if let Err(e) = anchored_bytes_regex(r) {
                out.push((format!("{at}.regex"), e));
            }
        }
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            exact: Option<String>,
            prefix: Option<String>,
            regex: Option<String>,
            present: Option<bool>,
            #[serde(default)]
            invert: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueMatch;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a value, or {exact | prefix | regex | present, invert}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ValueMatch::exact(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ValueMatch::exact(&v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ValueMatch::exact(&v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ValueMatch::exact(&v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                let s = Spec::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(ValueMatch {
                    exact: s.exact,
                    prefix: s.prefix,
                    regex: s.regex,
                    present: s.present,
                    invert: s.invert,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Checks the conditions of `routes[i].match` that this module owns.
pub fn check_match(m: &crate::schema::RouteMatch, at: &str, out: &mut Vec<(String, String)>) {
    if let Some(r) = &m.path_regex {
        if let Err(e) = anchored_regex(r) {
            out.push((format!("{at}.match.path_regex"), e));
        }
    }
    for (name, v) in &m.headers {
        v.check(&format!("{at}.match.headers.{name}"), out);
    }
    for (name, v) in &m.query {
        if name.is_empty() {
            out.push((format!("{at}.match.query"), "empty parameter name".into()));
        }
        v.check(&format!("{at}.match.query.{name}"), out);
    }
    for (j, c) in m.client_ip.iter().enumerate() {
        if crate::validate::parse_cidr(c).is_none() {
            out.push((
                format!("{at}.match.client_ip[{j}]"),
                format!("invalid address range {c:?}: expected an IP or a CIDR like 10.0.0.0/8"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_strings_or_maps() {
        let v: std::collections::BTreeMap<String, ValueMatch> = serde_saphyr::from_str(
            "{a: beta, b: {prefix: x}, c: {present: false}, d: {regex: '[0-9]+', invert: true}, e: 2}",
        )
        .unwrap();
        assert_eq!(v["a"].as_exact(), Some("beta"));
        assert_eq!(v["b"].prefix.as_deref(), Some("x"));
        assert_eq!(v["c"].present, Some(false));
        assert!(v["d"].invert);
        assert_eq!(v["e"].as_exact(), Some("2"));
        let bad: Result<ValueMatch, _> = serde_saphyr::from_str("{exactly: x}");
        assert!(bad.is_err());
    }

    #[test]
    fn regexes_are_anchored_and_bounded() {
        let r = anchored_regex("/users/[0-9]+").unwrap();
        assert!(r.is_match("/users/42"));
        assert!(!r.is_match("/users/42/x"));
        assert!(!r.is_match("/x/users/42"));
        let e = anchored_regex("(a{1000}){1000}").unwrap_err();
        assert!(e.contains("too big"), "{e}");
        let e = anchored_regex("/(unclosed").unwrap_err();
        assert!(e.starts_with("invalid regex"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn one_kind_per_condition() {
        let mut out = Vec::new();
        ValueMatch {
            exact: Some("a".into()),
            prefix: Some("b".into()),
            ..ValueMatch::default()
        }
        .check("h", &mut out);
        ValueMatch::default().check("h", &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
    }
}
