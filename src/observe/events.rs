//! State-transition events: health changes, breaker transitions, ejections, slow start done,
//! drains. Each is one flat JSON line on stderr and a message on an in-process broadcast
//! channel that the admin API and dashboard stream.

use serde_json::{Map, Value};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::broadcast;

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
            let mut line = v.to_string();
            line.push('\n');
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        let _ = self.tx.send(Arc::new(v));
    }
}
