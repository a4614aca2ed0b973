//! Memory stays bounded however many clients appear: a million distinct client keys through one
//! policy's local store, measured as this process's resident memory (this file holds one test, so
//! the process is alone with it).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use gatehouse::filter::limit::algorithm::Params;
use gatehouse::filter::limit::LocalStore;
use gatehouse_config::traffic::{Algorithm, Rate};
use std::time::Duration;

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Stated in docs/config.md: a million tracked client IPs cost under 64 MiB.
const LIMIT_KIB: u64 = 64 << 10;

#[test]
fn a_million_client_ips_stay_under_the_stated_memory_and_the_cap_holds() {
    let p = Params::new(
        Algorithm::TokenBucket,
        Rate {
            count: 100,
            per: Duration::from_secs(60),
        },
        Some(20),
    );
    let store = LocalStore::default();
    let before = rss_kib();
    for i in 0u32..1_000_000 {
        let ip = i.to_be_bytes();
        assert!(store.check(&p, 1_000_000, &ip, 1).allowed());
    }
    let grown = rss_kib().saturating_sub(before);
    eprintln!(
        "1,000,000 client keys tracked: {} keys, +{grown} KiB resident",
        store.len()
    );
    assert!(store.len() >= 990_000, "{}", store.len());
    assert!(grown < LIMIT_KIB, "{grown} KiB");

    // At the cap, new keys share one overflow budget rather than growing the table.
    let capped = LocalStore::default();
    for i in 0u32..10_000 {
        capped.check(&p, 1_000, &i.to_be_bytes(), 1);
    }
    assert!(capped.len() <= 1_100 + 64, "{}", capped.len());
    // The overflow budget is limited: 20 burst, then refusals.
    let refused = (0u32..100)
        .filter(|i| {
            !capped
                .check(&p, 1_000, &(50_000 + i).to_be_bytes(), 1)
                .allowed()
        })
        .count();
    assert!(refused > 0);
    // Idle keys are forgotten by the sweep (a minute later every bucket is full again).
    assert_eq!(store.sweep(&p, 60_000_000 + 1), 0);
}
