//! A real etcd for discovery and config tests: Debian's `etcd-server`, one member on free
//! loopback ports with its data in a temporary directory. Keys are written through etcd's own
//! JSON API. Killed when dropped.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct EtcdServer {
    pub port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

impl EtcdServer {
    pub fn start() -> Self {
        let mut s = EtcdServer {
            port: 0,
            peer_port: 0,
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
        };
        for _ in 0..5 {
            s.port = free_port();
            s.peer_port = free_port();
            if s.try_spawn() {
                return s;
            }
        }
        panic!("etcd did not start on any of 5 pairs of free ports");
    }

    /// `http://127.0.0.1:PORT`, the client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Kills it (an etcd outage); `restart` brings it back with its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        assert!(self.try_spawn(), "etcd did not restart on {}", self.port);
    }

    fn try_spawn(&mut self) -> bool {
        let client = format!("http://127.0.0.1:{}", self.port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args([
                "--name",
                "test",
                "--data-dir",
                &self.dir.path().join("data").display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("test={peer}"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is not installed: run ./scripts/test.sh, which installs etcd-server");
        self.child = crate::process::wait_ready(child, Duration::from_secs(20), || {
            crate::process::accepts(self.port) && self.ready()
        });
        self.child.is_some()
    }

    /// etcd answers a read (it has elected itself leader).
    fn ready(&self) -> bool {
        self.post("/v3/kv/range", r#"{"key":"AA=="}"#)
            .is_some_and(|b| b.contains("\"header\""))
    }

    /// A blocking POST to the JSON API; the body, or `None` when etcd did not answer 200.
    fn post(&self, path: &str, body: &str) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_string())
    }

    /// Writes `key` = `value`; returns the store's new revision.
    pub fn put(&self, key: &str, value: &str) -> i64 {
        let body = serde_json::json!({"key": b64(key.as_bytes()), "value": b64(value.as_bytes())});
        let answer = self
            .post("/v3/kv/put", &body.to_string())
            .unwrap_or_else(|| panic!("etcd refused the put of {key}"));
        revision(&answer)
    }

    /// Deletes `key`.
    pub fn delete(&self, key: &str) -> i64 {
        let body = serde_json::json!({"key": b64(key.as_bytes())});
        let answer = self
            .post("/v3/kv/deleterange", &body.to_string())
            .unwrap_or_else(|| panic!("etcd refused the delete of {key}"));
        revision(&answer)
    }
}

fn revision(answer: &str) -> i64 {
    // With `Connection: close` etcd may still chunk the body: take the JSON object in it.
    let start = answer.find('{').unwrap_or(0);
    let end = answer.rfind('}').map_or(answer.len(), |e| e + 1);
    let v: serde_json::Value = serde_json::from_str(&answer[start..end]).expect("etcd JSON");
    v["header"]["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("a revision")
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
