//! Criterion benchmarks of the per-request hot functions: route match, endpoint pick,
//! request-ID and trace-context generation.

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::observe::ids::{request_id, TraceContext};
use gatehouse::route::RouteTable;
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

fn route_match(c: &mut Criterion) {
    for n in [1usize, 10, 50] {
        let cfg = config(n, 1);
        let table = RouteTable::new(&cfg.routes);
        let headers = HeaderMap::new();
        let last = n - 1;
        let path = format!("/svc{last}/users/42");
        c.bench_function(
            &format!("route_match/{}_routes/last_template", n * 3),
            |b| {
                b.iter(|| {
                    black_box(table.find(
                        black_box("api.example.com"),
                        black_box(&path),
                        &Method::GET,
                        &headers,
                    ))
                })
            },
        );
    }
}

fn pick(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let _guard = rt.enter();
    for n in [3usize, 10, 100] {
        let runtime = gatehouse::runtime::Runtime::new(config(1, n), None);
        let snap = runtime.snapshot();
        let cluster = snap.clusters.get("c").expect("cluster").clone();
        let events = gatehouse::observe::events::Events::new(false);
        c.bench_function(&format!("pick/round_robin/{n}_endpoints"), |b| {
            b.iter(|| {
                black_box(
                    cluster
                        .pick(tokio::time::Instant::now(), &[], &events)
                        .map(|p| p.index),
                )
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

criterion_group!(benches, route_match, pick, ids);
criterion_main!(benches);
