//! Hot reload: a config source (file change, SIGHUP, `POST /reload`) → read and validate with the
//! same code as `gatehouse check` → on any error keep running the old snapshot, log every error
//! with its position, count it, show it in `GET /config` → else reconcile listeners, build and
//! swap the snapshot (runtime state of unchanged identities carries over) and announce it.

pub mod certs;

use crate::listener::Listeners;
use crate::runtime::Runtime;
use gatehouse_config::Config;
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub source: String,
    pub at: Option<String>,
    pub result: Option<&'static str>,
    pub errors: Vec<String>,
    pub successes: u64,
    pub failures: u64,
}

/// Where the config comes from.
pub enum Source {
    /// A file, watched.
    File(PathBuf),
    /// One etcd key holding the whole file, watched (`run --config-etcd`); the key's
    /// `mod_revision` is the config's generation, so instances on one key agree on it.
    Etcd {
        client: crate::etcd::Client,
        key: String,
    },
}

impl Source {
    /// How errors and `GET /config` name it.
    pub fn name(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Etcd { key, .. } => format!("etcd:{key}"),
        }
    }

    /// The config's text, and its etcd revision.
    pub async fn read(&self) -> Result<(String, Option<u64>), String> {
        match self {
            Source::File(p) => std::fs::read_to_string(p)
                .map(|t| (t, None))
                .map_err(|e| format!("{}: cannot read file: {e}", p.display())),
            Source::Etcd { client, key } => {
                let range = client.range(key, false).await?;
                let kv = range
                    .kvs
                    .into_iter()
                    .next()
                    .ok_or_else(|| format!("etcd has no key {key:?}"))?;
                let text = String::from_utf8(kv.value)
                    .map_err(|_| format!("etcd:{key}: the value is not UTF-8"))?;
                Ok((text, Some(kv.mod_revision.max(1) as u64)))
            }
        }
    }

    /// Parses and validates text read from this source.
    pub fn load(&self, text: &str) -> Result<Config, gatehouse_config::ConfigErrors> {
        match self {
            Source::File(p) => gatehouse_config::load_str_at(text, p),
            Source::Etcd { .. } => gatehouse_config::load_str(text, &self.name()),
        }
    }
}

pub struct Reloader {
    source: Source,
    runtime: Arc<Runtime>,
    listeners: Arc<Listeners>,
    /// One reload at a time, in the order asked.
    serial: tokio::sync::Mutex<()>,
    report: Mutex<Report>,
    /// The text of the running config (the last load that took).
    last_text: Mutex<Option<String>>,
    /// The text the file watcher last tried, taken or refused: a refused file is not tried
    /// again until it changes.
    last_tried: Mutex<Option<String>>,
}

impl Reloader {
    pub fn new(
        source: Source,
        runtime: Arc<Runtime>,
        listeners: Arc<Listeners>,
        loaded_text: Option<String>,
    ) -> Self {
        Reloader {
            source,
            runtime,
            listeners,
            serial: tokio::sync::Mutex::new(()),
            report: Mutex::new(Report::default()),
            last_tried: Mutex::new(loaded_text.clone()),
            last_text: Mutex::new(loaded_text),
        }
    }

    /// The config file, when the config comes from one.
    pub fn path(&self) -> Option<&Path> {
        match &self.source {
            Source::File(p) => Some(p),
            Source::Etcd { .. } => None,
        }
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn report(&self) -> Report {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reloads only if the file's text changed since the watcher last tried it (file watching
    /// sees many events per save). A file put back as the running config after a refused
    /// edit is loaded again, so that the report no longer shows the refusal. Returns whether a
    /// reload ran.
    pub async fn reload_if_changed(&self, source: &str) -> bool {
        let text = self.source.read().await.ok().map(|(t, _)| t);
        if text.is_none() {
            return false;
        }
        {
            let mut tried = self.last_tried.lock().unwrap_or_else(|e| e.into_inner());
            if *tried == text {
                return false;
            }
            tried.clone_from(&text);
        }
        let _ = self.reload(source).await;
        true
    }

    /// Reads, validates and applies the file. On error nothing changes.
    pub async fn reload(&self, source: &str) -> Result<u64, Vec<String>> {
        let _one = self.serial.lock().await;
        let name = self.source.name();
        let read = self.source.read().await;
        let strings = |e: gatehouse_config::ConfigErrors| -> Vec<String> {
            e.0.iter().map(ToString::to_string).collect()
        };
        let result = match &read {
            Ok((t, revision)) => self.source.load(t).map_err(strings).and_then(|config| {
                log_warnings(t, &name, &config);
                // Build and publish the snapshot before touching listeners: a snapshot that
                // cannot be built leaves everything as it was.
                let listeners = config.listeners.clone();
                self.runtime
                    .apply_as(config, *revision)
                    .map(|g| (g, listeners))
                    .map_err(|p| strings(gatehouse_config::locate(t, &name, p)))
            }),
            Err(e) => Err(vec![e.clone()]),
        };
        let text = read.map(|(t, _)| t);
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        if let Ok(t) = &text {
            *self.last_tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
        }
        match result {
            Ok((generation, listeners)) => {
                let listener_errors = self.listeners.reconcile(&listeners);
                *self.last_text.lock().unwrap_or_else(|e| e.into_inner()) = text.ok();
                let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                r.source = source.into();
                r.at = Some(now);
                r.result = Some("ok");
                r.errors = listener_errors.clone();
                r.successes += 1;
                drop(r);
                for e in &listener_errors {
                    tracing::error!(error = %e, "reload: listener not started");
                }
                tracing::info!(generation, source, "config reloaded");
                self.runtime.events.emit(
                    "config_reloaded",
                    "",
                    None,
                    json!({"generation": generation, "source": source}),
                );
                Ok(generation)
            }
            Err(errors) => {
                for e in &errors {
                    tracing::error!(error = %e, source, "config reload refused; the running config stays");
                }
                let mut r = self.report.lock().unwrap_or_else(|e| e.into_inner());
                r.source = source.into();
                r.at = Some(now);
                r.result = Some("error");
                r.errors = errors.clone();
                r.failures += 1;
                drop(r);
                self.runtime.events.emit(
                    "config_reload_failed",
                    "",
                    None,
                    json!({"errors": errors.len(), "source": source, "first_error": errors.first()}),
                );
                Err(errors)
            }
        }
    }
}

/// The effective config as JSON with secrets redacted (API-key digests, Redis passwords).
pub fn redacted(c: &Config) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Some(consumers) = v.get_mut("consumers").and_then(Value::as_array_mut) {
        for c in consumers {
            if let Some(keys) = c.get_mut("api_keys").and_then(Value::as_array_mut) {
                for k in keys.iter_mut() {
                    *k = json!("sha256:<redacted>");
                }
            }
        }
    }
    if !c.secrets.is_empty() {
        hide_secrets(&mut v, &c.secrets);
    }
    // OTLP headers carry API keys for hosted tracing backends.
    if let Some(headers) = v
        .pointer_mut("/tracing/otlp/headers")
        .and_then(Value::as_object_mut)
    {
        for h in headers.values_mut() {
            *h = json!("<redacted>");
        }
    }
    if let Some(url) = v.pointer_mut("/redis/url") {
        if let Some(s) = url.as_str() {
            if let Some((scheme, rest)) = s.split_once("://") {
                // The password may itself hold '@': the host is after the last one.
                if let Some((_, host)) = rest.rsplit_once('@') {
                    *url = json!(format!("{scheme}://<redacted>@{host}"));
                }
            }
        }
    }
    v
}

/// Shows `${VAR}` (or where a file secret came from) wherever its value would be.
fn hide_secrets(v: &mut Value, secrets: &[gatehouse_config::interpolate::Secret]) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(o) = gatehouse_config::interpolate::redact(s, secrets) {
                *s = o;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| hide_secrets(x, secrets)),
        Value::Object(m) => m.values_mut().for_each(|x| hide_secrets(x, secrets)),
        _ => {}
    }
}

/// Watches the config file's directory (editors save by rename, Kubernetes swaps a symlink) and
/// reloads when the file's text changes.
pub fn watch(reloader: Arc<Reloader>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dir = reloader
        .path()?
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reading the file (each reload does) is an event too: only changes count, or a
        // refused file would be read, refused and read again forever.
        if res.is_ok_and(|e| e.kind.is_access()) {
            return;
        }
        let _ = tx.try_send(());
    })
    .ok()?;
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP or POST /reload");
        return None;
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Let a burst of events (write, rename, chmod) settle, then look once.
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
            while rx.try_recv().is_ok() {}
            reloader.reload_if_changed("file").await;
        }
    });
    Some(watcher)
}

/// Logs what the config allows but an operator should look at (`gatehouse check` prints the
/// same lines).
pub fn log_warnings(text: &str, name: &str, config: &gatehouse_config::Config) {
    for w in gatehouse_config::warnings(text, name, config).0 {
        tracing::warn!(warning = %w, "config warning");
    }
}

/// Watches the etcd key the config comes from: each change after the running revision is
/// reloaded as a file change would be (validated; refused, the running config stays; a
/// deleted key is refused too). A broken watch is made again after a second, from the last
/// revision looked at, so a change made meanwhile is not missed.
pub fn watch_etcd(reloader: Arc<Reloader>) {
    let Source::Etcd { client, key } = reloader.source() else {
        return;
    };
    let (client, key) = (client.clone(), key.clone());
    tokio::spawn(async move {
        // The last revision looked at: a refused config is not looked at again until the key
        // changes once more.
        let mut seen = reloader.runtime.snapshot().generation as i64;
        loop {
            match client
                .changed_after(&key, false, seen, std::time::Duration::from_secs(60))
                .await
            {
                // The change is marked seen only once the key could be read: a read that fails
                // (etcd restarting) would otherwise lose it, as the next watch starts after it.
                Ok(Some(revision)) => match client.range(&key, false).await {
                    Err(e) => {
                        tracing::warn!(key, error = %e, "cannot read the changed config key from etcd; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    // Each watched change is a new revision, so it is reloaded even when the
                    // text is the same: the generation then follows the key's revision, as on
                    // an instance started now. A deleted key is refused (the report says why).
                    Ok(_) => {
                        seen = seen.max(revision);
                        let _ = reloader.reload("etcd").await;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot watch the config key in etcd; trying again");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_redis_password_with_an_at_sign_is_redacted_whole() {
        let c = gatehouse_config::load_str(
            "listeners: [{name: l, address: '127.0.0.1:0'}]\nredis: {url: 'redis://user:pa@ss@cache.internal:6379/0'}\n",
            "t",
        )
        .unwrap();
        let v = super::redacted(&c);
        assert_eq!(
            v["redis"]["url"],
            "redis://<redacted>@cache.internal:6379/0"
        );
        assert!(!v.to_string().contains("ss@"), "{v}");
    }
}
