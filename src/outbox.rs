//! The outbox: a batch's events and deliveries written in one transaction.
//!
//! The transaction also runs the source's consume step, if its batch
//! carries one ([`Ack::Consume`]: trigger capture deletes its capture rows
//! in it), and only after it commits is the source told it may let go.
//! Event ids are derived from the change's position, so a batch written
//! twice after a crash lands once.
//!
//! Its commits do not wait for the WAL flush: deliverers see new rows at
//! once, and a commit lost to a Postgres crash takes its consumption of
//! the capture with it (the capture rows come back, or the slot was never
//! confirmed past it, see `source::replication`), so the same events are
//! written again under the same ids.

use thiserror::Error;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tracing::debug;

use crate::change::{format_lsn, RowChange};
use crate::db::Statements;
use crate::route::{Routed, Router, ShapedInsert};
use crate::source::{Ack, Batch, Consume};

/// Why a batch could not be written.
#[derive(Debug, Error)]
pub enum OutboxError {
    /// The database refused or the connection broke; nothing was written.
    #[error("writing the outbox failed: {0}")]
    Db(#[from] tokio_postgres::Error),
}

/// What one write stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Events inserted (not those a repeated batch already had).
    pub events: u64,
    /// Deliveries inserted, one per event and matching subscription.
    pub deliveries: u64,
}

/// Writes batches through one connection of its own.
pub struct Outbox {
    client: Client,
    statements: Statements,
    router: Router,
}

impl Outbox {
    /// Connects with asynchronous commits (see the module comment).
    pub async fn connect(url: &str) -> Result<Outbox, crate::db::DbError> {
        let client = crate::db::connect(url, "outbox").await?;
        client
            .batch_execute("SET synchronous_commit = off")
            .await
            .map_err(crate::db::DbError::Connect)?;
        Ok(Outbox {
            client,
            statements: Statements::default(),
            router: Router::default(),
        })
    }

    /// Whether its connection has closed (it then cannot write again).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Routes the batch and writes it in one transaction, together with its
    /// consume step when the ack carries one.
    ///
    /// A batch is first written with plain inserts. Only a batch written
    /// before (captured again after a crash or a change of leader) runs
    /// into an existing event id; its transaction is then rolled back and
    /// the batch written again with inserts that skip what exists. An
    /// `ON CONFLICT` insert costs every row an extra index probe and WAL
    /// record, which only that rare batch needs.
    pub async fn write(&mut self, batch: &Batch) -> Result<Written, OutboxError> {
        match self.write_with(batch, Inserts::Plain).await {
            Err(OutboxError::Db(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                debug!("the batch was written before; writing what is missing");
                self.write_with(batch, Inserts::SkippingExisting).await
            }
            result => result,
        }
    }

    async fn write_with(
        &mut self,
        batch: &Batch,
        inserts: Inserts,
    ) -> Result<Written, OutboxError> {
        let statements = &mut self.statements;
        let tx = self.client.transaction().await?;
        self.router.refresh(&tx).await?;
        let routed = self.router.route_in(&tx, &batch.changes, None).await?;
        let (insert_events, insert_deliveries, insert_shaped) = match inserts {
            Inserts::Plain => (INSERT_EVENTS, INSERT_DELIVERIES, ShapedInsert::Plain),
            Inserts::SkippingExisting => (
                INSERT_NEW_EVENTS,
                INSERT_NEW_DELIVERIES,
                ShapedInsert::SkippingExisting,
            ),
        };
        let prepared = Prepared {
            insert_events: statements.get(&tx, insert_events).await?,
            insert_deliveries: statements.get(&tx, insert_deliveries).await?,
            insert_shaped: statements.get(&tx, insert_shaped.sql()).await?,
            notify: statements.get(&tx, NOTIFY).await?,
        };
        let consume_step = match &batch.ack {
            Ack::Consume(Consume { statement, keys }) => {
                Some((statements.get(&tx, statement).await?, keys))
            }
            _ => None,
        };
        // The statements are sent together and answered in order: one round
        // trip for the batch.
        let consume = async {
            match &consume_step {
                Some((statement, keys)) => tx.execute(statement, &[keys]).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let notify = async {
            // Wakes relays in other processes; this one is woken directly.
            if !routed.has_deliveries() {
                Ok(())
            } else {
                tx.execute(&prepared.notify, &[]).await.map(|_| ())
            }
        };
        // Joined without short-circuiting: after a failed statement the
        // later ones fail as "transaction aborted", and the first failure
        // in statement order is the one that says what went wrong (and
        // whether the batch was written before).
        let (written, consumed, notified) =
            tokio::join!(insert_routed(&tx, &prepared, &routed), consume, notify);
        let written = written?;
        consumed?;
        notified?;
        tx.commit().await?;
        Ok(written)
    }
}

impl Outbox {
    /// Writes a backfill's read events in one transaction with `progress`,
    /// a statement that records how far the backfill got: routed by the
    /// subscriptions' patterns, or all to `only`. When `progress` updates no
    /// row (the backfill was cancelled meanwhile) nothing is written and
    /// `None` returned.
    ///
    /// Their deliveries are due [`READ_DELAY_MS`] later than a live change's,
    /// so live changes captured meanwhile are claimed first.
    pub async fn write_reads(
        &mut self,
        changes: &[RowChange],
        only: Option<i64>,
        progress: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Written>, OutboxError> {
        let statements = &mut self.statements;
        let tx = self.client.transaction().await?;
        if tx.execute(progress, params).await? == 0 {
            return Ok(None);
        }
        self.router.refresh(&tx).await?;
        let routed = self.router.route_in(&tx, changes, only).await?;
        let prepared = Prepared {
            insert_events: statements.get(&tx, INSERT_NEW_EVENTS).await?,
            insert_deliveries: statements.get(&tx, INSERT_READ_DELIVERIES).await?,
            insert_shaped: statements.get(&tx, ShapedInsert::Reads.sql()).await?,
            notify: statements.get(&tx, NOTIFY).await?,
        };
        let written = insert_routed(&tx, &prepared, &routed).await?;
        if written.deliveries > 0 {
            tx.execute(&prepared.notify, &[]).await?;
        }
        tx.commit().await?;
        Ok(Some(written))
    }
}

/// How much later than a live change a backfill's read is due.
pub const READ_DELAY_MS: i32 = 250;

const NOTIFY: &str = "SELECT pg_notify('walhook_deliveries', '')";

/// How a batch's rows are inserted.
#[derive(Debug, Clone, Copy)]
enum Inserts {
    /// Plain inserts: an existing event id fails the transaction.
    Plain,
    /// Inserts that skip events and deliveries already there.
    SkippingExisting,
}

// Each insert in two forms: plain, and skipping rows already there.
macro_rules! insert_events {
    () => {
        "
INSERT INTO walhook.events (id, type, payload, row_key, txid, commit_lsn)
SELECT id, type, payload::json, row_key, txid, lsn::pg_lsn
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::text[])
     AS t(id, type, payload, row_key, txid, lsn)"
    };
}

// Identity values follow the ORDER BY, so a row's deliveries are numbered
// in commit order: the delivery side orders by id. The subscriptions are
// locked against deletion until the transaction ends, so none is deleted
// (with its deliveries) between this insert and its commit.
macro_rules! insert_deliveries {
    () => {
        "
WITH live AS (
    SELECT id FROM walhook.subscriptions WHERE id = ANY($2::int8[]) FOR KEY SHARE
)
INSERT INTO walhook.deliveries (event_id, subscription_id, row_key)
SELECT t.event_id, t.subscription_id, t.row_key
FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY
     AS t(event_id, subscription_id, row_key, n)
JOIN live s ON s.id = t.subscription_id
ORDER BY t.n"
    };
}

// A backfill's reads: claimed after live changes (priority 1), due a
// little later (the delay matches READ_DELAY_MS), and written again
// harmlessly.
const INSERT_READ_DELIVERIES: &str = "
WITH live AS (
    SELECT id FROM walhook.subscriptions WHERE id = ANY($2::int8[]) FOR KEY SHARE
)
INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, next_attempt_at, priority)
SELECT t.event_id, t.subscription_id, t.row_key, now() + interval '250 milliseconds', 1
FROM unnest($1::text[], $2::int8[], $3::text[]) WITH ORDINALITY
     AS t(event_id, subscription_id, row_key, n)
JOIN live s ON s.id = t.subscription_id
ORDER BY t.n
ON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING";

/// How a batch's events are stored ($1 ids, $2 types, $3 payloads, $4 row
/// keys, $5 transaction ids, $6 commit LSNs); public so the benchmark's
/// durable-limit reference runs the statement walhook runs.
pub const INSERT_EVENTS: &str = insert_events!();
const INSERT_NEW_EVENTS: &str = concat!(insert_events!(), "\nON CONFLICT (id) DO NOTHING");
/// How a batch's deliveries are stored ($1 event ids, $2 subscription
/// ids, $3 row keys); public for the same reason.
pub const INSERT_DELIVERIES: &str = insert_deliveries!();
const INSERT_NEW_DELIVERIES: &str = concat!(
    insert_deliveries!(),
    "\nON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING"
);

/// The outbox's statements, prepared on its connection.
struct Prepared {
    insert_events: Statement,
    insert_deliveries: Statement,
    /// Deliveries shaped by their subscription's options.
    insert_shaped: Statement,
    notify: Statement,
}

async fn insert_routed(
    tx: &tokio_postgres::Transaction<'_>,
    prepared: &Prepared,
    routed: &Routed,
) -> Result<Written, tokio_postgres::Error> {
    if routed.events.is_empty() {
        return Ok(Written::default());
    }
    let ids: Vec<&str> = routed.events.iter().map(|e| e.id.as_str()).collect();
    let types: Vec<&str> = routed
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    let payloads: Vec<&str> = routed.events.iter().map(|e| e.payload.as_str()).collect();
    let row_keys: Vec<&str> = routed.events.iter().map(|e| e.row_key.as_str()).collect();
    let txids: Vec<i64> = routed.events.iter().map(|e| i64::from(e.txid)).collect();
    let lsns: Vec<Option<String>> = routed
        .events
        .iter()
        .map(|e| e.commit_lsn.map(format_lsn))
        .collect();
    let event_params: [&(dyn ToSql + Sync); 6] =
        [&ids, &types, &payloads, &row_keys, &txids, &lsns];
    let events = tx.execute(&prepared.insert_events, &event_params);
    let shaped = crate::route::insert_shaped(tx, &prepared.insert_shaped, routed);
    if routed.deliveries.is_empty() {
        let (events, shaped) = tokio::join!(events, shaped);
        return Ok(Written {
            events: events?,
            deliveries: shaped?,
        });
    }
    let event_ids: Vec<&str> = routed
        .deliveries
        .iter()
        .map(|(i, _)| routed.events[*i].id.as_str())
        .collect();
    let subscription_ids: Vec<i64> = routed.deliveries.iter().map(|(_, s)| *s).collect();
    let delivery_keys: Vec<&str> = routed
        .deliveries
        .iter()
        .map(|(i, _)| routed.events[*i].row_key.as_str())
        .collect();
    let delivery_params: [&(dyn ToSql + Sync); 3] = [&event_ids, &subscription_ids, &delivery_keys];
    let deliveries = tx.execute(&prepared.insert_deliveries, &delivery_params);
    // In statement order, as in `Outbox::write_with`.
    let (events, deliveries, shaped) = tokio::join!(events, deliveries, shaped);
    Ok(Written {
        events: events?,
        deliveries: deliveries? + shaped?,
    })
}
