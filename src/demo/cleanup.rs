//! What the demo leaves in a database it did not create: nothing of its
//! own. It notes what was there before, and removes the rest on the way out.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::Client;

use super::TABLE_MARK;
use crate::config::Config;

/// What was in a configured database before the demo touched it, so the
/// demo removes what it created and nothing else.
pub(super) struct Existing {
    pub(super) database: String,
    schema: bool,
    publication: bool,
    pub(super) table: bool,
    /// The capture mode of an installation the demo found, set back after.
    pub(super) mode: Option<String>,
}

impl Existing {
    pub(super) async fn read(client: &Client, config: &Config) -> anyhow::Result<Existing> {
        let row = client
            .query_one(
                "SELECT current_database()::text,
                        to_regnamespace('walhook') IS NOT NULL,
                        EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1),
                        coalesce(obj_description(to_regclass('public.orders'), 'pg_class') IS DISTINCT FROM $2
                                 AND to_regclass('public.orders') IS NOT NULL, false)",
                &[&config.capture.publication, &TABLE_MARK],
            )
            .await
            .context("reading what the database holds before the demo")?;
        Ok(Existing {
            database: row.get(0),
            schema: row.get(1),
            publication: row.get(2),
            table: row.get(3),
            mode: None,
        })
    }
}

/// The demo's slot in a database it did not create: `walhook_demo_<db>`,
/// within Postgres' 63 characters.
pub(super) fn demo_slot(database: &str) -> String {
    let name: String = format!("walhook_demo_{database}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    name
}

/// Leaves a database the demo did not create as it found it: the
/// subscription, the sample table, the slot, and the schema and
/// publication when the demo installed them. (The group roles of
/// `walhook migrate` are cluster-wide and stay.)
pub(super) async fn remove_what_the_demo_created(
    client: &Client,
    config: &Config,
    subscription: i64,
    before: &Existing,
) -> anyhow::Result<()> {
    client
        .execute("SELECT walhook.unsubscribe($1)", &[&subscription])
        .await
        .context("removing the demo subscription")?;
    if !before.table {
        client
            .batch_execute(
                "SELECT walhook.unwatch('public.orders');
                 DROP TABLE IF EXISTS public.orders;",
            )
            .await
            .context("removing the sample table public.orders")?;
    }
    drop_slot(client, &config.capture.slot).await?;
    if !before.publication {
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                config.capture.publication
            ))
            .await
            .context("removing the publication")?;
    }
    if !before.schema {
        client
            .batch_execute("DROP SCHEMA walhook CASCADE")
            .await
            .context("removing the walhook schema the demo installed")?;
    } else if let Some(mode) = &before.mode {
        client
            .execute("SELECT walhook.set_capture_mode($1)", &[mode])
            .await
            .context("setting the capture mode back")?;
    }
    Ok(())
}

/// Drops the demo's replication slot once the stopped relay has let go of
/// it: an inactive slot keeps WAL forever.
async fn drop_slot(client: &Client, slot: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await?;
        match row.map(|r| r.get::<_, bool>(0)) {
            None => return Ok(()),
            Some(false) => {
                client
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                    .with_context(|| format!("dropping the replication slot {slot}"))?;
                return Ok(());
            }
            Some(true) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("the replication slot {slot} is still in use; drop it with SELECT pg_drop_replication_slot('{slot}')")
            }
            Some(true) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_slots_are_valid_slot_names() {
        assert_eq!(demo_slot("app"), "walhook_demo_app");
        assert_eq!(demo_slot("My-DB"), "walhook_demo_my_db");
        assert_eq!(demo_slot(&"x".repeat(100)).len(), 63);
    }
}
