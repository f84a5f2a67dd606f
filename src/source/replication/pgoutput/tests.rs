//! The decoder checked message by message, on bytes laid out as the
//! protocol documentation gives them; [`Wire`] builds such messages for
//! the replication tests too.

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
