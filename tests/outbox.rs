//! The outbox writes a batch's events and deliveries once, however often
//! it is handed the batch (as after a crash, when the source hands out
//! again what the outbox had already committed).

mod common;

use common::TestDb;
use serde_json::json;
use walhook::change::{Action, Position, RowChange, TableRef};
use walhook::outbox::{Outbox, Written};
use walhook::source::{Ack, Batch};

fn insert_of_order(index: u32, id: i64) -> RowChange {
    let mut record = serde_json::Map::new();
    record.insert("id".into(), json!(id));
    RowChange {
        table: TableRef {
            relid: 1,
            schema: "public".into(),
            name: "orders".into(),
        },
        action: Action::Insert,
        record: Some(record),
        old_record: None,
        key: vec![json!(id)],
        actor: None,
        txid: 7,
        commit_lsn: Some(0x1000),
        // With the position, the commit time makes the event id.
        committed_at: chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("a time"),
        position: Position::Wal {
            commit_lsn: 0x1000,
            index,
        },
    }
}

fn batch(changes: Vec<RowChange>) -> Batch {
    Batch {
        changes,
        ack: Ack::ConfirmLsn(0x1000),
        watermarks: Vec::new(),
    }
}

fn written(events: u64, deliveries: u64) -> Written {
    Written { events, deliveries }
}

#[tokio::test]
async fn a_batch_written_again_lands_once_and_adds_only_what_is_new() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .execute(
            "SELECT walhook.subscribe('http://127.0.0.1:9/', ARRAY['orders.*'])",
            &[],
        )
        .await
        .expect("subscribe");
    let mut outbox = Outbox::connect(&db.url).await.expect("outbox");

    let first = batch(vec![insert_of_order(0, 1), insert_of_order(1, 2)]);
    assert_eq!(outbox.write(&first).await.expect("write"), written(2, 2));
    // Several times: the statements of a write are answered together, and
    // which failure surfaces first must not matter.
    for _ in 0..8 {
        assert_eq!(
            outbox.write(&first).await.expect("write again"),
            written(0, 0),
            "nothing is written twice"
        );
    }
    let overlapping = batch(vec![insert_of_order(1, 2), insert_of_order(2, 3)]);
    assert_eq!(
        outbox.write(&overlapping).await.expect("write overlapping"),
        written(1, 1),
        "what is new in a batch written before is added"
    );
    // And the connection is fine for the next batch.
    let next = batch(vec![insert_of_order(3, 4)]);
    assert_eq!(
        outbox.write(&next).await.expect("write next"),
        written(1, 1)
    );

    let counts = client
        .query_one(
            "SELECT (SELECT count(*) FROM walhook.events), (SELECT count(*) FROM walhook.deliveries)",
            &[],
        )
        .await
        .expect("counts");
    assert_eq!((counts.get::<_, i64>(0), counts.get::<_, i64>(1)), (4, 4));
}
