//! Test helpers for Gatehouse: [`FakeUpstream`] (a scriptable in-process backend on
//! `127.0.0.1:0`), [`TestGateway`] (the real gateway in-process on ephemeral ports),
//! [`RedisServer`] (a real redis-server on a free port), [`DnsServer`] (a real dnsmasq), [`EtcdServer`] (a real etcd) and [`eventually`] (poll until a
//! deadline instead of sleeping).

mod dns;
mod etcd;
mod fake;
mod gateway;
pub mod process;
mod redis;

pub use dns::DnsServer;
pub use etcd::EtcdServer;
pub use fake::{Behavior, FakeUpstream, Mode, Seen};
pub use gateway::TestGateway;
pub use redis::RedisServer;

use std::future::Future;
use std::time::Duration;

/// Polls `check` every 10 ms until it returns `Some`, or panics after `deadline` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
