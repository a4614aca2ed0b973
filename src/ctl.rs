//! `gatehouse ctl`: the admin API from a terminal or a script. One HTTP/1.1 request per
//! command to the admin listener (`--admin`, or `GATEHOUSE_ADMIN`), with the bearer token from
//! `GATEHOUSE_ADMIN_TOKEN` when set; a human table by default, the API's JSON with `--json`.
//! It knows nothing of the gateway's internals: only what the admin API answers.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use std::io::Write;

/// What `ctl` asks.
pub enum Action {
    Status,
    Clusters(Option<String>),
    Drain(String, String),
    Enable(String, String),
    Breaker(String, String, String),
    Reload,
    Events,
    /// `GET /healthz`: exit 0 when the gateway answers `{"status": "ok"}` (the container
    /// image's `HEALTHCHECK`; needs no token).
    Health,
}

/// How long one command waits for its answer (not `events`, which follows until stopped): a
/// health check must fail, not hang, when the gateway stops answering.
const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Where and how to ask.
pub struct Target {
    /// `host:port` of the admin listener (an `http://` prefix is allowed).
    pub admin: String,
    pub token: Option<String>,
    pub json: bool,
}

/// Runs one action; `Err` is the message to print (exit 1).
pub async fn run(target: &Target, action: Action) -> Result<(), String> {
    if let Action::Events = action {
        return ask(target, action).await;
    }
    tokio::time::timeout(DEADLINE, ask(target, action))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "{}: no answer within {} s",
                target.admin,
                DEADLINE.as_secs()
            ))
        })
}

async fn ask(target: &Target, action: Action) -> Result<(), String> {
    let enc = |s: &str| percent_encode(s);
    let (method, path, body) = match &action {
        Action::Status => (Method::GET, "/status".to_string(), None),
        Action::Clusters(None) => (Method::GET, "/clusters".into(), None),
        Action::Clusters(Some(c)) => (Method::GET, format!("/clusters/{}", enc(c)), None),
        Action::Drain(c, a) => (
            Method::POST,
            format!("/clusters/{}/endpoints/{}/drain", enc(c), enc(a)),
            Some("{}".to_string()),
        ),
        Action::Enable(c, a) => (
            Method::POST,
            format!("/clusters/{}/endpoints/{}/enable", enc(c), enc(a)),
            Some("{}".to_string()),
        ),
        Action::Breaker(c, a, state) => (
            Method::POST,
            format!("/clusters/{}/endpoints/{}/breaker", enc(c), enc(a)),
            Some(serde_json::json!({ "state": state }).to_string()),
        ),
        Action::Reload => (Method::POST, "/reload".into(), Some("{}".into())),
        Action::Events => (Method::GET, "/events".into(), None),
        Action::Health => (Method::GET, "/healthz".into(), None),
    };
    let authority = target
        .admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot reach the admin API at {authority}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("{authority}: {e}"))?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(&path)
        .header(hyper::header::HOST, &authority);
    if let Some(t) = &target.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    let status = resp.status();
    if let Action::Events = action {
        if status != StatusCode::OK {
            let text = resp.into_body().collect().await.map(|b| b.to_bytes());
            return Err(error_text(status, &text.unwrap_or_default()));
        }
        return follow(resp.into_body(), target.json).await;
    }
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{authority}: {e}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(error_text(status, &bytes));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    if matches!(action, Action::Health) && v["status"] != "ok" {
        return Err(format!("{authority}: not healthy: {v}"));
    }
    if target.json {
        println!("{v}");
        return Ok(());
    }
    print!("{}", human(&action, &v));
    Ok(())
}

/// `s` as one path segment: everything but unreserved characters and `:` percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The API's `{"error"}` (or the status) as one line.
fn error_text(status: StatusCode, body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    let msg = v
        .as_ref()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .or_else(|| {
            v.as_ref()
                .and_then(|v| v.get("errors"))
                .map(|e| e.to_string())
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    format!("{}: {msg}", status.as_u16())
}

/// Prints each server-sent event as it comes: its JSON line with `--json`, else a short line.
async fn follow(mut body: hyper::body::Incoming, json: bool) -> Result<(), String> {
    let mut pending = String::new();
    let mut out = std::io::stdout();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
            let event: String = pending.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let data = data.trim();
            let line = if json {
                data.to_string()
            } else {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if v["event"] == "traffic" {
                    continue;
                }
                event_line(&v)
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }
    Ok(())
}

fn event_line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let mut line = format!("{}  {:<22}", s("time"), s("event"));
    if !s("cluster").is_empty() {
        line.push_str(&format!(" {}", s("cluster")));
    }
    if !s("endpoint").is_empty() {
        line.push_str(&format!(" {}", s("endpoint")));
    }
    for k in ["reason", "from", "to", "source", "first_error"] {
        if let Some(x) = v[k].as_str() {
            line.push_str(&format!(" {k}={x}"));
        }
    }
    line
}

/// The answer as a table or a sentence.
fn human(action: &Action, v: &Value) -> String {
    match action {
        Action::Status => format!(
            "version {}  uptime {}s  generation {}\n",
            v["version"].as_str().unwrap_or("?"),
            v["uptime_seconds"].as_f64().unwrap_or(0.0).round(),
            v["generation"]
        ),
        Action::Clusters(_) | Action::Drain(..) | Action::Enable(..) | Action::Breaker(..) => {
            let clusters: Vec<&Value> = match v["clusters"].as_array() {
                Some(a) => a.iter().collect(),
                None => vec![v],
            };
            table(&clusters)
        }
        Action::Reload => format!(
            "{} (generation {})\n",
            v["result"].as_str().unwrap_or("?"),
            v["generation"]
        ),
        Action::Events => String::new(),
        Action::Health => format!("{}\n", v["status"].as_str().unwrap_or("?")),
    }
}

/// One row per endpoint, columns padded to their widest cell.
fn table(clusters: &[&Value]) -> String {
    let mut rows = vec![[
        "CLUSTER",
        "ENDPOINT",
        "HEALTH",
        "BREAKER",
        "DRAINED",
        "WEIGHT",
        "IN-FLIGHT",
        "LATENCY",
    ]
    .map(String::from)];
    for c in clusters {
        for e in c["endpoints"].as_array().into_iter().flatten() {
            rows.push([
                c["name"].as_str().unwrap_or("").to_string(),
                e["address"].as_str().unwrap_or("").to_string(),
                e["health"].as_str().unwrap_or("").to_string(),
                e["breaker"].as_str().unwrap_or("").to_string(),
                if e["drained"] == true { "yes" } else { "no" }.to_string(),
                e["weight"].to_string(),
                e["in_flight"].to_string(),
                format!("{:.1}ms", e["latency_ewma_ms"].as_f64().unwrap_or(0.0)),
            ]);
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
