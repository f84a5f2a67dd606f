//! Capture set up the way `walhook migrate` leaves it, and the watched
//! table most capture tests start from.

use tokio_postgres::Client;
use walhook::config::CaptureMode;

use super::{test_config, TestDb};

/// Makes the database ready to capture in `mode` the way `walhook migrate`
/// does: for replication, the publication and this database's slot exist
/// before the test writes anything.
pub async fn prepare_capture(url: &str, mode: CaptureMode) {
    if mode == CaptureMode::Replication {
        let config = test_config(url, mode);
        walhook::source::replication::prepare(url, &config.capture)
            .await
            .expect("slot and publication");
    }
}

/// The scenario most capture tests start from: capture in `mode` set up,
/// a watched table `orders (id int PRIMARY KEY, status text NOT NULL)`
/// and one subscription of `receiver_url` to `orders.*`.
pub async fn watched_orders(client: &Client, url: &str, mode: CaptureMode, receiver_url: &str) {
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
        .await
        .expect("mode");
    prepare_capture(url, mode).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text NOT NULL);
             SELECT walhook.watch('orders');",
        )
        .await
        .expect("table");
    client
        .execute(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'])",
            &[&receiver_url],
        )
        .await
        .expect("subscribe");
}

/// A client of `db` with capture in `mode` recorded and set up, after
/// running `tables` (SQL that creates the tables and watches them).
pub async fn capturing(db: &TestDb, mode: CaptureMode, tables: &str) -> Client {
    let client = db.client().await;
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
        .await
        .expect("mode");
    prepare_capture(&db.url, mode).await;
    client.batch_execute(tables).await.expect("tables");
    client
}
