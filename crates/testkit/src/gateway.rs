//! TestGateway: the real gateway, in-process, from a YAML string, on ephemeral ports, with
//! its access log captured for assertions.

use gatehouse::observe::access_log::AccessLogSink;
use gatehouse::Gateway;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct TestGateway {
    gw: Option<Gateway>,
    log: Capture,
}

impl TestGateway {
    /// Starts a gateway from config text; panics with every config error if it is invalid.
    pub async fn start(yaml: &str) -> Self {
        let config = gatehouse_config::load_str(yaml, "<test>").unwrap_or_else(|e| panic!("{e}"));
        let log = Capture::default();
        let gw = Gateway::start(
            config,
            Some(AccessLogSink::to_writer(Box::new(log.clone()))),
        )
        .await
        .expect("gateway starts");
        TestGateway { gw: Some(gw), log }
    }

    /// Starts from a config file, as `gatehouse run -c FILE` does (so reloads work).
    pub async fn start_file(path: &std::path::Path) -> Self {
        let log = Capture::default();
        let gw = Gateway::start_file(path, Some(AccessLogSink::to_writer(Box::new(log.clone()))))
            .await
            .expect("gateway starts");
        TestGateway { gw: Some(gw), log }
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.gw().admin_addr().expect("an admin listener")
        )
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("gateway running")
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.gw().addrs()[0].1
    }

    /// `http://ADDR{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    pub fn gateway(&self) -> &Gateway {
        self.gw()
    }

    /// Access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        let buf = self.log.0.lock().expect("lock").clone();
        String::from_utf8_lossy(&buf)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until an access-log line has `request_id`, and returns it.
    pub async fn log_line(&self, request_id: &str) -> serde_json::Value {
        crate::eventually(
            &format!("access log line for {request_id}"),
            Duration::from_secs(5),
            || async {
                self.access_log()
                    .into_iter()
                    .find(|l| l["request_id"] == request_id)
            },
        )
        .await
    }

    /// Graceful shutdown; `true` when every connection finished within `drain`.
    pub async fn shutdown(mut self, drain: Duration) -> bool {
        match self.gw.take() {
            Some(gw) => gw.shutdown(drain).await,
            None => true,
        }
    }
}
