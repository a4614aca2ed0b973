//! A route's mirror: a copy of the request to another cluster, fire and forget. The copy runs in
//! its own task and its answer is thrown away, so a slow or dead shadow cluster never delays or
//! fails the real request; past `max_in_flight` copies are dropped and counted. Only bodies the
//! gateway already holds whole (request buffering) are mirrored: the real request is never held
//! back to read one.

use super::attempt::{self, ReqBody};
use crate::cluster::Cluster;
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::route::forward::Mirror;
use http::request::Parts;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Gives back the mirror's place when the copy's task ends.
struct Place(Arc<Mirror>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sends a copy of the request (`head`, `body` as it will go upstream) if the route's share and
/// bound allow it.
pub fn send(
    (mirror, route): (&Arc<Mirror>, &str),
    clusters: &HashMap<Arc<str>, Arc<Cluster>>,
    head: &Parts,
    body: &ReqBody,
    (metrics, events): (&Metrics, &Events),
) {
    if mirror.percent < 1.0 && fastrand::f64() >= mirror.percent {
        return;
    }
    let count = |outcome: &'static str| {
        metrics
            .mirror_requests
            .get_or_create(&vec![
                ("route", route.to_string()),
                ("cluster", mirror.cluster.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
    };
    let bytes = match body {
        ReqBody::Replayable(b) if b.len() as u64 <= mirror.max_body_bytes => b.clone(),
        _ => return count("skipped_body"),
    };
    let Some(cluster) = clusters.get(&mirror.cluster).cloned() else {
        return count("dropped");
    };
    if mirror.in_flight.fetch_add(1, Ordering::AcqRel) >= mirror.max_in_flight {
        mirror.in_flight.fetch_sub(1, Ordering::AcqRel);
        return count("dropped");
    }
    let place = Place(mirror.clone());
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = head.method.clone();
    copy.uri = head.uri.clone();
    copy.version = head.version;
    copy.headers = head.headers.clone();
    count("sent");
    let events = events.clone();
    // The whole copy, its answer's body included, within the mirror cluster's request
    // timeout: a shadow that stalls mid-body must not hold its place for ever.
    let deadline = cluster.timeouts.request.0;
    tokio::spawn(async move {
        let _place = place;
        let _ = tokio::time::timeout(deadline, copy_once(cluster, copy, bytes, events)).await;
    });
}

async fn copy_once(cluster: Arc<Cluster>, copy: Parts, bytes: bytes::Bytes, events: Events) {
    let out = attempt::Outgoing {
        head: copy,
        body: ReqBody::Replayable(bytes),
        allow_non_idempotent: false,
        key: None,
        progress: &crate::body::NO_BODY,
        request_timeout: None,
        host_from_endpoint: false,
        // A mirrored copy is not part of the request's trace.
        trace: None,
        salvage: false,
    };
    let mut tries = attempt::Tries::default();
    // Read the answer to its end so the connection goes back to the pool.
    if let Ok(a) = attempt::run(&cluster, out, &events, &mut tries).await {
        let (resp, held) = super::upstream_response(a);
        let body = resp.into_body().with_hold(Box::new(held));
        let _ = http_body_util::BodyExt::collect(body).await;
    }
}
