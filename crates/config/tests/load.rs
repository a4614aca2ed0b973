//! Config loading end to end: good files load, bad ones report every problem with position.

use gatehouse_config::load_str;

const GOOD: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
clusters:
  - name: products
    endpoints:
      - address: 127.0.0.1:9001
      - address: 127.0.0.1:9002
        weight: 2
    timeouts: { connect: 1s, request: 250ms }
routes:
  - name: products-api
    match: { path_prefix: /api/products }
    cluster: products
  - name: services
    match: { path_template: "/v1/proxy/{service}" }
    cluster_from_path: { param: service, allow: [products] }
"#;

#[test]
fn good_config_loads_with_defaults() {
    let c = load_str(GOOD, "good.yaml").expect("valid");
    assert_eq!(c.clusters[0].endpoints[1].weight, 2);
    assert_eq!(c.clusters[0].endpoints[0].weight, 1);
    assert_eq!(c.clusters[0].timeouts.request.0.as_millis(), 250);
    assert_eq!(c.clusters[0].timeouts.idle.0.as_secs(), 90);
    assert_eq!(c.listeners[0].limits.max_headers, 100);
    assert_eq!(c.drain_timeout.0.as_secs(), 30);
}

#[test]
fn type_error_names_file_line_column_and_path() {
    let bad = GOOD.replace("weight: 2", "weight: heavy");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    assert_eq!(e.0.len(), 1);
    let e = &e.0[0];
    assert_eq!(e.path, "clusters[0].endpoints[1].weight");
    assert_eq!((e.line, e.col), (10, 17), "{e}");
    assert!(
        e.to_string()
            .starts_with("gw.yaml:10:17: clusters[0].endpoints[1].weight: "),
        "{e}"
    );
    assert!(e.message.contains("heavy"), "{e}");
}

#[test]
fn unknown_key_is_an_error() {
    let bad = GOOD.replace("    timeouts:", "    timeout:");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    assert!(e.0[0].message.contains("timeout"), "{}", e);
    assert_eq!(
        (e.0[0].line, e.0[0].path.as_str()),
        (11, "clusters[0].timeout")
    );
}

#[test]
fn semantic_errors_are_all_reported_with_positions() {
    let bad = GOOD
        .replace("cluster: products", "cluster: product")
        .replace("127.0.0.1:9002", "127.0.0.1:9001")
        .replace("connect: 1s", "connect: 0s");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    let lines: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines.contains(&"gw.yaml:9:9: clusters[0].endpoints[1].address: endpoint 127.0.0.1:9001 is listed twice".to_string()), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("gw.yaml:11:17: clusters[0].timeouts.connect: ")),
        "{lines:#?}"
    );
    assert!(lines.contains(&"gw.yaml:15:5: routes[0].cluster: no cluster named \"product\" (did you mean \"products\"?)".to_string()), "{lines:#?}");
}

#[test]
fn syntax_error_has_position() {
    let e = load_str("listeners: [\n  {name: a", "x.yaml").unwrap_err();
    assert_eq!(e.0[0].line, 2, "{e}");
}

#[test]
fn route_rules() {
    let bad = GOOD.replace(
        "cluster_from_path: { param: service, allow: [products] }",
        "cluster_from_path: { param: svc, allow: [product] }\n    strip_prefix: true",
    );
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    assert!(
        e.0.iter()
            .any(|x| x.path == "routes[1].cluster_from_path.param"),
        "{e}"
    );
    assert!(
        e.0.iter()
            .any(|x| x.path == "routes[1].cluster_from_path.allow[0]"
                && x.message.contains("did you mean \"products\"")),
        "{e}"
    );
}

#[test]
fn route_paths_and_hosts_must_be_in_the_normal_form_requests_are_matched_in() {
    for (m, wanted) in [
        ("path_prefix: '/%7euser'", "write \"/~user\""),
        ("path_prefix: '/caf\u{e9}'", "write \"/caf%C3%A9\""),
        ("path_prefix: /a//private", "write \"/a/private\""),
        ("path_prefix: /a/../private", "write \"/private\""),
        ("path: '/private;x'", "can never match"),
        ("path_template: '/%7Eu/{id}'", "not in normal form"),
        ("host: admin.example.com.", "without a port or trailing dot"),
        (
            "host: 'ops.example.com:8080'",
            "without a port or trailing dot",
        ),
    ] {
        let bad = GOOD.replace(
            "match: { path_prefix: /api/products }",
            &format!("match: {{ {m} }}"),
        );
        let e = load_str(&bad, "gw.yaml").unwrap_err();
        assert!(
            e.0.iter()
                .any(|x| x.path.starts_with("routes[0].match") && x.message.contains(wanted)),
            "{m}: {e}"
        );
    }
}
