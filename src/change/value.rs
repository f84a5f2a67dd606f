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

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::catalog::{TypeKind, Types};

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

/// `2026-11-28 12:00:00.1+00` → `2026-11-28T12:00:00.100000Z`.
/// Other offsets (a session that did not pin `TimeZone=UTC`) are moved to
/// UTC. Always six fractional digits, as `committed_at` has: a fixed width
/// that strict parsers accept and that sorts as text in time order.
fn timestamptz(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = split_bc(text);
    let Some(offset_at) = body.rfind(['+', '-']).filter(|&i| i > 10) else {
        return text.to_owned();
    };
    let (local, offset) = body.split_at(offset_at);
    let local = local.replacen(' ', "T", 1);
    let local = if bc { astronomical_year(&local) } else { local };
    if offset
        .trim_start_matches(['+', '-'])
        .split(':')
        .all(|part| part.bytes().all(|b| b == b'0'))
    {
        return format!("{}Z", with_micros(&local));
    }
    let Some(seconds) = offset_seconds(offset) else {
        return text.to_owned();
    };
    match chrono::NaiveDateTime::parse_from_str(&local, "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(naive) => {
            let utc = naive - chrono::Duration::seconds(seconds);
            let base = utc.format("%Y-%m-%dT%H:%M:%S").to_string();
            let micros = utc.and_utc().timestamp_subsec_micros();
            format!("{base}.{micros:06}Z")
        }
        Err(_) => text.to_owned(),
    }
}

/// `12:00:00` → `12:00:00.000000`, `12:00:00.5` → `12:00:00.500000`: the
/// microseconds Postgres keeps, at a fixed width.
fn with_micros(local: &str) -> String {
    match local.split_once('.') {
        Some((seconds, fraction)) => format!("{seconds}.{fraction:0<6}"),
        None => format!("{local}.000000"),
    }
}

/// `+05:30`, `-08`, `+05:53:28` as seconds east of UTC.
fn offset_seconds(offset: &str) -> Option<i64> {
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0;
    for (part, scale) in offset[1..].split(':').zip([3600, 60, 1]) {
        seconds += part.parse::<i64>().ok()? * scale;
    }
    Some(sign * seconds)
}

/// `2026-11-28 12:00:00.5` → `2026-11-28T12:00:00.500000`.
fn timestamp(text: &str) -> String {
    if text == "infinity" || text == "-infinity" {
        return text.to_owned();
    }
    let (body, bc) = split_bc(text);
    let local = with_micros(&body.replacen(' ', "T", 1));
    if bc {
        astronomical_year(&local)
    } else {
        local
    }
}

fn bc_to_astronomical(text: &str) -> String {
    match split_bc(text) {
        (body, true) => astronomical_year(body),
        (_, false) => text.to_owned(),
    }
}

fn split_bc(text: &str) -> (&str, bool) {
    match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    }
}

/// ISO 8601 has no "BC": 1 BC is year 0000, 44 BC is -0043.
fn astronomical_year(text: &str) -> String {
    let Some((year, rest)) = text.split_once('-') else {
        return text.to_owned();
    };
    match year.parse::<i64>() {
        Ok(0) | Err(_) => text.to_owned(),
        Ok(1) => format!("0000-{rest}"),
        Ok(year) => format!("-{:04}-{rest}", year - 1),
    }
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

/// A parsed array literal: nested lists of element texts (`None` = NULL).
#[derive(Debug, PartialEq)]
enum ArrayItem {
    Element(Option<String>),
    Nested(Vec<ArrayItem>),
}

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

/// Parses `{1,2}`, `{{1,NULL},{"a \"b\"",c}}`, `[0:1]={1,2}`, `{}`.
/// Lower bounds are dropped: JSON arrays start at 0 whatever Postgres
/// numbers them from.
fn parse_array(text: &str, delimiter: char) -> Option<Vec<ArrayItem>> {
    let text = text.trim();
    let body = if text.starts_with('[') {
        text.split_once('=')?.1.trim_start()
    } else {
        text
    };
    let mut chars = body.chars().peekable();
    let items = parse_array_level(&mut chars, delimiter)?;
    if chars.any(|c| !c.is_whitespace()) {
        return None;
    }
    Some(items)
}

fn parse_array_level(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
    delimiter: char,
) -> Option<Vec<ArrayItem>> {
    if chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    skip_whitespace(chars);
    if chars.next_if_eq(&'}').is_some() {
        return Some(items);
    }
    loop {
        skip_whitespace(chars);
        match chars.peek()? {
            '{' => items.push(ArrayItem::Nested(parse_array_level(chars, delimiter)?)),
            '"' => {
                chars.next();
                let mut value = String::new();
                loop {
                    match chars.next()? {
                        '\\' => value.push(chars.next()?),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                items.push(ArrayItem::Element(Some(value)));
            }
            _ => {
                let mut value = String::new();
                let mut escaped = false;
                while let Some(&c) = chars.peek() {
                    if c == delimiter || c == '}' {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        value.push(chars.next()?);
                        escaped = true;
                    } else {
                        value.push(c);
                    }
                }
                let value = value.trim_end().to_owned();
                if !escaped && value.eq_ignore_ascii_case("NULL") {
                    items.push(ArrayItem::Element(None));
                } else {
                    items.push(ArrayItem::Element(Some(value)));
                }
            }
        }
        skip_whitespace(chars);
        match chars.next()? {
            '}' => return Some(items),
            c if c == delimiter => {}
            _ => return None,
        }
    }
}

fn skip_whitespace(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while chars.next_if(|c| c.is_whitespace()).is_some() {}
}

/// Parses a record literal `(1,"a b",)` into its field texts; an empty
/// field is NULL, `""` is the empty string.
fn parse_record(text: &str) -> Option<Vec<Option<String>>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let mut fields = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        let mut value = String::new();
        let mut present = false;
        loop {
            match chars.peek() {
                None | Some(',') => break,
                Some('"') => {
                    chars.next();
                    present = true;
                    loop {
                        match chars.next()? {
                            '\\' => value.push(chars.next()?),
                            '"' if chars.next_if_eq(&'"').is_some() => value.push('"'),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                }
                Some('\\') => {
                    chars.next();
                    present = true;
                    value.push(chars.next()?);
                }
                Some(&c) => {
                    chars.next();
                    present = true;
                    value.push(c);
                }
            }
        }
        fields.push(present.then_some(value));
        if chars.next().is_none() {
            return Some(fields);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, TypeInfo};

    const INT2: u32 = 21;
    const INT4: u32 = 23;
    const INT8: u32 = 20;
    const OID: u32 = 26;
    const TEXT: u32 = 25;
    const BOOL: u32 = 16;
    const FLOAT4: u32 = 700;
    const FLOAT8: u32 = 701;
    const NUMERIC: u32 = 1700;
    const JSON: u32 = 114;
    const JSONB: u32 = 3802;
    const TIMESTAMPTZ: u32 = 1184;
    const TIMESTAMP: u32 = 1114;
    const DATE: u32 = 1082;
    const TIME: u32 = 1083;
    const TIMETZ: u32 = 1266;
    const INTERVAL: u32 = 1186;
    const UUID: u32 = 2950;
    const BYTEA: u32 = 17;
    const INT4_ARRAY: u32 = 1007;
    const TEXT_ARRAY: u32 = 1009;
    const BOX: u32 = 603;
    const BOX_ARRAY: u32 = 1020;
    const MOOD: u32 = 90001;
    const POSITIVE: u32 = 90002;
    const PAIR: u32 = 90003;
    const PAIR_ARRAY: u32 = 90004;
    const INT4RANGE: u32 = 3904;
    const BYTEA_ARRAY: u32 = 1001;
    const JSONB_ARRAY: u32 = 3807;

    fn types() -> Types {
        let mut types = Types::default();
        let mut base = |oid, name: &str| {
            types.insert(TypeInfo {
                oid,
                name: name.into(),
                kind: TypeKind::Base,
            })
        };
        for (oid, name) in [
            (INT2, "int2"),
            (INT4, "int4"),
            (INT8, "int8"),
            (OID, "oid"),
            (TEXT, "text"),
            (BOOL, "bool"),
            (FLOAT4, "float4"),
            (FLOAT8, "float8"),
            (NUMERIC, "numeric"),
            (JSON, "json"),
            (JSONB, "jsonb"),
            (TIMESTAMPTZ, "timestamptz"),
            (TIMESTAMP, "timestamp"),
            (DATE, "date"),
            (TIME, "time"),
            (TIMETZ, "timetz"),
            (INTERVAL, "interval"),
            (UUID, "uuid"),
            (BYTEA, "bytea"),
            (BOX, "box"),
        ] {
            base(oid, name);
        }
        let mut add = |oid, name: &str, kind| {
            types.insert(TypeInfo {
                oid,
                name: name.into(),
                kind,
            })
        };
        add(
            INT4_ARRAY,
            "_int4",
            TypeKind::Array {
                element: INT4,
                delimiter: ',',
            },
        );
        add(
            TEXT_ARRAY,
            "_text",
            TypeKind::Array {
                element: TEXT,
                delimiter: ',',
            },
        );
        add(
            BOX_ARRAY,
            "_box",
            TypeKind::Array {
                element: BOX,
                delimiter: ';',
            },
        );
        add(
            BYTEA_ARRAY,
            "_bytea",
            TypeKind::Array {
                element: BYTEA,
                delimiter: ',',
            },
        );
        add(
            JSONB_ARRAY,
            "_jsonb",
            TypeKind::Array {
                element: JSONB,
                delimiter: ',',
            },
        );
        add(MOOD, "mood", TypeKind::Enum);
        add(POSITIVE, "positive", TypeKind::Domain { base: INT8 });
        add(
            PAIR,
            "pair",
            TypeKind::Composite {
                fields: vec![
                    Column {
                        name: "n".into(),
                        type_oid: INT4,
                    },
                    Column {
                        name: "label".into(),
                        type_oid: TEXT,
                    },
                    Column {
                        name: "tags".into(),
                        type_oid: TEXT_ARRAY,
                    },
                ],
            },
        );
        add(
            PAIR_ARRAY,
            "_pair",
            TypeKind::Array {
                element: PAIR,
                delimiter: ',',
            },
        );
        add(INT4RANGE, "int4range", TypeKind::Range { subtype: INT4 });
        types
    }

    fn map(oid: u32, text: &str) -> Value {
        text_to_json(&types(), oid, text)
    }

    /// Compares the serialized JSON, so number representation counts too.
    fn check(oid: u32, text: &str, want: &str) {
        assert_eq!(
            serde_json::to_string(&map(oid, text)).unwrap_or_default(),
            want,
            "{text}"
        );
    }

    #[test]
    fn integers_are_numbers_and_exact() {
        check(INT2, "-32768", "-32768");
        check(INT4, "2147483647", "2147483647");
        check(INT8, "9223372036854775807", "9223372036854775807");
        check(INT8, "9007199254740993", "9007199254740993");
        check(INT8, "-9223372036854775808", "-9223372036854775808");
        check(OID, "4294967295", "4294967295");
        check(INT4, "12abc", "\"12abc\"");
        check(INT4, "-", "\"-\"");
    }

    #[test]
    fn floats_keep_their_digits_and_name_their_specials() {
        check(FLOAT8, "1.5", "1.5");
        check(FLOAT8, "0.30000000000000004", "0.30000000000000004");
        check(FLOAT8, "1e+100", "1e+100");
        check(
            FLOAT8,
            "-1.2345678901234567e-300",
            "-1.2345678901234567e-300",
        );
        check(FLOAT4, "3.4028235e+38", "3.4028235e+38");
        check(FLOAT8, "-0", "-0");
        check(FLOAT8, "NaN", "\"NaN\"");
        check(FLOAT8, "Infinity", "\"Infinity\"");
        check(FLOAT4, "-Infinity", "\"-Infinity\"");
    }

    #[test]
    fn numeric_is_an_exact_string() {
        check(NUMERIC, "19.90", "\"19.90\"");
        check(
            NUMERIC,
            "123456789012345678901234567890.000000001",
            "\"123456789012345678901234567890.000000001\"",
        );
        check(NUMERIC, "NaN", "\"NaN\"");
        check(NUMERIC, "Infinity", "\"Infinity\"");
        check(NUMERIC, "-Infinity", "\"-Infinity\"");
    }

    #[test]
    fn booleans_and_text() {
        check(BOOL, "t", "true");
        check(BOOL, "f", "false");
        check(
            TEXT,
            "a \"quoted\" ünïcode\nline",
            "\"a \\\"quoted\\\" ünïcode\\nline\"",
        );
        check(TEXT, "", "\"\"");
    }

    #[test]
    fn json_is_embedded_exactly() {
        check(
            JSONB,
            r#"{"a": [1, 2.50, null], "b": {"c": 12345678901234567890}}"#,
            r#"{"a":[1,2.50,null],"b":{"c":12345678901234567890}}"#,
        );
        check(JSON, r#"{"z": 1, "a": 2}"#, r#"{"z":1,"a":2}"#);
        check(JSON, "\"just a string\"", "\"just a string\"");
        check(JSONB, "not json", "\"not json\"");
    }

    #[test]
    fn timestamps_are_rfc3339() {
        check(
            TIMESTAMPTZ,
            "2026-11-28 12:00:00.123456+00",
            "\"2026-11-28T12:00:00.123456Z\"",
        );
        check(
            TIMESTAMPTZ,
            "2026-11-28 12:00:00+00",
            "\"2026-11-28T12:00:00.000000Z\"",
        );
        check(
            TIMESTAMPTZ,
            "2026-11-28 12:00:00.5+00",
            "\"2026-11-28T12:00:00.500000Z\"",
        );
        check(
            TIMESTAMPTZ,
            "2026-11-28 17:30:00.25+05:30",
            "\"2026-11-28T12:00:00.250000Z\"",
        );
        check(
            TIMESTAMPTZ,
            "2026-11-28 04:00:00-08",
            "\"2026-11-28T12:00:00.000000Z\"",
        );
        check(TIMESTAMPTZ, "infinity", "\"infinity\"");
        check(TIMESTAMPTZ, "-infinity", "\"-infinity\"");
        check(
            TIMESTAMPTZ,
            "0044-03-15 12:00:00+00 BC",
            "\"-0043-03-15T12:00:00.000000Z\"",
        );
        check(
            TIMESTAMP,
            "2026-11-28 12:00:00.123456",
            "\"2026-11-28T12:00:00.123456\"",
        );
        check(TIMESTAMP, "infinity", "\"infinity\"");
        check(
            TIMESTAMP,
            "2026-11-28 12:00:00.1",
            "\"2026-11-28T12:00:00.100000\"",
        );
        check(
            TIMESTAMP,
            "0001-01-01 00:00:00 BC",
            "\"0000-01-01T00:00:00.000000\"",
        );
        check(DATE, "2026-11-28", "\"2026-11-28\"");
        check(DATE, "-infinity", "\"-infinity\"");
        check(DATE, "0044-03-15 BC", "\"-0043-03-15\"");
        check(TIME, "12:00:00.123456", "\"12:00:00.123456\"");
        check(TIMETZ, "12:00:00+05:30", "\"12:00:00+05:30\"");
        check(INTERVAL, "P1Y2M3DT4H5M6.5S", "\"P1Y2M3DT4H5M6.5S\"");
    }

    #[test]
    fn uuid_enum_range_are_strings() {
        check(
            UUID,
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\"",
        );
        check(MOOD, "happy", "\"happy\"");
        check(INT4RANGE, "[1,10)", "\"[1,10)\"");
        check(99999, "unknown type", "\"unknown type\"");
    }

    #[test]
    fn bytea_is_base64() {
        check(BYTEA, "\\xdeadbeef", "\"3q2+7w==\"");
        check(BYTEA, "\\x", "\"\"");
        check(BYTEA, "abc\\000\\\\", "\"YWJjAFw=\"");
        check(BYTEA, "\\xzz", "\"\\\\xzz\"");
    }

    #[test]
    fn domains_map_as_their_base() {
        check(POSITIVE, "9007199254740993", "9007199254740993");
    }

    #[test]
    fn arrays_of_every_shape() {
        check(INT4_ARRAY, "{1,2,3}", "[1,2,3]");
        check(INT4_ARRAY, "{}", "[]");
        check(INT4_ARRAY, "{{1,NULL},{3,4}}", "[[1,null],[3,4]]");
        check(INT4_ARRAY, "[0:1]={1,2}", "[1,2]");
        check(INT4_ARRAY, "[1:2][0:0]={{1},{2}}", "[[1],[2]]");
        check(
            TEXT_ARRAY,
            r#"{"a b","with \"quote\"","back\\slash",NULL,"NULL",""}"#,
            r#"["a b","with \"quote\"","back\\slash",null,"NULL",""]"#,
        );
        check(TEXT_ARRAY, "{a,b}", r#"["a","b"]"#);
        check(TEXT_ARRAY, r#"{"{braces}","a,b"}"#, r#"["{braces}","a,b"]"#);
        check(
            BOX_ARRAY,
            "{(1,1),(0,0);(2,2),(1,1)}",
            r#"["(1,1),(0,0)","(2,2),(1,1)"]"#,
        );
        check(BYTEA_ARRAY, r#"{"\\x01ff",NULL}"#, r#"["Af8=",null]"#);
        check(
            JSONB_ARRAY,
            r#"{"{\"a\": 1}","[1, 2]"}"#,
            r#"[{"a":1},[1,2]]"#,
        );
        check(INT4_ARRAY, "{1,2", "\"{1,2\"");
        check(INT4_ARRAY, "{1,2}x", "\"{1,2}x\"");
    }

    #[test]
    fn composites_become_objects() {
        check(
            PAIR,
            r#"(1,"a b",)"#,
            r#"{"n":1,"label":"a b","tags":null}"#,
        );
        check(PAIR, r#"(2,"",{x})"#, r#"{"n":2,"label":"","tags":["x"]}"#);
        check(
            PAIR,
            r#"(3,"say ""hi"" \\ ok","{""a b"",c}")"#,
            r#"{"n":3,"label":"say \"hi\" \\ ok","tags":["a b","c"]}"#,
        );
        check(PAIR, "(,,)", r#"{"n":null,"label":null,"tags":null}"#);
        check(PAIR, "(1,2)", "\"(1,2)\"");
        check(
            PAIR_ARRAY,
            r#"{"(1,x,)",NULL}"#,
            r#"[{"n":1,"label":"x","tags":null},null]"#,
        );
    }

    #[test]
    fn record_parser_details() {
        assert_eq!(parse_record("()"), Some(vec![None]));
        assert_eq!(
            parse_record("(a\\,b,c)"),
            Some(vec![Some("a,b".into()), Some("c".into())])
        );
        assert_eq!(parse_record("(\"unterminated)"), None);
        assert_eq!(parse_record("no parens"), None);
    }
}
