//! Capture conditions only an operator can fix: retrying cannot help, so
//! the relay stops and says what to do. Each condition's fix is written
//! once, in its `Display`; every place that meets the condition builds the
//! variant instead of writing its own text.

use thiserror::Error;

/// A state of the database or its configuration that stops capture until
/// an operator changes it. `server` fields hold the server's own words,
/// which the message quotes before the fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Fatal {
    /// Postgres removed WAL the slot still needed: the changes since its
    /// confirmed position are gone, and the slot can never stream again.
    #[error(
        "the replication slot \"{slot}\" was invalidated by Postgres (the WAL it needed was removed, see \
         max_slot_wal_keep_size), so the changes since its last confirmed position can no longer be read. \
         To capture again, drop it (SELECT pg_drop_replication_slot('{slot}');) and restart walhook, which creates \
         a new slot; changes made in the gap are not delivered"
    )]
    SlotInvalidated { slot: String },

    /// The server runs with a `wal_level` below `logical`, so no logical
    /// slot can be created or streamed.
    #[error(
        "{server}. Replication capture needs wal_level = logical (postgresql.conf, then restart Postgres), \
         or run walhook with capture.mode = \"trigger\""
    )]
    WalLevel { server: String },

    /// The role lacks the `REPLICATION` attribute. `role` is its name when
    /// it could be read.
    #[error("{}", no_replication_privilege(.role.as_deref(), .server))]
    NoReplicationPrivilege {
        role: Option<String>,
        server: String,
    },

    /// The server refused the replication connection itself (no
    /// `pg_hba.conf` entry for replication connections of this role).
    #[error(
        "{server}. The role walhook connects as needs the REPLICATION attribute (ALTER ROLE <name> REPLICATION) \
         and a pg_hba.conf entry that allows it, or run walhook with capture.mode = \"trigger\""
    )]
    ReplicationConnectionRefused { server: String },

    /// Every slot `max_replication_slots` allows is taken.
    #[error(
        "{server}. Raise max_replication_slots (then restart Postgres) or drop an unused slot"
    )]
    NoFreeSlot { server: String },

    /// `capture.publication` names a publication that does not exist (the
    /// default one, `walhook`, is created when missing).
    #[error(
        "the publication \"{publication}\" does not exist; create it (CREATE PUBLICATION {publication}) or use the default publication walhook"
    )]
    MissingPublication { publication: String },

    /// A slot of this name exists but was made for another database (slot
    /// names are cluster-wide).
    #[error(
        "the replication slot \"{slot}\" belongs to database {database}, not {current}; set capture.slot to a name of its own for this database"
    )]
    SlotOfAnotherDatabase {
        slot: String,
        database: String,
        current: String,
    },

    /// A slot of this name exists but is physical, or decodes with another
    /// plugin than `pgoutput`.
    #[error(
        "the replication slot \"{slot}\" exists but is not a logical slot with the pgoutput plugin; \
         set capture.slot to another name, or drop it (SELECT pg_drop_replication_slot('{slot}')) if nothing else uses it"
    )]
    SlotNotPgoutput { slot: String },

    /// An update left TOASTed values out and they cannot be read back from
    /// the table (`table` is the quoted name, `columns` the missing ones,
    /// `why` the reason); walhook never delivers a placeholder instead.
    #[error(
        "cannot recover the unchanged TOAST value of {columns} in {table}: {why}. walhook never delivers a placeholder; \
         watch the table with full row images (SELECT walhook.watch('{table}'), which sets REPLICA IDENTITY FULL) \
         so that updates carry complete rows"
    )]
    UnrecoverableToast {
        table: String,
        columns: String,
        why: String,
    },
}

fn no_replication_privilege(role: Option<&str>, server: &str) -> String {
    let (who, name) = match role {
        Some(role) => (format!("the database role {role}"), role),
        None => ("the role walhook connects as".to_owned(), "<name>"),
    };
    format!(
        "{who} may not use replication slots ({server}). Replication capture needs the \
         REPLICATION attribute: ALTER ROLE {name} REPLICATION (on managed databases, grant their replication role, \
         e.g. rds_replication), or run walhook with capture.mode = \"trigger\" (--mode trigger), which needs none"
    )
}

#[cfg(test)]
mod tests {
    use super::Fatal;

    #[test]
    fn a_missing_privilege_names_the_role_when_it_is_known() {
        let named = Fatal::NoReplicationPrivilege {
            role: Some("app".into()),
            server: "permission denied".into(),
        };
        assert_eq!(
            named.to_string(),
            "the database role app may not use replication slots (permission denied). Replication capture \
             needs the REPLICATION attribute: ALTER ROLE app REPLICATION (on managed databases, grant their \
             replication role, e.g. rds_replication), or run walhook with capture.mode = \"trigger\" \
             (--mode trigger), which needs none"
        );
        let unnamed = Fatal::NoReplicationPrivilege {
            role: None,
            server: "permission denied".into(),
        };
        assert!(
            unnamed
                .to_string()
                .starts_with("the role walhook connects as may not use replication slots"),
            "{unnamed}"
        );
        assert!(unnamed
            .to_string()
            .contains("ALTER ROLE <name> REPLICATION"));
    }

    #[test]
    fn the_server_s_words_come_before_the_fix() {
        let error = Fatal::WalLevel {
            server: "logical decoding requires wal_level >= logical".into(),
        };
        assert_eq!(
            error.to_string(),
            "logical decoding requires wal_level >= logical. Replication capture needs wal_level = logical \
             (postgresql.conf, then restart Postgres), or run walhook with capture.mode = \"trigger\""
        );
    }
}
