//! The admin listener: a JSON API over the runtime (status, routes, clusters with every
//! endpoint's state, drain/enable, breaker drills), the event stream (SSE) and its history,
//! health and readiness. Never the traffic port. A bearer token is required when configured,
//! and the listener refuses to start on a non-loopback address without one. What it trusts
//! (Host, Origin, content types, tokens) is in `guard.rs` and docs/security.md.

mod dashboard;
pub mod guard;
mod handlers;
mod json_body;
mod stream;
pub mod traffic;

use crate::observe::events::Events;
use crate::runtime::Runtime;
use axum::middleware;
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
    pub guard: Arc<guard::Guard>,
}

/// The admin token: from `token_env` or `token_file` (read with the config), or generated for `token: auto` and written to its file
/// (mode 0600). Validation has already required one off loopback and checked the variable.
pub fn token_for(cfg: &gatehouse_config::Admin) -> anyhow::Result<Option<(Arc<str>, TokenSource)>> {
    if let Some(var) = &cfg.token_env {
        return match std::env::var(var) {
            Ok(t) if !t.is_empty() => Ok(Some((Arc::from(t.as_str()), TokenSource::Env))),
            _ => anyhow::bail!("admin.token_env: the variable {var} is not set"),
        };
    }
    if let Some(t) = &cfg.token_value {
        return Ok(Some((Arc::from(t.as_str()), TokenSource::Env)));
    }
    if cfg.token != Some(gatehouse_config::AdminToken::Auto) {
        return Ok(None);
    }
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot generate a token: {e}"))?;
    let token = hex::encode(bytes);
    let path = match &cfg.token_file {
        Some(p) => std::path::PathBuf::from(p),
        None => default_token_file()?,
    };
    write_private(&path, &token)?;
    Ok(Some((Arc::from(token.as_str()), TokenSource::File(path))))
}

/// Where the admin token came from (the banner says where to find a generated one).
pub enum TokenSource {
    /// Given: `token_env` or `token_file`.
    Env,
    File(std::path::PathBuf),
}

fn default_token_file() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| std::path::PathBuf::from(d).join("gatehouse"))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".gatehouse"))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("admin.token: auto needs admin.token_file (no XDG_RUNTIME_DIR or HOME)")
        })?;
    Ok(dir.join("admin-token"))
}

/// Writes `text` to a file only its owner can read, replacing any old one at once: written under
/// a temporary name beside it and renamed over it, so that a reader (a script that waits for the
/// admin port, then reads the token) finds the old token or the new one, never no file or half
/// of one.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        b.mode(0o700);
        b.create(dir).map_err(|e| {
            anyhow::anyhow!("admin.token_file: cannot create {}: {e}", dir.display())
        })?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    // Never through a link someone left at the temporary name.
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600);
    let cannot = |e: std::io::Error| {
        anyhow::anyhow!("admin.token_file: cannot write {}: {e}", path.display())
    };
    let mut f = o.open(&tmp).map_err(cannot)?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(cannot(e));
    }
    Ok(())
}

/// The admin API's OpenAPI 3.1 document, served at `/openapi.json`; `tests/openapi.rs` holds
/// it to the routes below.
pub const OPENAPI: &str = include_str!("admin/assets/openapi.json");

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/status", get(handlers::status))
        .route("/config", get(handlers::config))
        .route("/routes", get(handlers::routes))
        .route("/clusters", get(handlers::clusters))
        .route("/tls", get(handlers::tls))
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
        .route("/cache", axum::routing::delete(handlers::purge_cache))
        .route("/history", get(stream::history))
        .route("/events", get(stream::events))
        .route("/metrics", get(handlers::metrics))
        .layer(middleware::from_fn_with_state(state.clone(), guard::token))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(handlers::ready))
        .route(
            "/openapi.json",
            get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    OPENAPI,
                )
            }),
        )
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/{*file}", get(dashboard::asset))
        .fallback(|| async {
            json_body::error(
                axum::http::StatusCode::NOT_FOUND,
                "no such admin endpoint (docs/admin-api.md lists them)",
            )
        })
        .method_not_allowed_fallback(|| async {
            json_body::error(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "this admin endpoint does not take that method (docs/admin-api.md)",
            )
        })
        // Outermost: Host, cross-site and content-type checks for every route.
        .layer(middleware::from_fn_with_state(state.clone(), guard::check))
        .with_state(state)
}

/// Serves the admin API until `shutdown` flips.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
}
