//! Routing: which subscriptions want which change.
//!
//! Subscriptions are held in memory and reloaded when
//! `walhook.settings.subscriptions_version` moves (checked inside every
//! outbox transaction), so a subscription is in force for every change
//! committed after it.
//!
//! A subscription with options (filter, body, order_key, columns,
//! when_changed) is routed by [`options`]: Postgres decides, in the outbox
//! transaction, which of its changes it gets and how they look. The others
//! are matched by pattern alone, here, as before.

mod options;

use std::collections::{HashMap, HashSet};

use tokio_postgres::GenericClient;

pub use options::{insert_shaped, ShapedInsert};

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
    /// It has options: its changes go through [`options`].
    pub shaped: bool,
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
    /// Deliveries to subscriptions with options, in commit order.
    pub shaped: Vec<Shaped>,
}

impl Routed {
    /// Is there any delivery to write?
    pub fn has_deliveries(&self) -> bool {
        !self.deliveries.is_empty() || !self.shaped.is_empty()
    }
}

/// A delivery as a subscription's options made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    /// Index into [`Routed::events`].
    pub event: usize,
    pub subscription_id: i64,
    /// The order key (`order_key`), `None` for the event's own.
    pub row_key: Option<String>,
    /// The request body (`body`, `columns`), `None` for the event itself.
    pub body: Option<String>,
}

/// The in-memory routing table.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
    version: Option<i64>,
    /// Every subscription with options, routed or not (a backfill may
    /// name one that is paused or disabled).
    shaped: HashSet<i64>,
    /// Per subscription and table, the statement of its options.
    statements: HashMap<(i64, u32), options::Cached>,
    /// Calls of [`Router::route_in`] so far.
    calls: u64,
}

impl Router {
    pub fn with_routes(routes: Vec<Route>) -> Router {
        Router {
            shaped: routes
                .iter()
                .filter(|r| r.shaped)
                .map(|r| r.subscription_id)
                .collect(),
            routes,
            ..Router::default()
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
                "SELECT id, events, active OR disabled_reason = 'paused',
                        filter IS NOT NULL OR body IS NOT NULL OR order_key IS NOT NULL
                        OR columns IS NOT NULL OR when_changed IS NOT NULL
                 FROM walhook.subscriptions ORDER BY id",
                &[],
            )
            .await?;
        self.shaped = rows
            .iter()
            .filter(|row| row.get::<_, bool>(3))
            .map(|row| row.get(0))
            .collect();
        self.routes = rows
            .into_iter()
            .filter(|row| row.get::<_, bool>(2))
            .map(|row| {
                let patterns: Vec<String> = row.get(1);
                Route {
                    subscription_id: row.get(0),
                    patterns: patterns.iter().map(|p| Pattern::parse(p)).collect(),
                    shaped: row.get(3),
                }
            })
            .collect();
        // Options may have changed: their statements are made again.
        self.statements.clear();
        self.version = Some(version);
        tracing::debug!(
            subscriptions = self.routes.len(),
            version,
            "routing reloaded"
        );
        Ok(())
    }

    /// Every change becomes an event; each matching subscription without
    /// options gets a delivery. Subscriptions with options are left out:
    /// [`Router::route_in`] routes them too.
    pub fn route(&self, changes: &[RowChange]) -> Routed {
        self.split(changes, None).0
    }

    /// [`Router::route`], and the `(event, subscription)` pairs that
    /// options decide, in commit order. With `only`, every change goes to
    /// that subscription alone, whatever its patterns.
    fn split(&self, changes: &[RowChange], only: Option<i64>) -> (Routed, Vec<(usize, i64)>) {
        let mut routed = Routed {
            events: Vec::with_capacity(changes.len()),
            ..Routed::default()
        };
        let mut candidates = Vec::new();
        for change in changes {
            let event = change.to_event();
            let index = routed.events.len();
            let mut add = |subscription_id: i64| {
                if self.shaped.contains(&subscription_id) {
                    candidates.push((index, subscription_id));
                } else {
                    routed.deliveries.push((index, subscription_id));
                }
            };
            match only {
                Some(subscription_id) => add(subscription_id),
                None => self
                    .routes
                    .iter()
                    .filter(|route| route.wants_change(change))
                    .for_each(|route| add(route.subscription_id)),
            }
            routed.events.push(event);
        }
        (routed, candidates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: i64, pattern: &str, shaped: bool) -> Route {
        Route {
            subscription_id: id,
            patterns: vec![Pattern::parse(pattern)],
            shaped,
        }
    }

    fn change(table: &str) -> RowChange {
        RowChange {
            table: crate::change::TableRef {
                relid: 1,
                schema: "public".into(),
                name: table.into(),
            },
            action: crate::change::Action::Insert,
            record: Some(serde_json::Map::new()),
            old_record: None,
            key: vec![serde_json::json!(1)],
            actor: None,
            txid: 1,
            commit_lsn: None,
            committed_at: chrono::DateTime::default(),
            position: crate::change::Position::Capture { id: 1, index: 0 },
        }
    }

    #[test]
    fn subscriptions_with_options_are_left_to_postgres() {
        let router = Router::with_routes(vec![
            route(1, "orders.*", false),
            route(2, "orders.*", true),
            route(3, "customers.*", true),
        ]);
        let (routed, candidates) = router.split(&[change("orders"), change("customers")], None);
        assert_eq!(routed.events.len(), 2);
        assert_eq!(routed.deliveries, vec![(0, 1)]);
        assert_eq!(candidates, vec![(0, 2), (1, 3)]);
        assert_eq!(router.route(&[change("orders")]).deliveries, vec![(0, 1)]);
    }

    #[test]
    fn only_sends_every_change_to_one_subscription() {
        let router = Router::with_routes(vec![route(1, "orders.*", false), route(2, "x.*", true)]);
        let (routed, candidates) = router.split(&[change("orders"), change("other")], Some(2));
        assert!(routed.deliveries.is_empty());
        assert_eq!(candidates, vec![(0, 2), (1, 2)]);
        let (routed, candidates) = router.split(&[change("other")], Some(9));
        assert_eq!(routed.deliveries, vec![(0, 9)]);
        assert!(candidates.is_empty());
    }

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
