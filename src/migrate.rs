//! Schema migrations: the numbered SQL files of `sql/`, embedded in the
//! binary, applied in order and recorded in `walhook.schema_migrations`.
//! Safe to run twice and from two processes at once; a migration changed
//! after it was applied is reported, never run again.

use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio_postgres::Client;
use tracing::info;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    pub fn checksum(&self) -> String {
        hex::encode(Sha256::digest(self.sql.as_bytes()))
    }
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../sql/", $name)),
        }
    };
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_schema.sql"),
    migration!(2, "0002_capture.sql"),
    migration!(3, "0003_subscriptions.sql"),
    migration!(4, "0004_compression.sql"),
    migration!(5, "0005_statement_cascades.sql"),
    migration!(6, "0006_claim_in_place.sql"),
    migration!(7, "0007_byte_order_keys.sql"),
    migration!(8, "0008_capture_setup.sql"),
    migration!(9, "0009_safe_sql_surface.sql"),
    migration!(10, "0010_console.sql"),
    migration!(11, "0011_backfill_and_event_catalog.sql"),
    migration!(12, "0012_outbox_statistics.sql"),
    migration!(13, "0013_subscription_options.sql"),
    migration!(14, "0014_excluded_columns.sql"),
    migration!(15, "0015_backfill_priority.sql"),
    migration!(16, "0016_statement_capture.sql"),
];

/// Serializes migrations across processes: any number of `walhook migrate`
/// or `walhook run` may start at once.
const MIGRATION_LOCK: i64 = 0x7761_6c68_6f6f_6b01;

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {embedded} in this binary); restore the original file and add the change as a new migration")]
    Changed {
        version: i32,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error("the database has migration {version}, which this walhook does not know; run a walhook at least as new as the one that migrated it")]
    Newer { version: i32 },
    #[error("the database schema is not up to date (applied: {applied}, this walhook needs {needed}); run `walhook migrate`")]
    Pending { applied: i32, needed: i32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: String,
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// What `migrate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<i32>,
    pub already: Vec<i32>,
}

/// Applies every migration the database lacks.
pub async fn migrate(client: &mut Client) -> Result<Report, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = migrate_locked(client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<Report, MigrateError> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE SCHEMA IF NOT EXISTS walhook;
             CREATE TABLE IF NOT EXISTS walhook.schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 checksum   text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             RESET client_min_messages;",
        )
        .await?;
    let applied = applied_migrations(client).await?;
    verify_applied(&applied)?;
    let mut report = Report::default();
    for migration in MIGRATIONS {
        if applied
            .iter()
            .any(|(version, _)| *version == migration.version)
        {
            report.already.push(migration.version);
            continue;
        }
        apply(client, migration).await?;
        info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        report.applied.push(migration.version);
    }
    apply_grants(client).await?;
    Ok(report)
}

async fn apply(client: &mut Client, migration: &Migration) -> Result<(), MigrateError> {
    let failed = |source| MigrateError::Failed {
        version: migration.version,
        name: migration.name.to_owned(),
        source,
    };
    let tx = client.transaction().await?;
    tx.batch_execute(migration.sql).await.map_err(failed)?;
    tx.execute(
        "INSERT INTO walhook.schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
        &[&migration.version, &migration.name, &migration.checksum()],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Gives the roles `walhook_admin`, `walhook_viewer` and `walhook_relay`
/// their privileges on every object of schema `walhook`, those of later
/// migrations included, and takes every privilege from PUBLIC.
async fn apply_grants(client: &Client) -> Result<(), tokio_postgres::Error> {
    let defined: bool = client
        .query_one(
            "SELECT to_regprocedure('walhook.apply_grants()') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if defined {
        client.execute("SELECT walhook.apply_grants()", &[]).await?;
    }
    Ok(())
}

async fn applied_migrations(client: &Client) -> Result<Vec<(i32, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT version, checksum FROM walhook.schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

fn verify_applied(applied: &[(i32, String)]) -> Result<(), MigrateError> {
    for (version, checksum) in applied {
        let Some(migration) = MIGRATIONS.iter().find(|m| m.version == *version) else {
            return Err(MigrateError::Newer { version: *version });
        };
        if migration.checksum() != *checksum {
            return Err(MigrateError::Changed {
                version: *version,
                name: migration.name.to_owned(),
                applied: checksum.clone(),
                embedded: migration.checksum(),
            });
        }
    }
    Ok(())
}

/// Fails unless every migration has been applied unchanged; `walhook run`
/// checks this at start.
pub async fn require_current(client: &Client) -> Result<(), MigrateError> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('walhook.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let applied = if exists {
        applied_migrations(client).await?
    } else {
        Vec::new()
    };
    verify_applied(&applied)?;
    let needed = MIGRATIONS.last().map(|m| m.version).unwrap_or(0);
    let have = applied.last().map(|(v, _)| *v).unwrap_or(0);
    if applied.len() < MIGRATIONS.len() {
        return Err(MigrateError::Pending {
            applied: have,
            needed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_named_by_number() {
        // Numbers rise strictly; every file of sql/ is embedded (the next
        // test), so a gap is a number not in use.
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version, "{pair:?}");
        }
        for migration in MIGRATIONS {
            assert!(migration
                .name
                .starts_with(&format!("{:04}_", migration.version)));
        }
    }

    #[test]
    fn every_sql_file_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        let embedded: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(files, embedded);
    }

    #[test]
    fn a_changed_migration_is_reported() {
        let applied = vec![(1, "0000".to_string())];
        let err = verify_applied(&applied).unwrap_err().to_string();
        assert!(err.contains("was changed after it was applied"), "{err}");
    }
}
