//! The application's writes: a mixed workload of inserts, updates and
//! deletes in transactions of several sizes, written by concurrent
//! connections, and the table it writes to.

use anyhow::Context;
use futures_util::future::try_join_all;
use rand::Rng;
use std::time::Instant;
use tokio_postgres::Client;

use crate::database::connect;

/// One change of a workload; `seq` is what the receiver reports back.
#[derive(Debug, Clone, Copy)]
pub enum Op {
    Insert { id: i64, seq: i64, size: usize },
    Update { id: i64, seq: i64, size: usize },
    Delete { id: i64 },
}

/// Transactions of 1, 10 and 100 changes; 60 % inserts, 30 % updates,
/// 10 % deletes; rows of 100 B to 2 kB.
pub fn workload(changes: usize, first_seq: i64, first_id: i64) -> Vec<Vec<Op>> {
    let mut rng = rand::rng();
    let mut live: Vec<i64> = Vec::new();
    let mut next_id = first_id;
    let mut seq = first_seq;
    let mut transactions = Vec::new();
    let mut made = 0;
    let sizes = [1usize, 10, 100];
    let mut turn = 0;
    while made < changes {
        let size = sizes[turn % sizes.len()].min(changes - made);
        turn += 1;
        let mut tx = Vec::with_capacity(size);
        let mut touched = std::collections::HashSet::new();
        while tx.len() < size {
            let roll: f64 = rng.random();
            let body = rng.random_range(100..=2000);
            if roll < 0.6 || live.len() < 10 {
                tx.push(Op::Insert {
                    id: next_id,
                    seq,
                    size: body,
                });
                live.push(next_id);
                touched.insert(next_id);
                next_id += 1;
                seq += 1;
            } else {
                let index = rng.random_range(0..live.len());
                let id = live[index];
                if touched.contains(&id) {
                    continue;
                }
                touched.insert(id);
                if roll < 0.9 {
                    tx.push(Op::Update {
                        id,
                        seq,
                        size: body,
                    });
                    seq += 1;
                } else {
                    live.swap_remove(index);
                    tx.push(Op::Delete { id });
                }
            }
        }
        made += tx.len();
        transactions.push(tx);
    }
    transactions
}

/// A row body of `size` bytes.
pub fn filler(size: usize) -> String {
    "x".repeat(size)
}

/// One workload per writer connection, over rows of its own (as an
/// application's concurrent requests mostly touch different rows).
pub fn workloads(changes: usize, writers: usize, first_seq: i64) -> Vec<Vec<Vec<Op>>> {
    let per_writer = changes.div_ceil(writers);
    (0..writers)
        .map(|w| {
            let base = w as i64 * 100_000_000;
            workload(per_writer, first_seq + base, 1 + base)
        })
        .collect()
}

/// Changes in all the parts together.
pub fn count_changes(parts: &[Vec<Vec<Op>>]) -> usize {
    parts.iter().flatten().map(Vec::len).sum()
}

/// Runs each part on a connection of its own; returns changes per second.
pub async fn write_workload(url: &str, table: &str, parts: &[Vec<Vec<Op>>]) -> anyhow::Result<f64> {
    let total = count_changes(parts);
    let started = Instant::now();
    let tasks = parts.iter().cloned().map(|part| {
        let url = url.to_owned();
        let table = table.to_owned();
        tokio::spawn(async move { write_part(&url, &table, part).await })
    });
    for result in futures_util::future::join_all(tasks).await {
        result.context("writer task")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn write_part(url: &str, table: &str, transactions: Vec<Vec<Op>>) -> anyhow::Result<()> {
    let client = connect(url).await?;
    let insert = client
        .prepare(&format!(
            "INSERT INTO {table} (id, seq, kind, body) VALUES ($1, $2, 1, $3)"
        ))
        .await?;
    let update = client
        .prepare(&format!(
            "UPDATE {table} SET seq = $2, kind = kind + 1, body = $3 WHERE id = $1"
        ))
        .await?;
    let delete = client
        .prepare(&format!("DELETE FROM {table} WHERE id = $1"))
        .await?;
    for tx in transactions {
        if tx.len() > 1 {
            client.batch_execute("BEGIN").await?;
        }
        // Statements of a transaction are pipelined on the connection.
        let statements = tx.iter().map(|op| {
            let (insert, update, delete, client) = (&insert, &update, &delete, &client);
            async move {
                match *op {
                    Op::Insert { id, seq, size } => {
                        client.execute(insert, &[&id, &seq, &filler(size)]).await
                    }
                    Op::Update { id, seq, size } => {
                        client.execute(update, &[&id, &seq, &filler(size)]).await
                    }
                    Op::Delete { id } => client.execute(delete, &[&id]).await,
                }
            }
        });
        try_join_all(statements).await?;
        if tx.len() > 1 {
            client.batch_execute("COMMIT").await?;
        }
    }
    Ok(())
}

/// `table (id bigint PRIMARY KEY, seq bigint, kind int, body text)`.
pub async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id bigint PRIMARY KEY, seq bigint NOT NULL, kind int NOT NULL, body text NOT NULL)"
        ))
        .await?;
    Ok(())
}
