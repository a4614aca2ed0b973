//! Active health checking: the rise/fall threshold tracker (pure) and the probe task that
//! feeds it (HTTP GET or TCP connect, with interval, timeout and jitter).

use super::endpoint::{EndpointState, Health};
use crate::observe::events::Events;
use crate::upstream::UpstreamClient;
use gatehouse_config::HealthCheck;
use http::{Request, StatusCode};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Pass { degraded: bool },
    Fail(&'static str),
}

/// Rise/fall thresholds so that one lost probe does not flap an endpoint.
#[derive(Debug)]
pub struct Tracker {
    state: Health,
    passes: u32,
    fails: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            state: Health::Healthy,
            passes: 0,
            fails: 0,
        }
    }
}

impl Tracker {
    /// Starts from what the endpoint already is (state survives reloads).
    pub fn starting_at(state: Health) -> Self {
        Tracker {
            state,
            ..Tracker::default()
        }
    }

    /// Feeds one probe; returns the new state when it changed.
    pub fn observe(&mut self, cfg: &HealthCheck, p: Probe) -> Option<Health> {
        let next = match p {
            Probe::Pass { degraded } => {
                self.fails = 0;
                self.passes = self.passes.saturating_add(1);
                let up = if degraded {
                    Health::Degraded
                } else {
                    Health::Healthy
                };
                match self.state {
                    Health::Down if self.passes >= cfg.healthy_threshold => up,
                    Health::Down => Health::Down,
                    _ => up,
                }
            }
            Probe::Fail(_) => {
                self.passes = 0;
                self.fails = self.fails.saturating_add(1);
                if self.fails >= cfg.unhealthy_threshold {
                    Health::Down
                } else {
                    self.state
                }
            }
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

/// Runs one probe against the endpoint.
pub async fn probe(cfg: &HealthCheck, address: &str, client: &UpstreamClient) -> Probe {
    let started = Instant::now();
    let result = match &cfg.path {
        None => match tokio::time::timeout(cfg.timeout.0, tokio::net::TcpStream::connect(address))
            .await
        {
            Ok(Ok(_)) => Probe::Pass { degraded: false },
            Ok(Err(_)) => Probe::Fail("connect_failed"),
            Err(_) => Probe::Fail("timeout"),
        },
        Some(path) => {
            let req = Request::get(format!("http://{address}{path}"))
                .header(http::header::USER_AGENT, "gatehouse-health-check")
                .body(crate::body::Body::empty());
            let Ok(req) = req else {
                return Probe::Fail("invalid_request");
            };
            match tokio::time::timeout(cfg.timeout.0, client.send(req, &Default::default())).await {
                Err(_) => Probe::Fail("timeout"),
                Ok(Err(_)) => Probe::Fail("connect_failed"),
                Ok(Ok((resp, checkin))) => {
                    // Read the (small) body so the connection can be pooled again.
                    let status = resp.status();
                    let flagged = cfg.degraded_header.as_ref().is_some_and(|h| {
                        resp.headers()
                            .get(h.as_str())
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"degraded"))
                    });
                    let clean = tokio::time::timeout(
                        cfg.timeout.0,
                        http_body_util::BodyExt::collect(resp.into_body()),
                    )
                    .await
                    .is_ok_and(|r| r.is_ok());
                    if let Some(c) = checkin {
                        c.finish(clean);
                    }
                    if !status_ok(cfg, status) {
                        Probe::Fail("unexpected_status")
                    } else {
                        Probe::Pass { degraded: flagged }
                    }
                }
            }
        }
    };
    match result {
        Probe::Pass { degraded: false }
            if cfg
                .degraded_latency
                .is_some_and(|d| started.elapsed() > d.0) =>
        {
            Probe::Pass { degraded: true }
        }
        other => other,
    }
}

fn status_ok(cfg: &HealthCheck, s: StatusCode) -> bool {
    let ranges = gatehouse_config::policy::parse_statuses(&cfg.expected_statuses)
        .unwrap_or_else(|_| vec![(200, 299)]);
    ranges.iter().any(|(a, b)| (*a..=*b).contains(&s.as_u16()))
}

/// The probe loop for one endpoint; runs until aborted (reconciled by the runtime).
pub async fn run(
    cfg: HealthCheck,
    slow_start: Duration,
    state: Arc<EndpointState>,
    client: UpstreamClient,
    events: Events,
) {
    let mut tracker = Tracker::starting_at(state.health());
    loop {
        let jitter = cfg.interval.0.mul_f64(cfg.jitter.0 * fastrand::f64());
        tokio::time::sleep(cfg.interval.0 + jitter).await;
        let p = probe(&cfg, &state.address, &client).await;
        // Only this task sets health, except a binary upgrade seeding it as the task starts:
        // the thresholds count from what the endpoint is.
        if tracker.state != state.health() {
            tracker = Tracker::starting_at(state.health());
        }
        if let Some(next) = tracker.observe(&cfg, p) {
            let prev = state.set_health(next, slow_start, &events);
            let reason = match p {
                Probe::Fail(r) => r,
                Probe::Pass { degraded: true } => "degraded",
                Probe::Pass { degraded: false } => "probe_passed",
            };
            events.emit(
                "health_changed",
                &state.cluster,
                Some(&state.address),
                json!({"from": prev, "to": next, "reason": reason}),
            );
        }
        state.check_slow_start_done(&events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Dur;

    fn cfg() -> HealthCheck {
        HealthCheck {
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            interval: Dur::secs(1),
            ..HealthCheck::default()
        }
    }

    const PASS: Probe = Probe::Pass { degraded: false };
    const FAIL: Probe = Probe::Fail("x");

    #[test]
    fn falls_after_unhealthy_threshold_and_rises_after_healthy_threshold() {
        let c = cfg();
        let mut t = Tracker::default();
        assert_eq!(t.observe(&c, FAIL), None);
        assert_eq!(t.observe(&c, FAIL), None);
        assert_eq!(t.observe(&c, PASS), None, "a pass resets the fall count");
        assert_eq!(t.observe(&c, FAIL), None);
        assert_eq!(t.observe(&c, FAIL), None);
        assert_eq!(t.observe(&c, FAIL), Some(Health::Down));
        assert_eq!(t.observe(&c, FAIL), None);
        assert_eq!(t.observe(&c, PASS), None, "one pass is not enough to rise");
        assert_eq!(
            t.observe(&c, FAIL),
            None,
            "and a fail resets the rise count"
        );
        assert_eq!(t.observe(&c, PASS), None);
        assert_eq!(t.observe(&c, PASS), Some(Health::Healthy));
    }

    #[test]
    fn degraded_comes_and_goes_with_passing_probes() {
        let c = cfg();
        let mut t = Tracker::default();
        assert_eq!(
            t.observe(&c, Probe::Pass { degraded: true }),
            Some(Health::Degraded)
        );
        assert_eq!(t.observe(&c, Probe::Pass { degraded: true }), None);
        assert_eq!(t.observe(&c, PASS), Some(Health::Healthy));
        // From DOWN, rising into DEGRADED still needs the healthy threshold.
        let mut t = Tracker::starting_at(Health::Down);
        assert_eq!(t.observe(&c, Probe::Pass { degraded: true }), None);
        assert_eq!(
            t.observe(&c, Probe::Pass { degraded: true }),
            Some(Health::Degraded)
        );
    }
}
