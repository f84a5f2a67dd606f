//! The watermark windows of chunks being read, shared between a backfill
//! and the capture loop (DBLog's technique).
//!
//! A window opens before its chunk is read, so every change committed after
//! the chunk's snapshot reaches the capture loop while the window is open.
//! The capture loop notes the row key of every change of the table while a
//! window is open. When the chunk's high watermark comes through the change
//! stream (every change committed before the chunk was read has then come
//! through too), the chunk's rows whose key was noted are dropped (their
//! change carries newer data, or at least as new) and the rest are ready to
//! be sent as `read` events, right behind the batch that held the watermark.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::change::{Action, RowChange};
use crate::source::Batch;

/// A chunk of rows read by a backfill, with how to record its progress.
#[derive(Debug)]
pub struct Chunk {
    pub backfill: i64,
    /// Deliver only to this subscription (else by patterns).
    pub subscription: Option<i64>,
    /// The rows as `read` changes, in key order.
    pub rows: Vec<RowChange>,
    /// The key (as text) of the last row done before this chunk.
    pub previous_key: Option<Vec<String>>,
    /// The key of this chunk's last row.
    pub last_key: Vec<String>,
    /// Rows read, including those dropped for a live change.
    pub rows_read: i64,
    /// The table has no row after this chunk.
    pub finished: bool,
}

/// What became of a chunk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Emitted {
    /// The ids of the read events written.
    pub event_ids: Vec<String>,
    /// The progress was recorded (false: the backfill was cancelled, or
    /// the chunk recorded already).
    pub recorded: bool,
}

/// A chunk whose high watermark came through, its changed rows dropped.
#[derive(Debug)]
pub struct Ready {
    pub chunk: Chunk,
    pub done: oneshot::Sender<Emitted>,
}

#[derive(Debug)]
struct Window {
    relid: u32,
    token: String,
    seen: HashSet<String>,
    truncated: bool,
    armed: Option<(Chunk, oneshot::Sender<Emitted>)>,
}

/// The open windows.
#[derive(Debug, Default)]
pub struct Windows {
    open: Mutex<Vec<Window>>,
}

impl Windows {
    /// Opens the window of a chunk of table `relid` about to be read.
    pub fn open(&self, relid: u32, token: &str) {
        self.lock().push(Window {
            relid,
            token: token.to_owned(),
            seen: HashSet::new(),
            truncated: false,
            armed: None,
        });
    }

    /// Hands over the chunk read in window `token`; `done` hears what
    /// became of it.
    pub fn arm(&self, token: &str, chunk: Chunk, done: oneshot::Sender<Emitted>) {
        if let Some(window) = self.lock().iter_mut().find(|w| w.token == token) {
            window.armed = Some((chunk, done));
        }
    }

    /// Forgets a window (the backfill gave up on its chunk).
    pub fn close(&self, token: &str) {
        self.lock().retain(|w| w.token != token);
    }

    /// Notes the batch's changes in the open windows of their tables and
    /// returns the chunks whose high watermark is in the batch. Every
    /// change of the batch counts, also one behind the watermark: dropping
    /// a row that has a change event of its own is always safe.
    pub fn observe(&self, batch: &Batch) -> Vec<Ready> {
        let mut open = self.lock();
        if open.is_empty() {
            return Vec::new();
        }
        for change in &batch.changes {
            for window in open.iter_mut().filter(|w| w.relid == change.table.relid) {
                if change.action == Action::Truncate {
                    window.truncated = true;
                } else {
                    window.seen.insert(change.row_key());
                }
            }
        }
        let mut ready = Vec::new();
        for token in &batch.watermarks {
            let Some(at) = open
                .iter()
                .position(|w| &w.token == token && w.armed.is_some())
            else {
                continue;
            };
            let window = open.swap_remove(at);
            if let Some((mut chunk, done)) = window.armed {
                if window.truncated {
                    chunk.rows.clear();
                } else {
                    chunk
                        .rows
                        .retain(|row| !window.seen.contains(&row.row_key()));
                }
                ready.push(Ready { chunk, done });
            }
        }
        ready
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Window>> {
        // A panic while holding the lock leaves plain data behind.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Position, TableRef};
    use chrono::Utc;
    use serde_json::json;

    fn change(relid: u32, action: Action, id: i64) -> RowChange {
        let row = json!({"id": id}).as_object().cloned().unwrap_or_default();
        RowChange {
            table: TableRef {
                relid,
                schema: "public".into(),
                name: format!("t{relid}"),
            },
            action,
            record: Some(row),
            old_record: None,
            key: vec![json!(id)],
            actor: None,
            txid: 1,
            commit_lsn: None,
            committed_at: Utc::now(),
            position: Position::Capture { id, index: 0 },
        }
    }

    fn chunk(ids: &[i64]) -> Chunk {
        Chunk {
            backfill: 1,
            subscription: None,
            rows: ids.iter().map(|&id| change(7, Action::Read, id)).collect(),
            previous_key: None,
            last_key: vec![],
            rows_read: ids.len() as i64,
            finished: false,
        }
    }

    fn batch(changes: Vec<RowChange>, watermarks: &[&str]) -> Batch {
        Batch {
            changes,
            watermarks: watermarks.iter().map(|w| (*w).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn ids(ready: &Ready) -> Vec<i64> {
        ready
            .chunk
            .rows
            .iter()
            .filter_map(|r| r.key[0].as_i64())
            .collect()
    }

    #[test]
    fn rows_changed_while_the_window_is_open_are_dropped_at_the_watermark() {
        let windows = Windows::default();
        windows.open(7, "w1");
        // Seen before the chunk was handed over: still in the window.
        assert!(windows
            .observe(&batch(vec![change(7, Action::Update, 2)], &[]))
            .is_empty());
        let (done, _) = oneshot::channel();
        windows.arm("w1", chunk(&[1, 2, 3, 4]), done);
        let ready = windows.observe(&batch(
            vec![change(7, Action::Delete, 3), change(8, Action::Update, 4)],
            &["w1"],
        ));
        assert_eq!(ready.len(), 1);
        assert_eq!(
            ids(&ready[0]),
            [1, 4],
            "2 and 3 changed; 4 was another table"
        );
        assert!(
            windows.observe(&batch(vec![], &["w1"])).is_empty(),
            "closed"
        );
    }

    #[test]
    fn a_truncate_drops_the_whole_chunk() {
        let windows = Windows::default();
        windows.open(7, "w");
        let (done, _) = oneshot::channel();
        windows.arm("w", chunk(&[1, 2]), done);
        let ready = windows.observe(&batch(vec![change(7, Action::Truncate, 0)], &["w"]));
        assert_eq!(ids(&ready[0]), Vec::<i64>::new());
    }

    #[test]
    fn unknown_or_unarmed_watermarks_are_ignored() {
        let windows = Windows::default();
        windows.open(7, "w");
        assert!(windows.observe(&batch(vec![], &["w", "other"])).is_empty());
        windows.close("w");
        let (done, _) = oneshot::channel();
        windows.arm("w", chunk(&[1]), done);
        assert!(windows.observe(&batch(vec![], &["w"])).is_empty());
    }
}
