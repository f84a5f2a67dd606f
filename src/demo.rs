//! `walhook demo`: the zero-setup path. It uses the configured database, or
//! starts a throwaway PostgreSQL from the installed server programs; then
//! it migrates, creates and watches a sample table `public.orders`,
//! subscribes a built-in receiver that verifies every signature, runs the
//! relay, writes a few rows and prints each delivery as it arrives, until
//! Ctrl-C (or, for scripted runs, a number of verified deliveries). The
//! throwaway server and its directory are removed on every way out.

mod cleanup;
pub mod postgres;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use postgres::{
    find_server_binaries, remove_leftovers, PostgresError, ServerBinaries, ThrowawayPostgres,
    INSTALL_HINT,
};

use crate::config::{CaptureMode, Config, RetrySchedule};
use crate::receiver::{self, Received, Receiver};
use cleanup::{demo_slot, remove_what_the_demo_created, Existing};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this many verified deliveries instead of waiting for
    /// Ctrl-C.
    pub exit_after: Option<usize>,
    /// The pause between the sample writes, so the output reads in order.
    pub pace: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            exit_after: None,
            pace: Duration::from_millis(400),
        }
    }
}

/// What a demo run saw.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Every request the receiver got, in arrival order.
    pub received: Vec<Received>,
    /// The throwaway server's directory (already removed), when there was one.
    pub throwaway_dir: Option<PathBuf>,
    /// The capture mode the relay ran with.
    pub mode: Option<CaptureMode>,
}

impl DemoReport {
    pub fn verified(&self) -> usize {
        self.received.iter().filter(|r| r.verified()).count()
    }
}

/// The comment that marks `public.orders` as the demo's own table.
const TABLE_MARK: &str = "walhook demo: sample orders";

const ORDERS_TAKEN: &str =
    "public.orders already exists in this database and is not the demo's table; \
     the demo would write sample rows into it. Run the demo against an empty database, \
     or without DATABASE_URL for a throwaway one";

/// How many deliveries the sample writes produce.
pub const SAMPLE_DELIVERIES: usize = 6;

/// `walhook demo`: runs until `shutdown` fires, or until `exit_after`
/// verified deliveries arrived.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    exit_after: Option<usize>,
) -> anyhow::Result<()> {
    let report = run_with(
        config,
        DemoOptions {
            exit_after,
            ..DemoOptions::default()
        },
        shutdown,
    )
    .await?;
    if let Some(dir) = &report.throwaway_dir {
        println!(
            "Stopped the throwaway PostgreSQL and removed {}.",
            dir.display()
        );
    }
    Ok(())
}

/// `walhook receive`: the demo's receiver on `listen`, checking every
/// request against `secret` and printing it, until `shutdown` fires.
pub async fn receive(
    listen: std::net::SocketAddr,
    secret: String,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let bound = Receiver::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!(
        "Receiving at {}; each request's signatures are checked (401 when they do not hold).",
        bound.url()
    );
    let (sink, mut deliveries) = mpsc::unbounded_channel();
    let receiver = bound.serve(checking_receiver(secret, sink));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            Some(received) = deliveries.recv() => print_delivery(&received),
        }
    }
    receiver.stop().await.context("the receiver stopped")?;
    Ok(())
}

/// The receiver of `walhook receive` and the demo: `POST /hooks` only (404
/// elsewhere, 405 for another method), 200 when both signatures hold under
/// `secret` and 401 otherwise; every such request goes to `sink`.
fn checking_receiver(secret: String, sink: mpsc::UnboundedSender<Received>) -> receiver::Options {
    fn is_hook(request: &Received) -> bool {
        request.uri.path() == "/hooks"
    }
    receiver::Options::new()
        .secret(secret)
        .forget()
        .respond(|request, _| {
            let status = if !is_hook(request) {
                StatusCode::NOT_FOUND
            } else if request.method != Method::POST {
                StatusCode::METHOD_NOT_ALLOWED
            } else if request.verified() {
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            status.into_response()
        })
        .observe(move |request| {
            if is_hook(request) && request.method == Method::POST {
                let _ = sink.send(request.clone());
            }
        })
}

/// The demo with every option, returning what it saw.
pub async fn run_with(
    mut config: Config,
    options: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<DemoReport> {
    let mut report = DemoReport::default();
    let mut server = None;
    let url = match config.database_url.clone() {
        Some(url) => {
            println!("Using the configured database ({}).", describe_url(&url));
            url
        }
        None => {
            let binaries = find_server_binaries()?;
            for dir in tokio::task::spawn_blocking(remove_leftovers)
                .await
                .unwrap_or_default()
            {
                println!(
                    "Removed {}, left by a demo that was killed before it could clean up.",
                    dir.display()
                );
            }
            println!(
                "Starting a throwaway PostgreSQL from {} ...",
                binaries.dir.display()
            );
            let started = tokio::task::spawn_blocking(move || ThrowawayPostgres::start(binaries))
                .await
                .context("the task starting PostgreSQL failed")??;
            report.throwaway_dir = Some(started.dir().to_owned());
            let url = started.url();
            server = Some(started);
            url
        }
    };
    let outcome = if shutdown.is_cancelled() {
        Ok(())
    } else {
        demo(
            &mut config,
            &url,
            server.is_some(),
            &options,
            &shutdown,
            &mut report,
        )
        .await
    };
    if let Some(mut server) = server {
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .context("the task stopping PostgreSQL failed")?;
    }
    outcome.map(|()| report)
}

async fn demo(
    config: &mut Config,
    url: &str,
    own_database: bool,
    options: &DemoOptions,
    shutdown: &CancellationToken,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let mut client = crate::db::connect(url, "demo").await?;
    let mut before = Existing::read(&client, config).await?;
    if before.table && !own_database {
        anyhow::bail!(ORDERS_TAKEN);
    }
    if !own_database && config.capture.slot == Config::default().capture.slot {
        // A slot name is cluster-wide: the demo's own, per database, leaves
        // a relay's slot alone and lets demos run in two databases.
        config.capture.slot = demo_slot(&before.database);
    }
    crate::migrate::migrate(&mut client).await?;
    let mode = usable_mode(&client, config.capture.mode).await?;
    config.capture.mode = mode;
    config.database_url = Some(url.to_owned());
    config.delivery.allow_private_targets = true;
    // A relay already running here holds the admin port; the demo's own
    // admin endpoints then take a free one, found here so the console's
    // address can be printed.
    if config.admin.listen.port() == 0 || std::net::TcpListener::bind(config.admin.listen).is_err()
    {
        config.admin.listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    config.delivery.retry_schedule = "0s,1s,2s,5s"
        .parse::<RetrySchedule>()
        .map_err(anyhow::Error::msg)?;
    report.mode = Some(mode);

    create_sample_table(&client, own_database).await?;
    before.mode = Some(
        client
            .query_one("SELECT walhook.capture_mode()", &[])
            .await?
            .get(0),
    );
    client
        .execute("SELECT walhook.set_capture_mode($1)", &[&mode.as_str()])
        .await?;
    client
        .execute("SELECT walhook.watch('public.orders')", &[])
        .await?;

    let bound = Receiver::bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .context("cannot start the demo receiver on 127.0.0.1")?;
    let hook_url = bound.url();
    let subscription: i64 = client
        .query_one(
            "SELECT walhook.subscribe($1, ARRAY['orders.*'], description => 'walhook demo receiver')",
            &[&hook_url],
        )
        .await?
        .get(0);
    let secret: String = client
        .query_one(
            "SELECT secret FROM walhook.subscriptions WHERE id = $1",
            &[&subscription],
        )
        .await?
        .get(0);

    println!();
    println!("  database      {}", describe_url(url));
    println!("  table         public.orders, watched ({mode} capture)");
    println!("  receiver      {hook_url}, subscribed to orders.* (subscription {subscription})");
    println!("  secret        {secret}");
    println!("  console       {}", console_address(config.admin.listen));
    println!();

    let (sink, mut deliveries) = mpsc::unbounded_channel();
    // Stops when dropped, on every way out.
    let receiver = bound.serve(checking_receiver(secret, sink));

    let relay_stop = shutdown.child_token();
    let _stop_relay_on_exit = relay_stop.clone().drop_guard();
    let mut relay = tokio::spawn(crate::relay::run(config.clone(), relay_stop.clone()));

    let result = watch_deliveries(
        &client,
        config,
        url,
        subscription,
        options,
        shutdown,
        &mut relay,
        &mut deliveries,
        report,
    )
    .await;

    relay_stop.cancel();
    if !relay.is_finished() {
        match tokio::time::timeout(Duration::from_secs(15), &mut relay).await {
            Ok(Ok(Err(error))) => warn!(%error, "the relay stopped with an error"),
            Ok(Err(error)) => warn!(%error, "the relay task failed"),
            Err(_) => warn!("the relay did not stop within 15s"),
            Ok(Ok(Ok(()))) => {}
        }
    }
    let _ = receiver.stop().await;
    if !own_database {
        if let Err(error) =
            remove_what_the_demo_created(&client, config, subscription, &before).await
        {
            warn!(
                error = format!("{error:#}"),
                "could not remove everything the demo created"
            );
        }
    }
    result
}

/// The console's address as a browser on this machine opens it.
fn console_address(listen: std::net::SocketAddr) -> String {
    let mut address = listen;
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    format!("http://{address}/")
}

/// Receives and prints deliveries while the sample rows are written; then
/// keeps printing until shutdown or `exit_after`.
#[allow(clippy::too_many_arguments)]
async fn watch_deliveries(
    client: &Client,
    config: &Config,
    url: &str,
    subscription: i64,
    options: &DemoOptions,
    shutdown: &CancellationToken,
    relay: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
    deliveries: &mut mpsc::UnboundedReceiver<Received>,
    report: &mut DemoReport,
) -> anyhow::Result<()> {
    let writer = async {
        wait_until_capturing(client, config, shutdown).await?;
        write_sample_rows(client, options.pace, shutdown).await
    };
    tokio::pin!(writer);
    let mut writing = true;
    loop {
        if let Some(n) = options.exit_after {
            if report.verified() >= n && transactions_complete(client, subscription, report).await?
            {
                return Ok(());
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            result = &mut *relay => {
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(error)) => Err(error.context("the relay stopped")),
                    Err(error) => Err(anyhow::anyhow!("the relay task failed: {error}")),
                };
            }
            result = &mut writer, if writing => {
                writing = false;
                result?;
                match options.exit_after {
                    None => print_invitation(url),
                    Some(n) if n > SAMPLE_DELIVERIES => print_waiting(url, n),
                    Some(_) => {}
                }
            }
            Some(received) = deliveries.recv() => {
                print_delivery(&received);
                report.received.push(received);
            }
        }
    }
}

/// The configured mode, or trigger capture when this database cannot do
/// logical replication for us.
async fn usable_mode(client: &Client, wanted: CaptureMode) -> anyhow::Result<CaptureMode> {
    if wanted == CaptureMode::Trigger {
        return Ok(wanted);
    }
    let row = client
        .query_one(
            "SELECT current_setting('wal_level'),
                    (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await?;
    let wal_level: String = row.get(0);
    let may_replicate: bool = row.get::<_, Option<bool>>(1).unwrap_or(false);
    if wal_level != "logical" {
        println!(
            "This database runs with wal_level={wal_level}, not logical: using trigger capture."
        );
        return Ok(CaptureMode::Trigger);
    }
    if !may_replicate {
        println!("This role may not use replication: using trigger capture.");
        return Ok(CaptureMode::Trigger);
    }
    Ok(wanted)
}

async fn create_sample_table(client: &Client, own_database: bool) -> anyhow::Result<()> {
    let existing: Option<Option<String>> = client
        .query_opt(
            "SELECT obj_description(c.oid, 'pg_class') FROM pg_class c
             WHERE c.oid = to_regclass('public.orders')",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    if let Some(comment) = existing {
        if !own_database && comment.as_deref() != Some(TABLE_MARK) {
            anyhow::bail!(ORDERS_TAKEN);
        }
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS public.orders (
                 id         serial PRIMARY KEY,
                 customer   text,
                 status     text,
                 total      numeric(10,2),
                 created_at timestamptz DEFAULT now()
             );
             COMMENT ON TABLE public.orders IS '{TABLE_MARK}';"
        ))
        .await?;
    Ok(())
}

/// In replication mode changes are captured from the moment the relay's
/// slot is consistent: wait for it, so the sample rows are not written
/// before. A slot being created is listed already, without a confirmed
/// position, while it waits for the transactions running in the whole
/// cluster (another demo's, say) to end.
async fn wait_until_capturing(
    client: &Client,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if config.capture.mode != CaptureMode::Replication {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots
                                WHERE slot_name = $1 AND database = current_database()
                                  AND confirmed_flush_lsn IS NOT NULL)",
                &[&config.capture.slot],
            )
            .await?
            .get(0);
        if exists || shutdown.is_cancelled() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the relay did not create its replication slot {} within 30s",
                config.capture.slot
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sample story: an order placed, paid, another cancelled, and one
/// transaction by a known actor.
async fn write_sample_rows(
    client: &Client,
    pace: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let ids: Vec<i32> = {
        let statements = [
            "INSERT INTO orders (customer, status, total) VALUES ('ada', 'pending', 19.90) RETURNING id",
            "INSERT INTO orders (customer, status, total) VALUES ('grace', 'pending', 42.00) RETURNING id",
        ];
        let mut ids = Vec::new();
        for sql in statements {
            println!("  → {}", sql.trim_end_matches(" RETURNING id"));
            ids.push(client.query_one(sql, &[]).await?.get(0));
            pause(pace, shutdown).await;
        }
        ids
    };
    let (first, second) = (ids[0], ids[1]);
    let steps = [
        format!("UPDATE orders SET status = 'paid' WHERE id = {first}"),
        format!("DELETE FROM orders WHERE id = {second}"),
        format!(
            "BEGIN; SELECT walhook.set_actor('user:42'); \
             INSERT INTO orders (customer, status, total) VALUES ('linus', 'pending', 7.50); \
             UPDATE orders SET status = 'shipped' WHERE id = {first}; COMMIT"
        ),
    ];
    for sql in steps {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        println!("  → {sql}");
        client.batch_execute(&sql).await?;
        pause(pace, shutdown).await;
    }
    info!(
        expected_deliveries = SAMPLE_DELIVERIES,
        "sample rows written"
    );
    Ok(())
}

async fn pause(pace: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pace) => {}
    }
}

/// `--exit-after` counts deliveries in whole transactions: it stops only
/// once every delivery of each transaction it received one of has arrived
/// (deliveries of different rows arrive in any order).
async fn transactions_complete(
    client: &Client,
    subscription: i64,
    report: &DemoReport,
) -> anyhow::Result<bool> {
    let verified: Vec<&Received> = report.received.iter().filter(|r| r.verified()).collect();
    let mut txids: Vec<String> = verified
        .iter()
        .filter_map(|r| r.json().get("txid").map(Value::to_string))
        .collect();
    txids.sort();
    txids.dedup();
    let received: std::collections::HashSet<String> =
        verified.iter().map(|r| r.webhook_id()).collect();
    let expected: i64 = client
        .query_one(
            "SELECT count(DISTINCT e.id) FROM walhook.deliveries d JOIN walhook.events e ON e.id = d.event_id
             WHERE d.subscription_id = $1 AND e.payload->>'txid' = ANY($2)",
            &[&subscription, &txids],
        )
        .await
        .context("counting the deliveries of the transactions received")?
        .get(0);
    Ok(received.len() as i64 >= expected)
}

fn print_waiting(url: &str, exit_after: usize) {
    println!();
    println!(
        "The sample rows make {SAMPLE_DELIVERIES} deliveries; waiting for {} more (--exit-after {exit_after}).",
        exit_after - SAMPLE_DELIVERIES
    );
    println!("Write to public.orders to make them, e.g.:");
    println!(
        "  psql '{}' -c \"UPDATE orders SET status = 'refunded' WHERE id = 1\"",
        describe_url(url)
    );
    println!("or press Ctrl-C to stop.");
    println!();
}

fn print_invitation(url: &str) {
    println!();
    println!("Every committed change to public.orders now arrives as a signed webhook. Try:");
    println!(
        "  psql '{}' -c \"UPDATE orders SET status = 'refunded' WHERE id = 1\"",
        describe_url(url)
    );
    println!("Press Ctrl-C to stop.");
    println!();
}

fn print_delivery(received: &Received) {
    let (mark, verdict) = match &received.verdict {
        Some(Ok(())) => ("✓", "signature verified".to_owned()),
        Some(Err(error)) => ("✗", format!("REJECTED: {error}")),
        None => ("?", "signature not checked".to_owned()),
    };
    let attempt = match received.attempt() {
        1 => String::new(),
        n => format!(" (attempt {n})"),
    };
    let event = received.json();
    let actor = event
        .get("actor")
        .and_then(Value::as_str)
        .map(|a| format!("  actor={a}"))
        .unwrap_or_default();
    println!(
        "{mark} {:<15} {}  {verdict}{attempt}  {}{actor}",
        received.event_type(),
        received.webhook_id(),
        summary(&event)
    );
}

/// The part of an event worth a line: the changes of an update, the row of
/// an insert, the old row of a delete.
fn summary(event: &Value) -> String {
    let part = match event.get("action").and_then(Value::as_str) {
        Some("update") => event.get("changes"),
        Some("delete") => event.get("old_record"),
        Some("truncate") => None,
        _ => event.get("record"),
    };
    match part {
        Some(value) if !value.is_null() => value.to_string(),
        _ => String::new(),
    }
}

/// The URL without its password, for printing.
fn describe_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "a key=value connection string".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_show_what_changed() {
        let update =
            json!({"action": "update", "changes": {"status": {"old": "pending", "new": "paid"}}});
        assert_eq!(
            summary(&update),
            r#"{"status":{"old":"pending","new":"paid"}}"#
        );
        let delete = json!({"action": "delete", "old_record": {"id": 2}, "record": null});
        assert_eq!(summary(&delete), r#"{"id":2}"#);
        assert_eq!(summary(&json!({"action": "truncate"})), "");
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            describe_url("postgres://app:hunter2@db:5432/app"),
            "postgres://app:****@db:5432/app"
        );
        assert_eq!(
            describe_url("host=db user=app"),
            "a key=value connection string"
        );
    }
}
