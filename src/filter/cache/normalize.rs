//! The headers RFC 9111 decisions are made on, put in one strict form before
//! `http-cache-semantics` reads them (it compares directive names case-sensitively, splits
//! quoted strings on commas, reads only an `Age`'s first line, ignores `Date` for age, and
//! accepts dates RFC 9110 does not). What clients receive is never this form: entries keep the
//! response's own header lines.
//!
//! - `Cache-Control`: every line parsed as RFC 9110 §5.6 lists of `token[=token|quoted]`;
//!   names lowercased; a directive with whitespace around `=`, a bad name, or a numeric
//!   directive whose value is not digits is dropped (unusable: RFC 9111 §4.2.1 lets a cache treat
//!   it as stale); numbers above 2^31 are 2^31 (§1.2.2). `proxy-revalidate`, and `s-maxage`
//!   which implies it, become `must-revalidate` for a shared cache (§5.2.2.8, §5.2.2.10).
//! - `Expires`, `Date`, `Last-Modified`: an HTTP-date in one of RFC 9110 §5.6.7's three forms
//!   becomes IMF-fixdate; an invalid `Expires` is the epoch (already expired, RFC 9111 §5.3),
//!   an invalid `Date` or `Last-Modified` is dropped.
//! - `Age`: the first member of the first line if it is digits (capped at 2^31), raised to the
//!   apparent age (`response_time - Date`): RFC 9111 §4.2.3's corrected initial age.
//! - Requests: the same `Cache-Control` form without `max-stale` (a client cannot make a shared
//!   cache serve stale), `Pragma` only when there is no `Cache-Control` (§5.4), and every header
//!   of several lines folded into one, so `Vary` compares whole values.

use http::header::{self, HeaderMap, HeaderValue};
use std::time::{Duration, SystemTime};

/// RFC 9111 §1.2.2: delta-seconds beyond this are this.
pub const MAX_DELTA: u64 = 1 << 31;

const NUMERIC: [&str; 6] = [
    "max-age",
    "s-maxage",
    "min-fresh",
    "max-stale",
    "stale-while-revalidate",
    "stale-if-error",
];

/// The `Cache-Control` directives in `h`, names lowercased, values unquoted.
/// A directive that only restricts (never grants freshness) is kept even when it is
/// malformed (`no-store =`, inside an unterminated quote, next to a non-ASCII byte): reading a
/// broken `private` as absent would share one client's response with the next.
const RESTRICTIVE: [&str; 5] = [
    "no-store",
    "private",
    "no-cache",
    "must-revalidate",
    "proxy-revalidate",
];

pub fn directives(h: &HeaderMap) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in h.get_all(header::CACHE_CONTROL) {
        // Bytes beyond ASCII (obs-text) are legal in quoted strings: read them as one
        // character each rather than losing the whole line.
        let line: String = line.as_bytes().iter().map(|&b| char::from(b)).collect();
        parse_line(&line, &mut out);
        // A loose second reading: every comma- or semicolon-separated piece's leading name.
        for piece in line.split([',', ';']) {
            let name: String = piece
                .trim_start_matches([' ', '\t', '"'])
                .chars()
                .take_while(|c| is_tchar(*c))
                .collect::<String>()
                .to_ascii_lowercase();
            if RESTRICTIVE.contains(&name.as_str()) && !out.iter().any(|(n, _)| *n == name) {
                out.push((name, None));
            }
        }
    }
    out
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn parse_line(line: &str, out: &mut Vec<(String, Option<String>)>) {
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == ' ' || b[*i] == '\t') {
            *i += 1;
        }
    };
    while i < b.len() {
        skip_ws(&mut i);
        if i < b.len() && b[i] == ',' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        let name: String = b[start..i].iter().collect::<String>().to_ascii_lowercase();
        let mut value = None;
        let mut valid = !name.is_empty();
        if i < b.len() && b[i] == '=' {
            i += 1;
            if i < b.len() && b[i] == '"' {
                i += 1;
                let mut v = String::new();
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        '\\' if i + 1 < b.len() => {
                            v.push(b[i + 1]);
                            i += 2;
                        }
                        '"' => {
                            i += 1;
                            closed = true;
                            break;
                        }
                        c => {
                            v.push(c);
                            i += 1;
                        }
                    }
                }
                valid &= closed;
                value = Some(v);
            } else {
                let vs = i;
                while i < b.len() && is_tchar(b[i]) {
                    i += 1;
                }
                valid &= i > vs;
                value = Some(b[vs..i].iter().collect());
            }
        }
        skip_ws(&mut i);
        // Anything but the end or the next comma (`max-age =1`, `a b`): this member is
        // unusable; skip to the next comma outside a quoted string.
        if i < b.len() && b[i] != ',' {
            valid = false;
            let mut quoted = false;
            while i < b.len() && (quoted || b[i] != ',') {
                match b[i] {
                    '"' => quoted = !quoted,
                    '\\' if quoted => i += 1,
                    _ => {}
                }
                i += 1;
            }
        }
        if !valid {
            continue;
        }
        if NUMERIC.contains(&name.as_str()) {
            match value.as_deref().map(delta_seconds) {
                Some(Some(n)) => value = Some(n.to_string()),
                // `max-stale` alone means any staleness; the others need a number.
                None if name == "max-stale" => {}
                _ => continue,
            }
        }
        out.push((name, value));
    }
}

/// delta-seconds (RFC 9111 §1.2.2): digits, capped at 2^31.
fn delta_seconds(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<u64>().unwrap_or(MAX_DELTA).min(MAX_DELTA))
}

fn serialize(d: &[(String, Option<String>)]) -> Option<HeaderValue> {
    let mut s = String::new();
    for (name, value) in d {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(name);
        // Only token values: `http-cache-semantics` splits quoted strings on their commas.
        // A quoted list (`no-cache="set-cookie"`, `private="x"`, an extension's) keeps its
        // name, which is the stricter reading for the directives that take one.
        if let Some(v) = value
            .as_ref()
            .filter(|v| !v.is_empty() && v.chars().all(is_tchar))
        {
            s.push('=');
            s.push_str(v);
        }
    }
    HeaderValue::from_str(&s).ok()
}

fn set_directives(h: &mut HeaderMap, d: &[(String, Option<String>)]) {
    h.remove(header::CACHE_CONTROL);
    if let Some(v) = serialize(d).filter(|v| !v.is_empty()) {
        h.insert(header::CACHE_CONTROL, v);
    }
}

/// An HTTP-date in any of the three forms, as a time.
pub fn http_date(v: &HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()
}

fn fixdate(t: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&httpdate::fmt_http_date(t))
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The response head the cache's decisions are made on (received at `response_time`).
pub fn response(h: &HeaderMap, response_time: SystemTime) -> HeaderMap {
    let mut out = h.clone();
    let mut d = directives(h);
    let shared_revalidate = d
        .iter()
        .any(|(n, _)| n == "proxy-revalidate" || n == "s-maxage");
    d.retain(|(n, _)| n != "proxy-revalidate");
    if shared_revalidate && !d.iter().any(|(n, _)| n == "must-revalidate") {
        d.push(("must-revalidate".into(), None));
    }
    set_directives(&mut out, &d);
    // A single Expires / Date / Last-Modified; several lines are as good as invalid.
    for name in [header::EXPIRES, header::DATE, header::LAST_MODIFIED] {
        let mut values = h.get_all(&name).iter();
        let parsed = match (values.next(), values.next()) {
            (Some(v), None) => Some(http_date(v)),
            (Some(_), Some(_)) => Some(None),
            (None, _) => None,
        };
        match parsed {
            None => {}
            Some(Some(t)) => {
                out.insert(&name, fixdate(t));
            }
            Some(None) if name == header::EXPIRES => {
                out.insert(&name, fixdate(SystemTime::UNIX_EPOCH));
            }
            Some(None) => {
                out.remove(&name);
            }
        }
    }
    // Vary as one clean list; a name that is not a token cannot be compared, so the response
    // matches nothing (`*`) rather than everything.
    if h.contains_key(header::VARY) {
        let mut names = Vec::new();
        for line in h.get_all(header::VARY) {
            for n in line.as_bytes().split(|b| *b == b',') {
                let n = n.trim_ascii();
                if n.is_empty() {
                    continue;
                }
                match std::str::from_utf8(n) {
                    Ok(s) if s == "*" || s.chars().all(is_tchar) => {
                        names.push(s.to_ascii_lowercase())
                    }
                    _ => names.push("*".into()),
                }
            }
        }
        let vary = if names.iter().any(|n| n == "*") {
            "*".to_string()
        } else {
            names.join(", ")
        };
        match HeaderValue::from_str(&vary) {
            Ok(v) if !vary.is_empty() => {
                out.insert(header::VARY, v);
            }
            _ => {
                out.remove(header::VARY);
            }
        }
    }
    let age_value = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| delta_seconds(v.trim()))
        .unwrap_or(0);
    let apparent = out
        .get(header::DATE)
        .and_then(http_date)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or_default();
    let age = Duration::from_secs(age_value)
        .max(apparent)
        .as_secs()
        .min(MAX_DELTA);
    out.remove(header::AGE);
    if age > 0 {
        out.insert(header::AGE, HeaderValue::from(age));
    }
    out
}

/// The request head the cache's decisions are made on.
pub fn request(h: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(h.keys_len());
    for name in h.keys() {
        let mut values = h.get_all(name).iter();
        let (Some(first), rest) = (values.next(), values) else {
            continue;
        };
        let mut joined = first.as_bytes().to_vec();
        for v in rest {
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            out.insert(name.clone(), v);
        }
    }
    if h.contains_key(header::CACHE_CONTROL) {
        let mut d = directives(h);
        d.retain(|(n, _)| n != "max-stale");
        set_directives(&mut out, &d);
        out.remove(header::PRAGMA);
    } else if let Some(p) = out.get(header::PRAGMA) {
        let lower = p.to_str().unwrap_or("").to_ascii_lowercase();
        match HeaderValue::from_str(&lower) {
            Ok(v) => {
                out.insert(header::PRAGMA, v);
            }
            Err(_) => {
                out.remove(header::PRAGMA);
            }
        }
    }
    out
}

/// Whether the (normalized) request has one of these directives.
pub fn has(h: &HeaderMap, names: &[&str]) -> bool {
    directives(h)
        .iter()
        .any(|(n, _)| names.contains(&n.as_str()))
        || (names.contains(&"no-cache")
            && h.get(header::PRAGMA).is_some_and(|p| {
                p.as_bytes()
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"no-cache"))
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cc(lines: &[&str]) -> String {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::CACHE_CONTROL, l.parse().unwrap());
        }
        let mut out = HeaderMap::new();
        set_directives(&mut out, &directives(&h));
        out.get(header::CACHE_CONTROL)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    #[test]
    fn cache_control_is_parsed_strictly() {
        assert_eq!(cc(&["PRIVATE, Max-Age=60"]), "private, max-age=60");
        assert_eq!(cc(&["max-age=60", "No-Store"]), "max-age=60, no-store");
        assert_eq!(
            cc(&[r#"extension="a, max-age=3600", max-age=1"#]),
            "extension, max-age=1"
        );
        assert_eq!(
            cc(&[r#"no-cache="a, b", max-age=5"#]),
            "no-cache, max-age=5"
        );
        assert_eq!(cc(&["max-age =3600"]), "");
        assert_eq!(cc(&["max-age= 3600, public"]), "public");
        assert_eq!(
            cc(&["max-age=100a, max-age=-1, s-maxage=\"30\""]),
            "s-maxage=30"
        );
        assert_eq!(
            cc(&["max-age=99999999999999999999"]),
            format!("max-age={MAX_DELTA}")
        );
        assert_eq!(cc(&["max-stale, min-fresh=x"]), "max-stale");
        assert_eq!(cc(&[r#"a="unterminated, max-age=5"#]), "");
        // Malformed restrictions still restrict.
        assert_eq!(cc(&["no-store =, max-age=60"]), "max-age=60, no-store");
        assert_eq!(cc(&[r#"x="a, private"#]), "private");
        assert_eq!(cc(&["private max-age=0"]), "private");
        assert_eq!(cc(&["private; max-age=60"]), "private");
        assert_eq!(
            cc(&["must-revalidate=, max-age=1"]),
            "max-age=1, must-revalidate"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_bytes(b"private, x=\"caf\xe9\"").unwrap(),
        );
        assert_eq!(
            directives(&h)[0].0,
            "private",
            "obs-text does not hide the line"
        );
    }

    #[test]
    fn response_heads_are_put_in_one_form() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = HeaderMap::new();
        h.insert(
            header::CACHE_CONTROL,
            "max-age=60, Proxy-Revalidate".parse().unwrap(),
        );
        h.insert(
            header::EXPIRES,
            "Thu, 18  Aug  2050 02:01:18 GMT".parse().unwrap(),
        );
        h.insert(
            header::LAST_MODIFIED,
            "Thursday, 18-Aug-50 02:01:18 GMT".parse().unwrap(),
        );
        h.insert(header::DATE, fixdate(t - Duration::from_secs(7200)));
        h.insert(header::AGE, "30, 7200".parse().unwrap());
        let n = response(&h, t);
        assert_eq!(n[header::CACHE_CONTROL], "max-age=60, must-revalidate");
        assert_eq!(n[header::EXPIRES], "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(n[header::LAST_MODIFIED], "Thu, 18 Aug 2050 02:01:18 GMT");
        assert_eq!(n[header::AGE], "7200", "the apparent age from Date wins");
        let mut h = HeaderMap::new();
        h.append(header::VARY, "Accept, Cookie".parse().unwrap());
        h.append(header::VARY, HeaderValue::from_bytes(b"X-\xe9").unwrap());
        assert_eq!(response(&h, t)[header::VARY], "*");
        let mut h = HeaderMap::new();
        h.append(header::VARY, "Accept".parse().unwrap());
        h.append(header::VARY, "COOKIE".parse().unwrap());
        assert_eq!(response(&h, t)[header::VARY], "accept, cookie");
        let mut h = HeaderMap::new();
        h.insert(header::AGE, "99999999999999999999".parse().unwrap());
        assert_eq!(response(&h, t)[header::AGE], MAX_DELTA.to_string().as_str());
    }

    #[test]
    fn requests_fold_lines_and_lose_max_stale_and_shadowed_pragma() {
        let mut h = HeaderMap::new();
        h.append("foo", "1".parse().unwrap());
        h.append("foo", "2".parse().unwrap());
        h.insert(
            header::CACHE_CONTROL,
            "Max-Stale=10, NO-CACHE".parse().unwrap(),
        );
        h.insert(header::PRAGMA, "no-cache".parse().unwrap());
        let n = request(&h);
        assert_eq!(n["foo"], "1, 2");
        assert_eq!(n[header::CACHE_CONTROL], "no-cache");
        assert!(!n.contains_key(header::PRAGMA));
        assert!(has(&n, &["no-cache"]));
        let mut h = HeaderMap::new();
        h.insert(header::PRAGMA, "NO-CACHE".parse().unwrap());
        assert!(has(&request(&h), &["no-cache"]));
    }
}
