//! The old process's side of an upgrade: the unix socket it offers its listening sockets on
//! (`--upgrade-socket PATH`, mode 0600, connections only from its own user or root), and the
//! handover on one connection: the hello with the descriptors, then wait for the new process's
//! `ready`, then `draining`. Any failure before `draining` is sent leaves this process serving.

use super::{wire, Draining, Hello, Ready, Refusal, SocketInfo, PROTOCOL};
use crate::listener::OfferedSocket;
use crate::upgrade::state::EndpointRecord;
use anyhow::{bail, Context as _};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};

/// How long the old process waits for a new one to start and say `ready` (loading a config,
/// certificates and its first discovery answers). Past it the upgrade has failed.
pub const READY_WITHIN: Duration = Duration::from_secs(60);

/// The listening unix socket. Dropped without a handover (SIGTERM), it removes its path if
/// the path is still its own; after a handover the new process owns the path.
pub struct Offer {
    path: PathBuf,
    listener: UnixListener,
    /// (device, inode) of the socket file this process made.
    id: (u64, u64),
    handed_over: bool,
}

/// Refuses `path` for `--upgrade-socket` when it exists and is not a socket (a file the
/// operator cares about must not be replaced), when its directory is missing (found before
/// any listener is bound), and when another gateway is offering its sockets there right now,
/// unless this process is taking over from that very path (`taking_over_from`): replacing a
/// live socket would leave the running gateway with no way to be upgraded, and this one would
/// remove the path when it exits.
pub fn check_path(path: &Path, taking_over_from: Option<&Path>) -> anyhow::Result<()> {
    check_not_a_file(path)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = parent.filter(|d| !d.is_dir()) {
        bail!(
            "--upgrade-socket {}: the directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    if taking_over_from != Some(path) && listening_at(path) {
        bail!(
            "--upgrade-socket {}: another gateway is offering its sockets there; give each \
             gateway a path of its own, or take over from it with --upgrade-from {}",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

fn check_not_a_file(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => bail!(
            "--upgrade-socket {}: exists and is not a socket; refusing to replace it",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Whether a gateway is listening on the unix socket at `path`. Linux lists every unix
/// socket in `/proc/net/unix` with its flags (`00010000`: accepting connections) and the path
/// it was bound at, which for an offer is the temporary name beside `path` that [`Offer::listen`]
/// renamed into place. Read there rather than by connecting, which the running gateway would
/// take for the start of an upgrade.
fn listening_at(path: &Path) -> bool {
    if !std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        return false;
    }
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    let tmp_prefix = format!(".{}.", name.to_string_lossy());
    let ours = |bound: &Path| {
        bound == path
            || (bound.parent() == Some(dir)
                && bound.file_name().is_some_and(|f| {
                    let f = f.to_string_lossy();
                    f.starts_with(&tmp_prefix) && f.ends_with(".tmp")
                }))
    };
    table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let cols: Vec<&str> = line.split_whitespace().collect();
        cols.len() >= 8 && cols[3] == "00010000" && ours(Path::new(cols[7]))
    })
}

impl Offer {
    /// Listens on `path`. A socket already there (a stale one, or the old process's that this
    /// one took over from) is replaced in one step: the socket is made beside it, set to 0600
    /// and renamed over it, so the path never names a socket others may connect to.
    pub fn listen(path: &Path) -> anyhow::Result<Offer> {
        check_not_a_file(path)?;
        let name = path
            .file_name()
            .with_context(|| format!("--upgrade-socket {}: not a file name", path.display()))?;
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let at = |what: &str| format!("--upgrade-socket {}: cannot {what}", path.display());
        let std_listener =
            std::os::unix::net::UnixListener::bind(&tmp).with_context(|| at("listen"))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .with_context(|| at("set its mode to 0600"))?;
        std::fs::rename(&tmp, path).with_context(|| at("move the socket into place"))?;
        let meta = std::fs::metadata(path).with_context(|| at("stat the socket"))?;
        std_listener.set_nonblocking(true)?;
        tracing::info!(path = %path.display(), "offering the listening sockets for an upgrade");
        Ok(Offer {
            path: path.to_path_buf(),
            listener: UnixListener::from_std(std_listener)?,
            id: (meta.dev(), meta.ino()),
            handed_over: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next connection from a process of this user (or root); others are refused.
    pub async fn accept(&self) -> std::io::Result<UnixStream> {
        loop {
            let (stream, _) = self.listener.accept().await?;
            let me = rustix::process::geteuid().as_raw();
            match stream.peer_cred() {
                Ok(c) if c.uid() == me || c.uid() == 0 => return Ok(stream),
                Ok(c) => tracing::warn!(
                    uid = c.uid(),
                    "upgrade connection from another user refused"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade connection refused: no peer credentials")
                }
            }
        }
    }

    /// After a handover: the path is the new process's to replace or remove.
    pub fn handed_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for Offer {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Tells a connection that came while another upgrade is under way to go away.
pub async fn refuse(mut stream: UnixStream, why: &str) {
    let _ = wire::write(&mut stream, &Refusal { error: why.into() }).await;
}

/// Hands the sockets over on `stream`: the hello, then the new process's `ready` (within
/// [`READY_WITHIN`]), then `draining`. Returns the new process's pid; after `Ok` this process
/// must stop accepting and drain.
pub async fn hand_over(
    mut stream: UnixStream,
    sockets: Vec<OfferedSocket>,
    endpoints: Vec<EndpointRecord>,
) -> anyhow::Result<u32> {
    let hello = Hello {
        gatehouse_upgrade: PROTOCOL,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
        sockets: sockets
            .iter()
            .map(|s| SocketInfo {
                kind: s.kind,
                name: s.name.clone(),
                address: s.address.clone(),
                bound: s.bound,
            })
            .collect(),
        endpoints,
    };
    let fds: Vec<_> = sockets.iter().map(|s| s.fd.as_fd()).collect();
    wire::write_with_fds(&mut stream, &hello, &fds)
        .await
        .context("cannot send the sockets")?;
    // This process's copies of the descriptors go now; the listeners keep theirs.
    drop(fds);
    drop(sockets);
    tracing::info!("upgrade: sockets sent; waiting for the new process to be ready");
    let ready: Ready = tokio::time::timeout(READY_WITHIN, wire::read(&mut stream))
        .await
        .map_err(|_| anyhow::anyhow!("the new process was not ready within {READY_WITHIN:?}"))?
        .context("the new process did not get ready")?;
    if !ready.ready {
        bail!("garbled handshake: `ready` is false");
    }
    wire::write(&mut stream, &Draining { draining: true })
        .await
        .context("the new process went away after saying ready")?;
    Ok(ready.pid)
}
