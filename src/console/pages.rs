//! The console's HTML, written with maud: checked when compiled, and every
//! value from the database escaped (nothing here is marked pre-escaped
//! except markup this file builds itself).

use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::change::{show, Column, DrawnChange};
use super::headers::headers_sent;
use super::queries::{
    Backfill, DeliveryFilter, DeliveryRow, Depth, EventDelivery, EventView, Lag, Subscription,
    TailLine,
};

mod backfills;

pub use backfills::{backfill_table, backfills};

/// What a page needs to render its forms and the banner.
pub struct Frame<'a> {
    pub csrf: &'a str,
    pub notice: Option<&'a str>,
    pub signed_in: bool,
}

pub use super::queries::time;

fn rfc3339(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn layout(frame: &Frame, title: &str, section: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · walhook" }
                link rel="stylesheet" href="/static/console.css";
                script src="/static/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "walhook" }
                    nav {
                        @for (href, name) in [("/", "Overview"), ("/subscriptions", "Subscriptions"), ("/backfills", "Backfills"), ("/tail", "Live tail")] {
                            a href=(href) class=[(section == name).then_some("current")] { (name) }
                        }
                    }
                    @if frame.signed_in {
                        form.signout method="post" action="/sign-out" {
                            input type="hidden" name="csrf" value=(frame.csrf);
                            button.link type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    @if let Some(notice) = frame.notice {
                        p.notice role="status" { (notice) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A POST button for one action, with the CSRF token and where to return.
fn action_button(
    frame: &Frame,
    action: &str,
    id: i64,
    back: &str,
    label: &str,
    class: &str,
) -> Markup {
    html! {
        form.inline method="post" action="/actions" {
            input type="hidden" name="csrf" value=(frame.csrf);
            input type="hidden" name="action" value=(action);
            input type="hidden" name="id" value=(id);
            input type="hidden" name="back" value=(back);
            button type="submit" class=(class) data-action=(action) { (label) }
        }
    }
}

fn state_badge(state: &str) -> Markup {
    html! { span class={ "badge " (state) } { (state) } }
}

fn response(status: Option<i32>, error: Option<&str>) -> Markup {
    html! {
        @match (status, error) {
            (Some(s), _) if (200..300).contains(&s) => span.ok { "HTTP " (s) },
            (Some(s), Some(e)) => span.fail { "HTTP " (s) " · " (e) },
            (Some(s), None) => span.fail { "HTTP " (s) },
            (None, Some(e)) => span.fail { (e) },
            (None, None) => span.muted { "—" },
        }
    }
}

fn chart(rates: &[f64]) -> Markup {
    let width = 600.0;
    let height = 100.0;
    let max = rates.iter().copied().fold(0.0_f64, f64::max).max(1.0);
    let bar = width / rates.len().max(1) as f64;
    html! {
        svg.chart viewBox={ "0 0 " (width) " " (height + 16.0) } role="img"
            aria-label="Deliveries per second over the last five minutes" {
            line x1="0" y1=(height) x2=(width) y2=(height) stroke="#c9ced6" {}
            @for (i, rate) in rates.iter().enumerate() {
                @let h = rate / max * (height - 14.0);
                rect x=(format!("{:.1}", i as f64 * bar + 1.0)) y=(format!("{:.1}", height - h))
                    width=(format!("{:.1}", bar - 2.0)) height=(format!("{:.1}", h)) fill="#3d6fd9" {
                    title { (format!("{rate:.1}/s")) }
                }
            }
            text x="2" y="11" font-size="11" fill="#5b6472" { (format!("{max:.1}/s")) }
            text x="2" y=(height + 13.0) font-size="11" fill="#5b6472" { "5 min ago" }
            text x=(width - 2.0) y=(height + 13.0) font-size="11" fill="#5b6472" text-anchor="end" { "now" }
        }
    }
}

fn subscription_table(frame: &Frame, subs: &[Subscription], back: &str) -> Markup {
    html! {
        @if subs.is_empty() {
            p.muted { "No subscriptions yet. " code { "SELECT walhook.subscribe('https://…', ARRAY['orders.*']);" } " adds one." }
        } @else {
            table.list {
                thead { tr { th { "#" } th { "Endpoint" } th { "Events" } th { "State" } th.num { "Success (1 h)" } th.num { "Median" } th { "Last response" } th { "Actions" } } }
                tbody {
                    @for s in subs {
                        tr.attention[s.needs_attention()] data-subscription=(s.id) {
                            td { a href={ "/subscriptions/" (s.id) } { (s.id) } }
                            td.url {
                                a href={ "/subscriptions/" (s.id) } { (s.url) }
                                @if let Some(d) = &s.description { div.muted { (d) } }
                            }
                            td { @for e in &s.events { code.pattern { (e) } " " } }
                            td {
                                (state_badge(s.state()))
                                @if s.state() == "disabled" { @if let Some(r) = &s.disabled_reason { div.reason { (r) } } }
                                @if s.dead > 0 { div.fail { (s.dead) " dead" } }
                            }
                            td.num { @match s.stats.success_rate() { Some(r) => (format!("{:.1} %", r * 100.0)), None => span.muted { "—" } } }
                            td.num { @match s.stats.median_ms { Some(m) => (format!("{m:.0} ms")), None => span.muted { "—" } } }
                            td { (response(s.stats.last_status, s.stats.last_error.as_deref())) }
                            td.actions { (subscription_actions(frame, s, back)) }
                        }
                    }
                }
            }
        }
    }
}

fn subscription_actions(frame: &Frame, s: &Subscription, back: &str) -> Markup {
    html! {
        @if s.active {
            (action_button(frame, "pause", s.id, back, "Pause", "secondary"))
        } @else {
            (action_button(frame, "resume", s.id, back, "Resume", "secondary"))
        }
        (action_button(frame, "ping", s.id, back, "Send test event", "secondary"))
        a.button.danger href={ "/subscriptions/" (s.id) "/unsubscribe" } { "Unsubscribe…" }
    }
}

pub fn overview(
    frame: &Frame,
    depth: &Depth,
    lag: &Lag,
    rates: &[f64],
    subs: &[Subscription],
    backfills: &[Backfill],
) -> Markup {
    let now = rates.last().copied().unwrap_or(0.0);
    layout(
        frame,
        "Overview",
        "Overview",
        html! {
            h1 { "Overview" }
            section.cards {
                div.card { div.label { "Pending" } div.value id="depth-pending" { (depth.pending) } }
                div.card { div.label { "In flight" } div.value id="depth-in-flight" { (depth.in_flight) } }
                div.card.dead[depth.dead > 0] { div.label { "Dead" } div.value id="depth-dead" { (depth.dead) } }
                div.card {
                    div.label { "Capture lag (" (lag.mode) ")" }
                    div.value {
                        @match lag.amount {
                            Some(n) if lag.mode == "trigger" => { (n) " changes" },
                            Some(n) => { (bytes(n)) },
                            None => span.muted { "no slot yet" },
                        }
                    }
                    div.muted { @match lag.seconds { Some(s) => (format!("{s:.1} s behind")), None => "seconds unknown" } }
                }
            }
            section {
                h2 { "Deliveries per second " span.muted { (format!("{now:.1}/s in the last 15 s")) } }
                (chart(rates))
            }
            section {
                h2 { "Subscriptions " span.muted { "failing and disabled first" } }
                (subscription_table(frame, subs, "/"))
            }
            @if !backfills.is_empty() {
                section {
                    h2 { a href="/backfills" { "Backfills" } " " span.muted { "running, waiting, or ended in the last hour" } }
                    (backfill_table(frame, backfills, "/"))
                }
            }
        },
    )
}

fn bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20)),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

pub fn subscriptions(frame: &Frame, subs: &[Subscription]) -> Markup {
    layout(
        frame,
        "Subscriptions",
        "Subscriptions",
        html! {
            h1 { "Subscriptions" }
            (subscription_table(frame, subs, "/subscriptions"))
        },
    )
}

pub fn subscription(
    frame: &Frame,
    s: &Subscription,
    rows: &[DeliveryRow],
    next: Option<i64>,
    filter: &DeliveryFilter,
) -> Markup {
    let back = format!("/subscriptions/{}", s.id);
    let query = |before: Option<i64>| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(state) = &filter.state {
            q.append_pair("state", state);
        }
        if let Some(t) = &filter.event_type {
            q.append_pair("type", t);
        }
        if let Some(b) = before {
            q.append_pair("before", &b.to_string());
        }
        q.finish()
    };
    layout(
        frame,
        &format!("Subscription {}", s.id),
        "Subscriptions",
        html! {
            h1 { "Subscription " (s.id) " " (state_badge(s.state())) }
            p.url { (s.url) }
            dl.facts {
                dt { "Events" } dd { @for e in &s.events { code.pattern { (e) } " " } }
                @if let Some(d) = &s.description { dt { "Description" } dd { (d) } }
                @if let Some(r) = &s.disabled_reason { dt { "Reason" } dd { (r) } }
                @if let Some(f) = &s.failing_since { dt { "Failing since" } dd { (time(f)) } }
                dt { "Success (1 h)" } dd { @match s.stats.success_rate() { Some(r) => (format!("{:.1} % of {} attempts", r * 100.0, s.stats.attempts_last_hour)), None => "no attempts" } }
                dt { "Median latency" } dd { @match s.stats.median_ms { Some(m) => (format!("{m:.0} ms")), None => "—" } }
                dt { "Last response" } dd { (response(s.stats.last_status, s.stats.last_error.as_deref())) }
                dt { "Created" } dd { (time(&s.created_at)) }
            }
            div.toolbar {
                (subscription_actions(frame, s, &back))
                @if s.dead > 0 {
                    (action_button(frame, "redeliver-dead", s.id, &back, &format!("Redeliver all {} dead", s.dead), "primary"))
                }
                form.inline method="post" action="/actions" {
                    input type="hidden" name="csrf" value=(frame.csrf);
                    input type="hidden" name="action" value="replay";
                    input type="hidden" name="id" value=(s.id);
                    input type="hidden" name="back" value=(back);
                    label { "Replay since (UTC) " input type="datetime-local" name="since" required; }
                    " "
                    button.secondary type="submit" data-action="replay" { "Replay" }
                }
            }
            h2 { "Deliveries" }
            form.filters method="get" action=(back) {
                label { "State "
                    select name="state" {
                        option value="" selected[filter.state.is_none()] { "any" }
                        @for st in ["pending", "in_flight", "delivered", "dead"] {
                            option value=(st) selected[filter.state.as_deref() == Some(st)] { (st) }
                        }
                    }
                }
                label { "Event type " input type="text" name="type" placeholder="orders.update" value=[filter.event_type.as_deref()]; }
                button.secondary type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p.muted { "No deliveries" @if filter.before.is_some() { " further back" } "." }
            } @else {
                table.list.deliveries {
                    thead { tr { th { "#" } th { "Event" } th { "Type" } th { "State" } th.num { "Attempts" } th { "Last response" } th { "Queued" } th {} } }
                    tbody {
                        @for d in rows {
                            tr data-delivery=(d.id) data-state=(d.state) {
                                td { (d.id) }
                                td { a href={ "/events/" (d.event_id) } { code { (d.event_id) } } }
                                td { code { (d.event_type) } }
                                td { (state_badge(&d.state))
                                    @if d.state == "pending" && d.attempts > 0 { div.muted { "retry " (time(&d.next_attempt_at)) } }
                                    @if let Some(at) = &d.delivered_at { div.muted { (time(at)) } } }
                                td.num { (d.attempts) }
                                td { (response(d.last_status, d.last_error.as_deref())) }
                                td { time datetime=(rfc3339(&d.created_at)) { (time(&d.created_at)) } }
                                td { @if d.state == "delivered" || d.state == "dead" {
                                    (action_button(frame, "redeliver", d.id, &format!("{back}?{}", query(filter.before)), "Redeliver", "secondary"))
                                } }
                            }
                        }
                    }
                }
            }
            nav.pages {
                @if filter.before.is_some() { a href={ (back) "?" (query(None)) } { "« Newest" } }
                @if let Some(n) = next { a rel="next" href={ (back) "?" (query(Some(n))) } { "Older »" } }
            }
        },
    )
}

pub fn unsubscribe(frame: &Frame, s: &Subscription) -> Markup {
    layout(
        frame,
        "Unsubscribe",
        "Subscriptions",
        html! {
            h1 { "Unsubscribe " (s.url) "?" }
            p { "Subscription " (s.id) " and its whole delivery history will be removed. "
                "Pausing keeps them; this cannot be undone." }
            div.toolbar {
                (action_button(frame, "unsubscribe", s.id, "/subscriptions", "Yes, unsubscribe", "danger"))
                a.button.secondary href={ "/subscriptions/" (s.id) } { "Cancel" }
            }
        },
    )
}

fn value_cell(value: Option<&Value>, side: &str) -> Markup {
    html! {
        @match value {
            None => td.absent { "—" },
            Some(Value::Null) => td class={ "null " (side) } { "null" },
            Some(v) => td class={ "value " (side) } { (show(v)) },
        }
    }
}

fn change_table(columns: &[Column], arrows: bool) -> Markup {
    html! {
        table.change {
            thead { tr { th { "Column" } th { "Old" } @if arrows { th.arrow {} } th { "New" } } }
            tbody {
                @for c in columns {
                    tr data-column=(c.name) {
                        th scope="row" { (c.name) }
                        (value_cell(c.old.as_ref(), "old"))
                        @if arrows { td.arrow { "→" } }
                        (value_cell(c.new.as_ref(), "new"))
                    }
                }
            }
        }
    }
}

pub fn event(frame: &Frame, ev: &EventView) -> Markup {
    let parsed: Value = serde_json::from_str(&ev.payload).unwrap_or(Value::Null);
    let pretty = serde_json::to_string_pretty(&parsed).unwrap_or_else(|_| ev.payload.clone());
    let drawn = DrawnChange::from_payload(&parsed);
    let field = |name: &str| parsed.get(name).filter(|v| !v.is_null()).map(show);
    let back = format!("/events/{}", ev.id);
    layout(
        frame,
        &ev.event_type,
        "Subscriptions",
        html! {
            h1 { code { (ev.event_type) } }
            p.muted { code { (ev.id) } }
            dl.facts {
                @if let (Some(schema), Some(table)) = (field("schema"), field("table")) { dt { "Table" } dd { code { (schema) "." (table) } } }
                @if let Some(action) = field("action") { dt { "Action" } dd { (action) } }
                dt { "Actor" } dd { @match field("actor") { Some(a) => (a), None => span.muted { "none set" } } }
                dt { "Transaction" } dd { @match ev.txid { Some(t) => (t), None => span.muted { "—" } } }
                dt { "LSN" } dd { @match &ev.lsn { Some(l) => code { (l) }, None => span.muted { "—" } } }
                @if let Some(at) = field("committed_at") { dt { "Committed" } dd { (at) } }
                dt { "Stored" } dd { (time(&ev.created_at)) }
            }
            @if !drawn.is_empty() {
                section.changeset {
                    h2 { "The change" }
                    @if drawn.changed.is_empty() {
                        p.muted { "No column changed." }
                    } @else {
                        (change_table(&drawn.changed, true))
                    }
                    @if !drawn.unchanged.is_empty() {
                        details.unchanged {
                            summary { (drawn.unchanged.len()) " unchanged column" @if drawn.unchanged.len() != 1 { "s" } }
                            (change_table(&drawn.unchanged, true))
                        }
                    }
                }
            }
            section {
                h2 { "Payload " span.muted { "as sent, pretty-printed" } }
                pre.payload { code { (pretty) } }
            }
            @for d in &ev.deliveries {
                (event_delivery(frame, ev, d, &back))
            }
        },
    )
}

fn event_delivery(frame: &Frame, ev: &EventView, d: &EventDelivery, back: &str) -> Markup {
    let last = d.history.last();
    let headers = last.and_then(|a| {
        headers_sent(
            d,
            &ev.id,
            &ev.event_type,
            &ev.payload,
            d.history.len(),
            a.attempted_at,
        )
    });
    html! {
        section.delivery data-delivery=(d.id) {
            h2 { "To " a href={ "/subscriptions/" (d.subscription_id) } { "subscription " (d.subscription_id) } " " (state_badge(&d.state)) }
            p.url { (d.url) }
            @if d.state == "delivered" || d.state == "dead" {
                div.toolbar { (action_button(frame, "redeliver", d.id, back, "Redeliver", "primary")) }
            } @else if d.state == "pending" && !d.history.is_empty() {
                p.muted { "Next attempt " (time(&d.next_attempt_at)) }
            }
            h3 { "Attempts" }
            @if d.history.is_empty() {
                p.muted { "Not attempted yet." }
            } @else {
                table.list.attempts {
                    thead { tr { th { "#" } th { "At" } th { "Response" } th.num { "Duration" } th { "Body" } } }
                    tbody {
                        @for (i, a) in d.history.iter().enumerate() {
                            tr data-attempt=(a.id) {
                                td { (i + 1) }
                                td { (time(&a.attempted_at)) }
                                td { (response(a.status, a.error.as_deref())) }
                                td.num { @if let Some(ms) = a.duration_ms { (ms) " ms" } }
                                td { @match &a.response_body {
                                    Some(b) => details { summary { (b.chars().count()) " characters" } pre.body { (b) } },
                                    None => span.muted { "empty" },
                                } }
                            }
                        }
                    }
                }
            }
            @match headers {
                Some(headers) => {
                    details.headers {
                        summary { "Headers of the last attempt" }
                        table.headers {
                            @for (name, value) in headers { tr { th scope="row" { code { (name) } } td { code { (value) } } } }
                        }
                        p.muted { "Signatures recomputed for the attempt's timestamp; secrets are never shown." }
                    }
                }
                None if d.batch_size > 1 => p.muted { "Sent in batches of up to " (d.batch_size) " events: each request's body was an array, signed as a whole." },
                None => {},
            }
        }
    }
}

pub fn tail(frame: &Frame, lines: &[TailLine]) -> Markup {
    layout(
        frame,
        "Live tail",
        "Live tail",
        html! {
            h1 { "Live tail" }
            div.toolbar {
                button.secondary #tail-pause type="button" hidden { "Pause" }
                span.muted #tail-status { "Live updates need JavaScript; showing the latest attempts." }
            }
            table.list.tail {
                thead { tr { th { "At" } th { "What" } th { "Event" } th { "Type" } th { "Subscription" } th { "Result" } } }
                tbody #tail {
                    @for l in lines {
                        tr data-kind=(l.kind) {
                            td { (l.at) }
                            td { (l.kind) }
                            td { a href={ "/events/" (l.event_id) } { code { (l.event_id) } } }
                            td { code { (l.event_type) } }
                            td { a href={ "/subscriptions/" (l.subscription_id) } { (l.subscription_id) } }
                            td { (response(l.status, l.error.as_deref())) " " (state_badge(&l.state)) }
                        }
                    }
                }
            }
        },
    )
}

pub fn sign_in(next: &str, failed: bool) -> Markup {
    let frame = Frame {
        csrf: "",
        notice: None,
        signed_in: false,
    };
    layout(
        &frame,
        "Sign in",
        "",
        html! {
            h1 { "Sign in" }
            @if failed { p.notice.error role="alert" { "That is not the admin token." } }
            form.signin method="post" action="/sign-in" {
                input type="hidden" name="next" value=(next);
                label { "Admin token " input type="password" name="token" autocomplete="current-password" required autofocus; }
                button.primary type="submit" { "Sign in" }
            }
            p.muted { "The token is the relay's " code { "admin.token" } " (" code { "WALHOOK_ADMIN_TOKEN" } ")." }
        },
    )
}

pub fn problem(frame: &Frame, title: &str, message: &str) -> Markup {
    layout(
        frame,
        title,
        "",
        html! {
            h1 { (title) }
            p.notice.error { (message) }
            p { a href="/" { "Back to the overview" } }
        },
    )
}
