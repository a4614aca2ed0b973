//! Gatehouse: a self-healing HTTP API gateway.
//!
//! The module tree follows the request path (see `ARCHITECTURE.md`): [`listener`] accepts and
//! serves connections, [`proxy`] handles each request using one [`runtime::Snapshot`],
//! [`route`] matches it, [`cluster`] picks an endpoint, [`upstream`] forwards it, [`error`]
//! turns failures into local replies, and [`observe`] logs it.

pub mod admin;
pub mod body;
pub mod canonical;
pub mod clock;
pub mod cluster;
pub mod conn;
pub mod ctl;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod etcd;
pub mod filter;
pub mod framing;
pub mod listener;
pub mod observe;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod runtime;
pub mod service;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use anyhow::Context as _;
use gatehouse_config::Config;
use observe::access_log::AccessLogSink;
use runtime::Runtime;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The admin listener of a running gateway.
struct RunningAdmin {
    addr: SocketAddr,
    /// As configured, for a new process taking the socket over.
    address: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    token: Option<(Arc<str>, admin::TokenSource)>,
    /// A second descriptor of the listening socket, to offer in an upgrade.
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

pub use upgrade::Takeover;

/// How long, in a handover's drain, keep-alive connections may go on before idle ones are
/// closed: long enough for a client in the middle of using one to send its next request (and
/// get `Connection: close`), short enough that an upgrade does not wait on idle clients.
/// Measured: at 1 s, a slow client (a loaded 2-core machine, a debug build, requests queued
/// for over a second) still had requests under way on old connections when they were closed,
/// and some failed; at 4 s none did.
const HANDOVER_GRACE: Duration = Duration::from_secs(4);

/// Binds the admin listener, or adopts its socket from `inherited` (with its token, generated
/// for `token: auto`), and serves it.
fn start_admin(
    a: &gatehouse_config::Admin,
    runtime: &Arc<Runtime>,
    reload: Option<Arc<reload::Reloader>>,
    inherited: &listener::inherit::Inherited,
) -> anyhow::Result<RunningAdmin> {
    // Before the listener: once it is bound, connections are accepted (into its backlog), and a
    // script that waits for the port and then reads a generated token must find this one.
    let token = admin::token_for(a)?;
    let taken = inherited.take(listener::inherit::SocketKind::Admin, "admin", &a.address);
    let tcp = match taken {
        Some(s) => listener::inherit::adopt(s),
        None => listener::bind(&a.address),
    }
    .with_context(|| format!("admin: cannot listen on {}", a.address))?;
    let addr = tcp.local_addr()?;
    #[cfg(unix)]
    let fd = std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned()?;
    let (stop, stop_rx) = watch::channel(false);
    let state = admin::AdminState {
        runtime: runtime.clone(),
        events: runtime.events.clone(),
        token: token.as_ref().map(|(t, _)| t.clone()),
        started: tokio::time::Instant::now(),
        reload,
        guard: Arc::new(admin::guard::Guard::new(addr, &a.allowed_hosts)),
    };
    match &token {
        // As Jupyter does: the generated token is shown once, in a URL that opens the
        // dashboard signed in (the fragment never reaches a server or an access log).
        Some((t, admin::TokenSource::File(path))) => tracing::info!(
            address = %addr,
            token_file = %path.display(),
            dashboard = %format!("http://{addr}/dashboard#token={t}"),
            "admin listening; its generated token is in token_file"
        ),
        _ => tracing::info!(address = %addr, "admin listening"),
    }
    Ok(RunningAdmin {
        addr,
        address: a.address.clone(),
        stop,
        task: tokio::spawn(admin::serve(tcp, state, stop_rx)),
        token,
        #[cfg(unix)]
        fd,
    })
}

/// A running gateway: its listeners are bound and serving.
pub struct Gateway {
    runtime: Arc<Runtime>,
    listeners: Arc<listener::Listeners>,
    admin: Option<RunningAdmin>,
    reloader: Option<Arc<reload::Reloader>>,
    _watcher: Option<notify::RecommendedWatcher>,
    /// Every downstream connection's task; drain waits for it to empty.
    tracker: tokio_util::task::TaskTracker,
}

impl Gateway {
    /// Binds every listener of a validated config and starts serving. `access_log` overrides
    /// where access-log lines go (tests capture them); `None` follows the config.
    pub async fn start(config: Config, access_log: Option<AccessLogSink>) -> anyhow::Result<Self> {
        Self::start_inner(config, access_log, None, Takeover::default()).await
    }

    /// Starts from a config file and reloads it when it changes, on SIGHUP (see
    /// [`Gateway::reload`]) and on `POST /reload`.
    pub async fn start_file(
        path: &std::path::Path,
        access_log: Option<AccessLogSink>,
    ) -> anyhow::Result<Self> {
        Self::start_file_taking_over(path, access_log, Takeover::default()).await
    }

    /// [`Gateway::start_file`] in a new process of an upgrade: adopts the sockets `takeover`
    /// holds where the config's addresses match, and seeds the endpoints' state with the old
    /// process's before accepting.
    pub async fn start_file_taking_over(
        path: &std::path::Path,
        access_log: Option<AccessLogSink>,
        takeover: Takeover,
    ) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::start_from(
            reload::Source::File(path.to_path_buf()),
            text,
            None,
            access_log,
            takeover,
        )
        .await
    }

    /// Starts from a config held whole in one etcd key, watched: each change goes through
    /// the same validation and reload as a file change, and the key's revision is the
    /// config's generation.
    pub async fn start_etcd(
        endpoints: Vec<String>,
        key: &str,
        access_log: Option<AccessLogSink>,
        takeover: Takeover,
    ) -> anyhow::Result<Self> {
        let source = reload::Source::Etcd {
            client: etcd::Client::new(endpoints),
            key: key.to_string(),
        };
        // No retry: etcd down at start is an error the service manager restarts after.
        let (text, revision) = source
            .read()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the config from etcd key {key:?}: {e}"))?;
        Self::start_from(source, text, revision, access_log, takeover).await
    }

    async fn start_from(
        source: reload::Source,
        text: String,
        revision: Option<u64>,
        access_log: Option<AccessLogSink>,
        takeover: Takeover,
    ) -> anyhow::Result<Self> {
        let config = source
            .load(&text)
            .map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?;
        log_warnings(&text, &source.name(), &config);
        Self::start_inner(config, access_log, Some((source, text, revision)), takeover).await
    }

    async fn start_inner(
        config: Config,
        access_log: Option<AccessLogSink>,
        origin: Option<(reload::Source, String, Option<u64>)>,
        takeover: Takeover,
    ) -> anyhow::Result<Self> {
        let sink = match access_log {
            Some(s) => {
                s.configure(&config.access_log);
                Some(s)
            }
            None => AccessLogSink::for_config(&config.access_log).map_err(|e| {
                anyhow::anyhow!(
                    "access_log.path: cannot open {}: {e}",
                    config.access_log.path.as_deref().unwrap_or_default()
                )
            })?,
        };
        let admin_cfg = config.admin.clone();
        let listener_cfgs = config.listeners.clone();
        let revision = origin.as_ref().and_then(|o| o.2);
        let runtime = Runtime::new_at(config, sink, revision).map_err(|problems| {
            let errors = match &origin {
                Some((source, text, _)) => {
                    gatehouse_config::locate(text, &source.name(), problems).to_string()
                }
                None => problems
                    .iter()
                    .map(|(path, msg)| format!("{path}: {msg}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            };
            anyhow::anyhow!("invalid config:\n{errors}")
        })?;
        // The summaries are for the admin API's history and stream: none without a listener.
        if admin_cfg.is_some() {
            admin::traffic::start(Arc::downgrade(&runtime));
        }
        reload::certs::watch(&runtime);
        // Before any listener accepts: a DOWN endpoint is DOWN from the first request on.
        if !takeover.endpoints.is_empty() {
            upgrade::state::seed(&runtime, &takeover.endpoints);
        }
        let tracker = tokio_util::task::TaskTracker::new();
        let listeners = Arc::new(listener::Listeners::inheriting(
            runtime.clone(),
            tracker.clone(),
            takeover.sockets.clone(),
        ));
        let errors = listeners.reconcile(&listener_cfgs);
        if let Some(e) = errors.first() {
            listeners.stop_all().await;
            runtime.stop();
            anyhow::bail!("{e}");
        }
        let reloader = origin.map(|(source, text, _)| {
            Arc::new(reload::Reloader::new(
                source,
                runtime.clone(),
                listeners.clone(),
                Some(text),
            ))
        });
        let watcher = reloader.clone().and_then(reload::watch);
        if let Some(r) = &reloader {
            reload::watch_etcd(r.clone());
        }
        let admin = match admin_cfg {
            None => None,
            Some(a) => match start_admin(&a, &runtime, reloader.clone(), &takeover.sockets) {
                Ok(admin) => Some(admin),
                Err(e) => {
                    listeners.stop_all().await;
                    runtime.stop();
                    return Err(e);
                }
            },
        };
        takeover.sockets.close_rest();
        Ok(Gateway {
            runtime,
            listeners,
            admin,
            reloader,
            _watcher: watcher,
            tracker,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    /// Every listener's name and bound address, in config order.
    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners.addrs()
    }

    /// The admin listener's address, when there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// The admin token, and the file it was written to when it was generated (`token: auto`).
    pub fn admin_token(&self) -> Option<(&str, Option<&std::path::Path>)> {
        let (t, src) = self.admin.as_ref()?.token.as_ref()?;
        Some((
            t.as_ref(),
            match src {
                admin::TokenSource::File(p) => Some(p.as_path()),
                admin::TokenSource::Env => None,
            },
        ))
    }

    /// Every listening socket (the admin listener's too), each a new descriptor, for a new
    /// process taking over (an upgrade).
    #[cfg(unix)]
    pub fn offer(&self) -> std::io::Result<Vec<listener::OfferedSocket>> {
        let mut out = self.listeners.offer()?;
        if let Some(a) = &self.admin {
            out.push(listener::OfferedSocket {
                kind: listener::inherit::SocketKind::Admin,
                name: "admin".into(),
                address: a.address.clone(),
                bound: a.addr,
                fd: a.fd.try_clone()?,
            });
        }
        Ok(out)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Reloads the config file (when started from one). On error nothing changes.
    pub async fn reload(&self, source: &str) -> Result<u64, Vec<String>> {
        match &self.reloader {
            Some(r) => r.reload(source).await,
            None => Err(vec![
                "this gateway was not started from a config file".into()
            ]),
        }
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, then returns as soon
    /// as they have: idle keep-alive connections close at once, upgraded connections (WebSocket
    /// tunnels) are closed, the config watcher and reloader go first so no reload starts.
    /// Returns `true` when every connection finished in time.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.stop(drain, false).await
    }

    /// The drain of an old process whose sockets a new one has taken over: as
    /// [`Gateway::shutdown`], but upgraded connections (WebSockets) keep running until they
    /// close or `drain` passes, since nothing but this process can carry them.
    pub async fn hand_over(self, drain: Duration) -> bool {
        self.stop(drain, true).await
    }

    async fn stop(mut self, drain: Duration, keep_tunnels: bool) -> bool {
        drop(self._watcher.take());
        drop(self.reloader.take());
        let started = tokio::time::Instant::now();
        if keep_tunnels {
            // Every HTTP/1.1 connection still in use ends with its next response (which says
            // `Connection: close`), so no client sends on a connection as it closes. Those
            // still open after the grace were idle through it; they close as on SIGTERM.
            self.runtime.begin_handover();
            self.listeners.stop_accepting().await;
            self.tracker.close();
            let grace = HANDOVER_GRACE.min(drain);
            let _ = tokio::time::timeout(grace, self.tracker.wait()).await;
            tracing::info!("handover grace over: closing idle connections");
        }
        self.listeners.stop_all().await;
        if let Some(a) = self.admin.take() {
            let _ = a.stop.send(true);
            a.task.abort();
        }
        if !keep_tunnels {
            self.runtime.begin_shutdown();
        }
        self.tracker.close();
        self.runtime.tunnels.close();
        let tunnels = self.runtime.tunnels.clone();
        let tracker = self.tracker.clone();
        let all = async move {
            tracker.wait().await;
            tunnels.wait().await;
        };
        let left = drain.saturating_sub(started.elapsed());
        let drained = tokio::time::timeout(left, all).await.is_ok();
        self.runtime.begin_shutdown();
        self.runtime.stop();
        // The drained requests' spans, and any still queued: at most 1 s more.
        self.runtime.flush_tracing(Duration::from_secs(1)).await;
        if let Some(log) = &self.runtime.access_log {
            if !log.flush(Duration::from_secs(1)) {
                tracing::warn!(
                    "access log lines still unwritten at exit: stdout is not being read"
                );
            }
        }
        observe::events::flush(Duration::from_secs(1));
        drained
    }
}

pub use reload::log_warnings;

/// Resolves when the process is asked to stop (SIGTERM or SIGINT). The handlers are installed
/// when this is called, not when the future is first polled: a SIGTERM that arrives while the
/// gateway is starting (its listeners already accepting) must drain it, not kill it. Call it
/// inside the runtime, before anything is served.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn next(s: Option<Signal>) {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            tokio::select! {
                _ = next(term) => {}
                _ = next(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
