//! Setup order does not matter: every change to a watched table committed
//! after `walhook migrate` and `walhook.watch` returned is delivered,
//! whatever the order of migrate, watch, subscribe and run, in both capture
//! modes, also when `migrate` runs twice or `run` uses the other mode.
//!
//! A subscription gets the changes the relay routes while it is active:
//! changes written before it exists, while no relay runs, are routed when
//! the relay starts and so are delivered to it; changes a relay routed
//! before it existed are not.
//!
//! Each scenario prints its figures (changes written, expected, delivered,
//! lost, duplicated); `cargo nextest run --test setup_order --no-capture`
//! shows them.
//!
//! The scenario driver (steps, figures, the checks every scenario ends
//! with) is in `setup_order/scenario.rs`; scenarios that run `migrate`
//! twice or switch modes, and what `watch` and `migrate` say when capture
//! cannot work yet, are in `setup_order/migrate.rs`.

mod common;
#[path = "setup_order/migrate.rs"]
mod migrate;
#[path = "setup_order/scenario.rs"]
mod scenario;

use std::time::Duration;

use common::{slot_for, Receiver};
use walhook::config::CaptureMode;
use CaptureMode::{Replication, Trigger};

use scenario::Step::*;
use scenario::{
    received_changes, scenario, slot_exists, subscribe, Scenario, DELIVERY_TIMEOUT, ROWS_PER_STEP,
};

// The README's quick start: migrate, watch, subscribe, rows, then run.

#[tokio::test]
async fn quick_start_order_replication() {
    quick_start_order(Replication, "quick start, replication").await;
}

#[tokio::test]
async fn quick_start_order_trigger() {
    quick_start_order(Trigger, "quick start, trigger").await;
}

async fn quick_start_order(mode: CaptureMode, name: &'static str) {
    let mut scenario = scenario(name, &[Migrate(mode), Watch, Subscribe, Rows, Run(mode)]).await;
    if mode == Replication {
        assert!(
            slot_exists(&scenario.client, &slot_for(&scenario.db.url)).await,
            "migrate created the slot"
        );
    }
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
}

// Subscribe first, rows written before the table is watched (not
// captured), then watch.

#[tokio::test]
async fn subscribe_before_watch_replication() {
    let steps = [
        Migrate(Replication),
        Subscribe,
        Rows,
        Watch,
        Rows,
        Run(Replication),
    ];
    scenario("subscribe before watch, replication", &steps)
        .await
        .finish()
        .await;
}

#[tokio::test]
async fn subscribe_before_watch_trigger() {
    let steps = [Migrate(Trigger), Subscribe, Rows, Watch, Rows, Run(Trigger)];
    scenario("subscribe before watch, trigger", &steps)
        .await
        .finish()
        .await;
}

// Rows written before the subscription exists, while no relay runs: the
// relay routes them when it starts, to the subscription then active.

#[tokio::test]
async fn rows_before_subscribe_replication() {
    let steps = [
        Migrate(Replication),
        Watch,
        Rows,
        Subscribe,
        Rows,
        Run(Replication),
    ];
    let figures = scenario("rows before subscribe, replication", &steps)
        .await
        .finish()
        .await;
    assert_eq!(figures.expected, 6 * ROWS_PER_STEP as usize);
}

#[tokio::test]
async fn rows_before_subscribe_trigger() {
    let steps = [Migrate(Trigger), Watch, Rows, Subscribe, Rows, Run(Trigger)];
    let figures = scenario("rows before subscribe, trigger", &steps)
        .await
        .finish()
        .await;
    assert_eq!(figures.expected, 6 * ROWS_PER_STEP as usize);
}

// The relay first, then watch and subscribe.

#[tokio::test]
async fn run_before_watch_replication() {
    let steps = [
        Migrate(Replication),
        Run(Replication),
        Subscribe,
        Watch,
        Rows,
    ];
    scenario("run before watch, replication", &steps)
        .await
        .finish()
        .await;
}

#[tokio::test]
async fn run_before_watch_trigger() {
    let steps = [Migrate(Trigger), Run(Trigger), Subscribe, Watch, Rows];
    scenario("run before watch, trigger", &steps)
        .await
        .finish()
        .await;
}

// A subscription gets what the relay routes while it is active, not what
// was routed before it existed.

#[tokio::test]
async fn subscription_gets_changes_routed_while_it_is_active_replication() {
    routed_while_active(Replication).await;
}

#[tokio::test]
async fn subscription_gets_changes_routed_while_it_is_active_trigger() {
    routed_while_active(Trigger).await;
}

async fn routed_while_active(mode: CaptureMode) {
    let name = match mode {
        Replication => "routed while active, replication",
        Trigger => "routed while active, trigger",
    };
    let mut scenario = Scenario::new(name).await;
    for step in [Migrate(mode), Watch, Subscribe, Run(mode), Rows] {
        scenario.step(step).await;
    }
    let before = scenario.expected.len();
    let got = scenario.receiver.wait_for(before, DELIVERY_TIMEOUT).await;
    assert!(
        got.len() >= before,
        "the first subscription got the first rows"
    );
    let late = Receiver::ok().await;
    subscribe(&scenario.client, &late.url).await;
    let first_late_row = scenario.next_id;
    scenario.step(Rows).await;
    let want = 2 * ROWS_PER_STEP as usize;
    let got = late.wait_for(want, DELIVERY_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late_changes = received_changes(&late);
    assert_eq!(
        late_changes.len(),
        want,
        "{name}: the late subscription got {}",
        got.len()
    );
    assert!(
        late_changes.iter().all(|(id, _)| *id >= first_late_row),
        "{name}: the late subscription got changes routed before it existed"
    );
    scenario.finish().await;
}
