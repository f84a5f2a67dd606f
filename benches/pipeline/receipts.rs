//! The benchmark's receiver: walhook's own (`walhook::receiver`), keeping
//! no request, only what the figures need ([`Receipts`]), and checking the
//! signatures of one request in a hundred so that it stays faster than
//! what it measures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use walhook::receiver::{Options, Received, Receiver};

use crate::SECRET;

/// Requests whose signatures are checked: one in this many.
const VERIFY_ONE_IN: u64 = 100;

/// What the receiver saw.
#[derive(Default)]
pub struct Receipts {
    ids: Mutex<HashMap<String, u32>>,
    pub seq_at: Mutex<HashMap<i64, Instant>>,
    total: AtomicU64,
    pub verified: AtomicU64,
    pub bad_signatures: AtomicU64,
    first_at: Mutex<Option<Instant>>,
    last_at: Mutex<Option<Instant>>,
}

impl Receipts {
    /// Forgets every receipt (the signature counts stay, for the report).
    pub fn reset(&self) {
        if let Ok(mut m) = self.ids.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.seq_at.lock() {
            m.clear();
        }
        self.total.store(0, Ordering::SeqCst);
        if let Ok(mut l) = self.last_at.lock() {
            *l = None;
        }
        if let Ok(mut f) = self.first_at.lock() {
            *f = None;
        }
    }

    pub fn first_at(&self) -> Option<Instant> {
        self.first_at.lock().ok().and_then(|f| *f)
    }

    /// Distinct `webhook-id`s received.
    pub fn distinct(&self) -> usize {
        self.ids.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Requests received, repeats included.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    pub fn last_at(&self) -> Option<Instant> {
        self.last_at.lock().ok().and_then(|l| *l)
    }

    fn record(&self, request: &Received) {
        let now = request.at;
        self.total.fetch_add(1, Ordering::Relaxed);
        // Requests of the delivery limit's plain client carry no signature.
        if let Some(verdict) = &request.verdict {
            if request.headers.contains_key("webhook-signature") {
                let counter = if verdict.is_ok() {
                    &self.verified
                } else {
                    &self.bad_signatures
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Ok(probe) = serde_json::from_slice::<Probe>(&request.body) {
            if let Some(seq) = probe.record.and_then(|r| r.seq) {
                if let Ok(mut map) = self.seq_at.lock() {
                    map.entry(seq).or_insert(now);
                }
            }
        }
        let id = request
            .headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if let Ok(mut ids) = self.ids.lock() {
            *ids.entry(id).or_insert(0) += 1;
        }
        if let Ok(mut last) = self.last_at.lock() {
            *last = Some(now);
        }
        if let Ok(mut first) = self.first_at.lock() {
            first.get_or_insert(now);
        }
    }
}

#[derive(serde::Deserialize)]
struct Probe {
    record: Option<ProbeRecord>,
}

#[derive(serde::Deserialize)]
struct ProbeRecord {
    seq: Option<i64>,
}

/// A receiver on 127.0.0.1 answering 200, every request counted in
/// `receipts`; it stops when dropped.
pub async fn start_receiver(receipts: Arc<Receipts>) -> anyhow::Result<Receiver> {
    let options = Options::new()
        .secret(SECRET)
        .verify_one_in(VERIFY_ONE_IN)
        .forget()
        .observe(move |request| receipts.record(request));
    Ok(Receiver::start(options).await?)
}
