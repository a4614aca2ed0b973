//! Path templates (`/users/{id}`, `/v1/proxy/{service}/{*rest}`): parsed once here so that
//! validation and the route table agree on what a template means.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: the rest of the path, possibly empty; only as the last segment.
    CatchAll(String),
}

/// Splits a template into segments, or says what is wrong with it.
pub fn parse_template(t: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = t.strip_prefix('/') else {
        return Err(format!("path template {t:?} must start with '/'"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let seg = if let Some(inner) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            if let Some(name) = inner.strip_prefix('*') {
                if i + 1 != parts.len() {
                    return Err(format!("in {t:?}: {{*{name}}} must be the last segment"));
                }
                Segment::CatchAll(check_name(t, name)?)
            } else {
                Segment::Param(check_name(t, inner)?)
            }
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "in {t:?}: a parameter must be a whole segment, like /{{id}}"
            ));
        } else {
            Segment::Literal((*part).to_string())
        };
        out.push(seg);
    }
    let mut names: Vec<&str> = out
        .iter()
        .filter_map(|s| match s {
            Segment::Param(n) | Segment::CatchAll(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("in {t:?}: a parameter name is used twice"));
    }
    Ok(out)
}

fn check_name(t: &str, name: &str) -> Result<String, String> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "in {t:?}: parameter name {name:?} must be letters, digits or '_'"
        ));
    }
    Ok(name.to_string())
}

/// Names of the template's parameters, in order.
pub fn param_names(segs: &[Segment]) -> impl Iterator<Item = &str> {
    segs.iter().filter_map(|s| match s {
        Segment::Param(n) | Segment::CatchAll(n) => Some(n.as_str()),
        Segment::Literal(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        assert_eq!(
            parse_template("/users/{id}").unwrap(),
            vec![
                Segment::Literal("users".into()),
                Segment::Param("id".into())
            ]
        );
        assert!(matches!(
            parse_template("/a/{*rest}").unwrap().last(),
            Some(Segment::CatchAll(_))
        ));
        assert!(parse_template("users/{id}").is_err());
        assert!(parse_template("/a/{*rest}/b").is_err());
        assert!(parse_template("/a/x{id}").is_err());
        assert!(parse_template("/a/{id}/{id}").is_err());
        assert!(parse_template("/a/{}").is_err());
    }
}
