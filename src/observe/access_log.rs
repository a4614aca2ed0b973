//! One JSON line per request. Records are built on the request path and written when the
//! response body ends (so bytes and duration are final). Lines are appended to a shared
//! buffer that a writer thread drains every 50 ms, or sooner once 64 KiB are waiting: waking
//! a thread per line cost more CPU than the proxying itself. The event loop never blocks on
//! stdout; past 8 MiB waiting, lines are dropped and counted rather than stalling traffic.
//! Which lines and fields are written (`access_log:` in the config) is kept in atomics that a
//! reload updates; a file destination is reopened on `SIGUSR1`.

use http::{HeaderValue, Method};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

const WAKE_AT: usize = 64 << 10;
const MAX_PENDING: usize = 8 << 20;
const FLUSH_EVERY: Duration = Duration::from_millis(50);
const KEEP_AT_MOST: usize = 1 << 20;

struct Shared {
    pending: Mutex<Vec<u8>>,
    wake: Condvar,
    out: Mutex<Out>,
    dropped: AtomicU64,
    /// The file lines go to, when they go to one (reopened by [`AccessLogSink::reopen`]).
    file: Option<std::path::PathBuf>,
    /// Lines below this status are not written.
    min_status: AtomicU16,
    /// Lines below 500 are written when a random u64 is below this (`u64::MAX`: all).
    sample_below: AtomicU64,
    /// Bit i set: `FIELDS[i]` is written.
    fields: AtomicU32,
}

/// The destination and the buffer that takes `pending`'s place while a batch is written: the
/// two buffers swap, so the request path appends into one that already has room (a fresh
/// empty one grew by doubling to 64 KiB and more after every drain: reallocations and large
/// extents in the allocator, ~400 instructions per line).
struct Out {
    dest: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

impl Shared {
    /// Writes whatever is pending. Called by the writer thread and by [`AccessLogSink::flush`].
    fn drain(&self) {
        // The destination's lock first: it holds the spare, so two drains (the writer thread
        // and a flush) take turns. `send` takes only `pending`'s lock, never this one.
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = std::mem::take(&mut out.spare);
        std::mem::swap(
            &mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()),
            &mut batch,
        );
        if !batch.is_empty() {
            let _ = out.dest.write_all(&batch);
            let _ = out.dest.flush();
        }
        batch.clear();
        // A burst that left megabytes waiting does not keep them.
        if batch.capacity() > KEEP_AT_MOST {
            batch = Vec::with_capacity(WAKE_AT * 2);
        }
        out.spare = batch;
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
        Self::build(out, None)
    }

    /// Lines appended to `path` (created if missing, mode 0640).
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::build(
            Box::new(open_append(path)?),
            Some(path.to_path_buf()),
        ))
    }

    /// Where `access_log:` sends lines: `None` when it is `off`.
    pub fn for_config(cfg: &gatehouse_config::AccessLog) -> std::io::Result<Option<Self>> {
        use gatehouse_config::AccessOutput;
        let sink = match (cfg.output, &cfg.path) {
            (AccessOutput::Off, _) => return Ok(None),
            (AccessOutput::File, Some(p)) => Self::file(std::path::Path::new(p))?,
            _ => Self::stdout(),
        };
        sink.configure(cfg);
        Ok(Some(sink))
    }

    /// Applies the line filter and field choice of `cfg` (at start and on every reload).
    pub fn configure(&self, cfg: &gatehouse_config::AccessLog) {
        let s = &self.shared;
        s.min_status.store(cfg.min_status, Ordering::Relaxed);
        let below = if cfg.sample.0 >= 1.0 {
            u64::MAX
        } else {
            (cfg.sample.0.max(0.0) * u64::MAX as f64) as u64
        };
        s.sample_below.store(below, Ordering::Relaxed);
        s.fields.store(cfg.field_mask(), Ordering::Relaxed);
    }

    /// Reopens the file (logrotate moved it away): lines already pending are written to the
    /// old one first (they were logged before the rotation), later ones to the new. A no-op
    /// for stdout.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = &self.shared.file else {
            return Ok(());
        };
        let fresh = open_append(path)?;
        self.shared.drain();
        self.shared
            .out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dest = Box::new(fresh);
        Ok(())
    }

    fn build(out: Box<dyn Write + Send>, file: Option<std::path::PathBuf>) -> Self {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(WAKE_AT * 2)),
            wake: Condvar::new(),
            out: Mutex::new(Out {
                dest: out,
                spare: Vec::with_capacity(WAKE_AT * 2),
            }),
            dropped: AtomicU64::new(0),
            file,
            min_status: AtomicU16::new(0),
            sample_below: AtomicU64::new(u64::MAX),
            fields: AtomicU32::new(u32::MAX),
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

    /// Appends one finished line (with its newline) to the shared buffer.
    fn send(&self, line: &[u8]) {
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
        p.extend_from_slice(line);
        if p.len() >= WAKE_AT && before < WAKE_AT {
            self.shared.wake.notify_one();
        }
    }

    /// Writes every pending line now (on shutdown), waiting at most `within`: a stdout nobody
    /// reads must not hold the process past its drain.
    pub fn flush(&self, within: Duration) -> bool {
        let shared = self.shared.clone();
        let (done, wait) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("gatehouse-access-log-flush".into())
            .spawn(move || {
                shared.drain();
                let _ = done.send(());
            });
        spawned.is_ok() && wait.recv_timeout(within).is_ok()
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// What opening `access_log.path` at start would find, for `check` (which must not create it):
/// a missing directory, or a directory where the file should be.
pub fn preflight(config: &gatehouse_config::Config) -> Vec<(String, String)> {
    let cfg = &config.access_log;
    let Some(path) = cfg
        .path
        .as_deref()
        .filter(|_| cfg.output == gatehouse_config::AccessOutput::File)
    else {
        return Vec::new();
    };
    let path = std::path::Path::new(path);
    let problem = if path.is_dir() {
        Some(format!("{} is a directory", path.display()))
    } else {
        match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) if !dir.is_dir() => {
                Some(format!("the directory {} does not exist", dir.display()))
            }
            _ => None,
        }
    };
    problem
        .map(|m| vec![("access_log.path".to_string(), m)])
        .unwrap_or_default()
}

fn open_append(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
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
    /// The canonical host (shares the request's bytes).
    pub host: HeaderValue,
    /// The request target as routed; its path is logged (no copy per request).
    pub uri: http::Uri,
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
    /// The cache filter's result (`hit`, `miss`, `stale`, `revalidated`, `bypass`), on a route
    /// that has one.
    pub cache: Option<&'static str>,
    /// The connection's TLS, on a TLS listener (shared by its requests).
    pub tls: Option<Arc<TlsFacts>>,
}

/// What the access log says of a TLS connection.
pub struct TlsFacts {
    pub version: &'static str,
    pub cipher: &'static str,
    pub sni: Option<Box<str>>,
    /// The verified client certificate's subject (mTLS).
    pub client_subject: Option<Box<str>>,
}

/// Appends `n` in decimal (no formatting machinery: this runs for every field of every line).
fn push_int(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8; 16]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Into a buffer of its own, then one copy: a push per digit checked the capacity 32 times.
    let mut text = [0u8; 32];
    for (pair, b) in text.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out.extend_from_slice(&text);
}

/// Each octet's decimal digits, left-aligned, and how many there are (the last byte).
static OCTETS: [[u8; 4]; 256] = {
    let mut t = [[0u8; 4]; 256];
    let mut i = 0;
    while i < 256 {
        let o = i as u8;
        t[i] = match o {
            100.. => [b'0' + o / 100, b'0' + o / 10 % 10, b'0' + o % 10, 3],
            10..=99 => [b'0' + o / 10, b'0' + o % 10, 0, 2],
            _ => [b'0' + o, 0, 0, 1],
        };
        i += 1;
    }
    t
};

/// Appends an IP address as `Display` writes it (IPv4 without the formatting machinery).
fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into a buffer of its own from a table, then one copy: a push per octet and dot
            // checked the line's capacity seven times (~280 instructions an address, two per
            // line).
            // The masks change nothing (an address is at most 15 bytes); they let the compiler
            // see every index is in bounds.
            let mut text = [0u8; 20];
            let mut n = 0;
            for o in v4.octets() {
                let d = OCTETS[usize::from(o)];
                let at = n & 15;
                text[at..at + 4].copy_from_slice(&[d[0], d[1], d[2], b'.']);
                n = at + usize::from(d[3]);
                text[n & 15] = b'.';
                n += 1;
            }
            out.extend_from_slice(&text[..(n - 1).min(15)]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The bytes a JSON string may hold as they are, in the fast path of [`json_str`]: printable
/// ASCII but `"` and `\`. A table: one load per byte instead of four comparisons.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        t[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    t
};

/// Whether every byte of `s` is [`PLAIN`]: eight bytes at a time (one `u64`, a few operations
/// for all eight instead of a table load each), the tail by the table.
fn is_plain(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Nonzero when some byte of `x` is below `n` (n <= 0x80): the lowest such byte always
    // borrows, so the test is exact for "any".
    const fn below(x: u64, n: u8) -> u64 {
        x.wrapping_sub(ONES * n as u64) & !x & HIGH
    }
    const fn has(x: u64, b: u8) -> u64 {
        below(x ^ (ONES * b as u64), 1)
    }
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0; 8];
        w.copy_from_slice(c);
        let w = u64::from_ne_bytes(w);
        if (below(w, 0x20) | (w & HIGH) | has(w, 0x7f) | has(w, b'"') | has(w, b'\\')) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| PLAIN[usize::from(b)])
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Most values (methods, paths, names, addresses) need no escaping: copied as they are.
    if is_plain(s.as_bytes()) {
        push_quoted(out, s.as_bytes());
        return;
    }
    // serde_json's escaping, straight into the buffer.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `"` + `bytes` + `"`, with one reservation.
fn push_quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    out.extend_from_slice(bytes);
    out.push(b'"');
}

/// Appends a header's value as a JSON string; one that is not visible ASCII as `""`.
fn json_header(out: &mut Vec<u8>, v: &HeaderValue) {
    // Plain bytes are visible ASCII: `to_str` (another pass over them) cannot fail.
    if is_plain(v.as_bytes()) {
        push_quoted(out, v.as_bytes());
    } else {
        json_str(out, v.to_str().unwrap_or(""));
    }
}

/// Appends `n` (below 1000) as three digits, zero-padded.
fn push_3digits(out: &mut Vec<u8>, n: u32) {
    let n = n.min(999);
    out.extend_from_slice(&[
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

fn json_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Milliseconds with three decimals, as the lines have always shown them.
fn json_ms(out: &mut Vec<u8>, d: Duration) {
    let us = d.as_micros() as u64;
    push_int(out, us / 1000);
    out.push(b'.');
    push_3digits(out, (us % 1000) as u32);
}

/// RFC 3339 with milliseconds, UTC (`2026-12-01T10:25:37.395Z`). The part up to the second is
/// formatted once per second per thread.
fn json_time(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, [u8; 19])> = const { std::cell::RefCell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = humantime::format_rfc3339_seconds(whole).to_string();
            let b = text.as_bytes();
            if b.len() >= 19 {
                c.1.copy_from_slice(&b[..19]);
                c.0 = secs;
            }
        }
        out.push(b'"');
        out.extend_from_slice(&c.1);
        out.push(b'.');
        push_3digits(out, since.subsec_millis());
        out.extend_from_slice(b"Z\"");
    });
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        // Never answered: the client left while the request was on its way (the response body
        // that would have written the line was never made).
        if self.status == 0 {
            self.status = 499;
            self.error.get_or_insert("client_closed");
            self.emit();
        }
    }
}

impl AccessRecord {
    /// Writes this record's line into `out` (one JSON object, no newline), with the fields
    /// whose bit is set in `fields` (bit i: `FIELDS[i]`).
    fn write_line(&self, out: &mut Vec<u8>, fields: u32) {
        // Every chosen field is written as `,"name":value`, and the first comma becomes the
        // `{` at the end: each name is then a copy of a length known when compiling (a few
        // moves, where a length chosen at run time was a `memcpy` call per field).
        let start = out.len();
        out.reserve(512);
        let key = |out: &mut Vec<u8>, bit: u32, lit: &[u8]| -> bool {
            if fields & (1 << bit) == 0 {
                return false;
            }
            out.extend_from_slice(lit);
            true
        };
        if key(out, 0, b",\"time\":") {
            json_time(out, self.time);
        }
        if key(out, 1, b",\"request_id\":") {
            json_header(out, &self.request_id);
        }
        if key(out, 2, b",\"trace_id\":") {
            out.push(b'"');
            push_hex(out, &self.trace_id.to_be_bytes());
            out.push(b'"');
        }
        if key(out, 3, b",\"client\":") {
            out.push(b'"');
            push_ip(out, self.client);
            out.push(b'"');
        }
        if key(out, 4, b",\"peer\":") {
            out.push(b'"');
            match self.peer {
                SocketAddr::V4(a) => push_ip(out, IpAddr::V4(*a.ip())),
                SocketAddr::V6(a) => {
                    out.push(b'[');
                    push_ip(out, IpAddr::V6(*a.ip()));
                    out.push(b']');
                }
            }
            out.push(b':');
            push_int(out, u64::from(self.peer.port()));
            out.push(b'"');
        }
        if key(out, 5, b",\"method\":") {
            json_str(out, self.method.as_str());
        }
        if key(out, 6, b",\"host\":") {
            json_header(out, &self.host);
        }
        if key(out, 7, b",\"path\":") {
            json_str(out, self.uri.path());
        }
        if key(out, 8, b",\"route\":") {
            json_opt(out, self.route.as_deref());
        }
        if key(out, 9, b",\"cluster\":") {
            json_opt(out, self.cluster.as_deref());
        }
        if key(out, 10, b",\"endpoint\":") {
            json_opt(out, self.endpoint.as_deref());
        }
        if key(out, 11, b",\"consumer\":") {
            json_opt(out, self.consumer.as_deref());
        }
        if key(out, 12, b",\"status\":") {
            push_int(out, u64::from(self.status));
        }
        if key(out, 13, b",\"bytes_in\":") {
            let bytes_in = self
                .bytes_in
                .as_ref()
                .map_or(0, |c| c.load(Ordering::Relaxed));
            push_int(out, bytes_in);
        }
        if key(out, 14, b",\"bytes_out\":") {
            push_int(out, self.bytes_out);
        }
        if key(out, 15, b",\"duration_ms\":") {
            json_ms(out, self.start.elapsed());
        }
        if key(out, 16, b",\"upstream_ms\":") {
            match self.upstream_duration {
                Some(d) => json_ms(out, d),
                None => out.extend_from_slice(b"null"),
            }
        }
        if key(out, 17, b",\"retries\":") {
            push_int(out, u64::from(self.retries));
        }
        if key(out, 18, b",\"error\":") {
            json_opt(out, self.error);
        }
        if let Some(c) = self.cache {
            if key(out, 19, b",\"cache\":") {
                json_str(out, c);
            }
        }
        if let Some(t) = &self.tls {
            if key(out, 20, b",\"tls_version\":") {
                json_str(out, t.version);
                out.extend_from_slice(b",\"tls_cipher\":");
                json_str(out, t.cipher);
                out.extend_from_slice(b",\"sni\":");
                json_opt(out, t.sni.as_deref());
                out.extend_from_slice(b",\"client_cert\":");
                json_opt(out, t.client_subject.as_deref());
            }
        }
        match out.get_mut(start) {
            Some(comma) => *comma = b'{',
            None => out.push(b'{'),
        }
        out.push(b'}');
    }

    pub fn emit(&self) {
        let shared = &self.sink.shared;
        if self.status < shared.min_status.load(Ordering::Relaxed) {
            return;
        }
        let below = shared.sample_below.load(Ordering::Relaxed);
        if self.status < 500 && below != u64::MAX && fastrand::u64(..) >= below {
            return;
        }
        let fields = shared.fields.load(Ordering::Relaxed);
        // Serialized outside the shared buffer's lock, into a reused per-thread buffer.
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|l| {
            let mut l = l.borrow_mut();
            l.clear();
            self.write_line(&mut l, fields);
            l.push(b'\n');
            self.sink.send(&l);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(client: &str, peer: &str) -> AccessRecord {
        AccessRecord {
            sink: AccessLogSink::to_writer(Box::new(std::io::sink())),
            start: Instant::now(),
            time: SystemTime::UNIX_EPOCH,
            request_id: HeaderValue::from_static("id-1"),
            trace_id: 0x0af7651916cd43dd8448eb211c80319c,
            client: client.parse().unwrap(),
            peer: peer.parse().unwrap(),
            method: Method::GET,
            host: HeaderValue::from_static("gw.test"),
            uri: http::Uri::from_static("/a?b=1"),
            route: Some("r".into()),
            cluster: None,
            endpoint: None,
            consumer: None,
            tls: None,
            status: 503,
            bytes_in: Some(Arc::new(AtomicU64::new(17))),
            bytes_out: 1234567890123,
            upstream_duration: None,
            retries: 2,
            cache: None,
            error: Some("no_eligible_endpoint"),
        }
    }

    #[test]
    fn a_line_is_json_with_every_field_as_display_would_write_it() {
        for (client, peer) in [
            ("10.0.0.7", "127.0.0.1:40001"),
            ("2001:db8::1", "[::1]:8080"),
            ("0.0.0.0", "255.255.255.255:65535"),
        ] {
            let r = record(client, peer);
            let mut out = Vec::new();
            r.write_line(&mut out, u32::MAX);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
            assert_eq!(v["client"], client);
            assert_eq!(v["peer"], peer);
            assert_eq!(v["path"], "/a");
            assert_eq!(v["status"], 503);
            assert_eq!(v["bytes_in"], 17);
            assert_eq!(v["bytes_out"], 1234567890123u64);
            assert_eq!(v["retries"], 2);
            assert_eq!(v["error"], "no_eligible_endpoint");
            assert_eq!(v["upstream_ms"], serde_json::Value::Null);
        }
    }

    #[test]
    fn strings_times_and_durations_are_written_as_serde_and_fmt_would() {
        for text in [
            "/plain/path",
            "",
            "say \"hi\"",
            "back\\slash",
            "tab\there",
            "\u{7f}",
            "é✓",
        ] {
            let mut out = Vec::new();
            json_str(&mut out, text);
            assert_eq!(out, serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        // Every byte, alone, inside plain text and inside a run of eight (the fast path's
        // word test), against the table.
        for b in 0..=255u8 {
            let plain = PLAIN[usize::from(b)];
            for at in 0..17 {
                let mut text = vec![b'a'; 17];
                text[at] = b;
                assert_eq!(is_plain(&text), plain, "byte {b:#x} at {at}");
                assert_eq!(
                    is_plain(&text[..at + 1]),
                    plain,
                    "byte {b:#x} last of {}",
                    at + 1
                );
            }
        }
        // Every ASCII character, alone and inside plain text (the fast path's table).
        for c in (0u8..0x80).map(char::from) {
            for text in [c.to_string(), format!("ab{c}cd")] {
                let mut out = Vec::new();
                json_str(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap(), "{text:?}");
            }
        }
        for ip in ["1.22.100.9", "9.10.99.200", "100.0.255.1"] {
            let mut out = Vec::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
        for us in [0u64, 7, 999, 1000, 1001, 12_345_678] {
            let mut out = Vec::new();
            json_ms(&mut out, Duration::from_micros(us));
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("{}.{:03}", us / 1000, us % 1000)
            );
        }
        for ms in [0u64, 5, 999, 1_764_585_937_395] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let mut out = Vec::new();
            json_time(&mut out, t);
            let want = format!("\"{}\"", humantime::format_rfc3339_millis(t));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    proptest::proptest! {
        /// Any bytes, several that need escaping among them (a borrow in the word test must
        /// not hide one): the word test agrees with the table.
        #[test]
        fn the_word_test_is_the_table(bytes in proptest::collection::vec(
            proptest::prop_oneof![9 => 0x20u8..0x7f, 1 => proptest::prelude::any::<u8>()],
            0..40,
        )) {
            let table = bytes.iter().all(|&b| PLAIN[usize::from(b)]);
            proptest::prop_assert_eq!(is_plain(&bytes), table);
        }

        /// Every IPv4 address is written as `Display` writes it.
        #[test]
        fn an_ipv4_address_is_written_as_display_writes_it(octets in proptest::prelude::any::<[u8; 4]>()) {
            let ip = IpAddr::from(octets);
            let mut out = Vec::new();
            push_ip(&mut out, ip);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }
}
