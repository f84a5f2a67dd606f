//! What the relay knows of the database's tables and types, loaded from the
//! system catalogs and cached: column names and types in table order, the
//! primary key, the columns `walhook.watch` excluded, and the shape of
//! every type a value mapping may meet.

use std::collections::HashMap;
use std::sync::Arc;

use tokio_postgres::Client;

/// One column of a table, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_oid: u32,
}

/// A watched table as the catalog describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub relid: u32,
    pub schema: String,
    pub name: String,
    /// The columns events carry, in table order: every column but those
    /// `walhook.watch` excluded ([`Catalog::excluded_columns`]).
    pub columns: Vec<Column>,
    /// Primary key columns in key order; empty when the table has none.
    pub key_columns: Vec<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// How a type's text form is structured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeKind {
    /// A base type, mapped by its name (`int4`, `numeric`, `timestamptz`, ...).
    Base,
    /// An array of `element`, written with `delimiter` between elements.
    Array {
        element: u32,
        delimiter: char,
    },
    /// A domain over `base`.
    Domain {
        base: u32,
    },
    Enum,
    /// A composite (row) type with its fields in order.
    Composite {
        fields: Vec<Column>,
    },
    Range {
        subtype: u32,
    },
    Multirange,
    /// Pseudo-types and anything else: carried as text.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub oid: u32,
    pub name: String,
    pub kind: TypeKind,
}

/// Every type of the database by oid.
#[derive(Debug, Clone, Default)]
pub struct Types {
    by_oid: HashMap<u32, TypeInfo>,
}

impl Types {
    pub fn get(&self, oid: u32) -> Option<&TypeInfo> {
        self.by_oid.get(&oid)
    }

    pub fn insert(&mut self, info: TypeInfo) {
        self.by_oid.insert(info.oid, info);
    }

    pub fn contains(&self, oid: u32) -> bool {
        self.by_oid.contains_key(&oid)
    }

    /// Loads every type of the database, with the fields of composite types.
    pub async fn load(client: &Client) -> Result<Types, tokio_postgres::Error> {
        let rows = client
            .query(
                "SELECT t.oid, t.typname::text, t.typtype::text, t.typcategory::text, t.typelem,
                        t.typbasetype, t.typdelim::text, t.typrelid,
                        coalesce(r.rngsubtype, 0::oid) AS rngsubtype
                 FROM pg_type t LEFT JOIN pg_range r ON r.rngtypid = t.oid",
                &[],
            )
            .await?;
        let fields = client
            .query(
                "SELECT t.oid, a.attname::text, a.atttypid
                 FROM pg_type t
                 JOIN pg_attribute a ON a.attrelid = t.typrelid
                 WHERE t.typtype = 'c' AND a.attnum > 0 AND NOT a.attisdropped
                   AND t.typnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
                 ORDER BY t.oid, a.attnum",
                &[],
            )
            .await?;
        let mut composite_fields: HashMap<u32, Vec<Column>> = HashMap::new();
        for row in fields {
            composite_fields
                .entry(row.get(0))
                .or_default()
                .push(Column {
                    name: row.get(1),
                    type_oid: row.get(2),
                });
        }
        let mut types = Types::default();
        for row in rows {
            let oid: u32 = row.get(0);
            let typtype: String = row.get(2);
            let category: String = row.get(3);
            let element: u32 = row.get(4);
            let delimiter: String = row.get(6);
            let kind = match typtype.as_str() {
                "b" if category == "A" && element != 0 => TypeKind::Array {
                    element,
                    delimiter: delimiter.chars().next().unwrap_or(','),
                },
                "b" => TypeKind::Base,
                "d" => TypeKind::Domain { base: row.get(5) },
                "e" => TypeKind::Enum,
                "c" => TypeKind::Composite {
                    fields: composite_fields.remove(&oid).unwrap_or_default(),
                },
                "r" => TypeKind::Range {
                    subtype: row.get(8),
                },
                "m" => TypeKind::Multirange,
                _ => TypeKind::Other,
            };
            types.insert(TypeInfo {
                oid,
                name: row.get(1),
                kind,
            });
        }
        Ok(types)
    }
}

/// Tables and types, cached; tables are reloaded when told they changed.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: HashMap<u32, Arc<TableInfo>>,
    /// Per table with any, the names of its excluded columns.
    excluded: HashMap<u32, Vec<String>>,
    pub types: Types,
}

impl Catalog {
    pub async fn load(client: &Client) -> Result<Catalog, tokio_postgres::Error> {
        Ok(Catalog {
            tables: HashMap::new(),
            excluded: HashMap::new(),
            types: Types::load(client).await?,
        })
    }

    /// The columns of the table no event may carry (`walhook.watch`'s
    /// `exclude_columns`, key columns never among them), as of the last
    /// [`Catalog::table`] load; empty for a table not loaded.
    pub fn excluded_columns(&self, relid: u32) -> &[String] {
        self.excluded.get(&relid).map_or(&[], Vec::as_slice)
    }

    /// The table with this oid, from the cache or the catalog; `None` when
    /// it no longer exists.
    pub async fn table(
        &mut self,
        client: &Client,
        relid: u32,
    ) -> Result<Option<Arc<TableInfo>>, tokio_postgres::Error> {
        if let Some(table) = self.tables.get(&relid) {
            return Ok(Some(table.clone()));
        }
        let Some((table, excluded)) = load_table(client, relid).await? else {
            return Ok(None);
        };
        if table
            .columns
            .iter()
            .any(|c| !self.types.contains(c.type_oid))
        {
            self.types = Types::load(client).await?;
        }
        let table = Arc::new(table);
        self.tables.insert(relid, table.clone());
        if excluded.is_empty() {
            self.excluded.remove(&relid);
        } else {
            self.excluded.insert(relid, excluded);
        }
        Ok(Some(table))
    }

    /// Drops the cached shape of a table, so the next use reloads it.
    pub fn forget_table(&mut self, relid: u32) {
        self.tables.remove(&relid);
        self.excluded.remove(&relid);
    }

    /// Reloads every type (after a change introduced one the cache lacks).
    pub async fn reload_types(&mut self, client: &Client) -> Result<(), tokio_postgres::Error> {
        self.types = Types::load(client).await?;
        Ok(())
    }
}

/// The table, and the names of its excluded columns (which its `columns`
/// leave out).
async fn load_table(
    client: &Client,
    relid: u32,
) -> Result<Option<(TableInfo, Vec<String>)>, tokio_postgres::Error> {
    let Some(head) = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&relid],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut columns = Vec::new();
    let mut excluded = Vec::new();
    for row in client
        .query(
            "SELECT a.attname::text, a.atttypid, a.attnum = ANY (x.attnums)
             FROM pg_attribute a, (SELECT walhook.excluded_attnums($1::oid::regclass) AS attnums) x
             WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&relid],
        )
        .await?
    {
        let name: String = row.get(0);
        if row.get::<_, bool>(2) {
            excluded.push(name);
        } else {
            columns.push(Column {
                name,
                type_oid: row.get(1),
            });
        }
    }
    let key_columns = client
        .query(
            "SELECT a.attname::text FROM pg_index i
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.position",
            &[&relid],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    let table = TableInfo {
        relid,
        schema: head.get(0),
        name: head.get(1),
        columns,
        key_columns,
    };
    Ok(Some((table, excluded)))
}
