//! `docker-compose.yml` is checked here, since no container engine runs in
//! CI: every setting it gives walhook is one walhook reads, under the name
//! `config/walhook.toml` documents, with a value the configuration accepts;
//! Postgres runs with logical replication; walhook migrates, then runs.

use std::collections::BTreeMap;

use clap::Parser;
use serde_norway::Value;
use walhook::config::{check_env, known_env, Config, Overrides};

const COMPOSE: &str = include_str!("../docker-compose.yml");
const EXAMPLE_CONFIG: &str = include_str!("../config/walhook.toml");

fn compose() -> Value {
    serde_norway::from_str(COMPOSE)
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"))
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|services| services.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service {name}"))
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// A service's `environment`, in either of compose's two forms (a map, or
/// a list of `NAME=value`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(Value::Mapping(map)) => map.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
        Some(Value::Sequence(list)) => list
            .iter()
            .map(|item| {
                let item = scalar(item);
                let (name, value) = item.split_once('=').unwrap_or((item.as_str(), ""));
                (name.to_owned(), value.to_owned())
            })
            .collect(),
        Some(other) => panic!("environment is neither a map nor a list: {other:?}"),
    }
}

/// A command or entrypoint as one string, in either form.
fn command_text(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::Sequence(parts)) => parts.iter().map(scalar).collect::<Vec<_>>().join(" "),
        Some(other) => scalar(other),
    }
}

#[test]
fn walhook_gets_only_settings_it_knows() {
    let compose = compose();
    let env = environment(service(&compose, "walhook"));
    assert!(!env.is_empty(), "the walhook service sets no environment");
    check_env(env.keys().cloned()).unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    for name in env.keys() {
        assert!(
            known_env().contains(name),
            "docker-compose.yml sets {name}, which walhook does not read"
        );
        if name.starts_with("WALHOOK_") && name != "WALHOOK_CONFIG" && name != "WALHOOK_LOG" {
            assert!(
                EXAMPLE_CONFIG.contains(&format!("Env: {name}")),
                "{name} is not documented in config/walhook.toml"
            );
        }
    }
}

/// The command line `walhook run` reads, with its flags in place of the
/// environment variables they stand for.
#[derive(Parser)]
struct Run {
    #[command(flatten)]
    settings: Overrides,
}

/// What `walhook run` makes of an environment, through the same flag
/// definitions it parses its environment with.
fn overrides_from(env: &BTreeMap<String, String>) -> Overrides {
    use clap::CommandFactory;
    let command = Run::command();
    let mut args = vec!["run".to_owned()];
    for (name, value) in env {
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|e| e == name.as_str()))
            .unwrap_or_else(|| panic!("no flag reads {name}"));
        let long = arg
            .get_long()
            .unwrap_or_else(|| panic!("{name} has no flag"));
        args.push(format!("--{long}={value}"));
    }
    Run::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("docker-compose.yml: {e}"))
        .settings
}

#[test]
fn walhook_settings_parse_with_the_configuration_rules() {
    let compose = compose();
    let env = environment(service(&compose, "walhook"));
    let overrides = overrides_from(&env);
    let config = Config::load(&overrides).unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    let url = config
        .require_database_url()
        .unwrap_or_else(|e| panic!("{e}"));
    let parsed = walhook::db::parse_url(url).unwrap_or_else(|e| panic!("DATABASE_URL: {e}"));
    let hosts = format!("{:?}", parsed.get_hosts());
    assert!(
        hosts.contains("postgres"),
        "DATABASE_URL should name the postgres service: {hosts}"
    );
    if let Some(schedule) = env.get("WALHOOK_RETRY_SCHEDULE") {
        let schedule: walhook::config::RetrySchedule =
            schedule.parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.delivery.retry_schedule, schedule);
    }
    assert!(
        !config.admin.listen.ip().is_loopback(),
        "inside a container the admin server must listen beyond loopback"
    );
}

#[test]
fn postgres_runs_with_logical_replication() {
    let compose = compose();
    let command = command_text(service(&compose, "postgres").get("command"));
    assert!(
        command.contains("wal_level=logical"),
        "postgres command: {command}"
    );
}

#[test]
fn walhook_migrates_then_runs() {
    let compose = compose();
    let walhook = service(&compose, "walhook");
    let text = format!(
        "{} {}",
        command_text(walhook.get("entrypoint")),
        command_text(walhook.get("command"))
    );
    let migrate = text
        .find("walhook migrate")
        .unwrap_or_else(|| panic!("walhook never migrates: {text}"));
    let run = text
        .find("walhook run")
        .unwrap_or_else(|| panic!("walhook never runs: {text}"));
    assert!(migrate < run, "walhook must migrate before it runs: {text}");
    assert!(
        walhook.get("build").is_some() || walhook.get("image").is_some(),
        "walhook has no image or build"
    );
}

#[test]
fn there_is_a_receiver() {
    let compose = compose();
    let receiver = service(&compose, "receiver");
    assert!(receiver.get("image").is_some(), "the receiver has no image");
    assert!(
        COMPOSE.contains("http://receiver:"),
        "the example subscription should point at the receiver"
    );
}

const DOCKERFILE: &str = include_str!("../Dockerfile");
const CARGO_TOML: &str = include_str!("../Cargo.toml");

/// The Dockerfile's instructions (continuation lines joined), comments out.
fn instructions() -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in DOCKERFILE.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
}

/// The instructions of the last stage, the image that ships.
fn final_stage() -> Vec<String> {
    let all = instructions();
    let last_from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("a FROM");
    all[last_from..].to_vec()
}

#[test]
fn the_dockerfile_builds_dependencies_in_a_cached_layer() {
    let all = instructions();
    let position = |predicate: &dyn Fn(&str) -> bool, what: &str| {
        all.iter()
            .position(|i| predicate(i))
            .unwrap_or_else(|| panic!("the Dockerfile has no {what}:\n{DOCKERFILE}"))
    };
    let manifests = position(
        &|i| i.starts_with("COPY Cargo.toml Cargo.lock"),
        "COPY of the manifests alone",
    );
    let dependencies = position(
        &|i| i.starts_with("RUN") && i.contains("cargo build --release --locked"),
        "dependency build",
    );
    let sources = position(&|i| i == "COPY . .", "COPY of the sources");
    assert!(
        manifests < dependencies && dependencies < sources,
        "dependencies must build before the sources are copied:\n{DOCKERFILE}"
    );
    assert!(
        all[sources..]
            .iter()
            .any(|i| i.contains("cargo build --release --locked")),
        "walhook itself is built after the sources are copied"
    );
}

#[test]
fn the_image_runs_as_a_user_other_than_root() {
    let user = final_stage()
        .into_iter()
        .filter_map(|i| i.strip_prefix("USER ").map(str::trim).map(str::to_owned))
        .next_back()
        .unwrap_or_else(|| panic!("the final stage sets no USER:\n{DOCKERFILE}"));
    let name = user.split(':').next().unwrap_or_default();
    assert!(
        name != "root" && name != "0" && !name.is_empty(),
        "USER {user}"
    );
}

#[test]
fn the_shipped_binary_is_stripped() {
    let stripped_in_image = instructions()
        .iter()
        .any(|i| i.contains("strip ") && i.contains("target/release/walhook"));
    let release_profile = CARGO_TOML
        .split("[profile.release]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    assert!(
        stripped_in_image || release_profile.contains("strip"),
        "neither the Dockerfile nor the release profile strips the binary"
    );
    assert!(
        !release_profile.contains("debug = 1") && !release_profile.contains("debug = true"),
        "the release profile keeps full debug info:\n{release_profile}"
    );
}

#[test]
fn the_image_checks_its_health_on_healthz() {
    let stage = final_stage();
    let check = stage
        .iter()
        .find(|i| i.starts_with("HEALTHCHECK"))
        .unwrap_or_else(|| panic!("no HEALTHCHECK in the final stage:\n{DOCKERFILE}"));
    // `walhook healthcheck` asks /healthz (tests/cli.rs runs it against a relay).
    assert!(
        check.contains("walhook\", \"healthcheck") || check.contains("/healthz"),
        "{check}"
    );
}

#[test]
fn the_compose_receiver_verifies_signatures() {
    let compose = compose();
    let receiver = service(&compose, "receiver");
    let text = format!(
        "{} {}",
        command_text(receiver.get("entrypoint")),
        command_text(receiver.get("command"))
    );
    assert!(
        text.contains("walhook") && text.contains("receive"),
        "the receiver is not walhook receive: {text}"
    );
    let secret = environment(receiver)
        .get("RECEIVER_SECRET")
        .cloned()
        .expect("the receiver is given the subscription's secret");
    assert!(
        COMPOSE.contains(&format!("secret => '{secret}'")),
        "the example subscription must use the receiver's secret"
    );
}

#[test]
fn the_compose_postgres_bounds_what_a_slot_keeps() {
    let compose = compose();
    let command = command_text(service(&compose, "postgres").get("command"));
    assert!(
        command.contains("max_slot_wal_keep_size="),
        "postgres command: {command}"
    );
}

/// `walhook receive`, as the compose receiver runs it: a signed request is
/// accepted, one with a wrong signature refused.
#[tokio::test]
async fn walhook_receive_accepts_signed_requests_only() {
    let secret = "whsec_Y29tcG9zZS1leGFtcGxlLXNlY3JldA==";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_walhook"))
        .args(["receive", "--listen", &format!("127.0.0.1:{port}")])
        .env("RECEIVER_SECRET", secret)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("walhook receive starts");
    let url = format!("http://127.0.0.1:{port}/hooks");
    let body = r#"{"id":"evt_1","type":"orders.insert"}"#;
    let signer = standardwebhooks::Webhook::new(secret).expect("secret");
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let signature = signer
        .sign("evt_1", timestamp, body.as_bytes())
        .expect("sign");
    let hub = {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let client = reqwest::Client::new();
    let send = |signature: String| {
        client
            .post(&url)
            .header("webhook-id", "evt_1")
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header("x-hub-signature-256", hub.clone())
            .body(body)
            .send()
    };
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(response) = send(signature.clone()).await {
            answered = Some(response.status().as_u16());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let forged = send("v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())
        .await
        .map(|r| r.status().as_u16());
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answered, Some(200), "a signed request is accepted");
    assert_eq!(forged.ok(), Some(401), "a forged signature is refused");
}
