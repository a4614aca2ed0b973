//! Certificate hot reload: the directories holding TLS listeners' files are watched (editors
//! save by rename, Kubernetes and certbot swap symlinks), and a change there re-reads every TLS
//! listener's pairs. A listener whose files all load serves them to new handshakes; one with a
//! bad file keeps what it has (`certificate_reload_failed`). Established connections keep the
//! certificate they began with either way.
//!
//! Two signals, because each misses something: inotify events (at once; but a watch follows a
//! directory's inode, so a directory replaced by a rename or a symlink swap is no longer seen),
//! and every [`RESYNC`] a `stat` of each file (inode, size, modification time) and of each
//! directory, which sees every swap and re-arms the watch of a replaced directory. Reads of the
//! files (the gateway's own, or anyone's) are not changes: only writes, creations, removals and
//! renames count, or the gateway's reading would trigger its next reload.

use crate::runtime::Runtime;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often files and directories are compared with what was last seen.
const RESYNC: Duration = Duration::from_secs(2);

/// What identifies a file's contents cheaply: device, inode, size, modification time.
type Seen = Option<(u64, u64, u64, std::time::SystemTime)>;

fn seen(path: &std::path::Path) -> Seen {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.len(), m.modified().ok()?))
}

/// Whether a notify event is a change of a file (not a read of one).
fn is_change(e: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        e.kind,
        EventKind::Create(_)
            | EventKind::Modify(_)
            | EventKind::Remove(_)
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}

/// Starts watching; the task ends with the runtime.
pub fn watch(runtime: &Arc<Runtime>) {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|e| is_change(&e)) {
            let _ = tx.try_send(());
        }
    });
    let mut watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch certificate files; they are checked every 2 s and on config reloads");
            return;
        }
    };
    let weak: Weak<Runtime> = Arc::downgrade(runtime);
    tokio::spawn(async move {
        let mut dirs: HashMap<PathBuf, Seen> = HashMap::new();
        let mut files: HashMap<PathBuf, Seen> = HashMap::new();
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            let Some(rt) = weak.upgrade() else { break };
            // (Re)arm the watch of a directory that is new or was replaced.
            for dir in rt.tls.dirs() {
                let now = seen(&dir);
                if dirs.get(&dir) != Some(&now) {
                    let _ = watcher.unwatch(&dir);
                    if let Err(e) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch a certificate directory");
                    }
                    dirs.insert(dir, now);
                }
            }
            let mut changed = false;
            for f in rt.tls.files() {
                let now = seen(&f);
                match files.insert(f, now) {
                    Some(before) if before != now => changed = true,
                    _ => {}
                }
            }
            if changed {
                rt.tls.reload_files(&rt.events, &rt.metrics);
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
