//! The event catalog: `walhook.event_types`, its JSON Schemas against the
//! events the relay really produces, and `walhook catalog` in each format.

mod common;

use std::path::Path;
use std::time::Duration;

use common::event_catalog::{assert_matches_catalog, schema_of, violations};
use common::TestDb;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use walhook::config::Config;
use walhook::source::trigger::TriggerSource;
use walhook::source::Source;

const TABLE: &str = "
    CREATE TYPE status AS ENUM ('pending', 'paid');
    CREATE TABLE orders (
        id bigint PRIMARY KEY,
        status status NOT NULL,
        total numeric(10,2) NOT NULL,
        note text,
        tags text[],
        paid_at timestamptz
    );
    SELECT walhook.set_capture_mode('trigger');
    SELECT walhook.watch('public.orders');
";

/// The events of `sql`, as trigger capture turns them into events.
async fn events_of(db: &TestDb, sql: &str) -> Vec<Value> {
    let client = db.client().await;
    client.batch_execute(sql).await.expect("changes");
    let mut source = TriggerSource::connect(&db.url, &Config::default().capture)
        .await
        .expect("connect");
    let batch = tokio::time::timeout(
        Duration::from_secs(20),
        source.next_batch(&CancellationToken::new()),
    )
    .await
    .expect("a batch in time")
    .expect("no capture error")
    .expect("not shut down");
    batch
        .changes
        .iter()
        .map(|c| serde_json::from_str(&c.to_event().payload).expect("event JSON"))
        .collect()
}

#[tokio::test]
async fn every_action_of_a_watched_table_validates_against_its_schema() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    let events = events_of(
        &db,
        "INSERT INTO orders VALUES (1, 'pending', 19.9, NULL, ARRAY['a', NULL], NULL);
         UPDATE orders SET status = 'paid', paid_at = now(), tags = '{{x,y},{z,w}}' WHERE id = 1;
         DELETE FROM orders WHERE id = 1;
         TRUNCATE orders;",
    )
    .await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "orders.insert",
            "orders.update",
            "orders.delete",
            "orders.truncate"
        ]
    );
    for event in &events {
        assert_matches_catalog(&client, event).await;
    }
}

#[tokio::test]
async fn the_schemas_refuse_what_the_mapping_never_produces() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    let events = events_of(
        &db,
        "INSERT INTO orders VALUES (1, 'pending', 19.9, NULL, NULL, NULL);",
    )
    .await;
    let schema = schema_of(&client, "orders.insert").await;
    assert!(violations(&schema, &events[0]).is_empty());
    let wrong = |pointer: &str, value: Value| {
        let mut event = events[0].clone();
        *event.pointer_mut(pointer).expect("field exists") = value;
        violations(&schema, &event)
    };
    assert!(
        !wrong("/record/total", json!(19.9)).is_empty(),
        "numeric is a string"
    );
    assert!(
        !wrong("/record/id", json!("1")).is_empty(),
        "int8 is a number"
    );
    assert!(
        !wrong("/record/status", json!("lost")).is_empty(),
        "an enum has its labels"
    );
    assert!(!wrong("/record/status", Value::Null).is_empty(), "NOT NULL");
    assert!(
        !wrong("/type", json!("orders.update")).is_empty(),
        "the type is fixed"
    );
    assert!(
        wrong("/record/note", Value::Null).is_empty(),
        "nullable columns take null"
    );
}

#[tokio::test]
async fn sql_and_the_value_mapping_agree_on_every_base_type() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT typname::text, walhook.base_type_json_schema(typname::text)::text
             FROM pg_type WHERE typtype = 'b' AND NOT (typcategory = 'A' AND typelem <> 0)",
            &[],
        )
        .await
        .expect("base types");
    assert!(rows.len() > 50, "every base type: {}", rows.len());
    let mut differ = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let sql: Value = serde_json::from_str(&row.get::<_, String>(1)).expect("JSON");
        let rust = walhook::event_catalog::base_type_schema(&name);
        if sql != rust {
            differ.push(format!("{name}: SQL {sql}, value mapping {rust}"));
        }
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[tokio::test]
async fn adding_a_column_changes_the_catalog_at_once() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    let before = schema_of(&client, "orders.insert").await;
    assert!(before
        .pointer("/properties/record/properties/coupon")
        .is_none());
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN coupon int NOT NULL DEFAULT 0")
        .await
        .expect("add column");
    let after = schema_of(&client, "orders.insert").await;
    assert_eq!(
        after["properties"]["record"]["properties"]["coupon"],
        json!({"description": "integer", "allOf": [{"type": "integer"}]})
    );
    let required = after["properties"]["record"]["required"].clone();
    assert!(required
        .as_array()
        .is_some_and(|r| r.contains(&json!("coupon"))));
}

#[tokio::test]
async fn the_catalog_lists_every_action_and_the_subscriptions_that_match() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    client
        .batch_execute(
            "CREATE SCHEMA audit; CREATE TABLE audit.log (id int PRIMARY KEY);
             SELECT walhook.watch('audit.log');
             SELECT walhook.subscribe('https://example.com/a', ARRAY['orders.*']);
             SELECT walhook.subscribe('https://example.com/b', ARRAY['*.delete', 'orders.read']);",
        )
        .await
        .expect("setup");
    let rows = client
        .query(
            "SELECT event_type, subscriptions FROM walhook.event_types",
            &[],
        )
        .await
        .expect("catalog");
    let got: Vec<(String, Vec<i64>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let want: Vec<(String, Vec<i64>)> = [
        ("audit.log.insert", vec![]),
        ("audit.log.update", vec![]),
        ("audit.log.delete", vec![2]),
        ("audit.log.truncate", vec![]),
        ("audit.log.read", vec![]),
        ("orders.insert", vec![1]),
        ("orders.update", vec![1]),
        ("orders.delete", vec![1, 2]),
        ("orders.truncate", vec![1]),
        ("orders.read", vec![1, 2]),
    ]
    .into_iter()
    .map(|(t, s)| (t.to_owned(), s))
    .collect();
    assert_eq!(got, want);
}

fn walhook_catalog(db: &TestDb, format: &str) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
        .args(["catalog", "--format", format])
        .env("DATABASE_URL", &db.url)
        .env_remove("WALHOOK_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("walhook catalog runs");
    assert!(
        output.status.success(),
        "walhook catalog --format {format}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[tokio::test]
async fn walhook_catalog_prints_json_schemas_and_markdown() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    let schemas: Value = serde_json::from_str(&walhook_catalog(&db, "json-schema")).expect("JSON");
    let keys: Vec<&String> = schemas
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "orders.insert",
            "orders.update",
            "orders.delete",
            "orders.truncate",
            "orders.read"
        ]
    );
    assert_eq!(
        schemas["orders.update"],
        schema_of(&client, "orders.update").await
    );
    let markdown = walhook_catalog(&db, "markdown");
    assert!(markdown.contains("## Table `public.orders`"), "{markdown}");
    assert!(
        markdown.contains("| `status` | status | one of `pending`, `paid` | no |"),
        "{markdown}"
    );
    assert!(markdown.contains("| `orders.read` |"), "{markdown}");
}

/// `npm ci` in tests/asyncapi when its packages are not installed yet.
fn ensure_asyncapi_parser(dir: &Path) {
    if dir.join("node_modules/@asyncapi/parser").exists() {
        return;
    }
    let status = std::process::Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs (Node.js is needed for the AsyncAPI check)");
    assert!(status.success(), "npm ci in {}", dir.display());
}

#[tokio::test]
async fn the_asyncapi_document_is_accepted_by_the_official_parser() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(TABLE).await.expect("table");
    client
        .batch_execute(
            "CREATE SCHEMA audit; CREATE TABLE audit.log (id int PRIMARY KEY, body jsonb, raw bytea);
             SELECT walhook.watch('audit.log');",
        )
        .await
        .expect("setup");
    let document = walhook_catalog(&db, "asyncapi");
    let parsed: Value = serde_json::from_str(&document).expect("JSON");
    assert_eq!(parsed["asyncapi"], "3.0.0");
    assert_eq!(
        parsed["components"]["messages"]
            .as_object()
            .map(|m| m.len()),
        Some(10)
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asyncapi");
    ensure_asyncapi_parser(&dir);
    let file = std::env::temp_dir().join(format!("walhook-asyncapi-{}.json", db.name));
    std::fs::write(&file, &document).expect("write the document");
    let output = std::process::Command::new("node")
        .arg("validate.mjs")
        .arg(&file)
        .current_dir(&dir)
        .output()
        .expect("node runs");
    let _ = std::fs::remove_file(&file);
    assert!(
        output.status.success(),
        "the AsyncAPI parser refused the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
