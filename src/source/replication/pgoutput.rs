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
pub(crate) mod tests;
