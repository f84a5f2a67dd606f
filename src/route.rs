//! Routing: which subscriptions want which change.
//!
//! Subscriptions are held in memory and reloaded when
//! `walhook.settings.subscriptions_version` moves (checked inside every
//! outbox transaction), so a subscription is in force for every change
//! committed after it.

use tokio_postgres::GenericClient;

use crate::change::{Event, RowChange};
use crate::event_type::{self, Part};

/// One subscription pattern: `*`, `<table>.<action>`, `<schema>.<table>.<action>`,
/// with `*` for any part; names that need it are quoted as in event types
/// ([`crate::event_type`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Everything,
    Match {
        schema: Part,
        table: Part,
        action: Part,
    },
    /// Not a well-formed pattern (the database refuses those): matches nothing.
    Nothing,
}

impl Pattern {
    /// Parses a pattern as stored (the database has already validated it).
    pub fn parse(text: &str) -> Pattern {
        let Some(parts) = event_type::split_parts(text) else {
            return Pattern::Nothing;
        };
        let mut parts = parts.into_iter();
        let (schema, table, action) = match (parts.next(), parts.next(), parts.next(), parts.next())
        {
            (Some(Part::Any), None, None, None) => return Pattern::Everything,
            // `*.delete` covers every schema; `orders.*` names a table of public.
            (Some(Part::Any), Some(action), None, None) => (Part::Any, Part::Any, action),
            (Some(table), Some(action), None, None) => {
                (Part::Name("public".to_owned()), table, action)
            }
            (Some(schema), Some(table), Some(action), None) => (schema, table, action),
            _ => return Pattern::Nothing,
        };
        Pattern::Match {
            schema,
            table,
            action,
        }
    }

    /// Does an event type (`orders.update`, `audit.log.delete`,
    /// `"audit.log".insert`) match?
    pub fn matches(&self, event_type: &str) -> bool {
        let names: Option<Vec<String>> = event_type::split_parts(event_type).and_then(|parts| {
            parts
                .into_iter()
                .map(|part| match part {
                    Part::Name(name) => Some(name),
                    Part::Any => None,
                })
                .collect()
        });
        match names.as_deref() {
            Some([table, action]) => self.matches_table("public", table, action),
            Some([schema, table, action]) => self.matches_table(schema, table, action),
            _ => false,
        }
    }

    /// Does a change of `schema.table` with `action` match?
    pub fn matches_table(&self, schema: &str, table: &str, action: &str) -> bool {
        match self {
            Pattern::Everything => true,
            Pattern::Nothing => false,
            Pattern::Match {
                schema: schema_part,
                table: table_part,
                action: action_part,
            } => {
                action_part.accepts(action)
                    && table_part.accepts(table)
                    && schema_part.accepts(schema)
            }
        }
    }
}

/// What routing needs of a subscription.
#[derive(Debug, Clone)]
pub struct Route {
    pub subscription_id: i64,
    pub patterns: Vec<Pattern>,
}

impl Route {
    pub fn wants(&self, event_type: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(event_type))
    }

    /// Does the subscription want this change?
    pub fn wants_change(&self, change: &RowChange) -> bool {
        let (schema, table) = (&change.table.schema, &change.table.name);
        let action = change.action.as_str();
        self.patterns
            .iter()
            .any(|p| p.matches_table(schema, table, action))
    }
}

/// The events of a batch and, for each, the subscriptions it goes to.
#[derive(Debug, Default)]
pub struct Routed {
    pub events: Vec<Event>,
    /// `(index into events, subscription id)`, in commit order.
    pub deliveries: Vec<(usize, i64)>,
}

/// The in-memory routing table.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    version: Option<i64>,
}

impl Router {
    pub fn with_routes(routes: Vec<Route>) -> Router {
        Router {
            routes,
            version: None,
        }
    }

    /// Reloads the subscriptions when they changed since the last load.
    /// Runs inside the outbox transaction, so what it sees is at least as
    /// new as the changes being routed.
    pub async fn refresh<C: GenericClient>(
        &mut self,
        client: &C,
    ) -> Result<(), tokio_postgres::Error> {
        let version: i64 = client
            .query_one(
                "SELECT value::bigint FROM walhook.settings WHERE key = 'subscriptions_version'",
                &[],
            )
            .await?
            .get(0);
        if self.version == Some(version) {
            return Ok(());
        }
        // Paused subscriptions still collect deliveries (sent on resume);
        // ones disabled for failing do not (walhook.replay recovers them).
        let rows = client
            .query(
                "SELECT id, events FROM walhook.subscriptions
                 WHERE active OR disabled_reason = 'paused' ORDER BY id",
                &[],
            )
            .await?;
        self.routes = rows
            .into_iter()
            .map(|row| {
                let patterns: Vec<String> = row.get(1);
                Route {
                    subscription_id: row.get(0),
                    patterns: patterns.iter().map(|p| Pattern::parse(p)).collect(),
                }
            })
            .collect();
        self.version = Some(version);
        tracing::debug!(
            subscriptions = self.routes.len(),
            version,
            "routing reloaded"
        );
        Ok(())
    }

    /// Every change becomes an event; each matching subscription gets a delivery.
    pub fn route(&self, changes: &[RowChange]) -> Routed {
        let mut routed = Routed {
            events: Vec::with_capacity(changes.len()),
            deliveries: Vec::new(),
        };
        for change in changes {
            let event = change.to_event();
            let index = routed.events.len();
            for route in &self.routes {
                if route.wants_change(change) {
                    routed.deliveries.push((index, route.subscription_id));
                }
            }
            routed.events.push(event);
        }
        routed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, event_type: &str) -> bool {
        Pattern::parse(pattern).matches(event_type)
    }

    #[test]
    fn star_matches_everything() {
        assert!(matches("*", "orders.insert"));
        assert!(matches("*", "audit.log.truncate"));
    }

    #[test]
    fn table_patterns() {
        assert!(matches("orders.*", "orders.update"));
        assert!(matches("orders.update", "orders.update"));
        assert!(!matches("orders.update", "orders.delete"));
        assert!(!matches("orders.*", "customers.update"));
        assert!(!matches("orders.*", "audit.orders.update"));
        assert!(matches("public.orders.*", "orders.update"));
    }

    #[test]
    fn any_table_patterns_cover_every_schema() {
        assert!(matches("*.delete", "customers.delete"));
        assert!(matches("*.delete", "audit.log.delete"));
        assert!(!matches("*.delete", "customers.insert"));
        assert!(matches("*.*", "customers.insert"));
    }

    #[test]
    fn schema_patterns() {
        assert!(matches("audit.*.*", "audit.log.insert"));
        assert!(matches("audit.*.delete", "audit.log.delete"));
        assert!(!matches("audit.*.delete", "audit.log.insert"));
        assert!(!matches("audit.*.*", "auditx.log.insert"));
        assert!(!matches("audit.*.*", "orders.insert"));
        assert!(matches("audit.log.*", "audit.log.update"));
        assert!(matches("public.*.insert", "orders.insert"));
        assert!(!matches("public.*.insert", "audit.log.insert"));
    }

    #[test]
    fn quoted_names_match_only_their_own_table() {
        assert!(matches("\"audit.log\".*", "\"audit.log\".insert"));
        assert!(!matches("\"audit.log\".*", "audit.log.insert"));
        assert!(!matches("audit.log.*", "\"audit.log\".insert"));
        assert!(matches(
            "\"Ünïcode Täble\".insert",
            "\"Ünïcode Täble\".insert"
        ));
        assert!(matches("public.\"audit.log\".*", "\"audit.log\".insert"));
        assert!(matches("\"public\".orders.*", "orders.insert"));
        assert!(matches("*.*.insert", "audit.log.insert"));
        assert!(matches("*.orders.insert", "orders.insert"));
        assert!(!matches("\"*\".insert", "orders.insert"));
        assert!(matches("\"*\".insert", "\"*\".insert"));
    }

    #[test]
    fn unquoted_names_keep_their_literal_meaning() {
        assert!(matches("Orders.insert", "\"Orders\".insert"));
        assert!(!matches("Orders.insert", "orders.insert"));
    }

    #[test]
    fn malformed_patterns_match_nothing() {
        assert_eq!(Pattern::parse("a..b"), Pattern::Nothing);
        assert!(!matches("a.b.c.d", "a.b.c.d"));
    }
}
