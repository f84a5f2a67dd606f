//! Unchanged TOAST values that no old row image carries, read back from
//! the table by primary key.
//!
//! That is the value now, which may be newer than the change; a
//! placeholder would be worse, and tables watched with full row images
//! never get here. When they cannot be read back (no primary key, the row
//! gone), capture stops with [`Fatal::UnrecoverableToast`].

use bytes::Bytes;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tracing::warn;

use super::conn::quote_ident;
use super::pgoutput::{Datum, Tuple};
use super::rows::RelationInfo;
use crate::source::{Fatal, SourceError};

/// The current text of the columns at positions `missing` of `relation`,
/// in that order, for the row whose key `key_source` carries.
pub(super) async fn fetch_unchanged(
    client: &Client,
    relation: &RelationInfo,
    key_source: &Tuple,
    missing: &[usize],
) -> Result<Vec<Option<Bytes>>, SourceError> {
    let table = format!(
        "{}.{}",
        quote_ident(&relation.table.schema),
        quote_ident(&relation.table.name)
    );
    let columns: Vec<&str> = missing
        .iter()
        .filter_map(|&i| relation.columns.get(i))
        .map(|c| c.name.as_str())
        .collect();
    let unrecoverable = |why: &str| {
        SourceError::from(Fatal::UnrecoverableToast {
            table: table.clone(),
            columns: columns.join(", "),
            why: why.to_owned(),
        })
    };
    if relation.key.is_empty() {
        return Err(unrecoverable(
            "the table has no primary key to look the row up by",
        ));
    }
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    for (n, &i) in relation.key.iter().enumerate() {
        let column = relation
            .columns
            .get(i)
            .ok_or_else(|| unrecoverable("its key column is gone"))?;
        let Some(text) = key_source.get(i).and_then(Datum::text) else {
            return Err(unrecoverable("the key value itself was not sent"));
        };
        let type_name: String = client
            .query_one("SELECT format_type($1, NULL)", &[&column.type_oid])
            .await?
            .get(0);
        conditions.push(format!(
            "{} = CAST(${}::text AS {type_name})",
            quote_ident(&column.name),
            n + 1
        ));
        values.push(String::from_utf8_lossy(text).into_owned());
    }
    let select: Vec<String> = columns
        .iter()
        .map(|c| format!("({})::text", quote_ident(c)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {table} WHERE {}",
        select.join(", "),
        conditions.join(" AND ")
    );
    let params: Vec<&(dyn ToSql + Sync)> =
        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
    let Some(row) = client.query_opt(&sql, &params).await? else {
        return Err(unrecoverable("the row no longer exists"));
    };
    warn!(table, columns = ?columns, "read unchanged TOAST values from the table: it is not watched with full row images");
    Ok((0..columns.len())
        .map(|i| row.get::<_, Option<String>>(i).map(Bytes::from))
        .collect())
}
