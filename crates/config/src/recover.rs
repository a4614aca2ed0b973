//! Every problem at once. serde stops at the first error, so after one the bad node (the key
//! and its value, or the sequence item) is cut out of the text and the file parsed again, up
//! to a bound; what a cut causes by itself (`missing field` for the key just cut, another
//! error at the same place) is not reported. When the cut text finally parses, its semantic
//! problems are added too, except those about a cut node or what contains it.

use crate::position::{Pos, PositionIndex};
use crate::Config;

/// At most this many type errors are reported from one file.
const MAX_ROUNDS: usize = 32;

/// One deserializer error: where in the text being parsed, and what.
pub struct SerdeError {
    pub pos: Option<Pos>,
    pub message: String,
}

/// What the cut-and-retry found beyond the first error: further (path, message, position in
/// the text as cut) triples already mapped to paths, and the semantic problems of what was
/// left, if it parsed.
#[derive(Default)]
pub struct Found {
    pub serde: Vec<(String, String)>,
    pub semantic: Vec<(String, String)>,
}

/// Looks for further errors after `first` (at `first_path`) in `text`.
pub fn more_errors(
    text: &str,
    first_path: &str,
    first: &str,
    parse: &dyn Fn(&str) -> Result<Config, SerdeError>,
    semantic: &dyn Fn(&Config) -> Vec<(String, String)>,
) -> Found {
    let mut found = Found::default();
    let mut cut: Vec<String> = Vec::new();
    let mut current = text.to_string();
    let mut path = first_path.to_string();
    let mut message = first.to_string();
    for _ in 0..MAX_ROUNDS {
        if path.is_empty() || caused_by_cut(&path, &message, &cut) {
            return found;
        }
        let index = PositionIndex::build(&current);
        let Some(range) = index.range(&path) else {
            return found;
        };
        if range.is_empty() {
            return found;
        }
        current.replace_range(with_separator(&current, range), "");
        cut.push(std::mem::take(&mut path));
        if !well_formed(&current) {
            // The cut broke the YAML itself (a flow style it cannot mend): stop here rather
            // than report what the cutting did.
            return found;
        }
        match parse(&current) {
            Ok(config) => {
                found.semantic = semantic(&config)
                    .into_iter()
                    .filter(|(p, _)| !cut.iter().any(|c| related(p, c)))
                    .collect();
                return found;
            }
            Err(e) => {
                let index = PositionIndex::build(&current);
                let Some(p) = e.pos.and_then(|p| index.path_at(p)) else {
                    return found;
                };
                if !caused_by_cut(&p, &e.message, &cut) {
                    found.serde.push((p.clone(), e.message.clone()));
                }
                path = p;
                message = e.message;
            }
        }
    }
    found
}

/// In flow style, a node goes with the comma after it (or before it, if last).
fn with_separator(text: &str, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let after = &text[range.end..];
    let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
    if after[spaces..].starts_with(',') {
        return range.start..range.end + spaces + 1;
    }
    let before = &text[..range.start];
    let trimmed = before.trim_end_matches([' ', '\t']);
    if trimmed.ends_with(',') {
        return trimmed.len() - 1..range.end;
    }
    range
}

fn well_formed(text: &str) -> bool {
    serde_saphyr::granit_parser::Parser::new_from_str(text).all(|e| e.is_ok())
}

/// An error that the cutting itself produced: at a node already cut, or a missing field that
/// was cut.
fn caused_by_cut(path: &str, message: &str, cut: &[String]) -> bool {
    if cut.iter().any(|c| c == path) {
        return true;
    }
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next());
    missing.is_some_and(|field| {
        cut.iter()
            .any(|c| c.rsplit(['.', '[']).next() == Some(field))
    })
}

/// `a` is `b`, or inside it, or contains it.
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner == outer
            || inner
                .strip_prefix(outer)
                .is_some_and(|r| r.starts_with(['.', '[']))
    };
    within(a, b) || within(b, a)
}

#[cfg(test)]
mod tests {
    #[test]
    fn related_paths() {
        assert!(super::related("clusters[0].x", "clusters[0]"));
        assert!(super::related("clusters[0]", "clusters[0].x"));
        assert!(!super::related("clusters[1]", "clusters[10]"));
        assert!(!super::related("clusters[0].xy", "clusters[0].x"));
    }
}
