//! Criterion benchmarks of the per-request hot functions: path normalization and the rest of
//! the canonical request, route match, endpoint pick, request-ID and trace-context generation;
//! and the once-a-second traffic summary the admin listener always makes and keeps.

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::observe::ids::{request_id, TraceContext};
use gatehouse::route::{RouteRequest, RouteTable};
use http::{HeaderMap, Method};
use std::hint::black_box;

fn config(routes: usize, endpoints: usize) -> gatehouse_config::Config {
    let eps: String = (0..endpoints)
        .map(|i| format!("      - address: 127.0.0.1:{}\n", 10000 + i))
        .collect();
    let mut y = format!("listeners: [{{name: l, address: '127.0.0.1:0'}}]\nclusters:\n  - name: c\n    endpoints:\n{eps}routes:\n");
    for i in 0..routes {
        y += &format!("  - {{name: r{i}, match: {{path_prefix: /svc{i}/api}}, cluster: c}}\n");
        y += &format!(
            "  - {{name: t{i}, match: {{path_template: '/svc{i}/users/{{id}}'}}, cluster: c}}\n"
        );
        y += &format!(
            "  - {{name: h{i}, match: {{host: 'h{i}.example.com', path_prefix: /}}, cluster: c}}\n"
        );
    }
    gatehouse_config::load_str(&y, "bench").expect("valid bench config")
}

/// `n` groups of three routes (a prefix, a template and a host route), parsed without the
/// config's cross-route checks (its shadow check is quadratic: 10,000 routes take a while).
fn route_table(n: usize) -> RouteTable {
    let mut y = String::new();
    for i in 0..n {
        y += &format!("- {{name: r{i}, match: {{path_prefix: /svc{i}/api}}, cluster: c}}\n");
        y += &format!(
            "- {{name: t{i}, match: {{path_template: '/svc{i}/users/{{id}}'}}, cluster: c}}\n"
        );
        y += &format!(
            "- {{name: h{i}, match: {{host: 'h{i}.example.com', path_prefix: /}}, cluster: c}}\n"
        );
    }
    let routes: Vec<gatehouse_config::Route> = serde_saphyr::from_str(&y).expect("routes");
    RouteTable::new(&routes)
}

fn route_match(c: &mut Criterion) {
    for n in [1usize, 10, 50, 3334] {
        let table = route_table(n);
        let headers = HeaderMap::new();
        let last = n - 1;
        let path = format!("/svc{last}/users/42");
        let req = RouteRequest {
            host: "api.example.com",
            path: &path,
            query: None,
            method: &Method::GET,
            headers: &headers,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            cert: None,
        };
        assert!(table.find(&req).is_some());
        c.bench_function(
            &format!("route_match/{}_routes/last_template", n * 3),
            |b| b.iter(|| black_box(table.find(black_box(&req)))),
        );
        c.bench_function(
            &format!("route_match/{}_routes/last_template_scan", n * 3),
            |b| b.iter(|| black_box(table.find_scan(black_box(&req)))),
        );
        if n == 3334 {
            let host = format!("h{last}.example.com");
            let by_host = RouteRequest {
                host: &host,
                path: "/some/page",
                ..req
            };
            c.bench_function("route_match/10002_routes/host", |b| {
                b.iter(|| black_box(table.find(black_box(&by_host))))
            });
        }
    }
}

fn pick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    let events = gatehouse::observe::events::Events::new(false);
    for policy in [
        "round_robin",
        "weighted_round_robin",
        "least_request",
        "p2c_ewma",
        "ring_hash",
        "maglev",
        "random",
    ] {
        for n in [3usize, 10, 100] {
            let mut cfg = config(1, n);
            cfg.clusters[0].lb = serde_saphyr::from_str(policy).expect("policy");
            if cfg.clusters[0].lb.is_hashing() {
                cfg.clusters[0].hash_on = Some("path".into());
            }
            for (i, e) in cfg.clusters[0].endpoints.iter_mut().enumerate() {
                e.weight = 1 + (i % 3) as u32;
            }
            let runtime =
                gatehouse::runtime::Runtime::new(cfg, None).expect("the bench config builds");
            let snap = runtime.snapshot();
            let cluster = snap.clusters.get("c").expect("cluster").clone();
            let mut k = 0u64;
            c.bench_function(&format!("pick/{policy}/{n}_endpoints"), |b| {
                b.iter(|| {
                    k = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    black_box(
                        cluster
                            .pick(tokio::time::Instant::now(), &[], Some(k), &events)
                            .map(|p| p.index),
                    )
                })
            });
        }
    }
}

fn ring_build(c: &mut Criterion) {
    for n in [10usize, 100] {
        let addrs: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:80")).collect();
        let eps: Vec<(&str, u32)> = addrs.iter().map(|a| (a.as_str(), 1)).collect();
        c.bench_function(&format!("build/ring_hash/{n}_endpoints"), |b| {
            b.iter(|| black_box(gatehouse::cluster::balance::Ring::new(&eps)))
        });
        c.bench_function(&format!("build/maglev/{n}_endpoints"), |b| {
            b.iter(|| black_box(gatehouse::cluster::balance::Maglev::new(&eps)))
        });
    }
}

fn limiter(c: &mut Criterion) {
    use gatehouse::filter::limit::{algorithm::Params, LocalStore};
    use gatehouse_config::traffic::{Algorithm, Rate};
    for (name, alg) in [
        ("token_bucket", Algorithm::TokenBucket),
        ("leaky_bucket", Algorithm::LeakyBucket),
        ("sliding_window", Algorithm::SlidingWindow),
    ] {
        let p = Params::new(
            alg,
            Rate {
                count: 1_000_000,
                per: std::time::Duration::from_secs(1),
            },
            Some(1_000_000),
        );
        let store = LocalStore::default();
        let keys: Vec<[u8; 4]> = (0u32..1000).map(u32::to_be_bytes).collect();
        let mut now = 1u64;
        let mut i = 0usize;
        c.bench_function(&format!("limiter/{name}/local_check"), |b| {
            b.iter(|| {
                now += 1;
                i = (i + 1) % keys.len();
                black_box(store.check(&p, 1_000_000, &keys[i], now))
            })
        });
    }
}

fn ids(c: &mut Criterion) {
    let empty = HeaderMap::new();
    c.bench_function("ids/request_id_generate", |b| {
        b.iter(|| black_box(request_id(&empty)))
    });
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            .parse()
            .expect("hv"),
    );
    c.bench_function("ids/traceparent_continue", |b| {
        b.iter(|| black_box(TraceContext::from_headers(&h).header()))
    });
}

fn canonical(c: &mut Criterion) {
    use gatehouse::canonical::path::normalize;
    let o = gatehouse_config::edge::PathNormalization::default();
    for (name, path) in [
        ("normal_api_path", "/api/v1/users/42/orders"),
        (
            "normal_long_path",
            "/api/v1/organisations/acme/projects/gatehouse/builds/1234/artifacts/log.txt",
        ),
        ("dot_segments", "/api/v1/../v2/./users/42"),
        ("percent_encoded", "/api/%76%31/users/caf%c3%a9"),
    ] {
        c.bench_function(&format!("normalize/{name}"), |b| {
            b.iter(|| black_box(normalize(black_box(path), &o)))
        });
    }
    let edge = gatehouse::canonical::EdgeSettings {
        path: o,
        underscores: gatehouse_config::edge::UnderscoreHeaders::Drop,
        trusted_proxies: Vec::new(),
    };
    let peer: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    let peer_value = gatehouse::canonical::client::peer_header(peer);
    let request = || {
        http::Request::builder()
            .uri("/api/v1/users/42")
            .header("host", "api.example.com")
            .header("accept", "*/*")
            .header("user-agent", "bench/1.0")
            .body(())
            .expect("request")
    };
    // The control row: the routine only hands the request back (both rows drop their output
    // outside the measurement).
    c.bench_function("canonicalize/control_drop_only", |b| {
        b.iter_batched(request, black_box, criterion::BatchSize::SmallInput)
    });
    c.bench_function("canonicalize/typical_request", |b| {
        b.iter_batched(
            request,
            |mut req| {
                let c = gatehouse::canonical::canonicalize(&mut req, &edge, (peer, &peer_value));
                black_box((req, c))
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// The cache filter: building a key, and a whole fresh hit (key, memory lookup, RFC 9111
/// freshness, the response head).
fn cache(c: &mut Criterion) {
    use gatehouse::filter::cache::{memory::Memory, RouteCache};
    use gatehouse::proxy::cache::{before, finish, Before};
    let metrics = gatehouse::observe::metrics::Metrics::default();
    let cfg = |key: &str| -> gatehouse_config::cache::CacheFilter {
        serde_json::from_str(&format!("{{\"key\": {key}}}")).expect("cache filter config")
    };
    let memory = std::sync::Arc::new(Memory::new(64 << 20, &metrics));
    let plain = std::sync::Arc::new(RouteCache::new(
        "r",
        &cfg("{}"),
        (memory.clone(), None),
        Default::default(),
        &metrics,
    ));
    let keyed = RouteCache::new(
        "r",
        &cfg(
            r#"{"headers": ["x-tenant"], "consumer": true, "ignore_query_params": ["utm_source"]}"#,
        ),
        (memory, None),
        Default::default(),
        &metrics,
    );
    let req = || {
        http::Request::get("/products/42?page=2&utm_source=mail")
            .header("host", "api.example.com")
            .header("x-tenant", "acme")
            .header("accept", "application/json")
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    let parts = req();
    c.bench_function("cache/key", |b| {
        b.iter(|| {
            black_box(plain.key(
                ("http", "api.example.com"),
                &parts.uri,
                &parts.headers,
                None,
            ))
        })
    });
    c.bench_function("cache/key_with_header_and_consumer", |b| {
        b.iter(|| {
            black_box(keyed.key(
                ("http", "api.example.com"),
                &parts.uri,
                &parts.headers,
                Some("alice"),
            ))
        })
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Fill one entry the way the request path does.
    rt.block_on(async {
        let mut p = req();
        let Before::Forward(plan) =
            before(&plain, &mut p, ("http", "api.example.com"), None, false).await
        else {
            panic!("a miss first")
        };
        let resp = http::Response::builder()
            .header("cache-control", "max-age=3600")
            .header("content-type", "application/json")
            .body(gatehouse::body::Body::full(bytes::Bytes::from_static(
                b"{\"id\":42}",
            )))
            .expect("response");
        let _ = finish(plan, Ok(resp)).await;
    });
    c.bench_function("cache/fresh_hit", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut p = req();
                match before(&plain, &mut p, ("http", "api.example.com"), None, false).await {
                    Before::Serve(r, _) => black_box(r),
                    _ => panic!("a hit"),
                }
            })
        })
    });
}

/// The per-second summary (`admin/traffic.rs`): read every route's and endpoint's counters,
/// build the JSON and serialize it, as the event bus keeps it. Prints the text's size too.
fn traffic_summary(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    for (groups, endpoints) in [(1, 3), (10, 30), (34, 100)] {
        let runtime = gatehouse::runtime::Runtime::new(config(groups, endpoints), None)
            .expect("the bench config builds");
        let snap = runtime.snapshot();
        let mut last = gatehouse::admin::traffic::Last::default();
        let text = |last: &mut _| {
            serde_json::Value::Object(gatehouse::admin::traffic::sample(&snap, last)).to_string()
        };
        let name = format!(
            "traffic_summary/{}_routes_{endpoints}_endpoints",
            3 * groups
        );
        eprintln!("{name}: {} bytes of JSON", text(&mut last).len());
        c.bench_function(&name, |b| b.iter(|| black_box(text(&mut last))));
    }
}

criterion_group!(
    benches,
    cache,
    canonical,
    route_match,
    pick,
    ring_build,
    limiter,
    ids,
    traffic_summary
);
criterion_main!(benches);
