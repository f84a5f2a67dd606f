//! The SQL surface under hostile and careless input: event types that
//! never mix two tables up, subscriptions validated within named bounds
//! with no secret in any message, system catalogs refused, dropped and
//! renamed tables followed, private targets warned about and dead at once.

mod common;

use std::time::Duration;

use common::sql_surface::{failure_of, Noticed, MATCH_CASES};
use common::{prepare_capture, test_config, Receiver, Relay, TestDb};
use walhook::config::CaptureMode;

#[tokio::test]
async fn sql_and_relay_follow_the_same_matching_rule() {
    let db = TestDb::new().await;
    let client = db.client().await;
    for &(pattern, event_type, expected) in MATCH_CASES {
        let sql: bool = client
            .query_one(
                "SELECT walhook.event_type_matches($1, $2)",
                &[&event_type, &pattern],
            )
            .await
            .expect("match")
            .get(0);
        let relay = walhook::route::Pattern::parse(pattern).matches(event_type);
        assert_eq!(sql, expected, "SQL: pattern {pattern} vs {event_type}");
        assert_eq!(relay, expected, "relay: pattern {pattern} vs {event_type}");
    }
}

#[tokio::test]
async fn sql_and_relay_spell_event_types_alike() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let names = [
        ("public", "orders"),
        ("audit", "log"),
        ("public", "audit.log"),
        ("public", "Ünïcode Täble"),
        ("Sales", "q\"1"),
        ("s p", "*"),
        ("public", "t$1"),
        ("public", "1t"),
        ("x", "_"),
    ];
    for (schema, table) in names {
        let sql: String = client
            .query_one(
                "SELECT walhook.event_type($1, $2, 'insert')",
                &[&schema, &table],
            )
            .await
            .expect("event type")
            .get(0);
        let rust = format!(
            "{}.insert",
            walhook::event_type::table_prefix(schema, table)
        );
        assert_eq!(sql, rust, "{schema}.{table}");
        let parts: Vec<Option<String>> = client
            .query_one("SELECT walhook.event_type_parts($1)", &[&sql])
            .await
            .expect("parts")
            .get(0);
        let mut expected: Vec<Option<String>> = Vec::new();
        if schema != "public" {
            expected.push(Some(schema.into()));
        }
        expected.extend([Some(table.into()), Some("insert".into())]);
        assert_eq!(parts, expected, "{sql} splits back into its names");
    }
}

/// The reported leak: `public."audit.log"` and `audit.log` once shared
/// `audit.log.insert`, so a subscription to one received the other's rows.
#[tokio::test]
async fn tables_whose_names_need_quoting_never_share_event_types() {
    for mode in [CaptureMode::Trigger, CaptureMode::Replication] {
        let db = TestDb::new().await;
        let client = db.client().await;
        prepare_capture(&db.url, mode).await;
        client
            .batch_execute(&format!(
                "SELECT walhook.set_capture_mode('{}');
                 CREATE SCHEMA audit;
                 CREATE TABLE audit.log (id int PRIMARY KEY, note text);
                 CREATE TABLE public.\"audit.log\" (id int PRIMARY KEY, note text);
                 CREATE TABLE public.\"Ünïcode Täble\" (id int PRIMARY KEY, note text);
                 SELECT walhook.watch('audit.log');
                 SELECT walhook.watch('public.\"audit.log\"');
                 SELECT walhook.watch('public.\"Ünïcode Täble\"');",
                mode.as_str()
            ))
            .await
            .expect("setup");
        let schema_log = Receiver::ok().await;
        let public_log = Receiver::ok().await;
        let unicode = Receiver::ok().await;
        for (receiver, pattern) in [
            (&schema_log, "audit.log.*"),
            (&public_log, "\"audit.log\".*"),
            (&unicode, "\"Ünïcode Täble\".insert"),
        ] {
            client
                .execute(
                    "SELECT walhook.subscribe($1, ARRAY[$2])",
                    &[&receiver.url, &pattern],
                )
                .await
                .expect("subscribe");
        }
        let relay = Relay::start_with(test_config(&db.url, mode));
        client
            .batch_execute(
                "INSERT INTO audit.log VALUES (1, 'schema audit');
                 INSERT INTO public.\"audit.log\" VALUES (1, 'public secret row');
                 INSERT INTO public.\"Ünïcode Täble\" VALUES (1, 'unicode');",
            )
            .await
            .expect("writes");
        let timeout = Duration::from_secs(20);
        for (receiver, note, event_type) in [
            (&schema_log, "schema audit", "audit.log.insert"),
            (&public_log, "public secret row", "\"audit.log\".insert"),
            (&unicode, "unicode", "\"Ünïcode Täble\".insert"),
        ] {
            let got = receiver.wait_for(1, timeout).await;
            assert_eq!(got.len(), 1, "{mode}: {event_type}");
            let event = got[0].json();
            assert_eq!(event["type"], event_type, "{mode}");
            assert_eq!(event["record"]["note"], note, "{mode}");
        }
        // Nothing more arrives: no receiver gets another table's row.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for receiver in [&schema_log, &public_log, &unicode] {
            assert_eq!(receiver.received().len(), 1, "{mode}");
        }
        relay.stop().await;
    }
}

const SECRET: &str = "s3cr3t-never-shown-anywhere";

/// Every refusal names what is wrong (and the limit, for bounds); none
/// carries the secret, in its message, detail or hint.
#[tokio::test]
async fn subscription_errors_name_the_limit_and_never_the_secret() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let subscribe = |options: &str| {
        format!("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => '{SECRET}'{options})")
    };
    let long_pattern = format!("{}.insert", "a".repeat(100_000));
    let many_patterns = vec!["orders.*"; 10_000].join("','");
    let long_host = format!("https://{}.example.com/h", "h".repeat(70_000));
    let cases: Vec<(String, &str)> = vec![
        (subscribe(", max_attempts => 0"), "max_attempts is 0, outside the limits 1 to 1000"),
        (subscribe(", max_attempts => 1000000"), "outside the limits 1 to 1000"),
        (subscribe(", batch_size => 0"), "batch_size is 0, outside the limits 1 to 1000"),
        (subscribe(", batch_size => 5000"), "outside the limits 1 to 1000"),
        (subscribe(", max_in_flight => 0"), "max_in_flight is 0, outside the limits 1 to 10000"),
        (subscribe(", max_per_second => 'NaN'"), "not a finite rate above 0 and at most 100000"),
        (subscribe(", max_per_second => 'Infinity'"), "not a finite rate"),
        (subscribe(", max_per_second => 0"), "not a finite rate"),
        (subscribe(", max_per_second => -3"), "not a finite rate"),
        (subscribe(", retry_schedule => ARRAY['1000 years']::interval[]"), "longer than the limit of 3 days"),
        (subscribe(", retry_schedule => ARRAY['0s', '4 days']::interval[]"), "longer than the limit of 3 days"),
        (subscribe(", retry_schedule => ARRAY['-1s']::interval[]"), "none negative"),
        (subscribe(", content_type => 'xml'"), "content type \"xml\" is not known"),
        (subscribe(", description => repeat('d', 5000)"), "more than the limit of 1000"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => '        ')".into(), "blank"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => repeat('x', 1048576))".into(), "too long (the limit is 512 characters)"),
        ("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], secret => 'short')".into(), "too short (the limit is at least 8 characters)"),
        (format!("SELECT walhook.subscribe('https://example.com/h', ARRAY['{long_pattern}'], secret => '{SECRET}')"), "more than the limit of 500"),
        (format!("SELECT walhook.subscribe('https://example.com/h', ARRAY['{many_patterns}'], secret => '{SECRET}')"), "10000 event patterns, more than the limit of 100"),
        (format!("SELECT walhook.subscribe('{long_host}', ARRAY['orders.*'], secret => '{SECRET}')"), "more than the limit of 2048"),
        (format!("SELECT walhook.subscribe('https://{}/h', ARRAY['orders.*'], secret => '{SECRET}')", "h".repeat(300)), "more than the limit of 253"),
        (format!("SELECT walhook.subscribe('https://example.com/h', ARRAY['\"unclosed.insert'], secret => '{SECRET}')"), "is not valid"),
        (format!("SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.explode'], secret => '{SECRET}')"), "is not valid"),
        (format!("INSERT INTO walhook.subscriptions (url, events, secret, max_attempts) VALUES ('https://example.com/h', '{{*}}', '{SECRET}', 0)"), "max_attempts is 0"),
        (format!("INSERT INTO walhook.subscriptions (url, events, secret, batch_size) VALUES ('https://example.com/h', '{{*}}', '{SECRET}', NULL)"), "batch_size is NULL"),
    ];
    for (sql, expected) in &cases {
        let text = failure_of(&client, sql).await;
        assert!(
            text.contains(expected),
            "{}\n  gave: {text}\n  expected: {expected}",
            &sql[..sql.len().min(200)]
        );
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
        assert!(
            text.len() < 1000,
            "the message echoes the input: {}",
            &text[..300]
        );
    }
    // Updates are checked as well, before any constraint.
    let id: i64 = client
        .query_one(&subscribe(""), &[])
        .await
        .expect("a valid subscription")
        .get(0);
    for (update, expected) in [
        ("max_attempts = 0", "max_attempts is 0"),
        ("active = NULL", "cannot be NULL"),
        ("created_at = NULL", "cannot be NULL"),
        ("url = NULL", "URL is missing"),
        ("max_per_second = 'NaN'", "not a finite rate"),
    ] {
        let text = failure_of(
            &client,
            &format!("UPDATE walhook.subscriptions SET {update} WHERE id = {id}"),
        )
        .await;
        assert!(text.contains(expected), "{update}: {text}");
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
    let text = failure_of(
        &client,
        &format!("SELECT walhook.rotate_secret({id}, new_secret => '  {SECRET}  ')"),
    )
    .await;
    assert!(
        text.contains("whitespace") && !text.contains(SECRET),
        "{text}"
    );
}

#[tokio::test]
async fn subscribe_warns_about_private_and_loopback_hosts() {
    let db = TestDb::new().await;
    let noticed = Noticed::connect(&db.url).await;
    for (url, kind) in [
        ("http://127.0.0.1:8080/h", Some("loopback")),
        ("http://localhost/h", Some("loopback")),
        ("http://[::1]/h", Some("loopback")),
        ("http://[::ffff:127.0.0.1]/h", Some("loopback")),
        ("http://[::ffff:10.0.0.1]/h", Some("private")),
        ("https://10.1.2.3/h", Some("private")),
        ("https://user:pw@192.168.0.7:99/h", Some("private")),
        ("http://169.254.169.254/latest", Some("link-local")),
        ("https://example.com/h", None),
        ("https://93.184.216.34/h", None),
    ] {
        noticed
            .client
            .execute("SELECT walhook.subscribe($1, ARRAY['*'])", &[&url])
            .await
            .expect("subscribe");
        let notices = noticed.take();
        match kind {
            Some(kind) => {
                assert_eq!(notices.len(), 1, "{url}: {notices:?}");
                assert!(
                    notices[0].starts_with("WARNING")
                        && notices[0].contains(&format!("a {kind} address"))
                        && notices[0].contains("allow_private_targets"),
                    "{url}: {notices:?}"
                );
            }
            None => assert!(notices.is_empty(), "{url}: {notices:?}"),
        }
    }
}

#[tokio::test]
async fn watch_refuses_system_catalogs_and_unlogged_tables() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute("CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY)")
        .await
        .expect("setup");
    for (table, expected) in [
        ("pg_catalog.pg_class", "pg_class is a system catalog"),
        ("pg_class", "is a system catalog"),
        ("pg_catalog.pg_authid", "is a system catalog"),
        ("information_schema.sql_features", "is a system catalog"),
        ("scratch", "temporary or unlogged"),
    ] {
        let text = failure_of(&client, &format!("SELECT walhook.watch('{table}')")).await;
        assert!(text.contains(expected), "{table}: {text}");
        assert!(text.contains("walhook.watch"), "{table}: {text}");
    }
}

async fn watched_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM walhook.watched", &[])
        .await
        .expect("count")
        .get(0)
}

#[tokio::test]
async fn a_dropped_table_is_no_longer_watched() {
    let db = TestDb::new().await;
    let noticed = Noticed::connect(&db.url).await;
    let client = &noticed.client;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY);
             CREATE TABLE items (id int PRIMARY KEY);
             CREATE TABLE lines (id int PRIMARY KEY);
             SELECT walhook.watch('orders'); SELECT walhook.watch('items'); SELECT walhook.watch('lines');",
        )
        .await
        .expect("setup");
    noticed.take();
    client
        .batch_execute("DROP TABLE orders")
        .await
        .expect("drop");
    assert_eq!(watched_count(client).await, 2);
    let notices = noticed.take();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("public.orders was dropped")),
        "{notices:?}"
    );

    // Without the event trigger (a migrate run by a non-superuser), the
    // entry stays until a mode switch or start-up, which skip it with a
    // warning; unwatch takes the oid it shows.
    client
        .batch_execute("ALTER EVENT TRIGGER walhook_forget_dropped_tables DISABLE")
        .await
        .expect("disable");
    let items_oid: u32 = client
        .query_one("SELECT 'items'::regclass::oid", &[])
        .await
        .expect("oid")
        .get(0);
    client
        .batch_execute("DROP TABLE items; DROP TABLE lines")
        .await
        .expect("drop");
    assert_eq!(watched_count(client).await, 2);
    let message: String = client
        .query_one(&format!("SELECT walhook.unwatch('{items_oid}')"), &[])
        .await
        .expect("unwatch a dropped table by oid")
        .get(0);
    assert!(message.contains("forgot"), "{message}");
    assert_eq!(watched_count(client).await, 1);
    noticed.take();
    // A relay starting in the recorded mode forgets the last one.
    prepare_capture(&db.url, CaptureMode::Replication).await;
    let relay = Relay::start_with(test_config(&db.url, CaptureMode::Replication));
    let left = common::wait_for_count(
        client,
        "SELECT count(*) FROM walhook.watched",
        0,
        Duration::from_secs(10),
    )
    .await;
    relay.stop().await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_mode_switch_skips_a_dropped_table_with_a_warning() {
    let db = TestDb::new().await;
    let noticed = Noticed::connect(&db.url).await;
    let client = &noticed.client;
    client
        .batch_execute(
            "ALTER EVENT TRIGGER walhook_forget_dropped_tables DISABLE;
             CREATE TABLE orders (id int PRIMARY KEY);
             CREATE TABLE kept (id int PRIMARY KEY);
             SELECT walhook.watch('orders'); SELECT walhook.watch('kept');
             DROP TABLE orders;",
        )
        .await
        .expect("setup");
    noticed.take();
    client
        .batch_execute("SELECT walhook.set_capture_mode('trigger')")
        .await
        .expect("a switch with a dropped table");
    let notices = noticed.take();
    assert!(
        notices.iter().any(|n| n.starts_with("WARNING")
            && n.contains("orders")
            && n.contains("no longer exists")),
        "{notices:?}"
    );
    let triggers: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'kept'::regclass AND tgname LIKE 'walhook_capture%'",
            &[],
        )
        .await
        .expect("triggers")
        .get(0);
    assert_eq!(
        triggers, 4,
        "the remaining table is captured (row, insert, delete and truncate triggers)"
    );
}

#[tokio::test]
async fn a_renamed_table_keeps_flowing_says_so_and_status_lists_stale_patterns() {
    let db = TestDb::new().await;
    let noticed = Noticed::connect(&db.url).await;
    let client = &noticed.client;
    let receiver = Receiver::ok().await;
    client
        .batch_execute("SELECT walhook.set_capture_mode('trigger'); CREATE TABLE orders (id int PRIMARY KEY); SELECT walhook.watch('orders')")
        .await
        .expect("setup");
    let old_names: i64 = client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe")
        .get(0);
    let everything: i64 = client
        .query_one("SELECT walhook.subscribe($1, ARRAY['*'])", &[&receiver.url])
        .await
        .expect("subscribe")
        .get(0);
    noticed.take();
    client
        .batch_execute("ALTER TABLE orders RENAME TO \"Purchase Orders\"")
        .await
        .expect("rename");
    let notices = noticed.take();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].contains("\"Purchase Orders\".* instead of orders.*")
            && notices[0].contains(&format!(
                "Subscriptions that named its old events: {old_names}."
            ))
            && !notices[0].contains(&format!("{everything}.")),
        "{notices:?}"
    );
    let report = walhook::status::report(client).await.expect("status");
    assert!(
        report.contains("match no watched table")
            && report.contains(&format!("#{old_names} orders.*")),
        "{report}"
    );
    assert!(!report.contains(&format!("#{everything} ")), "{report}");

    // Capture goes on under the new name.
    let relay = Relay::start_with(test_config(&db.url, CaptureMode::Trigger));
    client
        .batch_execute("INSERT INTO \"Purchase Orders\" VALUES (1)")
        .await
        .expect("insert");
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    relay.stop().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["type"], "\"Purchase Orders\".insert");
}

/// The private-network guard's refusal cannot change on a retry: the
/// delivery is dead after its first attempt, with the reason.
#[tokio::test]
async fn a_refused_private_target_is_dead_at_once() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let receiver = Receiver::ok().await;
    client
        .batch_execute("SELECT walhook.set_capture_mode('trigger'); CREATE TABLE orders (id int PRIMARY KEY); SELECT walhook.watch('orders')")
        .await
        .expect("setup");
    let localhost = receiver.url.replace("127.0.0.1", "localhost");
    for url in [&receiver.url, &localhost] {
        client
            .execute("SELECT walhook.subscribe($1, ARRAY['orders.*'])", &[url])
            .await
            .expect("subscribe");
    }
    let mut config = test_config(&db.url, CaptureMode::Trigger);
    config.delivery.allow_private_targets = false;
    config.delivery.retry_schedule = "0s,1s,1s,1s".parse().expect("schedule");
    let relay = Relay::start_with(config);
    client
        .batch_execute("INSERT INTO orders VALUES (1)")
        .await
        .expect("insert");
    let dead = common::wait_for_count(
        &client,
        "SELECT count(*) FROM walhook.deliveries WHERE state = 'dead'",
        2,
        Duration::from_secs(20),
    )
    .await;
    relay.stop().await;
    assert_eq!(dead, 2);
    let rows = client
        .query(
            "SELECT d.attempts, a.error FROM walhook.deliveries d JOIN walhook.attempts a ON a.delivery_id = d.id",
            &[],
        )
        .await
        .expect("attempts");
    assert_eq!(rows.len(), 2, "one attempt each, no retries");
    for row in rows {
        assert_eq!(row.get::<_, i32>(0), 1);
        let error: String = row.get(1);
        assert!(
            error.contains("refused") && error.contains("allow_private_targets"),
            "{error}"
        );
    }
    assert!(receiver.received().is_empty());
}

/// A row written before the bounds existed keeps working: an update is
/// checked in the columns it changes (the relay's bookkeeping changes none
/// that are bounded).
#[tokio::test]
async fn rows_from_before_the_bounds_can_still_be_updated() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "ALTER TABLE walhook.subscriptions DISABLE TRIGGER check_subscription;
             INSERT INTO walhook.subscriptions (url, events, secret, retry_schedule, max_per_second)
             VALUES ('https://example.com/h', '{orders.*}', '        ', ARRAY['1000 years']::interval[], 'NaN');
             ALTER TABLE walhook.subscriptions ENABLE TRIGGER check_subscription;",
        )
        .await
        .expect("an old row");
    client
        .batch_execute(
            "UPDATE walhook.subscriptions SET failing_since = now(), active = false, disabled_reason = 'failing'",
        )
        .await
        .expect("bookkeeping on an old row");
    let text = failure_of(
        &client,
        "UPDATE walhook.subscriptions SET retry_schedule = ARRAY['5 years']::interval[]",
    )
    .await;
    assert!(text.contains("longer than the limit of 3 days"), "{text}");
}

/// Every name Postgres accepts can be watched, gets its own event type, and
/// can be named in a pattern, in SQL and in the relay alike.
#[tokio::test]
async fn every_table_name_can_be_watched_and_named_in_a_pattern() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let long = "x".repeat(63);
    let tables: Vec<(&str, &str)> = vec![
        ("public", "a.b"),
        ("public", "A"),
        ("public", "a b"),
        ("public", "a\"b"),
        ("public", "ünï"),
        ("public", "*"),
        ("public", "."),
        ("public", "insert"),
        ("public", &long),
        ("a.b", "c"),
        ("a", "b.c"),
        ("a", "b"),
        ("public", "a.b.c"),
    ];
    let quote = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let mut prefixes = std::collections::HashSet::new();
    for (schema, table) in &tables {
        let qualified = format!("{}.{}", quote(schema), quote(table));
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}; CREATE TABLE {qualified} (id int PRIMARY KEY)",
                quote(schema)
            ))
            .await
            .expect("create table");
        client
            .execute("SELECT walhook.watch($1)", &[&qualified])
            .await
            .expect("watch");
        let prefix: String = client
            .query_one(
                "SELECT type_prefix FROM walhook.watched WHERE relid = to_regclass($1)",
                &[&qualified],
            )
            .await
            .expect("prefix")
            .get(0);
        assert_eq!(prefix, walhook::event_type::table_prefix(schema, table));
        assert!(prefixes.insert(prefix.clone()), "{prefix} is shared");
        let (event_type, pattern) = (format!("{prefix}.insert"), format!("{prefix}.*"));
        let sql: bool = client
            .query_one(
                "SELECT walhook.event_type_matches($1, $2) AND walhook.valid_event_patterns(ARRAY[$2])",
                &[&event_type, &pattern],
            )
            .await
            .expect("match")
            .get(0);
        assert!(sql, "SQL: {pattern} vs {event_type}");
        let pattern = walhook::route::Pattern::parse(&pattern);
        assert!(pattern.matches(&event_type), "relay: {event_type}");
        for (other_schema, other_table) in &tables {
            if (other_schema, other_table) != (schema, table) {
                assert!(
                    !pattern.matches_table(other_schema, other_table, "insert"),
                    "{event_type} matches {other_schema}.{other_table}"
                );
            }
        }
    }
}
