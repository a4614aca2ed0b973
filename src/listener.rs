//! Listeners: bind, accept (at most `max_connections` at once: beyond it a connection is
//! accepted and closed at once, so the accept loop never stalls), read a PROXY protocol header
//! when configured, serve HTTP/1.1 and HTTP/2 (h2c, prior knowledge) on one port with the
//! listener's limits, close idle keep-alive connections, and drain on shutdown. The protocol is
//! chosen from the connection's first bytes (the HTTP/2 preface or not), so an HTTP/1.1
//! connection is served by hyper's plain HTTP/1.1 server with no version sniffing layer
//! ([`serve`], which also parks idle keep-alive connections outside hyper, in the listener's
//! lot: [`park`]).

pub mod inherit;
mod park;
pub mod proxy_protocol;
mod serve;

pub use serve::PARK_AFTER;

use crate::conn::ListenerSettings;
use crate::runtime::Runtime;
use bytes::Bytes;
use gatehouse_config::Listener as ListenerConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Binds `address` with a deep accept backlog and `SO_REUSEADDR` (restarts don't wait for
/// TIME_WAIT).
pub fn bind(address: &str) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| std::io::Error::other(format!("invalid address {address:?}")))?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Everything an accept loop needs.
pub struct AcceptLoop {
    pub listener: TcpListener,
    /// Swapped by a reload; each connection uses the settings current when it was accepted.
    pub settings: Arc<arc_swap::ArcSwap<ListenerSettings>>,
    pub runtime: Arc<Runtime>,
    pub shutdown: watch::Receiver<bool>,
    /// Stops accepting only, leaving the connections be (a handover's drain).
    pub stop_accepting: watch::Receiver<bool>,
    /// Every connection task runs on this tracker; drain waits for it to empty. Nothing but a
    /// running task keeps it open, so no stray clone can make shutdown wait.
    pub tracker: TaskTracker,
    /// Connections open on this listener now.
    pub open: Arc<AtomicUsize>,
}

/// Counts a connection as open, on its listener and in `gatehouse_downstream_connections`,
/// until dropped (it moves with the connection through the tasks serving it and the lot).
struct OpenGuard {
    listener: Arc<AtomicUsize>,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl OpenGuard {
    fn new(listener: &Arc<AtomicUsize>, gauge: &prometheus_client::metrics::gauge::Gauge) -> Self {
        listener.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        OpenGuard {
            listener: listener.clone(),
            gauge: gauge.clone(),
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.listener.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

impl AcceptLoop {
    pub async fn run(mut self) {
        let parked = &self.runtime.metrics.connections_parked;
        let lots = Lots {
            plain: park::Lot::start(
                &self.tracker,
                self.shutdown.clone(),
                parked.clone(),
                serve::resume,
            ),
            tls: park::Lot::start(
                &self.tracker,
                self.shutdown.clone(),
                parked.clone(),
                serve::resume,
            ),
        };
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                _ = self.stop_accepting.changed() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let settings = self.settings.load_full();
                        if self.open.load(Ordering::Relaxed) >= settings.max_connections {
                            // Closing at once frees the descriptor and keeps accepting; the
                            // client sees a reset or EOF instead of a hung handshake.
                            // Zero linger: a reset, and no TIME_WAIT left behind.
                            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                            drop(stream);
                            settings.rejected_connections.inc();
                            continue;
                        }
                        let open = OpenGuard::new(&self.open, &self.runtime.metrics.connections);
                        let _ = stream.set_nodelay(true);
                        self.tracker.spawn(accept_connection(
                            stream,
                            peer,
                            settings,
                            self.runtime.clone(),
                            self.shutdown.clone(),
                            lots.clone(),
                            open,
                        ));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly instead of spinning.
                        tracing::warn!(listener = %self.settings.load().name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        tracing::info!(listener = %self.settings.load().name, "listener stopped accepting");
    }
}

/// The two kinds of client stream a listener may serve (a reload can turn TLS on or off), each
/// with its lot for parked connections.
#[derive(Clone)]
struct Lots {
    plain: park::Lot<TcpStream>,
    tls: park::Lot<TlsIo>,
}

/// A client connection over TLS (after an optional PROXY protocol header, whose extra bytes
/// the `Rewind` replays into the handshake).
pub(crate) type TlsIo = tokio_rustls::server::TlsStream<proxy_protocol::Rewind<TcpStream>>;

/// Reads the PROXY protocol header when the listener expects one, runs the TLS handshake on a
/// TLS listener, then serves HTTP.
///
/// Until its first request head has arrived (or 1 KiB of it), a connection holds a 1 KiB
/// buffer and a small task; hyper's own buffers (16 KiB) and connection state are made only
/// then, so a slow client that never finishes a head costs about what it costs NGINX. A
/// connection that has not sent a whole head has nothing in flight: on shutdown it is closed.
async fn accept_connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<ListenerSettings>,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    lots: Lots,
    counted: OpenGuard,
) {
    let deadline = Instant::now() + settings.header_read_timeout;
    // Each phase is boxed on its own, so the connection's task is only as big as what it holds
    // for its whole life (an idle keep-alive connection does not keep the first phase's state).
    let opened = Box::pin(proxy_header(stream, peer, &settings, &runtime, deadline)).await;
    let Some((stream, peer, read)) = opened else {
        return;
    };
    let Some(tls) = settings.tls.clone() else {
        let Some((stream, first)) =
            Box::pin(head_or_stop(stream, read, deadline, shutdown.clone())).await
        else {
            return;
        };
        let conn = (peer, None, deadline);
        let serve = serve::serve_connection(
            stream, first, conn, settings, runtime, shutdown, lots.plain, counted,
        );
        return Box::pin(serve).await;
    };
    let shook = Box::pin(handshake(&tls, stream, read, &runtime, shutdown.clone())).await;
    let Some((stream, info)) = shook else {
        return;
    };
    let deadline = Instant::now() + settings.header_read_timeout;
    let Some((stream, first)) = Box::pin(head_or_stop(
        stream,
        Bytes::new(),
        deadline,
        shutdown.clone(),
    ))
    .await
    else {
        return;
    };
    let conn = (peer, Some(info), deadline);
    let serve = serve::serve_connection(
        stream, first, conn, settings, runtime, shutdown, lots.tls, counted,
    );
    Box::pin(serve).await
}

/// The connection's PROXY protocol header, when the listener expects one: the peer it names,
/// and the bytes read past it.
async fn proxy_header(
    mut stream: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
    runtime: &Runtime,
    deadline: Instant,
) -> Option<(TcpStream, SocketAddr, Bytes)> {
    if !settings.proxy_protocol {
        return Some((stream, peer, Bytes::new()));
    }
    let header = tokio::time::timeout_at(deadline, proxy_protocol::read_header(&mut stream)).await;
    match header {
        Ok(Ok((source, rest))) => Some((stream, source.unwrap_or(peer), rest)),
        Ok(Err(e)) => {
            tracing::debug!(listener = %settings.name, %peer, error = %e, "PROXY protocol header refused");
            reject(runtime, "proxy_protocol");
            None
        }
        Err(_) => {
            tracing::debug!(listener = %settings.name, %peer, "no PROXY protocol header in time");
            reject(runtime, "proxy_protocol");
            None
        }
    }
}

/// The TLS handshake (its own timeout and cap on handshakes in flight), counted by result.
async fn handshake(
    tls: &crate::tls::Terminator,
    stream: TcpStream,
    read: Bytes,
    runtime: &Runtime,
    mut stop: watch::Receiver<bool>,
) -> Option<(TlsIo, Box<crate::tls::TlsInfo>)> {
    let result = tokio::select! {
        r = tls.accept(proxy_protocol::Rewind::new(stream, read)) => r,
        _ = stop.changed() => return None,
    };
    let label = match &result {
        Ok(_) => "ok",
        Err(reason) => reason,
    };
    runtime
        .metrics
        .tls_handshakes
        .get_or_create(&vec![
            ("listener", tls.listener().to_string()),
            ("result", label.to_string()),
        ])
        .inc();
    result.ok()
}

/// The first request head (see [`first_head`]), or `None` on shutdown.
async fn head_or_stop<S: tokio::io::AsyncRead + Unpin>(
    mut stream: S,
    read: Bytes,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
) -> Option<(S, Bytes)> {
    let first = tokio::select! {
        first = first_head(&mut stream, read, deadline) => first,
        _ = stop.changed() => None,
    };
    first.map(|f| (stream, f))
}

/// Reads until the buffered bytes hold a complete request head (or an HTTP/2 preface), or
/// 1 KiB, whichever comes first. `None` when the client closes or `deadline` passes first.
async fn first_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    already: Bytes,
    deadline: Instant,
) -> Option<Bytes> {
    use tokio::io::AsyncReadExt;
    const SMALL: usize = 1024;
    let complete = |b: &[u8]| b.len() >= SMALL || b.windows(4).any(|w| w == b"\r\n\r\n");
    if complete(&already) {
        return Some(already);
    }
    let mut buf = bytes::BytesMut::with_capacity(SMALL.max(already.len()));
    buf.extend_from_slice(&already);
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) if complete(&buf) => return Some(buf.freeze()),
            Ok(Ok(_)) => {
                if buf.capacity() == buf.len() {
                    return Some(buf.freeze());
                }
            }
        }
    }
}

fn reject(runtime: &Runtime, reason: &str) {
    runtime.metrics.rejected.count(reason);
}

/// The running listeners, reconciled by name on every (re)load: new ones start, removed ones
/// stop accepting and drain, an address change restarts one, other changes apply to new
/// connections.
pub struct Listeners {
    running: std::sync::Mutex<Vec<Running>>,
    runtime: Arc<Runtime>,
    tracker: TaskTracker,
    /// Sockets taken over from an old process (an upgrade), adopted instead of bound.
    inherited: Arc<inherit::Inherited>,
}

struct Running {
    config: ListenerConfig,
    addr: SocketAddr,
    settings: Arc<arc_swap::ArcSwap<ListenerSettings>>,
    stop: watch::Sender<bool>,
    stop_accepting: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// A second descriptor of the listening socket, to offer to a new process (an upgrade);
    /// dropped with this entry, when the listener stops.
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
}

/// A listening socket as offered to a new process: what it is, and a descriptor of it.
#[cfg(unix)]
pub struct OfferedSocket {
    pub kind: inherit::SocketKind,
    pub name: String,
    pub address: String,
    pub bound: SocketAddr,
    pub fd: std::os::fd::OwnedFd,
}

impl Listeners {
    pub fn new(runtime: Arc<Runtime>, tracker: TaskTracker) -> Self {
        Self::inheriting(runtime, tracker, Arc::default())
    }

    /// Listeners that adopt the `inherited` sockets their config's addresses match.
    pub fn inheriting(
        runtime: Arc<Runtime>,
        tracker: TaskTracker,
        inherited: Arc<inherit::Inherited>,
    ) -> Self {
        Listeners {
            running: std::sync::Mutex::new(Vec::new()),
            runtime,
            tracker,
            inherited,
        }
    }

    fn start(&self, cfg: &ListenerConfig) -> std::io::Result<Running> {
        let taken = self
            .inherited
            .take(inherit::SocketKind::Listener, &cfg.name, &cfg.address);
        let adopted = taken.is_some();
        let tcp = match taken {
            Some(s) => inherit::adopt(s)?,
            None => bind(&cfg.address)?,
        };
        let addr = tcp.local_addr()?;
        #[cfg(unix)]
        let fd = std::os::fd::AsFd::as_fd(&tcp).try_clone_to_owned()?;
        let settings = Arc::new(arc_swap::ArcSwap::from_pointee(ListenerSettings::new(
            cfg,
            &self.runtime,
        )));
        let (stop, stop_rx) = watch::channel(false);
        let (stop_accepting, stop_accepting_rx) = watch::channel(false);
        let accept = AcceptLoop {
            listener: tcp,
            settings: settings.clone(),
            runtime: self.runtime.clone(),
            shutdown: stop_rx,
            stop_accepting: stop_accepting_rx,
            tracker: self.tracker.clone(),
            open: Arc::new(AtomicUsize::new(0)),
        };
        tracing::info!(listener = %cfg.name, address = %addr, taken_over = adopted, "listening");
        Ok(Running {
            config: cfg.clone(),
            addr,
            settings,
            stop,
            stop_accepting,
            task: tokio::spawn(accept.run()),
            #[cfg(unix)]
            fd,
        })
    }

    /// Makes the running listeners match `configs`. Binding errors are returned after the
    /// listeners that could start have started.
    pub fn reconcile(&self, configs: &[ListenerConfig]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = Vec::new();
        let mut old: Vec<Running> = std::mem::take(&mut *running);
        for cfg in configs {
            match old.iter().position(|r| r.config.name == cfg.name) {
                Some(i) if old[i].config.address == cfg.address => {
                    let mut r = old.swap_remove(i);
                    if r.config != *cfg {
                        r.settings
                            .store(Arc::new(ListenerSettings::new(cfg, &self.runtime)));
                        r.config = cfg.clone();
                    }
                    next.push(r);
                }
                found => {
                    if let Some(i) = found {
                        let r = old.swap_remove(i);
                        let _ = r.stop.send(true);
                    }
                    match self.start(cfg) {
                        Ok(r) => next.push(r),
                        Err(e) => errors.push(format!(
                            "listener {:?}: cannot listen on {}: {e}",
                            cfg.name, cfg.address
                        )),
                    }
                }
            }
        }
        for r in old {
            tracing::info!(listener = %r.config.name, "listener removed: draining its connections");
            let _ = r.stop.send(true);
        }
        *running = next;
        errors
    }

    pub fn addrs(&self) -> Vec<(String, SocketAddr)> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .map(|r| (r.config.name.clone(), r.addr))
            .collect()
    }

    /// Every listening socket, for a new process to take over (each descriptor a new one).
    #[cfg(unix)]
    pub fn offer(&self) -> std::io::Result<Vec<OfferedSocket>> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running
            .iter()
            .map(|r| {
                Ok(OfferedSocket {
                    kind: inherit::SocketKind::Listener,
                    name: r.config.name.clone(),
                    address: r.config.address.clone(),
                    bound: r.addr,
                    fd: r.fd.try_clone()?,
                })
            })
            .collect()
    }

    /// Stops accepting on every listener (closing its socket here: a new process has its
    /// own descriptor of it) and leaves their connections be.
    pub async fn stop_accepting(&self) {
        let tasks: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running
                .iter_mut()
                .map(|r| {
                    let _ = r.stop_accepting.send(true);
                    std::mem::replace(&mut r.task, tokio::spawn(async {}))
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Stops every listener; their connections get graceful shutdown.
    pub async fn stop_all(&self) {
        let tasks: Vec<_> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running
                .drain(..)
                .map(|r| {
                    let _ = r.stop.send(true);
                    r.task
                })
                .collect()
        };
        for t in tasks {
            let _ = t.await;
        }
    }
}
