//! Path normalization before routing, in the order RFC 3986 §6.2.2 gives: decode
//! percent-encoded unreserved characters (`%61` → `a`, `%2E` → `.`) and upper-case the hex of
//! the rest; then remove dot-segments (§5.2.4, after that decoding, so `%2e%2e` counts) and,
//! by default, merge repeated slashes. Characters a URI may not hold raw are percent-encoded,
//! so the result is always an RFC 3986 `path-absolute`. NUL and control characters, raw or
//! encoded, are refused. Encoded slashes, backslashes and `;` follow the listener's settings.
//!
//! Invariants (proptested below): the output starts with `/`, has no `.` or `..` segment, and
//! normalizing it again changes nothing. A path that is already normal is returned borrowed,
//! without allocating. Pure: no I/O. It lives in the config crate so that validation can hold
//! route paths to the same normal form requests are brought to (`gatehouse::canonical::path`
//! re-exports it for the request path).

use crate::edge::{
    Backslash, EscapedDelimiters, EscapedSlashes, PathNormalization, PathParameters,
};
use std::borrow::Cow;

/// Why a path was refused (all are 400 `invalid_path`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not an origin-form path (`*`, an authority, or no leading `/`).
    NotOriginForm,
    /// `%` not followed by two hex digits.
    BadEncoding,
    /// NUL or another control character, raw or encoded.
    ControlCharacter,
    /// `%2F` or `%5C` with `escaped_slashes: reject`.
    EscapedSlash,
    /// `%3F`, `%23` or `%3B` with `escaped_delimiters: reject`.
    EscapedDelimiter,
    /// A raw `\` with `backslash: reject`.
    Backslash,
    /// A `;` with `path_parameters: reject`, or a segment that is only parameters.
    PathParameter,
}

impl PathError {
    /// What the local reply says.
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotOriginForm => "the request target is not a path starting with '/'",
            PathError::BadEncoding => "the path has a '%' that is not followed by two hex digits",
            PathError::ControlCharacter => "the path contains a NUL or control character",
            PathError::EscapedSlash => "the path contains an encoded slash (%2F or %5C)",
            PathError::EscapedDelimiter => "the path contains an encoded '?', '#' or ';'",
            PathError::Backslash => "the path contains a backslash",
            PathError::PathParameter => "the path contains ';' path parameters",
        }
    }
}

/// A normalized path.
#[derive(Debug, PartialEq, Eq)]
pub struct Normalized<'a> {
    /// What routes, filters, limits, logs and the backend see.
    pub path: Cow<'a, str>,
    /// With `escaped_slashes: redirect`: an encoded slash was decoded, so answer 308.
    pub redirect: bool,
}

impl Normalized<'_> {
    /// Whether normalization changed the path.
    pub fn changed(&self) -> bool {
        matches!(self.path, Cow::Owned(_))
    }
}

/// Bytes that may appear raw in a normal path besides `/`: RFC 3986 `pchar` without `%`
/// (pct-encoded is checked separately) and without `;`, which depends on the settings.
const fn normal_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        b += 1;
    }
    t
}
static NORMAL: [bool; 256] = normal_table();

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Normalizes `raw` (the path of a request target, without its query).
pub fn normalize<'a>(raw: &'a str, o: &PathNormalization) -> Result<Normalized<'a>, PathError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if is_normal(b, o) {
        return Ok(Normalized {
            path: Cow::Borrowed(raw),
            redirect: false,
        });
    }
    let (decoded, redirect) = decode(b, o)?;
    let path = remove_dot_segments(&decoded, o)?;
    Ok(Normalized {
        path: if path == raw {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(path)
        },
        redirect,
    })
}

/// The fast path: one pass that proves the path needs no change.
fn is_normal(b: &[u8], o: &PathNormalization) -> bool {
    let mut seg_start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'/' {
            if i > 0 && !segment_ok(&b[seg_start..i], o.merge_slashes) {
                return false;
            }
            seg_start = i + 1;
        } else if !NORMAL[c as usize] {
            // `%`, `;`, `\`, controls and what must be encoded all take the slow path.
            return false;
        }
    }
    segment_ok_last(&b[seg_start..])
}

/// A segment followed by `/` is normal unless it is a dot-segment, or empty while merging.
fn segment_ok(seg: &[u8], merge: bool) -> bool {
    !(seg == b"." || seg == b".." || (merge && seg.is_empty()))
}

fn segment_ok_last(seg: &[u8]) -> bool {
    seg != b"." && seg != b".."
}

/// Step 1: percent-decoding of unreserved characters, upper-case hex, encoding of what may not
/// be raw, and the settings for encoded slashes, backslashes and control characters.
fn decode(b: &[u8], o: &PathNormalization) -> Result<(Vec<u8>, bool), PathError> {
    let mut out = Vec::with_capacity(b.len() + 8);
    let mut redirect = false;
    let mut i = 0;
    let push_pct = |out: &mut Vec<u8>, v: u8| {
        out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]);
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'%' => {
                let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEncoding);
                };
                let v = (h << 4) | l;
                if is_unreserved(v) {
                    out.push(v);
                } else if v < 0x20 || v == 0x7f {
                    return Err(PathError::ControlCharacter);
                } else if v == b'/' || v == b'\\' {
                    match o.escaped_slashes {
                        EscapedSlashes::Keep => push_pct(&mut out, v),
                        EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                        EscapedSlashes::Decode => out.push(b'/'),
                        EscapedSlashes::Redirect => {
                            out.push(b'/');
                            redirect = true;
                        }
                    }
                } else if matches!(v, b'?' | b'#' | b';')
                    && o.escaped_delimiters == EscapedDelimiters::Reject
                {
                    return Err(PathError::EscapedDelimiter);
                } else {
                    push_pct(&mut out, v);
                }
                i += 3;
                continue;
            }
            b'\\' => match o.backslash {
                Backslash::Separator => out.push(b'/'),
                Backslash::Reject => return Err(PathError::Backslash),
            },
            // Never in a path hyper hands over (it splits them off), but the normalizer is
            // total: treated as their escaped forms would be.
            b'?' | b'#' => match o.escaped_delimiters {
                EscapedDelimiters::Keep => push_pct(&mut out, c),
                EscapedDelimiters::Reject => return Err(PathError::EscapedDelimiter),
            },
            b';' => match o.path_parameters {
                PathParameters::Segment => out.push(b';'),
                PathParameters::Reject => return Err(PathError::PathParameter),
            },
            c if c < 0x20 || c == 0x7f => return Err(PathError::ControlCharacter),
            c if c == b'/' || NORMAL[c as usize] => out.push(c),
            c => push_pct(&mut out, c),
        }
        i += 1;
    }
    Ok((out, redirect))
}

/// Step 2: remove dot-segments (RFC 3986 §5.2.4) and, when asked, empty segments. With
/// `path_parameters: segment`, a segment's name is what precedes its `;`: `..;x` is a
/// dot-segment, and a segment that is only parameters (`/;x/admin`, which Java containers read
/// as `//admin`) is refused.
fn remove_dot_segments(p: &[u8], o: &PathNormalization) -> Result<String, PathError> {
    let params = o.path_parameters == PathParameters::Segment;
    let mut stack: Vec<&[u8]> = Vec::new();
    let segments: Vec<&[u8]> = p[1..].split(|&c| c == b'/').collect();
    let n = segments.len();
    let mut trailing = false;
    for (k, seg) in segments.into_iter().enumerate() {
        let last = k + 1 == n;
        let name = if params {
            seg.split(|&c| c == b';').next().unwrap_or_default()
        } else {
            seg
        };
        if params && name.is_empty() && !seg.is_empty() {
            return Err(PathError::PathParameter);
        }
        match name {
            b"." => trailing = last,
            b".." => {
                stack.pop();
                trailing = last;
            }
            b"" if o.merge_slashes => trailing = last,
            _ => {
                stack.push(seg);
                trailing = false;
            }
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for seg in &stack {
        out.push(b'/');
        out.extend_from_slice(seg);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    // Every byte came from the ASCII set `decode` writes.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// With `path_parameters: segment`, the path routes match on: each segment without its `;`
/// parameters (`/admin;x=1/y` → `/admin/y`). `None` when the path has no `;`.
pub fn without_parameters(path: &str, o: &PathNormalization) -> Option<String> {
    if o.path_parameters != PathParameters::Segment || !path.contains(';') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for (k, seg) in path.split('/').enumerate() {
        if k > 0 {
            out.push('/');
        }
        out.push_str(seg.split(';').next().unwrap_or_default());
    }
    Some(out)
}

#[cfg(test)]
mod tests;
