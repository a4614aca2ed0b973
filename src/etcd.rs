//! A small etcd v3 client over etcd's own JSON API (the gRPC gateway at `/v3/...`, served by
//! every etcd since 3.4 on its client URL): read a key or a prefix with its revision, and wait
//! for the next change after a revision. Discovery (`endpoints_from: {etcd: ...}`) and the
//! config source (`run --config-etcd`) use it.
//!
//! Why not the `etcd-client` crate: it generates its gRPC code at build time with `protoc`,
//! which a machine with only the Rust toolchain does not have, so `cargo install` would fail.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a request to etcd may take (a watch is given longer: it waits for a change, but
/// its connection and first answer are bounded by this too).
const TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer (or watch line) read from etcd. etcd refuses requests over 1.5 MiB by
/// default, so a value is smaller; this leaves room for a prefix of many thousand keys while
/// keeping a broken or hostile server from filling memory.
pub const MAX_ANSWER: usize = 32 << 20;

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The keys read and the store's revision at the time.
#[derive(Clone, Debug, Default)]
pub struct Range {
    pub kvs: Vec<Kv>,
    pub revision: i64,
}

#[derive(Clone, Debug)]
pub struct Client {
    /// `http://host:port`, tried in order, starting with the last that answered.
    endpoints: Vec<String>,
    /// The index of the member that answered last: a hung member listed first would
    /// otherwise cost every request its timeout.
    answered: Arc<AtomicUsize>,
}

impl Client {
    pub fn new(endpoints: Vec<String>) -> Self {
        Client {
            endpoints,
            answered: Arc::default(),
        }
    }

    /// The members, the one that answered last first.
    fn members(&self) -> impl Iterator<Item = (usize, &str)> {
        let n = self.endpoints.len();
        let first = self.answered.load(Ordering::Relaxed);
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, self.endpoints[i].as_str())
        })
    }

    /// The key, or every key under `key` when `prefix`.
    pub async fn range(&self, key: &str, prefix: bool) -> Result<Range, String> {
        let mut body = json!({ "key": B64.encode(key) });
        if prefix {
            body["range_end"] = json!(B64.encode(prefix_end(key.as_bytes())));
        }
        let v = self.call("/v3/kv/range", &body).await?;
        let revision = number(&v["header"]["revision"]);
        let mut kvs = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let key = decode(&kv["key"])?;
            kvs.push(Kv {
                key: String::from_utf8_lossy(&key).into_owned(),
                value: decode(&kv["value"])?,
                mod_revision: number(&kv["mod_revision"]),
            });
        }
        Ok(Range { kvs, revision })
    }

    /// Writes a key (tests and tools).
    pub async fn put(&self, key: &str, value: &str) -> Result<i64, String> {
        let v = self
            .call(
                "/v3/kv/put",
                &json!({"key": B64.encode(key), "value": B64.encode(value)}),
            )
            .await?;
        Ok(number(&v["header"]["revision"]))
    }

    /// Returns the revision of the first change to the key (or a key under it) after
    /// `revision`, or `None` after `within` with no change. `Err` when etcd cannot be reached
    /// or the watch breaks.
    pub async fn changed_after(
        &self,
        key: &str,
        prefix: bool,
        revision: i64,
        within: Duration,
    ) -> Result<Option<i64>, String> {
        let mut create = json!({
            "key": B64.encode(key),
            "start_revision": (revision + 1).to_string(),
        });
        if prefix {
            create["range_end"] = json!(B64.encode(prefix_end(key.as_bytes())));
        }
        let body = json!({ "create_request": create });
        let mut last = "no etcd endpoints".to_string();
        for (i, base) in self.members() {
            // The connection and etcd's first answer ("created") are bounded like any request,
            // so that a hung member hands over to the next instead of taking all of `within`.
            let resp = match tokio::time::timeout(TIMEOUT, send(base, "/v3/watch", &body)).await {
                Ok(Ok(resp)) => resp,
                Ok(Err(e)) => {
                    last = e;
                    continue;
                }
                Err(_) => {
                    last = format!("{base}/v3/watch: no answer within {TIMEOUT:?}");
                    continue;
                }
            };
            self.answered.store(i, Ordering::Relaxed);
            match tokio::time::timeout(within, first_change(base, resp)).await {
                Err(_) => return Ok(None),
                Ok(Ok(changed)) => return Ok(changed),
                Ok(Err(e)) => last = e,
            }
        }
        Err(last)
    }

    /// POSTs `body` to `path` on the first endpoint that answers.
    async fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let mut last = "no etcd endpoints".to_string();
        for (i, base) in self.members() {
            let attempt = async {
                let resp = send(base, path, body).await?;
                let bytes = Limited::new(resp.into_body(), MAX_ANSWER)
                    .collect()
                    .await
                    .map_err(|e| too_large_or(e, &format!("{base}{path}")))?
                    .to_bytes();
                serde_json::from_slice::<Value>(&bytes)
                    .map_err(|e| format!("{base}{path}: not JSON: {e}"))
            };
            match tokio::time::timeout(TIMEOUT, attempt).await {
                Ok(Ok(v)) if v.get("error").is_none() && v.get("code").is_none() => {
                    self.answered.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Ok(v)) => last = format!("{base}{path}: {}", v["message"]),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("{base}{path}: no answer within {TIMEOUT:?}"),
            }
        }
        Err(last)
    }
}

/// Reads a watch's stream until the first line that reports a change (or a compaction) and
/// returns the store's revision then. Lines are bounded by [`MAX_ANSWER`].
async fn first_change(
    base: &str,
    mut resp: hyper::Response<hyper::body::Incoming>,
) -> Result<Option<i64>, String> {
    let mut pending = Vec::new();
    // How much of `pending` is known to hold no newline: each byte is looked at once, or a
    // long line sent in small frames would be scanned again and again.
    let mut scanned = 0;
    while let Some(frame) = resp.frame().await {
        let frame = frame.map_err(|e| format!("{base}: watch: {e}"))?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=scanned + at).collect();
            scanned = 0;
            let v: Value = serde_json::from_slice(&line)
                .map_err(|e| format!("{base}: watch: not JSON: {e}"))?;
            if v.get("error").is_some() {
                return Err(format!("{base}: watch: {}", v["error"]));
            }
            let events = v["result"]["events"].as_array().map_or(0, Vec::len);
            if events > 0 || v["result"]["compact_revision"].is_string() {
                return Ok(Some(number(&v["result"]["header"]["revision"])));
            }
        }
        scanned = pending.len();
        if pending.len() > MAX_ANSWER {
            return Err(format!(
                "{base}: watch: a line longer than {MAX_ANSWER} bytes"
            ));
        }
    }
    Err(format!("{base}: watch ended"))
}

/// A body error, named "larger than" when it is [`MAX_ANSWER`] that stopped it.
fn too_large_or(e: Box<dyn std::error::Error + Send + Sync>, at: &str) -> String {
    if e.is::<LengthLimitError>() {
        format!("{at}: the answer is larger than {MAX_ANSWER} bytes")
    } else {
        format!("{at}: {e}")
    }
}

/// One request on a connection of its own (etcd requests are rare: at start, on a change).
async fn send(
    base: &str,
    path: &str,
    body: &Value,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: only http:// etcd endpoints are supported"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{base}: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{base}{path}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "{base}{path}: {status}: {}",
            String::from_utf8_lossy(&text)
        ));
    }
    Ok(resp)
}

/// The end of the range of keys that start with `prefix` (etcd's "prefix + 1").
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// etcd's JSON writes 64-bit numbers as strings.
fn number(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

fn decode(v: &Value) -> Result<Vec<u8>, String> {
    match v.as_str() {
        None => Ok(Vec::new()),
        Some(s) => B64
            .decode(s)
            .map_err(|e| format!("etcd sent bad base64: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(super::prefix_end(b"/services/shop/"), b"/services/shop0");
        assert_eq!(super::prefix_end(b"a\xff"), b"b");
        assert_eq!(super::prefix_end(b"\xff"), vec![0]);
    }
}
