//! Environment interpolation: `${VAR}` and `${VAR:-default}` inside YAML scalars, before the
//! file is parsed into types.
//!
//! It works on scalars found by the YAML parser, never on raw text, so a `${...}` in a comment
//! means nothing and a value cannot inject structure: a substituted plain scalar stays plain
//! only when the result reads back as the same plain scalar (so `${PORT}` can still be a
//! number); anything else is written back double-quoted. Only upper-case names
//! (`[A-Z_][A-Z0-9_]*`) are variables, because `${name}` and `${1}` already mean regex
//! captures in `rewrite.substitution`; `$${` is a literal `${`. Every value taken from the
//! environment is remembered as a [`Secret`], so `GET /config` and error messages can show
//! `${VAR}` instead of it.

use crate::position::Pos;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};
use std::borrow::Cow;

/// A value that came from outside the file, and how to show it instead.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secret {
    pub value: String,
    /// `${VAR}`, or `<secret from FILE>` for `*_file` keys.
    pub shown: String,
}

/// Replaces every secret value in `text` by how it is shown. Values shorter than 4 bytes are
/// replaced only when they are the whole text (a short value is no secret, and replacing
/// every `1` would garble the rest).
pub fn redact<'a>(text: &'a str, secrets: &[Secret]) -> Cow<'a, str> {
    let mut out = Cow::Borrowed(text);
    for s in secrets {
        if s.value.is_empty() {
            continue;
        }
        if out == s.value.as_str() {
            return Cow::Owned(s.shown.clone());
        }
        // As written, and as messages quote it (Rust's and JSON's escapes).
        let json = serde_json::to_string(&s.value).unwrap_or_default();
        let forms = [
            s.value.clone(),
            s.value.escape_debug().to_string(),
            json.trim_matches('"').to_string(),
        ];
        for form in forms {
            if form.len() >= 4 && out.contains(form.as_str()) {
                out = Cow::Owned(out.replace(form.as_str(), &s.shown));
            }
        }
    }
    out
}

/// The file's text with variables substituted, and the values substituted.
pub struct Interpolated<'a> {
    pub text: Cow<'a, str>,
    pub secrets: Vec<Secret>,
}

/// One `${NAME}` or `${NAME:-default}` in the file.
struct Var<'a> {
    /// As written, to put back where it meant nothing (in a comment).
    raw: &'a str,
    name: &'a str,
    default: Option<&'a str>,
}

/// Substitutes variables from `lookup`; an unset variable without a default is an error at
/// the scalar that names it.
///
/// Each `${NAME...}` is first swapped for a placeholder made of plain-scalar characters, so
/// that YAML reads `[${PORT}, 80]` or `{a: ${A}}` as scalars and not as a flow mapping; then
/// the scalars holding placeholders get their values, and placeholders left in comments are
/// ignored.
pub fn interpolate<'a>(
    text: &'a str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Interpolated<'a>, Vec<(Pos, String)>> {
    let mut secrets = Vec::new();
    if !text.contains("${") {
        return Ok(Interpolated {
            text: Cow::Borrowed(text),
            secrets,
        });
    }
    let (marked, vars) = mark(text);
    let mut errors = Vec::new();
    // (byte range in `marked`, replacement), in order.
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    for item in Parser::new_from_str(&marked) {
        // A syntax error is the deserializer's to report, with its own position.
        let Ok((event, span)) = item else { break };
        let Event::Scalar(value, style, ..) = event else {
            continue;
        };
        let Some(range) = span.byte_range() else {
            continue;
        };
        if !value.contains(MARK) && !value.contains("$${") {
            continue;
        }
        let pos = Pos {
            line: span.start.line(),
            col: span.start.col() + 1,
        };
        if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
            // A block scalar is edited in place, in its own text: a value's line breaks get
            // the block's indentation, so it stays inside the block and nothing after it moves.
            let source = &marked[range.clone()];
            let indent = block_indent(&marked, range.start);
            match substitute(source, &vars, lookup, &mut secrets) {
                Ok(_) => {
                    let mut scratch = Vec::new();
                    let indented = |v: &str| v.replace('\n', &format!("\n{indent}"));
                    let written = substitute_with(source, &vars, lookup, &mut scratch, &indented);
                    edits.push((range, written.unwrap_or_default()));
                }
                Err(msg) => errors.push((pos, msg)),
            }
            continue;
        }
        match substitute(&value, &vars, lookup, &mut secrets) {
            Ok(v) => {
                let plain = style == ScalarStyle::Plain && plain_safe(&v);
                let written = if plain {
                    v
                } else {
                    serde_json::to_string(&v).unwrap_or_default()
                };
                edits.push((range, written));
            }
            Err(msg) => errors.push((pos, msg)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut out = String::with_capacity(marked.len());
    let mut at = 0;
    for (range, written) in edits {
        out.push_str(&marked[at..range.start]);
        out.push_str(&written);
        at = range.end;
    }
    out.push_str(&marked[at..]);
    if out.contains(MARK) {
        for (n, var) in vars.iter().enumerate() {
            out = out.replace(&format!("{MARK}{n}__"), var.raw);
        }
    }
    Ok(Interpolated {
        text: Cow::Owned(out),
        secrets,
    })
}

/// The placeholder's prefix; `MARK{n}__` stands for the n-th variable.
const MARK: &str = "__gatehouse_var_";

/// Swaps every `${NAME}` / `${NAME:-default}` (not `$${`, not `${1}` or `${name}`) for a
/// placeholder.
fn mark(text: &str) -> (String, Vec<Var<'_>>) {
    let mut out = String::with_capacity(text.len());
    let mut vars = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let escaped = i > 0 && rest.as_bytes()[i - 1] == b'$';
        let body = &rest[i + 2..];
        let parsed = body
            .find(['}', '\n'])
            .filter(|&e| body.as_bytes()[e] == b'}')
            .and_then(|e| {
                let inner = &body[..e];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                is_var_name(name).then_some((name, default, e))
            });
        match parsed {
            Some((name, default, e)) if !escaped => {
                out.push_str(&rest[..i]);
                out.push_str(&format!("{MARK}{}__", vars.len()));
                vars.push(Var {
                    raw: &rest[i..i + 3 + e],
                    name,
                    default,
                });
                rest = &body[e + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 2]);
                rest = body;
            }
        }
    }
    out.push_str(rest);
    (out, vars)
}

/// The indentation of a block scalar's content, from the first content line at or after
/// `start`.
fn block_indent(text: &str, start: usize) -> String {
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let mut rest = &text[line_start..];
    // The span may begin at the `|` / `>` header: the content starts on the next line.
    if rest.trim_start().starts_with(['|', '>']) {
        rest = rest.split_once('\n').map_or("", |(_, r)| r);
    }
    rest.chars().take_while(|c| *c == ' ').collect()
}

/// The value of one scalar with its placeholders replaced and `$${` unescaped.
fn substitute(
    value: &str,
    vars: &[Var<'_>],
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<Secret>,
) -> Result<String, String> {
    substitute_with(value, vars, lookup, secrets, &|v| v.to_string())
}

/// [`substitute`], with each variable's value passed through `shape` before it goes in.
fn substitute_with(
    value: &str,
    vars: &[Var<'_>],
    lookup: &dyn Fn(&str) -> Option<String>,
    secrets: &mut Vec<Secret>,
    shape: &dyn Fn(&str) -> String,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    loop {
        let next_mark = rest.find(MARK);
        let next_escape = rest.find("$${");
        let mark_first = match (next_mark, next_escape) {
            (Some(m), Some(e)) => m < e,
            (m, _) => m.is_some(),
        };
        match (next_mark, next_escape) {
            (Some(m), _) if mark_first => {
                out.push_str(&rest[..m]);
                let tail = &rest[m + MARK.len()..];
                let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
                let var = tail[..digits]
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| vars.get(n))
                    .filter(|_| tail[digits..].starts_with("__"));
                let Some(var) = var else {
                    // Not ours after all (the user wrote the prefix): keep it.
                    out.push_str(MARK);
                    rest = tail;
                    continue;
                };
                // As in the shell, `${VAR:-default}` takes the default when VAR is empty too.
                let set = lookup(var.name).filter(|v| !v.is_empty() || var.default.is_none());
                match (set, var.default) {
                    (Some(v), _) => {
                        secrets.push(Secret {
                            value: v.clone(),
                            shown: format!("${{{}}}", var.name),
                        });
                        out.push_str(&shape(&v));
                    }
                    (None, Some(d)) => out.push_str(&shape(d)),
                    (None, None) => {
                        return Err(format!(
                            "the environment variable {} is not set (give a default with ${{{}:-value}}, or write $${{ for a literal ${{)",
                            var.name, var.name
                        ))
                    }
                }
                rest = &tail[digits + 2..];
            }
            (_, Some(e)) => {
                out.push_str(&rest[..e]);
                out.push_str("${");
                rest = &rest[e + 3..];
            }
            _ => break,
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == b'_')
        && b.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_')
}

/// Whether `v` written as a plain scalar, in block or flow context, reads back as itself (or
/// as the number, boolean or null it spells, which is why the user wrote it plain).
fn plain_safe(v: &str) -> bool {
    let Some(first) = v.chars().next() else {
        return false;
    };
    v.chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/:@%+=~-".contains(c))
        && !v.contains(MARK)
        && !"-:?%@".contains(first)
        && !v.ends_with(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8081".into()),
            "SECRET" => Some("s3cr\"et: #x".into()),
            "HOST" => Some("api.internal".into()),
            _ => None,
        }
    }

    fn run(text: &str) -> Result<String, Vec<(Pos, String)>> {
        interpolate(text, &env).map(|i| i.text.into_owned())
    }

    #[test]
    fn substitutes_in_scalars_only() {
        let y = "# ${NOPE} in a comment\na: 127.0.0.1:${PORT}\nb: \"${SECRET}\"\nc: ${MISSING:-dflt}\nd: [${PORT}, x]\n";
        let out = run(y).unwrap();
        assert_eq!(
            out,
            "# ${NOPE} in a comment\na: 127.0.0.1:8081\nb: \"s3cr\\\"et: #x\"\nc: dflt\nd: [8081, x]\n"
        );
    }

    #[test]
    fn a_value_cannot_inject_structure() {
        // Plain, but the value holds ": " and " #": it is quoted, not parsed.
        let out = run("a: ${SECRET}\n").unwrap();
        assert_eq!(out, "a: \"s3cr\\\"et: #x\"\n");
    }

    #[test]
    fn unset_is_an_error_at_its_line() {
        let e = run("a: 1\nb: ${MISSING}\n").unwrap_err();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, Pos { line: 2, col: 4 });
        assert!(e[0].1.contains("MISSING is not set"), "{}", e[0].1);
    }

    #[test]
    fn captures_and_escapes_stay() {
        let out = run("s: \"/u/${1}/${rest}/$${HOST}/${HOST}\"\n").unwrap();
        assert_eq!(out, "s: \"/u/${1}/${rest}/${HOST}/api.internal\"\n");
    }

    #[test]
    fn block_scalars_are_edited_in_place() {
        let env = |n: &str| match n {
            "TWO" => Some("a\nb".to_string()),
            "ONE" => Some("plain".to_string()),
            _ => None,
        };
        let y = "a:\n  body: |\n    hello ${ONE}\n    ${TWO}\n    end\n  next: 1\n";
        let out = interpolate(y, &env).unwrap().text.into_owned();
        assert_eq!(
            out,
            "a:\n  body: |\n    hello plain\n    a\n    b\n    end\n  next: 1\n"
        );
    }

    #[test]
    fn an_empty_variable_takes_the_default() {
        let env = |n: &str| (n == "EMPTY").then(String::new);
        let out = interpolate("a: ${EMPTY:-d}\nb: x${EMPTY}y\n", &env).unwrap();
        assert_eq!(out.text, "a: d\nb: xy\n");
    }

    #[test]
    fn redact_shows_the_variable() {
        let i = interpolate("a: ${HOST}\n", &env).unwrap();
        assert_eq!(redact("x api.internal y", &i.secrets), "x ${HOST} y");
        let short = [Secret {
            value: "ab".into(),
            shown: "${X}".into(),
        }];
        assert_eq!(redact("abc", &short), "abc");
        assert_eq!(redact("ab", &short), "${X}");
        let quoted = [Secret {
            value: "pw\n\"x".into(),
            shown: "${PW}".into(),
        }];
        assert_eq!(redact(r#"bad: "pw\n\"x""#, &quoted), r#"bad: "${PW}""#);
    }
}
