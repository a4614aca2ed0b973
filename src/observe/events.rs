//! State-transition events: health changes, breaker transitions, ejections, slow start done,
//! drains. Each is one flat JSON line on stderr and a message on an in-process broadcast
//! channel that the admin API and dashboard stream. Lines are handed to a writer thread through
//! a bounded queue (a request task never blocks on stderr); when it is full they are dropped and
//! counted ([`dropped`]).

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Event lines dropped because the writer fell behind.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Msg {
    Line(String),
    /// Answered once every line queued before it is written.
    Flush(SyncSender<()>),
}

/// The one stderr writer for event lines (started on first use).
fn writer() -> Option<&'static SyncSender<Msg>> {
    static TX: OnceLock<Option<SyncSender<Msg>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<Msg>(4096);
        std::thread::Builder::new()
            .name("gatehouse-events".into())
            .spawn(move || {
                let err = std::io::stderr();
                for msg in rx {
                    match msg {
                        Msg::Line(line) => {
                            let _ = err.lock().write_all(line.as_bytes());
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Waits (up to `within`) until every event line queued so far is written (on shutdown).
pub fn flush(within: std::time::Duration) {
    if let Some(tx) = writer() {
        let (done_tx, done) = sync_channel(1);
        if tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done.recv_timeout(within);
        }
    }
}

/// The event bus. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Value>>,
    log: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(true)
    }
}

impl Events {
    /// `log` writes each event to stderr as well.
    pub fn new(log: bool) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Events { tx, log }
    }

    /// How many subscribers are listening (the metrics feeder is always one).
    pub fn receivers(&self) -> usize {
        self.tx.receiver_count()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }

    /// Publishes on the channel only (no log line): the per-second traffic summary.
    pub fn broadcast(&self, v: Value) {
        let _ = self.tx.send(Arc::new(v));
    }

    /// Publishes `{"time":..., "event": name, "cluster":..., "endpoint":..., ...fields}`.
    pub fn emit(&self, name: &str, cluster: &str, endpoint: Option<&str>, fields: Value) {
        let mut m = Map::new();
        m.insert(
            "time".into(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        m.insert("event".into(), name.into());
        if !cluster.is_empty() {
            m.insert("cluster".into(), cluster.into());
        }
        if let Some(e) = endpoint {
            m.insert("endpoint".into(), e.into());
        }
        if let Value::Object(extra) = fields {
            m.extend(extra);
        }
        let v = Value::Object(m);
        if self.log {
            // On stderr, in the operational log's shape (`timestamp`, `level`, `message`,
            // `target`, then the fields), so one parser reads every line.
            let mut flat = Map::new();
            if let Value::Object(m) = &v {
                flat.insert("timestamp".into(), m["time"].clone());
                flat.insert("level".into(), "INFO".into());
                flat.insert("message".into(), name.into());
                flat.insert("target".into(), "gatehouse::events".into());
                flat.extend(
                    m.iter()
                        .filter(|(k, _)| *k != "time")
                        .map(|(k, v)| (k.clone(), v.clone())),
                );
            }
            let mut line = Value::Object(flat).to_string();
            line.push('\n');
            match writer() {
                Some(tx) => match tx.try_send(Msg::Line(line)) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                },
                None => {
                    let _ = std::io::stderr().lock().write_all(line.as_bytes());
                }
            }
        }
        let _ = self.tx.send(Arc::new(v));
    }
}
