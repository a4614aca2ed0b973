//! `examples/gatehouse.yaml` claims to show every key Gatehouse reads. This holds it to that:
//! every property path of the JSON Schema (`schema/gatehouse.schema.json`, itself kept equal to
//! what the binary prints by `tests/config_sources.rs`) must appear in the file, either as a key
//! in use or as a `# or key: ...` comment beside the key it replaces. That the file is a valid
//! config is `tests/cli.rs`'s `every_example_config_is_valid`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use std::collections::BTreeSet;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Every property path the schema allows: `clusters[].endpoints[].address`, with `*` for a
/// map's free keys (`routes[].match.headers.*.prefix`).
fn schema_paths(schema: &Value) -> BTreeSet<String> {
    fn walk(
        defs: &Value,
        node: &Value,
        path: &str,
        seen: &mut Vec<String>,
        out: &mut BTreeSet<String>,
    ) {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap().to_string();
            if !seen.contains(&name) {
                seen.push(name.clone());
                walk(defs, &defs[&name], path, seen, out);
                seen.pop();
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            for sub in node
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                walk(defs, sub, path, seen, out);
            }
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                walk(defs, v, &p, seen, out);
            }
        }
        if let Some(items) = node.get("items") {
            walk(defs, items, &format!("{path}[]"), seen, out);
        }
        if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
            walk(defs, extra, &format!("{path}.*"), seen, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&schema["$defs"], schema, "", &mut Vec::new(), &mut out);
    out
}

/// Every key path of a parsed YAML document, in the schema's notation.
fn value_paths(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                out.insert(p.clone());
                value_paths(v, &p, out);
            }
        }
        Value::Array(items) => {
            for item in items {
                value_paths(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// The paths of `# or key: ...` comments, from the block-style keys above them: a comment at
/// column C names a sibling of the keys at column C in the mapping it sits in.
fn alternative_paths(text: &str) -> BTreeSet<String> {
    let key = regex::Regex::new(r"^( *)(- )?([A-Za-z_][A-Za-z0-9_-]*):").unwrap();
    let alt = regex::Regex::new(r"^( *)# or ([A-Za-z_][A-Za-z0-9_]*):").unwrap();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let join = |stack: &[(usize, String)], upto: usize| {
        let mut p = String::new();
        for (col, seg) in stack {
            if *col >= upto {
                break;
            }
            if seg == "[]" {
                p.push_str("[]");
            } else {
                if !p.is_empty() {
                    p.push('.');
                }
                p.push_str(seg);
            }
        }
        p
    };
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(c) = alt.captures(line) {
            let col = c[1].len();
            let parent = join(&stack, col);
            out.insert(if parent.is_empty() {
                c[2].to_string()
            } else {
                format!("{parent}.{}", &c[2])
            });
        } else if let Some(c) = key.captures(line) {
            let indent = c[1].len();
            let dash = c.get(2).is_some();
            let col = if dash { indent + 2 } else { indent };
            let floor = if dash { indent } else { col };
            while stack.last().is_some_and(|(c, _)| *c >= floor) {
                stack.pop();
            }
            if dash {
                stack.push((indent, "[]".into()));
            }
            stack.push((col, c[3].to_string()));
        }
    }
    out
}

/// `a.*.b` matches `a.x-tenant.b`.
fn covers(pattern: &str, paths: &BTreeSet<String>) -> bool {
    let re = format!("^{}$", regex::escape(pattern).replace(r"\*", r"[^.\[\]]+"));
    let re = regex::Regex::new(&re).unwrap();
    paths.iter().any(|p| re.is_match(p))
}

#[test]
fn the_reference_example_shows_every_key_of_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/schema/gatehouse.schema.json")).unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(format!("{ROOT}/examples/gatehouse.yaml")).unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    let mut shown = BTreeSet::new();
    value_paths(&doc, "", &mut shown);
    let alternatives = alternative_paths(&text);
    shown.extend(alternatives.iter().cloned());

    let wanted = schema_paths(&schema);
    assert!(wanted.len() > 200, "the schema walk found {}", wanted.len());
    let missing: Vec<_> = wanted.iter().filter(|p| !covers(p, &shown)).collect();
    assert!(
        missing.is_empty(),
        "examples/gatehouse.yaml does not show {} key(s) of the schema: {missing:#?}",
        missing.len()
    );
    // A `# or` comment must name a key the schema has (a typo there would hide a missing key).
    for alt in &alternatives {
        assert!(
            wanted
                .iter()
                .any(|p| covers(p, &BTreeSet::from([alt.clone()]))),
            "`# or` comment {alt} names no key of the schema"
        );
    }
}

#[test]
fn alternative_comments_take_the_path_of_their_mapping() {
    let text = "a:\n  b: 1\n  # or c: 2\nl:\n  - name: x\n    k: 1\n    # or j: 2\n  - name: y\n# or top: 1\n";
    let got = alternative_paths(text);
    assert_eq!(
        got,
        BTreeSet::from(["a.c".to_string(), "l[].j".to_string(), "top".to_string()])
    );
}
