//! The backfills page (`/backfills`): every backfill with its progress,
//! rate, state and error, a form to start one and a button to cancel one;
//! and the table of backfills the overview shows too.

use maud::{html, Markup};

use super::{action_button, layout, state_badge, time, Frame};
use crate::console::queries::{Backfill, BackfillTargets};

pub fn backfills(frame: &Frame, list: &[Backfill], targets: &BackfillTargets) -> Markup {
    layout(
        frame,
        "Backfills",
        "Backfills",
        html! {
            h1 { "Backfills" }
            p.muted {
                "A backfill sends the rows a watched table already holds as " code { "read" }
                " events, in primary-key order, beside its live changes (which are sent first)."
            }
            (start_form(frame, targets))
            (backfill_table(frame, list, "/backfills"))
        },
    )
}

/// Starts a backfill (`walhook.backfill`) of a watched table with a primary
/// key, to one subscription or to every one whose patterns match.
fn start_form(frame: &Frame, targets: &BackfillTargets) -> Markup {
    html! {
        @if targets.tables.is_empty() {
            p.muted { "No watched table with a primary key to backfill. "
                code { "SELECT walhook.watch('public.orders');" } " watches one." }
        } @else {
            form.toolbar.start-backfill method="post" action="/actions" {
                input type="hidden" name="csrf" value=(frame.csrf);
                input type="hidden" name="action" value="backfill";
                input type="hidden" name="back" value="/backfills";
                label { "Backfill "
                    select name="table" required {
                        @for table in &targets.tables { option value=(table) { (table) } }
                    }
                }
                label { " to "
                    select name="subscription" {
                        option value="" { "every subscription matching <table>.read" }
                        @for (id, url) in &targets.subscriptions {
                            option value=(id) { "subscription " (id) " · " (url) }
                        }
                    }
                }
                button.primary type="submit" data-action="backfill" { "Start backfill" }
            }
        }
    }
}

/// `: N failed tries` while a running backfill's chunk is failing.
fn failing_tries(b: &Backfill) -> Option<String> {
    (b.state == "running" && b.failures > 0).then(|| {
        let tries = if b.failures == 1 { "try" } else { "tries" };
        format!("retrying after {} failed {tries}: ", b.failures)
    })
}

/// The backfills in `list`, newest first; a Cancel button on those still
/// pending or running, which returns to `back`.
pub fn backfill_table(frame: &Frame, list: &[Backfill], back: &str) -> Markup {
    html! {
        @if list.is_empty() {
            p.muted { "No backfills yet. " code { "SELECT walhook.backfill('public.orders');" } " starts one." }
        } @else {
            table.list.backfills {
                thead { tr { th { "#" } th { "Table" } th { "To" } th { "State" } th.num { "Rows done" } th { "Progress" } th.num { "Rate" } th { "Started" } th {} } }
                tbody {
                    @for b in list {
                        tr.attention[b.state == "failed" || b.failures > 0] data-backfill=(b.id) data-state=(b.state) {
                            td { (b.id) }
                            td { code { (b.table_name) } }
                            td { @match b.subscription_id {
                                Some(s) => a href={ "/subscriptions/" (s) } { "subscription " (s) },
                                None => span.muted { "matching subscriptions" },
                            } }
                            td {
                                (state_badge(&b.state))
                                @if let Some(error) = &b.error {
                                    div.reason.backfill-error { @if let Some(tries) = failing_tries(b) { (tries) } (error) }
                                }
                            }
                            td.num {
                                (b.rows_done) @if let Some(estimate) = b.rows_estimated { " of ~" (estimate) }
                                div.muted { (b.rows_sent) " sent" }
                            }
                            td { @match b.done_share() {
                                Some(share) => {
                                    progress max="1" value=(format!("{share:.3}")) { (format!("{:.0} %", share * 100.0)) }
                                    " " span.muted { (format!("{:.0} %", share * 100.0)) }
                                },
                                None => span.muted { "no estimate" },
                            } }
                            td.num { @match b.rows_per_second { Some(rate) => (format!("{rate:.0}/s")), None => span.muted { "—" } } }
                            td {
                                @match &b.started_at { Some(at) => (time(at)), None => span.muted { "not yet" } }
                                @if let Some(at) = &b.finished_at { div.muted { "ended " (time(at)) } }
                            }
                            td.actions { @if b.is_active() {
                                (action_button(frame, "cancel-backfill", b.id, back, "Cancel", "danger"))
                            } }
                        }
                    }
                }
            }
        }
    }
}
