//! Migrations apply once, are safe to run again and concurrently, and the
//! schema they make is the documented one.

mod common;

use common::TestDb;

#[tokio::test]
async fn migrate_twice_and_concurrently_is_safe() {
    let db = TestDb::empty().await;
    let mut a = db.client().await;
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(
        walhook::migrate::migrate(&mut a),
        walhook::migrate::migrate(&mut b)
    );
    let (ra, rb) = (ra.expect("first migrate"), rb.expect("second migrate"));
    let total = walhook::migrate::MIGRATIONS.len();
    assert_eq!(
        ra.applied.len() + rb.applied.len(),
        total,
        "each migration applied once"
    );
    let again = walhook::migrate::migrate(&mut a)
        .await
        .expect("third migrate");
    assert!(again.applied.is_empty());
    assert_eq!(again.already.len(), total);
    walhook::migrate::require_current(&a)
        .await
        .expect("schema is current");
}

#[tokio::test]
async fn a_changed_migration_is_reported_not_rerun() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .execute(
            "UPDATE walhook.schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .expect("tamper");
    let err = walhook::migrate::migrate(&mut client)
        .await
        .expect_err("changed migration is refused");
    assert!(
        err.to_string().contains("was changed after it was applied"),
        "{err}"
    );
}

#[tokio::test]
async fn run_refuses_an_unmigrated_database() {
    let db = TestDb::empty().await;
    let client = db.client().await;
    let err = walhook::migrate::require_current(&client)
        .await
        .expect_err("not migrated");
    assert!(err.to_string().contains("walhook migrate"), "{err}");
}

#[tokio::test]
async fn documented_tables_and_columns_exist() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let documented: &[(&str, &[&str])] = &[
        (
            "subscriptions",
            &[
                "id",
                "url",
                "events",
                "secret",
                "content_type",
                "active",
                "disabled_reason",
                "created_at",
            ],
        ),
        ("events", &["id", "type", "payload", "created_at"]),
        (
            "deliveries",
            &[
                "id",
                "event_id",
                "subscription_id",
                "state",
                "attempts",
                "next_attempt_at",
                "delivered_at",
            ],
        ),
        (
            "attempts",
            &[
                "id",
                "delivery_id",
                "attempted_at",
                "status",
                "duration_ms",
                "response_body",
                "error",
            ],
        ),
    ];
    for (table, columns) in documented {
        for column in *columns {
            let found: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_schema = 'walhook' AND table_name = $1 AND column_name = $2)",
                    &[table, column],
                )
                .await
                .expect("catalog query")
                .get(0);
            assert!(found, "walhook.{table}.{column} exists");
        }
    }
}

#[tokio::test]
async fn payloads_are_compressed_with_lz4_where_the_server_can() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // pg_column_compression reports the method actually used for a value.
    let lz4_supported = client
        .batch_execute("CREATE TEMP TABLE probe (x text COMPRESSION lz4)")
        .await
        .is_ok();
    let methods: Vec<String> = client
        .query(
            "SELECT attcompression::text FROM pg_attribute
             WHERE (attrelid, attname) IN (('walhook.events'::regclass, 'payload'),
                                           ('walhook.attempts'::regclass, 'response_body'))",
            &[],
        )
        .await
        .expect("column settings")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let expected = if lz4_supported { "l" } else { "" };
    assert_eq!(methods, vec![expected.to_owned(), expected.to_owned()]);
}

#[tokio::test]
async fn claiming_and_releasing_a_delivery_update_it_in_place() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.subscribe('http://127.0.0.1:9/', ARRAY['*']);
             INSERT INTO walhook.events (id, type, payload, row_key)
             VALUES ('evt_hot', 'orders.insert', '{}', 'public.orders:[1]');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
             SELECT 'evt_hot', id, 'public.orders:[1]' FROM walhook.subscriptions;",
        )
        .await
        .expect("a pending delivery");
    // As a claim and a release on shutdown change the row. A heap-only
    // update adds no index entry; it needs every index to ignore what moves.
    client
        .batch_execute(
            "BEGIN;
             UPDATE walhook.deliveries
             SET state = 'in_flight', attempts = attempts + 1, lease_until = now() + interval '1 minute';
             UPDATE walhook.deliveries
             SET state = 'pending', attempts = attempts - 1, lease_until = NULL;",
        )
        .await
        .expect("claim and release");
    let (updates, in_place): (i64, i64) = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables
             WHERE relid = 'walhook.deliveries'::regclass",
            &[],
        )
        .await
        .map(|row| (row.get(0), row.get(1)))
        .expect("this transaction's table statistics");
    client.batch_execute("COMMIT").await.expect("commit");
    assert_eq!((updates, in_place), (2, 2), "both updates are heap-only");
}

#[tokio::test]
async fn event_ids_and_row_keys_compare_as_bytes() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let collations: Vec<String> = client
        .query(
            "SELECT a.attrelid::regclass::text || '.' || a.attname || ' ' || c.collname
             FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation
             WHERE (a.attrelid, a.attname) IN (('walhook.events'::regclass, 'id'),
                                               ('walhook.events'::regclass, 'row_key'),
                                               ('walhook.deliveries'::regclass, 'event_id'),
                                               ('walhook.deliveries'::regclass, 'row_key'))
             ORDER BY 1",
            &[],
        )
        .await
        .expect("column collations")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        collations,
        [
            "walhook.deliveries.event_id C",
            "walhook.deliveries.row_key C",
            "walhook.events.id C",
            "walhook.events.row_key C",
        ]
    );
}
