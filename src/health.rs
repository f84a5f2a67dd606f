//! What `/healthz` reports of each part of the relay: whether the database
//! answers, and whether capture and delivery are working or failing (and
//! since when, with the last error), so an operator sees which part is
//! stuck.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

/// The state of one stage, set by the stage itself.
#[derive(Debug, Default)]
pub struct StageHealth {
    failing: Mutex<Option<(Instant, String)>>,
}

impl StageHealth {
    /// The stage did its work.
    pub fn ok(&self) {
        *self.lock() = None;
    }

    /// The stage failed; the first failure's time is kept.
    pub fn failing(&self, error: &dyn std::fmt::Display) {
        let mut failing = self.lock();
        let since = failing
            .as_ref()
            .map_or_else(Instant::now, |(since, _)| *since);
        *failing = Some((since, error.to_string()));
    }

    /// How long it has been failing, and the last error.
    pub fn failure(&self) -> Option<(Duration, String)> {
        self.lock()
            .as_ref()
            .map(|(since, error)| (since.elapsed(), error.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, String)>> {
        self.failing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What `/healthz` answers: healthy (200) only when nothing is stuck.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub healthy: bool,
    pub body: Value,
}

/// The report from what each part said: `capture` is `capturing` or
/// `standby` (another relay captures).
pub fn report(
    database_reachable: bool,
    capture: &str,
    capture_failure: Option<(Duration, String)>,
    delivery_failure: Option<(Duration, String)>,
) -> Report {
    let mut stuck = Vec::new();
    let mut errors = Map::new();
    if !database_reachable {
        stuck.push("database");
        errors.insert(
            "database".into(),
            json!("the database does not answer (no connection, or SELECT 1 took over 2 s)"),
        );
    }
    let mut capture = capture.to_owned();
    for (part, failure) in [("capture", capture_failure), ("delivery", delivery_failure)] {
        if let Some((since, error)) = failure {
            stuck.push(part);
            errors.insert(
                part.into(),
                json!(format!("failing for {}s: {error}", since.as_secs())),
            );
            if part == "capture" {
                capture = "failing".into();
            }
        }
    }
    let healthy = stuck.is_empty();
    let mut body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "database": if database_reachable { "reachable" } else { "unreachable" },
        "capture": capture,
        "delivery": if stuck.contains(&"delivery") { "failing" } else { "ok" },
    });
    if !healthy {
        body["stuck"] = json!(stuck);
        body["errors"] = Value::Object(errors);
    }
    Report { healthy, body }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_well_is_healthy() {
        let r = report(true, "capturing", None, None);
        assert!(r.healthy);
        assert_eq!(r.body["status"], "ok");
        assert_eq!(r.body["capture"], "capturing");
        assert!(r.body.get("stuck").is_none());
    }

    #[test]
    fn each_stuck_part_is_named() {
        let failing = Some((Duration::from_secs(12), "connection refused".to_owned()));
        let r = report(false, "capturing", failing.clone(), failing);
        assert!(!r.healthy);
        assert_eq!(r.body["status"], "unavailable");
        assert_eq!(r.body["stuck"], json!(["database", "capture", "delivery"]));
        assert_eq!(r.body["capture"], "failing");
        let error = r.body["errors"]["capture"].as_str().unwrap_or_default();
        assert!(
            error.contains("12s") && error.contains("connection refused"),
            "{error}"
        );
        let only_delivery = report(true, "standby", None, Some((Duration::ZERO, "x".into())));
        assert_eq!(only_delivery.body["stuck"], json!(["delivery"]));
        assert_eq!(only_delivery.body["capture"], "standby");
    }

    #[test]
    fn a_stage_remembers_when_it_started_failing() {
        let stage = StageHealth::default();
        assert!(stage.failure().is_none());
        stage.failing(&"first");
        stage.failing(&"second");
        let (_, error) = stage.failure().unwrap_or_default();
        assert_eq!(error, "second");
        stage.ok();
        assert!(stage.failure().is_none());
    }
}
