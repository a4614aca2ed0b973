//! Request coalescing: the first miss of a key goes to the backend (the leader); later misses
//! of the same key wait for it (bounded), then look again. The leader's guard going away —
//! response stored, not storable, or failed — wakes them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Default)]
pub struct Coalescer {
    in_flight: Mutex<HashMap<String, watch::Receiver<()>>>,
}

/// Who fetches a key.
pub enum Turn {
    /// This request: the others wait until the guard drops.
    Lead(Leader),
    /// Another request is fetching it: wait on this, then look again.
    Follow(watch::Receiver<()>),
}

pub struct Leader {
    coalescer: Arc<Coalescer>,
    key: String,
    _done: watch::Sender<()>,
}

impl Coalescer {
    pub fn join(self: &Arc<Self>, key: &str) -> Turn {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = map.get(key) {
            return Turn::Follow(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        map.insert(key.to_string(), rx);
        Turn::Lead(Leader {
            coalescer: self.clone(),
            key: key.to_string(),
            _done: tx,
        })
    }

    /// Keys being fetched now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.in_flight.lock().unwrap().len()
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        // Removed before the sender drops (fields drop after this), so a request that arrives
        // after the wake-up leads a new fetch instead of waiting on a finished one.
        self.coalescer
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Waits until the leader is done, or `timeout`.
pub async fn wait(mut rx: watch::Receiver<()>, timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, rx.changed()).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn followers_wake_when_the_leader_is_done_or_at_their_deadline() {
        let c = Arc::new(Coalescer::default());
        let Turn::Lead(leader) = c.join("k") else {
            panic!("first is the leader")
        };
        let Turn::Follow(rx) = c.join("k") else {
            panic!("second follows")
        };
        assert!(matches!(c.join("other"), Turn::Lead(_)));
        let waiting = tokio::spawn(wait(rx, Duration::from_secs(60)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(leader);
        waiting.await.unwrap();
        assert_eq!(c.len(), 0);
        assert!(matches!(c.join("k"), Turn::Lead(_)), "a new fetch after it");

        let Turn::Lead(_stuck) = c.join("s") else {
            panic!()
        };
        let Turn::Follow(rx) = c.join("s") else {
            panic!()
        };
        let start = tokio::time::Instant::now();
        wait(rx, Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
