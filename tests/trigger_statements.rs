//! Statement capture in trigger mode: a multi-row INSERT or DELETE on a
//! plain table is one capture row, split by the relay into one event per
//! row with the values, actor and order row capture gives; tables in a
//! partition or inheritance tree keep row triggers, also when they join
//! one after being watched; excluded columns stay out.

mod common;

use std::time::Duration;

use common::{wait_for_count, Relay, TestDb};
use serde_json::{json, Value};
use tokio_postgres::Client;
use walhook::config::CaptureMode;

async fn payloads(client: &Client) -> Vec<Value> {
    client
        .query(
            "SELECT e.payload::text FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id ORDER BY d.id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|row| serde_json::from_str(row.get::<_, &str>(0)).expect("payload is JSON"))
        .collect()
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

async fn trigger_names(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .expect("triggers")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn multi_row_statements_become_one_event_per_row_in_order_with_their_actor() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, total numeric(10,2),
                                  placed timestamptz, tags text[], meta jsonb, raw bytea, note text);
             SELECT walhook.watch('public.orders');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['orders.*']);
             BEGIN;
             SELECT walhook.set_actor('user:7');
             INSERT INTO orders VALUES
                 (1, 'new, \"quoted\"', 19.90, '2024-05-06 07:08:09.5+02', ARRAY['a b', 'c,d', NULL],
                  '{\"k\": [1, \"x\"]}', '\\x00ff', NULL),
                 (2, '', NULL, NULL, '{}', 'null', '\\x', '(paren) back\\slash'),
                 (3, 'three', 3, '2024-01-01 00:00:00+00', NULL, NULL, NULL, 'grüße');
             UPDATE orders SET note = note WHERE id = 1;
             DELETE FROM orders WHERE id IN (2, 3);
             COMMIT;
             INSERT INTO orders (id, status) VALUES (4, 'four'), (5, 'five');
             DELETE FROM orders WHERE id > 100;",
        )
        .await
        .expect("writes");
    // One capture row per statement that changed rows: two inserts, the
    // update's one row, one delete; the delete of nothing writes none.
    assert_eq!(
        count(&client, "SELECT count(*) FROM walhook.capture").await,
        4
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM walhook.capture WHERE statement_rows IS NOT NULL"
        )
        .await,
        3
    );
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        8,
        Duration::from_secs(15),
    )
    .await;
    let events = payloads(&client).await;
    let summary: Vec<(String, Value, Value)> = events
        .iter()
        .map(|e| {
            let row = if e["record"].is_null() {
                &e["old_record"]
            } else {
                &e["record"]
            };
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                row["id"].clone(),
                e["actor"].clone(),
            )
        })
        .collect();
    let expected = [
        ("orders.insert", 1, json!("user:7")),
        ("orders.insert", 2, json!("user:7")),
        ("orders.insert", 3, json!("user:7")),
        ("orders.update", 1, json!("user:7")),
        ("orders.delete", 2, json!("user:7")),
        ("orders.delete", 3, json!("user:7")),
        ("orders.insert", 4, Value::Null),
        ("orders.insert", 5, Value::Null),
    ];
    let expected: Vec<(String, Value, Value)> = expected
        .iter()
        .map(|(t, id, actor)| ((*t).to_owned(), json!(id), actor.clone()))
        .collect();
    assert_eq!(summary, expected);
    // The update comes from the row trigger (hstore): the statement's text
    // of the same row must map to the very same values.
    assert_eq!(events[0]["record"], events[3]["record"]);
    let first = &events[0]["record"];
    assert_eq!(first["status"], "new, \"quoted\"");
    assert_eq!(first["total"], "19.90");
    assert_eq!(first["note"], Value::Null);
    assert_eq!(events[4]["old_record"]["status"], "");
    assert_eq!(events[4]["old_record"]["note"], "(paren) back\\slash");
    assert_eq!(events[5]["old_record"]["note"], "grüße");
    assert_eq!(events[0]["txid"], events[5]["txid"]);
    assert_ne!(events[5]["txid"], events[6]["txid"]);
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(
        ids.len(),
        8,
        "every row of a statement has its own event id"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM walhook.capture").await,
        0
    );
    relay.stop().await;
}

/// A statement larger than a capture row's 1,000 rows and than a batch is
/// delivered whole and in order, and the statements after it follow it.
/// The columns are named like the capture function's row aliases, which
/// must not capture them.
#[tokio::test]
async fn a_statement_larger_than_a_batch_keeps_its_order() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, o text);
             SELECT walhook.watch('items');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['items.*']);
             INSERT INTO items SELECT g, g, 'o' FROM generate_series(1, 2500) g;
             INSERT INTO items VALUES (2501, 2501, 'o');
             DELETE FROM items WHERE id <= 1200;",
        )
        .await
        .expect("writes");
    // At most 1,000 rows per capture row, in the statement's order.
    let sizes: Vec<i32> = client
        .query(
            "SELECT cardinality(statement_rows) FROM walhook.capture ORDER BY id",
            &[],
        )
        .await
        .expect("capture")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sizes, [1000, 1000, 500, 1, 1000, 200]);
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        3701,
        Duration::from_secs(30),
    )
    .await;
    let order: Vec<(String, i32)> = client
        .query(
            "SELECT e.type, coalesce(e.payload->'record'->>'n', e.payload->'old_record'->>'n')::int
             FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id ORDER BY d.id",
            &[],
        )
        .await
        .expect("events")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let expected: Vec<(String, i32)> = (1..=2501)
        .map(|n| ("items.insert".to_owned(), n))
        .chain((1..=1200).map(|n| ("items.delete".to_owned(), n)))
        .collect();
    assert_eq!(order, expected);
    relay.stop().await;
}

/// Postgres fires a partition's statement triggers only for statements
/// that name it: a watched table attached as a partition gets its row
/// triggers back, and its statement triggers when it is detached.
#[tokio::test]
async fn a_table_attached_as_a_partition_keeps_being_captured() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders_2025 (id int NOT NULL, status text);
             SELECT walhook.watch('orders_2025');
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['orders_2025.*']);
             CREATE TABLE orders (id int NOT NULL, status text) PARTITION BY RANGE (id);",
        )
        .await
        .expect("setup");
    assert!(trigger_names(&client, "orders_2025")
        .await
        .contains(&"walhook_capture_insert".to_owned()));
    client
        .batch_execute(
            "ALTER TABLE orders ATTACH PARTITION orders_2025 FOR VALUES FROM (0) TO (1000);
             INSERT INTO orders VALUES (1, 'through the parent'), (2, 'through the parent');
             INSERT INTO orders_2025 VALUES (3, 'named');
             DELETE FROM orders WHERE id = 1;",
        )
        .await
        .expect("attach and write");
    assert_eq!(
        trigger_names(&client, "orders_2025").await,
        ["walhook_capture", "walhook_capture_truncate"]
    );
    client
        .batch_execute(
            "ALTER TABLE orders DETACH PARTITION orders_2025;
             INSERT INTO orders_2025 VALUES (4, 'detached'), (5, 'detached');",
        )
        .await
        .expect("detach and write");
    assert!(trigger_names(&client, "orders_2025")
        .await
        .contains(&"walhook_capture_insert".to_owned()));
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        6,
        Duration::from_secs(15),
    )
    .await;
    let events: Vec<(String, i64)> = payloads(&client)
        .await
        .iter()
        .map(|e| {
            let row = if e["record"].is_null() {
                &e["old_record"]
            } else {
                &e["record"]
            };
            (
                e["type"].as_str().unwrap_or_default().to_owned(),
                row["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    let expected: Vec<(String, i64)> = [
        ("orders_2025.insert", 1),
        ("orders_2025.insert", 2),
        ("orders_2025.insert", 3),
        ("orders_2025.delete", 1),
        ("orders_2025.insert", 4),
        ("orders_2025.insert", 5),
    ]
    .iter()
    .map(|(t, id)| ((*t).to_owned(), *id))
    .collect();
    assert_eq!(events, expected);
    relay.stop().await;
}

/// An inheritance parent's transition tables would carry its children's
/// rows, which row capture never took as the parent's: such a table keeps
/// row triggers.
#[tokio::test]
async fn a_table_that_gains_an_inheritance_child_keeps_row_capture() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE logs (id int, line text);
             SELECT walhook.watch('logs');
             CREATE TABLE old_logs () INHERITS (logs);
             INSERT INTO old_logs VALUES (1, 'child');
             INSERT INTO logs VALUES (2, 'parent');
             DELETE FROM logs;",
        )
        .await
        .expect("writes");
    assert_eq!(
        trigger_names(&client, "logs").await,
        ["walhook_capture", "walhook_capture_truncate"]
    );
    let captured: Vec<String> = client
        .query(
            "SELECT action || ':' || coalesce(record, old_record)::text FROM walhook.capture ORDER BY id",
            &[],
        )
        .await
        .expect("capture")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        captured,
        ["insert:{id,2,line,parent}", "delete:{id,2,line,parent}"]
    );
}

/// Without the event trigger that follows partition and inheritance
/// changes, every table keeps row triggers.
#[tokio::test]
async fn without_the_event_trigger_tables_keep_row_capture() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             ALTER EVENT TRIGGER walhook_follow_capture_form DISABLE;
             CREATE TABLE orders (id int PRIMARY KEY);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("setup");
    assert_eq!(
        trigger_names(&client, "orders").await,
        ["walhook_capture", "walhook_capture_truncate"]
    );
}

#[tokio::test]
async fn excluded_columns_stay_out_of_statement_capture() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, password_hash text, note text);
             SELECT walhook.watch('users', exclude_columns => ARRAY['password_hash']);
             SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['users.*']);
             INSERT INTO users VALUES (1, 'one@example.com', 'SECRET-1', 'a, b'), (2, 'two@example.com', 'SECRET-2', NULL);
             DELETE FROM users;",
        )
        .await
        .expect("writes");
    let captured: String = client
        .query_one(
            "SELECT string_agg(statement_columns::text || statement_rows::text, ' ' ORDER BY id) FROM walhook.capture",
            &[],
        )
        .await
        .expect("capture")
        .get(0);
    assert!(captured.contains("two@example.com"), "{captured}");
    assert!(
        !captured.contains("SECRET") && !captured.contains("password_hash"),
        "{captured}"
    );
    let relay = Relay::start(&db.url, CaptureMode::Trigger);
    wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.events",
        4,
        Duration::from_secs(15),
    )
    .await;
    let events = payloads(&client).await;
    assert_eq!(
        events[0]["record"],
        json!({"id": 1, "email": "one@example.com", "note": "a, b"})
    );
    assert_eq!(
        events[3]["old_record"],
        json!({"id": 2, "email": "two@example.com", "note": null})
    );
    relay.stop().await;
}

/// An upsert's updated rows come from the row trigger, its inserted rows
/// from the statement trigger, which fires after the statement's row
/// triggers: both are captured, the updates first.
#[tokio::test]
async fn an_upsert_captures_its_updates_and_its_inserts() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE stock (sku text PRIMARY KEY, qty int NOT NULL);
             INSERT INTO stock VALUES ('a', 1);
             SELECT walhook.watch('stock');
             INSERT INTO stock VALUES ('b', 5), ('a', 7), ('c', 9)
                 ON CONFLICT (sku) DO UPDATE SET qty = excluded.qty;",
        )
        .await
        .expect("writes");
    let captured: Vec<String> = client
        .query(
            "SELECT action || ':' || coalesce(statement_rows::text, record::text) FROM walhook.capture ORDER BY id",
            &[],
        )
        .await
        .expect("capture")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        captured,
        ["update:{qty,7,sku,a}", "insert:{\"(b,5)\",\"(c,9)\"}"]
    );
}
