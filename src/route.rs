//! Routing: which subscriptions want which change.
//!
//! Subscriptions are held in memory and reloaded when
//! `walhook.settings.subscriptions_version` moves (checked inside every
//! outbox transaction), so a subscription is in force for every change
//! committed after it.

use tokio_postgres::GenericClient;

use crate::change::{Event, RowChange};

/// One subscription pattern: `*`, `<table>.<action>`, `<schema>.<table>.<action>`,
/// with `*` for any segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Everything,
    Match {
        table: TablePattern,
        action: Option<String>,
    },
}

/// The table part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TablePattern {
    /// `*`: every table in every schema.
    Any,
    /// `schema.*`: every table of a schema.
    Schema(String),
    /// `orders` (in public) or `audit.log`.
    Exact(String),
}

impl Pattern {
    /// Parses a pattern as stored (the database has already validated it).
    pub fn parse(text: &str) -> Pattern {
        if text == "*" {
            return Pattern::Everything;
        }
        let (table, action) = text.rsplit_once('.').unwrap_or(("*", text));
        let action = (action != "*").then(|| action.to_owned());
        let table = table.strip_prefix("public.").unwrap_or(table);
        let table = if table == "*" {
            TablePattern::Any
        } else if let Some(schema) = table.strip_suffix(".*") {
            TablePattern::Schema(schema.to_owned())
        } else {
            TablePattern::Exact(table.to_owned())
        };
        Pattern::Match { table, action }
    }

    /// Does an event type (`orders.update`, `audit.log.delete`) match?
    pub fn matches(&self, event_type: &str) -> bool {
        let Pattern::Match { table, action } = self else {
            return true;
        };
        let Some((event_table, event_action)) = event_type.rsplit_once('.') else {
            return false;
        };
        if action.as_deref().is_some_and(|a| a != event_action) {
            return false;
        }
        match table {
            TablePattern::Any => true,
            TablePattern::Exact(name) => name == event_table,
            TablePattern::Schema(schema) if schema == "public" => !event_table.contains('.'),
            TablePattern::Schema(schema) => event_table
                .strip_prefix(schema.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
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
                if route.wants(&event.event_type) {
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
}
