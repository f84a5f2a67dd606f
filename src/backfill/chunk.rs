//! Reading one chunk of a table: the next rows by primary key after the
//! last one done, in one statement (its own short transaction), with every
//! value in the text its type's output function prints, as capture sees
//! it, mapped to JSON by the same value mapping.

use chrono::Utc;
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::catalog::{TableInfo, Types};
use crate::change::value::text_to_json;
use crate::change::{Action, Position, Row, RowChange, TableRef};

/// The output settings capture pins, so values read here print the same.
pub const PINNED_OUTPUT: &str = "SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'iso_8601';
    SET TimeZone = 'UTC'; SET extra_float_digits = 3; SET bytea_output = 'hex';
    SET standard_conforming_strings = on";

/// What a chunk read found.
#[derive(Debug)]
pub struct Read {
    /// The rows as `read` changes, in key order.
    pub rows: Vec<RowChange>,
    /// The key values (as text) of the last row, when there was one.
    pub last_key: Option<Vec<String>>,
}

/// Where the chunk starts and how large it is.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    pub backfill: i64,
    /// The key (as text) of the last row done, `None` at the start.
    pub after: Option<&'a [String]>,
    pub limit: i32,
    /// Rows done before: numbers this chunk's rows (their event ids).
    pub rows_done: i64,
}

/// `"a""b"`: an identifier, quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'it''s'`: a string literal (standard conforming strings).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The statement reading the chunk. `keys` are the key columns with their
/// SQL types, in key order; the row comparison and the order follow the
/// primary key's index.
pub fn chunk_sql(
    table: &TableInfo,
    keys: &[(String, String)],
    after: Option<&[String]>,
    limit: i32,
) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let key_list: Vec<String> = keys.iter().map(|(name, _)| quote_ident(name)).collect();
    let key_list = key_list.join(", ");
    let mut sql = format!(
        "SELECT {} FROM {}.{}",
        columns.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name)
    );
    if let Some(after) = after {
        let values: Vec<String> = keys
            .iter()
            .zip(after)
            .map(|((_, sql_type), value)| format!("{}::{sql_type}", quote_literal(value)))
            .collect();
        sql.push_str(&format!(" WHERE ({key_list}) > ({})", values.join(", ")));
    }
    sql.push_str(&format!(" ORDER BY {key_list} LIMIT {limit}"));
    sql
}

/// The SQL types of the table's key columns, in key order.
pub async fn key_types(
    client: &Client,
    table: &TableInfo,
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped",
            &[&table.relid],
        )
        .await?;
    Ok(table
        .key_columns
        .iter()
        .map(|key| {
            let sql_type = rows
                .iter()
                .find(|r| r.get::<_, &str>(0) == key)
                .map(|r| r.get::<_, String>(1))
                .unwrap_or_else(|| "text".into());
            (key.clone(), sql_type)
        })
        .collect())
}

/// Reads the chunk after `cursor.after`.
pub async fn read(
    client: &Client,
    types: &Types,
    table: &TableInfo,
    keys: &[(String, String)],
    cursor: &Cursor<'_>,
) -> Result<Read, tokio_postgres::Error> {
    let xmin = client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    let sql = chunk_sql(table, keys, cursor.after, cursor.limit);
    let messages = client.simple_query(&sql).await?;
    let read_at = Utc::now();
    let table_ref = TableRef {
        relid: table.relid,
        schema: table.schema.clone(),
        name: table.name.clone(),
    };
    let key_positions: Vec<usize> = table
        .key_columns
        .iter()
        .filter_map(|k| table.columns.iter().position(|c| &c.name == k))
        .collect();
    let mut rows = Vec::new();
    let mut last_key = None;
    for message in messages {
        let SimpleQueryMessage::Row(row) = message else {
            continue;
        };
        let mut record = Row::new();
        for (i, column) in table.columns.iter().enumerate() {
            let value = row.try_get(i)?.map_or(Value::Null, |text| {
                text_to_json(types, column.type_oid, text)
            });
            record.insert(column.name.clone(), value);
        }
        let key_text: Vec<String> = key_positions
            .iter()
            .map(|&i| row.try_get(i).map(|v| v.unwrap_or_default().to_owned()))
            .collect::<Result<_, _>>()?;
        let key = table
            .key_columns
            .iter()
            .map(|k| record.get(k).cloned().unwrap_or(Value::Null))
            .collect();
        let number = cursor.rows_done + rows.len() as i64;
        rows.push(RowChange {
            table: table_ref.clone(),
            action: Action::Read,
            record: Some(record),
            old_record: None,
            key,
            actor: None,
            txid: (xmin & 0xFFFF_FFFF) as u32,
            commit_lsn: None,
            committed_at: read_at,
            position: Position::Read {
                backfill: cursor.backfill,
                row: u64::try_from(number).unwrap_or(0),
            },
        });
        last_key = Some(key_text);
    }
    Ok(Read { rows, last_key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;

    fn table() -> TableInfo {
        TableInfo {
            relid: 1,
            schema: "audit".into(),
            name: "Log \"x\"".into(),
            columns: ["a", "b", "note"]
                .iter()
                .map(|n| Column {
                    name: (*n).into(),
                    type_oid: 25,
                })
                .collect(),
            key_columns: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn the_first_chunk_reads_from_the_start_in_key_order() {
        let keys = [("a".into(), "integer".into()), ("b".into(), "text".into())];
        assert_eq!(
            chunk_sql(&table(), &keys, None, 500),
            r#"SELECT "a", "b", "note" FROM "audit"."Log ""x""" ORDER BY "a", "b" LIMIT 500"#
        );
    }

    #[test]
    fn later_chunks_start_after_the_last_key_with_literals_quoted() {
        let keys = [("a".into(), "integer".into()), ("b".into(), "text".into())];
        let after = ["7".to_owned(), "it's".to_owned()];
        assert_eq!(
            chunk_sql(&table(), &keys, Some(&after), 10),
            r#"SELECT "a", "b", "note" FROM "audit"."Log ""x""" WHERE ("a", "b") > ('7'::integer, 'it''s'::text) ORDER BY "a", "b" LIMIT 10"#
        );
    }
}
