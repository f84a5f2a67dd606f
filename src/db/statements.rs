//! Statements prepared once per connection and reused.

use std::collections::HashMap;

use tokio_postgres::{GenericClient, Statement};

/// Statements prepared once per connection: one sent as text is parsed,
/// analysed and planned every time, which on the hot path cost Postgres
/// more than running it. Belongs to one connection; drop it with it.
#[derive(Debug, Default)]
pub struct Statements {
    prepared: HashMap<&'static str, Statement>,
}

impl Statements {
    /// The statement for `sql`, prepared on `client` the first time it is
    /// asked for. `client` must be the connection (or a transaction on the
    /// connection) this cache belongs to: a statement is only valid there.
    pub async fn get<C: GenericClient>(
        &mut self,
        client: &C,
        sql: &'static str,
    ) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql).await?;
        self.prepared.insert(sql, statement.clone());
        Ok(statement)
    }
}
