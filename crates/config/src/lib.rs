//! Gatehouse's config: the YAML schema, parsing with positions, and validation.
//!
//! The pipeline is: text → typed [`Config`] (serde, unknown keys rejected) → [`validate`]
//! (every semantic problem, with its field path) → positions attached from a
//! [`position::PositionIndex`]. `gatehouse check` and every (re)load use [`load_str`], so they
//! can never disagree. No tokio, no hyper, no network.

pub mod access_log;
pub mod cache;
pub mod cors;
pub mod discovery;
pub mod edge;
pub mod forward;
pub mod interpolate;
pub mod json_schema;
pub mod matching;
pub mod normalize;
pub mod policy;
pub mod position;
pub mod recover;
pub mod reply;
pub mod schema;
pub mod secret_files;
pub mod services;
pub mod shadow;
pub mod telemetry;
pub mod template;
pub mod tls;
pub mod traffic;
pub mod units;
pub mod validate;
pub mod validate_routes;
pub mod validate_telemetry;
pub mod validate_traffic;

pub use schema::*;
pub use units::{ByteSize, Dur, Percent, Window};

use position::{Pos, PositionIndex};
use std::fmt;
use std::path::Path;

/// One problem in a config file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file name as given (or `<inline>`).
    pub source: String,
    pub line: usize,
    pub col: usize,
    /// The field's path, like `clusters[0].endpoints[1].weight` (empty for syntax errors).
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.source, self.line, self.col)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => load_str_at(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            source: name,
            line: 0,
            col: 0,
            path: String::new(),
            message: format!("cannot read file: {e}"),
        }])),
    }
}

/// Parses and validates the text of the file at `path`; relative file names in it (key files)
/// are taken relative to the file's directory, not to wherever the gateway was started.
pub fn load_str_at(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    load(text, &path.display().to_string(), path.parent(), &|name| {
        std::env::var(name).ok()
    })
}

/// Parses and validates config text; `source` names it in errors. `${VAR}` is taken from the
/// process environment.
pub fn load_str(text: &str, source: &str) -> Result<Config, ConfigErrors> {
    load_str_with_env(text, source, &|name| std::env::var(name).ok())
}

/// [`load_str`] with the environment given (tests).
pub fn load_str_with_env(
    text: &str,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load(text, source, None, env)
}

/// Parses and validates; relative file names are taken against `dir` when given.
fn load(
    text: &str,
    source: &str,
    dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let index = PositionIndex::build(text);
    let at = |path: String, message: String, pos: Option<Pos>| {
        let pos = pos.unwrap_or_else(|| index.find(&path));
        ConfigError {
            source: source.to_string(),
            line: pos.line,
            col: pos.col,
            path,
            message,
        }
    };
    let interpolated = interpolate::interpolate(text, env).map_err(|errors| {
        ConfigErrors(
            errors
                .into_iter()
                .map(|(pos, msg)| at(index.path_at(pos).unwrap_or_default(), msg, Some(pos)))
                .collect(),
        )
    })?;
    let secrets = interpolated.secrets;
    let parsed_text: &str = &interpolated.text;
    // Positions in the substituted text differ from the file's where a value changed length:
    // errors are found there, named by path, and placed by the file's own index.
    let parsed_index = match &interpolated.text {
        std::borrow::Cow::Borrowed(_) => None,
        std::borrow::Cow::Owned(t) => Some(PositionIndex::build(t)),
    };
    let parsed_index = parsed_index.as_ref().unwrap_or(&index);
    let mut secrets = secrets;
    let mut config: Config = match parse(parsed_text) {
        Ok(c) => c,
        Err(e) => {
            // serde stops at its first error; name the field by where the error points.
            let path = e
                .pos
                .and_then(|p| parsed_index.path_at(p))
                .unwrap_or_default();
            let pos = if path.is_empty() || parsed_text == text {
                e.pos
            } else {
                None
            };
            let mut message = e.message.clone();
            // Not after substitution: the excerpt could be (part of) a secret.
            let excerpt = (parsed_text == text)
                .then(|| pos.or(e.pos).and_then(|p| scalar_at(parsed_text, p)))
                .flatten();
            if let Some(found) = excerpt {
                if !message.contains(found) {
                    message = format!("{message} (found {found:?})");
                }
            }
            let more = recover::more_errors(parsed_text, &path, &e.message, &parse, &|c| {
                semantic_problems(&mut c.clone())
            });
            let hide = |m: String| interpolate::redact(&m, &secrets).into_owned();
            let mut errors = vec![at(path, hide(message), pos)];
            for e in &mut errors {
                e.path = hide(std::mem::take(&mut e.path));
            }
            for (p, m) in more.serde.into_iter().chain(more.semantic) {
                let mut e = at(p, hide(m), None);
                e.path = hide(e.path);
                errors.push(e);
            }
            if more.truncated {
                errors.push(at(
                    String::new(),
                    "more problems may follow: fix these and check again".into(),
                    Some(Pos {
                        line: text.lines().count().max(1),
                        col: 1,
                    }),
                ));
            }
            // In file order, as an editor lists them.
            errors.sort_by_key(|e| (e.line, e.col));
            return Err(ConfigErrors(errors));
        }
    };
    if let Some(dir) = dir {
        config.resolve_paths(dir);
    }
    let mut problems = Vec::new();
    secret_files::read(&mut config, &mut secrets, &mut problems);
    problems.extend(semantic_problems(&mut config));
    let hide = |m: String| interpolate::redact(&m, &secrets).into_owned();
    if problems.is_empty() {
        config.secrets = secrets;
        Ok(config)
    } else {
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(path, msg)| {
                    // Placed by the real path; shown without a secret in it (a header name
                    // from the environment).
                    let mut e = at(path, hide(msg), None);
                    e.path = hide(e.path);
                    e
                })
                .collect(),
        ))
    }
}

/// The text deserialized, strictly (unknown keys and `yes`/`no` booleans refused).
pub(crate) fn parse(text: &str) -> Result<Config, recover::SerdeError> {
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| recover::SerdeError {
        pos: e.location().map(|l| Pos {
            line: l.line() as usize,
            col: l.column() as usize,
        }),
        message: plain_message(&e),
    })
}

/// What serde cannot check: references, ranges, syntax of addresses and paths.
fn semantic_problems(config: &mut Config) -> Vec<validate::Problem> {
    validate_traffic::apply_env_overrides(config);
    let mut problems = Vec::new();
    let user = (config.clusters.len(), config.routes.len());
    services::expand(config, &mut problems);
    let expanded = problems.len();
    config.access_log.check(&mut problems);
    problems.extend(validate::validate(config));
    validate_traffic::validate_traffic(config, &mut |path, msg| problems.push((path, msg)));
    validate_routes::validate_routes(config, &mut |path, msg| problems.push((path, msg)));
    validate_telemetry::validate_telemetry(config, &mut |path, msg| problems.push((path, msg)));
    if !config.services.is_empty() {
        // What the expansion made has no place in the file: name the service instead.
        for (path, msg) in problems.iter_mut().skip(expanded) {
            if let Some(at) = services::locate(path, config, user) {
                *msg = format!("{msg} (in {path}, made by the services shorthand)");
                *path = at;
            }
        }
    }
    problems
}

/// What is legal but worth a look (clusters reachable through routes with different
/// authentication), with positions: `check` prints these, `run` and reloads log them.
pub fn warnings(text: &str, source: &str, config: &Config) -> ConfigErrors {
    locate(text, source, validate_routes::warnings(config))
}

/// Attaches positions in `text` to problems found after loading (a snapshot that could not be
/// built), so they read like every other config error.
pub fn locate(text: &str, source: &str, problems: Vec<validate::Problem>) -> ConfigErrors {
    let index = PositionIndex::build(text);
    ConfigErrors(
        problems
            .into_iter()
            .map(|(path, message)| {
                let pos = index.find(&path);
                ConfigError {
                    source: source.to_string(),
                    line: pos.line,
                    col: pos.col,
                    path,
                    message,
                }
            })
            .collect(),
    )
}

/// The deserializer's message without its own position suffix (we print positions first), in
/// words a user reads rather than Rust's (`invalid u32` is "expected a whole number").
fn plain_message(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    let s = match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    plain_words(&s)
}

/// Rewrites the parser's Rust-flavoured phrases.
fn plain_words(message: &str) -> String {
    const REWRITES: [(&str, &str); 8] = [
        (
            "cannot deserialize null into string; use Option<String>",
            "expected a text value, found nothing",
        ),
        ("expected string scalar", "expected a text value"),
        ("invalid boolean (strict mode expects true/false)", "expected true or false"),
        (", set DuplicateKeyPolicy in Options if acceptable", " (each key once)"),
        (
            "multiple YAML documents detected; use from_str_multiple or from_str_multiple_with_options",
            "a config file holds one YAML document (remove the `---` line)",
        ),
        ("invalid f64", "expected a number"),
        ("invalid f32", "expected a number"),
        ("; use Option<String>", ""),
    ];
    let mut out = message.to_string();
    for (from, to) in REWRITES {
        out = out.replace(from, to);
    }
    for width in ["u8", "u16", "u32", "u64", "usize", "i32", "i64"] {
        out = out.replace(&format!("invalid {width}"), "expected a whole number");
    }
    out
}

/// The plain scalar that starts at `pos`, for quoting it in a type error.
fn scalar_at(text: &str, pos: Pos) -> Option<&str> {
    let line = text.lines().nth(pos.line.checked_sub(1)?)?;
    let start = line.char_indices().nth(pos.col.checked_sub(1)?)?.0;
    let rest = &line[start..];
    let end = rest.find([',', '}', ']', '#']).unwrap_or(rest.len());
    let v = rest[..end].trim().trim_matches(['"', '\'']);
    (!v.is_empty() && !v.ends_with(':')).then_some(v)
}
