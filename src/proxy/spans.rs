//! Where the request path meets tracing: the sampling decision and the server span a recorded
//! request starts with (`observe::otel` makes the spans). Requests that are not recorded (and
//! every request when `tracing:` is absent) pass through here with one branch.

use crate::canonical::Canonical;
use crate::conn::ConnCtx;
use crate::error::ProxyError;
use crate::observe::ids::TraceContext;
use crate::observe::otel::{RequestFacts, ServerSpan, Tracing};
use http::{header, Request};

/// The request's server span when `tracing` records it; `trace` then carries the span's IDs.
pub fn start<B>(
    tracing: Option<&Tracing>,
    trace: &mut TraceContext,
    ctx: &ConnCtx,
    req: &Request<B>,
    canon: &Result<Canonical, ProxyError>,
) -> Option<Box<ServerSpan>> {
    let t = tracing.filter(|t| t.sampled(trace))?;
    let (host, client) = match canon {
        Ok(c) => (Some(c.host.as_str()).filter(|h| !h.is_empty()), c.client.ip),
        Err(_) => (None, ctx.peer.ip()),
    };
    let facts = RequestFacts {
        method: req.method(),
        path: req.uri().path(),
        scheme: if ctx.tls.is_some() { "https" } else { "http" },
        host,
        client,
        peer: ctx.peer,
        version: super::version_str(req.version()),
        user_agent: req.headers().get(header::USER_AGENT),
    };
    Some(t.server_span(trace, std::time::SystemTime::now(), &facts))
}
