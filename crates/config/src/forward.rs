//! How a route forwards beyond naming one cluster: a weighted split between clusters (`clusters`,
//! sticky with `hash_on`), a shadow copy to another cluster (`mirror`), and the path and host the
//! backend gets (`rewrite`, `host_rewrite`); and their validation.

use crate::units::{ByteSize, Percent};
use serde::{Deserialize, Serialize};

/// One side of a split: `{name: v2, weight: 5}`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    /// Relative share (0 takes the side out without removing it).
    pub weight: u32,
}

/// `mirror: {cluster, percent, max_in_flight, max_body_bytes}`: a copy of the request goes to
/// `cluster`; its answer is thrown away and it never delays or fails the real request.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub cluster: String,
    /// Share of requests mirrored (default 100%).
    #[serde(default = "defaults::percent")]
    pub percent: Percent,
    /// Copies in flight at once beyond which more are dropped and counted (default 64).
    #[serde(default = "defaults::in_flight")]
    pub max_in_flight: u32,
    /// A request whose body is larger is not mirrored (default 64KiB); the real request is
    /// never held back to read a body for the mirror.
    #[serde(default = "defaults::body")]
    pub max_body_bytes: ByteSize,
}

/// `rewrite: {path_prefix}` or `rewrite: {path_regex, substitution}`: the path the backend gets.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the route's matched `path_prefix` (or template's literal start) with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// With `substitution`: the whole path matched against this (anchored) and replaced, with
    /// `$1`, `${name}` for captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub substitution: Option<String>,
}

/// `host_rewrite: api.internal` (a literal) or `host_rewrite: {endpoint: true}` (the chosen
/// endpoint's `host:port`): the `Host` the backend gets.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum HostRewrite {
    Literal(String),
    Endpoint { endpoint: bool },
}

impl<'de> Deserialize<'de> for HostRewrite {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            endpoint: bool,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HostRewrite;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a host name, or {endpoint: true}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(HostRewrite::Literal(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                let s = Spec::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(HostRewrite::Endpoint {
                    endpoint: s.endpoint,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Why `s` cannot be (part of) a path: a character that would end it or is not allowed raw.
fn path_chars(s: &str) -> Option<String> {
    s.chars()
        .find(|c| matches!(c, '?' | '#' | ' ') || c.is_control() || !c.is_ascii())
        .map(|c| format!("{c:?} cannot be in a path (a query or fragment would start, or it must be percent-encoded)"))
}

/// `$1x` is the capture named `1x` (the regex crate reads the longest name), almost never
/// what was meant: say to write `${1}x`.
fn ambiguous_capture(sub: &str) -> Option<String> {
    let b = sub.as_bytes();
    (0..b.len()).find_map(|i| {
        if b[i] != b'$' || (i > 0 && b[i - 1] == b'$') {
            return None;
        }
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let next = b.get(i + 1 + digits)?;
        (digits > 0 && (next.is_ascii_alphabetic() || *next == b'_')).then(|| {
            let n = &sub[i + 1..i + 1 + digits];
            format!(
                "${n}{} reads as the capture named \"{n}{}...\": write ${{{n}}} before letters",
                *next as char, *next as char
            )
        })
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ambiguous_captures() {
        assert!(super::ambiguous_capture("/u/$1x").is_some());
        assert!(super::ambiguous_capture("/u/${1}x").is_none());
        assert!(super::ambiguous_capture("/u/$1/$2").is_none());
        assert!(super::ambiguous_capture("/u/$name").is_none());
        assert!(super::ambiguous_capture("/u/$$1x").is_none());
    }
}

mod defaults {
    use crate::units::{ByteSize, Percent};
    pub fn percent() -> Percent {
        Percent(1.0)
    }
    pub fn in_flight() -> u32 {
        64
    }
    pub fn body() -> ByteSize {
        ByteSize(64 * 1024)
    }
}

/// Checks `clusters`, `hash_on`, `mirror`, `rewrite` and `host_rewrite` of the route at `at`.
/// `known`: the config's cluster names.
pub fn check(r: &crate::schema::Route, at: &str, known: &[&str], out: &mut Vec<(String, String)>) {
    let mut p = |path: String, msg: String| out.push((path, msg));
    let unknown = |n: &str| format!("unknown cluster {n:?} (known: {})", known.join(", "));
    for (j, w) in r.clusters.iter().enumerate() {
        if !known.contains(&w.name.as_str()) {
            p(format!("{at}.clusters[{j}].name"), unknown(&w.name));
        }
        if r.clusters[..j].iter().any(|o| o.name == w.name) {
            p(
                format!("{at}.clusters[{j}].name"),
                format!("{:?} is listed twice", w.name),
            );
        }
    }
    if !r.clusters.is_empty() && r.clusters.iter().all(|w| w.weight == 0) {
        p(
            format!("{at}.clusters"),
            "every weight is 0: give at least one side a weight".into(),
        );
    }
    if let Some(h) = &r.hash_on {
        if r.clusters.is_empty() {
            p(
                format!("{at}.hash_on"),
                "hash_on keeps a client on one side of a split: it needs clusters: [{name, weight}, ...]".into(),
            );
        } else if let Err(e) = crate::policy::parse_hash_on(h) {
            p(format!("{at}.hash_on"), e);
        }
    }
    if let Some(m) = &r.mirror {
        if !known.contains(&m.cluster.as_str()) {
            p(format!("{at}.mirror.cluster"), unknown(&m.cluster));
        }
        if m.max_in_flight == 0 {
            p(
                format!("{at}.mirror.max_in_flight"),
                "must be at least 1 (to mirror nothing, remove mirror or set percent: 0%)".into(),
            );
        }
    }
    if let Some(rw) = &r.rewrite {
        let m = &r.matches;
        match (&rw.path_prefix, &rw.path_regex, &rw.substitution) {
            (Some(p2), None, None) => {
                if let Some(e) = path_chars(p2) {
                    p(format!("{at}.rewrite.path_prefix"), e);
                }
                if !p2.starts_with('/') {
                    p(
                        format!("{at}.rewrite.path_prefix"),
                        format!("{p2:?} must start with '/'"),
                    );
                }
                if m.path_prefix.is_none() {
                    p(
                        format!("{at}.rewrite.path_prefix"),
                        "replaces the matched prefix: the route needs match.path_prefix (or use path_regex and substitution)".into(),
                    );
                }
            }
            (None, Some(re), Some(sub)) => match crate::matching::anchored_regex(re) {
                _ if path_chars(sub).is_some() => p(
                    format!("{at}.rewrite.substitution"),
                    path_chars(sub).unwrap_or_default(),
                ),
                _ if ambiguous_capture(sub).is_some() => p(
                    format!("{at}.rewrite.substitution"),
                    ambiguous_capture(sub).unwrap_or_default(),
                ),
                Err(e) => p(format!("{at}.rewrite.path_regex"), e),
                Ok(_) if !sub.starts_with('/') && !sub.starts_with('$') => p(
                    format!("{at}.rewrite.substitution"),
                    format!("{sub:?} must start with '/' (or a capture that does)"),
                ),
                Ok(_) => {}
            },
            (None, Some(_), None) | (None, None, Some(_)) => p(
                format!("{at}.rewrite"),
                "path_regex and substitution go together".into(),
            ),
            _ => p(
                format!("{at}.rewrite"),
                "use path_prefix, or path_regex with substitution".into(),
            ),
        }
        if r.strip_prefix {
            p(
                format!("{at}.rewrite"),
                "strip_prefix and rewrite both change the path: use rewrite: {path_prefix: /}"
                    .into(),
            );
        }
    }
    match &r.host_rewrite {
        Some(HostRewrite::Literal(h))
            if h.is_empty()
                || !h
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._:[]".contains(c)) =>
        {
            p(
                format!("{at}.host_rewrite"),
                format!(
                    "invalid host {h:?}: expected a name like api.internal (a port may follow)"
                ),
            )
        }
        Some(HostRewrite::Endpoint { endpoint: false }) => p(
            format!("{at}.host_rewrite"),
            "endpoint: false rewrites nothing: remove host_rewrite".into(),
        ),
        _ => {}
    }
    let answers = r.redirect.is_some() || r.direct_response.is_some();
    for (set, key) in [
        (r.mirror.is_some(), "mirror"),
        (r.rewrite.is_some(), "rewrite"),
        (r.host_rewrite.is_some(), "host_rewrite"),
    ] {
        if set && answers {
            p(
                format!("{at}.{key}"),
                "a redirect or direct_response route forwards nothing".into(),
            );
        }
    }
}
