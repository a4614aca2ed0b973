use super::*;
use gatehouse_config::load_str;

fn table(routes_yaml: &str) -> RouteTable {
    let y = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters:\n  - {{name: a, endpoints: [{{address: '127.0.0.1:1'}}]}}\n  - {{name: b, endpoints: [{{address: '127.0.0.1:2'}}]}}\nroutes:\n{routes_yaml}"
    );
    let c = load_str(&y, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    RouteTable::new(&c.routes)
}

fn find(t: &RouteTable, host: &str, path: &str) -> Option<(String, String, Option<String>)> {
    find_m(t, host, path, &Method::GET, &HeaderMap::new())
}

fn find_m(
    t: &RouteTable,
    host: &str,
    path: &str,
    m: &Method,
    h: &HeaderMap,
) -> Option<(String, String, Option<String>)> {
    t.find(&RouteRequest {
        host,
        path,
        query: None,
        method: m,
        headers: h,
        client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        cert: None,
    })
    .map(|x| {
        (
            x.route.name.to_string(),
            x.upstream_path.to_string(),
            x.cluster_from_path.map(str::to_string),
        )
    })
}

#[test]
fn most_specific_wins_then_order() {
    let t = table(
        r#"
  - {name: any, match: {}, cluster: a}
  - {name: prefix-api, match: {path_prefix: /api}, cluster: a}
  - {name: prefix-api-users, match: {path_prefix: /api/users}, cluster: a}
  - {name: tmpl, match: {path_template: "/api/users/{id}"}, cluster: a}
  - {name: exact, match: {path: /api/users/me}, cluster: a}
  - {name: host-exact, match: {host: api.example.com, path_prefix: /}, cluster: b}
  - {name: host-wild, match: {host: "*.example.com", path_prefix: /}, cluster: b}
  - {name: first-of-equal, match: {path_prefix: /dup, methods: [GET]}, cluster: a}
  - {name: second-of-equal, match: {path_prefix: /dup, methods: [GET, POST]}, cluster: b}
"#,
    );
    let name = |h: &str, p: &str| find(&t, h, p).map(|x| x.0);
    assert_eq!(name("x", "/api/users/me").as_deref(), Some("exact"));
    assert_eq!(name("x", "/api/users/42").as_deref(), Some("tmpl"));
    assert_eq!(
        name("x", "/api/users/42/orders").as_deref(),
        Some("prefix-api-users")
    );
    assert_eq!(name("x", "/api/other").as_deref(), Some("prefix-api"));
    assert_eq!(
        name("x", "/apix").as_deref(),
        Some("any"),
        "prefix is segment-aware"
    );
    assert_eq!(
        name("api.example.com", "/api").as_deref(),
        Some("host-exact")
    );
    assert_eq!(
        name("API.Example.com:8080", "/z").as_deref(),
        Some("host-exact")
    );
    assert_eq!(
        name("w.example.com", "/api/users/me").as_deref(),
        Some("host-wild")
    );
    assert_eq!(
        name("example.com", "/q").as_deref(),
        Some("any"),
        "wildcard needs a label"
    );
    assert_eq!(name("x", "/dup/1").as_deref(), Some("first-of-equal"));
}

#[test]
fn methods_and_headers() {
    let t = table(
        r#"
  - {name: get, match: {path_prefix: /m, methods: [GET]}, cluster: a}
  - {name: v2, match: {path_prefix: /m, headers: {x-version: v2}}, cluster: b}
  - {name: fallback, match: {path_prefix: /m}, cluster: a}
"#,
    );
    let mut h = HeaderMap::new();
    assert_eq!(
        find_m(&t, "h", "/m", &Method::POST, &h).unwrap().0,
        "fallback"
    );
    assert_eq!(find_m(&t, "h", "/m", &Method::GET, &h).unwrap().0, "get");
    h.insert("x-version", "v2".parse().unwrap());
    assert_eq!(
        find_m(&t, "h", "/m", &Method::GET, &h).unwrap().0,
        "v2",
        "headers outrank methods"
    );
    h.insert("x-version", "v3".parse().unwrap());
    assert_eq!(
        find_m(&t, "h", "/m", &Method::POST, &h).unwrap().0,
        "fallback"
    );
}

#[test]
fn strip_prefix_and_templates() {
    let t = table(
        r#"
  - {name: p, match: {path_prefix: /api/products}, cluster: a, strip_prefix: true}
  - {name: svc, match: {path_template: "/v1/proxy/{service}"}, cluster_from_path: {param: service, allow: [a]}}
  - {name: svc-rest, match: {path_template: "/v2/proxy/{service}/{*rest}"}, cluster_from_path: {param: service, allow: [a]}, strip_prefix: true}
"#,
    );
    assert_eq!(find(&t, "h", "/api/products").unwrap().1, "/");
    assert_eq!(find(&t, "h", "/api/products/7").unwrap().1, "/7");
    assert_eq!(
        find(&t, "h", "/v1/proxy/product").unwrap(),
        (
            "svc".into(),
            "/v1/proxy/product".into(),
            Some("product".into())
        )
    );
    assert!(find(&t, "h", "/v1/proxy/").is_none());
    assert!(find(&t, "h", "/v1/proxy/product/extra").is_none());
    assert_eq!(
        find(&t, "h", "/v2/proxy/b/items/1").unwrap(),
        ("svc-rest".into(), "/items/1".into(), Some("b".into()))
    );
    assert_eq!(find(&t, "h", "/v2/proxy/b").unwrap().1, "/");
    assert!(find(&t, "h", "/nothing").is_none());
}
