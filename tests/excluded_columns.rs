//! Columns that never leave the database (`walhook.watch(...,
//! exclude_columns => ...)`): absent from every payload received, from
//! `walhook.events`, from backfill reads and from the event catalog, in
//! trigger capture and in replication capture both with a publication
//! column list and with the relay dropping them (full row images); a
//! changed list applies to later changes, key columns are refused, and
//! columns added or renamed later are handled.

mod common;

use std::time::{Duration, Instant};

use common::event_catalog::assert_matches_catalog;
use common::sql_surface::failure_of;
use common::{Receiver, Relay, TestDb};
use serde_json::Value;
use tokio_postgres::Client;
use walhook::config::CaptureMode;

/// How a variant captures, and so how excluded columns are kept out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    /// The capture trigger never copies them.
    Trigger,
    /// `REPLICA IDENTITY FULL` allows no column list: the relay drops them.
    ReplicationFullImage,
    /// Replica identity of the key: a publication column list.
    ReplicationColumnList,
}

impl Capture {
    fn mode(self) -> CaptureMode {
        match self {
            Capture::Trigger => CaptureMode::Trigger,
            _ => CaptureMode::Replication,
        }
    }

    fn full_image(self) -> bool {
        self != Capture::ReplicationColumnList
    }
}

/// `users` with rows 1..=3 (there before it is watched), watched with
/// `password_hash` excluded, and a receiver subscribed to `users.*`.
async fn setup(capture: Capture) -> (TestDb, Client, Receiver) {
    let receiver = Receiver::ok().await;
    let db = TestDb::new().await;
    let client = common::capturing(
        &db,
        capture.mode(),
        "CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, password_hash text, note text);
         INSERT INTO users SELECT g, 'user' || g || '@example.com', 'SECRET-' || g, 'old row'
         FROM generate_series(1, 3) g;",
    )
    .await;
    let answer: String = client
        .query_one(
            "SELECT walhook.watch('public.users', full_image => $1, exclude_columns => ARRAY['password_hash'])",
            &[&capture.full_image()],
        )
        .await
        .expect("watch")
        .get(0);
    assert!(
        answer.contains("excluded columns: password_hash"),
        "{answer}"
    );
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['users.*'])",
            &[&receiver.url],
        )
        .await
        .expect("subscribe");
    (db, client, receiver)
}

/// The received events, once `arrived` holds for one of them.
async fn received_when(
    receiver: &Receiver,
    what: &str,
    arrived: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events: Vec<Value> = receiver.received().iter().map(|r| r.json()).collect();
        if events.iter().any(&arrived) {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} arrived; got {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The received events, once one with `record.id = id` (or `old_record.id`
/// for a delete) has arrived.
async fn received_through(receiver: &Receiver, id: i64) -> Vec<Value> {
    received_when(receiver, &format!("event of row {id}"), |e| {
        e["record"]["id"].as_i64() == Some(id) || e["old_record"]["id"].as_i64() == Some(id)
    })
    .await
}

/// The event of `action` on row `id` among `events`.
fn event_of<'a>(events: &'a [Value], action: &str, id: i64) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["action"] == action
                && (e["record"]["id"].as_i64() == Some(id)
                    || e["old_record"]["id"].as_i64() == Some(id))
        })
        .unwrap_or_else(|| panic!("no {action} of row {id} in {events:?}"))
}

/// The publication column list of `users` (column numbers), `None` when
/// it has none.
async fn column_list(client: &Client) -> Option<Vec<i16>> {
    client
        .query_one(
            "SELECT pr.prattrs::int2[] FROM pg_publication_rel pr
             JOIN pg_publication p ON p.oid = pr.prpubid
             WHERE p.pubname = 'walhook' AND pr.prrelid = 'users'::regclass",
            &[],
        )
        .await
        .expect("users is in the publication")
        .get(0)
}

async fn an_excluded_column_never_leaves_the_database(capture: Capture) {
    let (db, client, receiver) = setup(capture).await;
    match capture {
        Capture::Trigger => {}
        Capture::ReplicationFullImage => assert_eq!(column_list(&client).await, None),
        Capture::ReplicationColumnList => {
            assert_eq!(column_list(&client).await, Some(vec![1, 2, 4]))
        }
    }
    let relay = Relay::start(&db.url, capture.mode());
    client
        .batch_execute(
            "INSERT INTO users VALUES (10, 'ten@example.com', 'SECRET-10', 'new');
             UPDATE users SET email = 'TEN@example.com', password_hash = 'SECRET-10b' WHERE id = 10;
             UPDATE users SET password_hash = 'SECRET-10c' WHERE id = 10;
             DELETE FROM users WHERE id = 10;",
        )
        .await
        .expect("writes");
    let backfill: i64 = client
        .query_one("SELECT walhook.backfill('public.users')", &[])
        .await
        .expect("backfill")
        .get(0);
    let state =
        common::backfill::wait_for_backfill(&client, backfill, Duration::from_secs(60)).await;
    assert_eq!(state, "done");
    client
        .batch_execute("INSERT INTO users VALUES (99, 'last@example.com', 'SECRET-99', NULL)")
        .await
        .expect("last write");
    received_through(&receiver, 99).await;
    // Reads are due a little after live changes.
    let events = received_when(&receiver, "read of row 3", |e| {
        e["action"] == "read" && e["record"]["id"] == 3
    })
    .await;
    relay.stop().await;

    for received in receiver.received() {
        let body = String::from_utf8_lossy(&received.body).into_owned();
        assert!(
            !body.contains("password_hash") && !body.contains("SECRET"),
            "{capture:?}: a payload carries the excluded column: {body}"
        );
    }
    let insert = event_of(&events, "insert", 10);
    assert_eq!(insert["record"]["email"], "ten@example.com");
    assert_eq!(insert["record"]["note"], "new");
    let update = event_of(&events, "update", 10);
    assert_eq!(update["record"]["email"], "TEN@example.com");
    if capture.full_image() {
        assert_eq!(update["old_record"]["email"], "ten@example.com");
        assert_eq!(update["changes"]["email"]["new"], "TEN@example.com");
    }
    let delete = event_of(&events, "delete", 10);
    assert_eq!(delete["old_record"]["id"], 10);
    for id in 1..=3 {
        let read = event_of(&events, "read", id);
        assert_eq!(read["record"]["email"], format!("user{id}@example.com"));
        assert!(read["record"].get("password_hash").is_none(), "{read}");
    }
    for event in &events {
        assert_matches_catalog(&client, event).await;
    }

    let (stored, leaking): (i64, i64) = {
        let row = client
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE payload::text LIKE '%password_hash%'
                                                   OR payload::text LIKE '%SECRET%')
                 FROM walhook.events",
                &[],
            )
            .await
            .expect("events");
        (row.get(0), row.get(1))
    };
    assert!(stored >= 8, "{capture:?}: {stored} events stored");
    assert_eq!(
        leaking, 0,
        "{capture:?}: walhook.events holds the excluded column"
    );
    let catalog: Vec<(String, String)> = client
        .query(
            "SELECT action, payload_schema::text FROM walhook.event_types WHERE table_name = 'users'",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(catalog.len(), 5);
    for (action, schema) in &catalog {
        assert!(
            !schema.contains("password_hash"),
            "the {action} schema names the excluded column: {schema}"
        );
    }
    assert!(catalog
        .iter()
        .any(|(_, schema)| schema.contains("\"email\"")));
}

#[tokio::test]
async fn an_excluded_column_never_leaves_the_database_via_triggers() {
    an_excluded_column_never_leaves_the_database(Capture::Trigger).await;
}

#[tokio::test]
async fn an_excluded_column_never_leaves_the_database_via_replication_with_full_images() {
    an_excluded_column_never_leaves_the_database(Capture::ReplicationFullImage).await;
}

#[tokio::test]
async fn an_excluded_column_never_leaves_the_database_via_a_publication_column_list() {
    an_excluded_column_never_leaves_the_database(Capture::ReplicationColumnList).await;
}

/// The excluded columns `walhook.watched` lists for `users`.
async fn listed(client: &Client) -> Vec<String> {
    client
        .query_one(
            "SELECT exclude_columns FROM walhook.watched WHERE relid = 'users'::regclass",
            &[],
        )
        .await
        .expect("watched")
        .get(0)
}

async fn insert_and_receive(client: &Client, receiver: &Receiver, id: i64) -> Value {
    client
        .execute(
            "INSERT INTO users VALUES ($1::int8::int, 'u' || $1::int8 || '@example.com', 'SECRET-' || $1::int8, 'n')",
            &[&id],
        )
        .await
        .expect("insert");
    let events = received_through(receiver, id).await;
    event_of(&events, "insert", id)["record"].clone()
}

async fn a_changed_list_applies_to_later_changes(capture: Capture) {
    let (db, client, receiver) = setup(capture).await;
    let relay = Relay::start(&db.url, capture.mode());
    let record = insert_and_receive(&client, &receiver, 20).await;
    assert!(record.get("password_hash").is_none(), "{record}");

    let full_image = capture.full_image();
    client
        .batch_execute(&format!(
            "SELECT walhook.watch('users', full_image => {full_image}, exclude_columns => '{{}}')"
        ))
        .await
        .expect("clear the list");
    assert!(listed(&client).await.is_empty());
    let record = insert_and_receive(&client, &receiver, 21).await;
    assert_eq!(record["password_hash"], "SECRET-21", "{capture:?}");

    client
        .batch_execute(&format!(
            "SELECT walhook.watch('users', full_image => {full_image},
                                  exclude_columns => ARRAY['note', 'email', 'note'])"
        ))
        .await
        .expect("another list");
    assert_eq!(listed(&client).await, ["email", "note"]);
    let record = insert_and_receive(&client, &receiver, 22).await;
    assert_eq!(record["password_hash"], "SECRET-22", "{capture:?}");
    assert!(
        record.get("email").is_none() && record.get("note").is_none(),
        "{capture:?}: {record}"
    );

    // Watching again without the parameter keeps the list.
    client
        .batch_execute(&format!(
            "SELECT walhook.watch('users', full_image => {full_image})"
        ))
        .await
        .expect("watch again");
    assert_eq!(listed(&client).await, ["email", "note"]);
    let record = insert_and_receive(&client, &receiver, 23).await;
    assert!(record.get("email").is_none(), "{capture:?}: {record}");
    if capture == Capture::ReplicationColumnList {
        assert_eq!(column_list(&client).await, Some(vec![1, 3]));
    }
    relay.stop().await;
}

#[tokio::test]
async fn a_changed_list_applies_to_later_changes_via_triggers() {
    a_changed_list_applies_to_later_changes(Capture::Trigger).await;
}

#[tokio::test]
async fn a_changed_list_applies_to_later_changes_via_replication_with_full_images() {
    a_changed_list_applies_to_later_changes(Capture::ReplicationFullImage).await;
}

#[tokio::test]
async fn a_changed_list_applies_to_later_changes_via_a_publication_column_list() {
    a_changed_list_applies_to_later_changes(Capture::ReplicationColumnList).await;
}

async fn columns_added_later_are_captured(capture: Capture) {
    let (db, client, receiver) = setup(capture).await;
    let relay = Relay::start(&db.url, capture.mode());
    client
        .batch_execute(
            "ALTER TABLE users ADD COLUMN plan text DEFAULT 'free';
             ALTER TABLE users RENAME COLUMN password_hash TO pw;",
        )
        .await
        .expect("alter");
    assert_eq!(listed(&client).await, ["pw"]);
    client
        .batch_execute(
            "INSERT INTO users VALUES (30, 'thirty@example.com', 'SECRET-30', 'n', 'pro')",
        )
        .await
        .expect("insert");
    let events = received_through(&receiver, 30).await;
    let record = &event_of(&events, "insert", 30)["record"];
    assert_eq!(record["plan"], "pro", "{capture:?}: {record}");
    assert!(
        record.get("pw").is_none() && record.get("password_hash").is_none(),
        "{capture:?}: the renamed excluded column is still excluded: {record}"
    );
    if capture == Capture::ReplicationColumnList {
        assert_eq!(column_list(&client).await, Some(vec![1, 2, 4, 5]));
        // A published column's drop needs CASCADE (the list depends on
        // it); capture goes on with the shorter list.
        let refused = failure_of(&client, "ALTER TABLE users DROP COLUMN note").await;
        assert!(refused.contains("publication"), "{refused}");
        client
            .batch_execute("ALTER TABLE users DROP COLUMN note CASCADE")
            .await
            .expect("drop with cascade");
        assert_eq!(column_list(&client).await, Some(vec![1, 2, 5]));
    } else {
        client
            .batch_execute("ALTER TABLE users DROP COLUMN note")
            .await
            .expect("drop");
    }
    client
        .batch_execute(
            "INSERT INTO users VALUES (31, 'thirty-one@example.com', 'SECRET-31', 'team')",
        )
        .await
        .expect("insert");
    let events = received_through(&receiver, 31).await;
    let record = &event_of(&events, "insert", 31)["record"];
    assert_eq!(record["plan"], "team", "{capture:?}: {record}");
    assert!(record.get("pw").is_none(), "{capture:?}: {record}");
    relay.stop().await;
    for received in receiver.received() {
        let body = String::from_utf8_lossy(&received.body).into_owned();
        assert!(!body.contains("SECRET"), "{capture:?}: {body}");
    }
}

#[tokio::test]
async fn columns_added_later_are_captured_via_triggers() {
    columns_added_later_are_captured(Capture::Trigger).await;
}

#[tokio::test]
async fn columns_added_later_are_captured_via_replication_with_full_images() {
    columns_added_later_are_captured(Capture::ReplicationFullImage).await;
}

#[tokio::test]
async fn columns_added_later_are_captured_via_a_publication_column_list() {
    columns_added_later_are_captured(Capture::ReplicationColumnList).await;
}

#[tokio::test]
async fn key_columns_unknown_columns_and_nulls_are_refused() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (region text, id int, token text, code text NOT NULL,
                                    PRIMARY KEY (region, id));
             CREATE UNIQUE INDEX accounts_code ON accounts (code);
             CREATE TABLE codes (code text NOT NULL, note text);
             CREATE UNIQUE INDEX codes_code ON codes (code);
             ALTER TABLE codes REPLICA IDENTITY USING INDEX codes_code;
             SELECT walhook.watch('accounts', exclude_columns => ARRAY['token']);",
        )
        .await
        .expect("setup");
    let refused = failure_of(
        &client,
        "SELECT walhook.watch('accounts', exclude_columns => ARRAY['token', 'id'])",
    )
    .await;
    assert!(
        refused.contains(
            "\"id\" is part of the primary key of public.accounts, so it cannot be excluded"
        ),
        "{refused}"
    );
    let refused = failure_of(
        &client,
        "SELECT walhook.watch('codes', exclude_columns => ARRAY['code'])",
    )
    .await;
    assert!(
        refused.contains("\"code\" is part of the replica identity index of public.codes"),
        "{refused}"
    );
    let refused = failure_of(
        &client,
        "SELECT walhook.watch('accounts', exclude_columns => ARRAY['Token'])",
    )
    .await;
    assert!(
        refused.contains("public.accounts has no column \"Token\"")
            && refused.contains("region, id, token, code"),
        "{refused}"
    );
    let refused = failure_of(
        &client,
        "SELECT walhook.watch('accounts', exclude_columns => ARRAY[NULL])",
    )
    .await;
    assert!(
        refused.contains("exclude_columns holds a NULL"),
        "{refused}"
    );
    // A unique index that is not the replica identity is no key: allowed.
    client
        .batch_execute("SELECT walhook.watch('accounts', exclude_columns => ARRAY['code'])")
        .await
        .expect("a column outside the key");
    let list: Vec<String> = client
        .query_one(
            "SELECT exclude_columns FROM walhook.watched WHERE relid = 'accounts'::regclass",
            &[],
        )
        .await
        .expect("watched")
        .get(0);
    assert_eq!(list, ["code"]);
}

/// A column list must follow every ALTER TABLE, which only walhook's
/// event trigger can do: without it the relay drops the columns instead.
#[tokio::test]
async fn without_the_event_trigger_no_column_list_is_used() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('replication');
             CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, password_hash text, note text);
             ALTER EVENT TRIGGER walhook_follow_excluded_columns DISABLE;",
        )
        .await
        .expect("setup");
    let answer: String = client
        .query_one(
            "SELECT walhook.watch('users', full_image => false, exclude_columns => ARRAY['password_hash'])",
            &[],
        )
        .await
        .expect("watch")
        .get(0);
    assert!(answer.contains("the relay drops them"), "{answer}");
    assert_eq!(column_list(&client).await, None);
    client
        .batch_execute(
            "ALTER EVENT TRIGGER walhook_follow_excluded_columns ENABLE;
             SELECT walhook.watch('users', full_image => false);",
        )
        .await
        .expect("watch again");
    assert_eq!(column_list(&client).await, Some(vec![1, 2, 4]));
}

/// Where no event trigger follows a rename, the capture trigger finds the
/// excluded column under its new name by itself.
#[tokio::test]
async fn the_capture_trigger_follows_a_rename_it_was_not_told_of() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "SELECT walhook.set_capture_mode('trigger');
             CREATE TABLE users (id int PRIMARY KEY, email text NOT NULL, password_hash text, note text);
             SELECT walhook.watch('users', exclude_columns => ARRAY['password_hash']);
             ALTER EVENT TRIGGER walhook_follow_excluded_columns DISABLE;
             ALTER TABLE users RENAME COLUMN password_hash TO pw;
             INSERT INTO users VALUES (1, 'one@example.com', 'SECRET-1', 'n');
             UPDATE users SET pw = 'SECRET-2', note = 'm';
             DELETE FROM users;",
        )
        .await
        .expect("setup");
    let captured: Vec<String> = client
        .query(
            "SELECT coalesce(record::text, '') || coalesce(old_record::text, '')
                    || coalesce(statement_columns::text, '') || coalesce(statement_rows::text, '')
             FROM walhook.capture ORDER BY id",
            &[],
        )
        .await
        .expect("capture")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(captured.len(), 3);
    for row in &captured {
        assert!(
            row.contains("one@example.com") && !row.contains("SECRET") && !row.contains("pw"),
            "{row}"
        );
    }
}
