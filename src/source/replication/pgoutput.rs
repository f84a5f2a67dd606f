//! Decoding of the streaming replication messages (XLogData, primary
//! keepalive) and of the `pgoutput` logical replication protocol (version 1)
//! they carry. Pure functions over bytes, so every message is unit-tested
//! byte by byte.
//!
//! Message formats: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>
//! and <https://www.postgresql.org/docs/current/protocol-replication.html>.

use bytes::{BufMut, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("cannot decode a replication message: {0}")]
pub struct DecodeError(pub String);

fn err(message: impl Into<String>) -> DecodeError {
    DecodeError(message.into())
}

/// Microseconds between the Unix epoch and the Postgres epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A Postgres timestamp (microseconds since 2000-01-01 UTC) as a time.
pub fn pg_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS))
        .unwrap_or_default()
}

/// A time as a Postgres timestamp.
pub fn to_pg_time(time: DateTime<Utc>) -> i64 {
    time.timestamp_micros()
        .saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// A message inside the CopyBoth stream, sent by the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// WAL data: one pgoutput message.
    XLogData {
        wal_start: u64,
        wal_end: u64,
        data: Bytes,
    },
    /// The server's position; answer at once when `reply_requested`.
    Keepalive { wal_end: u64, reply_requested: bool },
}

/// Decodes the payload of one CopyData message from the server.
pub fn decode_server_message(data: Bytes) -> Result<ServerMessage, DecodeError> {
    let mut r = Reader::new(data);
    match r.u8()? {
        b'w' => {
            let wal_start = r.u64()?;
            let wal_end = r.u64()?;
            let _send_time = r.i64()?;
            Ok(ServerMessage::XLogData {
                wal_start,
                wal_end,
                data: r.rest(),
            })
        }
        b'k' => {
            let wal_end = r.u64()?;
            let _send_time = r.i64()?;
            let reply_requested = r.u8()? == 1;
            Ok(ServerMessage::Keepalive {
                wal_end,
                reply_requested,
            })
        }
        tag => Err(err(format!(
            "unknown replication message '{}'",
            tag as char
        ))),
    }
}

/// The standby status update: how far the client has written, flushed and
/// applied. The slot's confirmed position follows `flush`.
/// `reply` asks the server to answer at once: a ping on a silent stream.
pub fn standby_status_update(
    write: u64,
    flush: u64,
    apply: u64,
    now: DateTime<Utc>,
    reply: bool,
) -> Bytes {
    let mut buf = BytesMut::with_capacity(34);
    buf.put_u8(b'r');
    buf.put_u64(write);
    buf.put_u64(flush);
    buf.put_u64(apply);
    buf.put_i64(to_pg_time(now));
    buf.put_u8(u8::from(reply));
    buf.freeze()
}

/// One column of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged TOASTed value the server did not send.
    Unchanged,
    /// The value's text form.
    Text(Bytes),
}

impl Datum {
    pub fn text(&self) -> Option<&[u8]> {
        match self {
            Datum::Text(bytes) => Some(bytes),
            _ => None,
        }
    }
}

pub type Tuple = Vec<Datum>;

/// The old row image sent with an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// Only the replica identity (key) columns hold values.
    Key(Tuple),
    /// The whole row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub relid: u32,
    pub schema: String,
    pub name: String,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// A decoded pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    Begin {
        final_lsn: u64,
        committed_at: DateTime<Utc>,
        xid: u32,
    },
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        committed_at: DateTime<Utc>,
    },
    Origin {
        commit_lsn: u64,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        schema: String,
        name: String,
    },
    Insert {
        relid: u32,
        new: Tuple,
    },
    Update {
        relid: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    Delete {
        relid: u32,
        old: OldTuple,
    },
    Truncate {
        cascade: bool,
        restart_identity: bool,
        relids: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: u64,
        prefix: String,
        content: Bytes,
    },
}

/// Decodes one pgoutput message (protocol version 1).
pub fn decode_logical(data: Bytes) -> Result<LogicalMessage, DecodeError> {
    let mut r = Reader::new(data);
    let message = match r.u8()? {
        b'B' => LogicalMessage::Begin {
            final_lsn: r.u64()?,
            committed_at: pg_time(r.i64()?),
            xid: r.u32()?,
        },
        b'C' => {
            let _flags = r.u8()?;
            LogicalMessage::Commit {
                commit_lsn: r.u64()?,
                end_lsn: r.u64()?,
                committed_at: pg_time(r.i64()?),
            }
        }
        b'O' => LogicalMessage::Origin {
            commit_lsn: r.u64()?,
            name: r.cstr()?,
        },
        b'R' => {
            let relid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let replica_identity = r.u8()?;
            let count = r.u16()?;
            let mut columns = Vec::with_capacity(usize::from(count));
            for _ in 0..count {
                let flags = r.u8()?;
                columns.push(RelationColumn {
                    is_key: flags & 1 == 1,
                    name: r.cstr()?,
                    type_oid: r.u32()?,
                    type_modifier: r.i32()?,
                });
            }
            // An empty namespace stands for pg_catalog.
            let schema = if schema.is_empty() {
                "pg_catalog".to_owned()
            } else {
                schema
            };
            LogicalMessage::Relation(Relation {
                relid,
                schema,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => {
            let oid = r.u32()?;
            let schema = r.cstr()?;
            let name = r.cstr()?;
            let schema = if schema.is_empty() {
                "pg_catalog".to_owned()
            } else {
                schema
            };
            LogicalMessage::Type { oid, schema, name }
        }
        b'I' => {
            let relid = r.u32()?;
            r.expect(b'N', "insert")?;
            LogicalMessage::Insert {
                relid,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relid = r.u32()?;
            let mut old = None;
            let mut tag = r.u8()?;
            if tag == b'K' || tag == b'O' {
                let tuple = r.tuple()?;
                old = Some(if tag == b'K' {
                    OldTuple::Key(tuple)
                } else {
                    OldTuple::Full(tuple)
                });
                tag = r.u8()?;
            }
            if tag != b'N' {
                return Err(err(format!("update: expected 'N', got '{}'", tag as char)));
            }
            LogicalMessage::Update {
                relid,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relid = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                tag => {
                    return Err(err(format!(
                        "delete: expected 'K' or 'O', got '{}'",
                        tag as char
                    )))
                }
            };
            LogicalMessage::Delete { relid, old }
        }
        b'T' => {
            let count = r.u32()?;
            let options = r.u8()?;
            let mut relids = Vec::new();
            for _ in 0..count {
                relids.push(r.u32()?);
            }
            LogicalMessage::Truncate {
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relids,
            }
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.u64()?;
            let prefix = r.cstr()?;
            let length = r.u32()? as usize;
            LogicalMessage::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.bytes(length)?,
            }
        }
        tag => return Err(err(format!("unknown pgoutput message '{}'", tag as char))),
    };
    if r.remaining() != 0 {
        return Err(err(format!(
            "{} bytes left over after a complete message",
            r.remaining()
        )));
    }
    Ok(message)
}

/// A cursor over a message that reports truncation instead of panicking.
struct Reader {
    data: Bytes,
    at: usize,
}

impl Reader {
    fn new(data: Bytes) -> Reader {
        Reader { data, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(err(format!(
                "message ends early: wanted {n} bytes at offset {}",
                self.at
            )));
        }
        let slice = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(err(format!(
                "message ends early: wanted {n} bytes at offset {}",
                self.at
            )));
        }
        let out = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn rest(&mut self) -> Bytes {
        let out = self.data.slice(self.at..);
        self.at = self.data.len();
        out
    }

    fn cstr(&mut self) -> Result<String, DecodeError> {
        let rest = &self.data[self.at..];
        let end = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| err("string without terminator"))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.at += end + 1;
        Ok(text)
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<(), DecodeError> {
        let got = self.u8()?;
        if got == want {
            Ok(())
        } else {
            Err(err(format!(
                "{what}: expected '{}', got '{}'",
                want as char, got as char
            )))
        }
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let count = self.u16()?;
        let mut tuple = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            tuple.push(match self.u8()? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let length = self.u32()? as usize;
                    Datum::Text(self.bytes(length)?)
                }
                // Binary values only come with the `binary` option, which is never requested.
                tag => {
                    return Err(err(format!(
                        "tuple column of unknown kind '{}'",
                        tag as char
                    )))
                }
            });
        }
        Ok(tuple)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds messages the way the server writes them.
    #[derive(Default)]
    pub(crate) struct Wire(pub BytesMut);

    impl Wire {
        pub(crate) fn new(tag: u8) -> Wire {
            let mut w = Wire::default();
            w.0.put_u8(tag);
            w
        }
        pub(crate) fn u8(mut self, v: u8) -> Wire {
            self.0.put_u8(v);
            self
        }
        pub(crate) fn u16(mut self, v: u16) -> Wire {
            self.0.put_u16(v);
            self
        }
        pub(crate) fn u32(mut self, v: u32) -> Wire {
            self.0.put_u32(v);
            self
        }
        pub(crate) fn i32(mut self, v: i32) -> Wire {
            self.0.put_i32(v);
            self
        }
        pub(crate) fn u64(mut self, v: u64) -> Wire {
            self.0.put_u64(v);
            self
        }
        pub(crate) fn i64(mut self, v: i64) -> Wire {
            self.0.put_i64(v);
            self
        }
        pub(crate) fn cstr(mut self, v: &str) -> Wire {
            self.0.put_slice(v.as_bytes());
            self.0.put_u8(0);
            self
        }
        pub(crate) fn raw(mut self, v: &[u8]) -> Wire {
            self.0.put_slice(v);
            self
        }
        pub(crate) fn text(self, v: &str) -> Wire {
            self.u8(b't').u32(v.len() as u32).raw(v.as_bytes())
        }
        pub(crate) fn bytes(self) -> Bytes {
            self.0.freeze()
        }
    }

    fn time() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T12:00:00.123456Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn decode(wire: Wire) -> LogicalMessage {
        decode_logical(wire.bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn pg_epoch_round_trips() {
        assert_eq!(pg_time(0).to_rfc3339(), "2000-01-01T00:00:00+00:00");
        assert_eq!(pg_time(to_pg_time(time())), time());
    }

    #[test]
    fn xlogdata_and_keepalive() {
        let data = Wire::new(b'w')
            .u64(0x10)
            .u64(0x20)
            .i64(5)
            .raw(b"Bxyz")
            .bytes();
        assert_eq!(
            decode_server_message(data),
            Ok(ServerMessage::XLogData {
                wal_start: 0x10,
                wal_end: 0x20,
                data: Bytes::from_static(b"Bxyz")
            })
        );
        let keepalive = Wire::new(b'k').u64(0x1_0000_0000).i64(5).u8(1).bytes();
        assert_eq!(
            decode_server_message(keepalive),
            Ok(ServerMessage::Keepalive {
                wal_end: 0x1_0000_0000,
                reply_requested: true
            })
        );
        let keepalive = Wire::new(b'k').u64(7).i64(5).u8(0).bytes();
        assert_eq!(
            decode_server_message(keepalive),
            Ok(ServerMessage::Keepalive {
                wal_end: 7,
                reply_requested: false
            })
        );
        assert!(decode_server_message(Wire::new(b'k').u64(7).bytes()).is_err());
        assert!(decode_server_message(Wire::new(b'?').bytes()).is_err());
    }

    #[test]
    fn standby_status_update_layout() {
        let update = standby_status_update(1, 2, 3, pg_time(4), false);
        let want = Wire::new(b'r').u64(1).u64(2).u64(3).i64(4).u8(0).bytes();
        assert_eq!(update, want);
        let ping = standby_status_update(1, 2, 3, pg_time(4), true);
        let want = Wire::new(b'r').u64(1).u64(2).u64(3).i64(4).u8(1).bytes();
        assert_eq!(ping, want);
    }

    #[test]
    fn begin_and_commit() {
        let begin = Wire::new(b'B')
            .u64(0x16B3748)
            .i64(to_pg_time(time()))
            .u32(74811);
        assert_eq!(
            decode(begin),
            LogicalMessage::Begin {
                final_lsn: 0x16B3748,
                committed_at: time(),
                xid: 74811
            }
        );
        let commit = Wire::new(b'C')
            .u8(0)
            .u64(0x16B3748)
            .u64(0x16B3780)
            .i64(to_pg_time(time()));
        assert_eq!(
            decode(commit),
            LogicalMessage::Commit {
                commit_lsn: 0x16B3748,
                end_lsn: 0x16B3780,
                committed_at: time()
            }
        );
    }

    #[test]
    fn origin() {
        let origin = Wire::new(b'O').u64(9).cstr("upstream");
        assert_eq!(
            decode(origin),
            LogicalMessage::Origin {
                commit_lsn: 9,
                name: "upstream".into()
            }
        );
    }

    #[test]
    fn relation_with_flags_and_catalog_namespace() {
        let relation = Wire::new(b'R')
            .u32(16384)
            .cstr("public")
            .cstr("orders")
            .u8(b'f')
            .u16(2)
            .u8(1)
            .cstr("id")
            .u32(23)
            .i32(-1)
            .u8(0)
            .cstr("total")
            .u32(1700)
            .i32(655366);
        let LogicalMessage::Relation(rel) = decode(relation) else {
            panic!("not a relation")
        };
        assert_eq!(rel.relid, 16384);
        assert_eq!(
            (rel.schema.as_str(), rel.name.as_str(), rel.replica_identity),
            ("public", "orders", b'f')
        );
        assert_eq!(
            rel.columns,
            vec![
                RelationColumn {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1
                },
                RelationColumn {
                    is_key: false,
                    name: "total".into(),
                    type_oid: 1700,
                    type_modifier: 655366
                },
            ]
        );
        let relation = Wire::new(b'R').u32(1).cstr("").cstr("x").u8(b'd').u16(0);
        let LogicalMessage::Relation(rel) = decode(relation) else {
            panic!("not a relation")
        };
        assert_eq!(rel.schema, "pg_catalog");
    }

    #[test]
    fn type_message() {
        let ty = Wire::new(b'Y').u32(90000).cstr("public").cstr("mood");
        assert_eq!(
            decode(ty),
            LogicalMessage::Type {
                oid: 90000,
                schema: "public".into(),
                name: "mood".into()
            }
        );
    }

    #[test]
    fn insert_with_null_and_text() {
        let insert = Wire::new(b'I')
            .u32(5)
            .u8(b'N')
            .u16(3)
            .text("7")
            .u8(b'n')
            .text("");
        assert_eq!(
            decode(insert),
            LogicalMessage::Insert {
                relid: 5,
                new: vec![
                    Datum::Text(Bytes::from_static(b"7")),
                    Datum::Null,
                    Datum::Text(Bytes::new())
                ],
            }
        );
    }

    #[test]
    fn update_without_old_with_key_and_with_full_old() {
        let plain = Wire::new(b'U').u32(5).u8(b'N').u16(1).u8(b'u');
        assert_eq!(
            decode(plain),
            LogicalMessage::Update {
                relid: 5,
                old: None,
                new: vec![Datum::Unchanged]
            }
        );
        let keyed = Wire::new(b'U')
            .u32(5)
            .u8(b'K')
            .u16(1)
            .text("1")
            .u8(b'N')
            .u16(1)
            .text("2");
        assert_eq!(
            decode(keyed),
            LogicalMessage::Update {
                relid: 5,
                old: Some(OldTuple::Key(vec![Datum::Text(Bytes::from_static(b"1"))])),
                new: vec![Datum::Text(Bytes::from_static(b"2"))],
            }
        );
        let full = Wire::new(b'U')
            .u32(5)
            .u8(b'O')
            .u16(1)
            .text("1")
            .u8(b'N')
            .u16(1)
            .u8(b'u');
        assert_eq!(
            decode(full),
            LogicalMessage::Update {
                relid: 5,
                old: Some(OldTuple::Full(vec![Datum::Text(Bytes::from_static(b"1"))])),
                new: vec![Datum::Unchanged],
            }
        );
        assert!(decode_logical(Wire::new(b'U').u32(5).u8(b'X').bytes()).is_err());
    }

    #[test]
    fn delete_key_and_full() {
        let key = Wire::new(b'D').u32(5).u8(b'K').u16(1).text("1");
        assert_eq!(
            decode(key),
            LogicalMessage::Delete {
                relid: 5,
                old: OldTuple::Key(vec![Datum::Text(Bytes::from_static(b"1"))])
            }
        );
        let full = Wire::new(b'D').u32(5).u8(b'O').u16(2).text("1").u8(b'n');
        assert_eq!(
            decode(full),
            LogicalMessage::Delete {
                relid: 5,
                old: OldTuple::Full(vec![Datum::Text(Bytes::from_static(b"1")), Datum::Null]),
            }
        );
    }

    #[test]
    fn truncate_with_options() {
        let truncate = Wire::new(b'T').u32(2).u8(3).u32(5).u32(6);
        assert_eq!(
            decode(truncate),
            LogicalMessage::Truncate {
                cascade: true,
                restart_identity: true,
                relids: vec![5, 6]
            }
        );
    }

    #[test]
    fn logical_message() {
        let message = Wire::new(b'M')
            .u8(1)
            .u64(0x99)
            .cstr("walhook.actor")
            .u32(7)
            .raw(b"user:42");
        assert_eq!(
            decode(message),
            LogicalMessage::Message {
                transactional: true,
                lsn: 0x99,
                prefix: "walhook.actor".into(),
                content: Bytes::from_static(b"user:42"),
            }
        );
    }

    #[test]
    fn truncated_and_trailing_bytes_are_errors() {
        assert!(decode_logical(Wire::new(b'B').u64(1).bytes()).is_err());
        assert!(decode_logical(
            Wire::new(b'I')
                .u32(5)
                .u8(b'N')
                .u16(1)
                .u8(b't')
                .u32(10)
                .raw(b"abc")
                .bytes()
        )
        .is_err());
        assert!(decode_logical(Wire::new(b'O').u64(9).raw(b"no-terminator").bytes()).is_err());
        assert!(decode_logical(Wire::new(b'I').u32(5).u8(b'N').u16(0).u8(0).bytes()).is_err());
        assert!(decode_logical(Wire::new(b'I').u32(5).u8(b'N').u16(1).u8(b'b').bytes()).is_err());
        assert!(decode_logical(Wire::new(b'Z').bytes()).is_err());
        assert!(decode_logical(Bytes::new()).is_err());
    }
}
