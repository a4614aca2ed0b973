//! Storing on the request path: a full response to a GET becomes an entry when RFC 9111 and
//! the filter allow, a 304 to the cache's own validators updates one, and each entry replaces
//! the variant it updates.

use super::respond::{conditional_304, mark, merge_304, respond, stored_head, Answer};
use super::{options, Plan};
use crate::body::{buffer_up_to, Body, Buffered};
use crate::error::ProxyError;
use crate::filter::cache::entry::Entry;
use crate::filter::cache::{normalize, Lookup};
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use http_cache_semantics::{BeforeRequest, CachePolicy};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The RFC 9111 policy of a response received at `now`, decided on its normalized head.
fn policy(p: &Plan, status: StatusCode, head: &HeaderMap, now: SystemTime) -> CachePolicy {
    let mut decided = Response::new(()).into_parts().0;
    decided.status = status;
    decided.headers = normalize::response(head, now);
    CachePolicy::new_options(
        &stored_request(p, &decided.headers),
        &decided,
        now,
        options(),
    )
}

pub(super) async fn revalidated(
    p: Plan,
    e: &Entry,
    fresh: http::response::Parts,
    now: SystemTime,
) -> (Result<Response<Body>, ProxyError>, Lookup) {
    // Any 304 to the entry's own validators selects it (the origin said "what you have is
    // current"); its fields update the stored head.
    let head = merge_304(&e.head, &fresh.headers, now);
    let policy = policy(&p, e.status, &head, now);
    let ttl = policy.time_to_live(now);
    let age = policy.age(now).as_secs();
    let cache_status = if policy.is_storable() {
        store_entry(
            &p,
            policy,
            (e.status, head.clone()),
            e.body.clone(),
            (now, ttl),
        )
        .await;
        format!(
            "gatehouse; fwd=stale; fwd-status=304; stored; ttl={}",
            ttl.as_secs()
        )
    } else {
        // The origin now says not to keep it (`no-store`, `private`): this once, then gone.
        p.cache.remove(&p.key).await;
        "gatehouse; fwd=stale; fwd-status=304".to_string()
    };
    let r = respond(
        &p.client,
        Answer {
            status: e.status,
            head: &head,
            body: &e.body,
            age,
            cache_status: &cache_status,
            lookup: Lookup::Revalidated,
        },
    );
    (Ok(r), Lookup::Revalidated)
}

/// A full response to a GET: stored when RFC 9111 allows, it is of some use (fresh for a
/// while, revalidatable, or servable stale), the body is small enough and it carries no
/// `Set-Cookie` (one client's cookie must never reach another).
pub(super) async fn fill(
    p: Plan,
    resp: Response<Body>,
    now: SystemTime,
) -> (Result<Response<Body>, ProxyError>, Lookup) {
    let (mut head, body) = resp.into_parts();
    let policy = policy(&p, head.status, &head.headers, now);
    let ttl = policy.time_to_live(now);
    let max = p.cache.cfg.max_entry_bytes.0;
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (swr, sie, no_stale) = crate::filter::cache::entry::stale_rules(&head.headers);
    let window = swr.max(sie).max(p.cache.cfg.serve_stale_on_error.0);
    let stale_use = !no_stale && !window.is_zero();
    let useful = !ttl.is_zero()
        || head.headers.contains_key(header::ETAG)
        || head.headers.contains_key(header::LAST_MODIFIED)
        || stale_use;
    let storable = policy.is_storable()
        && useful
        && !head.headers.contains_key(header::SET_COOKIE)
        && declared.is_none_or(|n| n <= max);
    if !storable {
        let too_large = policy.is_storable() && useful && declared.is_some_and(|n| n > max);
        let cache_status = if too_large {
            "gatehouse; fwd=miss; detail=too-large"
        } else {
            "gatehouse; fwd=miss"
        };
        mark(&mut head.headers, cache_status, Lookup::Miss);
        // The client's own conditional still gets its 304 (the backend got none).
        if let Some(r) = conditional_304(&p.client, head.status, &head.headers) {
            return (Ok(r), Lookup::Miss);
        }
        return (Ok(Response::from_parts(head, body)), Lookup::Miss);
    }
    match buffer_up_to(body, max).await {
        Ok(Buffered::Whole(bytes)) => {
            let stored = stored_head(&head.headers, now);
            let age = policy.age(now).as_secs();
            store_entry(
                &p,
                policy,
                (head.status, stored.clone()),
                bytes.clone(),
                (now, ttl),
            )
            .await;
            let cache_status = format!("gatehouse; fwd=miss; stored; ttl={}", ttl.as_secs());
            let r = respond(
                &p.client,
                Answer {
                    status: head.status,
                    head: &stored,
                    body: &bytes,
                    age,
                    cache_status: &cache_status,
                    lookup: Lookup::Miss,
                },
            );
            (Ok(r), Lookup::Miss)
        }
        // Bigger than an entry may be: streamed on, what was read first included.
        Ok(Buffered::Partial(rest)) => {
            mark(
                &mut head.headers,
                "gatehouse; fwd=miss; detail=too-large",
                Lookup::Miss,
            );
            (Ok(Response::from_parts(head, rest)), Lookup::Miss)
        }
        // The body failed before it ended: a stale entry if the failure allows one (a
        // revalidation's new body dying is a backend failure like any other).
        Err(_) => match p
            .stale
            .as_ref()
            .filter(|e| super::stale_allowed(&p, e, now))
        {
            Some(e) => {
                let r = super::stale_response(&p, e, now, "stale-if-error", Some(502));
                (Ok(r), Lookup::Stale)
            }
            None => (Err(ProxyError::UpstreamReset), Lookup::Miss),
        },
    }
}

/// The request a stored policy keeps: only what RFC 9111 needs to match and judge it (host,
/// request `Cache-Control`, `Authorization`'s presence, the headers the response varies on),
/// never the rest of the client's headers.
fn stored_request(p: &Plan, response: &HeaderMap) -> http::request::Parts {
    let mut keep = vec![
        header::HOST,
        header::CACHE_CONTROL,
        header::PRAGMA,
        header::AUTHORIZATION,
    ];
    for v in response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for name in v.split(',') {
            if let Ok(n) = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
                keep.push(n);
            }
        }
    }
    let mut req = p.lookup.clone();
    let drop: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|k| !keep.contains(k))
        .cloned()
        .collect();
    for k in drop {
        req.headers.remove(k);
    }
    req
}

async fn store_entry(
    p: &Plan,
    policy: CachePolicy,
    head: (StatusCode, HeaderMap),
    body: bytes::Bytes,
    (now, ttl): (SystemTime, Duration),
) {
    let entry = Arc::new(Entry::new(
        policy,
        head,
        body,
        p.cache.route.clone(),
        (now, ttl),
        p.cache.cfg.serve_stale_on_error.0,
    ));
    // Replaces the variant this one updates: the same values of the headers it varies on.
    let same = |e: &Entry| {
        matches!(
            e.policy.before_request(&p.lookup, now),
            BeforeRequest::Fresh(_) | BeforeRequest::Stale { matches: true, .. }
        )
    };
    let current = p.variants.as_deref().cloned().unwrap_or_default();
    p.cache
        .put(p.key.clone(), current.with(entry, same, now))
        .await;
}
