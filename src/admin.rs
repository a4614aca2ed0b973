//! The admin listener: a JSON API over the runtime (status, routes, clusters with every
//! endpoint's state, drain/enable, breaker drills), the event stream (SSE), health and
//! readiness. Never the traffic port. A bearer token is required when configured, and the
//! listener refuses to start on a non-loopback address without one.

mod dashboard;
mod handlers;

use crate::observe::events::Events;
use crate::runtime::Runtime;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Clone)]
pub struct AdminState {
    pub runtime: Arc<Runtime>,
    pub events: Events,
    pub token: Option<Arc<str>>,
    pub started: Instant,
    pub reload: Option<Arc<crate::reload::Reloader>>,
}

/// Checks the admin settings: a token is required off loopback. Returns the token, if any.
pub fn token_for(cfg: &gatehouse_config::Admin) -> anyhow::Result<Option<Arc<str>>> {
    let addr: SocketAddr = cfg.address.parse()?;
    let token = match &cfg.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.is_empty() => Some(Arc::from(t.as_str())),
            _ => anyhow::bail!("admin.token_env: the variable {var} is not set"),
        },
        None => None,
    };
    if token.is_none() && !addr.ip().is_loopback() {
        anyhow::bail!(
            "admin.address {addr} is not loopback: set admin.token_env to require a bearer token"
        );
    }
    Ok(token)
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(handlers::status))
        .route("/config", get(handlers::config))
        .route("/routes", get(handlers::routes))
        .route("/clusters", get(handlers::clusters))
        .route("/clusters/{name}", get(handlers::cluster))
        .route(
            "/clusters/{name}/endpoints/{addr}/drain",
            post(handlers::drain),
        )
        .route(
            "/clusters/{name}/endpoints/{addr}/enable",
            post(handlers::enable),
        )
        .route(
            "/clusters/{name}/endpoints/{addr}/breaker",
            post(handlers::breaker),
        )
        .route(
            "/clusters/{name}/endpoints/{addr}/fault",
            post(handlers::fault),
        )
        .route("/reload", post(handlers::reload))
        .route("/events", get(handlers::events))
        .route("/metrics", get(handlers::metrics))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(handlers::ready))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/{*file}", get(dashboard::asset))
        .with_state(state)
}

async fn auth(State(s): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &s.token {
        // EventSource cannot send headers: the event stream also takes `?access_token=`.
        let from_query = (req.uri().path() == "/events")
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")));
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or(from_query);
        let ok = presented
            .is_some_and(|t| subtle::ConstantTimeEq::ct_eq(t.as_bytes(), token.as_bytes()).into());
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(serde_json::json!({"error": "admin token required", "status": 401})),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Serves the admin API until `shutdown` flips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}
