//! Binary upgrades without losing a request (docs/fleet.md#upgrades). The running process
//! offers its listening sockets on a unix socket (`--upgrade-socket PATH`, [`Offer`]); a new
//! process started with `--upgrade-from PATH` ([`take`]) connects and receives them as
//! SCM_RIGHTS descriptors, with a versioned JSON handshake naming each one (listener name,
//! configured address, bound address, kind) and the endpoints' health and breakers
//! ([`state`]). The new process adopts the sockets its config's addresses match, binds the
//! others, seeds its endpoint state, starts accepting, and says `ready`; the old process then
//! answers `draining`, stops accepting and drains (as on SIGTERM, but WebSockets keep running
//! until they close or `drain_timeout` passes) and exits 0. Until `ready`, nothing changes for
//! the old process: a new one that fails (a bad config, a crash) leaves it serving, its socket
//! still offered.
//!
//! The conversation, each message a frame (`u32` big-endian length, then JSON):
//! old → new `Hello` (with the descriptors, in `sockets` order); new → old `Ready`;
//! old → new `Draining`. Either side may instead send `{"error": "..."}` and close.

#[cfg(unix)]
mod offer;
pub mod state;
#[cfg(unix)]
mod take;
#[cfg(unix)]
mod wire;

#[cfg(unix)]
pub use offer::{check_path, hand_over, refuse, Offer};
#[cfg(unix)]
pub use take::{take, Taken};

use crate::listener::inherit::{Inherited, SocketKind};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

/// What a new process brings from the one it takes over from: the listening sockets, and the
/// endpoints' health and breakers, seeded into the runtime before any listener accepts
/// (`Gateway::start_file_taking_over`). Empty for an ordinary start.
#[derive(Default)]
pub struct Takeover {
    pub sockets: Arc<Inherited>,
    pub endpoints: Vec<state::EndpointRecord>,
}

/// The handshake's version. A process refuses a hello of another version rather than guess.
pub const PROTOCOL: u32 = 1;

/// The old process's first message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL`].
    pub gatehouse_upgrade: u32,
    pub pid: u32,
    /// The old binary's version (for the log).
    pub version: String,
    /// One entry per descriptor sent with this message, in order.
    pub sockets: Vec<SocketInfo>,
    pub endpoints: Vec<state::EndpointRecord>,
}

/// One listening socket of the old process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SocketInfo {
    pub kind: SocketKind,
    pub name: String,
    /// As its config wrote it.
    pub address: String,
    pub bound: SocketAddr,
}

/// The new process's answer once it is accepting on every socket it took.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub ready: bool,
    pub pid: u32,
}

/// The old process's last word: it has stopped accepting and drains.
#[derive(Debug, Serialize, Deserialize)]
pub struct Draining {
    pub draining: bool,
}

/// What either side sends instead when it gives up.
#[derive(Debug, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
}
