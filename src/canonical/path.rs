//! The path normalizer the request path uses: `gatehouse_config::normalize`, shared with config
//! validation so a route's path and a request's path are held to the same normal form.

pub use gatehouse_config::normalize::*;
