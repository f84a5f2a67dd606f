//! Confirmed positions: a restart resumes after the last confirmed change
//! and redelivers the rest with the same ids, a transaction larger than a
//! batch is confirmed only once complete, an idle or unwatched database
//! still moves the slot, and a graceful close confirms what was committed.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use walhook::change::{parse_lsn, RowChange};
use walhook::source::{Ack, Source};

use super::{
    collect, config, confirmed_flush, connect, drop_slot, finish, index, next_batch, record, setup,
    wait_until_released,
};

#[tokio::test]
async fn restart_resumes_after_the_confirmed_position_and_redelivers_the_rest() {
    let (db, client) = setup("CREATE TABLE t (id int PRIMARY KEY)", "public.t").await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO t VALUES (1), (2)")
        .await
        .expect("tx a");
    let confirmed = collect(&mut source, 2).await;

    client
        .batch_execute("INSERT INTO t VALUES (3), (4)")
        .await
        .expect("tx b");
    let mut unconfirmed = Vec::new();
    while unconfirmed.len() < 2 {
        // Read but never confirmed: as if the relay died before the outbox committed.
        unconfirmed.extend(next_batch(&mut source).await.changes);
    }
    source.close().await;

    let mut source = connect(&db, &config).await;
    let again = collect(&mut source, 2).await;
    let ids = |changes: &[RowChange]| changes.iter().map(RowChange::event_id).collect::<Vec<_>>();
    assert_eq!(
        ids(&again),
        ids(&unconfirmed),
        "redelivered with the same event ids"
    );
    assert_eq!(record(&again[0]), json!({"id": 3}));
    assert!(ids(&again).iter().all(|id| !ids(&confirmed).contains(id)));

    // Nothing else is pending: a new write is the next thing read.
    client
        .batch_execute("INSERT INTO t VALUES (5)")
        .await
        .expect("tx c");
    let next = collect(&mut source, 1).await;
    assert_eq!(record(&next[0]), json!({"id": 5}));
    finish(source, &client).await;
}

#[tokio::test]
async fn a_transaction_larger_than_a_batch_is_confirmed_only_when_complete() {
    let (db, client) = setup("CREATE TABLE big (id int PRIMARY KEY)", "public.big").await;
    let mut config = config(&db);
    config.batch_size = 10;
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO big VALUES (0)")
        .await
        .expect("small tx");
    let first = collect(&mut source, 1).await;
    let after_small = source.confirmed_lsn();
    client
        .batch_execute("INSERT INTO big SELECT generate_series(1, 35)")
        .await
        .expect("big tx");

    // The first batches hold part of the transaction: their ack must not
    // pass its commit.
    let batch = next_batch(&mut source).await;
    assert_eq!(batch.changes.len(), 10);
    let commit_lsn = batch.changes[0].commit_lsn.expect("commit LSN");
    let Ack::ConfirmLsn(lsn) = batch.ack else {
        panic!("a replication ack")
    };
    assert!(
        lsn < commit_lsn && lsn >= after_small,
        "partial batch acks {lsn:X}, commit at {commit_lsn:X}"
    );
    source.committed(&batch.ack).await.expect("confirm");
    source.close().await;
    assert!(first[0].commit_lsn < Some(commit_lsn));

    // Restarted, the whole transaction comes again, ids unchanged.
    let mut source = connect(&db, &config).await;
    let again = collect(&mut source, 35).await;
    assert_eq!(again[0].event_id(), batch.changes[0].event_id());
    assert_eq!(again[9].event_id(), batch.changes[9].event_id());
    assert_eq!(
        again.iter().map(index).collect::<Vec<_>>(),
        (0..35).collect::<Vec<_>>(),
        "indexes count through the transaction"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        confirmed_flush(&client, &config.slot).await > commit_lsn,
        "confirmed once complete"
    );
    finish(source, &client).await;
}

#[tokio::test]
async fn an_idle_or_unwatched_database_still_advances_the_slot() {
    let (db, client) = setup(
        "CREATE TABLE watched (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)",
        "public.watched",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    let start = confirmed_flush(&client, &config.slot).await;
    client
        .batch_execute("INSERT INTO other SELECT generate_series(1, 1000)")
        .await
        .expect("unwatched writes");
    let now_text: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    let now = parse_lsn(&now_text).expect("lsn");

    // Nothing to capture: next_batch only handles keepalives and heartbeats.
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        stopper.cancel();
    });
    let batch = source.next_batch(&shutdown).await.expect("no error");
    assert!(batch.is_none(), "unwatched changes produce nothing");
    let advanced = confirmed_flush(&client, &config.slot).await;
    assert!(
        advanced > start && advanced >= now,
        "slot moved from {start:X} past {now:X}: {advanced:X}"
    );
    finish(source, &client).await;
}

#[tokio::test]
async fn a_graceful_close_confirms_everything_committed_at_once() {
    let (db, client) = setup(
        "CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE outbox_like (id int)",
        "public.t",
    )
    .await;
    let config = config(&db);
    let mut source = connect(&db, &config).await;
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect("insert");
    let batch = next_batch(&mut source).await;
    let Ack::ConfirmLsn(lsn) = batch.ack else {
        panic!("a replication ack")
    };
    // Like the outbox: an asynchronous commit whose WAL is not flushed yet
    // when the confirm is handed over, so the confirm has to wait for it.
    client
        .batch_execute(
            "SET synchronous_commit = off; INSERT INTO outbox_like SELECT generate_series(1, 1000)",
        )
        .await
        .expect("asynchronous commit");
    source.committed(&batch.ack).await.expect("confirm");
    source.close().await;
    // The server reads the last status update when it gets to it: once
    // the slot is free, the session's every word has been taken.
    wait_until_released(&client, &config.slot).await;
    assert!(
        confirmed_flush(&client, &config.slot).await >= lsn,
        "closing flushes and confirms instead of dropping what waits"
    );
    drop_slot(&client, &config.slot).await;
}
