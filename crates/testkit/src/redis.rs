//! A real `redis-server` (Debian's package, installed by the test command) on a free loopback
//! port, with stop and restart on the same port. Killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl RedisServer {
    /// Starts one; panics with a clear message when `redis-server` is not installed.
    /// A free port is picked and then bound by redis-server, so another process may take it in
    /// between: then it starts again on another port.
    pub fn start() -> Self {
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port(),
                child: None,
            };
            if s.try_spawn() {
                return s;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server did not start on port {}",
            self.port
        );
    }

    /// Starts redis-server on `self.port`; false if it exited (the port was taken).
    fn try_spawn(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: run ./scripts/test.sh, which installs it");
        self.child = crate::process::wait_ready(child, Duration::from_secs(10), || {
            crate::process::accepts(self.port)
        });
        self.child.is_some()
    }

    /// Kills the server (a Redis outage).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
