//! Small value parsers shared by validation and the gateway, so both read a config the same
//! way: status lists (`200`, `200-399`) and retry conditions.

/// Parses statuses like `["200", "300-399"]` into inclusive ranges. Empty means any 2xx.
pub fn parse_statuses(list: &[String]) -> Result<Vec<(u16, u16)>, String> {
    if list.is_empty() {
        return Ok(vec![(200, 299)]);
    }
    list.iter()
        .map(|s| {
            let bad = || {
                format!("invalid status {s:?}: expected a code like 200 or a range like 200-399")
            };
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let a: u16 = a.parse().map_err(|_| bad())?;
            let b: u16 = b.parse().map_err(|_| bad())?;
            if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
                return Err(bad());
            }
            Ok((a, b))
        })
        .collect()
}

/// When a try may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryOn {
    /// The TCP connect failed or timed out: the request never reached the backend.
    ConnectFailure,
    /// The connection was reset or closed before a response head.
    Reset,
    /// The per-try timeout passed before a response head.
    Timeout,
    /// The backend answered with this status.
    Status(u16),
}

pub fn parse_retry_on(s: &str) -> Result<RetryOn, String> {
    match s.trim() {
        "connect_failure" => Ok(RetryOn::ConnectFailure),
        "reset" => Ok(RetryOn::Reset),
        "timeout" => Ok(RetryOn::Timeout),
        code => code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .map(RetryOn::Status)
            .ok_or_else(|| {
                format!("invalid retry condition {s:?}: expected connect_failure, reset, timeout or a status code")
            }),
    }
}

/// What a consistent-hashing policy hashes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HashOn {
    /// A request header's value (name lower-cased).
    Header(String),
    /// A cookie's value.
    Cookie(String),
    /// The client's IP (from a trusted proxy's `X-Forwarded-For`, else the peer).
    ClientIp,
    /// The request path (without the query).
    Path,
}

pub fn parse_hash_on(s: &str) -> Result<HashOn, String> {
    let bad =
        || format!("invalid hash_on {s:?}: expected header:NAME, cookie:NAME, client_ip or path");
    match s.trim() {
        "client_ip" => Ok(HashOn::ClientIp),
        "path" => Ok(HashOn::Path),
        other => match other.split_once(':') {
            Some(("header", name)) if is_token(name) => {
                Ok(HashOn::Header(name.to_ascii_lowercase()))
            }
            Some(("cookie", name)) if is_token(name) => Ok(HashOn::Cookie(name.to_string())),
            _ => Err(bad()),
        },
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_conditions() {
        assert_eq!(parse_statuses(&[]), Ok(vec![(200, 299)]));
        assert_eq!(
            parse_statuses(&["204".into(), "300-399".into()]),
            Ok(vec![(204, 204), (300, 399)])
        );
        assert!(parse_statuses(&["2xx".into()]).is_err());
        assert!(parse_statuses(&["399-300".into()]).is_err());
        assert_eq!(parse_retry_on("503"), Ok(RetryOn::Status(503)));
        assert_eq!(parse_retry_on("reset"), Ok(RetryOn::Reset));
        assert!(parse_retry_on("sometimes").is_err());
        assert_eq!(
            parse_hash_on("header:X-User"),
            Ok(HashOn::Header("x-user".into()))
        );
        assert_eq!(
            parse_hash_on("cookie:session"),
            Ok(HashOn::Cookie("session".into()))
        );
        assert_eq!(parse_hash_on("client_ip"), Ok(HashOn::ClientIp));
        assert!(parse_hash_on("header:").is_err());
        assert!(parse_hash_on("body").is_err());
    }
}
