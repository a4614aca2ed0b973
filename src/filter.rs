//! Route filters, run in order on the request: authentication and rate limiting. An enum of
//! built-in filters, not plugins.

pub mod limit;
