//! What a route does to a request it forwards, compiled once per snapshot: the weighted split
//! between clusters, the mirror, and the path and host rewrites. Pure: the proxy carries them
//! out (`proxy::split`, `proxy::mirror`).

use gatehouse_config::forward as cfg;
use gatehouse_config::policy::HashOn;
use std::borrow::Cow;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

/// `clusters: [{name, weight}]`, with `hash_on` stickiness.
#[derive(Debug)]
pub struct Split {
    /// Clusters in config order with the end of their share: side `i` takes points
    /// `[ends[i-1], ends[i])` of `0..total`.
    sides: Vec<(Arc<str>, u64)>,
    total: u64,
    pub hash_on: Option<HashOn>,
}

impl Split {
    pub fn new(sides: &[cfg::WeightedCluster], hash_on: Option<&String>) -> Self {
        let mut end = 0u64;
        let sides = sides
            .iter()
            .map(|w| {
                end += u64::from(w.weight);
                (Arc::from(w.name.as_str()), end)
            })
            .collect();
        Split {
            sides,
            total: end,
            hash_on: hash_on.and_then(|h| gatehouse_config::policy::parse_hash_on(h).ok()),
        }
    }

    /// The side for a request: `hash` (of its `hash_on` key) when it has one, else `random`.
    /// Both are full-range `u64`s scaled onto `0..total`, so a weight change moves only the
    /// clients whose point crosses a boundary: 95/5 → 90/10 moves a twentieth of the
    /// sticky clients from the first side to the second and no one else.
    pub fn pick(&self, hash: Option<u64>, random: u64) -> &Arc<str> {
        let x = hash.unwrap_or(random);
        let point = ((u128::from(x) * u128::from(self.total)) >> 64) as u64;
        self.sides
            .iter()
            .find(|(_, end)| point < *end)
            .or(self.sides.last())
            .map(|(name, _)| name)
            .expect("validation: a split has a side")
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<str>> {
        self.sides.iter().map(|(n, _)| n)
    }
}

/// `mirror: {cluster, percent, max_in_flight, max_body_bytes}`, with the count of copies in
/// flight (per snapshot: a reload starts a new count, the old copies finish on their own).
#[derive(Debug)]
pub struct Mirror {
    pub cluster: Arc<str>,
    pub percent: f64,
    pub max_in_flight: usize,
    pub max_body_bytes: u64,
    pub in_flight: AtomicUsize,
}

impl Mirror {
    pub fn new(m: &cfg::Mirror) -> Self {
        Mirror {
            cluster: m.cluster.as_str().into(),
            percent: m.percent.0,
            max_in_flight: m.max_in_flight as usize,
            max_body_bytes: m.max_body_bytes.0,
            in_flight: AtomicUsize::new(0),
        }
    }
}

/// A regex rewrite would have made a `.` or `..` segment (400 `invalid_path`).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// `rewrite`: the path the backend gets.
#[derive(Debug)]
pub enum PathRewrite {
    /// The route's `path_prefix` becomes `to`.
    Prefix { from: String, to: String },
    Regex {
        re: regex::Regex,
        substitution: String,
    },
}

impl PathRewrite {
    pub fn compile(
        rw: &cfg::Rewrite,
        m: &gatehouse_config::RouteMatch,
        ignore_case: bool,
    ) -> Option<Self> {
        match (&rw.path_prefix, &rw.path_regex, &rw.substitution) {
            (Some(to), _, _) => Some(PathRewrite::Prefix {
                from: m.path_prefix.clone()?,
                to: to.clone(),
            }),
            (None, Some(re), Some(sub)) => Some(PathRewrite::Regex {
                // As the route matched: without case when it does.
                re: gatehouse_config::matching::anchored_regex(&if ignore_case {
                    format!("(?i:{re})")
                } else {
                    re.clone()
                })
                .ok()?,
                substitution: sub.clone(),
            }),
            _ => None,
        }
    }

    /// The rewritten form of `path` (the normalized path the backend would get), or `None` when
    /// it is unchanged. `matched` is the path routes saw (without `;` parameters), when it differs.
    pub fn apply(&self, path: &str, matched: Option<&str>) -> Result<Option<String>, Refused> {
        match self {
            PathRewrite::Prefix { from, to } => {
                // The real path after the prefix's segments (`;` parameters kept).
                let rest: Cow<str> = match matched {
                    None => Cow::Borrowed(path.get(from.len()..).unwrap_or("")),
                    Some(m) => match m.get(from.len()..).unwrap_or("") {
                        "" => Cow::Borrowed(""),
                        t if t.starts_with('/') => Cow::Owned(super::strip_like(path, m, t)),
                        t => Cow::Owned(super::strip_like(path, m, &format!("/{t}"))),
                    },
                };
                // Joined on a segment boundary: one '/' between the two.
                let out = match (to.ends_with('/'), rest.starts_with('/')) {
                    _ if rest.is_empty() => to.clone(),
                    (true, true) => format!("{to}{}", &rest[1..]),
                    (false, false) => format!("{to}/{rest}"),
                    _ => format!("{to}{rest}"),
                };
                Ok((out != path).then_some(out))
            }
            PathRewrite::Regex { re, substitution } => {
                // On the path routes matched (`;` parameters dropped, so the rewrite applies
                // to the request the route took).
                let Some(caps) = re.captures(matched.unwrap_or(path)) else {
                    return Ok(None);
                };
                let mut out = String::new();
                caps.expand(substitution, &mut out);
                if !out.starts_with('/') {
                    out.insert(0, '/');
                }
                // An empty capture between two slashes (`/base/$1/x`) leaves `//`: merged, as
                // request paths are.
                while let Some(i) = out.find("//") {
                    out.remove(i);
                }
                // A capture that began mid-segment can start one in the output: `/v1(.*)` on
                // `/v1../admin` into `/files/$1` is `/files/../admin`, which a backend reads as
                // `/admin`. Such a request is refused, never forwarded.
                if out
                    .split('/')
                    .any(|seg| matches!(seg.split(';').next(), Some("." | "..")))
                {
                    return Err(Refused);
                }
                Ok((out != path).then_some(out))
            }
        }
    }
}

/// `host_rewrite`: the `Host` the backend gets.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    Literal(http::HeaderValue),
    /// The chosen endpoint's `host:port`, set for each try.
    Endpoint,
}

impl HostRewrite {
    pub fn compile(h: &cfg::HostRewrite) -> Option<Self> {
        match h {
            cfg::HostRewrite::Literal(s) => http::HeaderValue::from_str(s)
                .ok()
                .map(HostRewrite::Literal),
            cfg::HostRewrite::Endpoint { endpoint: true } => Some(HostRewrite::Endpoint),
            cfg::HostRewrite::Endpoint { endpoint: false } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(weights: &[u32]) -> Split {
        let sides: Vec<cfg::WeightedCluster> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| cfg::WeightedCluster {
                name: format!("c{i}"),
                weight: *w,
            })
            .collect();
        Split::new(&sides, None)
    }

    #[test]
    fn picks_follow_the_weights() {
        let s = split(&[95, 5]);
        let n = 100_000u64;
        let step = u64::MAX / n;
        let second = (0..n)
            .filter(|i| s.pick(None, i * step).as_ref() == "c1")
            .count();
        assert!((4_900..=5_100).contains(&second), "{second}");
        // A zero-weight side gets nothing.
        let s = split(&[0, 1]);
        assert!((0..1000u64).all(|i| s.pick(None, i * (u64::MAX / 1000)).as_ref() == "c1"));
    }

    #[test]
    fn a_weight_change_moves_only_the_clients_at_the_boundary() {
        let (before, after) = (split(&[95, 5]), split(&[90, 10]));
        for i in 0..10_000u64 {
            let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (b, a) = (before.pick(Some(h), 0), after.pick(Some(h), 0));
            // Nobody moves from the growing side back to the shrinking one.
            assert!(!(b.as_ref() == "c1" && a.as_ref() == "c0"));
        }
    }

    #[test]
    fn prefix_rewrites() {
        let rw = |from: &str, to: &str| PathRewrite::Prefix {
            from: from.into(),
            to: to.into(),
        };
        let cases = [
            ("/api/v1", "/v2", "/api/v1/users", Some("/v2/users")),
            ("/api/v1", "/v2", "/api/v1", Some("/v2")),
            ("/api", "/", "/api/x", Some("/x")),
            ("/api", "/", "/api", Some("/")),
            ("/api/", "/new/", "/api/x", Some("/new/x")),
            ("/api", "/api", "/api/x", None),
        ];
        for (from, to, path, want) in cases {
            assert_eq!(
                rw(from, to).apply(path, None).unwrap().as_deref(),
                want,
                "{from} {to} {path}"
            );
        }
        // Parameters of the remaining segments stay.
        assert_eq!(
            rw("/api", "/v2")
                .apply("/api;v=1/x;y=2", Some("/api/x"))
                .unwrap()
                .as_deref(),
            Some("/v2/x;y=2")
        );
    }

    #[test]
    fn regex_rewrites() {
        let rw = PathRewrite::Regex {
            re: gatehouse_config::matching::anchored_regex("/users/([0-9]+)/(?P<rest>.*)").unwrap(),
            substitution: "/v2/u/$1/${rest}".into(),
        };
        assert_eq!(
            rw.apply("/users/42/orders", None).unwrap().as_deref(),
            Some("/v2/u/42/orders")
        );
        assert_eq!(rw.apply("/other", None), Ok(None));
        // A capture cannot climb out of the substitution's directory.
        let rw = PathRewrite::Regex {
            re: gatehouse_config::matching::anchored_regex("/v1(.*)").unwrap(),
            substitution: "/files/$1".into(),
        };
        assert_eq!(rw.apply("/v1../admin", None), Err(Refused));
        assert_eq!(rw.apply("/v1.;x/admin", None), Err(Refused));
        assert_eq!(
            rw.apply("/v1..x/a", None).unwrap().as_deref(),
            Some("/files/..x/a")
        );
    }
}
