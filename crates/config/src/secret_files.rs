//! `*_file` keys: secrets read from files (Docker and Kubernetes mount secrets as files), so
//! they need not be written into the config or the environment. Read at every load, relative
//! to the config file; a trailing newline is dropped. Each value read is remembered as a
//! [`Secret`] so it never shows in `GET /config` or in a message.

use crate::interpolate::Secret;
use crate::validate::Problem;
use crate::{AdminToken, Config};

/// Reads `redis.url_file`, `admin.token_file` (without `token: auto`) and
/// `jwt_issuers[].secret_file` into the config.
pub fn read(config: &mut Config, secrets: &mut Vec<Secret>, problems: &mut Vec<Problem>) {
    let read_one = |at: String,
                    path: &str,
                    secrets: &mut Vec<Secret>,
                    problems: &mut Vec<Problem>|
     -> Option<String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let value = text.trim_end_matches(['\r', '\n']).to_string();
                if value.is_empty() {
                    problems.push((at, format!("{path} is empty")));
                    return None;
                }
                secrets.push(Secret {
                    value: value.clone(),
                    shown: format!("<secret from {path}>"),
                });
                Some(value)
            }
            Err(e) => {
                problems.push((at, format!("cannot read {path}: {e}")));
                None
            }
        }
    };
    if let Some(r) = &mut config.redis {
        if let Some(path) = r.url_file.clone() {
            if !r.url.is_empty() {
                problems.push((
                    "redis.url_file".into(),
                    "give url or url_file, not both".into(),
                ));
            } else if let Some(v) = read_one("redis.url_file".into(), &path, secrets, problems) {
                r.url = v;
            }
        }
    }
    if let Some(a) = &mut config.admin {
        if let (None, Some(path)) = (a.token, a.token_file.clone()) {
            if a.token_env.is_some() {
                problems.push((
                    "admin.token_file".into(),
                    "give token_env or token_file, not both".into(),
                ));
            } else {
                a.token_value = read_one("admin.token_file".into(), &path, secrets, problems)
                    .map(|t| t.trim().to_string());
                if a.token_value
                    .as_deref()
                    .is_some_and(|t| t.contains(char::is_whitespace))
                {
                    problems.push((
                        "admin.token_file".into(),
                        "the token must be one word: no spaces or line breaks inside".into(),
                    ));
                }
            }
        }
        debug_assert!(a.token != Some(AdminToken::Auto) || a.token_value.is_none());
    }
    for (i, j) in config.jwt_issuers.iter_mut().enumerate() {
        if let Some(path) = j.secret_file.clone() {
            let at = format!("jwt_issuers[{i}].secret_file");
            if j.secret_env.is_some() {
                problems.push((at, "give secret_env or secret_file, not both".into()));
            } else {
                j.secret_value = read_one(at, &path, secrets, problems);
            }
        }
    }
}
