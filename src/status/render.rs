//! Showing the status report: the text `walhook status` prints, one
//! function per section. The layout is what users and scripts read, so it
//! stays as it is; the tests below pin it.

use std::fmt::Write as _;

use super::read::{
    Capture, CaptureSource, FailingSubscription, LastDelivery, StatusReport, SubscriptionCounts,
    UnmatchedPatterns,
};
use crate::deliver::DeliveryState;

/// Continuation lines of a section are indented to its first line's text.
const INDENT: &str = "          ";

impl StatusReport {
    /// The report as `walhook status` prints it, each line ending in a
    /// newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        capture(&mut out, &self.capture);
        outbox(&mut out, &self.outbox);
        last_delivery(&mut out, &self.last_delivery);
        subscriptions(&mut out, &self.subscriptions);
        failing(&mut out, &self.failing);
        unmatched(&mut out, &self.unmatched);
        out.push_str(&self.backfills);
        out
    }
}

fn capture(out: &mut String, capture: &Capture) {
    let _ = writeln!(
        out,
        "capture   mode {}, {} watched table(s)",
        capture.mode, capture.watched
    );
    match &capture.source {
        CaptureSource::Trigger {
            waiting,
            oldest_seconds,
        } => {
            let _ = writeln!(
                out,
                "{INDENT}{waiting} change(s) waiting to be routed, oldest {oldest_seconds:.1}s"
            );
        }
        CaptureSource::Replication { slots } if slots.is_empty() => {
            let _ = writeln!(
                out,
                "{INDENT}no replication slot yet (walhook run creates it)"
            );
        }
        CaptureSource::Replication { slots } => {
            for slot in slots {
                let _ = writeln!(
                    out,
                    "{INDENT}slot {}: {}, confirmed {}, lag {} bytes, wal {}",
                    slot.name,
                    if slot.active { "active" } else { "inactive" },
                    slot.confirmed,
                    slot.lag_bytes,
                    slot.wal_status
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "{INDENT}{:.1} changes captured per second (last minute)",
        capture.events_per_second
    );
}

fn outbox(out: &mut String, depth: &[(DeliveryState, i64)]) {
    let depth: Vec<String> = depth
        .iter()
        .map(|(state, n)| format!("{state} {n}"))
        .collect();
    let _ = writeln!(out, "outbox    {}", depth.join(", "));
}

fn last_delivery(out: &mut String, last: &LastDelivery) {
    match &last.at {
        Some(at) => {
            let ago = last.seconds_ago.unwrap_or(0.0);
            let _ = writeln!(out, "{INDENT}last delivery {at} ({ago:.1}s ago)");
        }
        None => {
            let _ = writeln!(out, "{INDENT}no delivery yet");
        }
    }
    if let Some(age) = last.oldest_pending_seconds {
        let _ = writeln!(out, "{INDENT}oldest pending delivery {age:.1}s old");
    }
}

fn subscriptions(out: &mut String, counts: &SubscriptionCounts) {
    let _ = writeln!(
        out,
        "subscriptions {} active, {} paused, {} disabled",
        counts.active, counts.paused, counts.disabled
    );
}

fn failing(out: &mut String, failing: &[FailingSubscription]) {
    if failing.is_empty() {
        let _ = writeln!(out, "{INDENT}none failing");
        return;
    }
    let _ = writeln!(out, "failing subscriptions:");
    for subscription in failing {
        let _ = writeln!(out, "{}", failing_line(subscription));
    }
}

fn failing_line(s: &FailingSubscription) -> String {
    let mut line = format!("  #{} {}", s.id, s.url);
    if !s.active {
        let _ = write!(line, " [disabled: {}]", s.disabled_reason);
    }
    if !s.failing_since.is_empty() {
        let _ = write!(line, " failing since {}", s.failing_since);
    }
    if s.dead > 0 {
        let _ = write!(line, ", {} dead", s.dead);
    }
    if let Some(error) = s.last_error.as_deref().filter(|e| !e.is_empty()) {
        let _ = write!(line, ", last error: {error}");
    }
    line
}

fn unmatched(out: &mut String, unmatched: &[UnmatchedPatterns]) {
    if unmatched.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "subscriptions with patterns that match no watched table (renamed or dropped?):"
    );
    for subscription in unmatched {
        let _ = writeln!(
            out,
            "  #{} {}",
            subscription.subscription_id, subscription.patterns
        );
    }
}

#[cfg(test)]
mod tests {
    use super::super::read::ReplicationSlot;
    use super::*;

    fn quiet() -> StatusReport {
        StatusReport {
            capture: Capture {
                mode: "replication".into(),
                watched: 0,
                source: CaptureSource::Replication { slots: Vec::new() },
                events_per_second: 0.0,
            },
            outbox: DeliveryState::ALL.iter().map(|s| (*s, 0)).collect(),
            last_delivery: LastDelivery {
                at: None,
                seconds_ago: None,
                oldest_pending_seconds: None,
            },
            subscriptions: SubscriptionCounts {
                active: 0,
                paused: 0,
                disabled: 0,
            },
            failing: Vec::new(),
            unmatched: Vec::new(),
            backfills: String::new(),
        }
    }

    #[test]
    fn a_fresh_install_reads_as_before() {
        assert_eq!(
            quiet().render(),
            "capture   mode replication, 0 watched table(s)\n\
             \x20         no replication slot yet (walhook run creates it)\n\
             \x20         0.0 changes captured per second (last minute)\n\
             outbox    pending 0, in_flight 0, delivered 0, dead 0\n\
             \x20         no delivery yet\n\
             subscriptions 0 active, 0 paused, 0 disabled\n\
             \x20         none failing\n"
        );
    }

    #[test]
    fn a_busy_install_shows_every_section() {
        let mut report = quiet();
        report.capture = Capture {
            mode: "replication".into(),
            watched: 2,
            source: CaptureSource::Replication {
                slots: vec![ReplicationSlot {
                    name: "walhook".into(),
                    active: true,
                    confirmed: "0/16B3748".into(),
                    lag_bytes: 56,
                    wal_status: "reserved".into(),
                }],
            },
            events_per_second: 12.26,
        };
        report.outbox = vec![
            (DeliveryState::Pending, 3),
            (DeliveryState::InFlight, 1),
            (DeliveryState::Delivered, 40),
            (DeliveryState::Dead, 2),
        ];
        report.last_delivery = LastDelivery {
            at: Some("2024-05-01 10:00:00+00".into()),
            seconds_ago: Some(1.04),
            oldest_pending_seconds: Some(0.5),
        };
        report.subscriptions = SubscriptionCounts {
            active: 1,
            paused: 1,
            disabled: 1,
        };
        report.failing = vec![
            FailingSubscription {
                id: 2,
                url: "https://a.test/hook".into(),
                active: false,
                disabled_reason: "gone".into(),
                failing_since: "2024-05-01 09:00:00+00".into(),
                dead: 2,
                last_error: Some("HTTP 410".into()),
            },
            FailingSubscription {
                id: 3,
                url: "https://b.test/hook".into(),
                active: true,
                disabled_reason: String::new(),
                failing_since: String::new(),
                dead: 0,
                last_error: Some(String::new()),
            },
        ];
        report.unmatched = vec![UnmatchedPatterns {
            subscription_id: 4,
            patterns: "public.gone, public.old".into(),
        }];
        report.backfills = "backfills:\n  #1 ...\n".into();
        assert_eq!(
            report.render(),
            "capture   mode replication, 2 watched table(s)\n\
             \x20         slot walhook: active, confirmed 0/16B3748, lag 56 bytes, wal reserved\n\
             \x20         12.3 changes captured per second (last minute)\n\
             outbox    pending 3, in_flight 1, delivered 40, dead 2\n\
             \x20         last delivery 2024-05-01 10:00:00+00 (1.0s ago)\n\
             \x20         oldest pending delivery 0.5s old\n\
             subscriptions 1 active, 1 paused, 1 disabled\n\
             failing subscriptions:\n\
             \x20 #2 https://a.test/hook [disabled: gone] failing since 2024-05-01 09:00:00+00, 2 dead, last error: HTTP 410\n\
             \x20 #3 https://b.test/hook\n\
             subscriptions with patterns that match no watched table (renamed or dropped?):\n\
             \x20 #4 public.gone, public.old\n\
             backfills:\n  #1 ...\n"
        );
    }

    #[test]
    fn trigger_capture_shows_its_backlog() {
        let mut report = quiet();
        report.capture.mode = "trigger".into();
        report.capture.source = CaptureSource::Trigger {
            waiting: 5,
            oldest_seconds: 2.26,
        };
        let text = report.render();
        assert!(
            text.starts_with(
                "capture   mode trigger, 0 watched table(s)\n\
                 \x20         5 change(s) waiting to be routed, oldest 2.3s\n"
            ),
            "{text}"
        );
    }
}
