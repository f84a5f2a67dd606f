//! The console on a large history: a subscription's deliveries paged by
//! keyset and filtered, with the page's bulk actions; every page
//! statement's plan on a million attempts; the console's small pool with
//! its statement timeout.

mod common;

use std::time::{Duration, Instant};

use common::console::{orders_table, ConsoleClient, ConsoleRelay};
use common::TestDb;
use tokio_postgres::Client;

/// `count` events of one subscription, delivered, every tenth dead.
async fn seed_deliveries(client: &Client, sub: i64, count: i64) {
    client
        .execute(
            "WITH e AS (
                 INSERT INTO walhook.events (id, type, payload, row_key)
                 SELECT 'evt_' || lpad(n::text, 8, '0'),
                        CASE WHEN n % 2 = 0 THEN 'orders.update' ELSE 'orders.insert' END,
                        json_build_object('n', n), 'k' || n
                 FROM generate_series(1, $2::bigint) n RETURNING id, row_key)
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts, delivered_at)
             SELECT id, $1, row_key,
                    CASE WHEN substr(id, 5)::int % 10 = 0 THEN 'dead' ELSE 'delivered' END, 1,
                    CASE WHEN substr(id, 5)::int % 10 = 0 THEN NULL ELSE now() END
             FROM e ORDER BY id",
            &[&sub, &count],
        )
        .await
        .expect("seed deliveries");
}

fn delivery_ids(body: &str) -> Vec<i64> {
    body.split("data-delivery=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn deliveries_are_paged_by_keyset_and_filtered() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let sub = orders_table(&client, "http://127.0.0.1:9/hooks").await;
    client
        .execute("SELECT walhook.pause($1)", &[&sub])
        .await
        .expect("pause");
    seed_deliveries(&client, sub, 120).await;
    let console = ConsoleRelay::start(&db, None).await;
    let mut browser = ConsoleClient::new(&console.base);
    let mut seen = Vec::new();
    let mut path = format!("/subscriptions/{sub}");
    loop {
        let page = browser.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let ids = delivery_ids(&page.body);
        assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
        seen.extend(ids);
        let Some(at) = page.body.find("rel=\"next\" href=\"") else {
            break;
        };
        let rest = &page.body[at + "rel=\"next\" href=\"".len()..];
        path = rest[..rest.find('"').expect("link ends")].replace("&amp;", "&");
        assert!(path.contains("before="), "{path}");
    }
    assert_eq!(seen.len(), 120, "every delivery once across the pages");
    let dead = browser
        .get(&format!(
            "/subscriptions/{sub}?state=dead&type=orders.update"
        ))
        .await;
    let ids = delivery_ids(&dead.body);
    assert_eq!(ids.len(), 12, "dead updates (every tenth, all even)");
    assert!(dead.body.contains("data-state=\"dead\""));
    assert!(!dead.body.contains("data-state=\"delivered\""));

    // Redeliver all dead ones, and replay since a time, from the page's forms.
    let csrf = dead.csrf();
    let id = sub.to_string();
    let back = format!("/subscriptions/{sub}");
    let all_dead = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "redeliver-dead"),
                ("id", &id),
                ("back", &back),
            ],
        )
        .await;
    assert_eq!(all_dead.status, 303, "{}", all_dead.body);
    let shown = browser.get(&all_dead.location()).await;
    assert!(
        shown.body.contains("12 dead deliveries of subscription"),
        "{}",
        shown.body
    );
    let still_dead: i64 = client
        .query_one(
            "SELECT count(*) FROM walhook.deliveries WHERE phase = 'dead'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(still_dead, 0);
    let bad = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "replay"),
                ("id", &id),
                ("since", "yesterday"),
            ],
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("is not a time"), "{}", bad.body);
    let replay = browser
        .post(
            "/actions",
            &[
                ("csrf", csrf.as_str()),
                ("action", "replay"),
                ("id", &id),
                ("since", "2000-01-01T00:00"),
                ("back", &back),
            ],
        )
        .await;
    assert_eq!(replay.status, 303, "{}", replay.body);
    let since: String = client
        .query_one(
            "SELECT to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') FROM walhook.replays WHERE subscription_id = $1",
            &[&sub],
        )
        .await
        .expect("a replay was started")
        .get(0);
    assert_eq!(since, "2000-01-01 00:00");
    console.stop().await;
}

#[tokio::test]
async fn every_page_statement_uses_indexes_on_a_million_attempts() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let subs: Vec<i64> = client
        .query(
            "SELECT walhook.subscribe('https://example.com/' || n, ARRAY['orders.*'])
             FROM generate_series(1, 4) n",
            &[],
        )
        .await
        .expect("subscribe")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let generated = Instant::now();
    client
        .batch_execute(&format!(
            "INSERT INTO walhook.events (id, type, payload, row_key, created_at)
             SELECT 'evt_' || lpad(n::text, 10, '0'),
                    CASE WHEN n % 3 = 0 THEN 'orders.update' ELSE 'orders.insert' END,
                    json_build_object('id', n), 'k' || n,
                    now() - make_interval(secs => 500000 - n)
             FROM generate_series(1, 500000) n;
             INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, state, attempts,
                                             delivered_at, next_attempt_at, created_at)
             SELECT 'evt_' || lpad(n::text, 10, '0'), (ARRAY[{}])[n % 4 + 1], 'k' || n,
                    CASE WHEN n % 50 = 0 THEN 'dead' ELSE 'delivered' END, 2,
                    CASE WHEN n % 50 = 0 THEN NULL ELSE now() - make_interval(secs => 500000 - n) END,
                    now(), now() - make_interval(secs => 500000 - n)
             FROM generate_series(1, 500000) n;
             INSERT INTO walhook.attempts (delivery_id, attempted_at, status, duration_ms, error)
             SELECT d.id, d.created_at + make_interval(secs => k), CASE WHEN k = 0 THEN 500 ELSE 200 END,
                    10 + (d.id % 90)::int, NULL
             FROM walhook.deliveries d, generate_series(0, 1) k;
             ANALYZE walhook.events, walhook.deliveries, walhook.attempts;",
            subs.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ))
        .await
        .expect("generate the history");
    let attempts: i64 = client
        .query_one("SELECT count(*) FROM walhook.attempts", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(attempts, 1_000_000);
    println!("generated 1,000,000 attempts in {:?}", generated.elapsed());

    let ids = client
        .query_one(
            "SELECT (SELECT max(id) FROM walhook.events), (SELECT max(id) FROM walhook.deliveries),
                    (SELECT max(id) FROM walhook.attempts)",
            &[],
        )
        .await
        .expect("ids");
    let (event, delivery, attempt): (String, i64, i64) = (ids.get(0), ids.get(1), ids.get(2));
    let mut failures = Vec::new();
    for (n, query) in walhook::console::queries::PAGE_QUERIES.iter().enumerate() {
        let args = query
            .sample_args
            .replace("{subscription}", &subs[0].to_string())
            .replace("{event}", &event)
            .replace("{delivery}", &delivery.to_string())
            .replace("{attempt}", &attempt.to_string());
        client
            .batch_execute(&format!("PREPARE page_{n} AS {}", query.sql))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.name));
        let execute = if args.is_empty() {
            format!("EXPLAIN EXECUTE page_{n}")
        } else {
            format!("EXPLAIN EXECUTE page_{n}({args})")
        };
        let plan: Vec<String> = client
            .query(&execute, &[])
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", query.name))
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        if plan.contains("Seq Scan on deliveries") || plan.contains("Seq Scan on attempts") {
            failures.push(format!("{}:\n{plan}", query.name));
        }
    }
    assert!(
        failures.is_empty(),
        "statements that scan a whole table:\n\n{}",
        failures.join("\n\n")
    );

    // And the pages themselves answer quickly on this history.
    let console = ConsoleRelay::start(&db, None).await;
    let mut browser = ConsoleClient::new(&console.base);
    for path in [
        "/".to_owned(),
        "/subscriptions".to_owned(),
        format!("/subscriptions/{}", subs[0]),
        format!("/subscriptions/{}?before={}", subs[0], delivery / 2),
        format!("/subscriptions/{}?state=dead", subs[0]),
        format!(
            "/subscriptions/{}?state=delivered&type=orders.update",
            subs[0]
        ),
        format!("/events/{event}"),
        "/tail".to_owned(),
    ] {
        let started = Instant::now();
        let page = browser.get(&path).await;
        let took = started.elapsed();
        println!("{path}: {took:?}");
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(took < Duration::from_secs(3), "{path} took {took:?}");
    }
    console.stop().await;
}

#[tokio::test]
async fn the_console_pool_is_small_and_times_statements_out() {
    let db = TestDb::new().await;
    let pool = walhook::console::pool::build(&db.url).expect("pool");
    assert_eq!(pool.status().max_size, walhook::console::pool::POOL_SIZE);
    assert_eq!(walhook::console::pool::POOL_SIZE, 4);
    let client = pool.get().await.expect("a connection");
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('application_name')",
            &[],
        )
        .await
        .expect("settings");
    assert_eq!(row.get::<_, String>(0), "5s");
    assert_eq!(row.get::<_, String>(1), "walhook console");
    let error = client
        .query_one("SELECT pg_sleep(6)", &[])
        .await
        .expect_err("cut off");
    let message = error
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("statement timeout"), "{message}");
}
