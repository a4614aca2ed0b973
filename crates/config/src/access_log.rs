//! `access_log:` — where the JSON access log goes (stdout, a file reopened on `SIGUSR1`, or
//! off), which lines are written (a status floor, a sample of the lines below 500) and which
//! fields they carry. `access_log: stdout` and `access_log: off` stay valid shorthands.

use crate::units::Percent;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// Every field a line can carry, in the order lines write them. `tls` stands for
/// `tls_version`, `tls_cipher`, `sni` and `client_cert` (written on TLS listeners only), and
/// `cache` is written on routes with a cache filter.
pub const FIELDS: [&str; 21] = [
    "time",
    "request_id",
    "trace_id",
    "client",
    "peer",
    "method",
    "host",
    "path",
    "route",
    "cluster",
    "endpoint",
    "consumer",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "upstream_ms",
    "retries",
    "error",
    "cache",
    "tls",
];

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessOutput {
    #[default]
    Stdout,
    /// Appended to `path`; reopened on `SIGUSR1` (after logrotate moved it).
    File,
    Off,
}

/// `access_log:`; see `docs/observability.md`.
#[derive(Clone, Debug, Serialize, PartialEq, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// `stdout` (default), `file` or `off`.
    #[serde(default)]
    pub output: AccessOutput,
    /// The file, with `output: file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only lines with at least this status (`500`: errors only; default 0, all).
    #[serde(default)]
    pub min_status: u16,
    /// The share of lines below 500 that are written (default 100%); 5xx lines are always kept.
    #[serde(default = "all")]
    pub sample: Percent,
    /// The fields written (default: all of them, see `FIELDS`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

fn all() -> Percent {
    Percent(1.0)
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            output: AccessOutput::Stdout,
            path: None,
            min_status: 0,
            sample: all(),
            fields: Vec::new(),
        }
    }
}

impl AccessLog {
    /// The chosen fields as a bit set over [`FIELDS`] (all bits when none are chosen).
    pub fn field_mask(&self) -> u32 {
        if self.fields.is_empty() {
            return (1 << FIELDS.len()) - 1;
        }
        self.fields
            .iter()
            .filter_map(|f| FIELDS.iter().position(|k| k == f))
            .fold(0, |m, i| m | 1 << i)
    }

    /// Problems at `access_log`.
    pub fn check(&self, out: &mut Vec<(String, String)>) {
        if self.path.as_deref().is_some_and(|p| p.trim().is_empty()) {
            out.push(("access_log.path".into(), "must not be empty".into()));
        }
        match (self.output, &self.path) {
            (AccessOutput::File, None) => {
                out.push(("access_log.path".into(), "output: file needs a path".into()))
            }
            (AccessOutput::Stdout | AccessOutput::Off, Some(_)) => out.push((
                "access_log.path".into(),
                "a path is for output: file".into(),
            )),
            _ => {}
        }
        for (i, f) in self.fields.iter().enumerate() {
            if !FIELDS.contains(&f.as_str()) {
                out.push((
                    format!("access_log.fields[{i}]"),
                    format!("unknown field {f:?}: expected one of {}", FIELDS.join(", ")),
                ));
            }
        }
        if self.min_status > 599 {
            out.push((
                "access_log.min_status".into(),
                "a status is at most 599".into(),
            ));
        }
    }
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{self, MapAccess, Visitor};
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            #[serde(default)]
            output: AccessOutput,
            #[serde(default)]
            path: Option<String>,
            #[serde(default)]
            min_status: u16,
            #[serde(default = "all")]
            sample: Percent,
            #[serde(default)]
            fields: Vec<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AccessLog;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("stdout, off, or {output, path, min_status, sample, fields}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let output = AccessOutput::deserialize(de::value::StrDeserializer::<E>::new(v))?;
                Ok(AccessLog {
                    output,
                    ..AccessLog::default()
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                let s = Spec::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(AccessLog {
                    output: s.output,
                    path: s.path,
                    min_status: s.min_status,
                    sample: s.sample,
                    fields: s.fields,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// The shorthand (`stdout`, `off`) or the mapping.
pub struct AccessLogSchema;

impl JsonSchema for AccessLogSchema {
    fn schema_name() -> Cow<'static, str> {
        "AccessLogSetting".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let full = g.subschema_for::<AccessLog>();
        json_schema!({
            "description": "Where the access log goes: stdout (default), off, or {output, path, min_status, sample, fields}.",
            "anyOf": [{"type": "string", "enum": ["stdout", "off"]}, full],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let all = AccessLog::default().field_mask();
        assert_eq!(all.count_ones() as usize, FIELDS.len());
        let some = AccessLog {
            fields: vec!["status".into(), "time".into()],
            ..AccessLog::default()
        };
        assert_eq!(some.field_mask(), 1 | 1 << 12);
    }
}
