//! A setup-order scenario: an empty database with `public.orders`, a
//! receiver, and steps (migrate, watch, subscribe, rows, run) taken in the
//! order a test gives; [`Scenario::finish`] then checks that every change
//! expected arrived once, in order per row, and prints the figures.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use walhook::config::CaptureMode;

use crate::common::{slot_for, Receiver, RelayProcess, TestDb};

/// Rows each `Rows` step inserts (in five transactions), then updates (in
/// one): two events per row.
pub const ROWS_PER_STEP: i64 = 100;
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy)]
pub enum Step {
    /// `walhook migrate --mode <mode>`, the binary.
    Migrate(CaptureMode),
    /// `SELECT walhook.watch('public.orders')`.
    Watch,
    /// `SELECT walhook.subscribe(<receiver>, ARRAY['orders.*'])`.
    Subscribe,
    /// Rows written: inserted, then updated.
    Rows,
    /// `walhook run --mode <mode>`, the binary.
    Run(CaptureMode),
}
use Step::*;

/// A change the receiver should get: (row id, action).
pub type Change = (i64, &'static str);

#[derive(Debug)]
pub struct Figures {
    pub written: usize,
    pub expected: usize,
    pub delivered: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub unexpected: usize,
}

pub struct Scenario {
    pub name: &'static str,
    pub db: TestDb,
    pub client: Client,
    pub notices: Arc<Mutex<Vec<String>>>,
    pub receiver: Receiver,
    pub relay: Option<RelayProcess>,
    pub next_id: i64,
    pub watched: bool,
    pub written: usize,
    pub expected: BTreeSet<Change>,
}

impl Scenario {
    pub async fn new(name: &'static str) -> Scenario {
        let db = TestDb::empty().await;
        let (client, notices) = connect_with_notices(&db.url).await;
        client
            .batch_execute(
                "CREATE TABLE public.orders (id bigint PRIMARY KEY, status text NOT NULL)",
            )
            .await
            .expect("create the table");
        Scenario {
            name,
            db,
            client,
            notices,
            receiver: Receiver::ok().await,
            relay: None,
            next_id: 1,
            watched: false,
            written: 0,
            expected: BTreeSet::new(),
        }
    }

    pub async fn step(&mut self, step: Step) {
        match step {
            Migrate(mode) => {
                let text = migrate(&self.db.url, mode);
                assert!(text.contains(&format!("capture mode {mode}")), "{text}");
            }
            Watch => {
                let text: String = self
                    .client
                    .query_one("SELECT walhook.watch('public.orders')", &[])
                    .await
                    .expect("watch")
                    .get(0);
                assert!(!text.contains("not captured yet"), "{text}");
                let notices = self.notices.lock().expect("notices").clone();
                assert!(
                    !notices.iter().any(|n| n.contains("not captured yet")),
                    "{notices:?}"
                );
                self.watched = true;
            }
            Subscribe => {
                subscribe(&self.client, &self.receiver.url).await;
            }
            Rows => self.write_rows().await,
            Run(mode) => {
                assert!(self.relay.is_none(), "one relay per scenario");
                self.relay = Some(RelayProcess::spawn(&self.db.url, mode));
            }
        }
    }

    /// Inserts, then updates, `ROWS_PER_STEP` new rows; expected when the
    /// table is watched.
    pub async fn write_rows(&mut self) {
        let first = self.next_id;
        let last = first + ROWS_PER_STEP - 1;
        self.next_id = last + 1;
        for chunk in (first..=last).collect::<Vec<_>>().chunks(20) {
            let (low, high) = (chunk[0], chunk[chunk.len() - 1]);
            self.client
                .execute(
                    "INSERT INTO public.orders SELECT g, 'new' FROM generate_series($1::bigint, $2::bigint) g",
                    &[&low, &high],
                )
                .await
                .expect("insert rows");
        }
        self.client
            .execute(
                "UPDATE public.orders SET status = 'paid' WHERE id BETWEEN $1 AND $2",
                &[&first, &last],
            )
            .await
            .expect("update rows");
        self.written += 2 * ROWS_PER_STEP as usize;
        if self.watched {
            for id in first..=last {
                self.expected.insert((id, "insert"));
                self.expected.insert((id, "update"));
            }
        }
    }

    /// Waits for every expected change, stops the relay, checks that
    /// nothing is missing, unexpected or out of order, and reports.
    pub async fn finish(&mut self) -> Figures {
        let deadline = Instant::now() + DELIVERY_TIMEOUT;
        while Instant::now() < deadline
            && !self.expected.is_subset(&received_changes(&self.receiver))
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Room for a late duplicate or stray delivery to show.
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(mut relay) = self.relay.take() {
            let status = relay
                .sigterm(Duration::from_secs(30))
                .expect("the relay exits after SIGTERM");
            assert!(
                status.success(),
                "{}: relay exit status {status:?}",
                self.name
            );
        }
        let received = received_changes(&self.receiver);
        let requests = self.receiver.received();
        let figures = Figures {
            written: self.written,
            expected: self.expected.len(),
            delivered: self.expected.intersection(&received).count(),
            lost: self.expected.difference(&received).count(),
            duplicated: requests.len() - self.receiver.event_ids().len(),
            unexpected: received.difference(&self.expected).count(),
        };
        println!(
            "figures: {}: written {}, expected {}, delivered {}, lost {}, duplicated {}, unexpected {}",
            self.name,
            figures.written,
            figures.expected,
            figures.delivered,
            figures.lost,
            figures.duplicated,
            figures.unexpected
        );
        assert_eq!(
            figures.lost,
            0,
            "{}: lost {:?}",
            self.name,
            self.expected
                .difference(&received)
                .take(10)
                .collect::<Vec<_>>()
        );
        assert_eq!(figures.unexpected, 0, "{}: {figures:?}", self.name);
        assert_inserts_before_updates(&self.receiver, self.name);
        figures
    }
}

/// Runs `steps` in order from an empty database, then writes rows once more
/// with everything in place; nothing expected is lost.
pub async fn scenario(name: &'static str, steps: &[Step]) -> Scenario {
    let mut scenario = Scenario::new(name).await;
    for step in steps {
        scenario.step(*step).await;
    }
    scenario.step(Rows).await;
    scenario
}

pub fn migrate(url: &str, mode: CaptureMode) -> String {
    let (ok, text) = try_migrate(url, mode);
    assert!(ok, "walhook migrate failed: {text}");
    text
}

/// `walhook migrate --mode <mode>`: whether it succeeded, and its output.
pub fn try_migrate(url: &str, mode: CaptureMode) -> (bool, String) {
    let config = std::env::temp_dir().join(format!("walhook-migrate-{}.toml", slot_for(url)));
    std::fs::write(
        &config,
        format!("[capture]\nslot = \"{}\"\n", slot_for(url)),
    )
    .expect("write the config");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"));
    for (name, _) in std::env::vars() {
        if name.starts_with("WALHOOK_") {
            command.env_remove(name);
        }
    }
    let output = command
        .args(["migrate", "--mode", mode.as_str(), "--config"])
        .arg(&config)
        .env("DATABASE_URL", url)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("walhook migrate runs");
    let _ = std::fs::remove_file(&config);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

pub async fn subscribe(client: &Client, url: &str) -> i64 {
    client
        .query_one("SELECT walhook.subscribe($1, ARRAY['orders.*'])", &[&url])
        .await
        .expect("subscribe")
        .get(0)
}

/// A connection whose notices are kept.
pub async fn connect_with_notices(url: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    let notices = Arc::new(Mutex::new(Vec::new()));
    let kept = notices.clone();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                kept.lock()
                    .expect("notices")
                    .push(notice.message().to_owned());
            }
        }
    });
    (client, notices)
}

pub fn received_changes(receiver: &Receiver) -> BTreeSet<Change> {
    received_in_order(receiver).into_iter().collect()
}

pub fn received_in_order(receiver: &Receiver) -> Vec<Change> {
    receiver
        .received()
        .iter()
        .filter_map(|request| {
            let body = request.json();
            let id = body["record"]["id"].as_i64()?;
            let action = match body["action"].as_str()? {
                "insert" => "insert",
                "update" => "update",
                _ => "other",
            };
            Some((id, action))
        })
        .collect()
}

/// A row's insert arrives before its update (commit order per row).
pub fn assert_inserts_before_updates(receiver: &Receiver, name: &str) {
    let mut first_seen: HashMap<Change, usize> = HashMap::new();
    for (index, change) in received_in_order(receiver).into_iter().enumerate() {
        first_seen.entry(change).or_insert(index);
    }
    for (&(id, action), &at) in &first_seen {
        if action == "update" {
            let inserted = first_seen.get(&(id, "insert")).copied();
            assert!(
                inserted.is_some_and(|i| i < at),
                "{name}: row {id}'s update arrived before its insert"
            );
        }
    }
}

pub async fn slot_exists(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slots")
        .get(0)
}

pub async fn recorded_mode(client: &Client) -> String {
    client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await
        .expect("capture mode")
        .get(0)
}
