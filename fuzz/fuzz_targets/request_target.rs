//! Any request target and Host (as hyper would hand them over): canonicalization never panics,
//! and an accepted request has an origin-form normal path and a canonical host.
#![no_main]

use gatehouse::canonical::{canonicalize, host, path, EdgeSettings};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&bits, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let target = parts.next().unwrap_or_default();
    let hosts: Vec<&str> = parts.next().unwrap_or_default().split('\t').filter(|h| !h.is_empty()).collect();
    let Ok(uri) = http::Uri::try_from(target) else { return };
    let version = match bits >> 6 {
        0 => http::Version::HTTP_10,
        1 | 2 => http::Version::HTTP_11,
        _ => http::Version::HTTP_2,
    };
    let mut req = http::Request::new(());
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    for h in &hosts {
        let Ok(v) = http::HeaderValue::from_str(h) else { return };
        req.headers_mut().append(http::header::HOST, v);
    }
    let edge = EdgeSettings {
        path: common::settings(bits & 63),
        underscores: gatehouse_config::edge::UnderscoreHeaders::Drop,
        trusted_proxies: Vec::new(),
    };
    let peer: std::net::IpAddr = [127, 0, 0, 1].into();
    let value = gatehouse::canonical::client::peer_header(peer);
    if let Ok(c) = canonicalize(&mut req, &edge, (peer, &value)) {
        assert!(req.uri().authority().is_none(), "origin-form after canonicalization");
        let p = req.uri().path();
        let again = path::normalize(p, &edge.path).expect("normal path accepted");
        assert_eq!(again.path.as_ref(), p);
        if !c.host.is_empty() {
            assert_eq!(host::canonical(&c.host).as_deref(), Ok(c.host.as_str()));
        }
    }
});
