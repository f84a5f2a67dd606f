//! Replication capture against a real Postgres with `wal_level=logical`:
//! each test has a database and a slot of its own. What a change carries
//! (actions, TOAST values, schema changes, keys) and how connecting fails
//! or is encrypted here; confirmed positions across restarts and closes in
//! `replication/positions.rs`; memory while streaming a huge transaction
//! in `replication/memory.rs`.

mod common;
#[path = "replication/memory.rs"]
mod memory;
#[path = "replication/positions.rs"]
mod positions;

use std::time::Duration;

use common::TestDb;
use serde_json::{json, Value};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::change::{parse_lsn, Action, Position, RowChange};
use walhook::config::{CaptureConfig, Config};
use walhook::source::replication::{ReplicationOptions, ReplicationSource};
use walhook::source::{Batch, Fatal, Source, SourceError};

fn config(db: &TestDb) -> CaptureConfig {
    let mut config = Config::default().capture;
    config.slot = format!("s_{}", db.name);
    config.batch_timeout = Duration::from_millis(50);
    config
}

fn options() -> ReplicationOptions {
    ReplicationOptions {
        heartbeat_interval: Duration::from_millis(500),
        status_interval: Duration::from_millis(500),
        queue: 64,
        ..ReplicationOptions::default()
    }
}

/// A database in replication mode with `table` created by `ddl` and watched.
async fn setup(ddl: &str, table: &str) -> (TestDb, Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute("SELECT walhook.set_capture_mode('replication')")
        .await
        .expect("set mode");
    client.batch_execute(ddl).await.expect("create table");
    client
        .query("SELECT walhook.watch($1)", &[&table])
        .await
        .expect("watch");
    (db, client)
}

async fn connect(db: &TestDb, config: &CaptureConfig) -> ReplicationSource {
    ReplicationSource::connect_with(&db.url, config, options())
        .await
        .expect("replication source connects")
}

async fn next_batch(source: &mut ReplicationSource) -> Batch {
    let shutdown = CancellationToken::new();
    tokio::time::timeout(Duration::from_secs(20), source.next_batch(&shutdown))
        .await
        .expect("a batch within 20 s")
        .expect("no capture error")
        .expect("not shut down")
}

/// Reads batches, confirming each, until `count` changes arrived.
async fn collect(source: &mut ReplicationSource, count: usize) -> Vec<RowChange> {
    let mut changes = Vec::new();
    while changes.len() < count {
        let batch = next_batch(source).await;
        changes.extend(batch.changes);
        source.committed(&batch.ack).await.expect("confirm");
    }
    assert_eq!(changes.len(), count, "no more changes than expected");
    changes
}

async fn finish(source: ReplicationSource, client: &Client) {
    let slot = source.slot().to_owned();
    source.close().await;
    drop_slot(client, &slot).await;
}

/// Waits until no session streams from the slot any more.
async fn wait_until_released(client: &Client, slot: &str) {
    for _ in 0..50 {
        let active: bool = client
            .query_one(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("slot query")
            .get(0);
        if !active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("slot {slot} stayed active");
}

async fn drop_slot(client: &Client, slot: &str) {
    for _ in 0..50 {
        let active: Option<bool> = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .expect("slot query")
            .map(|row| row.get(0));
        match active {
            None => return,
            Some(false) => {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .expect("drop slot");
                return;
            }
            Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("slot {slot} stayed active");
}

fn record(change: &RowChange) -> Value {
    change
        .record
        .clone()
        .map(Value::Object)
        .unwrap_or(Value::Null)
}

fn old_record(change: &RowChange) -> Value {
    change
        .old_record
        .clone()
        .map(Value::Object)
        .unwrap_or(Value::Null)
}

fn index(change: &RowChange) -> u32 {
    match change.position {
        Position::Wal { index, .. } => index,
        Position::Capture { .. } | Position::Read { .. } => {
            panic!("a replication change has a WAL position")
        }
    }
}

async fn confirmed_flush(client: &Client, slot: &str) -> u64 {
    let text: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slot")
        .get(0);
    parse_lsn(&text).expect("an LSN")
}

#[tokio::test]
async fn insert_update_delete_truncate_and_actor() {
    let (db, client) = setup(
        "CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric(10,2))",
        "public.orders",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;

    client
        .batch_execute(
            "BEGIN;
             SELECT walhook.set_actor('user:42');
             INSERT INTO orders VALUES (1, 'pending', 19.90), (2, 'pending', 5);
             COMMIT;
             UPDATE orders SET status = 'paid' WHERE id = 1;
             DELETE FROM orders WHERE id = 2;
             TRUNCATE orders;",
        )
        .await
        .expect("writes");
    let changes = collect(&mut source, 5).await;

    let actions: Vec<Action> = changes.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        [
            Action::Insert,
            Action::Insert,
            Action::Update,
            Action::Delete,
            Action::Truncate
        ]
    );
    assert!(changes
        .iter()
        .all(|c| c.table.schema == "public" && c.table.name == "orders"));

    let (first, second) = (&changes[0], &changes[1]);
    assert_eq!(
        record(first),
        json!({"id": 1, "status": "pending", "total": "19.90"})
    );
    assert_eq!(
        record(second),
        json!({"id": 2, "status": "pending", "total": "5.00"})
    );
    assert_eq!(first.key, vec![json!(1)]);
    assert_eq!(
        (first.actor.as_deref(), second.actor.as_deref()),
        (Some("user:42"), Some("user:42"))
    );
    assert_eq!((index(first), index(second)), (0, 1));
    assert_eq!(first.commit_lsn, second.commit_lsn);
    assert_eq!(first.txid, second.txid);
    assert_ne!(first.event_id(), second.event_id());

    let update = &changes[2];
    assert_eq!(update.actor, None, "the actor ends with its transaction");
    assert_eq!(
        record(update),
        json!({"id": 1, "status": "paid", "total": "19.90"})
    );
    assert_eq!(
        old_record(update),
        json!({"id": 1, "status": "pending", "total": "19.90"})
    );
    assert_eq!(
        update.changes().map(Value::Object),
        Some(json!({"status": {"old": "pending", "new": "paid"}}))
    );
    assert_eq!(index(update), 0);
    assert!(update.commit_lsn > first.commit_lsn);
    assert!(update.txid > first.txid);

    let delete = &changes[3];
    assert_eq!(delete.record, None);
    assert_eq!(
        old_record(delete),
        json!({"id": 2, "status": "pending", "total": "5.00"})
    );
    assert_eq!(delete.key, vec![json!(2)]);

    let truncate = &changes[4];
    assert_eq!(
        (truncate.record.clone(), truncate.old_record.clone()),
        (None, None)
    );
    assert_eq!(truncate.event_type(), "orders.truncate");

    let event: Value = serde_json::from_str(&update.to_event().payload).expect("event JSON");
    assert_eq!(
        event["lsn"],
        walhook::change::format_lsn(update.commit_lsn.unwrap_or_default())
    );
    finish(source, &client).await;
}

#[tokio::test]
async fn unchanged_toast_values_arrive_complete() {
    let (db, client) = setup(
        "CREATE TABLE docs (id int PRIMARY KEY, body text, n int);
         ALTER TABLE docs ALTER COLUMN body SET STORAGE EXTERNAL;",
        "public.docs",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    let body: String = client
        .query_one(
            "SELECT string_agg(md5(i::text), '') FROM generate_series(1, 4000) i",
            &[],
        )
        .await
        .expect("body")
        .get(0);
    assert!(body.len() > 100_000);
    client
        .execute("INSERT INTO docs VALUES (1, $1, 1)", &[&body])
        .await
        .expect("insert");
    client
        .batch_execute("UPDATE docs SET n = 2 WHERE id = 1")
        .await
        .expect("update");
    let changes = collect(&mut source, 2).await;
    let update = &changes[1];
    assert_eq!(
        record(update)["body"],
        json!(body),
        "the new image carries the unchanged value"
    );
    assert_eq!(old_record(update)["body"], json!(body));
    assert_eq!(
        update.changes().map(Value::Object),
        Some(json!({"n": {"old": 1, "new": 2}}))
    );

    // Without full row images the server sends no old value; the current
    // value is read from the table rather than passing a placeholder on.
    client
        .batch_execute("ALTER TABLE docs REPLICA IDENTITY DEFAULT")
        .await
        .expect("identity");
    client
        .batch_execute("UPDATE docs SET n = 3 WHERE id = 1")
        .await
        .expect("update");
    let changes = collect(&mut source, 1).await;
    assert_eq!(record(&changes[0])["body"], json!(body));
    assert_eq!(record(&changes[0])["n"], json!(3));
    assert_eq!(changes[0].old_record, None);

    client
        .batch_execute("DELETE FROM docs WHERE id = 1")
        .await
        .expect("delete");
    let changes = collect(&mut source, 1).await;
    assert_eq!(
        old_record(&changes[0]),
        json!({"id": 1}),
        "a key-only old image holds only the key"
    );
    finish(source, &client).await;
}

#[tokio::test]
async fn schema_changes_mid_stream_give_the_new_shape() {
    let (db, client) = setup(
        "CREATE TABLE items (id int PRIMARY KEY, name text)",
        "public.items",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute(
            "INSERT INTO items VALUES (1, 'a');
             ALTER TABLE items ADD COLUMN price numeric DEFAULT 1.5;
             INSERT INTO items VALUES (2, 'b', 2);
             UPDATE items SET name = 'a2' WHERE id = 1;
             ALTER TABLE items DROP COLUMN name;
             INSERT INTO items VALUES (3, 4);",
        )
        .await
        .expect("writes");
    let changes = collect(&mut source, 4).await;
    assert_eq!(record(&changes[0]), json!({"id": 1, "name": "a"}));
    assert_eq!(
        record(&changes[1]),
        json!({"id": 2, "name": "b", "price": "2"})
    );
    assert_eq!(
        record(&changes[2]),
        json!({"id": 1, "name": "a2", "price": "1.5"})
    );
    assert_eq!(
        old_record(&changes[2]),
        json!({"id": 1, "name": "a", "price": "1.5"})
    );
    assert_eq!(record(&changes[3]), json!({"id": 3, "price": "4"}));
    finish(source, &client).await;
}

#[tokio::test]
async fn tables_without_primary_key_still_get_events() {
    let (db, client) = setup("CREATE TABLE log (at int, line text)", "public.log").await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute(
            "INSERT INTO log VALUES (1, 'one');
             UPDATE log SET line = 'uno';
             DELETE FROM log;",
        )
        .await
        .expect("writes");
    let changes = collect(&mut source, 3).await;
    assert!(changes.iter().all(|c| c.key.is_empty()));
    assert_eq!(changes[1].row_key(), "public.log");
    assert_eq!(old_record(&changes[1]), json!({"at": 1, "line": "one"}));
    assert_eq!(record(&changes[1]), json!({"at": 1, "line": "uno"}));
    assert_eq!(old_record(&changes[2]), json!({"at": 1, "line": "uno"}));
    finish(source, &client).await;
}

#[tokio::test]
async fn a_slot_of_another_plugin_is_reported_not_retried() {
    let (db, client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let config = config(&db);
    client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'test_decoding')",
            &[&config.slot],
        )
        .await
        .expect("test_decoding slot");
    let error = ReplicationSource::connect_with(&db.url, &config, options())
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        matches!(error, SourceError::Fatal(Fatal::SlotNotPgoutput { .. })),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(error.to_string().contains("pgoutput"), "{error}");
    drop_slot(&client, &config.slot).await;
}

#[tokio::test]
async fn a_slot_of_another_database_is_reported_not_retried() {
    let (db, _client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let other = TestDb::new().await;
    let other_client = other.client().await;
    let config = config(&db);
    other_client
        .execute(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&config.slot],
        )
        .await
        .expect("a slot in the other database");
    let error = ReplicationSource::connect_with(&db.url, &config, options())
        .await
        .map(|_| ())
        .expect_err("refused");
    drop_slot(&other_client, &config.slot).await;
    assert!(
        matches!(
            error,
            SourceError::Fatal(Fatal::SlotOfAnotherDatabase { .. })
        ),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!(
            "the replication slot \"{slot}\" belongs to database {other}, not {this}; \
             set capture.slot to a name of its own for this database",
            slot = config.slot,
            other = other.name,
            this = db.name
        )
    );
}

#[tokio::test]
async fn a_missing_publication_is_reported_not_retried() {
    let (db, client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let mut config = config(&db);
    config.publication = "absent".into();
    let error = ReplicationSource::connect_with(&db.url, &config, options())
        .await
        .map(|_| ())
        .expect_err("refused");
    assert!(
        matches!(error, SourceError::Fatal(Fatal::MissingPublication { .. })),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("CREATE PUBLICATION absent"),
        "{error}"
    );
    let slots: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await
        .expect("slots")
        .get(0);
    assert_eq!(
        slots, 0,
        "no slot is created for a publication that is missing"
    );
}

#[tokio::test]
async fn tls_modes_connect() {
    let (db, client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let ssl: String = client
        .query_one("SHOW ssl", &[])
        .await
        .expect("show ssl")
        .get(0);
    let mut modes = vec!["disable", "prefer"];
    if ssl == "on" {
        modes.push("require");
    }
    for mode in modes {
        let url = format!("{}?sslmode={mode}", db.url);
        let normal = walhook::db::connect(&url, "test")
            .await
            .expect("normal connection");
        let row = normal
            .query_one("SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)", &[])
            .await
            .expect("ssl state");
        let encrypted: bool = row.get(0);
        assert_eq!(
            encrypted,
            mode == "require" || (mode == "prefer" && ssl == "on"),
            "{mode}"
        );

        let mut config = config(&db);
        config.slot = format!("{}_{}", config.slot, mode);
        let mut source = ReplicationSource::connect_with(&url, &config, options())
            .await
            .expect("replication over TLS");
        let encrypted: bool = client
            .query_one(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_replication_slots r ON r.active_pid = s.pid WHERE r.slot_name = $1",
                &[&config.slot],
            )
            .await
            .expect("replication ssl state")
            .get(0);
        assert_eq!(
            encrypted,
            mode != "disable" && ssl == "on",
            "replication connection, {mode}"
        );
        client
            .execute("INSERT INTO t SELECT coalesce(max(id), 0) + 1 FROM t", &[])
            .await
            .expect("insert");
        let changes = collect(&mut source, 1).await;
        assert_eq!(changes[0].action, Action::Insert);
        finish(source, &client).await;
    }
    if ssl == "on" {
        // The local server's certificate is self-signed: verification must refuse it.
        let url = format!("{}?sslmode=verify-full&sslrootcert=system", db.url);
        let error = walhook::db::connect(&url, "test")
            .await
            .map(|_| ())
            .expect_err("unverifiable certificate refused");
        assert!(error.to_string().to_lowercase().contains("cert"), "{error}");
        let mut config = config(&db);
        config.slot = format!("{}_verify", config.slot);
        let error = ReplicationSource::connect_with(&url, &config, options())
            .await
            .map(|_| ())
            .expect_err("refused");
        assert!(error.to_string().to_lowercase().contains("cert"), "{error}");
    }
}
