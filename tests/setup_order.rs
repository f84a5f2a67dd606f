//! Setup order does not matter: every change to a watched table committed
//! after `walhook migrate` and `walhook.watch` returned is delivered,
//! whatever the order of migrate, watch, subscribe and run, in both capture
//! modes, also when `migrate` runs twice or `run` uses the other mode.
//!
//! A subscription gets the changes the relay routes while it is active:
//! changes written before it exists, while no relay runs, are routed when
//! the relay starts and so are delivered to it; changes a relay routed
//! before it existed are not.
//!
//! Each scenario prints its figures (changes written, expected, delivered,
//! lost, duplicated); `cargo nextest run --test setup_order --no-capture`
//! shows them.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{slot_for, Receiver, RelayProcess, TestDb};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use walhook::config::CaptureMode;
use CaptureMode::{Replication, Trigger};

/// Rows each `Rows` step inserts (in five transactions), then updates (in
/// one): two events per row.
const ROWS_PER_STEP: i64 = 100;
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy)]
enum Step {
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
type Change = (i64, &'static str);

#[derive(Debug)]
struct Figures {
    written: usize,
    expected: usize,
    delivered: usize,
    lost: usize,
    duplicated: usize,
    unexpected: usize,
}

struct Scenario {
    name: &'static str,
    db: TestDb,
    client: Client,
    notices: Arc<Mutex<Vec<String>>>,
    receiver: Receiver,
    relay: Option<RelayProcess>,
    next_id: i64,
    watched: bool,
    written: usize,
    expected: BTreeSet<Change>,
}

impl Scenario {
    async fn new(name: &'static str) -> Scenario {
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

    async fn step(&mut self, step: Step) {
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
    async fn write_rows(&mut self) {
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
    async fn finish(&mut self) -> Figures {
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
async fn scenario(name: &'static str, steps: &[Step]) -> Scenario {
    let mut scenario = Scenario::new(name).await;
    for step in steps {
        scenario.step(*step).await;
    }
    scenario.step(Rows).await;
    scenario
}

fn migrate(url: &str, mode: CaptureMode) -> String {
    let (ok, text) = try_migrate(url, mode);
    assert!(ok, "walhook migrate failed: {text}");
    text
}

/// `walhook migrate --mode <mode>`: whether it succeeded, and its output.
fn try_migrate(url: &str, mode: CaptureMode) -> (bool, String) {
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

async fn subscribe(client: &Client, url: &str) -> i64 {
    client
        .query_one("SELECT walhook.subscribe($1, ARRAY['orders.*'])", &[&url])
        .await
        .expect("subscribe")
        .get(0)
}

/// A connection whose notices are kept.
async fn connect_with_notices(url: &str) -> (Client, Arc<Mutex<Vec<String>>>) {
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

fn received_changes(receiver: &Receiver) -> BTreeSet<Change> {
    received_in_order(receiver).into_iter().collect()
}

fn received_in_order(receiver: &Receiver) -> Vec<Change> {
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
fn assert_inserts_before_updates(receiver: &Receiver, name: &str) {
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

async fn slot_exists(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT count(*) > 0 FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .expect("slots")
        .get(0)
}

async fn recorded_mode(client: &Client) -> String {
    client
        .query_one("SELECT walhook.capture_mode()", &[])
        .await
        .expect("capture mode")
        .get(0)
}

// The README's quick start: migrate, watch, subscribe, rows, then run.

#[tokio::test]
async fn quick_start_order_replication() {
    quick_start_order(Replication, "quick start, replication").await;
}

#[tokio::test]
async fn quick_start_order_trigger() {
    quick_start_order(Trigger, "quick start, trigger").await;
}

async fn quick_start_order(mode: CaptureMode, name: &'static str) {
    let mut scenario = scenario(name, &[Migrate(mode), Watch, Subscribe, Rows, Run(mode)]).await;
    if mode == Replication {
        assert!(
            slot_exists(&scenario.client, &slot_for(&scenario.db.url)).await,
            "migrate created the slot"
        );
    }
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
}

// Subscribe first, rows written before the table is watched (not
// captured), then watch.

#[tokio::test]
async fn subscribe_before_watch_replication() {
    let steps = [
        Migrate(Replication),
        Subscribe,
        Rows,
        Watch,
        Rows,
        Run(Replication),
    ];
    scenario("subscribe before watch, replication", &steps)
        .await
        .finish()
        .await;
}

#[tokio::test]
async fn subscribe_before_watch_trigger() {
    let steps = [Migrate(Trigger), Subscribe, Rows, Watch, Rows, Run(Trigger)];
    scenario("subscribe before watch, trigger", &steps)
        .await
        .finish()
        .await;
}

// Rows written before the subscription exists, while no relay runs: the
// relay routes them when it starts, to the subscription then active.

#[tokio::test]
async fn rows_before_subscribe_replication() {
    let steps = [
        Migrate(Replication),
        Watch,
        Rows,
        Subscribe,
        Rows,
        Run(Replication),
    ];
    let figures = scenario("rows before subscribe, replication", &steps)
        .await
        .finish()
        .await;
    assert_eq!(figures.expected, 6 * ROWS_PER_STEP as usize);
}

#[tokio::test]
async fn rows_before_subscribe_trigger() {
    let steps = [Migrate(Trigger), Watch, Rows, Subscribe, Rows, Run(Trigger)];
    let figures = scenario("rows before subscribe, trigger", &steps)
        .await
        .finish()
        .await;
    assert_eq!(figures.expected, 6 * ROWS_PER_STEP as usize);
}

// The relay first, then watch and subscribe.

#[tokio::test]
async fn run_before_watch_replication() {
    let steps = [
        Migrate(Replication),
        Run(Replication),
        Subscribe,
        Watch,
        Rows,
    ];
    scenario("run before watch, replication", &steps)
        .await
        .finish()
        .await;
}

#[tokio::test]
async fn run_before_watch_trigger() {
    let steps = [Migrate(Trigger), Run(Trigger), Subscribe, Watch, Rows];
    scenario("run before watch, trigger", &steps)
        .await
        .finish()
        .await;
}

// migrate twice, with rows between.

#[tokio::test]
async fn migrate_twice_replication() {
    let mut scenario = scenario(
        "migrate twice, replication",
        &[Migrate(Replication), Watch, Subscribe, Rows],
    )
    .await;
    let again = migrate(&scenario.db.url, Replication);
    assert!(again.contains("up to date"), "{again}");
    assert!(
        again.contains("exists"),
        "the second migrate keeps the slot: {again}"
    );
    assert!(!again.contains("switched"), "{again}");
    scenario.step(Rows).await;
    scenario.step(Run(Replication)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

#[tokio::test]
async fn migrate_twice_trigger() {
    let mut scenario = scenario(
        "migrate twice, trigger",
        &[Migrate(Trigger), Watch, Subscribe, Rows],
    )
    .await;
    let again = migrate(&scenario.db.url, Trigger);
    assert!(
        again.contains("up to date") && !again.contains("switched"),
        "{again}"
    );
    scenario.step(Rows).await;
    scenario.step(Run(Trigger)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

// migrate in one mode, run in the other: the relay switches without losing
// what the first mode captured.

#[tokio::test]
async fn migrate_replication_then_run_trigger() {
    let mut scenario = scenario(
        "migrate replication, run trigger",
        &[Migrate(Replication), Watch, Subscribe, Rows, Run(Trigger)],
    )
    .await;
    let slot = slot_for(&scenario.db.url);
    let client = scenario.db.client().await;
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
    assert_eq!(recorded_mode(&client).await, "trigger");
    assert!(
        !slot_exists(&client, &slot).await,
        "the trigger-mode relay dropped the drained slot"
    );
}

#[tokio::test]
async fn migrate_trigger_then_run_replication() {
    let mut scenario = scenario(
        "migrate trigger, run replication",
        &[Migrate(Trigger), Watch, Subscribe, Rows, Run(Replication)],
    )
    .await;
    let client = scenario.db.client().await;
    let figures = scenario.finish().await;
    assert_eq!(figures.expected, 4 * ROWS_PER_STEP as usize);
    assert_eq!(recorded_mode(&client).await, "replication");
    let left: i64 = client
        .query_one("SELECT count(*) FROM walhook.capture", &[])
        .await
        .expect("capture rows")
        .get(0);
    assert_eq!(left, 0, "what the triggers captured went to the outbox");
}

// migrate switches the mode itself, with rows on both sides of the switch.

#[tokio::test]
async fn migrate_switches_replication_to_trigger() {
    let mut scenario = scenario(
        "migrate switches replication to trigger",
        &[Migrate(Replication), Watch, Subscribe, Rows],
    )
    .await;
    let text = migrate(&scenario.db.url, Trigger);
    assert!(text.contains("switched from replication"), "{text}");
    scenario.step(Rows).await;
    scenario.step(Run(Trigger)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

#[tokio::test]
async fn migrate_switches_trigger_to_replication() {
    let mut scenario = scenario(
        "migrate switches trigger to replication",
        &[Migrate(Trigger), Watch, Subscribe, Rows],
    )
    .await;
    let text = migrate(&scenario.db.url, Replication);
    assert!(text.contains("switched from trigger"), "{text}");
    scenario.step(Rows).await;
    scenario.step(Run(Replication)).await;
    scenario.step(Rows).await;
    scenario.finish().await;
}

// A subscription gets what the relay routes while it is active, not what
// was routed before it existed.

#[tokio::test]
async fn subscription_gets_changes_routed_while_it_is_active_replication() {
    routed_while_active(Replication).await;
}

#[tokio::test]
async fn subscription_gets_changes_routed_while_it_is_active_trigger() {
    routed_while_active(Trigger).await;
}

async fn routed_while_active(mode: CaptureMode) {
    let name = match mode {
        Replication => "routed while active, replication",
        Trigger => "routed while active, trigger",
    };
    let mut scenario = Scenario::new(name).await;
    for step in [Migrate(mode), Watch, Subscribe, Run(mode), Rows] {
        scenario.step(step).await;
    }
    let before = scenario.expected.len();
    let got = scenario.receiver.wait_for(before, DELIVERY_TIMEOUT).await;
    assert!(
        got.len() >= before,
        "the first subscription got the first rows"
    );
    let late = Receiver::ok().await;
    subscribe(&scenario.client, &late.url).await;
    let first_late_row = scenario.next_id;
    scenario.step(Rows).await;
    let want = 2 * ROWS_PER_STEP as usize;
    let got = late.wait_for(want, DELIVERY_TIMEOUT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let late_changes = received_changes(&late);
    assert_eq!(
        late_changes.len(),
        want,
        "{name}: the late subscription got {}",
        got.len()
    );
    assert!(
        late_changes.iter().all(|(id, _)| *id >= first_late_row),
        "{name}: the late subscription got changes routed before it existed"
    );
    scenario.finish().await;
}

// walhook.watch says when the capture it installs has nowhere to go yet.

#[tokio::test]
async fn watch_notices_a_missing_slot() {
    let db = TestDb::new().await; // migrated without capture set up: replication, no slot
    let (client, notices) = connect_with_notices(&db.url).await;
    client
        .batch_execute("CREATE TABLE public.orders (id bigint PRIMARY KEY)")
        .await
        .expect("table");
    let text: String = client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch")
        .get(0);
    assert!(text.contains("not captured yet"), "{text}");
    let raised = notices.lock().expect("notices").clone();
    assert!(
        raised
            .iter()
            .any(|n| n.contains("not captured yet") && n.contains("no replication slot")),
        "{raised:?}"
    );

    // `walhook migrate` records and creates the slot: no notice any more.
    migrate(&db.url, Replication);
    notices.lock().expect("notices").clear();
    let text: String = client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch")
        .get(0);
    assert!(!text.contains("not captured yet"), "{text}");
    assert!(notices.lock().expect("notices").is_empty());

    // The recorded slot dropped: the notice names it.
    let slot = slot_for(&db.url);
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
        .await
        .expect("drop the slot");
    client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch");
    let raised = notices.lock().expect("notices").clone();
    assert!(
        raised
            .iter()
            .any(|n| n.contains(&format!("\"{slot}\" does not exist"))),
        "{raised:?}"
    );

    // Trigger capture always has somewhere to go.
    migrate(&db.url, Trigger);
    notices.lock().expect("notices").clear();
    client
        .query_one("SELECT walhook.watch('public.orders')", &[])
        .await
        .expect("watch");
    assert!(notices.lock().expect("notices").is_empty());
}

// Where the role may not replicate, `migrate` in replication mode names the
// cause and the way out; trigger mode needs no such privilege.

#[tokio::test]
async fn migrate_names_a_missing_replication_privilege() {
    let db = TestDb::empty().await;
    let role = format!("{}_app", db.name);
    let admin = db.client().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE {} TO {role}; CREATE EXTENSION hstore;",
            db.name
        ))
        .await
        .expect("a role without REPLICATION");
    let mut url = url::Url::parse(&db.url).expect("test URL");
    url.set_username(&role).expect("user name");
    let replication = try_migrate(url.as_str(), Replication);
    let trigger = try_migrate(url.as_str(), Trigger);
    // Roles belong to the server: remove it before anything can fail.
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"))
        .await
        .expect("drop the role");
    let (ok, text) = replication;
    assert!(!ok, "{text}");
    assert!(
        text.contains("cannot set up replication capture")
            && text.contains("REPLICATION attribute")
            && text.contains("--mode trigger"),
        "{text}"
    );
    let (ok, text) = trigger;
    assert!(ok && text.contains("capture mode trigger"), "{text}");
}
