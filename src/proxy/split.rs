//! A route's weighted split between clusters: which side a request goes to (sticky by the
//! route's `hash_on` key when the request has one, else at random by weight).

use crate::cluster::Cluster;
use crate::error::ProxyError;
use crate::route::forward::Split;
use http::Request;
use std::collections::HashMap;
use std::sync::Arc;

/// The cluster of `split` this request goes to.
pub fn choose<'s, B>(
    split: &Split,
    clusters: &'s HashMap<Arc<str>, Arc<Cluster>>,
    req: &Request<B>,
    client: std::net::IpAddr,
) -> Result<&'s Arc<Cluster>, ProxyError> {
    let hash = split
        .hash_on
        .as_ref()
        .and_then(|on| super::hash_key(on, req, client))
        // Mixed, so the split's choice is independent of a `ring_hash` / `maglev` cluster
        // behind it keyed on the same header (the same hash would pick from a skewed part
        // of the ring).
        .map(|k| mix(crate::cluster::balance::key_hash(&k)));
    let name = split.pick(hash, fastrand::u64(..));
    clusters.get(name.as_ref()).ok_or(ProxyError::NoRoute)
}

/// The splitmix64 finalizer: a bijection whose output bits each depend on every input bit.
fn mix(mut z: u64) -> u64 {
    z ^= z >> 30;
    z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 27;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
