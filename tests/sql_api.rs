//! The SQL interface: every documented function, and bad input refused by
//! the database with a message that names the problem.

mod common;

use common::TestDb;
use tokio_postgres::Client;

async fn error_of(client: &Client, sql: &str) -> String {
    let err = client.batch_execute(sql).await.expect_err(sql);
    let db = err.as_db_error().expect("a database error");
    format!("{} | {}", db.message(), db.hint().unwrap_or(""))
}

#[tokio::test]
async fn subscribe_refuses_bad_input_with_clear_messages() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let cases = [
        ("SELECT walhook.subscribe('ftp://example.com/x', ARRAY['orders.*'])", "is not an http(s) URL"),
        ("SELECT walhook.subscribe('example.com/hooks', ARRAY['orders.*'])", "is not an http(s) URL"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY[]::text[])", "event list is empty"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.explode'])", "event pattern \"orders.explode\" is not valid"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], content_type => 'xml')", "content type \"xml\" is not known"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => 'short')", "secret is too short"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => 'whsec_!!!not base64!!!')", "not base64"),
        ("INSERT INTO walhook.subscriptions (url, events, secret) VALUES ('gopher://x', '{*}', 'whsec_AAAAAAAAAAAA')", "is not an http(s) URL"),
    ];
    for (sql, expected) in cases {
        let message = error_of(&client, sql).await;
        assert!(
            message.contains(expected),
            "{sql}\n  gave: {message}\n  expected: {expected}"
        );
    }
}

#[tokio::test]
async fn subscribe_generates_a_standard_webhooks_secret() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let id: i64 = client
        .query_one("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*', 'customers.delete'])", &[])
        .await
        .expect("subscribe")
        .get(0);
    let row = client
        .query_one(
            "SELECT secret, content_type, active, events FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    let secret: String = row.get(0);
    let key = secret.strip_prefix("whsec_").expect("whsec_ prefix");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .expect("base64");
    assert_eq!(bytes.len(), 32);
    assert_eq!(row.get::<_, String>(1), "json");
    assert!(row.get::<_, bool>(2));
    assert_eq!(
        row.get::<_, Vec<String>>(3),
        vec!["orders.*", "customers.delete"]
    );
    let form: i64 = client
        .query_one(
            "SELECT walhook.subscribe('http://example.com/h', ARRAY['*'], secret => 'my-github-secret', content_type => 'form')",
            &[],
        )
        .await
        .expect("form subscription")
        .get(0);
    assert!(form > id);
}

#[tokio::test]
async fn watch_refuses_what_is_not_a_table() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let message = error_of(&client, "SELECT walhook.watch('public.nope')").await;
    assert!(
        message.contains("table \"public.nope\" does not exist"),
        "{message}"
    );
    client
        .batch_execute("CREATE VIEW v AS SELECT 1 AS x")
        .await
        .expect("view");
    let message = error_of(&client, "SELECT walhook.watch('v')").await;
    assert!(message.contains("is not a table"), "{message}");
    let message = error_of(&client, "SELECT walhook.unwatch('public.nope')").await;
    assert!(message.contains("is not watched"), "{message}");
    let message = error_of(&client, "SELECT walhook.watch('walhook.events')").await;
    assert!(message.contains("belongs to walhook itself"), "{message}");
}

#[tokio::test]
async fn watch_installs_and_unwatch_removes_capture() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE orders (id int PRIMARY KEY, status text);
             CREATE TABLE logs (line text);",
        )
        .await
        .expect("setup");
    let message: String = client
        .query_one("SELECT walhook.watch('orders')", &[])
        .await
        .expect("watch")
        .get(0);
    assert_eq!(message, "watching orders (trigger capture)");
    let message: String = client
        .query_one("SELECT walhook.watch('logs')", &[])
        .await
        .expect("watch")
        .get(0);
    assert!(message.contains("no primary key"), "{message}");
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'walhook_capture%'",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    // Each table: the row trigger (updates), the insert and delete
    // statement triggers and the truncate trigger.
    assert_eq!(triggers, 8);
    client
        .batch_execute("SELECT walhook.unwatch('orders')")
        .await
        .expect("unwatch");
    client
        .batch_execute("INSERT INTO orders VALUES (1, 'x')")
        .await
        .expect("insert");
    let captured: i64 = client
        .query_one("SELECT count(*) FROM walhook.capture", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(captured, 0, "an unwatched table is not captured");

    // Switching mode moves watched tables to the publication.
    client
        .batch_execute("SELECT walhook.set_capture_mode('replication')")
        .await
        .expect("mode");
    let published: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_publication_tables WHERE pubname = 'walhook'",
            &[],
        )
        .await
        .expect("publication")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(published, vec!["logs"]);
    let identity: String = client
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE relname = 'logs'",
            &[],
        )
        .await
        .expect("identity")
        .get(0);
    assert_eq!(identity, "f", "full row images by default");
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'walhook_capture%'",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    assert_eq!(triggers, 0, "replication mode adds no triggers");
}

#[tokio::test]
async fn pause_resume_unsubscribe_and_unknown_ids() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let id: i64 = client
        .query_one(
            "SELECT walhook.subscribe('https://example.com/h', ARRAY['*'])",
            &[],
        )
        .await
        .expect("subscribe")
        .get(0);
    client
        .execute("SELECT walhook.pause($1)", &[&id])
        .await
        .expect("pause");
    let row = client
        .query_one(
            "SELECT active, disabled_reason FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("paused"));
    client
        .execute("SELECT walhook.resume($1)", &[&id])
        .await
        .expect("resume");
    let row = client
        .query_one(
            "SELECT active, disabled_reason FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<String>>(1), None);
    client
        .execute("SELECT walhook.unsubscribe($1)", &[&id])
        .await
        .expect("unsubscribe");
    for function in ["pause", "resume", "unsubscribe"] {
        let message = error_of(&client, &format!("SELECT walhook.{function}({id})")).await;
        assert!(
            message.contains(&format!("there is no subscription with id {id}")),
            "{message}"
        );
    }
    let message = error_of(&client, "SELECT walhook.redeliver(424242)").await;
    assert!(
        message.contains("there is no delivery with id 424242"),
        "{message}"
    );
}

async fn seed_history(client: &Client) -> i64 {
    let sub: i64 = client
        .query_one(
            "SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'])",
            &[],
        )
        .await
        .expect("subscribe")
        .get(0);
    client
        .batch_execute(
            "INSERT INTO walhook.events (id, type, payload, row_key, created_at) VALUES
               ('evt_a', 'orders.insert', '{}', 'public.orders:[1]', now() - interval '2 hours'),
               ('evt_b', 'orders.update', '{}', 'public.orders:[1]', now() - interval '30 minutes'),
               ('evt_c', 'customers.insert', '{}', 'public.customers:[1]', now() - interval '10 minutes'),
               ('evt_d', 'orders.delete', '{}', 'public.orders:[2]', now() - interval '5 minutes');",
        )
        .await
        .expect("events");
    client
        .execute(
            "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts, delivered_at)
             VALUES ('evt_a', $1, 'public.orders:[1]', 'delivered', 1, now()),
                    ('evt_b', $1, 'public.orders:[1]', 'dead', 8, NULL)",
            &[&sub],
        )
        .await
        .expect("deliveries");
    sub
}

#[tokio::test]
async fn redeliver_queues_the_same_event_again() {
    let db = TestDb::new().await;
    let client = db.client().await;
    seed_history(&client).await;
    let dead: i64 = client
        .query_one(
            "SELECT id FROM walhook.deliveries WHERE event_id = 'evt_b'",
            &[],
        )
        .await
        .expect("dead delivery")
        .get(0);
    client
        .execute("SELECT walhook.redeliver($1)", &[&dead])
        .await
        .expect("redeliver");
    let row = client
        .query_one(
            "SELECT state, attempts, event_id FROM walhook.deliveries WHERE id = $1",
            &[&dead],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), "pending");
    assert_eq!(row.get::<_, i32>(1), 0);
    assert_eq!(row.get::<_, String>(2), "evt_b");
}

#[tokio::test]
async fn replay_requeues_and_adds_matching_events_since() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = seed_history(&client).await;
    let queued: i64 = client
        .query_one(
            "SELECT walhook.replay($1, since => now() - interval '1 hour')",
            &[&sub],
        )
        .await
        .expect("replay")
        .get(0);
    // evt_b (dead → pending) and evt_d (new delivery); evt_c does not
    // match orders.*, evt_a is older than the hour.
    assert_eq!(queued, 2);
    let pending: Vec<String> = client
        .query(
            "SELECT event_id FROM walhook.deliveries WHERE state = 'pending' ORDER BY event_id",
            &[],
        )
        .await
        .expect("pending")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pending, vec!["evt_b", "evt_d"]);
    let message = error_of(&client, "SELECT walhook.replay(999, since => now())").await;
    assert!(
        message.contains("there is no subscription with id 999"),
        "{message}"
    );
}

#[tokio::test]
async fn recent_deliveries_shows_the_history() {
    let db = TestDb::new().await;
    let client = db.client().await;
    seed_history(&client).await;
    client
        .batch_execute(
            "INSERT INTO walhook.attempts (delivery_id, status, duration_ms, error)
             SELECT id, 500, 12, NULL FROM walhook.deliveries WHERE event_id = 'evt_b'",
        )
        .await
        .expect("attempt");
    let rows = client
        .query(
            "SELECT event_id, event_type, state, last_status, url FROM walhook.recent_deliveries",
            &[],
        )
        .await
        .expect("view");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), "evt_b", "newest first");
    assert_eq!(rows[0].get::<_, String>(1), "orders.update");
    assert_eq!(rows[0].get::<_, String>(2), "dead");
    assert_eq!(rows[0].get::<_, Option<i32>>(3), Some(500));
    assert_eq!(rows[0].get::<_, String>(4), "https://example.com/h");
}

/// The SQL matcher (used by replay) and the relay's matcher agree.
#[tokio::test]
async fn sql_and_relay_pattern_matching_agree() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let patterns = [
        "*",
        "orders.*",
        "orders.update",
        "*.delete",
        "*.*",
        "audit.*.*",
        "audit.log.*",
        "public.*.insert",
        "public.orders.*",
        "audit.*.delete",
    ];
    let types = [
        "orders.insert",
        "orders.update",
        "orders.delete",
        "customers.delete",
        "audit.log.insert",
        "audit.log.delete",
        "auditx.log.insert",
        "audit.orders.update",
    ];
    for pattern in patterns {
        for event_type in types {
            let sql: bool = client
                .query_one(
                    "SELECT walhook.event_type_matches($1, $2)",
                    &[&event_type, &pattern],
                )
                .await
                .expect("match")
                .get(0);
            let relay = walhook::route::Pattern::parse(pattern).matches(event_type);
            assert_eq!(sql, relay, "pattern {pattern} vs {event_type}");
        }
    }
}

#[tokio::test]
async fn rotate_secret_keeps_the_old_one_for_the_grace_period() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let id: i64 = client
        .query_one("SELECT walhook.subscribe('https://example.com/h', ARRAY['*'], secret => 'whsec_b2xkLXNlY3JldC1vbGQ=')", &[])
        .await
        .expect("subscribe")
        .get(0);
    let fresh: String = client
        .query_one(
            "SELECT walhook.rotate_secret($1, keep_old => interval '24 hours')",
            &[&id],
        )
        .await
        .expect("rotate")
        .get(0);
    assert!(fresh.starts_with("whsec_") && fresh != "whsec_b2xkLXNlY3JldC1vbGQ=");
    let row = client
        .query_one(
            "SELECT secret, previous_secret, previous_secret_expires_at > now() + interval '23 hours'
             FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row");
    assert_eq!(row.get::<_, String>(0), fresh);
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some("whsec_b2xkLXNlY3JldC1vbGQ=")
    );
    assert!(row.get::<_, bool>(2));
    client
        .execute("SELECT walhook.rotate_secret($1, new_secret => 'whsec_bmV3LXNlY3JldC0y', keep_old => interval '0')", &[&id])
        .await
        .expect("rotate without grace");
    let previous: Option<String> = client
        .query_one(
            "SELECT previous_secret FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("row")
        .get(0);
    assert_eq!(previous, None);
    let message = error_of(&client, "SELECT walhook.rotate_secret(999)").await;
    assert!(
        message.contains("there is no subscription with id 999"),
        "{message}"
    );
}

/// Routing reloads only when routing can change: delivery bookkeeping on
/// a subscription leaves the version alone.
#[tokio::test]
async fn only_routing_changes_move_the_subscriptions_version() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let version = || async {
        client
            .query_one(
                "SELECT value::bigint FROM walhook.settings WHERE key = 'subscriptions_version'",
                &[],
            )
            .await
            .expect("version")
            .get::<_, i64>(0)
    };
    let start = version().await;
    client
        .batch_execute("SELECT walhook.subscribe('https://example.com/h', ARRAY['*'])")
        .await
        .expect("subscribe");
    let added = version().await;
    assert!(added > start, "a new subscription moves the version");
    client
        .batch_execute(
            "UPDATE walhook.subscriptions SET failing_since = now();
             UPDATE walhook.subscriptions SET failing_since = NULL WHERE failing_since IS NOT NULL;
             UPDATE walhook.subscriptions SET failing_since = NULL WHERE failing_since IS NOT NULL;",
        )
        .await
        .expect("bookkeeping");
    assert_eq!(version().await, added, "bookkeeping leaves routing alone");
    client
        .batch_execute("UPDATE walhook.subscriptions SET events = ARRAY['orders.*']")
        .await
        .expect("reroute");
    let rerouted = version().await;
    assert!(rerouted > added);
    client
        .batch_execute("SELECT walhook.pause(1)")
        .await
        .expect("pause");
    assert!(version().await > rerouted, "pausing changes routing");
}

#[tokio::test]
async fn deleting_events_subscriptions_or_deliveries_deletes_what_refers_to_them() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = seed_history(&client).await;
    let other: i64 = client
        .query_one(
            "SELECT walhook.subscribe('https://example.com/other', ARRAY['*'])",
            &[],
        )
        .await
        .expect("subscribe")
        .get(0);
    client
        .execute(
            "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
             SELECT id, $1, row_key FROM walhook.events",
            &[&other],
        )
        .await
        .expect("deliveries of the other subscription");
    client
        .batch_execute(
            "INSERT INTO walhook.attempts (delivery_id, status)
             SELECT id, 500 FROM walhook.deliveries",
        )
        .await
        .expect("attempts");
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .expect("count")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM walhook.deliveries").await, 6);
    assert_eq!(count("SELECT count(*) FROM walhook.attempts").await, 6);

    // An event: its deliveries for both subscriptions, and their attempts.
    client
        .execute("DELETE FROM walhook.events WHERE id = 'evt_a'", &[])
        .await
        .expect("delete event");
    assert_eq!(
        count("SELECT count(*) FROM walhook.deliveries WHERE event_id = 'evt_a'").await,
        0
    );
    assert_eq!(count("SELECT count(*) FROM walhook.attempts").await, 4);

    // A subscription: its deliveries, and their attempts; the other's stay.
    client
        .execute("SELECT walhook.unsubscribe($1)", &[&sub])
        .await
        .expect("unsubscribe");
    assert_eq!(count("SELECT count(*) FROM walhook.deliveries").await, 3);
    assert_eq!(
        count(
            "SELECT count(*) FROM walhook.attempts a
             WHERE NOT EXISTS (SELECT 1 FROM walhook.deliveries d WHERE d.id = a.delivery_id)"
        )
        .await,
        0,
        "no attempt outlives its delivery"
    );
    assert_eq!(count("SELECT count(*) FROM walhook.attempts").await, 3);
}
