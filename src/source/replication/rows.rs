//! From pgoutput tuples to [`Row`]s: values mapped by their column types in
//! the column order the latest Relation message gave, unchanged TOAST
//! values filled in from the other row image, key values picked out, and
//! the columns `walhook.watch` excluded left out where no publication
//! column list kept them out of the stream already.

use bytes::Bytes;
use serde_json::Value;

use super::pgoutput::{Datum, Relation, RelationColumn, Tuple};
use crate::catalog::Types;
use crate::change::{value, Row, TableRef};

/// A table's shape as the stream last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    /// The table's oid and name.
    pub table: TableRef,
    /// Its columns, in the order tuples carry them.
    pub columns: Vec<RelationColumn>,
    /// Positions (in `columns`) of the primary key columns, in key order;
    /// empty when the table has no primary key.
    pub key: Vec<usize>,
    /// Positions (in `columns`) of the columns no row may carry.
    pub excluded: Vec<usize>,
}

impl RelationInfo {
    /// `key_columns` are the primary key column names from the catalog.
    pub fn new(relation: Relation, key_columns: &[String]) -> RelationInfo {
        let key = key_columns
            .iter()
            .filter_map(|name| relation.columns.iter().position(|c| &c.name == name))
            .collect::<Vec<_>>();
        // A key column missing from the stream's shape (dropped since)
        // leaves a partial key that would order rows wrongly: use none.
        let key = if key.len() == key_columns.len() {
            key
        } else {
            Vec::new()
        };
        RelationInfo {
            table: TableRef {
                relid: relation.relid,
                schema: relation.schema,
                name: relation.name,
            },
            columns: relation.columns,
            key,
            excluded: Vec::new(),
        }
    }

    /// The same relation with the columns named in `excluded` left out of
    /// every row; key columns are never left out.
    pub fn excluding(mut self, excluded: &[String]) -> RelationInfo {
        self.excluded = (0..self.columns.len())
            .filter(|i| !self.key.contains(i) && excluded.contains(&self.columns[*i].name))
            .collect();
        self
    }

    /// Whether the column at `position` is left out of rows.
    pub fn is_excluded(&self, position: usize) -> bool {
        self.excluded.contains(&position)
    }
}

/// Replaces unchanged-TOAST markers in `new` with the value from `old` (a
/// full old row image), and the other way round (an unchanged value is the
/// same in both). Returns the positions still unknown in either tuple.
pub fn fill_unchanged(new: &mut Tuple, old: Option<&mut Tuple>) -> Vec<usize> {
    let mut missing = Vec::new();
    match old {
        Some(old) => {
            for i in 0..new.len().max(old.len()) {
                let (n, o) = (new.get(i).cloned(), old.get(i).cloned());
                match (n, o) {
                    (Some(Datum::Unchanged), Some(Datum::Unchanged)) => missing.push(i),
                    (Some(Datum::Unchanged), Some(known)) => new[i] = known,
                    (Some(known), Some(Datum::Unchanged)) => old[i] = known,
                    (Some(Datum::Unchanged), None) | (None, Some(Datum::Unchanged)) => {
                        missing.push(i)
                    }
                    _ => {}
                }
            }
        }
        None => {
            missing.extend(
                new.iter()
                    .enumerate()
                    .filter(|(_, d)| **d == Datum::Unchanged)
                    .map(|(i, _)| i),
            );
        }
    }
    missing
}

/// Puts values fetched from the table into the unknown positions.
pub fn fill_fetched(tuple: &mut Tuple, position: usize, value: Option<&Bytes>) {
    if let Some(slot) = tuple.get_mut(position) {
        if *slot == Datum::Unchanged {
            *slot = value.map_or(Datum::Null, |v| Datum::Text(v.clone()));
        }
    }
}

/// The row for a tuple, without the excluded columns. `only_keys` keeps
/// just the replica identity columns (an old image that holds only the
/// key: the other columns are not unknown values to show as null).
/// Unchanged markers of columns it keeps must have been resolved; any left
/// become an error naming the column.
pub fn tuple_to_row(
    types: &Types,
    relation: &RelationInfo,
    tuple: &Tuple,
    only_keys: bool,
) -> Result<Row, String> {
    if tuple.len() != relation.columns.len() {
        // The stream and its Relation message disagree: mapping by position
        // would put values under the wrong names.
        return Err(format!(
            "a row of {}.{} has {} values but its relation has {} columns",
            relation.table.schema,
            relation.table.name,
            tuple.len(),
            relation.columns.len()
        ));
    }
    let mut row = Row::new();
    for (position, (column, datum)) in relation.columns.iter().zip(tuple).enumerate() {
        if (only_keys && !column.is_key) || relation.is_excluded(position) {
            continue;
        }
        let value = match datum {
            Datum::Null => Value::Null,
            Datum::Text(bytes) => value::text_to_json(types, column.type_oid, &text_of(bytes)),
            Datum::Unchanged => {
                return Err(format!(
                    "column {} of {}.{} is an unchanged TOAST value whose content is unknown",
                    column.name, relation.table.schema, relation.table.name
                ))
            }
        };
        row.insert(column.name.clone(), value);
    }
    Ok(row)
}

/// The primary key values of a row, in key order.
pub fn key_values(relation: &RelationInfo, row: &Row) -> Vec<Value> {
    relation
        .key
        .iter()
        .filter_map(|&i| relation.columns.get(i))
        .map(|c| row.get(&c.name).cloned().unwrap_or(Value::Null))
        .collect()
}

/// A column's text, which arrives as UTF-8 (the connection's
/// client_encoding). `from_utf8` checks it several bytes at a time, where
/// `from_utf8_lossy` goes byte by byte; only invalid text takes the latter.
fn text_of(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{TypeInfo, TypeKind};
    use serde_json::json;

    fn text(v: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(v.as_bytes()))
    }

    fn types() -> Types {
        let mut types = Types::default();
        types.insert(TypeInfo {
            oid: 23,
            name: "int4".into(),
            kind: TypeKind::Base,
        });
        types.insert(TypeInfo {
            oid: 25,
            name: "text".into(),
            kind: TypeKind::Base,
        });
        types
    }

    fn relation() -> RelationInfo {
        let column = |name: &str, type_oid: u32, is_key: bool| RelationColumn {
            is_key,
            name: name.into(),
            type_oid,
            type_modifier: -1,
        };
        RelationInfo::new(
            Relation {
                relid: 9,
                schema: "public".into(),
                name: "docs".into(),
                replica_identity: b'f',
                columns: vec![
                    column("id", 23, true),
                    column("body", 25, false),
                    column("n", 23, false),
                ],
            },
            &["id".to_owned()],
        )
    }

    #[test]
    fn key_positions_follow_the_catalog() {
        let rel = relation();
        assert_eq!(rel.key, vec![0]);
        let relation = Relation {
            relid: 9,
            schema: "public".into(),
            name: "docs".into(),
            replica_identity: b'f',
            columns: rel.columns.clone(),
        };
        assert_eq!(
            RelationInfo::new(relation.clone(), &["n".into(), "id".into()]).key,
            vec![2, 0]
        );
        assert!(RelationInfo::new(relation.clone(), &[]).key.is_empty());
        assert!(RelationInfo::new(relation, &["id".into(), "gone".into()])
            .key
            .is_empty());
    }

    #[test]
    fn unchanged_values_come_from_the_old_image() {
        let mut new = vec![text("1"), Datum::Unchanged, text("5")];
        let mut old = vec![text("1"), text("long body"), text("4")];
        assert!(fill_unchanged(&mut new, Some(&mut old)).is_empty());
        assert_eq!(new[1], text("long body"));
        let mut new = vec![text("1"), text("x"), Datum::Unchanged];
        let mut old = vec![text("1"), Datum::Unchanged, text("4")];
        assert!(fill_unchanged(&mut new, Some(&mut old)).is_empty());
        assert_eq!((&new[2], &old[1]), (&text("4"), &text("x")));
    }

    #[test]
    fn unknown_unchanged_values_are_reported() {
        let mut new = vec![text("1"), Datum::Unchanged];
        assert_eq!(fill_unchanged(&mut new, None), vec![1]);
        let mut old = vec![text("1"), Datum::Unchanged];
        assert_eq!(fill_unchanged(&mut new, Some(&mut old)), vec![1]);
        fill_fetched(&mut new, 1, Some(&Bytes::from_static(b"fetched")));
        fill_fetched(&mut old, 1, None);
        assert_eq!((&new[1], &old[1]), (&text("fetched"), &Datum::Null));
    }

    #[test]
    fn rows_are_typed_and_in_column_order() {
        let rel = relation();
        let row = tuple_to_row(
            &types(),
            &rel,
            &vec![text("7"), text("hi"), Datum::Null],
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Value::Object(row.clone()),
            json!({"id": 7, "body": "hi", "n": null})
        );
        assert_eq!(row.keys().collect::<Vec<_>>(), ["id", "body", "n"]);
        assert_eq!(key_values(&rel, &row), vec![json!(7)]);
    }

    #[test]
    fn key_only_images_hold_only_the_key() {
        let rel = relation();
        let row = tuple_to_row(
            &types(),
            &rel,
            &vec![text("7"), Datum::Null, Datum::Null],
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Value::Object(row), json!({"id": 7}));
    }

    #[test]
    fn excluded_columns_are_left_out_even_when_unresolved() {
        let rel = relation().excluding(&["body".into(), "id".into(), "gone".into()]);
        assert_eq!(rel.excluded, vec![1], "a key column is never excluded");
        let row = tuple_to_row(
            &types(),
            &rel,
            &vec![text("7"), Datum::Unchanged, text("3")],
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Value::Object(row), json!({"id": 7, "n": 3}));
    }

    #[test]
    fn a_tuple_of_another_shape_is_an_error() {
        let err = tuple_to_row(&types(), &relation(), &vec![text("7")], false)
            .map(|_| ())
            .unwrap_err();
        assert!(
            err.contains("1 values") && err.contains("3 columns"),
            "{err}"
        );
    }

    #[test]
    fn a_left_over_placeholder_is_an_error_not_a_value() {
        let err = tuple_to_row(
            &types(),
            &relation(),
            &vec![text("7"), Datum::Unchanged, Datum::Null],
            false,
        )
        .map(|_| ())
        .unwrap_err();
        assert!(err.contains("body") && err.contains("public.docs"), "{err}");
    }
}
