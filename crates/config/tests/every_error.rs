//! Every problem in a file at once (type errors, unknown keys and semantic problems together),
//! and `${VAR}` interpolation with its errors and redaction.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use gatehouse_config::{load_str, load_str_with_env};

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
"#;

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_type_error_does_not_hide_an_unknown_key_or_a_semantic_error() {
    let bad = GOOD
        .replace("weight: 2", "weight: heavy")
        .replace("timeouts: {", "retires: 3\n    timeouts: {")
        .replace("cluster: products", "cluster: nosuch");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    let text = e.to_string();
    assert_eq!(e.0.len(), 3, "{text}");
    assert_eq!(e.0[0].path, "clusters[0].endpoints[1].weight");
    assert_eq!(e.0[0].line, line_of(&bad, "heavy"));
    assert!(e.0[0].message.contains("heavy"), "{text}");
    assert_eq!(e.0[1].path, "clusters[0].retires");
    assert_eq!(e.0[1].line, line_of(&bad, "retires"));
    assert!(e.0[1].message.contains("unknown field"), "{text}");
    assert_eq!(e.0[2].path, "routes[0].cluster");
    assert_eq!(e.0[2].line, line_of(&bad, "nosuch"));
}

#[test]
fn cutting_a_required_field_is_not_reported_as_missing() {
    // `name` has the wrong type; that it is then "missing" is not a second problem.
    let bad = GOOD.replace("- name: products\n", "- name: [products]\n");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    assert!(!e.to_string().contains("missing field"), "{e}");
    assert_eq!(e.0[0].path, "clusters[0].name");
}

#[test]
fn many_errors_in_flow_and_block_style() {
    let bad = GOOD
        .replace("connect: 1s", "connect: fast")
        .replace("request: 250ms", "request: 250ms, colour: red")
        .replace(
            "path_prefix: /api/products",
            "path_prefix: /api/products, hots: x",
        );
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "clusters[0].timeouts.connect",
            "clusters[0].timeouts.colour",
            "routes[0].match.hots"
        ],
        "{e}"
    );
}

fn env(name: &str) -> Option<String> {
    match name {
        "API_PORT" => Some("9001".into()),
        "GH_WEIGHT" => Some("3".into()),
        "REDIS_URL" => Some("redis://:hunter2-secret@127.0.0.1:6379".into()),
        "RATE_LIMIT" => Some("100-M".into()),
        _ => None,
    }
}

#[test]
fn variables_fill_strings_and_numbers_in_block_and_flow_style() {
    let text = GOOD
        .replace("127.0.0.1:9001", "127.0.0.1:${API_PORT}")
        .replace("weight: 2", "weight: ${GH_WEIGHT}")
        .replace("request: 250ms", "request: ${REQ_TIMEOUT:-750ms}")
        + "redis: { url: \"${REDIS_URL}\" }\nrate_limits:\n  - { name: per-ip, rate: ${RATE_LIMIT} }\n";
    let c = load_str_with_env(&text, "gw.yaml", &env).expect("valid");
    assert_eq!(c.clusters[0].endpoints[0].address, "127.0.0.1:9001");
    assert_eq!(c.clusters[0].endpoints[1].weight, 3);
    assert_eq!(c.clusters[0].timeouts.request.0.as_millis(), 750);
    assert_eq!(c.rate_limits[0].rate, "100-M");
    assert_eq!(
        c.redis.as_ref().unwrap().url,
        "redis://:hunter2-secret@127.0.0.1:6379"
    );
    assert!(c.secrets.iter().any(|s| s.shown == "${REDIS_URL}"));
}

#[test]
fn an_unset_variable_is_an_error_at_its_line() {
    let text = GOOD.replace("127.0.0.1:9002", "${BACKEND_B}");
    let e = load_str_with_env(&text, "gw.yaml", &env).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].line, line_of(&text, "BACKEND_B"));
    assert!(e.0[0].message.contains("BACKEND_B is not set"), "{e}");
    assert_eq!(e.0[0].path, "clusters[0].endpoints[1].address");
}

#[test]
fn a_secret_never_appears_in_an_error() {
    // The value from the environment is wrong for the field; the error shows the variable.
    let text = GOOD.replace("weight: 2", "weight: \"${REDIS_URL}\"");
    let e = load_str_with_env(&text, "gw.yaml", &env).unwrap_err();
    let shown = e.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("weight"), "{shown}");
}

#[test]
fn a_block_map_left_empty_and_a_required_field_do_not_end_the_search() {
    let bad = r#"
listeners:
  - name: [public]
    address: 127.0.0.1:8080
clusters:
  - name: app
    endpoints:
      - address: 127.0.0.1:1
    timeouts:
      connect: soon
routes:
  - name: r
    cluster: app
    strip_prefix: nope
"#;
    let e = load_str(bad, "gw.yaml").unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "listeners[0].name",
            "clusters[0].timeouts.connect",
            "routes[0].strip_prefix"
        ],
        "{e}"
    );
    assert_eq!(e.0[2].line, line_of(bad, "strip_prefix"));
}

#[test]
fn cut_list_items_keep_the_indexes_of_the_file() {
    let bad = r#"
listeners: [{name: l, address: "127.0.0.1:0"}]
rate_limits: [{name: rl, rate: 1/s}]
routes:
  - name: r
    direct_response: {status: 200}
    filters:
      - {rate_limit: rl}
      - {nope: 1}
      - {cache: {max_entry_bytes: huge}}
"#;
    let e = load_str(bad, "gw.yaml").unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths[0], "routes[0].filters[1].nope", "{e}");
    assert!(paths[1].starts_with("routes[0].filters[2].cache"), "{e}");
    assert_eq!(paths.len(), 2, "{e}");
}

#[test]
fn a_block_scalar_before_the_next_key_is_cut_cleanly() {
    let bad = "listeners: [{name: l, address: \"127.0.0.1:0\"}]\nclusters:\n  - name: c\n    endpoints: [{address: \"127.0.0.1:1\"}]\n    health_check:\n      timeout: >\n        soon\n    lb: nope\n";
    let e = load_str(bad, "gw.yaml").unwrap_err();
    let paths: Vec<&str> = e.0.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["clusters[0].health_check.timeout", "clusters[0].lb"],
        "{e}"
    );
}

#[test]
fn forty_errors_end_with_a_notice() {
    let mut bad = String::from("listeners: [{name: l, address: \"127.0.0.1:0\"}]\nclusters:\n");
    for i in 0..40 {
        bad.push_str(&format!(
            "  - {{name: c{i}, endpoints: [{{address: \"127.0.0.1:1\", weight: heavy}}]}}\n"
        ));
    }
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    assert!(e.0.len() >= 32, "{e}");
    assert!(
        e.0.last()
            .unwrap()
            .message
            .contains("more problems may follow"),
        "{e}"
    );
}

#[test]
fn messages_use_words_not_rust_types() {
    let bad = GOOD
        .replace("weight: 2", "weight: heavy")
        .replace("- name: products\n", "- name: ~\n");
    let text = load_str(&bad, "gw.yaml").unwrap_err().to_string();
    for jargon in ["u32", "Option<", "scalar"] {
        assert!(!text.contains(jargon), "{text}");
    }
    assert!(text.contains("weight: expected a whole number"), "{text}");
    assert!(
        text.contains("expected a text value, found nothing"),
        "{text}"
    );
    // The cluster without a name was cut out to read on; the route naming it is not blamed.
    assert!(!text.contains("no cluster named"), "{text}");
}

#[test]
fn an_acme_section_is_checked_field_by_field_and_replaces_certificates() {
    let with = |acme: &str| {
        GOOD.replace(
            "    address: 127.0.0.1:8080\n",
            &format!("    address: 127.0.0.1:8080\n    tls:\n      acme: {acme}\n"),
        )
    };
    let good = with("{directory: 'https://acme.example/dir', domains: [a.example, b.example], storage: /var/lib/gh}");
    let c = load_str(&good, "gw.yaml").unwrap();
    let acme = c.listeners[0].tls.as_ref().unwrap().acme.as_ref().unwrap();
    assert_eq!(acme.challenge, gatehouse_config::tls::AcmeChallenge::Http01);
    assert!(c.listeners[0].tls.as_ref().unwrap().certificates.is_empty());

    let bad = with("{directory: 'acme.example/dir', domains: ['*.a.example', 'b..example'], storage: ' ', email: nobody, challenge: tls-alpn-01, renew_before: 0s}");
    let e = load_str(&bad, "gw.yaml").unwrap_err();
    let text = e.to_string();
    let paths: Vec<&str> = e.0.iter().map(|p| p.path.as_str()).collect();
    for p in [
        "listeners[0].tls.acme.directory",
        "listeners[0].tls.acme.domains[0]",
        "listeners[0].tls.acme.domains[1]",
        "listeners[0].tls.acme.storage",
        "listeners[0].tls.acme.email",
        "listeners[0].tls.acme.renew_before",
    ] {
        assert!(paths.contains(&p), "{p} missing in:\n{text}");
    }
    assert!(text.contains("dns-01"), "a wildcard says why: {text}");
    assert!(
        text.contains("letsencrypt.org/directory"),
        "the URL error shows one: {text}"
    );

    let none = GOOD.replace(
        "    address: 127.0.0.1:8080\n",
        "    address: 127.0.0.1:8080\n    tls: {min_version: '1.3'}\n",
    );
    let e = load_str(&none, "gw.yaml").unwrap_err().to_string();
    assert!(e.contains("or `acme` to get one"), "{e}");
}
