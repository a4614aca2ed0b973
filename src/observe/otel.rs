//! OpenTelemetry spans for proxied requests: the sampling decision, one server span per
//! recorded request and one client span per try, with the HTTP semantic-convention attributes
//! and the gateway's own (`gatehouse.*`). Spans are the SDK's (`opentelemetry_sdk`); where they
//! go is `export`. A request that is not recorded touches none of this: no span, no
//! allocation (`tests/alloc_count.rs`).

pub mod export;

use super::ids::TraceContext;
use http::{HeaderValue, Method};
use opentelemetry::trace::{
    Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _,
    TraceFlags, TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, Span};
use std::net::IpAddr;
use std::sync::Arc;

pub use export::Pipeline;

/// Tracing as one snapshot has it: the export pipeline (kept across reloads while its
/// settings are unchanged) and the sampling ratio for new traces.
pub struct Tracing {
    pipeline: Arc<Pipeline>,
    ratio: f64,
}

/// What the server span starts with (after the request is made canonical).
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub scheme: &'static str,
    /// The canonical host, when the request was not refused before it had one.
    pub host: Option<&'a str>,
    pub client: IpAddr,
    pub peer: std::net::SocketAddr,
    pub version: &'static str,
    pub user_agent: Option<&'a HeaderValue>,
}

impl Tracing {
    pub fn new(pipeline: Arc<Pipeline>, ratio: f64) -> Self {
        Tracing { pipeline, ratio }
    }

    /// Whether a request is recorded: parent-based when the client's `traceparent` says
    /// (sampled or not), else `sampling_ratio` of new traces.
    pub fn sampled(&self, trace: &TraceContext) -> bool {
        if trace.continued() {
            trace.sampled()
        } else {
            self.ratio >= 1.0 || (self.ratio > 0.0 && fastrand::f64() < self.ratio)
        }
    }

    /// Starts the request's server span (a child of the client's span when it sent one) and
    /// gives `trace` its IDs, so the access log, the response and the backend see the span.
    pub fn server_span(
        &self,
        trace: &mut TraceContext,
        start: std::time::SystemTime,
        facts: &RequestFacts<'_>,
    ) -> Box<ServerSpan> {
        let mut attrs = Vec::with_capacity(24);
        let (method, original) = method_name(facts.method);
        attrs.push(KeyValue::new("http.request.method", method));
        if let Some(o) = original {
            attrs.push(KeyValue::new("http.request.method_original", o));
        }
        attrs.push(KeyValue::new("url.scheme", facts.scheme));
        attrs.push(KeyValue::new("url.path", clip(facts.path)));
        if let Some(host) = facts.host {
            let (name, port) = split_host(host);
            attrs.push(KeyValue::new("server.address", clip(name)));
            if let Some(p) = port {
                attrs.push(KeyValue::new("server.port", i64::from(p)));
            }
        }
        attrs.push(KeyValue::new("client.address", facts.client.to_string()));
        attrs.push(KeyValue::new(
            "network.peer.address",
            facts.peer.ip().to_string(),
        ));
        attrs.push(KeyValue::new(
            "network.peer.port",
            i64::from(facts.peer.port()),
        ));
        attrs.push(KeyValue::new("network.protocol.version", facts.version));
        if let Some(ua) = facts.user_agent.and_then(|v| v.to_str().ok()) {
            attrs.push(KeyValue::new("user_agent.original", clip(ua)));
        }
        let builder = SpanBuilder::from_name(method)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attrs);
        let parent = if trace.continued() {
            Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(trace.trace_id),
                SpanId::from(trace.parent_span_id),
                TraceFlags::SAMPLED,
                true,
                TraceState::NONE,
            ))
        } else {
            Context::new()
        };
        let tracer = self.pipeline.tracer();
        let span = tracer.build_with_context(builder, &parent);
        let cx = span.span_context();
        trace.trace_id = u128::from_be_bytes(cx.trace_id().to_bytes());
        trace.span_id = u64::from_be_bytes(cx.span_id().to_bytes());
        trace.flags |= 1;
        Box::new(ServerSpan {
            span,
            tracer: tracer.clone(),
            method,
        })
    }
}

/// A recorded request's span. It ends when it is dropped: with the response body, or with
/// the request when the client leaves first.
pub struct ServerSpan {
    span: Span,
    tracer: SdkTracer,
    method: &'static str,
}

impl ServerSpan {
    /// The matched route: also the span's name (`GET route`).
    pub fn route(&mut self, name: &Arc<str>) {
        self.span
            .set_attribute(KeyValue::new("gatehouse.route", name.clone()));
        self.span.update_name(format!("{} {name}", self.method));
    }

    pub fn cluster(&mut self, name: &Arc<str>) {
        self.span
            .set_attribute(KeyValue::new("gatehouse.cluster", name.clone()));
    }

    pub fn consumer(&mut self, name: &Arc<str>) {
        self.span
            .set_attribute(KeyValue::new("gatehouse.consumer", name.clone()));
    }

    /// After the try loop: the endpoint that answered last and how many retries it took.
    pub fn tries(&mut self, endpoint: Option<&Arc<str>>, retries: u32) {
        if let Some(e) = endpoint {
            self.span
                .set_attribute(KeyValue::new("gatehouse.endpoint", e.clone()));
        }
        self.span
            .set_attribute(KeyValue::new("gatehouse.retries", i64::from(retries)));
    }

    /// The request ID the gateway settled on (the client's or a new one).
    pub fn request_id(&mut self, id: &HeaderValue) {
        if let Ok(id) = id.to_str() {
            self.span
                .set_attribute(KeyValue::new("gatehouse.request_id", id.to_string()));
        }
    }

    /// The response going back: its status and, for a local reply, why. A 5xx (the
    /// gateway's or the backend's) is an error.
    pub fn answered(&mut self, status: u16, error: Option<&'static str>) {
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(reason) = error {
            self.span
                .set_attribute(KeyValue::new("gatehouse.error", reason));
        }
        if status >= 500 {
            let kind = error.unwrap_or(status_text(status));
            self.span.set_attribute(KeyValue::new("error.type", kind));
            self.span.set_status(Status::error(kind));
        }
    }

    /// The client left before it was answered (counted as a 499, as in the metrics).
    pub fn abandoned(&mut self) {
        self.span
            .set_attribute(KeyValue::new("http.response.status_code", 499_i64));
        self.span
            .set_attribute(KeyValue::new("gatehouse.error", "client_closed"));
    }

    /// Starts the client span of one try to `endpoint`; `resend` is how many tries came
    /// before it.
    pub fn start_try(&self, method: &Method, endpoint: &Arc<str>, resend: u32) -> Box<TrySpan> {
        let mut attrs = Vec::with_capacity(10);
        let (name, original) = method_name(method);
        attrs.push(KeyValue::new("http.request.method", name));
        if let Some(o) = original {
            attrs.push(KeyValue::new("http.request.method_original", o));
        }
        let (host, port) = split_host(endpoint);
        attrs.push(KeyValue::new("server.address", host.to_string()));
        if let Some(p) = port {
            attrs.push(KeyValue::new("server.port", i64::from(p)));
        }
        attrs.push(KeyValue::new("gatehouse.endpoint", endpoint.clone()));
        if resend > 0 {
            attrs.push(KeyValue::new(
                "http.request.resend_count",
                i64::from(resend),
            ));
        }
        let builder = SpanBuilder::from_name(name)
            .with_kind(SpanKind::Client)
            .with_attributes(attrs);
        let parent = Context::new().with_remote_span_context(self.span.span_context().clone());
        let span = self.tracer.build_with_context(builder, &parent);
        let cx = span.span_context();
        let tp = TraceContext {
            trace_id: u128::from_be_bytes(cx.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(cx.span_id().to_bytes()),
            flags: 1,
            parent_span_id: 0,
        };
        Box::new(TrySpan {
            span,
            traceparent: tp.header(),
        })
    }
}

/// One try's client span; it ends when the try's outcome is known (`finish`) or when the
/// request is given up.
pub struct TrySpan {
    span: Span,
    traceparent: HeaderValue,
}

impl TrySpan {
    /// The `traceparent` the backend gets for this try: this span is its parent.
    pub fn traceparent(&self) -> HeaderValue {
        self.traceparent.clone()
    }

    /// Ends the span: `status` when the endpoint answered, `failure` (a `ProxyError` reason)
    /// when it did not; `retried` when another try follows.
    pub fn finish(mut self, status: Option<u16>, failure: Option<&'static str>, retried: bool) {
        let outcome = match (status, failure) {
            (_, Some(reason)) => reason,
            (Some(s), None) if s >= 500 => "server_error",
            _ => "ok",
        };
        if let Some(s) = status {
            self.span
                .set_attribute(KeyValue::new("http.response.status_code", i64::from(s)));
        }
        self.span
            .set_attribute(KeyValue::new("gatehouse.outcome", outcome));
        self.span
            .set_attribute(KeyValue::new("gatehouse.retried", retried));
        if outcome != "ok" {
            let kind = failure.unwrap_or_else(|| status.map_or("error", status_text));
            self.span.set_attribute(KeyValue::new("error.type", kind));
            self.span.set_status(Status::error(kind));
        }
        self.span.end();
    }
}

/// The method as the semantic conventions name it: one of the known methods, else `_OTHER`
/// with the original beside it.
fn method_name(m: &Method) -> (&'static str, Option<String>) {
    let known = match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return ("_OTHER", Some(m.as_str().to_string())),
    };
    (known, None)
}

/// `host[:port]` (or `[v6]:port`) as its name and port.
fn split_host(h: &str) -> (&str, Option<u16>) {
    match h.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && !port.contains(']') => {
            match port.parse::<u16>() {
                Ok(p) => (name.trim_start_matches('[').trim_end_matches(']'), Some(p)),
                Err(_) => (h, None),
            }
        }
        _ => (h.trim_start_matches('[').trim_end_matches(']'), None),
    }
}

/// The `error.type` of a status with no error reason of the gateway's: the code itself, as
/// the semantic conventions suggest.
fn status_text(s: u16) -> &'static str {
    match s {
        500 => "500",
        501 => "501",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s >= 500 => "5xx",
        _ => "error",
    }
}

/// Client-sent text kept in a span: at most this many bytes, so a client cannot make spans (and
/// the export queue, and the batches a Collector must accept) as big as its headers.
pub const MAX_ATTRIBUTE_BYTES: usize = 256;

/// `s`, cut at a character boundary to [`MAX_ATTRIBUTE_BYTES`].
fn clip(s: &str) -> String {
    if s.len() <= MAX_ATTRIBUTE_BYTES {
        return s.to_string();
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_into_name_and_port() {
        assert_eq!(split_host("api.example:8443"), ("api.example", Some(8443)));
        assert_eq!(split_host("api.example"), ("api.example", None));
        assert_eq!(split_host("[::1]:4318"), ("::1", Some(4318)));
        assert_eq!(split_host("[::1]"), ("::1", None));
        assert_eq!(split_host("127.0.0.1:9001"), ("127.0.0.1", Some(9001)));
    }

    #[test]
    fn methods_are_named_as_the_conventions_say() {
        assert_eq!(method_name(&Method::GET), ("GET", None));
        let odd = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_name(&odd), ("_OTHER", Some("PURGE".into())));
    }

    #[test]
    fn client_text_is_clipped_at_a_character_boundary() {
        let long = "é".repeat(200);
        let c = super::clip(&long);
        assert!(c.len() <= super::MAX_ATTRIBUTE_BYTES && c.len() >= super::MAX_ATTRIBUTE_BYTES - 1);
        assert!(long.starts_with(&c));
        assert_eq!(super::clip("short"), "short");
    }
}
