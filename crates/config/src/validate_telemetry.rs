//! Validation of the `tracing:` section (`telemetry.rs`): the OTLP endpoint, its timeout and
//! headers, the sampling ratio, the service name and the queue bound.

use crate::schema::Config;
use crate::telemetry::{Tracing, MAX_QUEUE_LIMIT};

pub fn validate_telemetry(c: &Config, p: &mut impl FnMut(String, String)) {
    if let Some(t) = &c.tracing {
        validate_tracing(t, p);
    }
}

fn validate_tracing(t: &Tracing, p: &mut impl FnMut(String, String)) {
    if let Err(msg) = check_endpoint(&t.otlp.endpoint) {
        p("tracing.otlp.endpoint".into(), msg);
    }
    if t.otlp.timeout.0.is_zero() {
        p(
            "tracing.otlp.timeout".into(),
            "must be greater than 0".into(),
        );
    } else if t.otlp.timeout.0 > std::time::Duration::from_secs(60) {
        p(
            "tracing.otlp.timeout".into(),
            "at most 60s (one export at a time: a hung receiver holds the queue)".into(),
        );
    }
    for (name, value) in &t.otlp.headers {
        let at = format!("tracing.otlp.headers.{name}");
        if !crate::validate::is_token(name) {
            p(at, format!("invalid header name {name:?}"));
        } else if name.eq_ignore_ascii_case("content-type")
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("host")
        {
            p(at, format!("{name} is set by the exporter"));
        } else if !value
            .bytes()
            .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            p(
                at,
                "invalid header value: visible ASCII, spaces and tabs only".into(),
            );
        }
    }
    if !t.sampling_ratio.is_finite() || !(0.0..=1.0).contains(&t.sampling_ratio) {
        p(
            "tracing.sampling_ratio".into(),
            format!(
                "invalid value {}: expected a number from 0.0 (no new trace recorded) to 1.0 (all)",
                t.sampling_ratio
            ),
        );
    }
    if t.service_name.trim().is_empty() {
        p(
            "tracing.service_name".into(),
            "must not be empty (it is the service.name the spans are filed under)".into(),
        );
    }
    if t.max_queue == 0 || t.max_queue > MAX_QUEUE_LIMIT {
        p(
            "tracing.max_queue".into(),
            format!(
                "invalid value {}: expected 1 to {MAX_QUEUE_LIMIT} spans",
                t.max_queue
            ),
        );
    }
}

/// `http://host[:port][/path]`: plain HTTP only (a collector beside the gateway; TLS to a
/// remote one is the collector's job).
fn check_endpoint(e: &str) -> Result<(), String> {
    let example = "expected a URL like http://127.0.0.1:4318/v1/traces";
    let Some(rest) = e.strip_prefix("http://") else {
        if e.starts_with("https://") {
            return Err(format!(
                "{e:?}: https is not supported; send spans to an OpenTelemetry Collector over \
                 http (beside the gateway) and let it forward them over TLS"
            ));
        }
        if e.starts_with("grpc://") {
            return Err(format!(
                "{e:?}: OTLP over gRPC is not supported; use OTLP/HTTP (port 4318 by default)"
            ));
        }
        return Err(format!("invalid endpoint {e:?}: {example}"));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let bad = || format!("invalid endpoint {e:?}: {example}");
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    if let Some(port) = port {
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("invalid endpoint {e:?}: bad port {port:?}"));
        }
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if !host_ok {
        return Err(bad());
    }
    if path
        .bytes()
        .any(|b| !(b'!'..=b'~').contains(&b) || b == b'#')
    {
        return Err(format!(
            "invalid endpoint {e:?}: the path has a space, a control character or a '#'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<(String, String)> {
        let text = format!("listeners: [{{name: l, address: '127.0.0.1:0'}}]\n{yaml}");
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        let mut out = Vec::new();
        validate_telemetry(&c, &mut |path, msg| out.push((path, msg)));
        out
    }

    #[test]
    fn a_good_section_passes_and_defaults_apply() {
        let yaml = "tracing: {otlp: {endpoint: 'http://127.0.0.1:4318/v1/traces'}}\n";
        assert!(problems(yaml).is_empty());
        let text = format!("listeners: []\n{yaml}");
        let c: Config = serde_saphyr::from_str(&text).unwrap();
        let t = c.tracing.unwrap();
        assert_eq!(t.sampling_ratio, 1.0);
        assert_eq!(t.service_name, "gatehouse");
        assert_eq!(t.max_queue, 2048);
        assert_eq!(t.otlp.timeout.0, std::time::Duration::from_secs(5));
        for ok in [
            "http://collector:4318",
            "http://[::1]:4318/v1/traces",
            "http://otel.example/otlp/v1/traces",
        ] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let yaml = "tracing:\n  otlp:\n    endpoint: 'https://c:4318'\n    timeout: 0s\n    \
                    headers: {'bad name': x, content-type: y, x-ok: \"a\\nb\"}\n  \
                    sampling_ratio: 1.5\n  service_name: ''\n  max_queue: 0\n";
        let got = problems(yaml);
        let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "tracing.otlp.endpoint",
                "tracing.otlp.timeout",
                "tracing.otlp.headers.bad name",
                "tracing.otlp.headers.content-type",
                "tracing.otlp.headers.x-ok",
                "tracing.sampling_ratio",
                "tracing.service_name",
                "tracing.max_queue",
            ],
            "{got:?}"
        );
        assert!(got[0].1.contains("https is not supported"), "{}", got[0].1);
    }

    #[test]
    fn bad_endpoints_say_what_is_expected() {
        for bad in [
            "collector:4318",
            "http://",
            "http://c:0/v1/traces",
            "http://c:99999",
            "http://user@c:4318",
            "http://c:4318/v1 traces",
            "http://c_d:4318",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        assert!(check_endpoint("grpc://c:4317")
            .unwrap_err()
            .contains("gRPC is not supported"));
    }
}
