//! The gateway as a service process: the signals it answers (SIGTERM/SIGINT drain, SIGHUP
//! reloads the config file, SIGUSR1 reopens the access log) and what it tells the service
//! manager (`sd_notify(3)`: `READY=1` once every listener and the admin listener are bound,
//! `RELOADING=1` / `READY=1` around a SIGHUP reload, `STOPPING=1` when the drain starts,
//! `STATUS=` lines, and `WATCHDOG=1` when the unit sets `WatchdogSec=`). Without
//! `NOTIFY_SOCKET` in the environment nothing is sent.
//!
//! With an upgrade socket ([`crate::upgrade::Offer`]) it also hands its listening sockets to a
//! new process that asks, then drains and returns; a process that took over sends `MAINPID=`
//! with its own pid alongside its `READY=1`, so systemd follows the new process.

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

/// How [`serve`] takes part in binary upgrades.
#[derive(Default)]
pub struct Upgrades {
    /// Where this process offers its sockets to a new one (`--upgrade-socket`).
    #[cfg(unix)]
    pub offer: Option<crate::upgrade::Offer>,
    /// The pid of the process this one took over from (`--upgrade-from`).
    pub took_over_from: Option<u32>,
}

/// A handover under way: the hello is sent, the new process's `ready` awaited.
#[cfg(unix)]
type Handing = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<u32>> + Send>>;

/// Tells the service manager the gateway is serving, then serves until SIGTERM/SIGINT
/// (reloading on SIGHUP, reopening the access log on SIGUSR1) or until a new process has
/// taken its sockets over, then drains.
pub async fn serve(gw: Gateway, signals: Signals, upgrades: Upgrades) -> anyhow::Result<()> {
    match upgrades.took_over_from {
        Some(pid) => notify(
            State::TookOver,
            &status(&gw, &format!("serving; took over from pid {pid}")),
        ),
        None => notify(State::Ready, &status(&gw, "serving")),
    }
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
    let offer = upgrades.offer;
    #[cfg(unix)]
    let mut handing: Option<Handing> = None;
    #[cfg(unix)]
    let mut handed_to = None;
    #[cfg(unix)]
    loop {
        tokio::select! {
            _ = &mut stop => break,
            conn = next_upgrade(offer.as_ref()) => match conn {
                Ok(stream) if handing.is_some() => {
                    tokio::spawn(crate::upgrade::refuse(stream, "an upgrade is already in progress"));
                }
                Ok(stream) => match gw.offer() {
                    Ok(sockets) => {
                        tracing::info!("upgrade: a new process asks for the listening sockets");
                        let endpoints = crate::upgrade::state::export(gw.runtime());
                        handing = Some(Box::pin(crate::upgrade::hand_over(stream, sockets, endpoints)));
                    }
                    Err(e) => tracing::error!(error = %e, "upgrade refused: cannot offer the listening sockets"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            done = async {
                match handing.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            }, if handing.is_some() => {
                handing = None;
                match done {
                    Ok(pid) => {
                        handed_to = Some(pid);
                        break;
                    }
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "upgrade failed; this process keeps serving"),
                }
            }
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
    #[cfg(unix)]
    if let Some(pid) = handed_to {
        // The path is the new process's now: it replaces or removes it.
        if let Some(o) = offer {
            o.handed_over();
        }
        tracing::info!(
            new_pid = pid,
            drain_timeout_ms = drain.as_millis() as u64,
            "upgrade: handed over to the new process; draining"
        );
        notify(
            State::Stopping,
            &format!(
                "handed over to pid {pid}; draining (up to {} s)",
                drain.as_secs()
            ),
        );
        if gw.hand_over(drain).await {
            tracing::info!("drained; exiting");
        } else {
            tracing::warn!("drain timeout reached; exiting with connections still open");
        }
        return Ok(());
    }
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

/// The next connection on the upgrade socket; never, without one.
#[cfg(unix)]
async fn next_upgrade(
    offer: Option<&crate::upgrade::Offer>,
) -> std::io::Result<tokio::net::UnixStream> {
    match offer {
        Some(o) => o.accept().await,
        None => std::future::pending().await,
    }
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
    /// Ready, as the service's new main process (`MAINPID=` with this pid).
    TookOver,
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
        State::TookOver => vec![NotifyState::MainPid(std::process::id()), NotifyState::Ready],
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
