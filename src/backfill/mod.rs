//! Backfills: a table's existing rows sent through the change stream as
//! `read` events (`walhook.backfill`), interleaved correctly with the live
//! changes of the same rows, with DBLog's watermark technique.
//!
//! The capturing relay drives them ([`drive`], beside its capture loop).
//! For each chunk it opens a window ([`window`]), reads the next rows by
//! primary key after the last one done in one short statement, and writes
//! a high watermark into the change stream (`walhook.backfill_watermark`:
//! a logical message, or a capture row in trigger mode). The capture loop
//! notes the keys of the table's changes while the window is open; at the
//! watermark it drops the chunk's rows that changed and writes the rest as
//! read events right behind the batch ([`emit`]), with the backfill's
//! progress in the same transaction. A relay that stops resumes after the
//! last chunk written; a chunk may then be sent again.
//!
//! Live traffic goes first: read deliveries have a lower claim priority
//! than live changes (a live change is claimed before every read waiting
//! for the same subscription), at most four chunks of reads wait unsent at
//! a time, and `backfill.max_rows_per_second` caps the rate.
//!
//! A chunk that keeps failing on a database error fails its backfill after
//! a few tries ([`failure`]); a lost connection is retried without limit.

pub mod chunk;
pub mod failure;
mod report;
pub mod window;

pub use report::status;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::config::BackfillConfig;
use crate::db;
use crate::outbox::{Outbox, OutboxError};
use window::{Chunk, Emitted, Ready, Windows};

/// How long a chunk's watermark may take through the change stream before
/// the chunk is read again.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(60);

/// Chunks of reads that may wait unsent at once.
const CHUNKS_AHEAD: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("database error in a backfill: {}", db::describe_error(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error(transparent)]
    Connect(#[from] db::DbError),
}

impl BackfillError {
    /// Whether the error counts against the backfill being run (see
    /// [`failure`]); a connection that could not be made never does.
    fn counts(&self) -> bool {
        match self {
            BackfillError::Db(error) => failure::counts(error),
            BackfillError::Connect(_) => false,
        }
    }

    /// The error as the backfill records it: Postgres's message with its
    /// detail and hint.
    fn reason(&self) -> String {
        match self {
            BackfillError::Db(error) => db::describe_error(error),
            BackfillError::Connect(error) => error.to_string(),
        }
    }
}

/// Records a chunk: only once, and only while the backfill runs. A chunk
/// written ends a run of failures.
const RECORD_PROGRESS: &str = "
UPDATE walhook.backfill_jobs
SET rows_done = rows_done + $2, rows_sent = rows_sent + $3, last_key = $4::text[], updated_at = now(),
    failures = 0, error = NULL,
    state = CASE WHEN $5::bool THEN 'done' ELSE state END,
    finished_at = CASE WHEN $5::bool THEN now() END
WHERE id = $1 AND state = 'running' AND last_key IS NOT DISTINCT FROM $6::text[]";

/// Writes a ready chunk's reads behind the batch that held its watermark,
/// and tells the backfill what became of it.
pub async fn emit(outbox: &mut Outbox, ready: Ready, wake: &Notify) -> Result<(), OutboxError> {
    let Ready { chunk, done } = ready;
    let rows_sent = chunk.rows.len() as i64;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
        &chunk.backfill,
        &chunk.rows_read,
        &rows_sent,
        &chunk.last_key,
        &chunk.finished,
        &chunk.previous_key,
    ];
    let written = outbox
        .write_reads(&chunk.rows, chunk.subscription, RECORD_PROGRESS, &params)
        .await?;
    if written.is_some_and(|w| w.deliveries > 0) {
        wake.notify_one();
    }
    metrics::counter!("walhook_backfill_rows_sent_total").increment(chunk.rows.len() as u64);
    let _ = done.send(Emitted {
        event_ids: chunk.rows.iter().map(|r| r.event_id()).collect(),
        recorded: written.is_some(),
    });
    Ok(())
}

/// Runs the backfills one after the other while this relay captures.
/// A lost connection is made again and the backfill resumed; other errors
/// count against the backfill ([`failure`]). Never returns (pending after
/// shutdown), so the capture loop beside it decides when capture ends.
pub async fn drive(
    url: &str,
    windows: &Windows,
    config: &BackfillConfig,
    shutdown: &CancellationToken,
) -> Infallible {
    while !shutdown.is_cancelled() {
        if let Err(error) = run(url, windows, config, shutdown).await {
            warn!(%error, "backfill interrupted; reconnecting");
            pause_for(Duration::from_secs(1), shutdown).await;
        }
    }
    std::future::pending().await
}

/// A backfill as the relay works on it.
#[derive(Debug)]
struct Job {
    id: i64,
    relid: u32,
    subscription: Option<i64>,
    chunk_size: i32,
}

async fn run(
    url: &str,
    windows: &Windows,
    config: &BackfillConfig,
    shutdown: &CancellationToken,
) -> Result<(), BackfillError> {
    let client = db::connect(url, "backfill").await?;
    client.batch_execute(chunk::PINNED_OUTPUT).await?;
    let mut catalog = Catalog::load(&client).await?;
    while !shutdown.is_cancelled() {
        match next_job(&client).await? {
            Some(job) => {
                match run_job(&client, &mut catalog, windows, config, &job, shutdown).await {
                    Err(error) if error.counts() => {
                        let pause = count_failure(&client, &job, &error).await?;
                        pause_for(pause, shutdown).await;
                    }
                    other => other?,
                }
            }
            None => pause_for(Duration::from_millis(500), shutdown).await,
        }
    }
    Ok(())
}

async fn pause_for(pause: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}

/// Records a failed try at the job's chunk; returns how long to wait
/// before the next (none once the backfill failed).
async fn count_failure(
    client: &Client,
    job: &Job,
    error: &BackfillError,
) -> Result<Duration, tokio_postgres::Error> {
    let reason = error.reason();
    match failure::record(client, job.id, &reason).await? {
        Some(recorded) if recorded.failed => {
            warn!(backfill = job.id, failures = recorded.failures, error = %reason,
                  "backfill failed: its chunk kept failing");
            Ok(Duration::ZERO)
        }
        Some(recorded) => {
            let pause = failure::retry_after(recorded.failures);
            warn!(backfill = job.id, failures = recorded.failures, error = %reason,
                  retry_in_ms = pause.as_millis() as u64, "backfill chunk failed; trying it again");
            Ok(pause)
        }
        None => Ok(Duration::ZERO),
    }
}

/// The oldest backfill not finished, marked running.
async fn next_job(client: &Client) -> Result<Option<Job>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "UPDATE walhook.backfill_jobs
             SET state = 'running', started_at = coalesce(started_at, now()), updated_at = now()
             WHERE id = (SELECT id FROM walhook.backfill_jobs
                         WHERE state IN ('pending', 'running') ORDER BY id LIMIT 1)
             RETURNING id, relid, subscription_id, chunk_size",
            &[],
        )
        .await?;
    Ok(row.map(|row| Job {
        id: row.get(0),
        relid: row.get(1),
        subscription: row.get(2),
        chunk_size: row.get(3),
    }))
}

async fn run_job(
    client: &Client,
    catalog: &mut Catalog,
    windows: &Windows,
    config: &BackfillConfig,
    job: &Job,
    shutdown: &CancellationToken,
) -> Result<(), BackfillError> {
    info!(backfill = job.id, relid = job.relid, "backfill running");
    let mut limit = RateLimit::new(config.max_rows_per_second);
    let mut unsent: VecDeque<Vec<String>> = VecDeque::new();
    while !shutdown.is_cancelled() {
        let Some((last_key, rows_done, watched)) = progress(client, job.id).await? else {
            info!(
                backfill = job.id,
                "backfill stopped (cancelled or finished)"
            );
            return Ok(());
        };
        if !watched {
            // Its live changes are no longer captured: reads could not be
            // interleaved with them.
            return fail(client, job, "the table is no longer watched").await;
        }
        catalog.forget_table(job.relid);
        let table = match catalog.table(client, job.relid).await? {
            Some(table) if !table.key_columns.is_empty() => table,
            Some(_) => return fail(client, job, "the table no longer has a primary key").await,
            None => return fail(client, job, "the table no longer exists").await,
        };
        while unsent.len() >= CHUNKS_AHEAD {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if unsent_count(client, &unsent[0]).await? == 0 {
                unsent.pop_front();
            } else {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let keys = chunk::key_types(client, &table).await?;
        let token = format!("{}:{}:{:016x}", job.id, rows_done, rand::random::<u64>());
        windows.open(job.relid, &token);
        let cursor = chunk::Cursor {
            backfill: job.id,
            after: last_key.as_deref(),
            limit: job.chunk_size,
            rows_done,
        };
        let read = match chunk::read(client, &catalog.types, &table, &keys, &cursor).await {
            Ok(read) => read,
            Err(error) => {
                windows.close(&token);
                return Err(error.into());
            }
        };
        let Some(new_last_key) = read.last_key else {
            windows.close(&token);
            finish(client, job).await?;
            return Ok(());
        };
        let rows_read = read.rows.len() as i64;
        let (done, emitted) = oneshot::channel();
        windows.arm(
            &token,
            Chunk {
                backfill: job.id,
                subscription: job.subscription,
                rows: read.rows,
                previous_key: last_key,
                last_key: new_last_key,
                rows_read,
                finished: rows_read < i64::from(job.chunk_size),
            },
            done,
        );
        if let Err(error) = client
            .execute("SELECT walhook.backfill_watermark($1)", &[&token])
            .await
        {
            windows.close(&token);
            return Err(error.into());
        }
        let outcome = tokio::select! {
            () = shutdown.cancelled() => None,
            outcome = tokio::time::timeout(WATERMARK_TIMEOUT, emitted) => outcome.ok().and_then(Result::ok),
        };
        match outcome {
            Some(emitted) => {
                if emitted.recorded {
                    unsent.push_back(emitted.event_ids);
                    limit.wait(rows_read, shutdown).await;
                }
            }
            None => {
                windows.close(&token);
                if !shutdown.is_cancelled() {
                    warn!(
                        backfill = job.id,
                        "a chunk's watermark did not come through; reading the chunk again"
                    );
                }
            }
        }
    }
    Ok(())
}

/// The last key done, the rows done and whether the table is still
/// watched, while the backfill runs.
async fn progress(
    client: &Client,
    id: i64,
) -> Result<Option<(Option<Vec<String>>, i64, bool)>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT b.last_key, b.rows_done,
                    EXISTS (SELECT 1 FROM walhook.watched w WHERE w.relid::oid = b.relid)
             FROM walhook.backfill_jobs b WHERE b.id = $1 AND b.state = 'running'",
            &[&id],
        )
        .await?;
    Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
}

/// Reads not yet sent once to an active subscription.
async fn unsent_count(client: &Client, event_ids: &[String]) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM walhook.deliveries d
             JOIN walhook.subscriptions s ON s.id = d.subscription_id AND s.active
             WHERE d.event_id = ANY($1) AND d.phase = 'open' AND d.attempts = 0",
            &[&event_ids],
        )
        .await?
        .get(0))
}

async fn finish(client: &Client, job: &Job) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "UPDATE walhook.backfill_jobs SET state = 'done', finished_at = now(), updated_at = now()
             WHERE id = $1 AND state = 'running'",
            &[&job.id],
        )
        .await?;
    info!(backfill = job.id, "backfill done");
    Ok(())
}

async fn fail(client: &Client, job: &Job, reason: &str) -> Result<(), BackfillError> {
    warn!(backfill = job.id, reason, "backfill failed");
    client
        .execute(
            "UPDATE walhook.backfill_jobs SET state = 'failed', error = $2, finished_at = now(), updated_at = now()
             WHERE id = $1 AND state = 'running'",
            &[&job.id, &reason],
        )
        .await?;
    Ok(())
}

/// `backfill.max_rows_per_second`: after each chunk, waits until the rows
/// read so far are within the rate.
#[derive(Debug)]
struct RateLimit {
    rate: Option<f64>,
    start: Instant,
    rows: f64,
}

impl RateLimit {
    fn new(rate: Option<f64>) -> RateLimit {
        RateLimit {
            rate,
            start: Instant::now(),
            rows: 0.0,
        }
    }

    /// How long after the start `rows` more rows may be done.
    fn due_after(&mut self, rows: i64) -> Option<Duration> {
        let rate = self.rate?;
        self.rows += rows as f64;
        Some(Duration::from_secs_f64(self.rows / rate))
    }

    async fn wait(&mut self, rows: i64, shutdown: &CancellationToken) {
        if let Some(after) = self.due_after(rows) {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep_until(self.start + after) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spaces_chunks_by_their_rows() {
        let mut unlimited = RateLimit::new(None);
        assert_eq!(unlimited.due_after(1000), None);
        let mut limit = RateLimit::new(Some(500.0));
        assert_eq!(limit.due_after(1000), Some(Duration::from_secs(2)));
        assert_eq!(limit.due_after(250), Some(Duration::from_millis(2500)));
    }
}
