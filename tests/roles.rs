//! The roles of docs/security.md and the relay's privileges of
//! docs/operations.md: each role does what its list allows and fails at
//! the rest, and a role with none of them can do nothing in schema walhook.

mod common;

use std::time::Duration;

use common::sql_surface::{failure_of, TestRole};
use common::{connect, prepare_capture, test_config, Receiver, Relay, TestDb};
use tokio_postgres::Client;
use walhook::config::CaptureMode;

/// A database with a watched table, one subscription (id 1) and one
/// delivered event (delivery 1).
async fn seeded() -> TestDb {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, total numeric);
             SELECT walhook.watch('orders');
             SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => 'whsec_c2VjcmV0c2VjcmV0');
             INSERT INTO walhook.events (id, type, payload, row_key) VALUES ('evt_1', 'orders.insert', '{}', 'k');
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state) VALUES ('evt_1', 1, 'k', 'dead');
             INSERT INTO walhook.attempts (delivery_id, status) VALUES (1, 500);",
        )
        .await
        .expect("seed");
    db
}

async fn allowed(client: &Client, who: &str, statements: &[&str]) {
    for sql in statements {
        if let Err(error) = client.batch_execute(sql).await {
            panic!("{who} may run {sql}, but: {error:?}");
        }
    }
}

async fn refused(client: &Client, who: &str, statements: &[&str]) {
    for sql in statements {
        let text = failure_of(client, sql).await;
        assert!(
            text.contains("permission denied") || text.contains("may not"),
            "{who} must not run {sql}, failed with: {text}"
        );
        assert!(!text.contains("whsec_"), "a secret in: {text}");
    }
}

/// Everything that changes something in schema walhook.
const CHANGES: &[&str] = &[
    "SELECT walhook.watch('orders')",
    "SELECT walhook.unwatch('orders')",
    "SELECT walhook.subscribe('https://example.com/x', ARRAY['*'])",
    "SELECT walhook.pause(1)",
    "SELECT walhook.resume(1)",
    "SELECT walhook.unsubscribe(1)",
    "SELECT walhook.rotate_secret(1)",
    "SELECT walhook.redeliver(1)",
    "SELECT walhook.replay(1, since => now() - interval '1 hour')",
    "SELECT walhook.ping(1)",
    "SELECT walhook.set_capture_mode('trigger')",
    "INSERT INTO walhook.subscriptions (url, events, secret) VALUES ('https://e.com/h', '{*}', 'whsec_AAAAAAAAAAAA')",
    "UPDATE walhook.subscriptions SET active = false",
    "DELETE FROM walhook.events",
    "UPDATE walhook.deliveries SET state = 'pending'",
    "DELETE FROM walhook.attempts",
    "INSERT INTO walhook.watched (relid) VALUES ('orders'::regclass)",
    "UPDATE walhook.settings SET value = 'trigger'",
];

#[tokio::test]
async fn migrate_creates_the_group_roles() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let roles: Vec<(String, bool)> = client
        .query(
            "SELECT rolname::text, rolcanlogin FROM pg_roles
             WHERE rolname IN ('walhook_admin', 'walhook_viewer', 'walhook_relay') ORDER BY 1",
            &[],
        )
        .await
        .expect("roles")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("walhook_admin".into(), false),
            ("walhook_relay".into(), false),
            ("walhook_viewer".into(), false)
        ]
    );
    // A second migrate (another database, or the same again) finds them.
    let mut client = db.client().await;
    walhook::migrate::migrate(&mut client)
        .await
        .expect("migrate again");
}

#[tokio::test]
async fn a_role_with_neither_can_do_nothing_in_schema_walhook() {
    let db = seeded().await;
    let nobody = TestRole::create(&db, "walhook_t_nobody", "", &[]).await;
    let client = connect(&nobody.url).await;
    refused(&client, "nobody", CHANGES).await;
    // Writing a watched table needs nothing of walhook's: the capture
    // trigger runs as its owner.
    db.client()
        .await
        .batch_execute(&format!(
            "SELECT walhook.set_capture_mode('trigger'); GRANT INSERT ON orders TO {}",
            nobody.name
        ))
        .await
        .expect("trigger mode");
    allowed(
        &client,
        "an application role",
        &["INSERT INTO orders VALUES (7, 1)"],
    )
    .await;
    let captured: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM walhook.capture", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(captured, 1);
    refused(
        &client,
        "nobody",
        &[
            "SELECT id FROM walhook.subscriptions",
            "SELECT * FROM walhook.events",
            "SELECT * FROM walhook.deliveries",
            "SELECT * FROM walhook.attempts",
            "SELECT * FROM walhook.recent_deliveries",
            "SELECT * FROM walhook.watched",
            "SELECT walhook.capture_mode()",
            "SELECT walhook.event_type_matches('a.insert', '*')",
        ],
    )
    .await;
    drop(client);
    nobody.drop_in(&db).await;
}

#[tokio::test]
async fn the_viewer_reads_everything_but_secrets_and_changes_nothing() {
    let db = seeded().await;
    let viewer = TestRole::create(&db, "walhook_t_viewer", "", &["walhook_viewer"]).await;
    let client = connect(&viewer.url).await;
    allowed(
        &client,
        "viewer",
        &[
            "SELECT id, url, events, content_type, active, disabled_reason, created_at FROM walhook.subscriptions",
            "SELECT id, type, payload, created_at FROM walhook.events",
            "SELECT * FROM walhook.deliveries",
            "SELECT * FROM walhook.attempts",
            "SELECT * FROM walhook.recent_deliveries",
            "SELECT * FROM walhook.watched",
            "SELECT walhook.event_type_matches('orders.insert', 'orders.*')",
        ],
    )
    .await;
    refused(&client, "viewer", CHANGES).await;
    refused(
        &client,
        "viewer",
        &[
            "SELECT secret FROM walhook.subscriptions",
            "SELECT previous_secret FROM walhook.subscriptions",
            "SELECT * FROM walhook.subscriptions",
        ],
    )
    .await;
    drop(client);
    viewer.drop_in(&db).await;
}

#[tokio::test]
async fn the_admin_watches_subscribes_pauses_rotates_and_reads_secrets() {
    let db = seeded().await;
    let admin = TestRole::create(&db, "walhook_t_admin", "", &["walhook_admin"]).await;
    let owner = db.client().await;
    owner
        .batch_execute(&format!(
            "CREATE TABLE items (id int PRIMARY KEY); GRANT SELECT ON items TO {0};
             CREATE TABLE payroll (id int PRIMARY KEY, salary int);",
            admin.name
        ))
        .await
        .expect("tables");
    let client = connect(&admin.url).await;
    allowed(
        &client,
        "admin",
        &[
            "SELECT walhook.watch('items')",
            "SELECT walhook.unwatch('items')",
            "SELECT walhook.watch('items')",
            "SELECT walhook.subscribe('https://example.com/x', ARRAY['items.*'])",
            "SELECT walhook.pause(1)",
            "SELECT walhook.resume(1)",
            "SELECT walhook.rotate_secret(1)",
            "SELECT walhook.redeliver(1)",
            "SELECT walhook.replay(1, since => now() - interval '1 hour')",
            "SELECT walhook.ping(1)",
            "SELECT secret, previous_secret FROM walhook.subscriptions",
            "SELECT * FROM walhook.recent_deliveries",
            "SELECT walhook.unsubscribe(2)",
        ],
    )
    .await;
    // Events carry whole rows: no watching a table one may not read.
    let text = failure_of(&client, "SELECT walhook.watch('payroll')").await;
    assert!(text.contains("may not read public.payroll"), "{text}");
    // The outbox and the capture setup change only through walhook's functions.
    refused(
        &client,
        "admin",
        &[
            "DELETE FROM walhook.events",
            "UPDATE walhook.deliveries SET state = 'pending'",
            "DELETE FROM walhook.attempts",
            "INSERT INTO walhook.watched (relid) VALUES ('payroll'::regclass)",
            "UPDATE walhook.settings SET value = 'trigger'",
            "SELECT * FROM payroll",
        ],
    )
    .await;
    drop(client);
    admin.drop_in(&db).await;
}

/// The relay, as a role with only walhook_relay (and REPLICATION in
/// replication mode), captures and delivers in both modes, switching
/// between them, and can do nothing else.
#[tokio::test]
async fn the_relay_role_runs_both_modes_and_nothing_else() {
    let db = TestDb::new().await;
    let owner = db.client().await;
    let receiver = Receiver::ok().await;
    owner
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric); SELECT walhook.watch('orders')")
        .await
        .expect("setup");
    owner
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe");
    let relay_role =
        TestRole::create(&db, "walhook_t_relay", "REPLICATION", &["walhook_relay"]).await;
    let mut delivered = 0;
    for (mode, id) in [
        (CaptureMode::Trigger, 1),
        (CaptureMode::Replication, 2),
        (CaptureMode::Trigger, 3),
    ] {
        prepare_capture(&relay_role.url, mode).await;
        let relay = Relay::start_with(test_config(&relay_role.url, mode));
        common::wait_for_count(
            &owner,
            &format!(
                "SELECT count(*) FROM walhook.settings WHERE key = 'capture_mode' AND value = '{}'",
                mode.as_str()
            ),
            1,
            Duration::from_secs(10),
        )
        .await;
        // Give replication a moment to stream from the slot.
        tokio::time::sleep(Duration::from_millis(300)).await;
        owner
            .batch_execute(&format!("INSERT INTO orders VALUES ({id}, 1)"))
            .await
            .expect("insert");
        delivered += 1;
        let got = receiver.wait_for(delivered, Duration::from_secs(20)).await;
        assert_eq!(got.len(), delivered, "{mode}");
        relay.stop().await;
    }
    let client = connect(&relay_role.url).await;
    refused(
        &client,
        "relay",
        &[
            "SELECT walhook.watch('orders')",
            "SELECT walhook.unwatch('orders')",
            "SELECT walhook.subscribe('https://example.com/x', ARRAY['*'])",
            "SELECT walhook.pause(1)",
            "SELECT walhook.rotate_secret(1)",
            "INSERT INTO walhook.subscriptions (url, events, secret) VALUES ('https://e.com/h', '{*}', 'whsec_AAAAAAAAAAAA')",
            "INSERT INTO walhook.watched (relid) VALUES ('orders'::regclass)",
            "UPDATE walhook.settings SET value = 'x'",
            "SELECT * FROM orders",
            "INSERT INTO orders VALUES (99, 1)",
            "CREATE TABLE walhook.extra (id int)",
        ],
    )
    .await;
    drop(client);
    let _ = owner
        .batch_execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE database = current_database() AND NOT active",
        )
        .await;
    relay_role.drop_in(&db).await;
}

/// `walhook migrate` by the database's owner, neither superuser nor
/// CREATEROLE: the schema, the grants to the (existing) roles, no event
/// triggers; a dropped watched table is then forgotten when the relay
/// starts.
#[tokio::test]
async fn a_database_owner_can_migrate_without_superuser() {
    let db = TestDb::empty().await;
    let owner = TestRole::create(&db, "walhook_t_owner", "", &[]).await;
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {} OWNER TO {}",
            db.name, owner.name
        ))
        .await
        .expect("owner");
    // The roles are cluster-wide: another database's migrate made them.
    drop(TestDb::new().await);
    let mut client = connect(&owner.url).await;
    walhook::migrate::migrate(&mut client)
        .await
        .expect("the database owner migrates");
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_event_trigger WHERE evtname LIKE 'walhook%'",
            &[],
        )
        .await
        .expect("event triggers")
        .get(0);
    assert_eq!(triggers, 0);
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY); SELECT walhook.watch('orders');
             DROP TABLE orders;",
        )
        .await
        .expect("watch and drop");
    let viewer_grant: bool = client
        .query_one(
            "SELECT has_table_privilege('walhook_viewer', 'walhook.events', 'SELECT')",
            &[],
        )
        .await
        .expect("grant")
        .get(0);
    assert!(viewer_grant);
    let relay = Relay::start_with(test_config(&owner.url, CaptureMode::Trigger));
    let left = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.watched",
        0,
        Duration::from_secs(10),
    )
    .await;
    relay.stop().await;
    assert_eq!(left, 0);
    drop(client);
    // The role owns the database's objects: the database goes first.
    let name = db.name.clone();
    drop(db);
    let server = connect(&common::server_url()).await;
    let _ = server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
    owner.drop_in_server().await;
}
