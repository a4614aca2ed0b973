//! Admin API handlers: JSON views of the current snapshot and runtime state, and operator
//! actions that go through the same runtime methods the data plane uses.

use super::AdminState;
use crate::cluster::Cluster;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Instant;

fn not_found(what: String) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": what, "status": 404})),
    )
        .into_response()
}

pub async fn status(State(s): State<AdminState>) -> Json<Value> {
    let snap = s.runtime.snapshot();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // Which process answers (after a binary upgrade, the new one).
        "pid": std::process::id(),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "generation": snap.generation,
    }))
}

pub async fn ready(State(s): State<AdminState>) -> Response {
    let snap = s.runtime.snapshot();
    // Ready when every cluster has at least one endpoint that is not DOWN.
    let unready: Vec<&str> = snap
        .clusters
        .values()
        .filter(|c| {
            c.endpoints
                .iter()
                .all(|e| e.state.health() == crate::cluster::endpoint::Health::Down)
        })
        .map(|c| c.name.as_ref())
        .collect();
    let code = if unready.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": unready.is_empty(), "clusters_without_endpoints": unready})),
    )
        .into_response()
}

pub async fn config(State(s): State<AdminState>) -> Json<Value> {
    let snap = s.runtime.snapshot();
    let reload = s.reload.as_ref().map(|r| r.report());
    Json(json!({
        "generation": snap.generation,
        "source": s.reload.as_ref().map(|r| r.source().name()),
        "config": crate::reload::redacted(&snap.config),
        "last_reload": reload,
    }))
}

/// A route's rate limits as enforced (the rate after any `rate_env` override) with their
/// decisions so far, and its cache's hits and lookups so far (`null` without a cache).
fn route_limits(filters: &[crate::filter::Filter]) -> (Vec<Value>, Value) {
    use crate::filter::Filter;
    let limits = filters
        .iter()
        .filter_map(|f| match f {
            Filter::RateLimit(l, c) => Some((l, c)),
            _ => None,
        })
        .map(|(l, c)| {
            let p = &l.params;
            let per = match p.window_us {
                1_000_000 => "s".to_string(),
                60_000_000 => "m".to_string(),
                3_600_000_000 => "h".to_string(),
                us => format!("{}s", us as f64 / 1e6),
            };
            let sliding = p.algorithm == gatehouse_config::traffic::Algorithm::SlidingWindow;
            json!({
                "policy": l.name.as_ref(),
                "algorithm": p.algorithm,
                "rate": format!("{}/{per}", p.limit),
                "burst": (!sliding).then_some(p.burst),
                "store": if l.redis.is_some() { "redis" } else { "local" },
                "allowed_total": c.allowed.get(),
                "limited_total": c.limited.get(),
            })
        })
        .collect();
    let cache = filters
        .iter()
        .find_map(Filter::as_cache)
        .map_or(Value::Null, |c| {
            let (hits, lookups) = c.hit_totals();
            json!({
                "hits_total": hits,
                "lookups_total": lookups,
                "hit_ratio": (lookups > 0).then(|| (1000 * hits / lookups) as f64 / 10.0),
            })
        });
    (limits, cache)
}

pub async fn routes(State(s): State<AdminState>) -> Json<Value> {
    let snap = s.runtime.snapshot();
    let routes: Vec<Value> = snap
        .config
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (limits, cache) =
                route_limits(snap.route_filters.get(i).map_or(&[][..], Vec::as_slice));
            json!({
                "name": r.name,
                "match": {
                    "host": r.matches.host, "path": r.matches.path, "path_prefix": r.matches.path_prefix,
                    "path_template": r.matches.path_template, "methods": r.matches.methods, "headers": r.matches.headers,
                },
                "cluster": r.cluster, "cluster_from_path": r.cluster_from_path, "redirect": r.redirect, "direct_response": r.direct_response, "strip_prefix": r.strip_prefix,
                "filters": r.filters.len(),
                "rate_limits": limits,
                "cache": cache,
            })
        })
        .collect();
    Json(json!({"generation": snap.generation, "routes": routes}))
}

fn cluster_view(c: &Cluster, found: Option<crate::discovery::Found>) -> Value {
    let now = Instant::now();
    let source = found.as_ref().map_or("config", |f| f.kind);
    let endpoints: Vec<Value> = c
        .endpoints
        .iter()
        .map(|e| {
            let s = &e.state;
            let factor = s.slow_start_factor(now);
            json!({
                "address": s.address.as_ref(),
                "source": source,
                "health": s.health(),
                "breaker": s.breaker_state(),
                "drained": s.is_drained(),
                "weight": e.weight,
                "effective_weight": f64::from(e.weight) * factor,
                "slow_start_progress": factor,
                "in_flight": s.in_flight(),
                "latency_ewma_ms": s.latency_ewma(now) / 1e6,
                "retry_after_ms": s.retry_after(now).map(|d| d.as_millis() as u64),
                "fault": s.peek_fault(now).map(|f| json!({
                    "abort": f.abort,
                    "delay_ms": f.delay.map(|d| d.as_millis() as u64),
                    "remaining_ms": f.until.saturating_duration_since(now).as_millis() as u64,
                })),
            })
        })
        .collect();
    let (connections, pending) = c.state.connections.counts();
    let counter = |a: &std::sync::atomic::AtomicUsize| a.load(std::sync::atomic::Ordering::Relaxed);
    let discovery = found.map(|f| {
        json!({
            "source": f.source,
            "last_ok_unix_ms": f.last_ok_unix_ms,
            "last_error": f.last_error,
        })
    });
    json!({
        "name": c.name.as_ref(),
        "endpoints": endpoints,
        "discovery": discovery,
        "limits": c.limits,
        "load": {
            "requests": counter(&c.state.requests),
            "retries": counter(&c.state.retries),
            "connections": connections,
            "pending": pending,
        },
    })
}

/// Every TLS listener's certificates and the ACME sections' state.
pub async fn tls(State(s): State<AdminState>) -> Json<Value> {
    Json(s.runtime.tls.view())
}

pub async fn clusters(State(s): State<AdminState>) -> Json<Value> {
    let snap = s.runtime.snapshot();
    let mut names: Vec<&std::sync::Arc<str>> = snap.clusters.keys().collect();
    names.sort();
    let list: Vec<Value> = names
        .iter()
        .map(|n| cluster_view(&snap.clusters[*n], s.runtime.discovery.found(n)))
        .collect();
    Json(json!({"generation": snap.generation, "clusters": list}))
}

pub async fn cluster(State(s): State<AdminState>, Path(name): Path<String>) -> Response {
    let snap = s.runtime.snapshot();
    match snap.clusters.get(name.as_str()) {
        Some(c) => Json(cluster_view(c, s.runtime.discovery.found(&name))).into_response(),
        None => not_found(format!("no cluster named {name:?}")),
    }
}

fn endpoint_action(
    s: &AdminState,
    name: &str,
    addr: &str,
    f: impl FnOnce(&Cluster, &crate::cluster::endpoint::EndpointState),
) -> Response {
    let snap = s.runtime.snapshot();
    let Some(c) = snap.clusters.get(name) else {
        return not_found(format!("no cluster named {name:?}"));
    };
    let Some(e) = c
        .endpoints
        .iter()
        .find(|e| e.state.address.as_ref() == addr)
    else {
        return not_found(format!("no endpoint {addr:?} in cluster {name:?}"));
    };
    f(c, &e.state);
    Json(cluster_view(c, s.runtime.discovery.found(name))).into_response()
}

pub async fn drain(
    State(s): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
) -> Response {
    endpoint_action(&s, &name, &addr, |_, e| {
        e.set_drained(true, &s.events);
    })
}

pub async fn enable(
    State(s): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
) -> Response {
    endpoint_action(&s, &name, &addr, |_, e| {
        e.set_drained(false, &s.events);
    })
}

#[derive(serde::Deserialize)]
pub struct BreakerBody {
    state: String,
}

pub async fn breaker(
    State(s): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    super::json_body::JsonBody(body): super::json_body::JsonBody<BreakerBody>,
) -> Response {
    let open = match body.state.as_str() {
        "open" => true,
        "closed" => false,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("state must be \"open\" or \"closed\", not {other:?}"), "status": 400})),
            )
                .into_response()
        }
    };
    endpoint_action(&s, &name, &addr, |c, e| {
        e.force_breaker(&c.breaker, open, &s.events)
    })
}

pub async fn reload(State(s): State<AdminState>) -> Response {
    let Some(r) = &s.reload else {
        return (
            StatusCode::CONFLICT,
            Json(
                json!({"error": "this gateway was not started from a config file", "status": 409}),
            ),
        )
            .into_response();
    };
    match r.reload("admin").await {
        Ok(generation) => Json(json!({"result": "ok", "generation": generation})).into_response(),
        Err(errors) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({"result": "error", "errors": errors, "generation": s.runtime.snapshot().generation})),
        )
            .into_response(),
    }
}

/// Prometheus text format (OpenMetrics when the scraper asks for it); endpoint state gauges
/// are read from the runtime now.
pub async fn metrics(State(s): State<AdminState>, headers: axum::http::HeaderMap) -> Response {
    let m = &s.runtime.metrics;
    let snap = s.runtime.snapshot();
    for c in snap.clusters.values() {
        for e in &c.endpoints {
            let l = vec![
                ("cluster", c.name.to_string()),
                ("endpoint", e.state.address.to_string()),
            ];
            m.endpoint_health
                .get_or_create(&l)
                .set(e.state.health() as i64);
            let b = match e.state.breaker_state() {
                crate::cluster::breaker::State::Closed => 0,
                crate::cluster::breaker::State::Open => 1,
                crate::cluster::breaker::State::HalfOpen => 2,
            };
            m.endpoint_breaker.get_or_create(&l).set(b);
            m.endpoint_in_flight
                .get_or_create(&l)
                .set(e.state.in_flight() as i64);
        }
    }
    if let Some(log) = &s.runtime.access_log {
        let dropped = log.dropped();
        let seen = m.access_log_dropped.get();
        if dropped > seen {
            m.access_log_dropped.inc_by(dropped - seen);
        }
    }
    for (log, dropped) in [
        ("events", crate::observe::events::dropped()),
        ("operational", crate::observe::log_drops()),
    ] {
        let c = m.log_dropped.get_or_create(&vec![("log", log.to_string())]);
        let seen = c.get();
        if dropped > seen {
            c.inc_by(dropped - seen);
        }
    }
    let wants_openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            m.encode_openmetrics(),
        )
            .into_response()
    } else {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            m.encode_prometheus(),
        )
            .into_response()
    }
}

#[derive(serde::Deserialize)]
pub struct FaultBody {
    abort: Option<u16>,
    delay_ms: Option<u64>,
    /// 0 ends a running drill.
    duration_s: u64,
}

/// Starts a fault drill on one endpoint: its tries fail with `abort` (or wait `delay_ms`) for
/// `duration_s`, feeding its breaker like real failures.
pub async fn fault(
    State(s): State<AdminState>,
    Path((name, addr)): Path<(String, String)>,
    super::json_body::JsonBody(body): super::json_body::JsonBody<FaultBody>,
) -> Response {
    if body.duration_s > 0 && body.abort.is_none() == body.delay_ms.is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "give exactly one of abort and delay_ms", "status": 400})),
        )
            .into_response();
    }
    if body.abort.is_some_and(|a| !(200..=599).contains(&a)) || body.duration_s > 3600 {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "abort must be 200-599 and duration_s at most 3600", "status": 400})),
        )
            .into_response();
    }
    endpoint_action(&s, &name, &addr, |_, e| {
        let fault = (body.duration_s > 0).then(|| crate::cluster::endpoint::Fault {
            abort: body.abort,
            delay: body.delay_ms.map(std::time::Duration::from_millis),
            until: Instant::now() + std::time::Duration::from_secs(body.duration_s),
        });
        e.set_fault(fault, &s.events);
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    key: Option<String>,
    prefix: Option<String>,
    route: Option<String>,
}

/// `DELETE /cache?key=URL | prefix=URL-prefix [&route=NAME]`: forgets cached responses in
/// memory and in Redis (when a route caches there). Nothing named: everything.
pub async fn purge_cache(
    State(s): State<AdminState>,
    q: Result<axum::extract::Query<PurgeQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let bad = |msg: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": msg, "status": 400})),
        )
            .into_response()
    };
    // A misspelled parameter must not read as "nothing named: purge everything".
    let q = match q {
        Ok(axum::extract::Query(q)) => q,
        Err(e) => {
            return bad(format!(
                "{}: the parameters are key, prefix and route (percent-encode a key's ? and &)",
                e.body_text()
            ))
        }
    };
    if q.key.is_some() && q.prefix.is_some() {
        return bad("give key or prefix, not both".into());
    }
    let snap = s.runtime.snapshot();
    let config = &snap.config;
    if let Some(r) = &q.route {
        if !config.routes.iter().any(|x| &x.name == r) {
            return bad(format!("no route named {r:?}"));
        }
    }
    let uses_redis = config.routes.iter().flat_map(|r| &r.filters).any(|f| {
        matches!(f, gatehouse_config::traffic::Filter::Cache(c)
            if c.store != gatehouse_config::cache::CacheStore::Memory)
    });
    let redis = if uses_redis {
        s.runtime.redis_store(config)
    } else {
        None
    };
    let purge = crate::filter::cache::Purge {
        key: q.key.as_deref(),
        prefix: q.prefix.as_deref(),
        route: q.route.as_deref(),
    };
    match crate::filter::cache::purge(&s.runtime.cache_memory(config), redis.as_ref(), &purge).await
    {
        Ok(n) => Json(json!({"purged": n})).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": format!("redis: {e}"), "status": 502})),
        )
            .into_response(),
    }
}
