//! Gatehouse: a self-healing HTTP API gateway.
//!
//! The module tree follows the request path (see `ARCHITECTURE.md`): [`listener`] accepts and
//! serves connections, [`proxy`] handles each request using one [`runtime::Snapshot`],
//! [`route`] matches it, [`cluster`] picks an endpoint, [`upstream`] forwards it, [`error`]
//! turns failures into local replies, and [`observe`] logs it.

pub mod body;
pub mod clock;
pub mod cluster;
pub mod demo;
pub mod error;
pub mod filter;
pub mod listener;
pub mod observe;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod upstream;

use anyhow::Context as _;
use gatehouse_config::Config;
use observe::access_log::AccessLogSink;
use runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// A running gateway: its listeners are bound and serving.
pub struct Gateway {
    runtime: Arc<Runtime>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: watch::Sender<bool>,
    conns_done: mpsc::Receiver<()>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Gateway {
    /// Binds every listener of a validated config and starts serving. `access_log` overrides
    /// where access-log lines go (tests capture them); `None` follows the config.
    pub async fn start(config: Config, access_log: Option<AccessLogSink>) -> anyhow::Result<Self> {
        let sink = match (access_log, config.access_log) {
            (Some(s), _) => Some(s),
            (None, gatehouse_config::AccessLog::Stdout) => Some(AccessLogSink::stdout()),
            (None, gatehouse_config::AccessLog::Off) => None,
        };
        let listeners = config.listeners.clone();
        let runtime = Runtime::new(config, sink);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (conns_tx, conns_done) = mpsc::channel::<()>(1);
        let mut addrs = Vec::new();
        let mut accept_tasks = Vec::new();
        for l in &listeners {
            let tcp = listener::bind(&l.address).with_context(|| {
                format!("listener {:?}: cannot listen on {}", l.name, l.address)
            })?;
            let addr = tcp.local_addr()?;
            addrs.push((l.name.clone(), addr));
            let accept = listener::AcceptLoop {
                listener: tcp,
                settings: Arc::new(listener::ListenerSettings::new(l)),
                runtime: runtime.clone(),
                shutdown: shutdown_rx.clone(),
                conns: conns_tx.clone(),
            };
            accept_tasks.push(tokio::spawn(accept.run()));
        }
        Ok(Gateway {
            runtime,
            addrs,
            shutdown,
            conns_done,
            accept_tasks,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Every listener's name and bound address, in config order.
    pub fn addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, then returns.
    /// Returns `true` when every connection finished in time.
    pub async fn shutdown(mut self, drain: Duration) -> bool {
        let _ = self.shutdown.send(true);
        for t in self.accept_tasks.drain(..) {
            let _ = t.await;
        }
        // Each connection task holds a sender; `recv` yields `None` once all are gone.
        let drained = tokio::time::timeout(drain, self.conns_done.recv())
            .await
            .is_ok();
        self.runtime.stop();
        if let Some(log) = &self.runtime.access_log {
            log.flush();
        }
        drained
    }
}

/// Resolves when the process is asked to stop (SIGTERM or SIGINT).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
