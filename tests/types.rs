//! Every built-in type, one case per row of a table: the SQL type, a
//! literal, and the exact JSON a receiver must see. The cases are run
//! through a capture mode; a further mode is one more arm of [`capture`].

mod common;

use std::time::Duration;

use common::TestDb;
use serde_json::Value;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::change::{Action, RowChange};
use walhook::config::Config;
use walhook::source::replication::{ReplicationOptions, ReplicationSource};
use walhook::source::Source;

struct Case {
    sql_type: &'static str,
    literal: &'static str,
    /// The JSON text expected, compared after serializing both sides, so a
    /// number's exact digits count.
    want: &'static str,
}

const fn case(sql_type: &'static str, literal: &'static str, want: &'static str) -> Case {
    Case {
        sql_type,
        literal,
        want,
    }
}

/// Types the cases use besides the built-in ones.
const SETUP: &str = "
    CREATE TYPE mood AS ENUM ('sad', 'happy');
    CREATE DOMAIN positive AS int8 CHECK (VALUE > 0);
    CREATE TYPE pair AS (n int, label text, tags text[]);
";

const CASES: &[Case] = &[
    case("int2", "-32768", "-32768"),
    case("int4", "2147483647", "2147483647"),
    case("int8", "9007199254740993", "9007199254740993"),
    case("int8", "-9223372036854775808", "-9223372036854775808"),
    case("oid", "4294967295", "4294967295"),
    case("float4", "1.5", "1.5"),
    case("float8", "0.1", "0.1"),
    case("float8", "1e100", "1e+100"),
    case("float8", "'NaN'", r#""NaN""#),
    case("float8", "'Infinity'", r#""Infinity""#),
    case("float4", "'-Infinity'", r#""-Infinity""#),
    case(
        "numeric",
        "123456789012345678901234567890.000000001",
        r#""123456789012345678901234567890.000000001""#,
    ),
    case("numeric(10,2)", "19.9", r#""19.90""#),
    case("numeric", "'NaN'", r#""NaN""#),
    case("bool", "true", "true"),
    case("bool", "false", "false"),
    case("text", r#"E'say "hi"\n\\ ünï'"#, r#""say \"hi\"\n\\ ünï""#),
    case("varchar(10)", "'short'", r#""short""#),
    case("char(4)", "'ab'", r#""ab  ""#),
    case("name", "'a_name'", r#""a_name""#),
    case(
        "json",
        r#"'{"b": 1, "a": [1, 2.50]}'"#,
        r#"{"b":1,"a":[1,2.50]}"#,
    ),
    case(
        "jsonb",
        r#"'{"b": 1, "a": [1, 2.50, 12345678901234567890]}'"#,
        r#"{"a":[1,2.50,12345678901234567890],"b":1}"#,
    ),
    case(
        "timestamptz",
        "'2026-11-28 13:00:00.123456+01'",
        r#""2026-11-28T12:00:00.123456Z""#,
    ),
    case(
        "timestamptz",
        "'2026-11-28 12:00:00+00'",
        r#""2026-11-28T12:00:00.000000Z""#,
    ),
    case(
        "timestamptz",
        "'2026-11-28 12:00:00.1+00'",
        r#""2026-11-28T12:00:00.100000Z""#,
    ),
    case("timestamptz", "'infinity'", r#""infinity""#),
    case(
        "timestamp",
        "'2026-11-28 12:00:00.123456'",
        r#""2026-11-28T12:00:00.123456""#,
    ),
    case("timestamp", "'-infinity'", r#""-infinity""#),
    case(
        "timestamp",
        "'2026-11-28 12:00:00.1'",
        r#""2026-11-28T12:00:00.100000""#,
    ),
    case("date", "'2026-11-28'", r#""2026-11-28""#),
    case("time", "'12:00:00.123456'", r#""12:00:00.123456""#),
    case("timetz", "'12:00:00+05:30'", r#""12:00:00+05:30""#),
    case(
        "interval",
        "'1 year 2 months 3 days 04:05:06.5'",
        r#""P1Y2M3DT4H5M6.5S""#,
    ),
    case(
        "uuid",
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#,
    ),
    case("bytea", r"'\xdeadbeef'", r#""3q2+7w==""#),
    case("bytea", "''", r#""""#),
    case("int4[]", "'{1,2,3}'", "[1,2,3]"),
    case("int4[]", "'{}'", "[]"),
    case("int4[]", "'[0:1]={1,2}'", "[1,2]"),
    case("int4[][]", "'{{1,NULL},{3,4}}'", "[[1,null],[3,4]]"),
    case(
        "text[]",
        r#"'{"a b","with \"quote\"",NULL,"NULL",""}'"#,
        r#"["a b","with \"quote\"",null,"NULL",""]"#,
    ),
    case(
        "text[][]",
        r#"'{{"{x}",NULL},{"a,b",c}}'"#,
        r#"[["{x}",null],["a,b","c"]]"#,
    ),
    case("numeric[]", "'{1.10,NaN}'", r#"["1.10","NaN"]"#),
    case("float8[]", "'{1.5,Infinity}'", r#"[1.5,"Infinity"]"#),
    case("bool[]", "'{t,f,NULL}'", "[true,false,null]"),
    case("int8[]", "'{9007199254740993}'", "[9007199254740993]"),
    case(
        "jsonb[]",
        r#"ARRAY['{"a": 1}'::jsonb, '[1]']"#,
        r#"[{"a":1},[1]]"#,
    ),
    case(
        "timestamptz[]",
        "'{\"2026-11-28 12:00:00+00\"}'",
        r#"["2026-11-28T12:00:00.000000Z"]"#,
    ),
    case(
        "bytea[]",
        r"ARRAY['\x01ff'::bytea, NULL]",
        r#"["Af8=",null]"#,
    ),
    case(
        "uuid[]",
        "'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'",
        r#"["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]"#,
    ),
    case(
        "box[]",
        "'{(1,1),(0,0);(2,2),(1,1)}'",
        r#"["(1,1),(0,0)","(2,2),(1,1)"]"#,
    ),
    case("mood", "'happy'", r#""happy""#),
    case("mood[]", "'{sad,happy}'", r#"["sad","happy"]"#),
    case("positive", "9007199254740993", "9007199254740993"),
    case(
        "pair",
        r#"ROW(1, 'a b', NULL)"#,
        r#"{"n":1,"label":"a b","tags":null}"#,
    ),
    case(
        "pair",
        r#"ROW(2, 'say "hi", \ ok', ARRAY['x', 'y z'])"#,
        r#"{"n":2,"label":"say \"hi\", \\ ok","tags":["x","y z"]}"#,
    ),
    case(
        "pair[]",
        r#"ARRAY[ROW(3, '', '{}')::pair, NULL]"#,
        r#"[{"n":3,"label":"","tags":[]},null]"#,
    ),
    case("int4range", "'[1,10)'", r#""[1,10)""#),
    case(
        "tstzrange",
        "'[2026-11-28 12:00:00+00,)'",
        r#""[\"2026-11-28 12:00:00+00\",)""#,
    ),
    case("inet", "'192.168.0.1/24'", r#""192.168.0.1/24""#),
    case("macaddr", "'08:00:2b:01:02:03'", r#""08:00:2b:01:02:03""#),
    case("point", "'(1,2)'", r#""(1,2)""#),
    case("bit(3)", "B'101'", r#""101""#),
    case("tsvector", "'a fat cat'", r#""'a' 'cat' 'fat'""#),
    case("text", "NULL", "null"),
];

/// How values are captured.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Replication,
    Trigger,
}

fn table_sql() -> String {
    let columns: Vec<String> = CASES
        .iter()
        .enumerate()
        .map(|(i, c)| format!("c{i} {}", c.sql_type))
        .collect();
    format!(
        "CREATE TABLE typed (id int PRIMARY KEY, {})",
        columns.join(", ")
    )
}

fn insert_sql() -> String {
    let values: Vec<String> = CASES
        .iter()
        .enumerate()
        .map(|(i, c)| format!("({})::{}", c.literal, CASES[i].sql_type))
        .collect();
    format!("INSERT INTO typed VALUES (1, {})", values.join(", "))
}

/// The insert as `mode` captures it.
async fn capture(mode: Mode, db: &TestDb, client: &Client) -> RowChange {
    match mode {
        Mode::Replication => {
            client
                .batch_execute("SELECT walhook.set_capture_mode('replication')")
                .await
                .expect("mode");
            client
                .query("SELECT walhook.watch('public.typed')", &[])
                .await
                .expect("watch");
            let mut config = Config::default().capture;
            config.slot = format!("s_{}", db.name);
            let options = ReplicationOptions {
                heartbeat_interval: Duration::from_secs(1),
                ..Default::default()
            };
            let mut source = ReplicationSource::connect_with(&db.url, &config, options)
                .await
                .expect("connect");
            client
                .batch_execute(&insert_sql())
                .await
                .expect("insert every type");
            let shutdown = CancellationToken::new();
            let batch = tokio::time::timeout(Duration::from_secs(20), source.next_batch(&shutdown))
                .await
                .expect("a batch in time")
                .expect("no capture error")
                .expect("not shut down");
            source.committed(&batch.ack).await.expect("confirm");
            source.close().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            client
                .execute("SELECT pg_drop_replication_slot($1)", &[&config.slot])
                .await
                .expect("drop slot");
            let change = batch.changes.into_iter().next().expect("one change");
            assert_eq!(change.action, Action::Insert);
            change
        }
        Mode::Trigger => {
            client
                .batch_execute("SELECT walhook.set_capture_mode('trigger'); SELECT walhook.watch('public.typed');")
                .await
                .expect("watch");
            // The writing session's own output settings must not matter.
            client
                .batch_execute(&format!(
                    "SET DateStyle = 'SQL, DMY'; SET TimeZone = 'America/New_York'; SET IntervalStyle = 'postgres_verbose';
                     SET extra_float_digits = 0; SET bytea_output = 'escape'; {}; RESET ALL;",
                    insert_sql()
                ))
                .await
                .expect("insert every type");
            let config = Config::default().capture;
            let mut source = walhook::source::trigger::TriggerSource::connect(&db.url, &config)
                .await
                .expect("connect");
            let shutdown = CancellationToken::new();
            let batch = tokio::time::timeout(Duration::from_secs(20), source.next_batch(&shutdown))
                .await
                .expect("a batch in time")
                .expect("no capture error")
                .expect("not shut down");
            let change = batch.changes.into_iter().next().expect("one change");
            assert_eq!(change.action, Action::Insert);
            change
        }
    }
}

async fn check_mode(mode: Mode) {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(SETUP).await.expect("types");
    client.batch_execute(&table_sql()).await.expect("table");
    let change = capture(mode, &db, &client).await;
    // The event of every type satisfies the catalog's JSON Schema.
    let event: Value = serde_json::from_str(&change.to_event().payload).expect("event JSON");
    common::event_catalog::assert_matches_catalog(&client, &event).await;
    let row = change.record.expect("an insert has a record");
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        let got = row
            .get(&format!("c{i}"))
            .cloned()
            .unwrap_or(Value::String("<missing>".into()));
        let want: Value =
            serde_json::from_str(case.want).unwrap_or_else(|e| panic!("case {i} want: {e}"));
        let (got, want) = (
            serde_json::to_string(&got).unwrap_or_default(),
            serde_json::to_string(&want).unwrap_or_default(),
        );
        if got != want {
            failures.push(format!(
                "{:?} {} {}: got {got}, want {want}",
                mode, case.sql_type, case.literal
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_type_maps_to_the_documented_json_via_replication() {
    check_mode(Mode::Replication).await;
}

#[tokio::test]
async fn every_type_maps_to_the_documented_json_via_triggers() {
    check_mode(Mode::Trigger).await;
}
