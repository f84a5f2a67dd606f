//! Column values from their Postgres text form to JSON.
//!
//! Both capture modes see a value as the text its type's output function
//! writes (pgoutput sends it; the capture trigger stores it), under pinned
//! settings (`DateStyle=ISO`, `IntervalStyle=iso_8601`, `TimeZone=UTC`,
//! `extra_float_digits=3`, `bytea_output=hex`). This module gives that text
//! its meaning in JSON: numbers as numbers, `numeric` as an exact string,
//! `json`/`jsonb` embedded, arrays as arrays, timestamps in RFC 3339,
//! `bytea` as base64.
//!
//! Text that does not parse as its type's form is passed on as a string
//! rather than dropped: a value is never lost to a mapping.

#![warn(missing_docs)]

mod datetime;
mod literal;
#[cfg(test)]
mod tests;

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::catalog::{TypeKind, Types};
use datetime::{bc_to_astronomical, timestamp, timestamptz};
use literal::{parse_array, parse_record, ArrayItem};

/// The JSON for `text`, a value of the type `type_oid`.
pub fn text_to_json(types: &Types, type_oid: u32, text: &str) -> Value {
    to_json(types, type_oid, text, 0)
}

/// Domains over domains over arrays of composites: bounded, so a cycle in
/// a corrupt catalog cannot recurse forever.
const MAX_DEPTH: usize = 32;

fn to_json(types: &Types, type_oid: u32, text: &str, depth: usize) -> Value {
    let Some(info) = types.get(type_oid).filter(|_| depth < MAX_DEPTH) else {
        return Value::String(text.to_owned());
    };
    match &info.kind {
        TypeKind::Domain { base } => to_json(types, *base, text, depth + 1),
        TypeKind::Base => base_to_json(&info.name, text),
        TypeKind::Array { element, delimiter } => parse_array(text, *delimiter)
            .map(|array| array_to_json(types, *element, array, depth))
            .unwrap_or_else(|| Value::String(text.to_owned())),
        TypeKind::Composite { fields } => match parse_record(text) {
            Some(values) if values.len() == fields.len() => {
                let mut object = Map::new();
                for (field, value) in fields.iter().zip(values) {
                    let value = match value {
                        Some(text) => to_json(types, field.type_oid, &text, depth + 1),
                        None => Value::Null,
                    };
                    object.insert(field.name.clone(), value);
                }
                Value::Object(object)
            }
            _ => Value::String(text.to_owned()),
        },
        // Enums, ranges, multiranges and the rest: their text is their meaning.
        _ => Value::String(text.to_owned()),
    }
}

/// What a base type's values become in JSON, by the type's name. The event
/// catalog's JSON Schemas are built from the same classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// An exact JSON number without fraction.
    Integer,
    /// A JSON number; `NaN` and the infinities as strings.
    Float,
    /// `true` or `false`.
    Boolean,
    /// Embedded as JSON.
    Json,
    /// RFC 3339 in UTC (or `infinity`, `-infinity`).
    Timestamptz,
    /// ISO 8601 without offset.
    Timestamp,
    /// ISO 8601 date (or `infinity`, `-infinity`).
    Date,
    /// Standard base64.
    Bytea,
    /// The text Postgres prints: numeric (exact, NaN and infinities
    /// included), money, text types, uuid, interval, time, timetz, inet,
    /// bit strings, geometry, ...
    Text,
}

/// The JSON kind of the base type named `type_name` (`int4`, `timestamptz`).
pub fn base_kind(type_name: &str) -> BaseKind {
    match type_name {
        "int2" | "int4" | "int8" | "oid" | "xid" | "xid8" | "cid" => BaseKind::Integer,
        "float4" | "float8" => BaseKind::Float,
        "bool" => BaseKind::Boolean,
        "json" | "jsonb" => BaseKind::Json,
        "timestamptz" => BaseKind::Timestamptz,
        "timestamp" => BaseKind::Timestamp,
        "date" => BaseKind::Date,
        "bytea" => BaseKind::Bytea,
        _ => BaseKind::Text,
    }
}

fn base_to_json(type_name: &str, text: &str) -> Value {
    match base_kind(type_name) {
        BaseKind::Integer => integer(text),
        BaseKind::Float => match text {
            "NaN" | "Infinity" | "-Infinity" => Value::String(text.to_owned()),
            _ => number(text),
        },
        BaseKind::Boolean => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => Value::String(text.to_owned()),
        },
        BaseKind::Json => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
        }
        BaseKind::Timestamptz => Value::String(timestamptz(text)),
        BaseKind::Timestamp => Value::String(timestamp(text)),
        BaseKind::Date => Value::String(bc_to_astronomical(text)),
        BaseKind::Bytea => bytea(text).map_or_else(
            || Value::String(text.to_owned()),
            |bytes| Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
        BaseKind::Text => Value::String(text.to_owned()),
    }
}

fn integer(text: &str) -> Value {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Value::String(text.to_owned());
    }
    number(text)
}

/// An exact JSON number (serde_json keeps the digits as written).
fn number(text: &str) -> Value {
    text.parse::<Number>()
        .map(Value::Number)
        .unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `\x0a0b` (hex) or the legacy escape format.
fn bytea(text: &str) -> Option<Vec<u8>> {
    if let Some(hex) = text.strip_prefix("\\x") {
        return hex::decode(hex).ok();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
        } else if bytes.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            let octal = std::str::from_utf8(bytes.get(i + 1..i + 4)?).ok()?;
            out.push(u8::from_str_radix(octal, 8).ok()?);
            i += 4;
        }
    }
    Some(out)
}

/// The JSON array for a parsed array literal, each element mapped as
/// `element`'s type.
fn array_to_json(types: &Types, element: u32, items: Vec<ArrayItem>, depth: usize) -> Value {
    Value::Array(
        items
            .into_iter()
            .map(|item| match item {
                ArrayItem::Element(Some(text)) => to_json(types, element, &text, depth + 1),
                ArrayItem::Element(None) => Value::Null,
                ArrayItem::Nested(items) => array_to_json(types, element, items, depth),
            })
            .collect(),
    )
}
