//! The host a request is for (RFC 9112 §3.2, RFC 9110 §7.2, RFC 9113 §8.3.1): HTTP/1.1 needs
//! exactly one `Host`; it must be a valid `uri-host[:port]`; an absolute-form target's authority
//! wins over `Host`; HTTP/2's `:authority` and `host` must agree. The result is lower-case
//! without a trailing dot, and it is the one host routes, logs, `X-Forwarded-Host` and the
//! forwarded `Host` use. Pure: no I/O.

use http::{header, HeaderMap, HeaderValue, Uri, Version};
use std::borrow::Cow;

/// A canonical host, kept as a header value: when the client sent it in canonical form already
/// (most do), it shares the request's own bytes, so routing, the access log, `Host` and
/// `X-Forwarded-Host` all use that one copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host(HeaderValue);

impl Host {
    /// No host: an HTTP/1.0 request that named none.
    pub fn none() -> Self {
        Host(HeaderValue::from_static(""))
    }

    fn from_cow(c: Cow<'_, str>, shared: Option<&HeaderValue>) -> Result<Self, HostError> {
        match (c, shared) {
            (Cow::Borrowed(_), Some(v)) => Ok(Host(v.clone())),
            (c, _) => HeaderValue::from_maybe_shared(bytes::Bytes::from(c.into_owned()))
                .map(Host)
                .map_err(|_| HostError::Invalid),
        }
    }

    pub fn as_str(&self) -> &str {
        // Validated ASCII when made; the fallback is unreachable.
        std::str::from_utf8(self.0.as_bytes()).unwrap_or("")
    }

    pub fn header(&self) -> &HeaderValue {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostError {
    /// HTTP/1.1 without `Host`, or HTTP/2 with neither `:authority` nor `host`.
    Missing,
    /// More than one `Host`.
    Multiple,
    /// Not a `uri-host[:port]` (user info, a path, bad characters, a bad port).
    Invalid,
    /// HTTP/2 `:authority` and `host` disagree.
    Mismatch,
    /// An absolute-form target whose scheme is not http or https.
    Scheme,
}

impl HostError {
    pub fn detail(self) -> &'static str {
        match self {
            HostError::Missing => "the request has no Host",
            HostError::Multiple => "the request has more than one Host",
            HostError::Invalid => "the Host is not a valid host[:port]",
            HostError::Mismatch => "the :authority and Host of the request disagree",
            HostError::Scheme => "the request target's scheme is not http or https",
        }
    }
}

/// The canonical host of a request, or `""` for an HTTP/1.0 request without one.
pub fn canonical_host(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<Host, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Multiple);
    }
    let from_header = host_header
        .map(|v| {
            v.to_str()
                .map_err(|_| HostError::Invalid)
                .and_then(canonical_cow)
                .and_then(|c| Host::from_cow(c, Some(v)))
        })
        .transpose()?;
    let from_target = match uri.authority() {
        Some(a) => {
            match uri.scheme_str() {
                Some(s) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {}
                _ => return Err(HostError::Scheme),
            }
            Some(Host::from_cow(canonical_cow(a.as_str())?, None)?)
        }
        None => None,
    };
    match (version, from_target, from_header) {
        (Version::HTTP_2 | Version::HTTP_3, Some(t), Some(h)) if t != h => Err(HostError::Mismatch),
        (Version::HTTP_2 | Version::HTTP_3, None, None) => Err(HostError::Missing),
        // HTTP/1.1 requires Host even with an absolute-form target, whose authority then wins.
        (Version::HTTP_11, _, None) => Err(HostError::Missing),
        (_, Some(t), _) => Ok(t),
        (_, None, Some(h)) => Ok(h),
        (_, None, None) => Ok(Host::none()),
    }
}

/// Validates `uri-host[:port]` and returns it lower-cased without a trailing dot. Names are
/// restricted to letters, digits, `-`, `_` and `.` (what DNS and every router agree on);
/// IP literals must parse.
pub fn canonical(s: &str) -> Result<String, HostError> {
    canonical_cow(s).map(Cow::into_owned)
}

/// [`canonical`], borrowing `s` when it is canonical already.
fn canonical_cow(s: &str) -> Result<Cow<'_, str>, HostError> {
    let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| HostError::Invalid)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(HostError::Invalid)?),
        };
        (&s[..v6.len() + 2], port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        // Decimal, no leading zero, 1-65535: `00080` and `0` are not ports anyone means.
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HostError::Invalid);
        }
        if p.starts_with('0') || p.parse::<u32>().map_or(true, |n| n > 65535) {
            return Err(HostError::Invalid);
        }
    }
    if host.starts_with('[') {
        return Ok(if lower {
            Cow::Borrowed(s)
        } else {
            Cow::Owned(s.to_ascii_lowercase())
        });
    }
    {
        let bare = host.strip_suffix('.').unwrap_or(host);
        // One pass over the bytes (the `str` split iterators cost ~1,000 instructions for a
        // short name): every label 1-63 letters, digits, `-` or `_`; the name at most 253.
        let mut labels_ok = !bare.is_empty() && bare.len() <= 253;
        let (mut label_len, mut label_digits, mut last_start) = (0usize, true, 0usize);
        for (i, &b) in bare.as_bytes().iter().enumerate() {
            if b == b'.' {
                labels_ok &= label_len > 0;
                (label_len, label_digits, last_start) = (0, true, i + 1);
            } else if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                label_len += 1;
                label_digits &= b.is_ascii_digit();
            } else {
                labels_ok = false;
            }
            labels_ok &= label_len <= 63;
            if !labels_ok {
                break;
            }
        }
        if !labels_ok || label_len == 0 {
            return Err(HostError::Invalid);
        }
        // A name whose last label is a number is an IPv4 address to URL parsers and resolvers
        // (`127.1`, `0x7f.0.0.1`, `2130706433`); only the dotted-decimal form is accepted.
        let last = &bare[last_start..];
        let numeric = label_digits || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
        if numeric && !dotted_quad(bare.as_bytes()) {
            return Err(HostError::Invalid);
        }
        if lower && bare.len() == host.len() {
            return Ok(Cow::Borrowed(s));
        }
        // One allocation: the name without its trailing dot, then the port as sent.
        let mut out = String::with_capacity(s.len());
        out.push_str(bare);
        out.make_ascii_lowercase();
        if let Some(p) = port {
            out.push(':');
            out.push_str(p);
        }
        Ok(Cow::Owned(out))
    }
}

/// Whether `s` is an IPv4 address as `Ipv4Addr::from_str` reads one: four numbers of one to
/// three digits, each 0-255, none with a leading zero. One pass over the bytes; the generic
/// parser took ~400 instructions for `127.0.0.1`, on every request that names an address.
fn dotted_quad(s: &[u8]) -> bool {
    let (mut dots, mut value, mut digits) = (0u8, 0u16, 0u8);
    for &b in s {
        if b == b'.' {
            if digits == 0 || dots == 3 {
                return false;
            }
            (dots, value, digits) = (dots + 1, 0, 0);
        } else if b.is_ascii_digit() {
            // `0` alone is a number; `01` and `00` are not.
            if digits == 3 || (digits > 0 && value == 0) {
                return false;
            }
            value = value * 10 + u16::from(b - b'0');
            digits += 1;
            if value > 255 {
                return false;
            }
        } else {
            return false;
        }
    }
    dots == 3 && digits > 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(version: Version, target: &str, hosts: &[&str]) -> Result<String, HostError> {
        req_host(version, target, hosts).map(|h| h.as_str().to_string())
    }

    fn req_host(version: Version, target: &str, hosts: &[&str]) -> Result<Host, HostError> {
        let uri: Uri = target.parse().unwrap();
        let mut h = HeaderMap::new();
        for v in hosts {
            h.append(header::HOST, HeaderValue::from_str(v).unwrap());
        }
        canonical_host(version, &uri, &h)
    }

    #[test]
    fn a_host_sent_canonical_shares_the_request_bytes_and_others_are_rewritten() {
        let v = HeaderValue::from_static("api.example.com:8080");
        let mut h = HeaderMap::new();
        h.insert(header::HOST, v.clone());
        let got = canonical_host(Version::HTTP_11, &Uri::from_static("/"), &h).unwrap();
        assert_eq!(got.as_str().as_ptr(), v.as_bytes().as_ptr());
        let got = req_host(Version::HTTP_11, "/", &["API.example.com."]).unwrap();
        assert_eq!(got.as_str(), "api.example.com");
        assert_eq!(got.header(), "api.example.com");
    }

    #[test]
    fn host_rules() {
        use HostError::*;
        let v11 = Version::HTTP_11;
        type Case<'a> = (Version, &'a str, &'a [&'a str], Result<&'a str, HostError>);
        let cases: &[Case] = &[
            (v11, "/", &["api.example.com"], Ok("api.example.com")),
            (
                v11,
                "/",
                &["API.Example.COM:8080"],
                Ok("api.example.com:8080"),
            ),
            (v11, "/", &["api.example.com."], Ok("api.example.com")),
            (v11, "/", &["127.0.0.1:80"], Ok("127.0.0.1:80")),
            (v11, "/", &["[::1]:8080"], Ok("[::1]:8080")),
            (v11, "/", &["[::1]"], Ok("[::1]")),
            (v11, "/", &["internal_svc"], Ok("internal_svc")),
            (v11, "/", &[], Err(Missing)),
            (v11, "/", &["a", "b"], Err(Multiple)),
            (v11, "/", &["a", "a"], Err(Multiple)),
            (v11, "/", &["evil.com/@a"], Err(Invalid)),
            (v11, "/", &["user@a"], Err(Invalid)),
            (v11, "/", &[""], Err(Invalid)),
            (v11, "/", &["a:"], Err(Invalid)),
            (v11, "/", &["a:99999"], Err(Invalid)),
            (v11, "/", &["a:8x"], Err(Invalid)),
            (v11, "/", &["a..b"], Err(Invalid)),
            (v11, "/", &["127.1"], Err(Invalid)),
            (v11, "/", &["0177.0.0.1"], Err(Invalid)),
            (v11, "/", &["0x7f.0.0.1"], Err(Invalid)),
            (v11, "/", &["2130706433"], Err(Invalid)),
            (v11, "/", &["256.1.1.1"], Err(Invalid)),
            (v11, "/", &["a.b.0x1"], Err(Invalid)),
            (v11, "/", &["gw.test:0"], Err(Invalid)),
            (v11, "/", &["gw.test:00080"], Err(Invalid)),
            (v11, "/", &["v1.api.example"], Ok("v1.api.example")),
            (v11, "/", &["10.0.0.1"], Ok("10.0.0.1")),
            (v11, "/", &[".a"], Err(Invalid)),
            (v11, "/", &["a b"], Err(Invalid)),
            (v11, "/", &["a%2eb"], Err(Invalid)),
            (v11, "/", &["[::1"], Err(Invalid)),
            (v11, "/", &["[zz]"], Err(Invalid)),
            (v11, "/", &["[::1]x"], Err(Invalid)),
            // Absolute form: the target's authority wins, Host still required and valid.
            (v11, "http://b.example/x", &["a"], Ok("b.example")),
            (v11, "http://B.example:81/x", &["a"], Ok("b.example:81")),
            (v11, "http://b.example/x", &[], Err(Missing)),
            (v11, "http://b.example/x", &["a/b"], Err(Invalid)),
            (v11, "http://user@b.example/x", &["a"], Err(Invalid)),
            (v11, "ftp://b.example/x", &["a"], Err(Scheme)),
            // HTTP/1.0 may omit Host.
            (Version::HTTP_10, "/", &[], Ok("")),
            (Version::HTTP_10, "/", &["a"], Ok("a")),
            // HTTP/2: :authority (in the URI) and host must agree.
            (Version::HTTP_2, "http://a.example/", &[], Ok("a.example")),
            (
                Version::HTTP_2,
                "http://a.example/",
                &["A.example"],
                Ok("a.example"),
            ),
            (
                Version::HTTP_2,
                "http://a.example/",
                &["b.example"],
                Err(Mismatch),
            ),
            (Version::HTTP_2, "/", &["b.example"], Ok("b.example")),
            (Version::HTTP_2, "/", &[], Err(Missing)),
        ];
        for (v, target, hosts, want) in cases {
            let got = req(*v, target, hosts);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *want,
                "{v:?} {target} {hosts:?}"
            );
        }
    }

    /// The validation as it was before it became one pass over the bytes: the new one must
    /// agree with it on every string.
    fn reference(s: &str) -> Result<Cow<'_, str>, HostError> {
        let lower = !s.bytes().any(|b| b.is_ascii_uppercase());
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']').ok_or(HostError::Invalid)?;
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| HostError::Invalid)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(HostError::Invalid)?),
            };
            (&s[..v6.len() + 2], port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        if let Some(p) = port {
            // Decimal, no leading zero, 1-65535: `00080` and `0` are not ports anyone means.
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HostError::Invalid);
            }
            if p.starts_with('0') || p.parse::<u32>().map_or(true, |n| n > 65535) {
                return Err(HostError::Invalid);
            }
        }
        if host.starts_with('[') {
            return Ok(if lower {
                Cow::Borrowed(s)
            } else {
                Cow::Owned(s.to_ascii_lowercase())
            });
        }
        {
            let bare = host.strip_suffix('.').unwrap_or(host);
            let labels_ok = !bare.is_empty()
                && bare.len() <= 253
                && bare.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if !labels_ok {
                return Err(HostError::Invalid);
            }
            // A name whose last label is a number is an IPv4 address to URL parsers and resolvers
            // (`127.1`, `0x7f.0.0.1`, `2130706433`); only the dotted-decimal form is accepted.
            let last = bare.rsplit('.').next().unwrap_or(bare);
            let numeric = last.bytes().all(|b| b.is_ascii_digit())
                || last.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("0x"));
            if numeric && bare.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(HostError::Invalid);
            }
            if lower && bare.len() == host.len() {
                return Ok(Cow::Borrowed(s));
            }
            // One allocation: the name without its trailing dot, then the port as sent.
            let mut out = String::with_capacity(s.len());
            out.push_str(bare);
            out.make_ascii_lowercase();
            if let Some(p) = port {
                out.push(':');
                out.push_str(p);
            }
            Ok(Cow::Owned(out))
        }
    }

    #[test]
    fn long_labels_and_names_are_judged_as_before() {
        let label = |n| "a".repeat(n);
        for s in [
            label(63),
            label(64),
            format!("{}.b", label(63)),
            format!("{}.b", label(64)),
            [label(63), label(63), label(63), label(61)].join("."),
            [label(63), label(63), label(63), label(62)].join("."),
            format!(
                "{}.",
                [label(63), label(63), label(63), label(61)].join(".")
            ),
        ] {
            assert_eq!(canonical_cow(&s), reference(&s), "{s}");
        }
    }

    #[test]
    fn dotted_quads_are_read_as_the_standard_parser_reads_them() {
        for s in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.00.3.4",
            "1.2.3.04",
            "1.2.3.",
            ".1.2.3",
            "1..2.3",
            "1.2.3.4.",
            "1000.2.3.4",
            "0x7f.0.0.1",
            "",
            "1.2.3.a",
            "10.20.30.40",
            "9.99.199.249",
        ] {
            assert_eq!(
                dotted_quad(s.as_bytes()),
                s.parse::<std::net::Ipv4Addr>().is_ok(),
                "{s}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn dotted_quads_agree_with_the_standard_parser(s in "[0-9.]{0,16}|([0-9]{1,4}\\.){3}[0-9]{1,4}") {
            proptest::prop_assert_eq!(dotted_quad(s.as_bytes()), s.parse::<std::net::Ipv4Addr>().is_ok(), "{}", s);
        }

        #[test]
        fn the_one_pass_validation_agrees_with_the_split_based_one(
            s in "[a-zA-Z0-9._:x\\-\\[\\]%]{0,12}|([a-z0-9]{0,3}\\.){0,5}[0-9x]{0,4}(:[0-9]{0,6})?"
        ) {
            proptest::prop_assert_eq!(canonical_cow(&s), reference(&s), "{}", s);
        }
    }
}
