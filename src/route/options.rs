//! Routing for subscriptions with options (filter, body, order_key,
//! columns, when_changed).
//!
//! Postgres decides: per subscription and table, one statement over the
//! batch's events as a `jsonb[]` (made by `walhook.subscription_statement`,
//! prepared once per connection) returns the events the subscription gets,
//! with their order key and body. A filter is evaluated on typed rows, so
//! every operator, function and type works as in SQL, and both capture
//! modes agree because both store rows as the same JSON. The statements of
//! a batch go out together, in one round trip.
//!
//! Options that fail (a filter naming a column since dropped) disable
//! their subscription with the reason, in the same transaction, and the
//! batch is routed again without it: nothing else stops.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use futures_util::future::join_all;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::{GenericClient, Statement};
use tracing::warn;

use super::{Routed, Router, Shaped};
use crate::change::RowChange;

const SAVEPOINT: &str = "SAVEPOINT walhook_options";
const RELEASE: &str = "RELEASE SAVEPOINT walhook_options";
const UNDO: &str = "ROLLBACK TO SAVEPOINT walhook_options; RELEASE SAVEPOINT walhook_options";

/// The statement of one subscription's options on one table, and the
/// table as it was when the statement was made.
#[derive(Debug)]
pub(super) struct Cached {
    /// `None`: the subscription has no options (any more).
    statement: Option<Statement>,
    schema: String,
    name: String,
    /// The row's columns, when a change with a full row was at hand.
    columns: Option<Vec<String>>,
    /// The [`Router::route_in`] call that made it.
    made_in: u64,
}

impl Cached {
    /// A statement made for the table by another name, or for other
    /// columns (it reads rows by their columns' types), is made again.
    fn fits(&self, change: &RowChange) -> bool {
        self.schema == change.table.schema
            && self.name == change.table.name
            && match (&self.columns, columns_of(change)) {
                (Some(made_for), Some(now)) => *made_for == now,
                _ => true,
            }
    }
}

fn columns_of(change: &RowChange) -> Option<Vec<String>> {
    change
        .record
        .as_ref()
        .map(|row| row.keys().cloned().collect())
}

/// How shaped deliveries are inserted, matching the outbox's inserts.
#[derive(Debug, Clone, Copy)]
pub enum ShapedInsert {
    /// Plain inserts: an existing delivery fails the transaction.
    Plain,
    /// Deliveries already there are skipped.
    SkippingExisting,
    /// A backfill's reads: a little later than live changes, and written
    /// again harmlessly.
    Reads,
}

impl ShapedInsert {
    /// The statement, to prepare once per connection.
    pub fn sql(self) -> &'static str {
        match self {
            ShapedInsert::Plain => INSERT_SHAPED,
            ShapedInsert::SkippingExisting => INSERT_NEW_SHAPED,
            ShapedInsert::Reads => INSERT_READ_SHAPED,
        }
    }
}

// As the outbox's delivery inserts (see there), with each delivery's
// order key and body; a backfill's reads at priority 1 (claimed after live
// changes).
macro_rules! insert_shaped {
    ($due:literal, $priority:literal) => {
        concat!(
            "
WITH live AS (
    SELECT id FROM walhook.subscriptions WHERE id = ANY($2::int8[]) FOR KEY SHARE
)
INSERT INTO walhook.deliveries (event_id, subscription_id, row_key, body, next_attempt_at, priority)
SELECT t.event_id, t.subscription_id, t.row_key, t.body, ",
            $due,
            ", ",
            $priority,
            "
FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[]) WITH ORDINALITY
     AS t(event_id, subscription_id, row_key, body, n)
JOIN live s ON s.id = t.subscription_id
ORDER BY t.n"
        )
    };
}

const INSERT_SHAPED: &str = insert_shaped!("now()", "0");
const INSERT_NEW_SHAPED: &str = concat!(
    insert_shaped!("now()", "0"),
    "\nON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING"
);
// The delay is crate::outbox::READ_DELAY_MS.
const INSERT_READ_SHAPED: &str = concat!(
    insert_shaped!("now() + interval '250 milliseconds'", "1"),
    "\nON CONFLICT ON CONSTRAINT delivery_once_per_event_and_subscription DO NOTHING"
);

/// Inserts `routed`'s shaped deliveries with `statement` (prepared from
/// [`ShapedInsert::sql`]); nothing is sent when there are none.
pub async fn insert_shaped<C: GenericClient>(
    client: &C,
    statement: &Statement,
    routed: &Routed,
) -> Result<u64, tokio_postgres::Error> {
    if routed.shaped.is_empty() {
        return Ok(0);
    }
    let event_ids: Vec<&str> = routed
        .shaped
        .iter()
        .map(|d| routed.events[d.event].id.as_str())
        .collect();
    let subscription_ids: Vec<i64> = routed.shaped.iter().map(|d| d.subscription_id).collect();
    let row_keys: Vec<&str> = routed
        .shaped
        .iter()
        .map(|d| {
            d.row_key
                .as_deref()
                .unwrap_or(routed.events[d.event].row_key.as_str())
        })
        .collect();
    let bodies: Vec<Option<&str>> = routed.shaped.iter().map(|d| d.body.as_deref()).collect();
    client
        .execute(
            statement,
            &[&event_ids, &subscription_ids, &row_keys, &bodies],
        )
        .await
}

/// An event's JSON text sent as `jsonb`, without parsing it here.
#[derive(Debug)]
struct Jsonb<'a>(&'a str);

impl ToSql for Jsonb<'_> {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        // jsonb's binary form: a version byte, then the text.
        out.put_u8(1);
        out.extend_from_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// One subscription's changes of one table in a batch.
#[derive(Debug)]
struct Group {
    subscription_id: i64,
    relid: u32,
    /// Indexes into the batch, in commit order.
    events: Vec<usize>,
}

impl Group {
    fn key(&self) -> (i64, u32) {
        (self.subscription_id, self.relid)
    }
}

/// Why shaping a batch stopped.
#[derive(Debug)]
enum Failure {
    /// A subscription's options failed on a table.
    Options {
        subscription_id: i64,
        relid: u32,
        table: String,
        error: tokio_postgres::Error,
    },
    /// The database or the connection failed: the batch is retried.
    Db(tokio_postgres::Error),
}

impl Router {
    /// Routes a batch in the outbox transaction `client`: by pattern, and
    /// for subscriptions with options, by what Postgres makes of them. With
    /// `only`, every change goes to that subscription alone (a backfill for
    /// one subscription). Costs nothing more than [`Router::route`] when no
    /// change matches a subscription with options.
    pub async fn route_in<C: GenericClient + Sync>(
        &mut self,
        client: &C,
        changes: &[RowChange],
        only: Option<i64>,
    ) -> Result<Routed, tokio_postgres::Error> {
        self.calls += 1;
        let mut failed = HashSet::new();
        loop {
            let (mut routed, mut candidates) = self.split(changes, only);
            candidates.retain(|(_, subscription_id)| !failed.contains(subscription_id));
            if candidates.is_empty() {
                return Ok(routed);
            }
            match self.shape(client, changes, &routed, &candidates).await {
                Ok(shaped) => {
                    routed.shaped = shaped;
                    return Ok(routed);
                }
                Err(Failure::Db(error)) => return Err(error),
                Err(Failure::Options {
                    subscription_id,
                    relid,
                    table,
                    error,
                }) => {
                    // A statement made before its table was renamed or
                    // dropped fails as if its options did: made again, once.
                    let key = (subscription_id, relid);
                    if self
                        .statements
                        .get(&key)
                        .is_some_and(|c| c.made_in < self.calls)
                    {
                        self.statements.remove(&key);
                        continue;
                    }
                    disable(client, subscription_id, &table, &error).await?;
                    failed.insert(subscription_id);
                    self.refresh(client).await?;
                }
            }
        }
    }

    /// The candidates' deliveries as their options make them, in commit
    /// order. Runs under a savepoint, so a failed statement leaves the
    /// transaction usable.
    async fn shape<C: GenericClient + Sync>(
        &mut self,
        client: &C,
        changes: &[RowChange],
        routed: &Routed,
        candidates: &[(usize, i64)],
    ) -> Result<Vec<Shaped>, Failure> {
        let groups = group(changes, candidates);
        let result = self.run_groups(client, changes, routed, &groups).await;
        let decided = match result {
            Ok(decided) => decided,
            Err(failure) => {
                if let Err(error) = client.batch_execute(UNDO).await {
                    return Err(Failure::Db(error));
                }
                return Err(failure);
            }
        };
        Ok(candidates
            .iter()
            .filter_map(|&(event, subscription_id)| {
                decided
                    .get(&(event, subscription_id))
                    .map(|(row_key, body)| Shaped {
                        event,
                        subscription_id,
                        row_key: row_key.clone(),
                        body: body.clone(),
                    })
            })
            .collect())
    }

    /// Makes the statements missing (two round trips, only then), runs them
    /// all (one round trip): `(event, subscription)` → `(row key, body)`
    /// for each event sent.
    async fn run_groups<C: GenericClient + Sync>(
        &mut self,
        client: &C,
        changes: &[RowChange],
        routed: &Routed,
        groups: &[Group],
    ) -> Result<HashMap<(usize, i64), Decision>, Failure> {
        let stale: Vec<&Group> = groups
            .iter()
            .filter(|g| {
                let first = &changes[g.events[0]];
                !self.statements.get(&g.key()).is_some_and(|c| c.fits(first))
            })
            .collect();
        let mut savepoint_sent = false;
        if !stale.is_empty() {
            let texts = join_all(stale.iter().map(|g| async move {
                client
                    .query_one(
                        "SELECT walhook.subscription_statement($1, $2)",
                        &[&g.subscription_id, &g.relid],
                    )
                    .await
                    .map(|row| row.get::<_, Option<String>>(0))
            }));
            let (savepoint, texts) = tokio::join!(client.batch_execute(SAVEPOINT), texts);
            savepoint.map_err(Failure::Db)?;
            savepoint_sent = true;
            let texts = first_failure(&stale, changes, texts)?;
            let prepared = join_all(stale.iter().zip(&texts).map(|(_, text)| async move {
                match text {
                    Some(text) => client.prepare(text).await.map(Some),
                    None => Ok(None),
                }
            }))
            .await;
            let prepared = first_failure(&stale, changes, prepared)?;
            for (g, statement) in stale.iter().zip(prepared) {
                let change = &changes[g.events[0]];
                let columns = g.events.iter().find_map(|&i| columns_of(&changes[i]));
                self.statements.insert(
                    g.key(),
                    Cached {
                        statement,
                        schema: change.table.schema.clone(),
                        name: change.table.name.clone(),
                        columns,
                        made_in: self.calls,
                    },
                );
            }
        }
        let statements: Vec<Option<Statement>> = groups
            .iter()
            .map(|g| {
                self.statements
                    .get(&g.key())
                    .and_then(|c| c.statement.clone())
            })
            .collect();
        let runs = join_all(
            groups
                .iter()
                .zip(&statements)
                .map(|(g, statement)| async move {
                    let Some(statement) = statement else {
                        return Ok(None);
                    };
                    let payloads: Vec<Jsonb> = g
                        .events
                        .iter()
                        .map(|&i| Jsonb(routed.events[i].payload.as_str()))
                        .collect();
                    client.query(statement, &[&payloads]).await.map(Some)
                }),
        );
        let (savepoint, runs, release) = if savepoint_sent {
            let (runs, release) = tokio::join!(runs, client.batch_execute(RELEASE));
            (Ok(()), runs, release)
        } else {
            tokio::join!(
                client.batch_execute(SAVEPOINT),
                runs,
                client.batch_execute(RELEASE)
            )
        };
        savepoint.map_err(Failure::Db)?;
        let group_refs: Vec<&Group> = groups.iter().collect();
        let runs = first_failure(&group_refs, changes, runs)?;
        release.map_err(Failure::Db)?;
        let mut decided = HashMap::new();
        for (g, rows) in groups.iter().zip(runs) {
            let Some(rows) = rows else {
                // No options after all: every change, as it is.
                for &event in &g.events {
                    decided.insert((event, g.subscription_id), (None, None));
                }
                continue;
            };
            for row in rows {
                let n: i64 = row.get("n");
                let Some(&event) = usize::try_from(n - 1).ok().and_then(|i| g.events.get(i)) else {
                    continue;
                };
                decided.insert(
                    (event, g.subscription_id),
                    (row.get("row_key"), row.get("body")),
                );
            }
        }
        Ok(decided)
    }
}

/// An event's order key and body as options made them (`None`: the
/// event's own).
type Decision = (Option<String>, Option<String>);

/// The candidates by subscription and table, in commit order.
fn group(changes: &[RowChange], candidates: &[(usize, i64)]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut at: HashMap<(i64, u32), usize> = HashMap::new();
    for &(event, subscription_id) in candidates {
        let relid = changes[event].table.relid;
        let index = *at.entry((subscription_id, relid)).or_insert_with(|| {
            groups.push(Group {
                subscription_id,
                relid,
                events: Vec::new(),
            });
            groups.len() - 1
        });
        groups[index].events.push(event);
    }
    groups
}

/// The results in order, or the first failure in statement order (the
/// statements after it fail only because the transaction is aborted),
/// attributed to its subscription unless waiting could cure it.
fn first_failure<T>(
    groups: &[&Group],
    changes: &[RowChange],
    results: Vec<Result<T, tokio_postgres::Error>>,
) -> Result<Vec<T>, Failure> {
    let mut values = Vec::with_capacity(results.len());
    for (g, result) in groups.iter().zip(results) {
        match result {
            Ok(value) => values.push(value),
            Err(error) if is_transient(&error) => return Err(Failure::Db(error)),
            Err(error) => {
                let table = &changes[g.events[0]].table;
                return Err(Failure::Options {
                    subscription_id: g.subscription_id,
                    relid: g.relid,
                    table: format!(
                        "{}.{}",
                        crate::event_type::quote_part(&table.schema),
                        crate::event_type::quote_part(&table.name)
                    ),
                    error,
                });
            }
        }
    }
    Ok(values)
}

/// Errors that say nothing about the options: the connection, the server,
/// locks, resources.
fn is_transient(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => matches!(
            code.code().get(..2),
            Some("08" | "25" | "40" | "53" | "55" | "57" | "58" | "XX")
        ),
    }
}

/// At most this much of Postgres's message goes into the reason.
const REASON_MESSAGE_CHARS: usize = 400;

/// Disables the subscription, in the outbox transaction, with a reason
/// that says what failed and how to put it right.
async fn disable<C: GenericClient>(
    client: &C,
    subscription_id: i64,
    table: &str,
    error: &tokio_postgres::Error,
) -> Result<(), tokio_postgres::Error> {
    let message: String = error
        .as_db_error()
        .map_or_else(|| error.to_string(), |db| db.message().to_owned())
        .chars()
        .take(REASON_MESSAGE_CHARS)
        .collect();
    let reason = disabled_reason(subscription_id, table, &message);
    warn!(
        subscription_id,
        table,
        error = message,
        "subscription disabled: its options failed on the table"
    );
    client
        .execute(
            "UPDATE walhook.subscriptions SET active = false, disabled_reason = $2 WHERE id = $1",
            &[&subscription_id, &reason],
        )
        .await
        .map(|_| ())
}

fn disabled_reason(subscription_id: i64, table: &str, message: &str) -> String {
    format!(
        "its options failed on {table}: {message}; fix them with \
         walhook.alter_subscription({subscription_id}, ...), then walhook.resume({subscription_id})"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Action, Position, TableRef};

    fn change(relid: u32, columns: &[&str]) -> RowChange {
        RowChange {
            table: TableRef {
                relid,
                schema: "public".into(),
                name: format!("t{relid}"),
            },
            action: Action::Insert,
            record: Some(
                columns
                    .iter()
                    .map(|c| ((*c).to_owned(), serde_json::Value::Null))
                    .collect(),
            ),
            old_record: None,
            key: Vec::new(),
            actor: None,
            txid: 1,
            commit_lsn: None,
            committed_at: chrono::DateTime::default(),
            position: Position::Capture { id: 1, index: 0 },
        }
    }

    #[test]
    fn candidates_group_by_subscription_and_table_in_commit_order() {
        let changes = [change(1, &["id"]), change(2, &["id"]), change(1, &["id"])];
        let groups = group(&changes, &[(0, 7), (0, 8), (1, 7), (2, 7), (2, 8)]);
        let shape: Vec<(i64, u32, Vec<usize>)> = groups
            .iter()
            .map(|g| (g.subscription_id, g.relid, g.events.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![(7, 1, vec![0, 2]), (8, 1, vec![0, 2]), (7, 2, vec![1])]
        );
    }

    #[test]
    fn a_statement_is_made_again_for_a_renamed_table_or_other_columns() {
        let cached = Cached {
            statement: None,
            schema: "public".into(),
            name: "t1".into(),
            columns: Some(vec!["id".into(), "status".into()]),
            made_in: 1,
        };
        assert!(cached.fits(&change(1, &["id", "status"])));
        assert!(!cached.fits(&change(1, &["id", "status", "added"])));
        let mut renamed = change(1, &["id", "status"]);
        renamed.table.name = "t1_renamed".into();
        assert!(!cached.fits(&renamed));
        let mut deleted = change(1, &[]);
        deleted.record = None;
        assert!(cached.fits(&deleted));
    }

    #[test]
    fn a_reason_says_what_failed_and_how_to_recover() {
        let reason = disabled_reason(5, "public.orders", "column \"status\" does not exist");
        assert_eq!(
            reason,
            "its options failed on public.orders: column \"status\" does not exist; fix them with \
             walhook.alter_subscription(5, ...), then walhook.resume(5)"
        );
    }

    #[test]
    fn the_insert_statements_differ_only_in_due_time_and_conflicts() {
        assert!(INSERT_SHAPED.contains("t.body, now(), 0\n"));
        assert!(!INSERT_SHAPED.contains("ON CONFLICT"));
        assert!(INSERT_NEW_SHAPED.ends_with("DO NOTHING"));
        assert!(INSERT_READ_SHAPED.contains("interval '250 milliseconds'"));
    }
}
