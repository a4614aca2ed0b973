//! State-transition events: health changes, breaker transitions, ejections, slow start done,
//! drains. Each is one flat JSON line on stderr and a message on an in-process broadcast
//! channel that the admin API and dashboard stream. Lines are handed to a writer thread through
//! a bounded queue (a request task never blocks on stderr); when it is full they are dropped and
//! counted ([`dropped`]). Every message is numbered (`seq`) and the recent ones kept
//! (`history.rs`), so a stream can resume after a number with no gap and no duplicate.

use super::history::{Kept, Kind, Rings, Since};
use serde_json::{Map, Value};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
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

/// A message's first fields: `{"time": now (RFC 3339, ms), "event": name}`.
pub fn stamped(name: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "time".into(),
        humantime::format_rfc3339_millis(std::time::SystemTime::now())
            .to_string()
            .into(),
    );
    m.insert("event".into(), name.into());
    m
}

/// The event bus. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: broadcast::Sender<Arc<Value>>,
    log: bool,
    /// Numbering, the kept messages and the send happen under this one lock, so the rings and
    /// the channel agree on the order (see `subscribe_since`). A transition or a summary holds
    /// it for one serialization; nothing on the request path waits on it otherwise.
    rings: Arc<Mutex<Rings>>,
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
        Events {
            tx,
            log,
            rings: Arc::default(),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Value>> {
        self.tx.subscribe()
    }

    /// A receiver of every message after `after`, with the kept ones it would have missed:
    /// taken under the lock that numbers and sends, so each message is in exactly one of the
    /// two (`Since::last` is the newest number not on the receiver).
    pub fn subscribe_since(&self, after: u64) -> (Since, broadcast::Receiver<Arc<Value>>) {
        let rings = self.lock();
        let rx = self.tx.subscribe();
        (rings.since(after), rx)
    }

    /// The kept summaries and transitions numbered above `after`.
    pub fn history(&self, after: u64) -> Since {
        self.lock().since(after)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `m`, keeps its text and sends it.
    fn publish(&self, kind: Kind, name: &str, mut m: Map<String, Value>) {
        let mut rings = self.lock();
        let seq = rings.number();
        m.insert("seq".into(), seq.into());
        let v = Value::Object(m);
        rings.keep(
            kind,
            Kept {
                seq,
                name: name.into(),
                json: v.to_string().into(),
            },
        );
        let _ = self.tx.send(Arc::new(v));
    }

    /// The per-second traffic summary: kept and published, never logged.
    pub fn traffic(&self, summary: Map<String, Value>) {
        self.publish(Kind::Traffic, "traffic", summary);
    }

    /// Publishes `{"time":..., "event": name, "cluster":..., "endpoint":..., ...fields}`.
    pub fn emit(&self, name: &str, cluster: &str, endpoint: Option<&str>, fields: Value) {
        let mut m = stamped(name);
        if !cluster.is_empty() {
            m.insert("cluster".into(), cluster.into());
        }
        if let Some(e) = endpoint {
            m.insert("endpoint".into(), e.into());
        }
        if let Value::Object(extra) = fields {
            m.extend(extra);
        }
        if self.log {
            // On stderr, in the operational log's shape (`timestamp`, `level`, `message`,
            // `target`, then the fields), so one parser reads every line.
            let mut flat = Map::new();
            flat.insert("timestamp".into(), m["time"].clone());
            flat.insert("level".into(), "INFO".into());
            flat.insert("message".into(), name.into());
            flat.insert("target".into(), "gatehouse::events".into());
            flat.extend(
                m.iter()
                    .filter(|(k, _)| *k != "time")
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
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
        self.publish(Kind::Transition, name, m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_resumed_subscriber_gets_each_message_once_in_order() {
        let events = Events::new(false);
        events.emit("a", "c", None, json!({}));
        events.traffic(Map::new());
        events.emit("b", "c", Some("e"), json!({"to": "OPEN"}));
        let (since, mut rx) = events.subscribe_since(1);
        assert_eq!(since.last, 3);
        let kept = since.merged();
        let seqs: Vec<u64> = kept.iter().map(|k| k.seq).collect();
        assert_eq!(seqs, [2, 3]);
        assert_eq!(&*kept[0].name, "traffic");
        let b: Value = serde_json::from_str(&kept[1].json).unwrap();
        assert_eq!(b["event"], "b");
        assert_eq!(b["seq"], 3);
        assert_eq!(b["endpoint"], "e");
        events.emit("c", "c", None, json!({}));
        assert_eq!(rx.try_recv().unwrap()["seq"], 4, "the next one comes live");
        assert!(rx.try_recv().is_err());
        let h = events.history(0);
        assert_eq!((h.last, h.traffic.len(), h.events.len()), (4, 1, 3));
    }
}
