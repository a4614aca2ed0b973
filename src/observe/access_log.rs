//! One JSON line per request. Records are built on the request path and written when the
//! response body ends (so bytes and duration are final). Lines are appended to a shared
//! buffer that a writer thread drains every 50 ms, or sooner once 64 KiB are waiting: waking
//! a thread per line cost more CPU than the proxying itself. The event loop never blocks on
//! stdout; past 8 MiB waiting, lines are dropped and counted rather than stalling traffic.

use http::{HeaderValue, Method};
use serde::Serialize;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

const WAKE_AT: usize = 64 << 10;
const MAX_PENDING: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(50);

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
    dropped: AtomicU64,
}

impl Shared {
    /// Writes whatever is pending. Called by the writer thread and by [`AccessLogSink::flush`].
    fn drain(&self) {
        let batch = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *p)
        };
        if !batch.is_empty() {
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = out.write_all(&batch);
            let _ = out.flush();
        }
    }
}

/// Where access-log lines go. Cheap to clone.
#[derive(Clone)]
pub struct AccessLogSink {
    shared: Arc<Shared>,
}

impl AccessLogSink {
    /// Lines to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Lines to any writer (tests capture them this way).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            wake: Condvar::new(),
            out: Mutex::new(out),
            dropped: AtomicU64::new(0),
        });
        // The thread holds only a weak reference, so it ends once every sink is gone.
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || loop {
                let Some(shared) = weak.upgrade() else { break };
                {
                    let p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = shared.wake.wait_timeout(p, FLUSH_EVERY);
                }
                shared.drain();
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; lines are written on flush only");
        }
        AccessLogSink { shared }
    }

    fn send(&self, line: &Line<'_>) {
        let mut p = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_PENDING {
            drop(p);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = p.len();
        if serde_json::to_writer(&mut *p, line).is_ok() {
            p.push(b'\n');
        } else {
            p.truncate(before);
        }
        if p.len() >= WAKE_AT && before < WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every pending line now (on shutdown).
    pub fn flush(&self) {
        self.shared.drain();
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// What is known about one request; written once, when it is dropped via [`AccessRecord::emit`].
pub struct AccessRecord {
    pub sink: AccessLogSink,
    pub start: Instant,
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub trace_id: u128,
    /// The client as resolved from trusted `X-Forwarded-For` (else the peer).
    pub client: IpAddr,
    pub peer: SocketAddr,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub consumer: Option<Arc<str>>,
    pub status: u16,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    pub upstream_duration: Option<Duration>,
    pub retries: u32,
    pub error: Option<&'static str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    trace_id: String,
    client: String,
    peer: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    endpoint: Option<&'a str>,
    consumer: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
    retries: u32,
    error: Option<&'a str>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl AccessRecord {
    pub fn emit(&self) {
        let line = Line {
            time: humantime::format_rfc3339_millis(self.time).to_string(),
            request_id: self.request_id.to_str().unwrap_or(""),
            trace_id: format!("{:032x}", self.trace_id),
            client: self.client.to_string(),
            peer: self.peer.to_string(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            route: self.route.as_deref(),
            cluster: self.cluster.as_deref(),
            endpoint: self.endpoint.as_deref(),
            consumer: self.consumer.as_deref(),
            status: self.status,
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed)),
            bytes_out: self.bytes_out,
            duration_ms: ms(self.start.elapsed()),
            upstream_ms: self.upstream_duration.map(ms),
            retries: self.retries,
            error: self.error,
        };
        self.sink.send(&line);
    }
}
