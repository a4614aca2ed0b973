//! `endpoints_from: {dns: ...}` on the shipped binary against a real DNS server (Debian's
//! dnsmasq, started by the test on a free loopback port, its records edited by the test): A
//! records become endpoints and changes follow the TTL; an endpoint that stays keeps its
//! runtime state (a drain survives a change); an outage and an empty answer keep the last
//! good set, with an event and a metric; SRV records give ports and weights.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::binary::Running;
use common::timed_client as client;
use gatehouse_testkit::{eventually, DnsServer, FakeUpstream};
use serde_json::Value;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(15);

async fn cluster(c: &reqwest::Client, gw: &Running, name: &str) -> Value {
    c.get(format!("http://{}/clusters/{name}", gw.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn addresses(v: &Value) -> Vec<String> {
    let mut a: Vec<String> = v["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["address"].as_str().unwrap().to_string())
        .collect();
    a.sort();
    a
}

async fn metrics(c: &reqwest::Client, gw: &Running) -> String {
    c.get(format!("http://{}/metrics", gw.admin_addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_records_follow_the_zone_and_keep_endpoint_state_and_the_last_good_set() {
    // Two backends on one port at two loopback addresses, as A records give them.
    let a = FakeUpstream::start_at("a", "127.0.0.2:0".parse().unwrap()).await;
    let port = a.addr().port();
    let b = FakeUpstream::start_at("b", format!("127.0.0.3:{port}").parse().unwrap()).await;
    let mut dns = DnsServer::start("127.0.0.2 shop.test\n", &[]);
    let yaml = format!(
        "dns: {{servers: ['{}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{dns: {{name: shop.test, port: {port}, refresh: 1s}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
        dns.address()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let a_addr = a.addr().to_string();
    let b_addr = b.addr().to_string();

    // The first answer: one endpoint, which serves.
    eventually("the A record is an endpoint", DEADLINE, || async {
        (addresses(&cluster(&c, &gw, "shop").await) == vec![a_addr.clone()]).then_some(())
    })
    .await;
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(a.hits(), 1);
    let view = cluster(&c, &gw, "shop").await;
    assert_eq!(view["discovery"]["source"], "dns:A:shop.test", "{view}");
    assert_eq!(view["endpoints"][0]["source"], "dns", "{view}");

    // Drain it, then add a record: the drained endpoint stays drained (state is kept by
    // identity), so every request goes to the new one.
    let drained = c
        .post(format!(
            "http://{}/clusters/shop/endpoints/{a_addr}/drain",
            gw.admin_addr()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(drained.status(), 200);
    let config_generation = |c: &reqwest::Client| {
        let url = format!("http://{}/config", gw.admin_addr());
        let c = c.clone();
        async move {
            c.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()["generation"]
                .clone()
        }
    };
    let before = config_generation(&c).await;
    dns.set_hosts("127.0.0.2 shop.test\n127.0.0.3 shop.test\n");
    eventually("the second A record is an endpoint", DEADLINE, || async {
        (addresses(&cluster(&c, &gw, "shop").await) == vec![a_addr.clone(), b_addr.clone()])
            .then_some(())
    })
    .await;
    let view = cluster(&c, &gw, "shop").await;
    let drained_a = view["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["address"] == a_addr.as_str())
        .unwrap()["drained"]
        .clone();
    assert_eq!(drained_a, true, "the drain survived the change: {view}");
    for _ in 0..4 {
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (1, 4));
    assert_eq!(
        config_generation(&c).await,
        before,
        "a discovery change is not a new config generation"
    );

    // An outage: the last good set stays and keeps serving; an event and a metric say so.
    dns.stop();
    eventually("the failure is counted", DEADLINE, || async {
        metrics(&c, &gw)
            .await
            .lines()
            .any(|l| {
                l.starts_with("gatehouse_discovery_resolutions_total{")
                    && l.contains("outcome=\"failed\"")
            })
            .then_some(())
    })
    .await;
    let view = cluster(&c, &gw, "shop").await;
    assert_eq!(addresses(&view), vec![a_addr.clone(), b_addr.clone()]);
    assert!(view["discovery"]["last_error"].is_string(), "{view}");
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // Back, with an empty answer: treated as a failure too (allow_empty is off).
    dns.restart();
    dns.set_hosts("");
    eventually("the empty answer is counted", DEADLINE, || async {
        metrics(&c, &gw)
            .await
            .lines()
            .any(|l| {
                l.starts_with("gatehouse_discovery_resolutions_total{")
                    && l.contains("outcome=\"empty\"")
            })
            .then_some(())
    })
    .await;
    assert_eq!(
        addresses(&cluster(&c, &gw, "shop").await),
        vec![a_addr.clone(), b_addr.clone()],
        "an empty answer keeps the last good set"
    );

    // And a real change again: b leaves.
    dns.set_hosts("127.0.0.2 shop.test\n");
    eventually("b left", DEADLINE, || async {
        (addresses(&cluster(&c, &gw, "shop").await) == vec![a_addr.clone()]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_give_ports_and_weights() {
    let heavy = FakeUpstream::start("heavy").await;
    let light = FakeUpstream::start("light").await;
    let dns = DnsServer::start(
        "127.0.0.1 node.test\n",
        &[
            &format!("_http._tcp.shop.test,node.test,{},0,3", heavy.addr().port()),
            &format!("_http._tcp.shop.test,node.test,{},0,1", light.addr().port()),
        ],
    );
    let yaml = format!(
        "dns: {{servers: ['{}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    lb: weighted_round_robin\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{dns: {{name: _http._tcp.shop.test, type: SRV}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
        dns.address()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let view = eventually("both SRV records are endpoints", DEADLINE, || async {
        let v = cluster(&c, &gw, "shop").await;
        (v["endpoints"].as_array().unwrap().len() == 2).then_some(v)
    })
    .await;
    let weight_of = |addr: String| {
        view["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["address"] == addr.as_str())
            .unwrap_or_else(|| panic!("{addr} in {view}"))["weight"]
            .clone()
    };
    assert_eq!(weight_of(heavy.addr().to_string()), 3);
    assert_eq!(weight_of(light.addr().to_string()), 1);
    for _ in 0..8 {
        let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!((heavy.hits(), light.hits()), (6, 2), "3:1 by SRV weight");
}

#[test]
fn check_refuses_endpoints_from_without_what_it_needs() {
    let err = common::binary::check_refused(
        "listeners: [{name: p, address: 127.0.0.1:0}]\n\
         dns: {servers: [nowhere]}\n\
         clusters:\n  - name: a\n    endpoints_from: {dns: {name: shop.test}}\n  \
         - name: b\n    endpoints: [{address: 127.0.0.1:1}]\n    endpoints_from: {dns: {name: shop.test, port: 80}}\n  \
         - name: c\n    endpoints_from: {dns: {name: _x._tcp.shop.test, type: SRV, port: 80}}\n",
    );
    for want in [
        "dns.servers[0]: invalid DNS server \"nowhere\"",
        "clusters[0].endpoints_from.dns.port: A and AAAA records carry no port",
        "clusters[1].endpoints_from: either endpoints or endpoints_from, not both",
        "clusters[2].endpoints_from.dns.port: SRV records carry their own ports",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// SRV records that name no endpoint one could send to are skipped, the rest are used: a
/// target with no address (a host gone from the zone), port 0, the "no service" target `.`,
/// and targets whose address is 0.0.0.0 (which Linux would connect to itself), multicast or
/// broadcast. Before, one dead target failed the whole answer, so the cluster never got an
/// endpoint (or kept a stale set forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_that_name_no_usable_endpoint_are_skipped() {
    let up = FakeUpstream::start("up").await;
    let port = up.addr().port();
    let dns = DnsServer::start(
        "127.0.0.1 node.test\n0.0.0.0 zero.test\n224.0.0.1 mcast.test\n255.255.255.255 bcast.test\n",
        &[
            &format!("_http._tcp.shop.test,node.test,{port},0,0"),
            &format!("_http._tcp.shop.test,gone.test,{port},0,5"),
            &format!("_http._tcp.shop.test,zero.test,{port},0,5"),
            &format!("_http._tcp.shop.test,mcast.test,{port},0,5"),
            &format!("_http._tcp.shop.test,bcast.test,{port},0,5"),
            "_http._tcp.shop.test,node.test,0,0,5",
        ],
    );
    let yaml = format!(
        "dns: {{servers: ['{}']}}\n\
         listeners: [{{name: public, address: 127.0.0.1:0}}]\n\
         admin: {{address: 127.0.0.1:0}}\n\
         access_log: off\n\
         clusters:\n  - name: shop\n    slow_start: 0s\n    health_check: {{enabled: false}}\n    \
         endpoints_from: {{dns: {{name: _http._tcp.shop.test, type: SRV, refresh: 1s}}}}\n\
         routes: [{{name: all, match: {{path_prefix: /}}, cluster: shop}}]\n",
        dns.address()
    );
    let gw = Running::start(&yaml, &[]);
    let c = client();
    let want = vec![up.addr().to_string()];
    let view = eventually("the one usable SRV record", DEADLINE, || async {
        let v = cluster(&c, &gw, "shop").await;
        (addresses(&v) == want).then_some(v)
    })
    .await;
    assert_eq!(view["endpoints"][0]["weight"], 1, "weight 0 counts as 1");
    let r = c.get(format!("http://{}/x", gw.addr)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
