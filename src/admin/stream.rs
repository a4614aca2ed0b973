//! The event stream (`GET /events`, server-sent events) and its history (`GET /history`): the
//! kept traffic summaries and transitions in the stream's own JSON, and a stream that resumes
//! after a sequence number (`?since=`, or the `Last-Event-ID` an EventSource sends when it
//! reconnects) so history and stream join with no gap and no duplicate.

use super::json_body::error;
use super::AdminState;
use crate::observe::events::Events;
use crate::observe::history::Kept;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::broadcast::{error::RecvError, Receiver};

/// `since` from the query (`None` when absent); any other parameter than those in `also` is
/// refused, so a misspelling does not silently mean "everything".
fn since_param(query: Option<&str>, also: &[&str]) -> Result<Option<u64>, String> {
    let mut since = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == "since" {
            since = Some(v.parse::<u64>().map_err(|_| {
                format!("since must be a whole number, a seq from /history or an event (not {v:?})")
            })?);
        } else if !also.contains(&k.as_ref()) {
            return Err(format!("unknown parameter {k:?}: the parameter is since"));
        }
    }
    Ok(since)
}

/// `GET /history[?since=SEQ]`: `{"seq", "traffic": [...], "events": [...]}`, oldest first, each
/// element exactly the `data` the stream sent; `seq` is the newest number given out, for
/// `/events?since=`.
pub async fn history(State(s): State<AdminState>, RawQuery(q): RawQuery) -> Response {
    let since = match since_param(q.as_deref(), &[]) {
        Ok(since) => since.unwrap_or(0),
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let h = s.events.history(since);
    let join = |kept: &[Kept]| -> String {
        let mut out = String::with_capacity(kept.iter().map(|k| k.json.len() + 1).sum());
        for (i, k) in kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&k.json);
        }
        out
    };
    let body = format!(
        "{{\"seq\":{},\"traffic\":[{}],\"events\":[{}]}}",
        h.last,
        join(&h.traffic),
        join(&h.events)
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// What a stream has left to send: kept messages first, then the live ones numbered above
/// `last`.
struct Resume {
    pending: VecDeque<Kept>,
    rx: Receiver<Arc<Value>>,
    last: u64,
    events: Events,
}

impl Resume {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(k) = self.pending.pop_front() {
                self.last = k.seq;
                let ev = Event::default()
                    .id(k.seq.to_string())
                    .event(&*k.name)
                    .data(&*k.json);
                return Some((Ok(ev), self));
            }
            match self.rx.recv().await {
                Ok(v) => {
                    let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
                    if seq <= self.last {
                        continue;
                    }
                    self.last = seq;
                    let name = v.get("event").and_then(Value::as_str).unwrap_or("event");
                    let ev = Event::default()
                        .id(seq.to_string())
                        .event(name)
                        .data(v.to_string());
                    return Some((Ok(ev), self));
                }
                // A slow reader the channel left behind: what it missed, from the rings.
                Err(RecvError::Lagged(_)) => {
                    self.pending = self.events.history(self.last).merged().into();
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// `GET /events[?since=SEQ]`: every message as it happens (`id:` its seq, `event:` its name,
/// `data:` its JSON); with `since` (or `Last-Event-ID`, the later of the two), first the kept
/// ones numbered above it.
pub async fn events(
    State(s): State<AdminState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let since = match since_param(q.as_deref(), &["access_token"]) {
        Ok(since) => since,
        Err(msg) => return error(StatusCode::BAD_REQUEST, &msg),
    };
    let last_event_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = since.max(last_event_id);
    let (kept, rx) = s.events.subscribe_since(after.unwrap_or(u64::MAX));
    let resume = Resume {
        last: after.unwrap_or(kept.last).min(kept.last),
        pending: kept.merged().into(),
        rx,
        events: s.events.clone(),
    };
    let stream = futures_util::stream::unfold(resume, Resume::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::since_param;

    #[test]
    fn since_is_a_whole_number_and_nothing_else_is_taken() {
        assert_eq!(since_param(None, &[]), Ok(None));
        assert_eq!(since_param(Some("since=42"), &[]), Ok(Some(42)));
        assert_eq!(
            since_param(Some("access_token=x&since=0"), &["access_token"]),
            Ok(Some(0))
        );
        assert!(since_param(Some("since=-1"), &[])
            .unwrap_err()
            .contains("whole number"));
        assert!(since_param(Some("sinse=1"), &[])
            .unwrap_err()
            .contains("unknown parameter \"sinse\""));
        assert!(since_param(Some("access_token=x"), &[]).is_err());
    }
}
