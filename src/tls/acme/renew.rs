//! A slot's task: wait until its certificate is due (at once for the self-signed placeholder;
//! else `renew_before` its expiry, by default at two thirds of its lifetime), order a new one,
//! store it, swap it in. A failed order keeps the served certificate and is tried again after
//! a backoff (doubling from 2 s to 1 h, jittered). Before ordering it looks at the storage
//! again: another gateway sharing the directory may have renewed already.

use super::{lock, order, storage, Served, Slot};
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use crate::tls::registry::{rfc3339, unix_now};
use gatehouse_config::tls::Acme;
use serde_json::json;
use std::sync::{Arc, Weak};
use std::time::Duration;

const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// The longest single sleep: a long wait is cut so that a clock change or a renewal by another
/// instance is seen within the hour.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// When `served` is to be renewed (Unix seconds).
pub fn due_at(cfg: &Acme, served: &Served) -> i64 {
    if served.self_signed {
        return 0;
    }
    let lifetime = (served.pair.not_after - served.pair.not_before).max(0);
    let before = match cfg.renew_before {
        // A window longer than the lifetime would order again at once, forever.
        Some(d) if (d.0.as_secs() as i64) < lifetime => d.0.as_secs() as i64,
        _ => lifetime / 3,
    };
    served.pair.not_after - before
}

/// The slot's task. It holds the slot only while it works, not while it sleeps, so a slot no
/// listener uses any more is dropped (and its `Drop` ends the task).
pub async fn run(slot: Weak<Slot>, events: Events, metrics: Arc<Metrics>) {
    let mut failures: u32 = 0;
    if let Some(slot) = slot.upgrade() {
        publish_expiry(&slot, &metrics);
    }
    loop {
        let Some(strong) = slot.upgrade() else { return };
        let pause = step(&strong, &mut failures, &events, &metrics).await;
        drop(strong);
        tokio::time::sleep(pause).await;
    }
}

/// Takes a renewal from the storage, or orders when due; returns how long to wait then.
async fn step(slot: &Slot, failures: &mut u32, events: &Events, metrics: &Metrics) -> Duration {
    let cfg = &slot.cfg;
    if let Ok(Some(stored)) = super::load_stored(cfg) {
        if stored.pair.not_after > slot.served().pair.not_after {
            tracing::info!(domains = %cfg.domains.join(","), "ACME certificate renewed by another instance sharing the storage; serving it");
            install(slot, stored, metrics);
        }
    }
    let wait = due_at(cfg, &slot.served()) - unix_now();
    if wait > 0 {
        lock(&slot.status).next_attempt = Some(rfc3339(unix_now() + wait));
        return Duration::from_secs(wait as u64).min(MAX_SLEEP);
    }
    let renewal = !slot.served().self_signed;
    lock(&slot.status).orders += 1;
    match obtain(cfg, slot).await {
        Ok(next) => {
            *failures = 0;
            let labels = vec![("result", "issued".to_string())];
            metrics.acme_orders.get_or_create(&labels).inc();
            tracing::info!(domains = %cfg.domains.join(","), serial = %next.serial, not_after = %rfc3339(next.pair.not_after), renewal, "ACME certificate issued");
            events.emit(
                "certificate_issued",
                "",
                None,
                json!({"domains": cfg.domains, "serial": next.serial, "not_after": rfc3339(next.pair.not_after), "renewal": renewal, "listeners": *lock(&slot.listeners)}),
            );
            install(slot, next, metrics);
            let mut st = lock(&slot.status);
            st.failures_in_a_row = 0;
            st.last_error = None;
            Duration::ZERO
        }
        Err(error) => {
            *failures += 1;
            let backoff = backoff(*failures);
            let labels = vec![("result", "failed".to_string())];
            metrics.acme_orders.get_or_create(&labels).inc();
            tracing::error!(domains = %cfg.domains.join(","), directory = %cfg.directory, %error, retry_in_s = backoff.as_secs(), "ACME order failed; the served certificate stays");
            events.emit(
                "acme_failed",
                "",
                None,
                json!({"domains": cfg.domains, "directory": cfg.directory, "error": error, "attempt": *failures, "retry_in_s": backoff.as_secs()}),
            );
            let mut st = lock(&slot.status);
            st.failures_in_a_row = *failures;
            st.last_error = Some(error);
            st.next_attempt = Some(rfc3339(unix_now() + backoff.as_secs() as i64));
            backoff
        }
    }
}

/// Orders, checks what came back, stores it.
async fn obtain(cfg: &Acme, slot: &Slot) -> Result<Served, String> {
    let issued = order::issue(cfg, slot.challenges()).await?;
    let next = super::served(
        cfg,
        issued.chain_pem.as_bytes(),
        issued.key_pem.as_bytes(),
        false,
    )
    .map_err(|e| format!("the issued certificate is unusable: {e}"))?;
    let (crt, key) = storage::cert_files(cfg);
    // The key first: a reader that sees the new chain must find its key.
    storage::write_atomic(&key, issued.key_pem.as_bytes(), true)?;
    storage::write_atomic(&crt, issued.chain_pem.as_bytes(), false)?;
    Ok(next)
}

fn install(slot: &Slot, next: Served, metrics: &Metrics) {
    slot.current.store(Arc::new(next));
    publish_expiry(slot, metrics);
}

/// `gatehouse_tls_certificate_expiry_timestamp_seconds` of each listener serving the slot
/// (not for the placeholder).
fn publish_expiry(slot: &Slot, metrics: &Metrics) {
    let s = slot.served();
    if s.self_signed {
        return;
    }
    for l in lock(&slot.listeners).iter() {
        metrics
            .tls_certificate_expiry
            .get_or_create(&vec![
                ("listener", l.clone()),
                ("name", s.pair.label.clone()),
            ])
            .set(s.pair.not_after);
    }
}

fn backoff(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // Up to a quarter more, so gateways sharing a CA do not retry in step.
    base + base.mul_f64(fastrand::f64() / 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_to_an_hour() {
        assert!((2.0..=2.5).contains(&backoff(1).as_secs_f64()));
        assert!((4.0..=5.0).contains(&backoff(2).as_secs_f64()));
        assert!((3600.0..=4500.0).contains(&backoff(30).as_secs_f64()));
    }
}
