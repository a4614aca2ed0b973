//! Every TLS listener's [`Terminator`], by listener name: built (fail closed) with each config
//! load, re-read when a certificate file changes, and the events and expiry metric that go
//! with each load.

use super::{State, Terminator};
use crate::observe::events::Events;
use crate::observe::metrics::Metrics;
use gatehouse_config::validate::Problem;
use gatehouse_config::Config;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A certificate this close to its expiry is announced (`certificate_expiring`) at each load.
const EXPIRY_WARNING_SECS: i64 = 14 * 24 * 3600;

#[derive(Default)]
pub struct Registry {
    by_listener: Mutex<HashMap<String, Arc<Terminator>>>,
    /// The `acme` sections in use, their certificates and tasks.
    pub acme: super::acme::Manager,
}

/// States built for a config, not yet serving.
pub struct Prepared(Vec<(String, State)>);

/// Builds the TLS state of every TLS listener in `config`; any problem (a file that cannot be
/// read, a key that is not the certificate's, an ACME storage that cannot be made) fails the
/// whole load. Without `acme` (`gatehouse check`), ACME sections are not looked at.
pub fn prepare(
    config: &Config,
    acme: Option<&super::acme::Manager>,
) -> Result<Prepared, Vec<Problem>> {
    let mut ready = Vec::new();
    let mut problems = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(tls) = &l.tls else { continue };
        let slot = match (acme, &tls.acme) {
            (Some(m), Some(a)) => match m.slot(a) {
                Ok(s) => Some(s),
                Err(e) => {
                    problems.push((format!("listeners[{i}].tls.acme.storage"), e));
                    continue;
                }
            },
            _ => None,
        };
        match State::build(tls, slot) {
            Ok(s) => ready.push((l.name.clone(), s)),
            Err(ps) => problems.extend(
                ps.into_iter()
                    .map(|(f, m)| (format!("listeners[{i}].{f}"), m)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(Prepared(ready))
    } else {
        Err(problems)
    }
}

/// What `gatehouse check` adds for TLS: every [`prepare`] problem, and certificates that have
/// expired.
pub fn preflight(config: &Config) -> Vec<Problem> {
    let prepared = match prepare(config, None) {
        Ok(p) => p,
        Err(problems) => return problems,
    };
    let now = unix_now();
    let mut problems = Vec::new();
    for (name, state) in &prepared.0 {
        let i = config
            .listeners
            .iter()
            .position(|l| &l.name == name)
            .unwrap_or(0);
        for (j, p) in state.store.pairs.iter().enumerate() {
            if p.not_before > now {
                problems.push((
                    format!("listeners[{i}].tls.certificates[{j}].cert"),
                    format!(
                        "{}: the certificate for {} is not valid before {}",
                        state.cfg.certificates[j].cert,
                        p.label,
                        rfc3339(p.not_before)
                    ),
                ));
            }
            if p.not_after < now {
                problems.push((
                    format!("listeners[{i}].tls.certificates[{j}].cert"),
                    format!(
                        "{}: the certificate for {} expired {}",
                        state.cfg.certificates[j].cert,
                        p.label,
                        rfc3339(p.not_after)
                    ),
                ));
            }
        }
    }
    problems
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn rfc3339(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Registry {
    /// The terminator of listener `name`, if it is a TLS listener.
    pub fn get(&self, name: &str) -> Option<Arc<Terminator>> {
        self.lock().get(name).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Terminator>>> {
        self.by_listener.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`prepare`] with this registry's ACME sections (a section unchanged keeps its
    /// certificate).
    pub fn prepare(&self, config: &Config) -> Result<Prepared, Vec<Problem>> {
        prepare(config, Some(&self.acme))
    }

    /// Makes `prepared` what new handshakes use; listeners no longer TLS are forgotten, ACME
    /// sections no longer used stop.
    pub fn publish(&self, prepared: Prepared, events: &Events, metrics: &Arc<Metrics>) {
        let acme: Vec<(String, Arc<super::acme::Slot>)> = prepared
            .0
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.acme.clone()?)))
            .collect();
        self.acme.reconcile(&acme, events, metrics);
        let mut map = self.lock();
        let names: Vec<String> = prepared.0.iter().map(|(n, _)| n.clone()).collect();
        for (name, state) in prepared.0 {
            let changed = match map.get(&name) {
                Some(t) => t.publish(state),
                None => {
                    map.insert(name.clone(), Arc::new(Terminator::new(&name, state)));
                    true
                }
            };
            if changed {
                announce(&map[&name], events, metrics);
            }
        }
        map.retain(|name, t| {
            let keep = names.contains(name);
            if !keep {
                let series = t.expiry_series.lock().unwrap_or_else(|e| e.into_inner());
                for old in series.iter() {
                    metrics.tls_certificate_expiry.remove(old);
                }
            }
            keep
        });
    }

    /// Re-reads every TLS listener's files (a certificate file changed): a listener whose
    /// files all load gets them for new handshakes; one with a bad file keeps what it has.
    pub fn reload_files(&self, events: &Events, metrics: &Metrics) {
        let terminators: Vec<Arc<Terminator>> = self.lock().values().cloned().collect();
        for t in terminators {
            let now = t.state();
            match State::build(&now.cfg, now.acme.clone()) {
                Ok(next) => {
                    if t.publish(next) {
                        announce(&t, events, metrics);
                    }
                }
                Err(problems) => {
                    let errors: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
                    if !t.refused(errors.clone()) {
                        continue;
                    }
                    for e in &errors {
                        tracing::error!(listener = %t.listener(), error = %e, "certificate reload refused; the loaded certificates stay");
                    }
                    events.emit(
                        "certificate_reload_failed",
                        "",
                        None,
                        json!({"listener": t.listener(), "errors": errors}),
                    );
                }
            }
        }
    }

    /// What `GET /tls` shows: each TLS listener's certificates as handshakes get them now, and
    /// each ACME section's state.
    pub fn view(&self) -> serde_json::Value {
        let mut terminators: Vec<Arc<Terminator>> = self.lock().values().cloned().collect();
        terminators.sort_by(|a, b| a.listener().cmp(b.listener()));
        let pair = |p: &super::certs::Pair, source: &str| json!({"name": p.label, "names": p.names, "not_before": rfc3339(p.not_before), "not_after": rfc3339(p.not_after), "source": source});
        let listeners: Vec<serde_json::Value> = terminators
            .iter()
            .map(|t| {
                let s = t.state();
                let mut certs: Vec<serde_json::Value> = Vec::new();
                if let Some(a) = s.acme.as_ref().map(|a| a.served()) {
                    let source = if a.self_signed {
                        "acme_self_signed"
                    } else {
                        "acme"
                    };
                    certs.push(pair(&a.pair, source));
                }
                certs.extend(s.store.pairs.iter().map(|p| pair(p, "file")));
                json!({"listener": t.listener(), "certificates": certs})
            })
            .collect();
        json!({"listeners": listeners, "acme": self.acme.views()})
    }

    /// Every TLS file of every listener.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .lock()
            .values()
            .flat_map(|t| {
                let s = t.state();
                s.cfg.files().map(PathBuf::from).collect::<Vec<_>>()
            })
            .collect();
        files.sort();
        files.dedup();
        files
    }

    /// The directories holding TLS files (watched for changes: editors save by rename,
    /// Kubernetes swaps a symlink).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .lock()
            .values()
            .flat_map(|t| {
                let s = t.state();
                s.cfg.files().map(parent).collect::<Vec<_>>()
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }
}

fn parent(file: &str) -> PathBuf {
    std::path::Path::new(file)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Events and the expiry metric for the pairs a listener serves now.
fn announce(t: &Terminator, events: &Events, metrics: &Metrics) {
    let state = t.state();
    let now = unix_now();
    let mut series = t.expiry_series.lock().unwrap_or_else(|e| e.into_inner());
    for old in series.drain(..) {
        metrics.tls_certificate_expiry.remove(&old);
    }
    let acme = state.acme.as_ref().map(|a| a.served());
    let issued = acme.as_ref().filter(|a| !a.self_signed).map(|a| &a.pair);
    if let Some(a) = acme.as_ref().filter(|a| a.self_signed) {
        // The renewal task sets this series once it has a certificate: it is recorded here so
        // that it goes with the listener.
        series.push(vec![
            ("listener", t.listener().to_string()),
            ("name", a.pair.label.clone()),
        ]);
    }
    for p in state.store.pairs.iter().chain(issued) {
        let labels = vec![
            ("listener", t.listener().to_string()),
            ("name", p.label.clone()),
        ];
        metrics
            .tls_certificate_expiry
            .get_or_create(&labels)
            .set(p.not_after);
        series.push(labels);
        events.emit(
            "certificate_loaded",
            "",
            None,
            json!({"listener": t.listener(), "name": p.label, "names": p.names, "not_after": rfc3339(p.not_after)}),
        );
        if p.not_after < now || p.not_before > now {
            tracing::error!(listener = %t.listener(), name = %p.label, not_before = %rfc3339(p.not_before), not_after = %rfc3339(p.not_after), "certificate is not valid now: clients will refuse it");
            events.emit(
                "certificate_invalid_now",
                "",
                None,
                json!({"listener": t.listener(), "name": p.label, "not_before": rfc3339(p.not_before), "not_after": rfc3339(p.not_after)}),
            );
        } else if p.not_after - now < EXPIRY_WARNING_SECS {
            tracing::warn!(listener = %t.listener(), name = %p.label, not_after = %rfc3339(p.not_after), "certificate expires within 14 days");
            events.emit(
                "certificate_expiring",
                "",
                None,
                json!({"listener": t.listener(), "name": p.label, "not_after": rfc3339(p.not_after), "days_left": (p.not_after - now) / 86400}),
            );
        }
    }
}
