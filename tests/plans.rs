//! The statements run for every delivery keep index plans on an outbox
//! whose statistics say nothing: never analyzed, 50,000 deliveries deep,
//! as after a burst on a fresh database. Checked for the plan made for the
//! given values and for the generic plan a prepared statement may settle on,
//! under the session settings of the connection each runs on. Results are
//! joined to their deliveries in one pass, also when the statistics say
//! nearly nothing is in flight. And the relay's statistics check analyzes
//! an outbox that has grown.

mod common;

use common::TestDb;
use serde_json::Value;
use tokio_postgres::Client;
use walhook::deliver::{settings_of, HOT_STATEMENTS};

const OUTBOX_ROWS: i64 = 50_000;
/// Outbox depths the hot statements are checked at: plans change with the
/// table's size on disk (at 20,000 the per-row order lookup was planned
/// through the wrong index, at 50,000 through the right one).
const CHECKED_DEPTHS: &[i64] = &[20_000, OUTBOX_ROWS];
/// Deliveries claimed before the plans are read, as a record write sees.
const CLAIMED: i64 = 500;

/// The outbox tables whose whole-table scans grow with the backlog.
const OUTBOX_TABLES: &[&str] = &["deliveries", "events"];

async fn fill_never_analyzed_outbox(client: &Client, rows: i64) {
    // Nothing may analyze the tables behind the test's back.
    client
        .batch_execute(
            "ALTER TABLE walhook.deliveries SET (autovacuum_enabled = false);
             ALTER TABLE walhook.events SET (autovacuum_enabled = false);
             ALTER TABLE walhook.attempts SET (autovacuum_enabled = false);",
        )
        .await
        .expect("autovacuum off for the outbox");
    client
        .execute(
            "SELECT walhook.subscribe('http://127.0.0.1:9/hooks', ARRAY['*'])",
            &[],
        )
        .await
        .expect("subscribe");
    client
        .execute(
            "INSERT INTO walhook.events (id, type, payload, row_key)
             SELECT 'evt_' || lpad(g::text, 8, '0'), 'orders.insert', '{}', 'public.orders:[' || g || ']'
             FROM generate_series(1, $1::int8) g",
            &[&rows],
        )
        .await
        .expect("events");
    client
        .execute(
            "INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
             SELECT 'evt_' || lpad(g::text, 8, '0'), (SELECT min(id) FROM walhook.subscriptions),
                    'public.orders:[' || g || ']'
             FROM generate_series(1, $1::int8) g",
            &[&rows],
        )
        .await
        .expect("deliveries");
    client
        .execute(
            "UPDATE walhook.deliveries SET state = 'in_flight', attempts = 1,
                    lease_until = now() + interval '1 minute'
             WHERE id <= $1",
            &[&CLAIMED],
        )
        .await
        .expect("claim some");
    let analyzed: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_user_tables
             WHERE schemaname = 'walhook' AND relname IN ('deliveries', 'events')
               AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)",
            &[],
        )
        .await
        .expect("analyze times")
        .get(0);
    assert_eq!(analyzed, 0, "the outbox must never have been analyzed");
}

/// The values each statement is run with, as SQL for `EXECUTE`.
fn arguments(statement: &str) -> String {
    let ids = format!(
        "'{{{}}}'::bigint[]",
        (1..=CLAIMED)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let event_ids = format!(
        "'{{{}}}'::text[]",
        (1..=CLAIMED)
            .map(|i| format!("evt_{i:08}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let n = CLAIMED;
    match statement {
        "claim" => "(1000, 60, '{}'::bigint[], '{}'::int[], 256, 4)".into(),
        "events of claimed" => format!("({event_ids})"),
        "next due" => String::new(),
        "record deliveries" => format!(
            "({ids}, array_fill(1, ARRAY[{n}]), array_fill('delivered'::text, ARRAY[{n}]),
              array_fill(0::float8, ARRAY[{n}]), array_fill(200, ARRAY[{n}]),
              array_fill(NULL::text, ARRAY[{n}]))"
        ),
        "record attempts" => format!(
            "({ids}, array_fill(now(), ARRAY[{n}]), array_fill(200, ARRAY[{n}]),
              array_fill(3, ARRAY[{n}]), array_fill(NULL::text, ARRAY[{n}]),
              array_fill(NULL::text, ARRAY[{n}]))"
        ),
        other => panic!("no arguments known for the statement {other:?}; add them here"),
    }
}

/// The plan of `sql`, prepared, run with `arguments` under `plan_cache_mode`
/// and the session `settings`.
async fn plan(client: &Client, sql: &str, arguments: &str, mode: &str, settings: &str) -> Value {
    client
        .batch_execute(&format!(
            "{settings}; SET plan_cache_mode = {mode}; PREPARE checked AS {sql}"
        ))
        .await
        .unwrap_or_else(|e| panic!("prepare {sql}: {e}"));
    let row = client
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) EXECUTE checked{arguments}"),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("explain {sql}: {e}"));
    client
        .batch_execute("DEALLOCATE checked; RESET ALL")
        .await
        .expect("deallocate");
    row.get(0)
}

/// Every node of a plan, depth first.
fn nodes(plan: &Value) -> Vec<&serde_json::Map<String, Value>> {
    let mut found = Vec::new();
    let mut stack = vec![plan];
    while let Some(node) = stack.pop() {
        match node {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => {
                if fields.contains_key("Node Type") {
                    found.push(fields);
                }
                stack.extend(fields.values());
            }
            _ => {}
        }
    }
    found
}

fn text<'a>(node: &'a serde_json::Map<String, Value>, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Value::as_str)
}

/// The tables a plan reads with a sequential scan.
fn seq_scanned(plan: &Value) -> Vec<String> {
    nodes(plan)
        .into_iter()
        .filter(|node| text(node, "Node Type") == Some("Seq Scan"))
        .filter_map(|node| text(node, "Relation Name").map(str::to_owned))
        .collect()
}

/// The scans of `deliveries` that test `row_key` row by row instead of
/// seeking it in an index: the per-row order lookup reading every open
/// delivery of a subscription.
fn row_keys_filtered(plan: &Value) -> Vec<String> {
    nodes(plan)
        .into_iter()
        .filter(|node| text(node, "Relation Name") == Some("deliveries"))
        .filter_map(|node| {
            let filter = text(node, "Filter").filter(|f| f.contains("row_key"))?;
            let index = text(node, "Index Name").unwrap_or("scan");
            Some(format!("{index} filtered by {filter:?}"))
        })
        .collect()
}

#[tokio::test]
async fn hot_statements_use_indexes_on_a_never_analyzed_outbox() {
    for &depth in CHECKED_DEPTHS {
        let db = TestDb::new().await;
        let client = db.client().await;
        fill_never_analyzed_outbox(&client, depth).await;

        // The check itself sees a whole-table scan where there is one.
        let bad = plan(
            &client,
            "SELECT * FROM walhook.deliveries WHERE last_error IS NULL",
            "",
            "force_custom_plan",
            "",
        )
        .await;
        assert_eq!(seq_scanned(&bad), vec!["deliveries".to_owned()]);
        check_hot_statements(&client, &format!("of {depth}, never analyzed")).await;
        // And once the relay's statistics check has analyzed the burst,
        // every delivery open and of one subscription.
        client
            .batch_execute("ANALYZE walhook.deliveries, walhook.events")
            .await
            .expect("analyze");
        check_hot_statements(&client, &format!("of {depth}, analyzed while open")).await;
    }
}

/// Every hot statement reads the outbox through index conditions only, in
/// both plan modes, or in the custom plan alone where its connection plans
/// every run.
async fn check_hot_statements(client: &Client, outbox: &str) {
    for (name, sql) in HOT_STATEMENTS {
        let modes: &[&str] = if settings_of(name).contains("force_custom_plan") {
            &["force_custom_plan"]
        } else {
            &["force_generic_plan", "force_custom_plan"]
        };
        for mode in modes {
            let plan = plan(client, sql, &arguments(name), mode, settings_of(name)).await;
            let outbox_scans: Vec<String> = seq_scanned(&plan)
                .into_iter()
                .filter(|table| OUTBOX_TABLES.contains(&table.as_str()))
                .collect();
            assert!(
                outbox_scans.is_empty(),
                "{name} ({mode}) scans {outbox_scans:?} whole, outbox {outbox}:\n{plan:#}"
            );
            let filtered = row_keys_filtered(&plan);
            assert!(
                filtered.is_empty(),
                "{name} ({mode}) looks rows up by key without the index, outbox {outbox}: {filtered:?}\n{plan:#}"
            );
        }
    }
}

/// The nested loops of a plan that run a function scan (the unnested
/// arrays of a write) once per row of their outer side.
fn function_scans_in_loops(plan: &Value) -> usize {
    nodes(plan)
        .into_iter()
        .filter(|node| text(node, "Node Type") == Some("Nested Loop"))
        .filter(|node| {
            let inner = node.get("Plans").and_then(|plans| plans.get(1));
            inner.is_some_and(|inner| {
                nodes(inner)
                    .iter()
                    .any(|n| text(n, "Node Type") == Some("Function Scan"))
            })
        })
        .count()
}

#[tokio::test]
async fn results_are_joined_in_one_pass_when_few_deliveries_are_in_flight() {
    let db = TestDb::new().await;
    let client = db.client().await;
    fill_never_analyzed_outbox(&client, OUTBOX_ROWS).await;
    // What a busy outbox's statistics say: nearly everything delivered.
    client
        .batch_execute(
            "UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now()
             WHERE state = 'pending';
             ANALYZE walhook.deliveries;",
        )
        .await
        .expect("deliver the rest, analyze");

    // The check itself sees the loop where there is one: the planner's
    // choice without the recorder's settings, in the generic plan that a
    // prepared statement settles on.
    let looping = plan(
        &client,
        walhook::deliver::HOT_STATEMENTS
            .iter()
            .find(|(name, _)| *name == "record deliveries")
            .map(|(_, sql)| *sql)
            .expect("the record statement"),
        &arguments("record deliveries"),
        "force_generic_plan",
        "SET enable_nestloop = on",
    )
    .await;
    assert_eq!(function_scans_in_loops(&looping), 1, "{looping:#}");

    for name in ["record deliveries", "record attempts"] {
        let (_, sql) = HOT_STATEMENTS
            .iter()
            .find(|(hot, _)| *hot == name)
            .expect("a hot statement");
        for mode in ["force_generic_plan", "force_custom_plan"] {
            let plan = plan(&client, sql, &arguments(name), mode, settings_of(name)).await;
            assert_eq!(
                function_scans_in_loops(&plan),
                0,
                "{name} ({mode}) runs through the results once per delivery:\n{plan:#}"
            );
            let outbox_scans: Vec<String> = seq_scanned(&plan)
                .into_iter()
                .filter(|table| OUTBOX_TABLES.contains(&table.as_str()))
                .collect();
            assert!(
                outbox_scans.is_empty(),
                "{name} ({mode}) scans {outbox_scans:?}:\n{plan:#}"
            );
        }
    }
}

#[tokio::test]
async fn an_outbox_that_has_grown_is_analyzed_once() {
    let db = TestDb::new().await;
    let client = db.client().await;
    fill_never_analyzed_outbox(&client, OUTBOX_ROWS).await;
    let analyze = "SELECT walhook.analyze_grown_outbox()";
    let mut first: Vec<String> = client.query_one(analyze, &[]).await.expect("check").get(0);
    first.sort();
    assert_eq!(first, vec!["walhook.deliveries", "walhook.events"]);
    let reltuples: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'walhook.deliveries'::regclass",
            &[],
        )
        .await
        .expect("reltuples")
        .get(0);
    assert!(
        reltuples > (OUTBOX_ROWS / 2) as f32,
        "the statistics count the outbox: {reltuples}"
    );
    let second: Vec<String> = client.query_one(analyze, &[]).await.expect("check").get(0);
    assert!(second.is_empty(), "nothing grew since: {second:?}");

    // Analyzed with nothing open, then a burst that fits in the table.
    client
        .batch_execute(
            "UPDATE walhook.deliveries SET state = 'delivered', delivered_at = now();
             ANALYZE walhook.deliveries;
             UPDATE walhook.deliveries SET state = 'pending', delivered_at = NULL WHERE id <= 3000;",
        )
        .await
        .expect("deliver all, analyze, reopen some");
    let reopened: Vec<String> = client.query_one(analyze, &[]).await.expect("check").get(0);
    assert_eq!(reopened, vec!["walhook.deliveries"]);
}
