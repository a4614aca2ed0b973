//! Real servers started by tests (redis-server, dnsmasq, etcd): wait, with a deadline, until
//! the child answers on its port, or give up if it exits (its port was taken) or never does.

use std::process::Child;
use std::time::{Duration, Instant};

/// Polls `ready` until it holds (the child is returned), the child exits, or `within` passes
/// (the child is killed): `None` then, so the caller can try another port.
pub fn wait_ready(mut child: Child, within: Duration, ready: impl Fn() -> bool) -> Option<Child> {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if ready() {
            return Some(child);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `127.0.0.1:port` accepts a TCP connection.
pub fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
