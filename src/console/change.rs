//! A row change drawn as a change: from an event's payload, the columns
//! whose value changed (old beside new) and the ones that did not.

use serde_json::{Map, Value};

/// One column of the drawn change.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    /// None where the row had no before (an insert).
    pub old: Option<Value>,
    /// None where the row has no after (a delete).
    pub new: Option<Value>,
}

/// The columns of an event's row, changed first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DrawnChange {
    pub changed: Vec<Column>,
    pub unchanged: Vec<Column>,
}

impl DrawnChange {
    /// Reads `record` and `old_record` of an event payload. An insert has
    /// only new values, a delete only old ones; an update lists each column
    /// in the row's order, changed or not. A payload without rows (a
    /// truncate, a ping) draws nothing.
    pub fn from_payload(payload: &Value) -> DrawnChange {
        let new = payload.get("record").and_then(Value::as_object);
        let old = payload.get("old_record").and_then(Value::as_object);
        match (old, new) {
            (Some(old), Some(new)) => compare(old, new),
            (None, Some(new)) => DrawnChange {
                changed: columns(new, |v| (None, Some(v))),
                unchanged: Vec::new(),
            },
            (Some(old), None) => DrawnChange {
                changed: columns(old, |v| (Some(v), None)),
                unchanged: Vec::new(),
            },
            (None, None) => DrawnChange::default(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.unchanged.is_empty()
    }
}

fn columns(
    row: &Map<String, Value>,
    place: impl Fn(Value) -> (Option<Value>, Option<Value>),
) -> Vec<Column> {
    row.iter()
        .map(|(name, value)| {
            let (old, new) = place(value.clone());
            Column {
                name: name.clone(),
                old,
                new,
            }
        })
        .collect()
}

fn compare(old: &Map<String, Value>, new: &Map<String, Value>) -> DrawnChange {
    let mut drawn = DrawnChange::default();
    for (name, after) in new {
        let before = old.get(name).cloned().unwrap_or(Value::Null);
        let column = Column {
            name: name.clone(),
            old: Some(before.clone()),
            new: Some(after.clone()),
        };
        if &before == after {
            drawn.unchanged.push(column);
        } else {
            drawn.changed.push(column);
        }
    }
    // A column the new row lacks (dropped between the two images).
    for (name, before) in old {
        if !new.contains_key(name) {
            drawn.changed.push(Column {
                name: name.clone(),
                old: Some(before.clone()),
                new: None,
            });
        }
    }
    drawn
}

/// A value as the console shows it: strings without quotes, everything
/// else as JSON.
pub fn show(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_update_separates_changed_from_unchanged_columns_in_row_order() {
        let payload = json!({
            "record":     {"id": 7, "status": "paid",    "total": "19.90", "note": null},
            "old_record": {"id": 7, "status": "pending", "total": "19.90", "note": "x"},
        });
        let drawn = DrawnChange::from_payload(&payload);
        let changed: Vec<&str> = drawn.changed.iter().map(|c| c.name.as_str()).collect();
        let unchanged: Vec<&str> = drawn.unchanged.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(changed, ["status", "note"]);
        assert_eq!(unchanged, ["id", "total"]);
        assert_eq!(drawn.changed[0].old, Some(json!("pending")));
        assert_eq!(drawn.changed[0].new, Some(json!("paid")));
        assert_eq!(drawn.changed[1].new, Some(Value::Null));
    }

    #[test]
    fn an_insert_has_only_new_values_and_a_delete_only_old_ones() {
        let insert = DrawnChange::from_payload(&json!({"record": {"id": 1}, "old_record": null}));
        assert_eq!(insert.changed[0].old, None);
        assert_eq!(insert.changed[0].new, Some(json!(1)));
        let delete = DrawnChange::from_payload(&json!({"record": null, "old_record": {"id": 1}}));
        assert_eq!(delete.changed[0].old, Some(json!(1)));
        assert_eq!(delete.changed[0].new, None);
        assert!(DrawnChange::from_payload(&json!({"type": "walhook.ping"})).is_empty());
    }

    #[test]
    fn a_column_only_in_the_old_row_counts_as_changed() {
        let drawn = DrawnChange::from_payload(&json!({
            "record": {"id": 1}, "old_record": {"id": 1, "gone": true}
        }));
        assert_eq!(drawn.changed.len(), 1);
        assert_eq!(drawn.changed[0].name, "gone");
        assert_eq!(drawn.changed[0].new, None);
    }

    #[test]
    fn strings_show_without_quotes_other_values_as_json() {
        assert_eq!(show(&json!("paid")), "paid");
        assert_eq!(show(&json!(null)), "null");
        assert_eq!(show(&json!({"a": [1, true]})), r#"{"a":[1,true]}"#);
    }
}
