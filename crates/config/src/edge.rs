//! The listener's edge settings: how a request is made canonical before routing (path
//! normalization, header names with `_`), the PROXY protocol, and connection limits. What each
//! choice means, and how it compares with Envoy, HAProxy and NGINX, is in `docs/security.md`.

use serde::{Deserialize, Serialize};

/// `listeners[].path_normalization`. Normalization itself (RFC 3986 §6.2.2: decoding
/// percent-encoded unreserved characters, upper-case hex, removing dot-segments) is always on;
/// these settings choose what happens where routers and backends are known to disagree.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PathNormalization {
    /// Merge repeated slashes (`//admin` → `/admin`). Default true.
    pub merge_slashes: bool,
    /// What an encoded `/` or `\` (`%2F`, `%5C`) inside a segment does. Default `reject`.
    pub escaped_slashes: EscapedSlashes,
    /// What an encoded `?`, `#` or `;` (`%3F`, `%23`, `%3B`) does: a backend that decodes
    /// them reads a query, a fragment or path parameters where the router saw none.
    /// Default `reject`.
    pub escaped_delimiters: EscapedDelimiters,
    /// What a raw `\` in the path does. Default `reject`.
    pub backslash: Backslash,
    /// What `;` (path parameters, `/admin;jsessionid=1`) does. Default `reject`.
    pub path_parameters: PathParameters,
    /// Answer a request whose path is not in normal form with a 308 to the normal form
    /// instead of forwarding the normal form. Default false.
    pub redirect: bool,
}

impl Default for PathNormalization {
    fn default() -> Self {
        PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Reject,
            escaped_delimiters: EscapedDelimiters::Reject,
            backslash: Backslash::Reject,
            path_parameters: PathParameters::Reject,
            redirect: false,
        }
    }
}

/// Envoy's `path_with_escaped_slashes_action`, with the safe choice as the default.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Keep `%2F` / `%5C` as they are: one segment to the router, maybe two to the backend.
    Keep,
    /// 400 `invalid_path`.
    Reject,
    /// Decode to `/` before dot-segments are removed, then route and forward that.
    Decode,
    /// Decode as `decode` does and answer 308 with the decoded path.
    Redirect,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedDelimiters {
    /// Keep them encoded (they are data to a backend that does not decode them).
    Keep,
    /// 400 `invalid_path` (Traefik's default since CVE-2025-66490).
    Reject,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Backslash {
    /// 400 `invalid_path` (a raw `\` is not allowed in a URI).
    Reject,
    /// Treat it as `/`, as browsers and Envoy's URL canonicalizer do.
    Separator,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PathParameters {
    /// 400 `invalid_path` for any `;` in the path (Spring Security's default).
    Reject,
    /// `;` starts a segment's parameters, as Java servlet containers read it: routes match each
    /// segment's name before its `;`, `..;x` is a dot-segment, and the path is forwarded with
    /// its parameters.
    Segment,
}

/// `listeners[].headers_with_underscores` (Envoy's `headers_with_underscores_action`).
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, Hash, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UnderscoreHeaders {
    /// Forward them.
    Allow,
    /// Remove them before filters run (NGINX's default).
    #[default]
    Drop,
    /// 400 `invalid_header`.
    Reject,
}
