//! Subscription filters, in both capture modes: Postgres evaluates each
//! filter on the typed rows (numbers, text, timestamps, jsonb, OLD against
//! NEW), updates enter and leave a filter, a bare column is OLD for a
//! delete; a filter that stops fitting its table disables only its
//! subscription; replays and backfills send what the filter lets through;
//! and the SQL side refuses what cannot work, with Postgres's message.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::sql_surface::failure_of;
use common::{Receiver, Relay, TestDb};
use tokio_postgres::Client;
use walhook::config::CaptureMode;

const WAIT: Duration = Duration::from_secs(30);

/// Capture in `mode`, and a watched `orders` table with a column of each
/// kind the filters compare.
async fn orders(db: &TestDb, mode: CaptureMode) -> Client {
    common::capturing(
        db,
        mode,
        "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL, total numeric(10,2) NOT NULL,
                              placed_at timestamptz NOT NULL, meta jsonb NOT NULL DEFAULT '{}');
         SELECT walhook.watch('orders');",
    )
    .await
}

async fn subscribe(client: &Client, url: &str, events: &str, filter: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT walhook.subscribe($1, ARRAY[{events}], filter => $2)"),
            &[&url, &filter],
        )
        .await
        .unwrap_or_else(|e| panic!("subscribe with filter {filter}: {e:?}"))
        .get(0)
}

/// `(action, row id)` of each request to subscription `id`, sorted
/// (different rows are delivered in parallel, so arrive in any order).
fn received_by(receiver: &Receiver, id: i64) -> Vec<(String, i64)> {
    let mut got: Vec<(String, i64)> = receiver
        .received()
        .iter()
        .filter(|r| r.header("walhook-subscription") == Some(id.to_string()))
        .map(|r| {
            let event = r.json();
            let row = if event["record"].is_null() {
                &event["old_record"]
            } else {
                &event["record"]
            };
            (
                event["action"].as_str().unwrap_or("").to_owned(),
                row["id"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    got.sort();
    got
}

fn actions(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    let mut list: Vec<(String, i64)> = list.iter().map(|(a, id)| ((*a).to_owned(), *id)).collect();
    list.sort();
    list
}

async fn deliveries_of(client: &Client, id: i64) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM walhook.deliveries WHERE subscription_id = $1",
            &[&id],
        )
        .await
        .expect("count")
        .get(0)
}

/// Waits until the relay has written `n` events: routing is decided then.
async fn routed(client: &Client, n: i64) {
    let got = common::wait_for_count(client, "SELECT count(*) FROM walhook.events", n, WAIT).await;
    assert_eq!(got, n, "every change was routed");
}

const WORKLOAD: &str = "
INSERT INTO orders VALUES (1, 'new', 50, '2025-06-01', '{}');
INSERT INTO orders VALUES (2, 'paid', 150, '2026-02-01', '{\"tier\": \"gold\"}');
UPDATE orders SET status = 'paid', total = 200, placed_at = '2026-03-01', meta = '{\"tier\": \"gold\"}' WHERE id = 1;
UPDATE orders SET status = 'cancelled', total = 20, placed_at = '2025-01-01', meta = '{}' WHERE id = 1;
UPDATE orders SET meta = '{\"tier\": \"silver\"}' WHERE id = 2;
DELETE FROM orders WHERE id = 2;
DELETE FROM orders WHERE id = 1;";

async fn filters_on_typed_rows(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = orders(&db, mode).await;
    let url = receiver.url.as_str();
    let numeric = subscribe(&client, url, "'orders.*'", "NEW.total > 100").await;
    let text = subscribe(&client, url, "'orders.*'", "status = 'paid'").await;
    let timestamp = subscribe(&client, url, "'orders.*'", "NEW.placed_at >= '2026-01-01'").await;
    let jsonb = subscribe(&client, url, "'orders.*'", "NEW.meta ->> 'tier' = 'gold'").await;
    let old_new = subscribe(&client, url, "'orders.update'", "NEW.total > OLD.total").await;
    let bare_old = subscribe(&client, url, "'orders.delete'", "placed_at < '2026-01-01'").await;
    let relay = Relay::start(&db.url, mode);
    client.batch_execute(WORKLOAD).await.expect("writes");
    routed(&client, 7).await;
    let expected: HashMap<i64, Vec<(String, i64)>> = HashMap::from([
        // Enters with the first update of row 1, leaves with the second.
        (
            numeric,
            actions(&[("insert", 2), ("update", 1), ("update", 2)]),
        ),
        // A bare column is NEW, and OLD for a delete.
        (
            text,
            actions(&[("insert", 2), ("update", 1), ("update", 2), ("delete", 2)]),
        ),
        (
            timestamp,
            actions(&[("insert", 2), ("update", 1), ("update", 2)]),
        ),
        (jsonb, actions(&[("insert", 2), ("update", 1)])),
        (old_new, actions(&[("update", 1)])),
        (bare_old, actions(&[("delete", 1)])),
    ]);
    let total: usize = expected.values().map(Vec::len).sum();
    for (id, want) in &expected {
        assert_eq!(
            deliveries_of(&client, *id).await,
            want.len() as i64,
            "subscription {id}"
        );
    }
    receiver.wait_for(total, WAIT).await;
    for (id, want) in &expected {
        assert_eq!(&received_by(&receiver, *id), want, "subscription {id}");
    }
    // The body of a filtered subscription is the event itself.
    let first = receiver.received()[0].json();
    assert!(first["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("evt_")));
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_filters_on_typed_rows() {
    filters_on_typed_rows(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_filters_on_typed_rows() {
    filters_on_typed_rows(CaptureMode::Replication).await;
}

/// A filter on a column that is then dropped: its subscription is disabled
/// with the reason at the next change; the others keep receiving, the same
/// batch included.
async fn a_dropped_column_disables_only_its_subscription(mode: CaptureMode) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = orders(&db, mode).await;
    client
        .batch_execute("ALTER TABLE orders ADD COLUMN note text")
        .await
        .expect("column");
    let url = receiver.url.as_str();
    let on_note = subscribe(&client, url, "'orders.*'", "NEW.note = 'rush'").await;
    let on_status = subscribe(&client, url, "'orders.*'", "status = 'paid'").await;
    let plain: i64 = client
        .query_one("SELECT walhook.subscribe($1, ARRAY['orders.*'])", &[&url])
        .await
        .expect("subscribe")
        .get(0);
    let relay = Relay::start(&db.url, mode);
    client
        .batch_execute("INSERT INTO orders VALUES (1, 'paid', 10, now(), '{}', 'rush')")
        .await
        .expect("insert");
    routed(&client, 1).await;
    client
        .batch_execute(
            "ALTER TABLE orders DROP COLUMN note;
             INSERT INTO orders VALUES (2, 'paid', 10, now(), '{}');
             INSERT INTO orders VALUES (3, 'new', 10, now(), '{}');",
        )
        .await
        .expect("drop and insert");
    routed(&client, 3).await;
    let row = client
        .query_one(
            "SELECT active, disabled_reason FROM walhook.subscriptions WHERE id = $1",
            &[&on_note],
        )
        .await
        .expect("subscription");
    let (active, reason): (bool, Option<String>) = (row.get(0), row.get(1));
    let reason = reason.unwrap_or_default();
    assert!(!active, "{reason}");
    assert!(
        reason.contains("public.orders")
            && reason.contains("note")
            && reason.contains("does not exist"),
        "{reason}"
    );
    assert!(
        reason.contains(&format!("walhook.alter_subscription({on_note}")),
        "{reason}"
    );
    assert_eq!(deliveries_of(&client, on_note).await, 1);
    assert_eq!(deliveries_of(&client, on_status).await, 2);
    assert_eq!(deliveries_of(&client, plain).await, 3);
    receiver.wait_for(6, WAIT).await;
    assert_eq!(
        received_by(&receiver, on_status),
        actions(&[("insert", 1), ("insert", 2)])
    );
    // Fixed and resumed, it receives again.
    client
        .batch_execute(&format!(
            "SELECT walhook.alter_subscription({on_note}, filter => 'status = ''new''');
             SELECT walhook.resume({on_note});
             INSERT INTO orders VALUES (4, 'new', 10, now(), '{{}}');"
        ))
        .await
        .expect("fix, resume, insert");
    routed(&client, 4).await;
    assert_eq!(deliveries_of(&client, on_note).await, 2);
    relay.stop().await;
}

#[tokio::test]
async fn trigger_mode_a_dropped_column_disables_only_its_subscription() {
    a_dropped_column_disables_only_its_subscription(CaptureMode::Trigger).await;
}

#[tokio::test]
async fn replication_mode_a_dropped_column_disables_only_its_subscription() {
    a_dropped_column_disables_only_its_subscription(CaptureMode::Replication).await;
}

/// A replay adds only the events the filter lets through (also events from
/// before the subscription), and a backfill for one subscription sends only
/// the rows its filter lets through.
#[tokio::test]
async fn replays_and_backfills_apply_the_filter() {
    let mode = CaptureMode::Trigger;
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = orders(&db, mode).await;
    let relay = Relay::start(&db.url, mode);
    client.batch_execute(WORKLOAD).await.expect("writes");
    routed(&client, 7).await;
    let late = subscribe(&client, &receiver.url, "'orders.*'", "NEW.total > 100").await;
    let queued: i64 = client
        .query_one(
            "SELECT walhook.replay($1, since => now() - interval '1 hour')",
            &[&late],
        )
        .await
        .expect("replay")
        .get(0);
    assert_eq!(queued, 7, "the count is of the events the patterns match");
    let added = common::wait_for_count(
        &client,
        &format!("SELECT count(*) FROM walhook.replays WHERE subscription_id = {late} AND done_at IS NOT NULL"),
        1,
        WAIT,
    )
    .await;
    assert_eq!(added, 1, "a relay queued the replay");
    assert_eq!(deliveries_of(&client, late).await, 3);
    receiver.wait_for(3, WAIT).await;
    assert_eq!(
        received_by(&receiver, late),
        actions(&[("insert", 2), ("update", 1), ("update", 2)])
    );
    client
        .batch_execute(
            "INSERT INTO orders SELECT i, 'new', i * 10, now(), '{}' FROM generate_series(1, 20) i",
        )
        .await
        .expect("rows");
    routed(&client, 27).await;
    // Rows 11 to 20 pass (total > 100): 10 inserts, then 10 reads.
    let backfill: i64 = client
        .query_one(
            "SELECT walhook.backfill('orders', subscription_id => $1)",
            &[&late],
        )
        .await
        .expect("backfill")
        .get(0);
    let state = common::backfill::wait_for_backfill(&client, backfill, WAIT).await;
    assert_eq!(state, "done");
    let reads: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id
             WHERE d.subscription_id = $1 AND e.type = 'orders.read'",
            &[&late],
        )
        .await
        .expect("reads")
        .get(0);
    assert_eq!(reads, 10);
    relay.stop().await;
}

/// With patterns over several tables, a filter is checked against every
/// watched table they match and refused when one lacks what it names; a
/// table watched later that it does not fit disables the subscription at
/// its first change, with the reason.
#[tokio::test]
async fn a_filter_must_fit_every_table_its_patterns_match() {
    let mode = CaptureMode::Trigger;
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = orders(&db, mode).await;
    client
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text); SELECT walhook.watch('notes');",
        )
        .await
        .expect("notes");
    let refused = failure_of(
        &client,
        &format!(
            "SELECT walhook.subscribe('{}', ARRAY['*'], filter => 'status = ''paid''')",
            receiver.url
        ),
    )
    .await;
    assert!(
        refused.contains(
            "walhook: the filter does not fit public.notes: column \"status\" does not exist"
        ),
        "{refused}"
    );
    assert!(
        refused.contains("The columns of public.notes are: id, body."),
        "{refused}"
    );
    let spanning = subscribe(
        &client,
        &receiver.url,
        "'orders.*', 'items.*'",
        "status = 'paid'",
    )
    .await;
    let plain: i64 = client
        .query_one("SELECT walhook.subscribe($1, ARRAY['*'])", &[&receiver.url])
        .await
        .expect("subscribe")
        .get(0);
    let relay = Relay::start(&db.url, mode);
    client
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text); SELECT walhook.watch('items');
             INSERT INTO orders VALUES (1, 'paid', 10, now(), '{}');
             INSERT INTO items VALUES (1, 'pen');",
        )
        .await
        .expect("writes");
    routed(&client, 2).await;
    let reason: Option<String> = client
        .query_one(
            "SELECT disabled_reason FROM walhook.subscriptions WHERE id = $1 AND NOT active",
            &[&spanning],
        )
        .await
        .expect("disabled")
        .get(0);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains("public.items") && reason.contains("\"status\""),
        "{reason}"
    );
    assert_eq!(deliveries_of(&client, plain).await, 2);
    relay.stop().await;
}

/// What walhook.subscribe and walhook.alter_subscription refuse, and how
/// alter_subscription tells "unchanged" (NULL) from "back to the default"
/// (clear).
#[tokio::test]
async fn options_are_checked_and_altered_with_a_clear_convention() {
    let db = TestDb::new().await;
    let client = orders(&db, CaptureMode::Trigger).await;
    let cases = [
        (
            "filter => 'NEW.stauts = ''paid'''",
            "walhook: the filter does not fit public.orders: column new.stauts does not exist",
            "Perhaps you meant to reference the column \"new.status\"",
        ),
        (
            "filter => 'totl > 5'",
            "column \"totl\" does not exist",
            "The columns of public.orders are: id, status, total, placed_at, meta.",
        ),
        (
            "filter => 'status'",
            "argument of WHERE must be type boolean, not type text",
            "a bare column means NEW",
        ),
        (
            "filter => 'status IN (SELECT relname FROM pg_class)'",
            "walhook: the filter holds a subquery",
            "ANY (ARRAY",
        ),
        (
            "filter => 'count(*) > 1'",
            "aggregate functions are not allowed in WHERE",
            "",
        ),
        (
            "filter => 'true); DROP TABLE orders; SELECT (1'",
            "walhook: the filter is not one SQL expression: it closes a parenthesis it did not open",
            "",
        ),
        (
            "filter => 'true; DROP TABLE orders'",
            "it holds a \";\"",
            "",
        ),
        (
            "filter => 'status = $1'",
            "it names a parameter ($1)",
            "",
        ),
        (
            "body => 'NEW.status'",
            "walhook: the body is of type text, not jsonb",
            "jsonb_build_object",
        ),
        (
            "body => 'to_jsonb(NEW)', columns => ARRAY['status']",
            "a subscription with a body takes no columns",
            "",
        ),
        (
            "body => 'to_jsonb(NEW)', batch_size => 10",
            "its batch_size must be 1, not 10",
            "",
        ),
        (
            "order_key => ARRAY['acount_id']",
            "walhook: an option names no column of public.orders: order_key \"acount_id\"",
            "The columns of public.orders are",
        ),
        (
            "when_changed => ARRAY[]::text[]",
            "walhook: when_changed must list at least one column",
            "",
        ),
    ];
    for (options, message, hint) in cases {
        let text = failure_of(
            &client,
            &format!(
                "SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], {options})"
            ),
        )
        .await;
        assert!(text.contains(message), "{options}: {text}");
        assert!(text.contains(hint), "{options}: {text}");
    }
    // Strings, quoted names and comments may hold what the checks look for.
    let id = subscribe(
        &client,
        "https://example.com/h",
        "'orders.*'",
        "status <> ') ; $1' /* ) ; */ AND \"status\" <> E'\\';' -- );\n AND length($x$)$x$) = 1",
    )
    .await;
    let before = version(&client).await;
    client
        .execute(
            "SELECT walhook.alter_subscription($1, filter => 'NEW.total > 5', columns => ARRAY['status'])",
            &[&id],
        )
        .await
        .expect("alter");
    assert!(version(&client).await > before, "relays reload");
    // NULL (an option left out) keeps it; clear takes it back to its default.
    client
        .execute(
            "SELECT walhook.alter_subscription($1, url => 'https://example.com/other')",
            &[&id],
        )
        .await
        .expect("alter url");
    assert_eq!(
        options(&client, id).await,
        (
            Some("NEW.total > 5".to_owned()),
            Some(vec!["status".to_owned()]),
            "https://example.com/other".to_owned()
        )
    );
    client
        .execute(
            "SELECT walhook.alter_subscription($1, clear => ARRAY['filter'])",
            &[&id],
        )
        .await
        .expect("clear");
    assert_eq!(options(&client, id).await.0, None);
    assert_eq!(
        options(&client, id).await.1,
        Some(vec!["status".to_owned()])
    );
    for (call, message) in [
        (
            format!("SELECT walhook.alter_subscription({id}, filter => 'true', clear => ARRAY['filter'])"),
            "walhook.alter_subscription: filter is both given and cleared",
        ),
        (
            format!("SELECT walhook.alter_subscription({id}, clear => ARRAY['url'])"),
            "walhook.alter_subscription: cannot clear url",
        ),
        (
            format!("SELECT walhook.alter_subscription({id}, filter => 'nope > 1')"),
            "column \"nope\" does not exist",
        ),
        (
            "SELECT walhook.alter_subscription(9999, filter => 'true')".to_owned(),
            "walhook.alter_subscription: there is no subscription with id 9999",
        ),
    ] {
        let text = failure_of(&client, &call).await;
        assert!(text.contains(message), "{call}: {text}");
    }
    // Changes of a table dropped since cannot be read as its rows: the
    // relay's statement for it sends none, rather than failing.
    let gone: String = client
        .query_one(
            "SELECT walhook.subscription_statement($1, 4000000000::oid)",
            &[&id],
        )
        .await
        .expect("statement")
        .get(0);
    assert!(gone.trim_end().ends_with("WHERE false"), "{gone}");
    // Calls written before the options existed keep working.
    client
        .execute(
            "SELECT walhook.subscribe('https://example.com/h', ARRAY['orders.*'], 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'json', 5)",
            &[],
        )
        .await
        .expect("positional subscribe");
}

async fn version(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT value::bigint FROM walhook.settings WHERE key = 'subscriptions_version'",
            &[],
        )
        .await
        .expect("version")
        .get(0)
}

async fn options(client: &Client, id: i64) -> (Option<String>, Option<Vec<String>>, String) {
    let row = client
        .query_one(
            "SELECT filter, columns, url FROM walhook.subscriptions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("options");
    (row.get(0), row.get(1), row.get(2))
}
