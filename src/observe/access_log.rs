//! One JSON line per request. Records are built on the request path and written when the
//! response body ends (so bytes and duration are final). Lines go through a bounded channel to
//! a writer thread: the event loop never blocks on stdout; when the channel is full a line is
//! dropped and counted rather than stalling traffic.

use http::{HeaderValue, Method};
use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Where access-log lines go. Cheap to clone.
#[derive(Clone)]
pub struct AccessLogSink {
    tx: SyncSender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLogSink {
    /// Lines to stdout.
    pub fn stdout() -> Self {
        Self::to_writer(Box::new(std::io::stdout()))
    }

    /// Lines to any writer (tests capture them this way).
    pub fn to_writer(out: Box<dyn Write + Send>) -> Self {
        let (tx, rx) = sync_channel::<Vec<u8>>(65_536);
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::with_capacity(64 << 10, out);
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(&line);
                    // Batch whatever else is queued, then flush once.
                    while let Ok(line) = rx.try_recv() {
                        let _ = out.write_all(&line);
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; access log disabled");
        }
        AccessLogSink {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    fn send(&self, line: Vec<u8>) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What is known about one request; written once, when it is dropped via [`AccessRecord::emit`].
pub struct AccessRecord {
    pub sink: AccessLogSink,
    pub start: Instant,
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub trace_id: u128,
    pub client: SocketAddr,
    pub method: Method,
    pub host: String,
    pub path: String,
    pub route: Option<Arc<str>>,
    pub cluster: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub status: u16,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: u64,
    pub upstream_duration: Option<Duration>,
    pub error: Option<&'static str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    trace_id: String,
    client: String,
    method: &'a str,
    host: &'a str,
    path: &'a str,
    route: Option<&'a str>,
    cluster: Option<&'a str>,
    endpoint: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    upstream_ms: Option<f64>,
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
            client: self.client.ip().to_string(),
            method: self.method.as_str(),
            host: &self.host,
            path: &self.path,
            route: self.route.as_deref(),
            cluster: self.cluster.as_deref(),
            endpoint: self.endpoint.as_deref(),
            status: self.status,
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed)),
            bytes_out: self.bytes_out,
            duration_ms: ms(self.start.elapsed()),
            upstream_ms: self.upstream_duration.map(ms),
            error: self.error,
        };
        let mut buf = Vec::with_capacity(384);
        if serde_json::to_writer(&mut buf, &line).is_ok() {
            buf.push(b'\n');
            self.sink.send(buf);
        }
    }
}
