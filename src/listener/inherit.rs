//! Listening sockets taken over from a running gateway (a binary upgrade, `src/upgrade.rs`):
//! held here until the listener (or the admin listener) configured at the same address starts,
//! which adopts its socket instead of binding. Whatever no listener of the new config wants is
//! closed, and the log says so.

use std::net::SocketAddr;
use std::sync::Mutex;

/// What a listening socket serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketKind {
    Listener,
    Admin,
}

/// One socket handed over, with what the old process said about it.
pub struct InheritedSocket {
    pub kind: SocketKind,
    /// The listener's name in the old config (`admin` for the admin listener).
    pub name: String,
    /// Its address as the old config wrote it (`0.0.0.0:8080`, `127.0.0.1:0`).
    pub address: String,
    /// The address it is bound to.
    pub bound: SocketAddr,
    pub socket: std::net::TcpListener,
}

/// The sockets not yet adopted. Empty for a gateway that binds everything itself.
#[derive(Default)]
pub struct Inherited {
    sockets: Mutex<Vec<InheritedSocket>>,
}

impl Inherited {
    pub fn new(sockets: Vec<InheritedSocket>) -> Self {
        Inherited {
            sockets: Mutex::new(sockets),
        }
    }

    /// The socket for the listener `name` configured at `address`: the one the old process
    /// had for the same kind, name and address, else any at that address (a renamed listener
    /// keeps its socket: binding it again would fail, the old process still holds it). An
    /// address matches when it parses to the old configured address or to the bound one (an
    /// old `:0` listener's port written into the new config).
    pub fn take(&self, kind: SocketKind, name: &str, address: &str) -> Option<InheritedSocket> {
        let want: SocketAddr = address.parse().ok()?;
        let mut sockets = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        let at = |s: &InheritedSocket| {
            s.bound == want || s.address.parse::<SocketAddr>().is_ok_and(|a| a == want)
        };
        let i = sockets
            .iter()
            .position(|s| s.kind == kind && s.name == name && at(s))
            .or_else(|| sockets.iter().position(at))?;
        Some(sockets.swap_remove(i))
    }

    /// Closes every socket no listener took, saying which.
    pub fn close_rest(&self) {
        let rest = std::mem::take(&mut *self.sockets.lock().unwrap_or_else(|e| e.into_inner()));
        for s in rest {
            tracing::info!(
                listener = %s.name,
                bound = %s.bound,
                "a socket taken over from the old process is not in this config: closed"
            );
        }
    }
}

/// Makes an adopted socket a tokio listener (non-blocking, as tokio needs: the flag belongs to
/// the socket, which the old process shares until it exits, and it uses it non-blocking too).
pub fn adopt(s: InheritedSocket) -> std::io::Result<tokio::net::TcpListener> {
    s.socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(s.socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(kind: SocketKind, name: &str, address: &str) -> InheritedSocket {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let bound = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        InheritedSocket {
            kind,
            name: name.into(),
            address: address.into(),
            bound,
            socket,
        }
    }

    #[test]
    fn takes_by_name_and_address_then_by_address() {
        let a = socket(SocketKind::Listener, "public", "127.0.0.1:0");
        let bound = a.bound;
        let pool = Inherited::new(vec![a, socket(SocketKind::Admin, "admin", "127.0.0.1:0")]);
        // Same kind, name and configured address.
        let got = pool.take(SocketKind::Listener, "public", "127.0.0.1:0");
        assert_eq!(got.map(|s| s.bound), Some(bound));
        // Renamed: the one left at that address.
        let got = pool.take(SocketKind::Listener, "web", "127.0.0.1:0");
        assert_eq!(got.map(|s| s.kind), Some(SocketKind::Admin));
        assert!(pool
            .take(SocketKind::Listener, "web", "127.0.0.1:0")
            .is_none());
    }

    #[test]
    fn the_bound_port_matches_too() {
        let a = socket(SocketKind::Listener, "public", "127.0.0.1:0");
        let bound = a.bound;
        let pool = Inherited::new(vec![a]);
        assert!(pool
            .take(SocketKind::Listener, "public", "127.0.0.1:1")
            .is_none());
        let got = pool.take(SocketKind::Listener, "public", &bound.to_string());
        assert_eq!(got.map(|s| s.bound), Some(bound));
    }
}
