//! Request IDs and W3C trace context. A client's `X-Request-ID` is kept when it is sane
//! (1–128 visible characters from a safe set), otherwise a UUIDv7 is made; a valid `traceparent`
//! keeps its trace ID and gets our span as the new parent, an invalid or missing one starts a
//! new trace. Random bits come from a thread-local generator: no syscall per request. When the
//! request is recorded (`observe::otel`), its span's IDs replace the generated ones.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request ID to use: the client's if sane, else a new UUIDv7.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    client_request_id(headers).unwrap_or_else(new_request_id)
}

/// The client's `X-Request-ID`, if sane.
fn client_request_id(headers: &HeaderMap) -> Option<HeaderValue> {
    let v = headers.get(&X_REQUEST_ID)?;
    let b = v.as_bytes();
    let sane = !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@".contains(c));
    sane.then(|| v.clone())
}

pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; REQUEST_ID_LEN];
    write_request_id(&mut buf, std::time::SystemTime::now());
    HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

const REQUEST_ID_LEN: usize = uuid::fmt::Hyphenated::LENGTH;
const TRACEPARENT_LEN: usize = 55;

/// A new UUIDv7 for a request that arrived at `now`, hyphenated, into `out`.
fn write_request_id(out: &mut [u8; REQUEST_ID_LEN], now: std::time::SystemTime) {
    let ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let rand: [u8; 10] = fastrand::u128(..).to_le_bytes()[..10]
        .try_into()
        .unwrap_or([0; 10]);
    let id = uuid::Builder::from_unix_timestamp_millis(ms, &rand).into_uuid();
    id.hyphenated().encode_lower(out);
}

/// One request's identity: its request ID and trace context, with the `traceparent` to send
/// upstream. The generated values share one buffer, so every copy of them (upstream headers, a
/// retry's copy, the response, the access log) costs one allocation in all.
pub struct RequestIds {
    pub request_id: HeaderValue,
    pub trace: TraceContext,
    pub traceparent: HeaderValue,
}

impl RequestIds {
    pub fn for_request(headers: &HeaderMap) -> Self {
        Self::with_trace(
            headers,
            TraceContext::from_headers(headers),
            std::time::SystemTime::now(),
        )
    }

    /// The request's IDs for a trace context already made (and perhaps given a recorded
    /// span's IDs, `observe::otel`), for a request that arrived at `now` (the time its access-log
    /// line gives: one reading of the wall clock for both).
    pub fn with_trace(
        headers: &HeaderMap,
        trace: TraceContext,
        now: std::time::SystemTime,
    ) -> Self {
        let kept = client_request_id(headers);
        let mut buf = [0u8; REQUEST_ID_LEN + TRACEPARENT_LEN];
        let (id, tp) = buf.split_at_mut(REQUEST_ID_LEN);
        trace.write(tp.try_into().unwrap_or(&mut [0; TRACEPARENT_LEN]));
        if kept.is_none() {
            write_request_id(id.try_into().unwrap_or(&mut [0; REQUEST_ID_LEN]), now);
        }
        let shared = bytes::Bytes::from_owner(buf);
        let value = |range: std::ops::Range<usize>| {
            HeaderValue::from_maybe_shared(shared.slice(range))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        };
        RequestIds {
            traceparent: value(REQUEST_ID_LEN..REQUEST_ID_LEN + TRACEPARENT_LEN),
            request_id: kept.unwrap_or_else(|| value(0..REQUEST_ID_LEN)),
            trace,
        }
    }
}

/// W3C trace context for one request through the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// Our span: the parent of the upstream request.
    pub span_id: u64,
    pub flags: u8,
    /// The client's span (the parent of ours) when its `traceparent` was valid; 0 for a new
    /// trace.
    pub parent_span_id: u64,
}

impl TraceContext {
    /// Continues the client's trace if its `traceparent` is valid, else starts one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        // Two `traceparent` lines are no valid parent (W3C: start a new trace).
        let mut lines = headers.get_all(&TRACEPARENT).iter();
        let parsed = match (lines.next(), lines.next()) {
            (Some(v), None) => v.to_str().ok().and_then(parse_traceparent),
            _ => None,
        };
        let span_id = loop {
            let s = fastrand::u64(..);
            if s != 0 {
                break s;
            }
        };
        match parsed {
            Some((trace_id, parent_span_id, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
                parent_span_id,
            },
            None => TraceContext {
                trace_id: fastrand::u128(1..),
                span_id,
                flags: 0,
                parent_span_id: 0,
            },
        }
    }

    /// Whether the client's `traceparent` carried one: it decides sampling (parent-based).
    pub fn continued(&self) -> bool {
        self.parent_span_id != 0
    }

    /// The `sampled` flag (W3C trace-flags bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` to send upstream: our span as the parent.
    pub fn header(&self) -> HeaderValue {
        let mut buf = [0u8; TRACEPARENT_LEN];
        self.write(&mut buf);
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    fn write(&self, buf: &mut [u8; TRACEPARENT_LEN]) {
        // Hand-rolled hex: this runs on every request and `format!` costs ~4x more.
        buf.fill(b'-');
        buf[..2].copy_from_slice(b"00");
        hex_into(&mut buf[3..35], &self.trace_id.to_be_bytes());
        hex_into(&mut buf[36..52], &self.span_id.to_be_bytes());
        hex_into(&mut buf[53..55], &[self.flags]);
    }
}

fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
}

/// Parses `00-<32 hex>-<16 hex>-<2 hex>` (future versions: the first four fields), rejecting
/// all-zero IDs and upper-case hex as the spec requires.
fn parse_traceparent(s: &str) -> Option<(u128, u64, u8)> {
    let mut parts = s.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let lower_hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, parent_id, u8::from_str_radix(flags, 16).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &HeaderName, v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name.clone(), HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn request_id_kept_when_sane_else_generated() {
        assert_eq!(request_id(&headers(&X_REQUEST_ID, "abc-123")), "abc-123");
        let long = "a".repeat(129);
        for bad in ["", "has space", "semi;colon", long.as_str()] {
            let id = request_id(&headers(&X_REQUEST_ID, bad));
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "{id:?}");
        }
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        assert_eq!(&a.to_str().unwrap()[14..15], "7", "UUID version 7: {a:?}");
    }

    #[test]
    fn request_ids_share_one_buffer_and_keep_a_sane_client_id() {
        let ids = RequestIds::for_request(&HeaderMap::new());
        assert_eq!(ids.request_id.len(), 36);
        assert_eq!(&ids.request_id.to_str().unwrap()[14..15], "7");
        assert_eq!(ids.traceparent, ids.trace.header());
        let kept = RequestIds::for_request(&headers(&X_REQUEST_ID, "abc-123"));
        assert_eq!(kept.request_id, "abc-123");
        assert_eq!(kept.traceparent, kept.trace.header());
    }

    #[test]
    fn two_traceparent_lines_start_a_new_trace() {
        let mut h = HeaderMap::new();
        h.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        );
        h.append(
            TRACEPARENT,
            HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"),
        );
        let t = TraceContext::from_headers(&h);
        assert!(!t.continued());
        assert_ne!(t.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
    }

    #[test]
    fn traceparent_continued_or_started() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceContext::from_headers(&headers(&TRACEPARENT, tp));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 1);
        assert_eq!(t.parent_span_id, 0x00f067aa0ba902b7);
        assert!(t.continued() && t.sampled());
        let out = t.header();
        let out = out.to_str().unwrap();
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "our span replaces the parent"
        );
        assert!(out.ends_with("-01"));

        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::from_headers(&headers(&TRACEPARENT, bad));
            assert_ne!(
                t.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad}"
            );
            assert_eq!(t.flags, 0);
            assert!(!t.continued());
        }
        // a future version with extra fields is accepted
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what";
        let t = TraceContext::from_headers(&headers(&TRACEPARENT, v1));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }
}
