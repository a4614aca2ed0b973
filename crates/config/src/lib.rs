//! Gatehouse's config: the YAML schema, parsing with positions, and validation.
//!
//! The pipeline is: text → typed [`Config`] (serde, unknown keys rejected) → [`validate`]
//! (every semantic problem, with its field path) → positions attached from a
//! [`position::PositionIndex`]. `gatehouse check` and every (re)load use [`load_str`], so they
//! can never disagree. No tokio, no hyper, no network.

pub mod cache;
pub mod cors;
pub mod edge;
pub mod forward;
pub mod matching;
pub mod normalize;
pub mod policy;
pub mod position;
pub mod reply;
pub mod schema;
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
    let mut config = load_str(text, &path.display().to_string())?;
    if let Some(dir) = path.parent() {
        config.resolve_paths(dir);
    }
    Ok(config)
}

/// Parses and validates config text; `source` names it in errors.
pub fn load_str(text: &str, source: &str) -> Result<Config, ConfigErrors> {
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
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.with_snippet = false;
    let mut config: Config = match serde_saphyr::from_str_with_options(text, options) {
        Ok(c) => c,
        Err(e) => {
            let pos = e.location().map(|l| Pos {
                line: l.line() as usize,
                col: l.column() as usize,
            });
            // serde stops at its first error; name the field by where the error points.
            let path = pos.and_then(|p| index.path_at(p)).unwrap_or_default();
            let mut message = plain_message(&e);
            if let Some(found) = pos.and_then(|p| scalar_at(text, p)) {
                if !message.contains(found) {
                    message = format!("{message} (found {found:?})");
                }
            }
            return Err(ConfigErrors(vec![at(path, message, pos)]));
        }
    };
    validate_traffic::apply_env_overrides(&mut config);
    let mut problems = validate::validate(&config);
    validate_traffic::validate_traffic(&config, &mut |path, msg| problems.push((path, msg)));
    validate_routes::validate_routes(&config, &mut |path, msg| problems.push((path, msg)));
    validate_telemetry::validate_telemetry(&config, &mut |path, msg| problems.push((path, msg)));
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(path, msg)| at(path, msg, None))
                .collect(),
        ))
    }
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

/// The deserializer's message without its own position suffix (we print positions first).
fn plain_message(e: &serde_saphyr::Error) -> String {
    let s = e.without_snippet().to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
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
