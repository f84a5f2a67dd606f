//! `walhook run`: capture, route, outbox and delivery wired together.
