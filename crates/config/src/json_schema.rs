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
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
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
