//! Replication capture against a real Postgres with `wal_level=logical`:
//! each test has a database and a slot of its own.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::time::Duration;

use common::TestDb;
use serde_json::{json, Value};
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use walhook::change::{parse_lsn, Action, Position, RowChange};
use walhook::config::{CaptureConfig, Config};
use walhook::source::replication::{ReplicationOptions, ReplicationSource};
use walhook::source::{Ack, Batch, Fatal, Source, SourceError};

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
async fn restart_resumes_after_the_confirmed_position_and_redelivers_the_rest() {
    let (db, client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO t VALUES (1), (2)")
        .await
        .expect("tx a");
    let confirmed = collect(&mut source, 2).await;

    client
        .batch_execute("INSERT INTO t VALUES (3), (4)")
        .await
        .expect("tx b");
    let mut unconfirmed = Vec::new();
    while unconfirmed.len() < 2 {
        // Read but never confirmed: as if the relay died before the outbox committed.
        unconfirmed.extend(next_batch(&mut source).await.changes);
    }
    source.close().await;

    let mut source = connect(&db, &config).await;
    let again = collect(&mut source, 2).await;
    let ids = |changes: &[RowChange]| changes.iter().map(RowChange::event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(&again),
        ids(&unconfirmed),
        "redelivered with the same event ids"
    );
    assert_eq!(record(&again[0]), json!({"id": 3}));
    assert!(ids(&again).iter().all(|id| !ids(&confirmed).contains(id)));

    // Nothing else is pending: a new write is the next thing read.
    client
        .batch_execute("INSERT INTO t VALUES (5)")
        .await
        .expect("tx c");
    let next = collect(&mut source, 1).await;
    assert_eq!(record(&next[0]), json!({"id": 5}));
    finish(source, &client).await;
}

#[tokio::test]
async fn a_transaction_larger_than_a_batch_is_confirmed_only_when_complete() {
    let (db, client) = setup("CREATE TABLE big (id int PRIMARY KEY)", "public.big").await;
    let mut config = config(&db);
    config.batch_size = 10;
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO big VALUES (0)")
        .await
        .expect("small tx");
    let first = collect(&mut source, 1).await;
    let after_small = source.confirmed_lsn();
    client
        .batch_execute("INSERT INTO big SELECT generate_series(1, 35)")
        .await
        .expect("big tx");

    // The first batches hold part of the transaction: their ack must not
    // pass its commit.
    let batch = next_batch(&mut source).await;
    assert_eq!(batch.changes.len(), 10);
    let commit_lsn = batch.changes[0].commit_lsn.expect("commit LSN");
    let Ack::ConfirmLsn(lsn) = batch.ack else {
        panic!("a replication ack")
    };
    assert!(
        lsn < commit_lsn && lsn >= after_small,
        "partial batch acks {lsn:X}, commit at {commit_lsn:X}"
    );
    source.committed(&batch.ack).await.expect("confirm");
    source.close().await;
    assert!(first[0].commit_lsn < Some(commit_lsn));

    // Restarted, the whole transaction comes again, ids unchanged.
    let mut source = connect(&db, &config).await;
    let again = collect(&mut source, 35).await;
    assert_eq!(again[0].event_id(), batch.changes[0].event_id());
    assert_eq!(again[9].event_id(), batch.changes[9].event_id());
    assert_eq!(
        again.iter().map(index).collect::<Vec<_>>(),
        (0..35).collect::<Vec<_>>(),
        "indexes count through the transaction"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        confirmed_flush(&client, &config.slot).await > commit_lsn,
        "confirmed once complete"
    );
    finish(source, &client).await;
}

#[tokio::test]
async fn an_idle_or_unwatched_database_still_advances_the_slot() {
    let (db, client) = setup(
        "CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)",
        "public.watched",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    let start = confirmed_flush(&client, &config.slot).await;
    client
        .batch_execute("INSERT INTO other SELECT generate_series(1, 1000)")
        .await
        .expect("unwatched writes");
    let now_text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let now = parse_lsn(&now_text).expect("lsn");

    // Nothing to capture: next_batch only handles keepalives and heartbeats.
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        stopper.cancel();
    });
    let batch = source.next_batch(&shutdown).await.expect("no error");
    assert!(batch.is_none(), "unwatched changes produce nothing");
    let advanced = confirmed_flush(&client, &config.slot).await;
    assert!(
        advanced > start && advanced >= now,
        "slot moved from {start:X} past {now:X}: {advanced:X}"
    );
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

/// Counts the bytes live on the current thread: a `#[tokio::test]` runs
/// its whole runtime (source, stream task, connections) on its thread, so
/// this measures what capturing holds, unaffected by tests running beside it.
struct Counting;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn account(delta: i64) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counting touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = System.alloc(layout);
        if !ptr.is_null() {
            account(layout.size() as i64);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        account(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = System.realloc(ptr, layout, new_size);
        if !new.is_null() {
            account(new_size as i64 - layout.size() as i64);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test]
async fn a_200k_row_transaction_streams_in_bounded_memory() {
    const ROWS: usize = 200_000;
    let (db, client) = setup(
        "CREATE TABLE big (id int PRIMARY KEY, payload text)",
        "public.big",
    )
    .await;
    let config = config(&db);
    let mut source =
        ReplicationSource::connect_with(&db.url, &config, ReplicationOptions::default())
            .await
            .expect("connect");
    client
        .batch_execute(&format!(
            "INSERT INTO big SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, {ROWS}) i"
        ))
        .await
        .expect("big transaction");

    let baseline = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(baseline));
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    let mut next_index = 0u32;
    let mut commit_lsn = None;
    while seen < ROWS {
        let batch = next_batch(&mut source).await;
        for change in &batch.changes {
            assert_eq!(index(change), next_index, "changes arrive in order");
            next_index += 1;
            commit_lsn = change.commit_lsn;
        }
        seen += batch.changes.len();
        let Ack::ConfirmLsn(lsn) = batch.ack else {
            panic!("a replication ack")
        };
        if seen < ROWS {
            assert!(
                Some(lsn) < commit_lsn,
                "a partial transaction is never confirmed"
            );
        }
        source.committed(&batch.ack).await.expect("confirm");
    }
    let peak = PEAK.with(Cell::get) - baseline;
    let elapsed = started.elapsed();
    println!(
        "{ROWS} rows (about {} MB as events) streamed in {elapsed:?}; capture held at most {:.1} MB more than before",
        ROWS * 400 / 1_000_000,
        peak as f64 / 1e6
    );
    assert_eq!(seen, ROWS);
    // Holding the transaction would take well over 100 MB.
    assert!(peak < 32_000_000, "peak {peak} bytes");
    finish(source, &client).await;
}

#[tokio::test]
async fn a_graceful_close_confirms_everything_committed_at_once() {
    let (db, client) = setup(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE outbox_like (id int)",
        "public.t",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let batch = next_batch(&mut source).await;
    let Ack::ConfirmLsn(lsn) = batch.ack else {
        panic!("a replication ack")
    };
    // Like the outbox: an asynchronous commit whose WAL is not flushed yet
    // when the confirm is handed over, so the confirm has to wait for it.
    client
        .batch_execute(
            "SET synchronous_commit = off; INSERT INTO outbox_like SELECT generate_series(1, 1000)",
        )
        .await
        .expect("asynchronous commit");
    source.committed(&batch.ack).await.expect("confirm");
    source.close().await;
    // The server reads the last status update when it gets to it: once
    // the slot is free, the session's every word has been taken.
    wait_until_released(&client, &config.slot).await;
    assert!(
        confirmed_flush(&client, &config.slot).await >= lsn,
        "closing flushes and confirms instead of dropping what waits"
    );
    drop_slot(&client, &config.slot).await;
}
