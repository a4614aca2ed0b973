//! The one body type the gateway serves and sends: a streamed hyper body or a small buffered
//! one. It counts the bytes that pass, enforces the listener's body limit and body read timeout
//! while streaming, reports how a client's request body ended ([`Progress`]: a failure there is
//! the client's, never the endpoint's), and carries the access-log record so the line is written
//! when the response really ends.

use crate::observe::access_log::AccessRecord;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
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

/// How a client's request body went wrong: the client's fault (downstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownstreamFault {
    /// The client closed or reset the connection before the body was complete.
    Aborted,
    /// The body was not valid HTTP (a bad chunk, a short `Content-Length`).
    Malformed,
    /// No body bytes for longer than the listener's `body_read_timeout`.
    TimedOut,
    /// More than the listener's `max_body_bytes`.
    TooLarge,
}

/// Where a client's request body is, shared between the body (which the upstream client polls)
/// and the try loop (which must tell a client that stopped sending from an endpoint that failed).
#[derive(Debug, Default)]
pub struct Progress {
    state: AtomicU8,
    /// When the body ended ([`crate::clock::now_us`]); 0 for a request without one.
    ended_us: AtomicU64,
    /// When the last body frame was handed on (0: none yet), and whether the body has been
    /// asked for more since and is waiting on the client. Handed on and not asked for again
    /// means the endpoint is not taking the body.
    last_frame_us: AtomicU64,
    waiting_on_client: std::sync::atomic::AtomicBool,
}

const STREAMING: u8 = 0;
const ENDED: u8 = 1;

/// The progress of a request that has no body: ended before it began.
pub static NO_BODY: Progress = Progress {
    state: AtomicU8::new(ENDED),
    ended_us: AtomicU64::new(0),
    last_frame_us: AtomicU64::new(0),
    waiting_on_client: std::sync::atomic::AtomicBool::new(false),
};

impl Progress {
    fn set(&self, v: u8) {
        if v == ENDED && self.state.load(Ordering::Relaxed) == STREAMING {
            let now = crate::clock::now_us(tokio::time::Instant::now());
            self.ended_us.store(now, Ordering::Relaxed);
        }
        // The first outcome sticks.
        let _ = self
            .state
            .compare_exchange(STREAMING, v, Ordering::Release, Ordering::Relaxed);
    }
    fn fail(&self, f: DownstreamFault) {
        self.set(2 + f as u8);
    }
    /// How the body failed, if it did.
    pub fn fault(&self) -> Option<DownstreamFault> {
        match self.state.load(Ordering::Relaxed) {
            2 => Some(DownstreamFault::Aborted),
            3 => Some(DownstreamFault::Malformed),
            4 => Some(DownstreamFault::TimedOut),
            5 => Some(DownstreamFault::TooLarge),
            _ => None,
        }
    }
    /// Whether the whole body has been read.
    pub fn ended(&self) -> bool {
        self.state.load(Ordering::Relaxed) == ENDED
    }
    /// Since when the endpoint has not asked for the next piece of a body that is still
    /// streaming ([`crate::clock::now_us`]), if that is where the body stands.
    pub fn stalled_since_us(&self) -> Option<u64> {
        let last = self.last_frame_us.load(Ordering::Relaxed);
        let streaming = self.state.load(Ordering::Relaxed) == STREAMING;
        (streaming && last != 0 && !self.waiting_on_client.load(Ordering::Relaxed)).then_some(last)
    }
    fn handed_on(&self) {
        let now = crate::clock::now_us(tokio::time::Instant::now());
        self.last_frame_us.store(now, Ordering::Relaxed);
        self.waiting_on_client.store(false, Ordering::Relaxed);
    }
    fn waiting(&self) {
        self.waiting_on_client.store(true, Ordering::Relaxed);
    }
    /// When the whole body had been read ([`crate::clock::now_us`]), if it has.
    pub fn ended_at_us(&self) -> Option<u64> {
        (self.state.load(Ordering::Acquire) == ENDED).then(|| self.ended_us.load(Ordering::Relaxed))
    }
}

/// The client's body failed in a way hyper reports: which kind of downstream fault it is.
fn fault_of(e: &hyper::Error) -> DownstreamFault {
    if e.is_parse() {
        return DownstreamFault::Malformed;
    }
    if e.is_timeout() {
        return DownstreamFault::TimedOut;
    }
    // A bad chunk is a body error whose cause is the decoder's InvalidData/InvalidInput; a
    // connection that closed early is an incomplete message.
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            ) {
                return DownstreamFault::Malformed;
            }
        }
        cur = c.source();
    }
    DownstreamFault::Aborted
}

/// The body read timeout (idle time between body bytes) and its timer.
struct ReadTimeout {
    every: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// The clock starts when the body is first asked for (after a connection is in hand and,
    /// with `Expect: 100-continue`, once the client has been told to go on), not when the
    /// request arrived.
    started: bool,
}

/// The body went idle for longer than the listener (or the route) allows.
#[derive(Debug)]
pub struct BodyReadTimeout;

impl fmt::Display for BodyReadTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no body bytes arrived for longer than the idle timeout (the listener's body_read_timeout, or the route's timeouts.idle)")
    }
}
impl std::error::Error for BodyReadTimeout {}

enum Kind {
    Stream(Incoming),
    Full(Option<Bytes>),
    /// Frames already read (request buffering), then the rest of the same body.
    Chain(std::collections::VecDeque<Frame<Bytes>>, Box<Body>),
}

/// What [`buffer_up_to`] read.
pub enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// More than the limit: what was read, followed by the rest, as one body.
    Partial(Body),
}

/// Reads `body` until it ends or more than `max` bytes have arrived, so that a small request
/// never holds an upstream connection while a slow client sends it.
pub async fn buffer_up_to(mut body: Body, max: u64) -> Result<Buffered, BoxError> {
    use http_body_util::BodyExt;
    let mut frames = std::collections::VecDeque::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.data_ref() {
            Some(d) => len += d.len() as u64,
            // Trailers: keep everything as it came.
            None => {
                frames.push_back(frame);
                return Ok(Buffered::Partial(Body::new(Kind::Chain(
                    frames,
                    Box::new(body),
                ))));
            }
        }
        frames.push_back(frame);
        if len > max {
            return Ok(Buffered::Partial(Body::new(Kind::Chain(
                frames,
                Box::new(body),
            ))));
        }
    }
    let mut all = bytes::BytesMut::with_capacity(len as usize);
    for f in frames {
        if let Ok(d) = f.into_data() {
            all.extend_from_slice(&d);
        }
    }
    Ok(Buffered::Whole(all.freeze()))
}

/// A body, boxed: it moves a dozen times per request (into hyper's client and back out as a
/// response, through the futures between), and as one pointer it moves in a register where
/// its 176 bytes were a `memcpy` call each time (and made every `Request` and `Response` that
/// holds it one too). An empty body (every request without one) has no box at all.
pub struct Body(Option<Box<Inner>>);

struct Inner {
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
    /// Request bodies: how the client's body is doing, for the try loop.
    progress: Option<Arc<Progress>>,
    read_timeout: Option<ReadTimeout>,
    /// Response bodies from a pooled HTTP/1.1 connection: give it back when read to the end.
    checkin: Option<crate::upstream::Checkin>,
}

impl Body {
    pub fn full(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            return Self::empty();
        }
        Self::new(Kind::Full(Some(bytes)))
    }
    pub fn empty() -> Self {
        Body(None)
    }
    pub fn stream(inner: Incoming) -> Self {
        Self::new(Kind::Stream(inner))
    }
    fn new(kind: Kind) -> Self {
        Body(Some(Box::new(Inner::new(kind))))
    }
    /// The body's state, made for an empty body that is given something to carry.
    fn inner(&mut self) -> &mut Inner {
        self.0
            .get_or_insert_with(|| Box::new(Inner::new(Kind::Full(None))))
    }
}

impl Inner {
    fn new(kind: Kind) -> Self {
        Inner {
            kind,
            counter: None,
            seen: 0,
            ended: false,
            limit: u64::MAX,
            record: None,
            hold: None,
            progress: None,
            read_timeout: None,
            checkin: None,
        }
    }
}

impl Body {
    /// The pooled connection this response body came on, returned when the body has ended.
    pub fn with_checkin(mut self, c: Option<crate::upstream::Checkin>) -> Self {
        self.inner().checkin = c;
        self
    }
    /// A client's request body: its outcome is reported to `progress`.
    pub fn with_progress(mut self, p: Arc<Progress>) -> Self {
        self.inner().progress = Some(p);
        self
    }
    /// Fail the stream when no bytes arrive for `every`.
    pub fn with_read_timeout(mut self, every: std::time::Duration) -> Self {
        self.inner().read_timeout = Some(ReadTimeout {
            every,
            timer: Box::pin(tokio::time::sleep(every)),
            started: false,
        });
        self
    }
    /// Fail the stream once more than `limit` bytes have passed.
    pub fn with_limit(mut self, limit: u64) -> Self {
        self.inner().limit = limit;
        self
    }
    pub fn with_counter(mut self, c: Arc<AtomicU64>) -> Self {
        self.inner().counter = Some(c);
        self
    }
    pub fn with_record(mut self, r: Box<AccessRecord>) -> Self {
        self.inner().record = Some(r);
        self
    }
    pub fn with_hold(mut self, h: Box<dyn std::any::Any + Send + Sync>) -> Self {
        let inner = self.inner();
        inner.hold = Some(match inner.hold.take() {
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
        match self.get_mut().0.as_deref_mut() {
            Some(inner) => inner.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_deref().is_none_or(Inner::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .as_deref()
            .map_or_else(|| SizeHint::with_exact(0), Inner::size_hint)
    }
}

impl Inner {
    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        if let Some(t) = this.read_timeout.as_mut().filter(|t| !t.started) {
            t.started = true;
            let first = tokio::time::Instant::now() + t.every;
            t.timer.as_mut().reset(first);
        }
        let frame = match &mut this.kind {
            Kind::Chain(queued, rest) => {
                // Already counted and checked when they were read.
                if let Some(f) = queued.pop_front() {
                    return Poll::Ready(Some(Ok(f)));
                }
                return Pin::new(rest.as_mut()).poll_frame(cx);
            }
            Kind::Full(b) => {
                let out = b.take().map(|b| Ok(this.count(Frame::data(b))));
                this.ended = true;
                return Poll::Ready(out);
            }
            Kind::Stream(inner) => match Pin::new(&mut *inner).poll_frame(cx) {
                // Request trailers are dropped: they would carry headers (identity ones among
                // them) past every check the request's head went through.
                Poll::Ready(Some(Ok(f))) if f.is_trailers() && this.progress.is_some() => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(f))) => f,
                Poll::Ready(Some(Err(e))) => {
                    if let Some(p) = &this.progress {
                        p.fail(fault_of(&e));
                    }
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if let Some(p) = &this.progress {
                        p.set(ENDED);
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if let Some(p) = &this.progress {
                        p.waiting();
                    }
                    if let Some(t) = this.read_timeout.as_mut() {
                        if t.timer.as_mut().poll(cx).is_ready() {
                            if let Some(p) = &this.progress {
                                p.fail(DownstreamFault::TimedOut);
                            }
                            return Poll::Ready(Some(Err(Box::new(BodyReadTimeout))));
                        }
                    }
                    return Poll::Pending;
                }
            },
        };
        if let Some(t) = this.read_timeout.as_mut() {
            let next = tokio::time::Instant::now() + t.every;
            t.timer.as_mut().reset(next);
        }
        let frame = this.count(frame);
        // hyper stops asking for a body with a `Content-Length` once that many bytes went out;
        // its last data frame is its end.
        if let Kind::Stream(inner) = &this.kind {
            if inner.is_end_stream() && this.seen <= this.limit {
                this.ended = true;
                if let Some(p) = &this.progress {
                    p.set(ENDED);
                }
            }
        }
        if let Some(p) = &this.progress {
            p.handed_on();
        }
        if this.seen > this.limit {
            if let Some(r) = this.record.as_mut() {
                r.error = Some("body_too_large");
            }
            if let Some(p) = &this.progress {
                p.fail(DownstreamFault::TooLarge);
            }
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Stream(i) => i.is_end_stream(),
            Kind::Chain(q, rest) => q.is_empty() && rest.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(i) => i.size_hint(),
            Kind::Chain(q, rest) => {
                let queued: u64 = q
                    .iter()
                    .filter_map(|f| f.data_ref().map(|d| d.len() as u64))
                    .sum();
                let r = rest.size_hint();
                let mut h = SizeHint::new();
                h.set_lower(r.lower() + queued);
                if let Some(u) = r.upper() {
                    h.set_upper(u + queued);
                }
                h
            }
        }
    }

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

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = self.checkin.take() {
            let clean = self.ended || self.is_end_stream();
            c.finish(clean);
        }
        if let Some(mut r) = self.record.take() {
            if !(self.ended || self.is_end_stream()) && r.error.is_none() {
                // The client went away (or the upstream failed) before the body finished.
                r.error = Some("response_incomplete");
            }
            r.bytes_out = self.seen;
            r.emit();
        }
    }
}
