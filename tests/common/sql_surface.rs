//! Support for tests of the SQL surface: connections that keep the
//! notices and warnings Postgres sends, login roles of a test's own, every
//! text an error carries, and the table of event-type matching cases that
//! the SQL and the Rust matcher are both held to.

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio_postgres::error::DbError;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// A connection and the notices it has received so far.
pub struct Noticed {
    pub client: Client,
    notices: Arc<Mutex<Vec<DbError>>>,
}

impl Noticed {
    pub async fn connect(url: &str) -> Noticed {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls)
            .await
            .expect("connect to the test database");
        let notices = Arc::new(Mutex::new(Vec::new()));
        let kept = notices.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                if let AsyncMessage::Notice(notice) = message {
                    kept.lock().expect("notices").push(notice);
                }
            }
        });
        Noticed { client, notices }
    }

    /// Every notice so far as `SEVERITY: message | detail | hint`, cleared.
    pub fn take(&self) -> Vec<String> {
        let mut notices = self.notices.lock().expect("notices");
        notices.drain(..).map(|n| full_text(&n)).collect()
    }
}

/// Everything a database error or notice says: severity, message, detail, hint.
pub fn full_text(error: &DbError) -> String {
    format!(
        "{}: {} | {} | {}",
        error.severity(),
        error.message(),
        error.detail().unwrap_or(""),
        error.hint().unwrap_or("")
    )
}

/// The full text of the error `sql` fails with.
pub async fn failure_of(client: &Client, sql: &str) -> String {
    let error = client.batch_execute(sql).await.expect_err(sql);
    match error.as_db_error() {
        Some(db) => full_text(db),
        None => format!("{error:#}"),
    }
}

/// A LOGIN role of one test, member of `groups`; dropped by [`TestRole::drop_in`].
pub struct TestRole {
    pub name: String,
    pub url: String,
}

impl TestRole {
    pub async fn create(
        db: &super::TestDb,
        prefix: &str,
        attributes: &str,
        groups: &[&str],
    ) -> TestRole {
        let name = format!("{prefix}_{}", rand::random::<u32>());
        let admin = super::connect(&super::server_url()).await;
        admin
            .batch_execute(&format!("CREATE ROLE {name} LOGIN {attributes}"))
            .await
            .expect("create test role");
        for group in groups {
            admin
                .batch_execute(&format!("GRANT {group} TO {name}"))
                .await
                .expect("grant group role");
        }
        let mut url = url::Url::parse(&db.url).expect("test database URL");
        url.set_username(&name).expect("URL takes a user name");
        TestRole {
            name,
            url: url.to_string(),
        }
    }

    /// Drops the role once nothing holds on to it any more.
    pub async fn drop_in_server(self) {
        let admin = super::connect(&super::server_url()).await;
        let _ = admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name))
            .await;
    }

    /// Drops what the role holds in `db`, then the role.
    pub async fn drop_in(self, db: &super::TestDb) {
        let client = db.client().await;
        let _ = client
            .batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{0}';
                 DROP OWNED BY {0}",
                self.name
            ))
            .await;
        let admin = super::connect(&super::server_url()).await;
        let _ = admin
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", self.name))
            .await;
    }
}

/// `(pattern, event type, matches)`: the rule of docs/events.md, which
/// `walhook.event_type_matches` and `walhook::route::Pattern` both follow.
pub const MATCH_CASES: &[(&str, &str, bool)] = &[
    ("*", "orders.insert", true),
    ("*", "audit.log.truncate", true),
    ("*", "\"audit.log\".insert", true),
    ("orders.*", "orders.update", true),
    ("orders.update", "orders.update", true),
    ("orders.update", "orders.delete", false),
    ("orders.*", "customers.update", false),
    ("orders.*", "audit.orders.update", false),
    ("public.orders.*", "orders.update", true),
    ("\"public\".orders.*", "orders.update", true),
    ("*.delete", "customers.delete", true),
    ("*.delete", "audit.log.delete", true),
    ("*.delete", "customers.insert", false),
    ("*.*", "customers.insert", true),
    ("*.*", "\"Ünïcode Täble\".read", true),
    ("audit.*.*", "audit.log.insert", true),
    ("audit.*.delete", "audit.log.delete", true),
    ("audit.*.delete", "audit.log.insert", false),
    ("audit.*.*", "auditx.log.insert", false),
    ("audit.*.*", "orders.insert", false),
    ("audit.log.*", "audit.log.update", true),
    ("public.*.insert", "orders.insert", true),
    ("public.*.insert", "audit.log.insert", false),
    ("public.*.insert", "\"audit.log\".insert", true),
    // A dot inside a name never splits it.
    ("audit.log.*", "\"audit.log\".insert", false),
    ("\"audit.log\".*", "audit.log.insert", false),
    ("\"audit.log\".*", "\"audit.log\".insert", true),
    ("public.\"audit.log\".insert", "\"audit.log\".insert", true),
    ("\"audit\".\"log\".insert", "audit.log.insert", true),
    ("\"Ünïcode Täble\".insert", "\"Ünïcode Täble\".insert", true),
    (
        "\"Ünïcode Täble\".insert",
        "\"Ünïcode Täble\".update",
        false,
    ),
    ("\"a\"\"b\".*", "\"a\"\"b\".delete", true),
    ("\"a\"\"b\".*", "\"a\"\"\"\"b\".delete", false),
    ("\"My Schema\".*.*", "\"My Schema\".t.insert", true),
    ("\"My Schema\".*.*", "\"my schema\".t.insert", false),
    // Unquoted names are taken literally, as they always were.
    ("Orders.insert", "\"Orders\".insert", true),
    ("Orders.insert", "orders.insert", false),
    // `*` is a whole unquoted part; a quoted "*" is a name.
    ("\"*\".insert", "orders.insert", false),
    ("\"*\".insert", "\"*\".insert", true),
    ("ord*.insert", "orders.insert", false),
    ("*.*.insert", "audit.log.insert", true),
    ("*.orders.insert", "orders.insert", true),
    ("*.orders.insert", "sales.orders.insert", true),
    ("*.orders.insert", "sales.items.insert", false),
    // Not event types: nothing matches them.
    ("*", "a.b.c.d", false),
    ("*", "a..insert", false),
];
