//! The config's JSON Schema: generated from the serde types with `schemars`, so it cannot drift
//! from what the parser accepts. The types whose `Deserialize` is written by hand (units,
//! header conditions) describe themselves here. `gatehouse schema` prints it; the repo keeps a
//! copy in `schema/gatehouse.schema.json` that a test holds in sync.

use crate::matching::ValueMatch;
use crate::units::{ByteSize, Dur, Percent, Window};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// The whole file's schema, as pretty JSON with a trailing newline.
pub fn schema_json() -> String {
    let mut schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<crate::Config>();
    schema.insert("title".into(), "Gatehouse configuration".into());
    let mut value = schema.to_value();
    loosen(&mut value);
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}

/// A `${VAR}` / `${VAR:-default}` the loader will substitute.
const VARIABLE_PATTERN: &str = r"\$\{[A-Z_][A-Z0-9_]*(:-[^}]*)?\}";

/// Makes the schema accept what the YAML loader accepts beyond the Rust types: a number or
/// boolean where a string goes (YAML `x-version: 2` is the string "2" to the parser), a quoted
/// number where a number goes, and a `${VAR}` anywhere a typed or patterned value goes.
fn loosen(v: &mut serde_json::Value) {
    use serde_json::{json, Value};
    match v {
        Value::Array(a) => a.iter_mut().for_each(loosen),
        Value::Object(m) => {
            m.values_mut().for_each(loosen);
            // A `${VAR}` fits every variant once each variant takes one, so "exactly one"
            // would fail; the variants are disjoint otherwise.
            if !m.contains_key("anyOf") {
                if let Some(one_of) = m.remove("oneOf") {
                    m.insert("anyOf".into(), one_of);
                }
            }
            let Some(types) = m.get("type").cloned() else {
                return;
            };
            let mut types: Vec<String> = match types {
                Value::String(t) => vec![t],
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect(),
                _ => return,
            };
            let strict = ["enum", "pattern", "const"]
                .iter()
                .any(|k| m.contains_key(*k));
            if types.iter().any(|t| t == "string") && !strict {
                for extra in ["number", "boolean"] {
                    if !types.iter().any(|t| t == extra) {
                        types.push(extra.to_string());
                    }
                }
                m.insert("type".into(), json!(types));
                return;
            }
            let typed = types
                .iter()
                .any(|t| matches!(t.as_str(), "integer" | "number" | "boolean"));
            if !(typed || strict) {
                return;
            }
            let mut alternatives = vec![json!({"type": "string", "pattern": VARIABLE_PATTERN})];
            if types.iter().any(|t| t == "integer" || t == "number") {
                alternatives
                    .push(json!({"type": "string", "pattern": r"^\s*-?[0-9]+(\.[0-9]+)?\s*$"}));
            }
            let keep = ["description", "default", "title"];
            let mut inner = serde_json::Map::new();
            let mut outer = serde_json::Map::new();
            for (k, val) in std::mem::take(m) {
                if keep.contains(&k.as_str()) {
                    outer.insert(k, val);
                } else {
                    inner.insert(k, val);
                }
            }
            alternatives.insert(0, Value::Object(inner));
            outer.insert("anyOf".into(), Value::Array(alternatives));
            *m = outer;
        }
        _ => {}
    }
}

const DURATION_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?(ms|s|m|h)\s*$";

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: a number and a unit, ms, s, m or h (250ms, 5s, 1.5s, 2m, 1h).",
            "type": "string",
            "pattern": DURATION_PATTERN,
        })
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: an integer, or a number with B, KiB, MiB, GiB (or KB, MB, GB).",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+\s*(B|KiB|MiB|GiB|KB|kB|MB|GB)?\s*$"},
            ],
        })
    }
}

impl JsonSchema for Percent {
    fn schema_name() -> Cow<'static, str> {
        "Percent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A share: a percentage like 50%, or a number from 0 to 1.",
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*%?\s*$"},
            ],
        })
    }
}

impl JsonSchema for Window {
    fn schema_name() -> Cow<'static, str> {
        "Window".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A sliding window: the last N calls (20) or the last span of time (10s).",
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 10000},
                {"type": "string", "pattern": r"^\s*[0-9]+\s*$"},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
        })
    }
}

impl JsonSchema for ValueMatch {
    fn schema_name() -> Cow<'static, str> {
        "ValueMatch".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A condition on a value: the exact value, or one of exact, prefix, regex (anchored) or present, optionally inverted.",
            "anyOf": [
                {"type": ["string", "integer", "boolean"]},
                {
                    "type": "object",
                    "properties": {
                        "exact": {"type": "string"},
                        "prefix": {"type": "string"},
                        "regex": {"type": "string"},
                        "present": {"type": "boolean"},
                        "invert": {"type": "boolean", "default": false},
                    },
                    "additionalProperties": false,
                    "minProperties": 1,
                },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_names_every_top_level_key() {
        let v: serde_json::Value = serde_json::from_str(&super::schema_json()).unwrap();
        let props = v["properties"].as_object().unwrap();
        for key in [
            "listeners",
            "clusters",
            "routes",
            "admin",
            "rate_limits",
            "cache",
        ] {
            assert!(props.contains_key(key), "{key} missing");
        }
        assert_eq!(v["additionalProperties"], false);
        // Every key has a default: even listeners, which `services:` can supply.
        assert!(v.get("required").is_none());
    }
}
