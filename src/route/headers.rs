//! `request_headers` / `response_headers` rules, compiled once per snapshot: names parsed,
//! values without variables made into header values up front, the rest kept as parts filled
//! per request. Pure; applied by the request path.

use gatehouse_config::reply::HeaderRules;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;
use std::sync::Arc;

/// What a value's `%{...}` variables stand for in one request.
pub struct Vars<'a> {
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    pub route: &'a str,
    pub consumer: Option<&'a str>,
}

enum Part {
    Lit(String),
    ClientIp,
    RequestId,
    Route,
    Consumer,
}

enum Value {
    Fixed(HeaderValue),
    Template(Vec<Part>),
}

impl Value {
    fn compile(v: &str) -> Option<Self> {
        if !v.contains("%{") {
            return HeaderValue::from_str(v).ok().map(Value::Fixed);
        }
        let mut parts = Vec::new();
        let mut rest = v;
        while let Some(i) = rest.find("%{") {
            if i > 0 {
                parts.push(Part::Lit(rest[..i].to_string()));
            }
            let after = &rest[i + 2..];
            let end = after.find('}')?;
            parts.push(match &after[..end] {
                "client_ip" => Part::ClientIp,
                "request_id" => Part::RequestId,
                "route" => Part::Route,
                "consumer" => Part::Consumer,
                _ => return None,
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        Some(Value::Template(parts))
    }

    fn eval(&self, vars: &Vars<'_>) -> Option<HeaderValue> {
        let parts = match self {
            Value::Fixed(v) => return Some(v.clone()),
            Value::Template(p) => p,
        };
        let mut s = String::new();
        for p in parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::ClientIp => s.push_str(&vars.client_ip.to_string()),
                Part::RequestId => s.push_str(vars.request_id.to_str().unwrap_or("")),
                Part::Route => s.push_str(vars.route),
                Part::Consumer => s.push_str(vars.consumer.unwrap_or("")),
            }
        }
        HeaderValue::from_str(&s).ok()
    }
}

/// One `{set, add, remove}`, applied as remove, then set, then add.
pub struct HeaderOps {
    set: Vec<(HeaderName, Value)>,
    add: Vec<(HeaderName, Value)>,
    remove: Vec<HeaderName>,
}

impl std::fmt::Debug for HeaderOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderOps")
            .field("set", &self.set.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("add", &self.add.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("remove", &self.remove)
            .finish()
    }
}

impl HeaderOps {
    /// None for empty rules (nothing to do per request). Validated config compiles whole.
    pub fn compile(r: &HeaderRules) -> Option<Arc<Self>> {
        if r.is_empty() {
            return None;
        }
        let name = |n: &str| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok();
        let pairs = |m: &std::collections::BTreeMap<String, String>| {
            m.iter()
                .filter_map(|(n, v)| Some((name(n)?, Value::compile(v)?)))
                .collect()
        };
        Some(Arc::new(HeaderOps {
            set: pairs(&r.set),
            add: pairs(&r.add),
            remove: r.remove.iter().filter_map(|n| name(n)).collect(),
        }))
    }

    pub fn apply(&self, h: &mut HeaderMap, vars: &Vars<'_>) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            match v.eval(vars) {
                Some(v) => {
                    h.insert(n.clone(), v);
                }
                None => {
                    h.remove(n);
                }
            }
        }
        for (n, v) in &self.add {
            if let Some(v) = v.eval(vars) {
                h.append(n.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_remove_set_and_add_with_variables() {
        let rules: HeaderRules = serde_json::from_str(
            r#"{"set": {"X-Route": "%{route}", "x-who": "%{consumer}@%{client_ip}"},
                "add": {"x-tag": "a", "x-id": "req-%{request_id}"},
                "remove": ["x-secret", "X-Route"]}"#,
        )
        .unwrap();
        let ops = HeaderOps::compile(&rules).unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-secret", HeaderValue::from_static("s"));
        h.insert("x-route", HeaderValue::from_static("spoofed"));
        h.insert("x-tag", HeaderValue::from_static("z"));
        let id = HeaderValue::from_static("r1");
        let vars = Vars {
            client_ip: "10.0.0.1".parse().unwrap(),
            request_id: &id,
            route: "api",
            consumer: Some("alice"),
        };
        ops.apply(&mut h, &vars);
        assert!(!h.contains_key("x-secret"));
        assert_eq!(h["x-route"], "api", "set after remove");
        assert_eq!(h["x-who"], "alice@10.0.0.1");
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["z", "a"]);
        assert_eq!(h["x-id"], "req-r1");
        assert!(HeaderOps::compile(&HeaderRules::default()).is_none());
    }
}
