//! Keeps the module layering: each top-level module of `src/` imports (`crate::...`) only from
//! the layers below it, so the request path reads bottom-up and no two layers import each other.
//! One layer holds three modules that are one unit: a response body holds the upstream
//! connection's check-in, the pool sends bodies, and errors render as bodies.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;

/// Bottom first. A module may import from its own layer only where the layer is one unit.
const LAYERS: &[&[&str]] = &[
    &["clock"],
    &["framing"],
    &["etcd"],
    &["observe"],
    &["route"],
    &["demo"],
    &["body", "error", "upstream"],
    &["canonical"],
    &["filter"],
    &["cluster"],
    &["tls"],
    &["discovery"],
    &["runtime"],
    &["conn"],
    &["proxy"],
    &["listener"],
    &["reload"],
    &["admin"],
    &["upgrade"],
    &["ctl"],
    &["service"],
];

/// Above the crate root: modules that run a `Gateway` as `main.rs` does (signals, sd_notify), so
/// they may use `crate::Gateway` and the other root items.
const ABOVE_ROOT: &[&str] = &["service"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules a source file names through `crate::`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        out.insert(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        }
    }
    out
}

fn visit(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            visit(&p, files);
        } else if p.extension().is_some_and(|x| x == "rs") {
            files.push(p);
        }
    }
}

#[test]
fn each_module_imports_only_from_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" || module == "bin" {
            continue; // the crate root wires the layers together
        }
        let Some(own) = layer(&module) else {
            problems.push(format!(
                "{}: module `{module}` is not in LAYERS",
                rel.display()
            ));
            continue;
        };
        seen.insert(module.clone());
        let text = std::fs::read_to_string(f).unwrap();
        for dep in imports(&text) {
            if dep == module {
                continue;
            }
            let ok = match layer(&dep) {
                Some(l) => l < own || (l == own && LAYERS[own].len() > 1),
                // `crate::Gateway` and other root items sit above every layer but ABOVE_ROOT.
                None => ABOVE_ROOT.contains(&module.as_str()),
            };
            if !ok {
                problems.push(format!(
                    "{}: `{module}` imports `crate::{dep}`, which is not below it",
                    rel.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
    // The table names no module that is gone.
    for l in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(seen.contains(*l), "LAYERS names `{l}`, which has no file");
    }
}

#[test]
fn the_import_scanner_sees_both_forms() {
    let got = imports(
        "use crate::a::B;\nuse crate::{c, d::e};\n// crate::ignored\nlet x = crate::f::g();",
    );
    let want: BTreeSet<String> = ["a", "c", "d", "f"].iter().map(|s| s.to_string()).collect();
    assert_eq!(got, want);
}
