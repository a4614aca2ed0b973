//! The shipped binary tells systemd what it does (`sd_notify(3)`), as the Debian package's
//! `Type=notify` unit needs: the test plays the service manager with a datagram socket of its
//! own as `NOTIFY_SOCKET`. `READY=1` comes once the listeners accept; a SIGHUP reload is
//! `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1`, a refused one too, with a `STATUS=`
//! that says so; SIGTERM gives `STOPPING=1`; `WATCHDOG_USEC` starts `WATCHDOG=1` pings.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

fn config(body: &str) -> String {
    format!(
        "listeners: [{{name: public, address: '127.0.0.1:0'}}]\nadmin: {{address: '127.0.0.1:0'}}\nroutes: [{{name: r, direct_response: {{status: 200, body: {body}}}}}]\n"
    )
}

/// The service manager's end: every datagram the gateway sent, one message (lines) each.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    /// The next message that is not only a watchdog ping; panics after 20 s.
    fn next(&self) -> String {
        let end = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no notification within 20 s");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = self.socket.recv(&mut buf).expect("a notification");
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.trim() != "WATCHDOG=1" {
                return msg;
            }
        }
    }

    /// Waits for a `WATCHDOG=1` ping; panics after 20 s.
    fn ping(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no WATCHDOG=1 within 20 s");
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = self.socket.recv(&mut buf).expect("a notification");
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "WATCHDOG=1")
            {
                return;
            }
        }
    }
}

fn lines(msg: &str) -> Vec<&str> {
    msg.lines().collect()
}

fn status(msg: &str) -> &str {
    msg.lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {msg:?}"))
}

async fn body(addr: std::net::SocketAddr) -> String {
    common::timed_client()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn ready_reloading_stopping_and_watchdog_reach_the_service_manager() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = Manager {
        socket: UnixDatagram::bind(&socket_path).unwrap(),
    };
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, config("one")).unwrap();
    let gw = Running::start_with_env(
        &path,
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // 1 s: a ping every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );

    let ready = manager.next();
    assert!(lines(&ready).contains(&"READY=1"), "{ready:?}");
    let admin = gw.admin_addr();
    let s = status(&ready);
    assert!(
        s.starts_with("serving: config generation 1")
            && s.contains(&format!("public on {}", gw.addr))
            && s.contains(&format!("admin on {admin}")),
        "{s}"
    );
    // Ready means serving: the listener answers at once.
    assert_eq!(body(gw.addr).await, "one");
    manager.ping();

    // SIGHUP: RELOADING=1 with the monotonic clock, then READY=1 with the new generation.
    std::fs::write(&path, config("two")).unwrap();
    gw.signal("HUP");
    let reloading = manager.next();
    let l = lines(&reloading);
    assert!(l.contains(&"RELOADING=1"), "{reloading:?}");
    let usec: u64 = l
        .iter()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"))
        .parse()
        .unwrap();
    assert!(usec > 0);
    let reloaded = manager.next();
    assert!(lines(&reloaded).contains(&"READY=1"), "{reloaded:?}");
    assert!(
        status(&reloaded).starts_with("serving; reloaded: config generation"),
        "{reloaded:?}"
    );
    assert_eq!(body(gw.addr).await, "two");

    // A config that does not validate: still RELOADING=1 then READY=1 (the running config
    // stays), and the status says the reload was refused.
    std::fs::write(&path, "listeners: [{name: public, address: nowhere}]\n").unwrap();
    gw.signal("HUP");
    assert!(lines(&manager.next()).contains(&"RELOADING=1"));
    let refused = manager.next();
    assert!(lines(&refused).contains(&"READY=1"), "{refused:?}");
    assert!(
        status(&refused).starts_with("serving the previous config; the reload was refused"),
        "{refused:?}"
    );
    assert_eq!(body(gw.addr).await, "two");

    // SIGTERM: STOPPING=1 as the drain starts, then a clean exit.
    gw.signal("TERM");
    let stopping = manager.next();
    assert!(lines(&stopping).contains(&"STOPPING=1"), "{stopping:?}");
    assert!(status(&stopping).starts_with("draining"), "{stopping:?}");
    let mut gw = gw;
    let code = gw.exit_status(Duration::from_secs(20)).await;
    assert!(code.success(), "{code}");
}
