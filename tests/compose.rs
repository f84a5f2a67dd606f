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
