//! Message framing at the edge (RFC 9112 §6): the only transfer coding that passes is a single
//! `chunked`, on requests and on responses. hyper already refuses what it cannot frame (a
//! final coding that is not `chunked`, differing `Content-Length`s, `Transfer-Encoding` on
//! HTTP/1.0, bare LF, obs-fold, ...); this adds what it lets through.
//!
//! `Content-Length` together with `Transfer-Encoding` on a request: hyper drops the
//! `Content-Length`, reads the body chunked and closes the connection after the response
//! (RFC 9112 §6.3 allows exactly that), so only one reading of the body ever reaches a backend.
//! On a response the same rule holds: `Transfer-Encoding` wins and the `Content-Length` is
//! removed before the response is re-framed for the client.

use http::{header, HeaderMap};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingError {
    /// An empty or malformed element, or `chunked` more than once: 400.
    BadList,
    /// A coding other than `chunked` (`gzip`, `identity`, ...): 501 on a request.
    UnknownCoding,
}

impl FramingError {
    pub fn detail(self) -> &'static str {
        match self {
            FramingError::BadList => "malformed Transfer-Encoding",
            FramingError::UnknownCoding => "only the chunked transfer coding is supported",
        }
    }
}

/// Checks every `Transfer-Encoding` line of a message: `Ok` when there is none, or when
/// together they say exactly `chunked`.
pub fn check_transfer_encoding(h: &HeaderMap) -> Result<(), FramingError> {
    let mut lines = h.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if lines.peek().is_none() {
        return Ok(());
    }
    let mut chunked = 0;
    let mut unknown = false;
    for line in lines {
        let Ok(text) = line.to_str() else {
            return Err(FramingError::BadList);
        };
        for coding in text.split(',') {
            let coding = coding.trim_matches([' ', '\t']);
            if coding.is_empty() || !gatehouse_config::validate::is_token(coding) {
                return Err(FramingError::BadList);
            }
            if coding.eq_ignore_ascii_case("chunked") {
                chunked += 1;
            } else {
                unknown = true;
            }
        }
    }
    match (chunked, unknown) {
        (_, true) => Err(FramingError::UnknownCoding),
        (1, false) => Ok(()),
        _ => Err(FramingError::BadList),
    }
}

/// A backend's response head: the same transfer-coding rule; `Content-Length` removed when
/// `Transfer-Encoding` is present (the body was read chunked; the client gets it re-framed); a
/// `Content-Length` list of equal values (`5, 5`, which hyper reads as 5) forwarded as one value
/// (RFC 9110 §8.6), anything else refused.
pub fn check_response(h: &mut HeaderMap) -> Result<(), FramingError> {
    check_transfer_encoding(h)?;
    if h.contains_key(header::TRANSFER_ENCODING) {
        h.remove(header::CONTENT_LENGTH);
        return Ok(());
    }
    let mut values = h.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_none() && !first.as_bytes().contains(&b',') {
        return Ok(());
    }
    let mut one: Option<u64> = None;
    for v in h.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|b| *b == b',') {
            let n = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(FramingError::BadList)?;
            if one.is_some_and(|o| o != n) {
                return Err(FramingError::BadList);
            }
            one = Some(n);
        }
    }
    if let Some(n) = one {
        h.insert(header::CONTENT_LENGTH, http::HeaderValue::from(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn te(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(header::TRANSFER_ENCODING, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn only_a_single_chunked_passes() {
        use FramingError::*;
        let cases: &[(&[&str], Result<(), FramingError>)] = &[
            (&[], Ok(())),
            (&["chunked"], Ok(())),
            (&["Chunked"], Ok(())),
            (&[" chunked "], Ok(())),
            (&["identity, chunked"], Err(UnknownCoding)),
            (&["gzip, chunked"], Err(UnknownCoding)),
            (&["gzip", "chunked"], Err(UnknownCoding)),
            (&["chunked, chunked"], Err(BadList)),
            (&["chunked", "chunked"], Err(BadList)),
            (&[", chunked"], Err(BadList)),
            (&["chunked,"], Err(BadList)),
            (&["chunked;q=1"], Err(BadList)),
            (&["\"chunked\""], Err(BadList)),
            (&[""], Err(BadList)),
        ];
        for (lines, want) in cases {
            assert_eq!(check_transfer_encoding(&te(lines)), *want, "{lines:?}");
        }
    }

    #[test]
    fn a_content_length_list_is_one_value_or_refused() {
        let cl = |lines: &[&str]| {
            let mut h = HeaderMap::new();
            for l in lines {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(l).unwrap());
            }
            check_response(&mut h).map(|_| {
                let v: Vec<_> = h.get_all(header::CONTENT_LENGTH).iter().collect();
                v.iter()
                    .map(|v| v.to_str().unwrap().to_string())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(cl(&["5"]), Ok(vec!["5".to_string()]));
        assert_eq!(cl(&["5, 5"]), Ok(vec!["5".to_string()]));
        assert_eq!(cl(&["5", "5"]), Ok(vec!["5".to_string()]));
        assert_eq!(cl(&["5, 6"]), Err(FramingError::BadList));
        assert_eq!(cl(&["5,"]), Err(FramingError::BadList));
        assert_eq!(cl(&["+5, 5"]), Err(FramingError::BadList));
    }

    #[test]
    fn a_response_with_both_loses_its_content_length() {
        let mut h = te(&["chunked"]);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        check_response(&mut h).unwrap();
        assert!(!h.contains_key(header::CONTENT_LENGTH));
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        check_response(&mut h).unwrap();
        assert!(h.contains_key(header::CONTENT_LENGTH));
    }
}
