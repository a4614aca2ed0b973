//! Maps field paths (`clusters[0].endpoints[1].weight`) to their line and column in the YAML
//! source, so that semantic errors found after deserialization still point into the file.
//! Built from the parser's event stream; no second copy of the config is kept.

use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Default)]
pub struct PositionIndex {
    map: HashMap<String, Pos>,
    /// Byte ranges from a key (or a sequence item) to the end of its value, for removing a
    /// bad node when looking for further errors.
    ranges: HashMap<String, (usize, usize)>,
}

enum Frame {
    /// In a mapping: the path of the mapping and the key awaiting its value (if any).
    Map { path: String, key: Option<String> },
    /// In a sequence: its path and the next item's index.
    Seq { path: String, next: usize },
}

impl PositionIndex {
    /// Indexes `text`; a YAML syntax error simply ends the index early (the deserializer reports it).
    pub fn build(text: &str) -> Self {
        let mut idx = PositionIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        // Where the last node with text ended: a block collection's end event is an empty
        // span at the next token, and the collection's text ends before that.
        let mut last_end = 0;
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let pos = Pos {
                line: span.start.line(),
                col: span.start.col() + 1,
            };
            let (start, mut end) = span.byte_range().map_or((0, 0), |r| (r.start, r.end));
            if end > start {
                last_end = end;
            } else {
                end = last_end;
            }
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, key }) = stack.last_mut() {
                        if key.is_none() {
                            let p = join_key(path, &value);
                            idx.map.entry(p.clone()).or_insert(pos);
                            idx.ranges.entry(p).or_insert((start, end));
                            *key = Some(value.into_owned());
                            continue;
                        }
                    }
                    if let Some(p) = idx.value_seen(&mut stack, pos, start) {
                        idx.value_ends(&p, end);
                    }
                }
                Event::Alias(_) => {
                    if let Some(p) = idx.value_seen(&mut stack, pos, start) {
                        idx.value_ends(&p, end);
                    }
                }
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let path = idx.value_seen(&mut stack, pos, start).unwrap_or_default();
                    stack.push(if matches!(event, Event::MappingStart(..)) {
                        Frame::Map { path, key: None }
                    } else {
                        Frame::Seq { path, next: 0 }
                    });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(Frame::Map { path, .. } | Frame::Seq { path, .. }) = stack.pop() {
                        idx.value_ends(&path, end);
                    }
                }
                _ => {}
            }
        }
        idx
    }

    /// Extends the recorded range of `path` to `end` (its value ends there).
    fn value_ends(&mut self, path: &str, end: usize) {
        if let Some(r) = self.ranges.get_mut(path) {
            r.1 = r.1.max(end);
        }
    }

    /// How many keys or items `path`'s value has.
    pub fn children(&self, path: &str) -> usize {
        self.map
            .keys()
            .filter(|k| {
                k.strip_prefix(path).is_some_and(|rest| {
                    let rest = rest.strip_prefix('.').or_else(|| rest.strip_prefix('['));
                    rest.is_some_and(|r| !r.trim_end_matches(']').contains(['.', '[', ']']))
                })
            })
            .count()
    }

    /// The bytes from `path`'s key (or item) to the end of its value.
    pub fn range(&self, path: &str) -> Option<std::ops::Range<usize>> {
        self.ranges.get(path).map(|&(s, e)| s..e)
    }

    /// Records a value node in the current container; returns the value's path.
    fn value_seen(&mut self, stack: &mut [Frame], pos: Pos, start: usize) -> Option<String> {
        match stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => {
                let k = key.take()?;
                Some(join_key(path, &k))
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                self.map.entry(p.clone()).or_insert(pos);
                self.ranges.entry(p.clone()).or_insert((start, start));
                Some(p)
            }
        }
    }

    /// The path of the key or item that starts nearest before `pos` (what an error at `pos` is
    /// about).
    pub fn path_at(&self, pos: Pos) -> Option<String> {
        self.map
            .iter()
            .filter(|(_, p)| (p.line, p.col) <= (pos.line, pos.col))
            .max_by_key(|(path, p)| (p.line, p.col, path.len()))
            .map(|(path, _)| path.clone())
    }

    /// The position of `path`, or of its nearest ancestor that the file spells out.
    pub fn find(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(pos) = self.map.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return Pos { line: 1, col: 1 },
            }
        }
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_items() {
        let y = "a:\n  b:\n    - x: 1\n    - x: 2\n      y: [3, 4]\nc: 5\n";
        let idx = PositionIndex::build(y);
        assert_eq!(idx.find("a"), Pos { line: 1, col: 1 });
        assert_eq!(idx.find("a.b"), Pos { line: 2, col: 3 });
        assert_eq!(idx.find("a.b[1].x"), Pos { line: 4, col: 7 });
        assert_eq!(idx.find("a.b[1].y"), Pos { line: 5, col: 7 });
        assert_eq!(idx.find("c"), Pos { line: 6, col: 1 });
        // a missing leaf falls back to its parent
        assert_eq!(idx.find("a.b[0].zzz"), Pos { line: 3, col: 7 });
        let text_of = |p: &str| &y[idx.range(p).unwrap()];
        assert_eq!(text_of("a.b[1].y"), "y: [3, 4]");
        assert_eq!(text_of("a.b[0]"), "x: 1");
        assert_eq!(text_of("c"), "c: 5");
    }
}
