//! The new process's side of an upgrade (`--upgrade-from PATH`): connect, receive the hello
//! and the listening sockets, check that every descriptor is the TCP listening socket the
//! hello names, and hand them to the gateway as a [`Takeover`]. Once the gateway is accepting,
//! [`Taken::confirm`] says `ready` and waits for the old process's `draining`.

use super::{wire, Draining, Hello, Ready, Takeover, PROTOCOL};
use crate::listener::inherit::{Inherited, InheritedSocket};
use anyhow::{bail, Context as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixStream;

/// How long each step of the conversation may take on the new process's side.
const STEP: Duration = Duration::from_secs(10);

/// A takeover in progress: the connection to the old process, until `ready`.
pub struct Taken {
    stream: UnixStream,
    path: PathBuf,
    /// The old process's pid.
    pub from_pid: u32,
}

/// Connects to the old process at `path` and receives its sockets and endpoint state.
pub async fn take(path: &Path) -> anyhow::Result<(Taken, Takeover)> {
    let ctx = || format!("--upgrade-from {}", path.display());
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if !m.file_type().is_socket() {
                anyhow::bail!(
                    "{}: is not a socket (the running gateway's --upgrade-socket path is)",
                    ctx()
                );
            }
        }
    }
    let mut stream = tokio::time::timeout(STEP, UnixStream::connect(path))
        .await
        .map_err(|_| anyhow::anyhow!("timed out connecting"))
        .and_then(|r| {
            r.context(
                "cannot connect (is the running gateway started with --upgrade-socket there?)",
            )
        })
        .with_context(ctx)?;
    let (hello, fds): (Hello, Vec<OwnedFd>) =
        tokio::time::timeout(STEP, wire::read_with_fds(&mut stream))
            .await
            .map_err(|_| anyhow::anyhow!("no handshake within {STEP:?}"))
            .and_then(|r| r)
            .with_context(ctx)?;
    let sockets = adopt(&hello, fds).with_context(ctx)?;
    tracing::info!(
        old_pid = hello.pid,
        old_version = %hello.version,
        sockets = ?hello.sockets.iter().map(|s| format!("{} {}", s.name, s.bound)).collect::<Vec<_>>(),
        endpoints = hello.endpoints.len(),
        "upgrade: taking over from the running gateway"
    );
    Ok((
        Taken {
            stream,
            path: path.to_path_buf(),
            from_pid: hello.pid,
        },
        Takeover {
            sockets: Arc::new(Inherited::new(sockets)),
            endpoints: hello.endpoints,
        },
    ))
}

/// Pairs each descriptor with what the hello says it is, after checking it is.
fn adopt(hello: &Hello, fds: Vec<OwnedFd>) -> anyhow::Result<Vec<InheritedSocket>> {
    if hello.gatehouse_upgrade != PROTOCOL {
        bail!(
            "the running gateway speaks upgrade protocol {}, this one {PROTOCOL}: upgrade in two steps or restart",
            hello.gatehouse_upgrade
        );
    }
    if fds.len() != hello.sockets.len() {
        bail!(
            "garbled handshake: {} sockets named, {} descriptors received",
            hello.sockets.len(),
            fds.len()
        );
    }
    let mut out = Vec::new();
    for (info, fd) in hello.sockets.iter().zip(fds) {
        let listening = rustix::net::sockopt::socket_acceptconn(&fd).unwrap_or(false);
        let socket = std::net::TcpListener::from(fd);
        let bound = socket.local_addr().ok();
        if !listening || bound != Some(info.bound) {
            bail!(
                "garbled handshake: the descriptor for {} ({}) is not a TCP socket listening there",
                info.name,
                info.bound
            );
        }
        out.push(InheritedSocket {
            kind: info.kind,
            name: info.name.clone(),
            address: info.address.clone(),
            bound: info.bound,
            socket,
        });
    }
    Ok(out)
}

impl Taken {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tells the old process this one is accepting, and waits for it to say it drains. An
    /// error means the old process still serves (it never got or never answered `ready`).
    pub async fn confirm(mut self) -> anyhow::Result<()> {
        let ready = Ready {
            ready: true,
            pid: std::process::id(),
        };
        wire::write(&mut self.stream, &ready)
            .await
            .context("cannot tell the old process this one is ready")?;
        let d: Draining = tokio::time::timeout(STEP, wire::read(&mut self.stream))
            .await
            .map_err(|_| anyhow::anyhow!("the old process did not answer `ready` within {STEP:?}"))?
            .context("the old process did not confirm the handover")?;
        if !d.draining {
            bail!("garbled handshake: `draining` is false");
        }
        Ok(())
    }
}
