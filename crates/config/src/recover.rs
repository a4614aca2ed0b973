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
    /// The bound was reached: there may be more.
    pub truncated: bool,
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
    // Every cut, as a path of the original text (for filtering what the cuts caused).
    let mut cut: Vec<String> = Vec::new();
    // The sequence items cut, as paths of the text at the time: later items moved up by one.
    let mut items: Vec<String> = Vec::new();
    let mut current = text.to_string();
    let mut next = first_path.to_string();
    let mut next_message = first.to_string();
    for _ in 0..MAX_ROUNDS {
        if next.is_empty() {
            return found;
        }
        // Cut `next`, and its parent too when it was the parent's only child in block style
        // (the parent would be left null, which is an error of its own). An unknown variant
        // of an enum written as a one-key map (`filters: [{nope: 1}]`) takes the item with it.
        let mut target = next.clone();
        if next_message.starts_with("unknown variant") {
            let index = PositionIndex::build(&current);
            if let Some(item) = parent_of(&target).filter(|p| is_item(p)) {
                if index.children(item) == 1 {
                    target = item.to_string();
                }
            }
        }
        loop {
            let index = PositionIndex::build(&current);
            let Some(range) = index.range(&target).filter(|r| !r.is_empty()) else {
                return found;
            };
            let parent = sole_block_parent(&index, &current, &target);
            current.replace_range(widen(&current, range, is_item(&target)), "");
            cut.push(unshift(&target, &items));
            if is_item(&target) {
                items.push(target.clone());
            }
            match parent {
                Some(p) => target = p,
                None => break,
            }
        }
        if !well_formed(&current) {
            // The cut broke the YAML itself (a flow style it cannot mend): stop here rather
            // than report what the cutting did.
            return found;
        }
        match parse(&current) {
            Ok(config) => {
                // A whole cluster, route or other named thing cut out makes every reference
                // to it look broken: then the semantic problems would be the cut's, not the
                // file's.
                if !cut.iter().any(|c| is_item(c) && !c.contains('.')) {
                    found.semantic = semantic(&config)
                        .into_iter()
                        .filter(|(p, _)| !cut.iter().any(|c| related(p, c)))
                        .collect();
                }
                return found;
            }
            Err(e) => {
                let index = PositionIndex::build(&current);
                let Some(p) = e.pos.and_then(|p| index.path_at(p)) else {
                    return found;
                };
                let original = unshift(&p, &items);
                if missing_cut_field(&e.message, &cut) {
                    // The object lacks what was cut from it: cut the object (serde names its
                    // last key) and look further, without a report.
                    next = parent_of(&p).unwrap_or_default().to_string();
                    next_message.clear();
                    continue;
                }
                if cut.iter().any(|c| related(&original, c)) {
                    // Still about what was cut: the rest cannot be reached this way.
                    return found;
                }
                found.serde.push((original, e.message.clone()));
                next = p;
                next_message = e.message;
            }
        }
    }
    found.truncated = true;
    found
}

fn is_item(path: &str) -> bool {
    path.ends_with(']')
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind(['.', '[']).map(|i| &path[..i])
}

/// `target`'s parent, when `target` is its only child and it is in block style (so cutting
/// `target` would leave it null).
fn sole_block_parent(index: &PositionIndex, text: &str, target: &str) -> Option<String> {
    let parent = parent_of(target).filter(|p| !p.is_empty())?;
    if index.children(parent) != 1 {
        return None;
    }
    let whole = &text[index.range(parent)?];
    let value = if is_item(parent) {
        whole
    } else {
        whole.split_once(':').map_or("", |(_, v)| v)
    };
    (!value.trim_start().starts_with(['{', '['])).then(|| parent.to_string())
}

/// A path of the text after the item cuts in `items`, as a path of the text before them.
fn unshift(path: &str, items: &[String]) -> String {
    let mut p = path.to_string();
    for item in items.iter().rev() {
        let Some(open) = item.rfind('[') else {
            continue;
        };
        let (seq, k) = (&item[..open], &item[open + 1..item.len() - 1]);
        let Ok(k) = k.parse::<usize>() else { continue };
        let Some(rest) = p.strip_prefix(seq).and_then(|r| r.strip_prefix('[')) else {
            continue;
        };
        let Some(close) = rest.find(']') else {
            continue;
        };
        let Ok(j) = rest[..close].parse::<usize>() else {
            continue;
        };
        if j >= k {
            p = format!("{seq}[{}]{}", j + 1, &rest[close + 1..]);
        }
    }
    p
}

/// The range of a node to cut: with its flow separator, with the `- ` of a block sequence
/// item, and without the next line's indentation (a block scalar's span runs into it).
fn widen(text: &str, range: std::ops::Range<usize>, item: bool) -> std::ops::Range<usize> {
    let mut range = with_separator(text, range);
    let inside = &text[range.clone()];
    if let Some(i) = inside.rfind('\n') {
        if inside[i + 1..].bytes().all(|b| b == b' ' || b == b'\t') {
            // Keep the line break too: the cut's own line keeps its indentation.
            range.end = range.start + i;
        }
    }
    if item {
        // Back over blank space (the item's first lines may be cut already) to its `-`.
        let before = text[..range.start].trim_end();
        if let Some(dash) = before.strip_suffix('-') {
            let line_start = dash.rfind('\n').map_or(0, |i| i + 1);
            if dash[line_start..].trim().is_empty() {
                range.start = line_start;
            }
        }
    } else {
        // A key whose value is empty (null) ends at its colon.
        let after = &text[range.end..];
        let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
        if after[spaces..].starts_with(':') {
            range.end += spaces + 1;
        }
    }
    range
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

/// A `missing field` error for a field that was cut.
fn missing_cut_field(message: &str, cut: &[String]) -> bool {
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
    fn unshift_undoes_item_cuts() {
        let items = ["a.f[2]".to_string(), "a.f[0]".to_string()];
        // Cut f[2], then (in the text as it then was) f[0]: what is now f[1] was f[2] after
        // the first cut, and f[3] in the file.
        assert_eq!(super::unshift("a.f[1].x", &items), "a.f[3].x");
        assert_eq!(super::unshift("a.f[0]", &items), "a.f[1]");
        assert_eq!(super::unshift("b[5]", &items), "b[5]");
    }

    #[test]
    fn related_paths() {
        assert!(super::related("clusters[0].x", "clusters[0]"));
        assert!(super::related("clusters[0]", "clusters[0].x"));
        assert!(!super::related("clusters[1]", "clusters[10]"));
        assert!(!super::related("clusters[0].xy", "clusters[0].x"));
    }
}
