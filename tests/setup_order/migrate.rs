//! `migrate` around a running setup: twice, in one mode then running the
//! other, switching modes with rows on both sides; and what `watch` and
//! `migrate` say when capture has nowhere to go or no privilege.

use walhook::config::CaptureMode::{Replication, Trigger};

use crate::common::{slot_for, TestDb};
use crate::scenario::Step::*;
use crate::scenario::{
    connect_with_notices, migrate, recorded_mode, scenario, slot_exists, try_migrate, ROWS_PER_STEP,
};

// migrate twice, with rows between.

#[tokio::test]
async fn migrate_twice_replication() {
    let mut scenario = scenario(
        "migrate twice, replication",
        &[Migrate(Replication), Watch, Subscribe, Rows],
    )
    .await;
    let again = migrate(&scenario.db.url, Replication);
    assert!(again.contains("up to date"), "{again}");
    assert!(
        again.contains("exists"),
        "the second migrate keeps the slot: {again}"
    );
    assert!(!again.contains("switched"), "{again}");
    scenario.step(Rows).await;
    scenario.step(Run(Replication)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

#[tokio::test]
async fn migrate_twice_trigger() {
    let mut scenario = scenario(
        "migrate twice, trigger",
        &[Migrate(Trigger), Watch, Subscribe, Rows],
    )
    .await;
    let again = migrate(&scenario.db.url, Trigger);
    assert!(
        again.contains("up to date") && !again.contains("switched"),
        "{again}"
    );
    scenario.step(Rows).await;
    scenario.step(Run(Trigger)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

// migrate in one mode, run in the other: the relay switches without losing
// what the first mode captured.

#[tokio::test]
async fn migrate_replication_then_run_trigger() {
    let mut scenario = scenario(
        "migrate replication, run trigger",
        &[Migrate(Replication), Watch, Subscribe, Rows, Run(Trigger)],
    )
    .await;
    let slot = slot_for(&scenario.db.url);
    let client = scenario.db.client().await;
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
    assert_eq!(recorded_mode(&client).await, "trigger");
    assert!(
        !slot_exists(&client, &slot).await,
        "the trigger-mode relay dropped the drained slot"
    );
}

#[tokio::test]
async fn migrate_trigger_then_run_replication() {
    let mut scenario = scenario(
        "migrate trigger, run replication",
        &[Migrate(Trigger), Watch, Subscribe, Rows, Run(Replication)],
    )
    .await;
    let client = scenario.db.client().await;
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
    assert_eq!(recorded_mode(&client).await, "replication");
    let left: i64 = client
        .query_one("SELECT count(*) FROM walhook.capture", &[])
        .await
        .expect("capture rows")
        .get(0);
    assert_eq!(left, 0, "what the triggers captured went to the outbox");
}

// migrate switches the mode itself, with rows on both sides of the switch.

#[tokio::test]
async fn migrate_switches_replication_to_trigger() {
    let mut scenario = scenario(
        "migrate switches replication to trigger",
        &[Migrate(Replication), Watch, Subscribe, Rows],
    )
    .await;
    let text = migrate(&scenario.db.url, Trigger);
    assert!(text.contains("switched from replication"), "{text}");
    scenario.step(Rows).await;
    scenario.step(Run(Trigger)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

#[tokio::test]
async fn migrate_switches_trigger_to_replication() {
    let mut scenario = scenario(
        "migrate switches trigger to replication",
        &[Migrate(Trigger), Watch, Subscribe, Rows],
    )
    .await;
    let text = migrate(&scenario.db.url, Replication);
    assert!(text.contains("switched from trigger"), "{text}");
    scenario.step(Rows).await;
    scenario.step(Run(Replication)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

// walhook.watch says when the capture it installs has nowhere to go yet.

#[tokio::test]
async fn watch_notices_a_missing_slot() {
    let db = TestDb::new().await; // migrated without capture set up: replication, no slot
    let (client, notices) = connect_with_notices(&db.url).await;
    client
        .batch_execute("CREATE TABLE public.orders (id bigint PRIMARY KEY)")
        .await
        .expect("table");
    let text: String = client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch")
        .get(0);
    assert!(text.contains("not captured yet"), "{text}");
    let raised = notices.lock().expect("notices").clone();
    assert!(
        raised
            .iter()
            .any(|n| n.contains("not captured yet") && n.contains("no replication slot")),
        "{raised:?}"
    );

    // `walhook migrate` records and creates the slot: no notice any more.
    migrate(&db.url, Replication);
    notices.lock().expect("notices").clear();
    let text: String = client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch")
        .get(0);
    assert!(!text.contains("not captured yet"), "{text}");
    assert!(notices.lock().expect("notices").is_empty());

    // The recorded slot dropped: the notice names it.
    let slot = slot_for(&db.url);
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .expect("drop the slot");
    client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch");
    let raised = notices.lock().expect("notices").clone();
    assert!(
        raised
            .iter()
            .any(|n| n.contains(&format!("\"{slot}\" does not exist"))),
        "{raised:?}"
    );

    // Trigger capture always has somewhere to go.
    migrate(&db.url, Trigger);
    notices.lock().expect("notices").clear();
    client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch");
    assert!(notices.lock().expect("notices").is_empty());
}

// Where the role may not replicate, `migrate` in replication mode names the
// cause and the way out; trigger mode needs no such privilege.

#[tokio::test]
async fn migrate_names_a_missing_replication_privilege() {
    let db = TestDb::empty().await;
    let role = format!("{}_app", db.name);
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE {} TO {role}; CREATE EXTENSION hstore;",
            db.name
        ))
        .await
        .expect("a role without REPLICATION");
    let mut url = url::Url::parse(&db.url).expect("test URL");
    url.set_username(&role).expect("user name");
    let replication = try_migrate(url.as_str(), Replication);
    let trigger = try_migrate(url.as_str(), Trigger);
    // Roles belong to the server: remove it before anything can fail.
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .expect("drop the role");
    let (ok, text) = replication;
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot set up replication capture")
            && text.contains("REPLICATION attribute")
            && text.contains("--mode trigger"),
        "{text}"
    );
    let (ok, text) = trigger;
    assert!(ok && text.contains("capture mode trigger"), "{text}");
}
