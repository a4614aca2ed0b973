//! The gateway as a service process: the signals it answers (SIGTERM/SIGINT drain, SIGHUP
//! reloads the config file, SIGUSR1 reopens the access log) and what it tells the service
//! manager (`sd_notify(3)`: `READY=1` once every listener and the admin listener are bound,
//! `RELOADING=1` / `READY=1` around a SIGHUP reload, `STOPPING=1` when the drain starts,
//! `STATUS=` lines, and `WATCHDOG=1` when the unit sets `WatchdogSec=`). Without
//! `NOTIFY_SOCKET` in the environment nothing is sent.

use crate::Gateway;
use std::time::Duration;

/// The signals the process answers, installed before anything is served (a signal that arrives
/// while the gateway starts is handled, not fatal).
pub struct Signals {
    stop: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
    /// SIGUSR1: reopen the access-log file (after logrotate moved it).
    #[cfg(unix)]
    reopen: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers; call it inside the runtime, before the gateway starts.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Signals {
            stop: Box::pin(crate::shutdown_signal()),
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?,
            #[cfg(unix)]
            reopen: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?,
        })
    }
}

/// Tells the service manager the gateway is serving, then serves until SIGTERM/SIGINT
/// (reloading on SIGHUP, reopening the access log on SIGUSR1), then drains.
pub async fn serve(gw: Gateway, signals: Signals) -> anyhow::Result<()> {
    notify(State::Ready, &status(&gw, "serving"));
    start_watchdog();
    #[cfg(unix)]
    let Signals {
        mut stop,
        mut hangup,
        mut reopen,
    } = signals;
    #[cfg(not(unix))]
    let Signals { mut stop } = signals;
    #[cfg(unix)]
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hangup.recv() => reload(&gw).await,
            _ = reopen.recv() => {
                if let Some(log) = &gw.runtime().access_log {
                    match log.reopen() {
                        Ok(()) => tracing::info!("access log reopened (SIGUSR1)"),
                        Err(e) => tracing::error!(error = %e, "cannot reopen the access log; lines keep going to the old file"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    (&mut stop).await;
    let drain = gw.runtime().snapshot().config.drain_timeout.0;
    tracing::info!(
        drain_timeout_ms = drain.as_millis() as u64,
        "shutting down: draining in-flight requests"
    );
    notify(
        State::Stopping,
        &format!("draining in-flight requests (up to {} s)", drain.as_secs()),
    );
    if gw.shutdown(drain).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timeout reached; exiting with requests still in flight");
    }
    Ok(())
}

/// A SIGHUP reload, announced as systemd expects of `ExecReload=`: `RELOADING=1` with the
/// monotonic time, then `READY=1` whatever the outcome (a refused config keeps the running
/// one, so the service is still ready; `STATUS=` says which).
async fn reload(gw: &Gateway) {
    notify(State::Reloading, "reloading the config (SIGHUP)");
    let status = match gw.reload("sighup").await {
        Ok(_) => status(gw, "serving; reloaded"),
        Err(errors) => status(
            gw,
            &format!(
                "serving the previous config; the reload was refused ({} error{})",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            ),
        ),
    };
    notify(State::Ready, &status);
}

/// One `STATUS=` line: what runs, and where.
fn status(gw: &Gateway, what: &str) -> String {
    let listeners: Vec<String> = gw
        .addrs()
        .iter()
        .map(|(name, addr)| format!("{name} on {addr}"))
        .collect();
    let mut s = format!(
        "{what}: config generation {}, {}",
        gw.runtime().snapshot().generation,
        listeners.join(", ")
    );
    if let Some(a) = gw.admin_addr() {
        s.push_str(&format!(", admin on {a}"));
    }
    s
}

/// What the service manager is told, with a `STATUS=` line.
#[derive(Clone, Copy)]
enum State {
    Ready,
    /// With `MONOTONIC_USEC=`, as `Type=notify-reload` wants.
    Reloading,
    Stopping,
}

/// Sends `state` and `status` when there is a service manager to tell (`NOTIFY_SOCKET`). A
/// failure is logged, not fatal: the gateway serves either way.
#[cfg(unix)]
fn notify(state: State, status: &str) {
    use sd_notify::NotifyState;
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut states = match state {
        State::Ready => vec![NotifyState::Ready],
        State::Reloading => vec![NotifyState::Reloading],
        State::Stopping => vec![NotifyState::Stopping],
    };
    if let State::Reloading = state {
        states.extend(NotifyState::monotonic_usec_now().ok());
    }
    states.push(NotifyState::Status(status));
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(not(unix))]
fn notify(_state: State, _status: &str) {}

/// With `WatchdogSec=` set (`WATCHDOG_USEC`), a task on the runtime sends `WATCHDOG=1` at
/// half the interval: a runtime that stops running tasks stops the pings, and systemd restarts
/// the service. The task ends with the runtime.
#[cfg(unix)]
fn start_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog enabled"
    );
    let every = (interval / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                tracing::warn!(error = %e, "cannot ping the systemd watchdog");
            }
        }
    });
}

#[cfg(not(unix))]
fn start_watchdog() {}
