//! The mapping checked type by type, against the text Postgres writes.

use super::literal::parse_record;
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

/// The catalog the tests map against: base types, arrays of some, and the
/// user-defined kinds (enum, domain, composite, range).
fn types() -> Types {
    let mut types = Types::default();
    let mut add = |oid, name: &str, kind| {
        types.insert(TypeInfo {
            oid,
            name: name.into(),
            kind,
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
        add(oid, name, TypeKind::Base);
    }
    for (oid, name, element, delimiter) in [
        (INT4_ARRAY, "_int4", INT4, ','),
        (TEXT_ARRAY, "_text", TEXT, ','),
        (BOX_ARRAY, "_box", BOX, ';'),
        (BYTEA_ARRAY, "_bytea", BYTEA, ','),
        (JSONB_ARRAY, "_jsonb", JSONB, ','),
        (PAIR_ARRAY, "_pair", PAIR, ','),
    ] {
        add(oid, name, TypeKind::Array { element, delimiter });
    }
    add(MOOD, "mood", TypeKind::Enum);
    add(POSITIVE, "positive", TypeKind::Domain { base: INT8 });
    let field = |name: &str, type_oid| Column {
        name: name.into(),
        type_oid,
    };
    let fields = vec![
        field("n", INT4),
        field("label", TEXT),
        field("tags", TEXT_ARRAY),
    ];
    add(PAIR, "pair", TypeKind::Composite { fields });
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
