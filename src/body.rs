//! The one body type the gateway serves and sends: a streamed hyper body or a small buffered
//! one. It counts the bytes that pass, enforces the listener's body limit while streaming, and
//! carries the access-log record so the line is written when the response really ends.

use crate::observe::access_log::AccessRecord;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body grew past the listener's `max_body_bytes`.
#[derive(Debug)]
pub struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds the configured limit")
    }
}
impl std::error::Error for BodyTooLarge {}

enum Kind {
    Stream(Incoming),
    Full(Option<Bytes>),
}

pub struct Body {
    kind: Kind,
    /// Bytes seen so far, shared with whoever needs the count after the body is gone.
    counter: Option<Arc<AtomicU64>>,
    seen: u64,
    ended: bool,
    limit: u64,
    /// Written to the access log when this body is dropped (response bodies only).
    record: Option<Box<AccessRecord>>,
    /// Kept alive until the body ends (in-flight counters that must cover streaming).
    hold: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Body {
    pub fn full(bytes: Bytes) -> Self {
        Self::new(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }
    pub fn empty() -> Self {
        Self::new(Kind::Full(None))
    }
    pub fn stream(inner: Incoming) -> Self {
        Self::new(Kind::Stream(inner))
    }
    fn new(kind: Kind) -> Self {
        Body {
            kind,
            counter: None,
            seen: 0,
            ended: false,
            limit: u64::MAX,
            record: None,
            hold: None,
        }
    }
    /// Fail the stream once more than `limit` bytes have passed.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.limit = limit;
        self
    }
    pub fn with_counter(mut self, c: Arc<AtomicU64>) -> Self {
        self.counter = Some(c);
        self
    }
    pub fn with_record(mut self, r: Box<AccessRecord>) -> Self {
        self.record = Some(r);
        self
    }
    pub fn with_hold(mut self, h: Box<dyn std::any::Any + Send + Sync>) -> Self {
        self.hold = Some(match self.hold.take() {
            None => h,
            Some(prev) => Box::new((prev, h)),
        });
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Full(b) => {
                let out = b.take().map(|b| Ok(this.count(Frame::data(b))));
                this.ended = true;
                return Poll::Ready(out);
            }
            Kind::Stream(inner) => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            },
        };
        let frame = this.count(frame);
        if this.seen > this.limit {
            if let Some(r) = this.record.as_mut() {
                r.error = Some("body_too_large");
            }
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Stream(i) => i.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(i) => i.size_hint(),
        }
    }
}

impl Body {
    fn count(&mut self, f: Frame<Bytes>) -> Frame<Bytes> {
        if let Some(d) = f.data_ref() {
            let n = d.len() as u64;
            self.seen += n;
            if let Some(c) = &self.counter {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        f
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            if !(self.ended || http_body::Body::is_end_stream(self)) && r.error.is_none() {
                // The client went away (or the upstream failed) before the body finished.
                r.error = Some("response_incomplete");
            }
            r.bytes_out = self.seen;
            r.emit();
        }
    }
}
