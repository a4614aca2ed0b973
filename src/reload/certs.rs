//! Certificate hot reload: the directories holding TLS listeners' files are watched (editors
//! save by rename, Kubernetes and certbot swap symlinks), and any change there re-reads every
//! TLS listener's pairs. A listener whose files all load serves them to new handshakes; one
//! with a bad file keeps what it has (`certificate_reload_failed`). Established connections
//! keep the certificate they began with either way.

use crate::runtime::Runtime;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the watched directories are matched to the config's (a reload can add a TLS
/// listener or move its files).
const RESYNC: Duration = Duration::from_secs(2);

/// Starts watching; the task ends with the runtime.
pub fn watch(runtime: &Arc<Runtime>) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.try_send(());
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files; they are re-read on config reloads only");
            return;
        }
    };
    let weak: Weak<Runtime> = Arc::downgrade(runtime);
    tokio::spawn(async move {
        let mut watched: HashSet<PathBuf> = HashSet::new();
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            let Some(rt) = weak.upgrade() else { break };
            for dir in rt.tls.dirs() {
                if !watched.contains(&dir) {
                    match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                        Ok(()) => {
                            watched.insert(dir);
                        }
                        Err(e) => {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory")
                        }
                    }
                }
            }
            drop(rt);
            tokio::select! {
                got = rx.recv() => {
                    if got.is_none() {
                        break;
                    }
                    // Let a burst of events (write, rename, chmod) settle, then read once.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                    let Some(rt) = weak.upgrade() else { break };
                    rt.tls.reload_files(&rt.events, &rt.metrics);
                }
                _ = tick.tick() => {}
            }
        }
    });
}
